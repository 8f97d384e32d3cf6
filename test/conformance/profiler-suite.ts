/**
 * The conformance suite every profiler passes: each fixture program's profile must name the
 * right resource classes and the exact paths, ports and keys the fixture used, both when the
 * profiler launches the program and when it attaches to it by pid. Bad input gives typed
 * errors, and nothing is left running afterwards.
 *
 * The programs run on a {@link ConformanceHost}: this machine by default (the C fixtures built
 * with gcc), or a scripted host that answers a remote profiler's commands with recorded tool
 * output (the FreeBSD profiler). What a profiler is known not to see is declared as a
 * {@link ConformanceGap}: the assertion it concerns then checks that the profile says so.
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

/**
 * Something a profiler is known not to see or do like the others. Each one changes a single
 * assertion, named here, into what the profiler does instead.
 */
export type ConformanceGap =
  /** Launching, POSIX message queue names are not seen (posix_mq): a completeness note must say so. */
  | 'launch:posix-ipc-names'
  /** Launching, a name opened relative to a directory descriptor is not resolved (files_only's at.txt): a note must say so. */
  | 'launch:descriptor-relative-paths'
  /** argv is known for the root process only (fork_exec): its child is found by its parent instead. */
  | 'argv-of-root-only'
  /** Progress is reported once, after watching (the trace is read at the end): the abort is timed from the start. */
  | 'progress-after-watching'
  /** An abort while watching is an `ABORTED` error, not the profile seen so far. */
  | 'abort-is-an-error'
  /** A launched program stopped at the end of the duration is still called complete (a defect of that profiler: not asserted). */
  | 'cut-run-reported-complete';

/** The fixtures as one host has them: where each program is, and the names and numbers it is given. */
export interface ConformanceWorld {
  /** Absolute path of each fixture program. */
  bins: Record<FixtureProgram, string>;
  /** The directory the programs work in; it holds `input.txt` with `ground truth\n`. */
  work: string;
  /** A free TCP port on 127.0.0.1. */
  port: number;
  /** A SysV key (the semaphore set gets the next one). */
  shmKey: number;
  /** A POSIX message queue name. */
  mqName: string;
  /** The uid launched programs run as. */
  uid: number | undefined;
}

/** A fixture program started for a profiler to attach to. */
export interface RunningProgram {
  pid: number;
  /** How it ended so far: both null while it runs. */
  status(): Promise<{ exitCode: number | null; signalCode: string | null }>;
}

/** Where the fixture programs run, and how the suite looks at that host. */
export interface ConformanceHost {
  /** Make the programs and the work directory; called once, before any test. */
  setup(name: string): Promise<ConformanceWorld>;
  /** Start fixture `program` as `argv` in the work directory; resolves once it holds all its resources. */
  start(program: FixtureProgram, argv: readonly string[]): Promise<RunningProgram>;
  /** Whether process `pid` is running now (a zombie is not). */
  isRunning(pid: number): Promise<boolean>;
  /** After each test: stop what `start` started, and say what the test left behind (it must be nothing). */
  cleanUp(): Promise<string[]>;
  /** After all tests. */
  teardown(): Promise<void>;
}

/** Options of {@link runProfilerConformance}. */
export interface ProfilerConformanceOptions {
  /** What the profiler needs (root, tools); the suite skips, or fails under AP_MIGRATE_STRICT=1, without them. */
  requirements: Requirement[];
  /** How long to watch in attach mode, ms (default 800). */
  attachDurationMs?: number;
  /** Whether profiles of launched programs that ended by themselves are complete (tracers: yes; samplers: no). */
  completeWhenLaunched: boolean;
  /** Where the programs run (default: this machine, see {@link localHost}). */
  host?: ConformanceHost;
  /** What the profiler is known not to see (default none). */
  gaps?: readonly ConformanceGap[];
}

/** How a fixture was profiled. */
type Mode = 'launched' | 'attached';

/** What a fixture's check is told: the host's names and numbers, how the program was profiled, the profiler's gaps. */
interface CheckContext {
  w: ConformanceWorld;
  mode: Mode;
  gap: (g: ConformanceGap) => boolean;
}

/** One fixture run: how to start it and what its profile must show. */
interface FixtureCase {
  program: FixtureProgram;
  /** Arguments after the program, given the hold time. */
  args: (w: ConformanceWorld, holdMs: number) => string[];
  check: (profile: ResourceProfile, ctx: CheckContext) => void;
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

function notesOf(profile: ResourceProfile): string {
  return profile.completeness.notes.join(' ');
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

/** This machine: the C fixtures built with gcc, run in a fresh temporary directory. */
export function localHost(): ConformanceHost {
  let world: ConformanceWorld | undefined;
  const started: ChildProcess[] = [];
  return {
    async setup(name) {
      const work = mkdtempSync(path.join(os.tmpdir(), `ap-migrate-${name}-`));
      writeFileSync(path.join(work, 'input.txt'), 'ground truth\n');
      world = {
        bins: buildFixtures(),
        work,
        port: await freePort(),
        shmKey: 0x5a000000 + Math.floor(Math.random() * 0xffff) * 4,
        mqName: `/apm-${process.pid}-${name}`,
        uid: process.getuid?.(),
      };
      return world;
    },
    async start(program, argv) {
      const child = spawn(argv[0]!, argv.slice(1), { cwd: world!.work, stdio: ['ignore', 'pipe', 'inherit'] });
      started.push(child);
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`${program} exited with ${code} before it was ready`)));
      });
      return { pid: child.pid!, status: async () => ({ exitCode: child.exitCode, signalCode: child.signalCode }) };
    },
    async isRunning(pid) {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      return !(stat === '' || /\) [ZX] /.test(stat));
    },
    async cleanUp() {
      for (const child of started.splice(0)) {
        if (child.exitCode === null && child.signalCode === null) {
          await killTree(child.pid!);
          await new Promise((r) => child.once('exit', r));
        }
      }
      // Nothing of ours may outlive a test: no fixture, no tracer.
      return world ? (await processesMentioning(world.work)).map((pid) => `process ${pid}`) : [];
    },
    async teardown() {
      if (!world) return;
      // A killed sysv fixture cannot remove its objects: do it for it.
      for (const [flag, key] of [['-M', world.shmKey], ['-S', world.shmKey + 1]] as const) {
        spawnSync('ipcrm', [flag, `0x${key.toString(16)}`], { stdio: 'ignore' });
      }
      spawnSync(world.bins.posix_mq, ['--unlink', world.mqName], { stdio: 'ignore' });
      rmSync(world.work, { recursive: true, force: true });
    },
  };
}

/** What each fixture's profile must show, launched or attached. */
const FIXTURE_CASES: readonly FixtureCase[] = [
  {
    program: 'files_only',
    args: (w, hold) => [w.work, String(hold)],
    check: (p, { w: { work }, mode, gap }) => {
      expect(fileUse(p, path.join(work, 'input.txt')).access).toContain('read');
      expect(fileUse(p, path.join(work, 'output.txt')).access).toContain('write');
      expect(fileUse(p, path.join(work, 'relative.txt')).access).toEqual(expect.arrayContaining(['read', 'write']));
      if (mode === 'launched' && gap('launch:descriptor-relative-paths')) expect(notesOf(p)).toMatch(/relative to a directory descriptor/);
      else expect(fileUse(p, path.join(work, 'at.txt')).access).toContain('write');
      expect(fileUse(p, path.join(work, 'input.txt')).kind).toBe('regular');
      expect(fileUse(p, path.join(work, 'input.txt')).size).toBe('ground truth\n'.length);
      expect(filePaths(p)).not.toContain(path.join(work, 'missing.txt'));
      expect(p.sockets).toEqual([]);
      expect(p.ipc).toEqual([]);
    },
  },
  {
    program: 'tcp',
    args: (w, hold) => [String(w.port), String(hold)],
    check: (p, { w: { port } }) => {
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
    args: (w, hold) => [`0x${w.shmKey.toString(16)}`, String(hold)],
    check: (p, { w: { shmKey } }) => {
      expect(p.ipc).toContainEqual(expect.objectContaining({ kind: 'sysv-shm', key: shmKey, size: 4096 }));
      expect(p.ipc).toContainEqual(expect.objectContaining({ kind: 'sysv-sem', key: shmKey + 1 }));
      expect(p.sockets).toEqual([]);
    },
  },
  {
    program: 'posix_mq',
    args: (w, hold) => [w.mqName, String(hold)],
    check: (p, { w: { mqName }, mode, gap }) => {
      if (mode === 'launched' && gap('launch:posix-ipc-names')) expect(notesOf(p)).toMatch(/POSIX message queues/);
      else expect(p.ipc).toContainEqual(expect.objectContaining({ kind: 'posix-mq', name: mqName }));
      expect(filePaths(p)).not.toContain(mqName);
      expect(p.sockets).toEqual([]);
    },
  },
  {
    program: 'fifo',
    args: (w, hold) => [path.join(w.work, 'named.pipe'), String(hold)],
    check: (p, { w: { work } }) => {
      const pipe = fileUse(p, path.join(work, 'named.pipe'));
      expect(pipe.kind).toBe('fifo');
      expect(pipe.size).toBe(0);
      expect(p.ipc).toEqual([]);
      expect(p.sockets).toEqual([]);
    },
  },
  {
    program: 'fork_exec',
    args: (w, hold) => [path.join(w.work, 'input.txt'), String(hold)],
    check: (p, { w: { work, bins }, gap }) => {
      expect(fileUse(p, path.join(work, 'input.txt')).access).toContain('read');
      expect(fileUse(p, bins.fork_exec).access).toContain('exec');
      expect(p.processes.length).toBeGreaterThanOrEqual(2);
      if (gap('argv-of-root-only')) {
        const root = p.processes.find((proc) => proc.argv !== undefined);
        const child = p.processes.find((proc) => proc.pid !== root?.pid);
        expect(child, JSON.stringify(p.processes)).toBeDefined();
        expect(child!.ppid).toBe(root?.pid);
        return;
      }
      const child = p.processes.find((proc) => proc.argv?.[1] === 'child');
      expect(child, JSON.stringify(p.processes)).toBeDefined();
      expect(child!.ppid).toBe(p.processes.find((proc) => proc.argv?.[1] !== 'child')?.pid);
    },
  },
  {
    program: 'thread_files',
    args: (w, hold) => [path.join(w.work, 'thread.log'), String(hold)],
    check: (p, { w: { work } }) => {
      expect(fileUse(p, path.join(work, 'thread.log')).access).toContain('write');
      // A thread is not a process.
      expect(p.processes).toHaveLength(1);
    },
  },
];

/** Register the conformance tests for one profiler. */
export function runProfilerConformance(name: string, factory: () => Profiler, opts: ProfilerConformanceOptions): void {
  describe.skipIf(skipUnless(...opts.requirements))(`${name} profiler conformance`, () => {
    const host = opts.host ?? localHost();
    const gap = (g: ConformanceGap) => opts.gaps?.includes(g) ?? false;
    let w: ConformanceWorld;
    let profiler: Profiler;

    beforeAll(async () => {
      w = await host.setup(name);
      profiler = factory();
    });

    afterEach(async () => {
      expect(await host.cleanUp()).toEqual([]);
    });

    afterAll(async () => {
      await host.teardown();
    });

    describe('launched', () => {
      for (const fixture of FIXTURE_CASES) {
        it(`${fixture.program}: the profile names what the program used`, async () => {
          const argv = [w.bins[fixture.program], ...fixture.args(w, 600)];
          const events: number[] = [];
          const result = await profiler.profile({ command: argv, cwd: w.work }, { durationMs: 20_000, onProgress: (p) => events.push(p.events) });
          if (result.isErr()) throw result.error;
          const profile = result.value;
          expect(profile.executable).toBe(w.bins[fixture.program]);
          expect(profile.argv).toEqual(argv);
          expect(profile.cwd).toBe(w.work);
          expect(profile.uid).toBe(w.uid);
          expect(profile.profiler?.name).toBe(profiler.name);
          expect(profile.completeness.complete).toBe(opts.completeWhenLaunched);
          expect(fileUse(profile, w.bins[fixture.program]).access).toContain('exec');
          fixture.check(profile, { w, mode: 'launched', gap });
          // Progress was reported while watching, and counts only go up.
          expect(events.length).toBeGreaterThan(0);
          expect(events.at(-1)).toBeGreaterThan(0);
          expect([...events].sort((a, b) => a - b)).toEqual(events);
        });
      }

      it('stops a program still running at the end of the duration, with nothing left behind', async () => {
        const argv = [w.bins.files_only, w.work, '60000'];
        const before = Date.now();
        const result = await profiler.profile({ command: argv, cwd: w.work }, { durationMs: 1500 });
        if (result.isErr()) throw result.error;
        expect(Date.now() - before).toBeLessThan(30_000);
        if (!gap('cut-run-reported-complete')) expect(result.value.completeness.complete).toBe(false);
        fileUse(result.value, path.join(w.work, 'input.txt'));
        for (const proc of result.value.processes) {
          expect(await host.isRunning(proc.pid), `pid ${proc.pid} still running`).toBe(false);
        }
      });

      it('stops early when the signal aborts', async () => {
        const controller = new AbortController();
        // Abort 1 s after watching starts (the first progress report): start-up time differs per profiler.
        let timer: NodeJS.Timeout | undefined;
        const onProgress = () => {
          timer ??= setTimeout(() => controller.abort(), 1000);
        };
        if (gap('progress-after-watching')) timer = setTimeout(() => controller.abort(), 1000);
        const started = Date.now();
        const result = await profiler.profile(
          { command: [w.bins.files_only, w.work, '60000'], cwd: w.work },
          { durationMs: 60_000, signal: controller.signal, onProgress },
        );
        expect(Date.now() - started).toBeLessThan(30_000);
        if (gap('abort-is-an-error')) {
          expect(result.isErr() && result.error.code).toBe('ABORTED');
          return;
        }
        if (result.isErr()) throw result.error;
        fileUse(result.value, path.join(w.work, 'input.txt'));
      });
    });

    describe('attached by pid', () => {
      for (const fixture of FIXTURE_CASES) {
        it(`${fixture.program}: what the running program holds is in the profile`, async () => {
          const argv = [w.bins[fixture.program], ...fixture.args(w, 30_000)];
          const running = await host.start(fixture.program, argv);
          const result = await profiler.profile({ pid: running.pid }, { durationMs: opts.attachDurationMs ?? 800 });
          if (result.isErr()) throw result.error;
          const profile = result.value;
          expect(profile.executable).toBe(w.bins[fixture.program]);
          expect(profile.argv).toEqual(argv);
          expect(profile.completeness.complete).toBe(false);
          // Attaching never stops the program.
          const status = await running.status();
          expect(status.exitCode).toBeNull();
          expect(status.signalCode).toBeNull();
          fixture.check(profile, { w, mode: 'attached', gap });
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
        const result = await profiler.profile({ command: [path.join(w.work, 'no-such-program'), 'x'] }, { durationMs: 2000 });
        expect(result.isErr() && result.error.code).toBe('LAUNCH_FAILED');
        expect(result.isErr() && result.error.message).toMatch(/no-such-program/);
      });

      it('a file that is not executable is LAUNCH_FAILED', async () => {
        const result = await profiler.profile({ command: [path.join(w.work, 'input.txt')] }, { durationMs: 2000 });
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
