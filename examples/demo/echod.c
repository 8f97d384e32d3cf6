/*
 * echod: a small TCP service for the ap-migrate demo and tests (files + network).
 *
 *   echod PORT GREETING_FILE
 *
 * Listens on 0.0.0.0:PORT; for each connection sends the first line of GREETING_FILE, then echoes
 * every line it receives prefixed with "echo: ". One connection at a time keeps it simple.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: echod PORT GREETING_FILE\n");
    return 2;
  }
  char greeting[512] = "hello";
  FILE *g = fopen(argv[2], "r");
  if (!g) {
    perror("echod: greeting");
    return 1;
  }
  if (fgets(greeting, sizeof greeting, g)) greeting[strcspn(greeting, "\n")] = 0;
  fclose(g);
  int server = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[1]));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(server, 8) != 0) {
    perror("echod: listen");
    return 1;
  }
  for (;;) {
    int c = accept(server, NULL, NULL);
    if (c < 0) continue;
    FILE *io = fdopen(c, "r+");
    fprintf(io, "%s\n", greeting);
    fflush(io);
    char line[1024];
    while (fgets(line, sizeof line, io)) {
      fprintf(io, "echo: %s", line);
      fflush(io);
    }
    fclose(io);
  }
}
