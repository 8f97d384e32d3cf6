/* A library a hostile profile names in LD_PRELOAD: loaded by anything that runs with that
 * environment, it leaves a mark. Run as the destination's root, it would own the host. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void mark(void) {
  const char *where = getenv("APM_EVIL_MARK");
  if (!where) return;
  FILE *f = fopen(where, "w");
  if (f) {
    fprintf(f, "uid=%d\n", (int)getuid());
    fclose(f);
  }
}
