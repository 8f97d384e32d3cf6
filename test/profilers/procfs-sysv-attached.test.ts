/**
 * The procfs profiler and SysV shared memory the program attached but did not create.
 *
 * /proc/sysvipc/shm names two pids per segment: its creator (cpid) and the last process that
 * attached or detached it (lpid). When the creator has exited and someone outside the program's
 * tree touched the segment last, neither pid is the program's, so matching rows by pid alone
 * loses the segment's id and size (the profile kept only the key from the `/SYSV<key>` mapping).
 * The mapping's inode is the segment's shmid, which is what ties the row to the program.
 *
 * Real processes: `ipcmk` creates the segment and exits; a small C program (built here with gcc)
 * attaches it and holds it; another run of it attaches and detaches from outside the tree, so
 * the row's lpid is an exited process too. The profiled program is attached by pid.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createProcfsProfiler, parseSysvTable, type SysvEntry } from '../../src/profilers/procfs.js';
import { skipUnless } from '../helpers/requirements.js';

/** attach SHMID HOLD_MS: attaches the segment, writes a byte, says "attached", holds it, detaches. */
const ATTACH_C = `
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/shm.h>
int main(int argc, char **argv) {
  if (argc != 3) return 64;
  char *mem = shmat(atoi(argv[1]), NULL, 0);
  if (mem == (void *)-1) { perror("shmat"); return 1; }
  mem[0] = 'x';
  printf("attached\\n");
  fflush(stdout);
  long hold = atol(argv[2]);
  if (hold > 0) usleep((useconds_t)hold * 1000);
  shmdt(mem);
  return 0;
}
`;

const alive = (pid: number) => existsSync(`/proc/${pid}`);
const row = (id: number): SysvEntry | undefined => parseSysvTable(readFileSync('/proc/sysvipc/shm', 'utf8'), 'sysv-shm').find((e) => e.id === id);

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:ipcmk', 'tool:ipcrm'))('procfs: a SysV segment the program attached, whose creator exited', () => {
  let dir = '';
  let attach = '';
  const children: ChildProcess[] = [];
  const segments: number[] = [];

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-procfs-sysv-'));
    writeFileSync(path.join(dir, 'attach.c'), ATTACH_C);
    attach = path.join(dir, 'attach');
    execFileSync('gcc', ['-O1', '-Wall', '-Werror', '-o', attach, path.join(dir, 'attach.c')], { stdio: 'pipe' });
  });
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
    for (const id of segments.splice(0)) {
      try {
        execFileSync('ipcrm', ['-m', String(id)], { stdio: 'ignore' });
      } catch {
        // already removed (the removal test does it itself)
      }
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A segment made by `ipcmk`, which has exited when this returns. */
  function createSegment(bytes: number): number {
    const out = execFileSync('ipcmk', ['-M', String(bytes), '-p', '0600'], { encoding: 'utf8' });
    const id = Number(/(\d+)\s*$/.exec(out)?.[1]);
    expect(Number.isSafeInteger(id), out).toBe(true);
    segments.push(id);
    return id;
  }

  /** The program to profile: attaches `id` and holds it. */
  async function startAttacher(id: number): Promise<ChildProcess> {
    const child = spawn(attach, [String(id), '60000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.stdout!.once('data', () => resolve());
    });
    return child;
  }

  /** Attach and detach from a process outside the program's tree (it becomes the row's lpid, then exits). */
  const touchFromOutside = (id: number) => execFileSync(attach, [String(id), '0'], { stdio: 'ignore' });

  async function profileOf(pid: number) {
    const result = await createProcfsProfiler({ intervalMs: 50 }).profile({ pid }, { durationMs: 300 });
    if (result.isErr()) throw result.error;
    return result.value;
  }

  it('records its id, key and size although neither the creator nor the last attacher is in the tree', async () => {
    const id = createSegment(8192);
    const program = await startAttacher(id);
    touchFromOutside(id);
    // The situation: /proc/sysvipc/shm names only processes that are gone, none of them the program.
    const before = row(id)!;
    expect(before.pids).toHaveLength(2);
    expect(before.pids).not.toContain(program.pid);
    for (const pid of before.pids) expect(alive(pid), `pid ${pid}`).toBe(false);
    expect(readFileSync(`/proc/${program.pid}/maps`, 'utf8')).toMatch(new RegExp(` ${id}\\s+/SYSV[0-9a-f]{8} \\(deleted\\)$`, 'm'));

    const profile = await profileOf(program.pid!);
    expect(profile.ipc.filter((i) => i.kind === 'sysv-shm')).toEqual([{ kind: 'sysv-shm', key: before.key, id, size: 8192 }]);
  });

  it('a segment removed while attached (key 0 in /proc/sysvipc/shm) is recorded once, with the key it was created with', async () => {
    const id = createSegment(4096);
    const key = row(id)!.key;
    expect(key).not.toBe(0);
    const program = await startAttacher(id);
    touchFromOutside(id);
    execFileSync('ipcrm', ['-m', String(id)]);
    // Still there while attached, now as IPC_PRIVATE.
    expect(row(id)).toMatchObject({ key: 0, size: 4096 });

    const profile = await profileOf(program.pid!);
    expect(profile.ipc.filter((i) => i.kind === 'sysv-shm')).toEqual([{ kind: 'sysv-shm', key, id, size: 4096 }]);
  });

  it('a segment the program never attached, made and touched by others, is not the program\'s', async () => {
    const mine = createSegment(4096);
    const other = createSegment(4096);
    touchFromOutside(other);
    const program = await startAttacher(mine);
    const profile = await profileOf(program.pid!);
    expect(profile.ipc.map((i) => i.id)).toEqual([mine]);
  });
});
