/* The program a hostile source moves: it reports, inside its root, who it runs as, where, with
 * which environment and whether host paths are visible, then stays alive for the health check. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
  FILE *out = fopen("/tmp/probe.out", "w");
  char cwd[4096];
  if (!out) return 3;
  if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
  fprintf(out, "uid=%d\ngid=%d\ncwd=%s\nargc=%d\n", (int)getuid(), (int)getgid(), cwd, argc);
  if (argc > 1) fprintf(out, "visible=%s:%d\n", argv[1], access(argv[1], F_OK) == 0);
  for (char **e = environ; *e; e++) fprintf(out, "env:%s\n", *e);
  fclose(out);
  sleep(60);
  return 0;
}
