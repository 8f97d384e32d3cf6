/**
 * The conformance suite every Linux profiler passes: each fixture program's profile must name
 * the right resource classes and the exact paths, ports and keys the fixture used, both when
 * the profiler launches the program and when it attaches to it by pid. Bad input gives typed
 * errors, and nothing is left running afterwards.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ResourceProfile } from '../../src/policy/profile.js';
import { killTree } from '../../src/profilers/common.js';
import type { Profiler } from '../../src/spec/profiler.js';
import { buildFixtures, type FixtureProgram } from '../helpers/fixtures.js';
import { type Requirement, skipUnless } from '../helpers/requirements.js';

/** Options of {@link runProfilerConformance}. */
export interface ProfilerConformanceOptions {
  /** What the profiler needs (root, tools); the suite skips, or fails under AP_MIGRATE_STRICT=1, without them. */
  requirements: Requirement[];
  /** How long to watch in attach mode, ms (default 800). */
  attachDurationMs?: number;
  /** Whether profiles of launched programs that ended by themselves are complete (tracers: yes; samplers: no). */
  completeWhenLaunched: boolean;
}

/** One fixture run: how to start it and what its profile must show. */
interface FixtureCase {
  program: FixtureProgram;
  /** Arguments after the program, given the hold time. */
  args: (holdMs: number) => string[];
  check: (profile: ResourceProfile) => void;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function filePaths(profile: ResourceProfile): string[] {
  return profile.files.map((f) => f.path);
}

function fileUse(profile: ResourceProfile, p: string) {
  const use = profile.files.find((f) => f.path === p);
  expect(use, `${p} in the profile's files: ${filePaths(profile).join(', ')}`).toBeDefined();
  return use!;
}

/** Processes alive now whose command line contains `token` (zombies excluded). */
async function processesMentioning(token: string): Promise<number[]> {
  const { readdir } = await import('node:fs/promises');
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (cmdline.includes(token) && state !== 'Z') found.push(Number(entry));
  }
  return found;
}

/** Register the conformance tests for one profiler. */
export function runProfilerConformance(name: string, factory: () => Profiler, opts: ProfilerConformanceOptions): void {
  describe.skipIf(skipUnless(...opts.requirements))(`${name} profiler conformance`, () => {
    let bins: Record<FixtureProgram, string>;
    let work: string;
    let profiler: Profiler;
    const started: ChildProcess[] = [];
    const shmKey = 0x5a000000 + Math.floor(Math.random() * 0xffff) * 4;
    const mqName = `/apm-${process.pid}-${name}`;
    let port = 0;

    beforeAll(async () => {
      bins = buildFixtures();
      work = mkdtempSync(path.join(os.tmpdir(), `ap-migrate-${name}-`));
      writeFileSync(path.join(work, 'input.txt'), 'ground truth\n');
      profiler = factory();
      port = await freePort();
    });

    afterEach(async () => {
      for (const child of started.splice(0)) {
        if (child.exitCode === null && child.signalCode === null) {
          await killTree(child.pid!);
          await new Promise((r) => child.once('exit', r));
        }
      }
      // Nothing of ours may outlive a test: no fixture, no tracer.
      expect(await processesMentioning(work)).toEqual([]);
    });

    afterAll(() => {
      // A killed sysv fixture cannot remove its objects: do it for it.
      for (const [flag, key] of [['-M', shmKey], ['-S', shmKey + 1]] as const) {
        spawnSync('ipcrm', [flag, `0x${key.toString(16)}`], { stdio: 'ignore' });
      }
      if (bins) spawnSync(bins.posix_mq, ['--unlink', mqName], { stdio: 'ignore' });
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const cases = (): FixtureCase[] => [
      {
        program: 'files_only',
        args: (hold) => [work, String(hold)],
        check: (p) => {
          expect(fileUse(p, path.join(work, 'input.txt')).access).toContain('read');
          expect(fileUse(p, path.join(work, 'output.txt')).access).toContain('write');
          expect(fileUse(p, path.join(work, 'relative.txt')).access).toEqual(expect.arrayContaining(['read', 'write']));
          expect(fileUse(p, path.join(work, 'at.txt')).access).toContain('write');
          expect(fileUse(p, path.join(work, 'input.txt')).kind).toBe('regular');
          expect(fileUse(p, path.join(work, 'input.txt')).size).toBe('ground truth\n'.length);
          expect(filePaths(p)).not.toContain(path.join(work, 'missing.txt'));
          expect(p.sockets).toEqual([]);
          expect(p.ipc).toEqual([]);
        },
      },
      {
        program: 'tcp',
        args: (hold) => [String(port), String(hold)],
        check: (p) => {
          expect(p.sockets).toContainEqual(
            expect.objectContaining({ family: 'inet', protocol: 'tcp', localAddress: '127.0.0.1', localPort: port, listening: true }),
          );
          expect(p.sockets).toContainEqual(
            expect.objectContaining({ family: 'inet', protocol: 'tcp', remoteAddress: '127.0.0.1', remotePort: port, listening: false }),
          );
          expect(p.ipc).toEqual([]);
        },
      },
      {
        program: 'sysv',
        args: (hold) => [`0x${shmKey.toString(16)}`, String(hold)],
        check: (p) => {
          expect(p.ipc).toContainEqual(expect.objectContaining({ kind: 'sysv-shm', key: shmKey, size: 4096 }));
          expect(p.ipc).toContainEqual(expect.objectContaining({ kind: 'sysv-sem', key: shmKey + 1 }));
          expect(p.sockets).toEqual([]);
        },
      },
      {
        program: 'posix_mq',
        args: (hold) => [mqName, String(hold)],
        check: (p) => {
          expect(p.ipc).toContainEqual(expect.objectContaining({ kind: 'posix-mq', name: mqName }));
          expect(filePaths(p)).not.toContain(mqName);
          expect(p.sockets).toEqual([]);
        },
      },
      {
        program: 'fifo',
        args: (hold) => [path.join(work, 'named.pipe'), String(hold)],
        check: (p) => {
          const pipe = fileUse(p, path.join(work, 'named.pipe'));
          expect(pipe.kind).toBe('fifo');
          expect(pipe.size).toBe(0);
          expect(p.ipc).toEqual([]);
          expect(p.sockets).toEqual([]);
        },
      },
      {
        program: 'fork_exec',
        args: (hold) => [path.join(work, 'input.txt'), String(hold)],
        check: (p) => {
          expect(fileUse(p, path.join(work, 'input.txt')).access).toContain('read');
          expect(fileUse(p, bins.fork_exec).access).toContain('exec');
          expect(p.processes.length).toBeGreaterThanOrEqual(2);
          const child = p.processes.find((proc) => proc.argv?.[1] === 'child');
          expect(child, JSON.stringify(p.processes)).toBeDefined();
          expect(child!.ppid).toBe(p.processes.find((proc) => proc.argv?.[1] !== 'child')?.pid);
        },
      },
      {
        program: 'thread_files',
        args: (hold) => [path.join(work, 'thread.log'), String(hold)],
        check: (p) => {
          expect(fileUse(p, path.join(work, 'thread.log')).access).toContain('write');
          // A thread is not a process.
          expect(p.processes).toHaveLength(1);
        },
      },
    ];

    describe('launched', () => {
      for (const fixture of cases()) {
        it(`${fixture.program}: the profile names what the program used`, async () => {
          const argv = [bins[fixture.program], ...fixture.args(600)];
          const events: number[] = [];
          const result = await profiler.profile({ command: argv, cwd: work }, { durationMs: 20_000, onProgress: (p) => events.push(p.events) });
          if (result.isErr()) throw result.error;
          const profile = result.value;
          expect(profile.executable).toBe(bins[fixture.program]);
          expect(profile.argv).toEqual(argv);
          expect(profile.cwd).toBe(work);
          expect(profile.uid).toBe(process.getuid?.());
          expect(profile.profiler?.name).toBe(profiler.name);
          expect(profile.completeness.complete).toBe(opts.completeWhenLaunched);
          expect(fileUse(profile, bins[fixture.program]).access).toContain('exec');
          fixture.check(profile);
          // Progress was reported while watching, and counts only go up.
          expect(events.length).toBeGreaterThan(0);
          expect(events.at(-1)).toBeGreaterThan(0);
          expect([...events].sort((a, b) => a - b)).toEqual(events);
        });
      }

      it('stops a program still running at the end of the duration, with nothing left behind', async () => {
        const argv = [bins.files_only, work, '60000'];
        const before = Date.now();
        const result = await profiler.profile({ command: argv, cwd: work }, { durationMs: 1500 });
        if (result.isErr()) throw result.error;
        expect(Date.now() - before).toBeLessThan(30_000);
        expect(result.value.completeness.complete).toBe(false);
        fileUse(result.value, path.join(work, 'input.txt'));
        for (const proc of result.value.processes) {
          const stat = await readFile(`/proc/${proc.pid}/stat`, 'utf8').catch(() => '');
          expect(stat === '' || /\) [ZX] /.test(stat), `pid ${proc.pid} still running`).toBe(true);
        }
      });

      it('stops early when the signal aborts', async () => {
        const controller = new AbortController();
        // Abort 1 s after watching starts (the first progress report): start-up time differs per profiler.
        let timer: NodeJS.Timeout | undefined;
        const onProgress = () => {
          timer ??= setTimeout(() => controller.abort(), 1000);
        };
        const started = Date.now();
        const result = await profiler.profile(
          { command: [bins.files_only, work, '60000'], cwd: work },
          { durationMs: 60_000, signal: controller.signal, onProgress },
        );
        expect(Date.now() - started).toBeLessThan(30_000);
        if (result.isErr()) throw result.error;
        fileUse(result.value, path.join(work, 'input.txt'));
      });
    });

    describe('attached by pid', () => {
      for (const fixture of cases()) {
        it(`${fixture.program}: what the running program holds is in the profile`, async () => {
          const argv = [bins[fixture.program], ...fixture.args(30_000)];
          const child = spawn(argv[0]!, argv.slice(1), { cwd: work, stdio: ['ignore', 'pipe', 'inherit'] });
          started.push(child);
          await new Promise<void>((resolve, reject) => {
            child.stdout!.once('data', () => resolve());
            child.once('exit', (code) => reject(new Error(`${fixture.program} exited with ${code} before it was ready`)));
          });
          const result = await profiler.profile({ pid: child.pid! }, { durationMs: opts.attachDurationMs ?? 800 });
          if (result.isErr()) throw result.error;
          const profile = result.value;
          expect(profile.executable).toBe(bins[fixture.program]);
          expect(profile.argv).toEqual(argv);
          expect(profile.completeness.complete).toBe(false);
          // Attaching never stops the program.
          expect(child.exitCode).toBeNull();
          expect(child.signalCode).toBeNull();
          fixture.check(profile);
        });
      }
    });

    describe('bad input', () => {
      it('a pid that does not exist is NO_SUCH_PROCESS', async () => {
        const result = await profiler.profile({ pid: 2 ** 22 + 17 }, { durationMs: 500 });
        expect(result.isErr() && result.error.code).toBe('NO_SUCH_PROCESS');
        expect(result.isErr() && result.error.message).toMatch(/4194321/);
      });

      it('a command that cannot start is LAUNCH_FAILED', async () => {
        const result = await profiler.profile({ command: [path.join(work, 'no-such-program'), 'x'] }, { durationMs: 2000 });
        expect(result.isErr() && result.error.code).toBe('LAUNCH_FAILED');
        expect(result.isErr() && result.error.message).toMatch(/no-such-program/);
      });

      it('a file that is not executable is LAUNCH_FAILED', async () => {
        const result = await profiler.profile({ command: [path.join(work, 'input.txt')] }, { durationMs: 2000 });
        expect(result.isErr() && result.error.code).toBe('LAUNCH_FAILED');
      });

      it('an empty command or a bad pid is INVALID_INPUT', async () => {
        const empty = await profiler.profile({ command: [] }, { durationMs: 500 });
        expect(empty.isErr() && empty.error.code).toBe('INVALID_INPUT');
        const negative = await profiler.profile({ pid: -4 }, { durationMs: 500 });
        expect(negative.isErr() && negative.error.code).toBe('INVALID_INPUT');
      });

      it('reports whether it is available, with a reason', async () => {
        const availability = await profiler.availability();
        expect(availability.name).toBe(profiler.name);
        expect(availability.available).toBe(true);
      });
    });
  });
}
