/*
 * notesd: a tiny files-only service for the ap-migrate demo and tests.
 *
 *   notesd DIR
 *
 * Reads lines written into the named pipe DIR/in.fifo, appends each to DIR/notes.db prefixed by
 * the greeting in DIR/notesd.conf, and rewrites DIR/status with the number of notes stored.
 * It uses files only (a named pipe is a file), so the planner chooses chroot.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void path_join(char *out, size_t size, const char *dir, const char *name) {
  snprintf(out, size, "%s/%s", dir, name);
}

static long count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  long n = 0;
  int c;
  if (!f) return 0;
  while ((c = fgetc(f)) != EOF) if (c == '\n') n++;
  fclose(f);
  return n;
}

static void write_status(const char *dir, long notes) {
  char tmp[4096], final[4096];
  path_join(tmp, sizeof tmp, dir, "status.tmp");
  path_join(final, sizeof final, dir, "status");
  FILE *f = fopen(tmp, "w");
  if (!f) return;
  fprintf(f, "notes=%ld pid=%ld\n", notes, (long)getpid());
  fclose(f);
  rename(tmp, final);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: notesd DIR\n");
    return 2;
  }
  const char *dir = argv[1];
  char conf[4096], db[4096], fifo[4096], greeting[256] = "note";
  path_join(conf, sizeof conf, dir, "notesd.conf");
  path_join(db, sizeof db, dir, "notes.db");
  path_join(fifo, sizeof fifo, dir, "in.fifo");

  FILE *c = fopen(conf, "r");
  if (c) {
    if (fgets(greeting, sizeof greeting, c)) greeting[strcspn(greeting, "\n")] = 0;
    fclose(c);
  }
  long notes = count_lines(db);
  write_status(dir, notes);
  for (;;) {
    FILE *in = fopen(fifo, "r"); /* blocks until a writer opens the pipe */
    if (!in) {
      fprintf(stderr, "notesd: cannot open %s: %s\n", fifo, strerror(errno));
      return 1;
    }
    char line[4096];
    while (fgets(line, sizeof line, in)) {
      line[strcspn(line, "\n")] = 0;
      FILE *out = fopen(db, "a");
      if (!out) {
        fprintf(stderr, "notesd: cannot open %s: %s\n", db, strerror(errno));
        return 1;
      }
      fprintf(out, "%s: %s\n", greeting, line);
      fclose(out);
      write_status(dir, ++notes);
    }
    fclose(in);
  }
}
