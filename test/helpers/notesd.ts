/**
 * The notesd sample program (examples/demo/notesd.c), compiled and set up in a temp directory,
 * with the profile a profiler would report for it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ResourceProfileInput } from '../../src/index.js';

export interface NotesdSource {
  base: string;
  exe: string;
  dataDir: string;
  profile: ResourceProfileInput;
  process: ChildProcess;
  stop(): void;
}

/** Compile notesd, create its data directory with a config, FIFO and database, and start it. */
export function startNotesd(greeting = 'hello'): NotesdSource {
  const base = mkdtempSync(join(tmpdir(), 'apm-notesd-'));
  const exe = join(base, 'app/bin/notesd');
  const dataDir = join(base, 'app/data');
  mkdirSync(join(base, 'app/bin'), { recursive: true });
  mkdirSync(dataDir, { recursive: true });
  execFileSync('gcc', ['-O2', '-o', exe, 'examples/demo/notesd.c']);
  writeFileSync(join(dataDir, 'notesd.conf'), `${greeting}\n`);
  writeFileSync(join(dataDir, 'notes.db'), 'note: first\n');
  execFileSync('mkfifo', [join(dataDir, 'in.fifo')]);
  const child = spawn(exe, [dataDir], { stdio: 'ignore' });
  const libc = execFileSync('sh', ['-c', `ldd ${exe} | awk '/libc.so/ {print $3}'`]).toString().trim();
  const size = (p: string) => statSync(p).size;
  const profile: ResourceProfileInput = {
    executable: exe,
    executableSize: size(exe),
    argv: [exe, dataDir],
    cwd: '/',
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: execFileSync('uname', ['-r']).toString().trim(), arch: execFileSync('uname', ['-m']).toString().trim() },
    files: [
      { path: join(dataDir, 'notesd.conf'), kind: 'regular', access: ['read'], size: size(join(dataDir, 'notesd.conf')) },
      { path: join(dataDir, 'notes.db'), kind: 'regular', access: ['read', 'write'], size: size(join(dataDir, 'notes.db')) },
      { path: join(dataDir, 'in.fifo'), kind: 'fifo', access: ['read'], size: 0 },
      { path: join(dataDir, 'status'), kind: 'regular', access: ['write'], size: 0, created: true },
      { path: libc, kind: 'regular', access: ['read', 'exec'], size: size(libc), sharedLibrary: true },
    ],
  };
  return { base, exe, dataDir, profile, process: child, stop: () => child.kill('SIGKILL') };
}

/** Write a line into notesd's FIFO under `root` and wait until its status shows `expected` notes. */
export async function talkToNotesd(root: string, dataDir: string, line: string, expected: number): Promise<string> {
  writeFileSync(join(root, dataDir, 'in.fifo'), `${line}\n`);
  for (let i = 0; i < 100; i++) {
    try {
      const status = readFileSync(join(root, dataDir, 'status'), 'utf8');
      if (status.startsWith(`notes=${expected} `)) return status;
    } catch {
      // not written yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`notesd did not store note ${expected}`);
}
