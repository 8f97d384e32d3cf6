/**
 * The eBPF profiler: drives `bpftrace` with a generated program on syscall tracepoints,
 * filtered in the kernel to the program's process tree, so the program runs at full speed.
 *
 * Launch: a tiny `sh` wrapper is started first and blocks reading a pipe; bpftrace is seeded with
 * its pid; once every probe is attached (a marker line) the wrapper is released and `exec`s the
 * command, so no early event is lost. Attach: the tree under the pid is seeded, and what it
 * already holds is sampled from /proc (via the procfs sampler) once the probes are live.
 *
 * bpftrace is always stopped (SIGINT, then SIGKILL) when profiling ends, fails or is aborted.
 *
 * @module
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { createInterface, type Interface } from 'node:readline';
import { promisify } from 'node:util';
import { err, errAsync, ok, ResultAsync, type Result } from 'neverthrow';
import { type ApMigrateError, toError } from '../errors.js';
import type { ResourceProfile } from '../policy/profile.js';
import type { LaunchTarget, ProfileOptions, Profiler, ProfilerAvailability, ProfileTarget } from '../spec/profiler.js';
import {
  isLaunchTarget,
  killTree,
  launchedProgramFacts,
  processExists,
  processTree,
  ProfileCollector,
  ProfileError,
  type ProgramFacts,
  type ProgramOutput,
  readProcLimits,
  readProcStatus,
  resolveCommand,
  checkProfileCall,
  checkProfilerOptions,
  startFactsOf,
  waitForStop,
} from './common.js';
import { EbpfEventTracker, parseEbpfLine, type ProcReader } from './ebpf-parser.js';
import { EBPF_MAX_STRLEN, generateEbpfScript } from './ebpf-script.js';
import { ProcfsSampler } from './procfs.js';

const execFileAsync = promisify(execFile);

/** Options of {@link createEbpfProfiler}. */
export interface EbpfProfilerOptions {
  /** The bpftrace binary (default `bpftrace` on PATH). */
  bpftraceBinary?: string;
  /** Where a launched program's output goes (default `ignore`). */
  programOutput?: ProgramOutput;
  /** Record the program's environment in the profile (default false: it may hold secrets). */
  captureEnv?: boolean;
  /** How long to wait for bpftrace to compile and attach its probes (default 60 s). */
  attachTimeoutMs?: number;
  /** Mount tracefs when it is missing and we are root (default true). */
  mountTracefs?: boolean;
  /** Called with every raw line bpftrace prints (latin1), for debugging. */
  onRawLine?: (line: string) => void;
  /**
   * Trace stat(2), access(2) and their `*at` forms, so that the paths they fail to find are
   * probes (default true). False saves about 14 probes (some 2 s of compile and attach time);
   * failed opens, execs and chdirs are probes either way.
   */
  traceLookups?: boolean;
}

const PROFILER_NAME = 'ebpf';
const TRACEFS_DIRS = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];
const DEFAULT_ATTACH_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 5_000;
const PROGRESS_INTERVAL_MS = 250;
/** bpftrace's per-CPU output buffer, in pages: large enough for bursts of thousands of opens. */
const PERF_RING_PAGES = 1024;
/** The wrapper that holds a launched command until bpftrace is ready (reads `go` on fd 3). */
const LAUNCH_WRAPPER = 'IFS= read -r go <&3 && [ "$go" = go ] && exec "$@" 3<&-; exit 127';

// ---------------------------------------------------------------------------------------------
// Host preparation
// ---------------------------------------------------------------------------------------------

/** What the host offers bpftrace, found (and fixed where possible) before a run. */
interface PreparedHost {
  bpftrace: string;
  /** Prefix argv that raises RLIMIT_MEMLOCK for bpftrace (empty when not needed or impossible). */
  memlockPrefix: string[];
  syscallEvents: Set<string>;
  exitHasGroupDead: boolean;
  /** Kernel BTF is there: bpftrace can read a task's `mm`, so exec lines carry their argv. */
  execArgv: boolean;
  notes: string[];
}

function tracefsSyscallDir(): string | undefined {
  for (const dir of TRACEFS_DIRS) {
    try {
      if (statSync(`${dir}/events/syscalls`).isDirectory()) return dir;
    } catch {
      // not there: try the next place
    }
  }
  return undefined;
}

/** CAP_SYS_RESOURCE (bit 24) in our effective capabilities lets us raise any rlimit. */
function hasCapSysResource(): boolean {
  const status = (() => {
    try {
      return readFileSync('/proc/self/status', 'utf8');
    } catch {
      return '';
    }
  })();
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return hex !== undefined && (BigInt(`0x${hex}`) & (1n << 24n)) !== 0n;
}

/** Soft and hard RLIMIT_MEMLOCK in bytes (Infinity for unlimited), from /proc/self/limits. */
function memlockLimits(): { soft: number; hard: number } | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max locked memory'));
    const [soft, hard] = (line ?? '').slice('Max locked memory'.length).trim().split(/\s+/);
    const num = (v: string | undefined) => (v === 'unlimited' ? Infinity : Number(v));
    return { soft: num(soft), hard: num(hard) };
  } catch {
    return undefined;
  }
}

/** Linux 5.11+ charges BPF memory to the cgroup, so RLIMIT_MEMLOCK no longer limits bpftrace. */
function kernelChargesBpfToCgroup(): boolean {
  const [major = 0, minor = 0] = os.release().split(/[.-]/).map(Number);
  return major > 5 || (major === 5 && minor >= 11);
}

async function memlockPlan(): Promise<{ prefix: string[]; note?: string }> {
  const prlimit = await resolveCommand('prlimit', '/');
  const limits = memlockLimits();
  if (limits && limits.soft === Infinity) return { prefix: [] };
  if (prlimit && hasCapSysResource()) return { prefix: [prlimit, '--memlock=unlimited:unlimited', '--'] };
  if (prlimit && limits && limits.soft < limits.hard) {
    const hard = limits.hard === Infinity ? 'unlimited' : String(limits.hard);
    return { prefix: [prlimit, `--memlock=${hard}:${hard}`, '--'] };
  }
  if (kernelChargesBpfToCgroup()) return { prefix: [] };
  return {
    prefix: [],
    note: `RLIMIT_MEMLOCK is ${limits?.soft ?? '?'} bytes and cannot be raised (no CAP_SYS_RESOURCE); on Linux < 5.11 bpftrace may fail to load its maps`,
  };
}

/** Mount tracefs at /sys/kernel/tracing (root only); resolves to an error message on failure. */
async function mountTracefs(): Promise<string | undefined> {
  try {
    await execFileAsync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing'], { timeout: 10_000 });
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message.split('\n').slice(0, 2).join(' ') : String(e);
  }
}

/**
 * Check (and where possible fix) everything bpftrace needs: Linux, root, the tool, tracefs with
 * syscall tracepoints, and RLIMIT_MEMLOCK. Errors name what is missing.
 */
async function prepareHost(options: EbpfProfilerOptions): Promise<Result<PreparedHost, ProfileError>> {
  if (process.platform !== 'linux') {
    return err(new ProfileError('PROFILER_UNAVAILABLE', `The eBPF profiler needs Linux; this host runs ${process.platform}`));
  }
  if (process.getuid?.() !== 0) {
    return err(new ProfileError('PERMISSION_DENIED', 'The eBPF profiler needs root (bpftrace loads BPF programs): run as root or use the strace profiler'));
  }
  const binary = options.bpftraceBinary ?? 'bpftrace';
  const bpftrace = await resolveCommand(binary, process.cwd());
  if (!bpftrace) {
    return err(new ProfileError('PROFILER_UNAVAILABLE', `The "${binary}" tool is not installed (Debian package bpftrace)`));
  }
  const notes: string[] = [];
  let tracefs = tracefsSyscallDir();
  if (!tracefs) {
    if (options.mountTracefs === false) {
      return err(new ProfileError('PROFILER_UNAVAILABLE', 'tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing`'));
    }
    const failure = await mountTracefs();
    tracefs = tracefsSyscallDir();
    if (!tracefs) {
      return err(
        new ProfileError(
          'PROFILER_UNAVAILABLE',
          failure
            ? `tracefs is not mounted and mounting it at /sys/kernel/tracing failed: ${failure}`
            : 'The kernel has no syscall tracepoints (tracefs has no events/syscalls: CONFIG_FTRACE_SYSCALLS is off)',
        ),
      );
    }
    notes.push('mounted tracefs at /sys/kernel/tracing');
  }
  const syscallEvents = new Set(readdirSync(`${tracefs}/events/syscalls`));
  if (!syscallEvents.has('sys_enter_openat') || !syscallEvents.has('sys_enter_getpriority')) {
    return err(new ProfileError('PROFILER_UNAVAILABLE', `The kernel lacks the syscall tracepoints this profiler needs (${tracefs}/events/syscalls)`));
  }
  const exitFormat = await readFile(`${tracefs}/events/sched/sched_process_exit/format`, 'utf8').catch(() => '');
  const memlock = await memlockPlan();
  if (memlock.note) notes.push(memlock.note);
  const execArgv = statSync('/sys/kernel/btf/vmlinux', { throwIfNoEntry: false })?.isFile() ?? false;
  if (!execArgv) notes.push('the kernel has no BTF (/sys/kernel/btf/vmlinux): exec arguments are read from /proc after the fact');
  return ok({ bpftrace, memlockPrefix: memlock.prefix, syscallEvents, exitHasGroupDead: /\bgroup_dead\b/.test(exitFormat), execArgv, notes });
}

/**
 * Whether the eBPF profiler works here: Linux, root, bpftrace installed, tracefs (mounted now if
 * missing), and the kernel really loads a BPF program (a one-probe bpftrace run).
 */
export async function ebpfAvailability(options: EbpfProfilerOptions = {}): Promise<ProfilerAvailability> {
  const host = await prepareHost(options);
  if (host.isErr()) return { name: PROFILER_NAME, available: false, reason: host.error.message };
  const { bpftrace, memlockPrefix, notes } = host.value;
  const [program = bpftrace, ...args] = [...memlockPrefix, bpftrace, '-e', 'BEGIN { exit(); }'];
  try {
    await execFileAsync(program, args, { timeout: 30_000 });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr ?? String(e);
    return { name: PROFILER_NAME, available: false, reason: `bpftrace cannot load a BPF program (kernel lacks BPF?): ${firstError(stderr)}` };
  }
  return { name: PROFILER_NAME, available: true, ...(notes.length > 0 ? { reason: notes.join('; ') } : {}) };
}

/** The first meaningful error line of bpftrace's stderr (its RLIMIT_MEMLOCK warning is noise). */
function firstError(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '' && !/RLIMIT_MEMLOCK/.test(l));
  return (lines.find((l) => /ERROR/.test(l)) ?? lines[0] ?? 'no message').trim().slice(0, 500);
}

// ---------------------------------------------------------------------------------------------
// Turning events into a profile
// ---------------------------------------------------------------------------------------------

/** The real /proc. */
const liveProcReader: ProcReader = {
  readlink: (p) => {
    try {
      return readlinkSync(p);
    } catch {
      return undefined;
    }
  },
  readFile: (p) => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return undefined;
    }
  },
  readdir: (p) => {
    try {
      return readdirSync(p);
    } catch {
      return undefined;
    }
  },
};


// ---------------------------------------------------------------------------------------------
// Running bpftrace
// ---------------------------------------------------------------------------------------------

/** Where decoded events go; the tracker is set once there is one (events before are dropped). */
interface EventSink {
  tracker?: EbpfEventTracker;
}

/** A running bpftrace, its events fed to a tracker. */
interface BpftraceRun {
  child: ChildProcess;
  /** Resolves when the marker shows every probe attached; errors when bpftrace dies first. */
  ready: Promise<Result<void, ProfileError>>;
  /** Resolves when bpftrace has exited and its output is fully read. */
  closed: Promise<void>;
  lostEvents(): number;
  badLines(): number;
  stderrText(): string;
}

/** A promise settled by the first of several reporters (readiness, death, timeout); later calls are ignored. */
function firstOutcome<T>(): { settled: Promise<T>; settle: (value: T) => void } {
  let resolve: (value: T) => void = () => {};
  let done = false;
  const settled = new Promise<T>((r) => (resolve = r));
  return {
    settled,
    settle: (value) => {
      if (done) return;
      done = true;
      resolve(value);
    },
  };
}

function spawnBpftrace(host: PreparedHost, script: string): ChildProcess {
  const argv = [...host.memlockPrefix, host.bpftrace, '-f', 'json', '-e', script];
  const [program = host.bpftrace, ...args] = argv;
  return spawn(program, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BPFTRACE_STRLEN: String(EBPF_MAX_STRLEN), BPFTRACE_PERF_RB_PAGES: String(PERF_RING_PAGES) },
  });
}

/** The first 16 KiB of a stream (only the start matters for messages). */
function headOf(stream: NodeJS.ReadableStream): () => string {
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    if (text.length < 16_384) text += chunk;
  });
  return () => text;
}

/** Decode bpftrace's lines: events to the sink, the marker to `onReady`; malformed lines and lost events are counted. */
function readBpftraceLines(child: ChildProcess, sink: EventSink, onReady: () => void, onRawLine: ((line: string) => void) | undefined) {
  const counts = { lost: 0, bad: 0 };
  // latin1: one char per byte, so the parser can rebuild bytes bpftrace escaped one by one.
  const lines = createInterface({ input: child.stdout!.setEncoding('latin1'), crlfDelay: Infinity });
  lines.on('line', (line) => {
    onRawLine?.(line);
    const parsed = parseEbpfLine(line);
    if (parsed.isErr()) {
      counts.bad++;
      return;
    }
    const value = parsed.value;
    if (value.kind === 'event') sink.tracker?.handle(value.event);
    else if (value.kind === 'ready') onReady();
    else if (value.kind === 'lost') counts.lost += value.count;
  });
  return { lines, counts };
}

/** Resolves once bpftrace has exited and its output is read to the end (or it could not start: then `onSpawnError`). */
function bpftraceClosed(child: ChildProcess, lines: Interface, onSpawnError: (cause: Error) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    let exited = false;
    let drained = false;
    const done = () => exited && drained && resolve();
    lines.once('close', () => {
      drained = true;
      done();
    });
    child.once('close', () => {
      exited = true;
      done();
    });
    child.once('error', (cause) => {
      onSpawnError(cause);
      exited = true;
      drained = true;
      resolve();
    });
  });
}

/**
 * Poke the marker probe until it answers (its line proves every probe is attached), or give up
 * after `attachTimeoutMs`. Stops once `ready` settles, whichever way.
 */
function pokeMarker(markerNonce: number, attachTimeoutMs: number, ready: Promise<unknown>, settle: (r: Result<void, ProfileError>) => void): void {
  const poke = setInterval(() => {
    try {
      os.getPriority(markerNonce);
    } catch {
      // ESRCH is expected: no process has the nonce as its pid.
    }
  }, 20);
  const timeout = setTimeout(
    () => settle(err(new ProfileError('PROFILER_FAILED', `bpftrace did not attach its probes within ${attachTimeoutMs} ms`, { isRetryable: true }))),
    attachTimeoutMs,
  );
  void ready.then(() => {
    clearInterval(poke);
    clearTimeout(timeout);
  });
}

function startBpftrace(
  host: PreparedHost,
  script: string,
  sink: EventSink,
  markerNonce: number,
  attachTimeoutMs: number,
  onRawLine: ((line: string) => void) | undefined,
): BpftraceRun {
  const child = spawnBpftrace(host, script);
  // Ready when the marker line comes; failed when bpftrace cannot start, dies first, or takes too long.
  const { settled: ready, settle } = firstOutcome<Result<void, ProfileError>>();
  const stderr = headOf(child.stderr!);
  const { lines, counts } = readBpftraceLines(child, sink, () => settle(ok(undefined)), onRawLine);
  const closed = bpftraceClosed(child, lines, (cause) => settle(err(new ProfileError('PROFILER_UNAVAILABLE', `Cannot run bpftrace: ${cause.message}`, { cause }))));
  void closed.then(() =>
    settle(err(new ProfileError('PROFILER_FAILED', `bpftrace stopped before its probes were attached: ${firstError(stderr())}`, { details: { stderr: stderr().slice(0, 4000) } }))),
  );
  pokeMarker(markerNonce, attachTimeoutMs, ready, settle);
  return { child, ready, closed, lostEvents: () => counts.lost, badLines: () => counts.bad, stderrText: stderr };
}

/** SIGINT (bpftrace drains its buffers and exits), then SIGKILL after a grace period. */
async function stopBpftrace(run: BpftraceRun): Promise<void> {
  const { child } = run;
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await run.closed;
  clearTimeout(timer);
}

/** A nonce for the readiness marker: above the largest possible pid, so it names no process. */
function markerNonce(): number {
  return 4_194_304 + 1 + Math.floor(Math.random() * 1_000_000_000);
}

// ---------------------------------------------------------------------------------------------
// Launch and attach
// ---------------------------------------------------------------------------------------------

interface Session {
  collector: ProfileCollector;
  tracker: EbpfEventTracker;
  run: BpftraceRun;
}

function reportProgress(collector: ProfileCollector, options: ProfileOptions): () => void {
  if (!options.onProgress) return () => {};
  const started = collector.startedAt;
  const timer = setInterval(() => options.onProgress?.({ events: collector.events, elapsedMs: Date.now() - started }), PROGRESS_INTERVAL_MS);
  return () => {
    clearInterval(timer);
    options.onProgress?.({ events: collector.events, elapsedMs: Date.now() - started });
  };
}

/** Resolves when no process of the tree is alive any more (checked against /proc too). */
function treeGone(tracker: EbpfEventTracker, stopped: { value: boolean }): Promise<void> {
  return new Promise((resolve) => {
    const check = async () => {
      if (stopped.value) return resolve();
      for (const pid of [...tracker.live]) {
        if (!(await processExists(pid))) tracker.live.delete(pid);
      }
      if (tracker.live.size === 0) return resolve();
      setTimeout(() => void check(), 100);
    };
    setTimeout(() => void check(), 100);
  });
}

function finishNotes(session: Session, host: PreparedHost): boolean {
  const { run, collector } = session;
  let complete = true;
  if (run.lostEvents() > 0) {
    complete = false;
    collector.note(`bpftrace lost ${run.lostEvents()} events (its buffer was full): some uses may be missing.`);
  }
  if (run.badLines() > 0) {
    complete = false;
    collector.note(`${run.badLines()} lines of bpftrace output could not be read.`);
  }
  if (session.tracker.truncated.length > 0) complete = false;
  for (const n of host.notes) collector.note(`eBPF profiler: ${n}.`);
  return complete;
}

async function launchWrapper(target: LaunchTarget, cwd: string, output: ProgramOutput, keepRunning: boolean): Promise<Result<ChildProcess, ProfileError>> {
  const env = target.env ? { ...process.env, ...target.env } : process.env;
  const resolved = await resolveCommand(target.command[0]!, cwd, env.PATH);
  if (!resolved) {
    return err(
      new ProfileError('LAUNCH_FAILED', `Cannot start "${target.command[0]}": not found or not executable (cwd ${cwd})`, {
        details: { argv: [...target.command], cwd },
      }),
    );
  }
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', LAUNCH_WRAPPER, 'ap-migrate-launch', ...target.command], {
      cwd,
      env,
      // stderr is piped (its tail explains a failed start) unless the program outlives us.
      stdio: ['ignore', output, output === 'inherit' ? 'inherit' : keepRunning ? 'ignore' : 'pipe', 'pipe'],
      detached: true,
    });
    child.once('spawn', () => resolve(ok(child)));
    child.once('error', (cause) =>
      resolve(err(new ProfileError('LAUNCH_FAILED', `Cannot start "${target.command[0]}" in ${cwd}: ${cause.message}`, { cause }))),
    );
  });
}

function release(child: ChildProcess): void {
  const gate = child.stdio[3] as NodeJS.WritableStream | null | undefined;
  gate?.on?.('error', () => {});
  gate?.end('go\n');
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** The last `max` characters a stream wrote (a failed start explains itself on stderr). */
function tailOf(stream: NodeJS.ReadableStream | null | undefined, max: number): () => string {
  let text = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (chunk: string) => {
    text = (text + chunk).slice(-max);
  });
  return () => text;
}

async function runLaunch(target: LaunchTarget, options: ProfileOptions, config: EbpfProfilerOptions, host: PreparedHost): Promise<Result<ResourceProfile, ProfileError>> {
  const cwd = target.cwd ?? process.cwd();
  if (!isDirectory(cwd)) return err(new ProfileError('LAUNCH_FAILED', `The working directory ${cwd} does not exist or is not a directory`));
  const wrapper = await launchWrapper(target, cwd, config.programOutput ?? 'ignore', options.keepRunning ?? false);
  if (wrapper.isErr()) return err(wrapper.error);
  const child = wrapper.value;
  const rootPid = child.pid!;
  const stderrTail = tailOf(child.stderr, 2000);
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const sink: EventSink = {};
  const run = startTracing(host, config, [rootPid], sink);
  const stopped = { value: false };
  let stopProgress = () => {};
  try {
    const ready = await readyOrAborted(run, options.signal);
    if (ready.isErr()) return err(ready.error);
    // The wrapper is blocked reading the gate: nothing it does can be missed from here on.
    const collector = new ProfileCollector();
    const tracker = new EbpfEventTracker(collector, rootPid, liveProcReader);
    tracker.seed(rootPid);
    sink.tracker = tracker;
    stopProgress = reportProgress(collector, options);
    release(child);
    const watched = await watchLaunched(target, cwd, options, { child, tracker, exited, stopped, stderrTail });
    if (watched.isErr()) return err(watched.error);
    const why = watched.value;
    stopped.value = true;
    // Last look at the ids while the tree still runs (workers drop privileges after they start).
    tracker.refreshIds();
    if (!options.keepRunning) await killTree(rootPid);
    await stopBpftrace(run);
    tracker.finish();
    const complete = finishNotes({ collector, tracker, run }, host) && why === 'ended';
    for (const [pid, info] of tracker.processes) collector.addProcess({ pid, ...info });
    return await collector.build(await launchedFacts(target, cwd, config, tracker), { profiler: PROFILER_NAME, complete });
  } finally {
    stopped.value = true;
    stopProgress();
    if (!options.keepRunning) await killTree(rootPid);
    else child.unref();
    await stopBpftrace(run);
  }
}

/**
 * Watch the released program until the duration is over or the caller aborts, or until it and
 * everything it left running have ended. A wrapper that could not exec the command (126, 127)
 * is LAUNCH_FAILED.
 */
async function watchLaunched(
  target: LaunchTarget,
  cwd: string,
  options: ProfileOptions,
  launched: { child: ChildProcess; tracker: EbpfEventTracker; exited: Promise<void>; stopped: { value: boolean }; stderrTail: () => string },
): Promise<Result<'duration' | 'aborted' | 'ended', ProfileError>> {
  const { child, tracker } = launched;
  const collector = tracker.collector;
  let why = await waitForStop(options.durationMs, options.signal, launched.exited);
  if (why === 'ended') {
    if (tracker.rootExecutable === undefined && (child.exitCode === 127 || child.exitCode === 126)) {
      const reason = launched.stderrTail().trim().split('\n').pop() || `exit status ${child.exitCode}`;
      return err(new ProfileError('LAUNCH_FAILED', `Cannot start "${target.command[0]}": ${reason}`, { details: { argv: [...target.command], cwd, exitCode: child.exitCode } }));
    }
    // The command's own process ended: keep watching what it left running.
    const left = options.durationMs === undefined ? undefined : Math.max(0, options.durationMs - (Date.now() - collector.startedAt));
    why = await waitForStop(left, options.signal, treeGone(tracker, launched.stopped));
  }
  if (why !== 'ended') collector.note(`Watching stopped (${why}) while the program was still running: later uses are not known.`);
  return ok(why);
}

/** The launched program: its first exec, run as us (with our groups, umask and limits). */
async function launchedFacts(target: LaunchTarget, cwd: string, config: EbpfProfilerOptions, tracker: EbpfEventTracker): Promise<ProgramFacts> {
  const executable = tracker.rootExecutable ?? (await resolveCommand(target.command[0]!, cwd)) ?? target.command[0]!;
  return launchedProgramFacts(executable, target, cwd, config.captureEnv);
}

/** Generate the script that follows these processes and their descendants, and start bpftrace on it. */
function startTracing(host: PreparedHost, config: EbpfProfilerOptions, seedPids: number[], sink: EventSink): BpftraceRun {
  const nonce = markerNonce();
  const script = generateEbpfScript({
    seedPids,
    markerPid: process.pid,
    markerNonce: nonce,
    availableSyscallEvents: host.syscallEvents,
    exitHasGroupDead: host.exitHasGroupDead,
    execArgv: host.execArgv,
    traceLookups: config.traceLookups ?? true,
  });
  return startBpftrace(host, script, sink, nonce, config.attachTimeoutMs ?? DEFAULT_ATTACH_TIMEOUT_MS, config.onRawLine);
}

/** Wait for bpftrace's readiness, or fail at once when the caller aborts meanwhile. */
function readyOrAborted(run: BpftraceRun, signal: AbortSignal | undefined): Promise<Result<void, ProfileError>> {
  const aborted = () => err<void, ProfileError>(new ProfileError('PROFILER_FAILED', 'Profiling was aborted before bpftrace had attached its probes'));
  if (signal?.aborted) return Promise.resolve(aborted());
  return Promise.race([run.ready, new Promise<Result<void, ProfileError>>((resolve) => signal?.addEventListener('abort', () => resolve(aborted()), { once: true }))]);
}

async function runAttach(pid: number, options: ProfileOptions, config: EbpfProfilerOptions, host: PreparedHost): Promise<Result<ResourceProfile, ProfileError>> {
  if (!(await processExists(pid))) return err(new ProfileError('NO_SUCH_PROCESS', `No process with pid ${pid} is running`, { details: { pid } }));
  const tree = await processTree(pid);
  const collector = new ProfileCollector();
  const tracker = new EbpfEventTracker(collector, pid, liveProcReader);
  const rootStatus = await readProcStatus(pid);
  const rootLimits = await readProcLimits(pid);
  for (const p of tree) tracker.seed(p, (await readProcStatus(p))?.ppid);
  const sink: EventSink = { tracker };
  const run = startTracing(host, config, tree, sink);
  const stopped = { value: false };
  let stopProgress = () => {};
  try {
    const ready = await readyOrAborted(run, options.signal);
    if (ready.isErr()) return err(ready.error);
    stopProgress = reportProgress(collector, options);
    // Probes are live: what the tree holds now plus what it does from now on is everything.
    const sampler = new ProcfsSampler(pid, collector, { captureEnv: config.captureEnv ?? false });
    await sampler.sample();
    await waitForStop(options.durationMs, options.signal, treeGone(tracker, stopped));
    stopped.value = true;
    tracker.refreshIds();
    await stopBpftrace(run);
    tracker.finish();
    finishNotes({ collector, tracker, run }, host);
    collector.note('Attached to a running program: files it opened and closed before the attach are not known.');
    const root = sampler.root;
    const status = await readProcStatus(pid);
    for (const [p, info] of tracker.processes) collector.addProcess({ pid: p, ...info });
    const program: ProgramFacts = {
      executable: root.executable ?? tracker.processes.get(pid)?.executable ?? '/unknown',
      argv: root.argv ?? tracker.processes.get(pid)?.argv ?? [String(pid)],
      cwd: root.cwd ?? '/',
      uid: root.uid ?? status?.uid ?? 0,
      gid: root.gid ?? status?.gid ?? 0,
      ...(root.env ? { env: root.env } : {}),
    };
    const start = root.start ?? startFactsOf(rootStatus, rootLimits);
    if (start) program.start = start;
    return await collector.build(program, { profiler: PROFILER_NAME, complete: false });
  } finally {
    stopped.value = true;
    stopProgress();
    await stopBpftrace(run);
  }
}

async function runEbpf(target: ProfileTarget, options: ProfileOptions, config: EbpfProfilerOptions): Promise<Result<ResourceProfile, ProfileError>> {
  const host = await prepareHost(config);
  if (host.isErr()) return err(host.error);
  return isLaunchTarget(target) ? runLaunch(target, options, config, host.value) : runAttach(target.pid, options, config, host.value);
}

/**
 * Create the eBPF profiler (Linux, root, the `bpftrace` package). It mounts tracefs when it is
 * missing and raises RLIMIT_MEMLOCK where it can; otherwise it returns PROFILER_UNAVAILABLE
 * naming what is missing.
 */
export function createEbpfProfiler(options: EbpfProfilerOptions = {}): Profiler {
  const badOptions = checkProfilerOptions('eBPF profiler options', options, {
    bpftraceBinary: 'string',
    programOutput: 'output',
    captureEnv: 'boolean',
    attachTimeoutMs: 'milliseconds',
    mountTracefs: 'boolean',
    onRawLine: 'function',
    traceLookups: 'boolean',
  });
  return {
    name: PROFILER_NAME,
    availability: async () => (badOptions ? { name: PROFILER_NAME, available: false, reason: badOptions.message } : ebpfAvailability(options)),
    profile: (target, profileOptions = {}) => {
      const invalid = badOptions ?? checkProfileCall(target, profileOptions);
      if (invalid) return errAsync<ResourceProfile, ApMigrateError>(invalid);
      return new ResultAsync<ResourceProfile, ApMigrateError>(
        runEbpf(target, profileOptions, options).catch((e: unknown) =>
          err(new ProfileError('PROFILER_FAILED', `The eBPF profiler failed: ${toError(e).message}`, { cause: e })),
        ),
      );
    },
  };
}

