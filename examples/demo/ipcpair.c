/*
 * ipcpair: two processes sharing SysV memory and a semaphore (files + SysV IPC), for the
 * ap-migrate demo and tests.
 *
 *   ipcpair KEY STATUS_FILE
 *
 * The parent creates a shared memory segment (KEY) and a semaphore set (KEY+1), then forks. The
 * child increments a counter in the segment under the semaphore every 50 ms; the parent writes the
 * counter to STATUS_FILE every 100 ms ("counter=N segment=ID"). If the counter moves, both
 * processes really share the segment.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

static void lock(int sem, int delta) {
  struct sembuf op = {0, (short)delta, SEM_UNDO};
  semop(sem, &op, 1);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: ipcpair KEY STATUS_FILE\n");
    return 2;
  }
  key_t key = (key_t)strtol(argv[1], NULL, 0);
  int shm = shmget(key, 4096, IPC_CREAT | 0600);
  int sem = semget(key + 1, 1, IPC_CREAT | 0600);
  if (shm < 0 || sem < 0) {
    perror("ipcpair: get");
    return 1;
  }
  semctl(sem, 0, SETVAL, 1);
  volatile long *counter = shmat(shm, NULL, 0);
  if (counter == (void *)-1) {
    perror("ipcpair: shmat");
    return 1;
  }
  *counter = 0;
  pid_t child = fork();
  if (child == 0) {
    for (;;) {
      lock(sem, -1);
      (*counter)++;
      lock(sem, 1);
      usleep(50000);
    }
  }
  for (;;) {
    lock(sem, -1);
    long value = *counter;
    lock(sem, 1);
    FILE *f = fopen(argv[2], "w");
    if (f) {
      fprintf(f, "counter=%ld segment=%d\n", value, shm);
      fclose(f);
    }
    if (kill(child, 0) != 0) return 1;
    usleep(100000);
  }
}
