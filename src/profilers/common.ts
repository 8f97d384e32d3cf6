/**
 * Helpers shared by the Linux profilers: typed errors, path rules (pseudo-files, shared
 * libraries), the process tree in /proc, killing what we launched, and the
 * {@link ProfileCollector} that turns raw observations into a validated {@link ResourceProfile}.
 *
 * @module
 */
import { access, lstat, readFile, readlink, readdir } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { err, ok, type Result } from 'neverthrow';
import { ApMigrateError, type ApMigrateErrorOptions, InvalidInputError, toError } from '../errors.js';
import { isPseudoPath } from '../policy/paths.js';
import {
  CAPTURED_RLIMITS,
  type FileReason,
  type FileUse,
  type IpcUse,
  type Platform,
  type ProcessInfo,
  type ResourceProfile,
  ResourceProfileSchema,
  type RlimitName,
  softWithinHard,
  type SocketUse,
  type StartFacts,
} from '../policy/profile.js';
import type { ProfileErrorCode, ProfileOptions, ProfileTarget, LaunchTarget } from '../spec/profiler.js';

/** The error every profiler returns; `code` says which kind of failure it was. */
export class ProfileError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.ProfileError');
  }

  /** Whether `value` is a ProfileError (or a FreeBsdParseError) from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is ProfileError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.ProfileError');
  }

  /** Which kind of profiling failure this is. */
  declare readonly code: ProfileErrorCode;

  constructor(code: ProfileErrorCode, message: string, options: ApMigrateErrorOptions = {}) {
    super(code, message, options);
  }
}

/** True when the target asks us to launch a command (rather than attach to a pid). */
export function isLaunchTarget(target: ProfileTarget): target is LaunchTarget {
  return 'command' in target;
}

/** The largest pid any supported kernel hands out (pid_t is a signed 32-bit integer). */
const MAX_PID = 2 ** 31 - 1;
/** The longest a profiler may be told to watch: Node's timers fire at once beyond this. */
const MAX_DURATION_MS = 2 ** 31 - 1;

/** How a bad value is named in an error message (its type, never the value itself). */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number' && Number.isNaN(value)) return 'NaN';
  return typeof value;
}

/** A string a program can be given: execve cuts it at a NUL byte, and Node refuses it. */
function hasNul(value: string): boolean {
  return value.includes('\0');
}

/**
 * Check a target's shape before doing anything with it: any value may come in from plain
 * JavaScript or JSON, so nothing here throws. Errors are {@link InvalidInputError}s
 * (`INVALID_INPUT`) naming the field: `command`, `command.N`, `cwd`, `env`, `env.NAME`, `pid`.
 */
export function validateTarget(target: unknown): Result<ProfileTarget, InvalidInputError> {
  const invalid = (path: string, message: string) => err(new InvalidInputError('profile target', [{ path, message }]));
  if (typeof target !== 'object' || target === null || Array.isArray(target)) {
    return invalid('', `must be { command: [...] } to launch or { pid } to attach, got ${kindOf(target)}`);
  }
  const t = target as Record<string, unknown>;
  if ('command' in t) {
    const { command, cwd, env } = t;
    if (!Array.isArray(command)) return invalid('command', `must be an array of strings (argv), got ${kindOf(command)}`);
    if (command.length === 0 || command[0] === '') {
      return invalid('command', 'The command to profile is empty: give at least the program name');
    }
    for (const [i, arg] of command.entries()) {
      if (typeof arg !== 'string') return invalid(`command.${i}`, `must be a string, got ${kindOf(arg)}`);
      if (hasNul(arg)) return invalid(`command.${i}`, 'must not contain a NUL byte');
    }
    if (cwd !== undefined) {
      if (typeof cwd !== 'string' || hasNul(cwd) || !path.isAbsolute(cwd)) {
        return invalid('cwd', `The working directory ${typeof cwd === 'string' ? `"${cwd.replaceAll('\0', '\\0')}"` : `(${kindOf(cwd)})`} must be an absolute path`);
      }
    }
    if (env !== undefined) {
      if (typeof env !== 'object' || env === null || Array.isArray(env)) return invalid('env', `must be an object of strings, got ${kindOf(env)}`);
      for (const [name, value] of Object.entries(env)) {
        if (name === '' || name.includes('=') || hasNul(name)) return invalid(`env.${name}`, 'an environment name must be non-empty, without "=" or NUL');
        if (typeof value !== 'string') return invalid(`env.${name}`, `must be a string, got ${kindOf(value)}`);
        if (hasNul(value)) return invalid(`env.${name}`, 'must not contain a NUL byte');
      }
    }
    return ok(target as LaunchTarget);
  }
  if (!('pid' in t)) return invalid('', 'must have command (to launch a program) or pid (to attach to one)');
  const { pid } = t;
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0 || pid > MAX_PID) {
    return invalid('pid', `The pid ${typeof pid === 'number' ? String(pid) : `(${kindOf(pid)})`} is not a positive integer up to ${MAX_PID}`);
  }
  return ok(target as ProfileTarget);
}

/** Check the options of one profiling run ({@link ProfileOptions}); never throws. */
export function validateProfileOptions(options: unknown): Result<ProfileOptions, InvalidInputError> {
  const invalid = (path: string, message: string) => err(new InvalidInputError('profile options', [{ path, message }]));
  if (options === undefined) return ok({});
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return invalid('', `must be an object or left out, got ${kindOf(options)}`);
  const o = options as Record<string, unknown>;
  if (o.durationMs !== undefined && !(typeof o.durationMs === 'number' && Number.isFinite(o.durationMs) && o.durationMs >= 0 && o.durationMs <= MAX_DURATION_MS)) {
    return invalid('durationMs', `must be a number of milliseconds from 0 to ${MAX_DURATION_MS}, got ${typeof o.durationMs === 'number' ? String(o.durationMs) : kindOf(o.durationMs)}`);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) return invalid('signal', 'must be an AbortSignal');
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') return invalid('onProgress', 'must be a function');
  if (o.keepRunning !== undefined && typeof o.keepRunning !== 'boolean') return invalid('keepRunning', 'must be true or false');
  return ok(options as ProfileOptions);
}

/** What a profiler factory option must be (see {@link checkProfilerOptions}). */
export type ProfilerOptionKind = 'string' | 'boolean' | 'function' | 'milliseconds' | 'count' | 'output' | 'executor';

/**
 * Check the options given to a profiler factory (`createStraceProfiler(options)` ...). A factory
 * returns a profiler, not a Result, so it keeps the problem and its `profile()` returns it
 * (`INVALID_INPUT` naming the option) while `availability()` reports it; nothing throws.
 */
export function checkProfilerOptions(what: string, options: unknown, kinds: Readonly<Record<string, ProfilerOptionKind>>): InvalidInputError | undefined {
  const invalid = (path: string, message: string) => new InvalidInputError(what, [{ path, message }]);
  if (options === undefined) return kinds.executor ? invalid('executor', 'an Executor is required') : undefined;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return invalid('', `must be an object, got ${kindOf(options)}`);
  const o = options as Record<string, unknown>;
  for (const [key, kind] of Object.entries(kinds)) {
    const v = o[key];
    if (v === undefined) {
      if (kind === 'executor') return invalid(key, 'an Executor is required');
      continue;
    }
    const fine =
      kind === 'string'
        ? typeof v === 'string' && v !== '' && !hasNul(v)
        : kind === 'boolean'
          ? typeof v === 'boolean'
          : kind === 'function'
            ? typeof v === 'function'
            : kind === 'milliseconds'
              ? typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= MAX_DURATION_MS
              : kind === 'count'
                ? typeof v === 'number' && Number.isSafeInteger(v) && v > 0
                : kind === 'output'
                  ? v === 'ignore' || v === 'inherit'
                  : typeof v === 'object' && v !== null && typeof (v as { exec?: unknown }).exec === 'function';
    if (!fine) {
      const expected = { string: 'a non-empty string without NUL', boolean: 'true or false', function: 'a function', milliseconds: `a number of milliseconds from 1 to ${MAX_DURATION_MS}`, count: 'a positive integer', output: 'ignore or inherit', executor: 'an Executor (an object with exec())' }[kind];
      return invalid(key, `must be ${expected}, got ${typeof v === 'number' ? String(v) : kindOf(v)}`);
    }
  }
  return undefined;
}

/** Both checks of a `profile(target, options)` call: the first problem found, or nothing. */
export function checkProfileCall(target: unknown, options: unknown): InvalidInputError | undefined {
  const t = validateTarget(target);
  if (t.isErr()) return t.error;
  const o = validateProfileOptions(options);
  return o.isErr() ? o.error : undefined;
}

/** Resolve `p` against `base` (a directory) and normalise it; `p` may already be absolute. */
export function resolvePath(base: string, p: string): string {
  return path.posix.resolve(base, p);
}

/** The policy core's one pseudo-path rule (decision 0013): kernel views, not files to send. */
export { isPseudoPath };

/** True for shared libraries and the dynamic loader (the destination may supply its own). */
export function isSharedLibraryPath(p: string): boolean {
  const base = path.posix.basename(p);
  if (/^ld-linux.*\.so/.test(base) || /^ld\.so/.test(base)) return true;
  if (/\.so(\.[0-9.]+)?$/.test(base)) return true;
  return /^\/(usr\/)?(local\/)?lib(32|64|x32)?\//.test(p) && /\.so\b/.test(base);
}

/** This machine's platform, as the profile records it. */
export function currentPlatform(): Platform {
  return { os: os.platform(), release: os.release(), arch: os.machine() };
}

/** The fields of /proc/<pid>/status a profile needs. */
export interface ProcStatus {
  /** Short command name. */
  name: string;
  /** Parent pid. */
  ppid: number;
  /** Real uid. */
  uid: number;
  /** Real gid. */
  gid: number;
  /** Thread-group id (the process id of a thread). */
  tgid: number;
  /** Supplementary group ids (`Groups:`). */
  groups: number[];
  /** File-mode creation mask (`Umask:`, Linux 4.7+); undefined when the kernel does not show it. */
  umask?: number;
}

/** Parse the text of /proc/<pid>/status (only the fields a profile needs). */
export function parseProcStatus(text: string): ProcStatus {
  const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1] ?? '';
  const firstNumber = (name: string) => Number.parseInt(field(name).split(/\s+/)[0] ?? '', 10);
  const groups = field('Groups')
    .split(/\s+/)
    .filter((g) => /^\d+$/.test(g))
    .map(Number);
  const umask = /^[0-7]{1,4}$/.test(field('Umask').trim()) ? Number.parseInt(field('Umask').trim(), 8) : undefined;
  return { name: field('Name'), ppid: firstNumber('PPid'), uid: firstNumber('Uid'), gid: firstNumber('Gid'), tgid: firstNumber('Tgid'), groups, ...(umask !== undefined ? { umask } : {}) };
}

/** Read /proc/<pid>/status; undefined when the process is gone. */
export async function readProcStatus(pid: number): Promise<ProcStatus | undefined> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : parseProcStatus(text);
}

/** Real uid and gid of a status, for a {@link ProcessInfo} (left out when unreadable). */
export function idsOf(status: ProcStatus | undefined): { uid?: number; gid?: number } {
  if (!status) return {};
  return { ...(Number.isInteger(status.uid) && status.uid >= 0 ? { uid: status.uid } : {}), ...(Number.isInteger(status.gid) && status.gid >= 0 ? { gid: status.gid } : {}) };
}

/** The rows of /proc/<pid>/limits, by the `prlimit` name of each limit. */
const PROC_LIMIT_ROWS: Readonly<Record<string, RlimitName>> = {
  'Max cpu time': 'cpu',
  'Max file size': 'fsize',
  'Max data size': 'data',
  'Max stack size': 'stack',
  'Max core file size': 'core',
  'Max resident set': 'rss',
  'Max processes': 'nproc',
  'Max open files': 'nofile',
  'Max locked memory': 'memlock',
  'Max address space': 'as',
  'Max file locks': 'locks',
  'Max pending signals': 'sigpending',
  'Max msgqueue size': 'msgqueue',
  'Max nice priority': 'nice',
  'Max realtime priority': 'rtprio',
  'Max realtime timeout': 'rttime',
};

/** Resource limits by name, as the profile's start facts hold them. */
export type Rlimits = NonNullable<StartFacts['rlimits']>;

/** One limit value of /proc/<pid>/limits; undefined when JSON could not carry it exactly. */
function limitValue(text: string | undefined): number | 'unlimited' | undefined {
  if (text === 'unlimited') return 'unlimited';
  if (text === undefined || !/^\d{1,16}$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Parse the text of /proc/<pid>/limits: the limits named in `wanted` (default
 * {@link CAPTURED_RLIMITS}) whose soft and hard values it shows. Columns are fixed-width
 * (`%-25s %-20s %-20s`), so a row is cut at column 26.
 */
export function parseProcLimits(text: string, wanted: readonly RlimitName[] = CAPTURED_RLIMITS): Rlimits {
  const limits: Rlimits = {};
  for (const line of text.split('\n')) {
    const name = PROC_LIMIT_ROWS[line.slice(0, 25).trim()];
    if (!name || !wanted.includes(name)) continue;
    const [soft, hard] = line.slice(25).trim().split(/\s+/).map(limitValue);
    if (soft !== undefined && hard !== undefined && softWithinHard(soft, hard)) limits[name] = { soft, hard };
  }
  return limits;
}

/** Read the limits of a process; undefined when it is gone or its limits are unreadable. */
export async function readProcLimits(pid: number): Promise<Rlimits | undefined> {
  const text = await readFile(`/proc/${pid}/limits`, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : parseProcLimits(text);
}

/** Supplementary groups, umask and resource limits of a process, as the profile's start facts. */
export function startFactsOf(status: ProcStatus | undefined, limits?: Rlimits): StartFacts | undefined {
  if (!status) return undefined;
  return {
    groups: [...new Set(status.groups)].sort((a, b) => a - b),
    ...(status.umask !== undefined ? { umask: status.umask } : {}),
    ...(limits && Object.keys(limits).length > 0 ? { rlimits: limits } : {}),
  };
}

/** The start facts of process `pid` now, from /proc/<pid>/status and /proc/<pid>/limits. */
export async function readStartFacts(pid: number): Promise<StartFacts | undefined> {
  const [status, limits] = await Promise.all([readProcStatus(pid), readProcLimits(pid)]);
  return startFactsOf(status, limits);
}

/**
 * Start facts of a program we launch: it inherits our supplementary groups, umask and resource
 * limits (the launcher, strace and the eBPF wrapper change none of them), so our own /proc/self says them.
 */
export async function launchedStartFacts(): Promise<StartFacts | undefined> {
  return readStartFacts(process.pid);
}

/**
 * The facts of a program we launched and traced: its first exec, the command as given (the
 * wrapper's `exec "$@"` passes it exactly; a script's argv at start has its interpreter first),
 * run as us, with our groups, umask and limits.
 */
export async function launchedProgramFacts(executable: string, target: LaunchTarget, cwd: string, captureEnv: boolean | undefined): Promise<ProgramFacts> {
  const facts: ProgramFacts = {
    executable,
    argv: [...target.command],
    cwd,
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    ...(captureEnv ? { env: { ...(process.env as Record<string, string>), ...target.env } } : {}),
  };
  const start = await launchedStartFacts();
  if (start) facts.start = start;
  return facts;
}

/**
 * True when a failed call's error says the path was looked up and not there (or not usable):
 * a probe. EEXIST (the path *is* there), interrupted and would-block calls, and the kernel's
 * restart codes are not. `errno` is positive (2 for ENOENT) or the name strace prints.
 */
export function isProbeError(errno: number | string): boolean {
  if (typeof errno === 'string') return !['EEXIST', 'EINTR', 'EAGAIN', 'EWOULDBLOCK', 'ERESTARTSYS', 'ERESTARTNOINTR', 'ERESTARTNOHAND', 'ERESTART_RESTARTBLOCK', 'EINPROGRESS', 'UNKNOWN'].includes(errno);
  return errno > 0 && errno !== 17 && errno !== 4 && errno !== 11 && !(errno >= 512 && errno <= 516);
}

/** True when a process with this pid exists (zombies count as gone). */
export async function processExists(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return false;
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

/** The direct children of every thread of `pid`, from /proc/<pid>/task/<tid>/children. */
export async function childPids(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const children = new Set<number>();
  for (const tid of tasks) {
    const text = await readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => '');
    for (const word of text.split(/\s+/)) if (word) children.add(Number(word));
  }
  return [...children];
}

/** `root` and all its descendants alive now, parents before children. */
export async function processTree(root: number): Promise<number[]> {
  const seen: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    if (seen.includes(pid) || !(await processExists(pid))) continue;
    seen.push(pid);
    queue.push(...(await childPids(pid)));
  }
  return seen;
}

/** Send SIGKILL to `root` and every descendant (children first so none is re-parented and lost). */
export async function killTree(root: number, options: { includeRoot?: boolean } = {}): Promise<void> {
  const tree = await processTree(root);
  for (const pid of tree.reverse()) {
    if (pid === root && options.includeRoot === false) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone: nothing to do.
    }
  }
}

/** Read argv of a process from /proc/<pid>/cmdline. */
export async function readCmdline(pid: number): Promise<string[] | undefined> {
  const raw = await readFile(`/proc/${pid}/cmdline`).catch(() => undefined);
  if (!raw || raw.length === 0) return undefined;
  const parts = raw.toString('utf8').split('\0');
  if (parts.at(-1) === '') parts.pop();
  return parts;
}

/** Read the environment of a process from /proc/<pid>/environ. */
export async function readEnviron(pid: number): Promise<Record<string, string> | undefined> {
  const raw = await readFile(`/proc/${pid}/environ`).catch(() => undefined);
  if (!raw) return undefined;
  const env: Record<string, string> = {};
  for (const entry of raw.toString('utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

/** Read a /proc symlink (exe, cwd, fd/N); undefined when it cannot be read. */
export async function readProcLink(p: string): Promise<string | undefined> {
  return readlink(p).catch(() => undefined);
}

/** How a file was used, as a set. */
type AccessSet = Set<FileUse['access'][number]>;

/** Facts about the program itself that the profile records. */
export interface ProgramFacts {
  /** Absolute path of the executable. */
  executable: string;
  /** argv of the program. */
  argv: string[];
  /** Working directory the program started in. */
  cwd: string;
  /** Real uid. */
  uid: number;
  /** Real gid. */
  gid: number;
  /** Environment, only when the caller asked to capture it. */
  env?: Record<string, string>;
  /** Supplementary groups and umask of the main process (and the like). */
  start?: StartFacts;
}

/** Most probes (failed lookups) a profile lists; more are counted in a note. */
export const MAX_PROBES = 10_000;

/** What the collector knows of one file. */
interface FileEntry {
  access: AccessSet;
  sharedLibrary: boolean;
  reasons: Set<FileReason>;
}

/**
 * Events of processes not known yet, held per pid until the event that makes the process known
 * (its parent's fork or clone) arrives, or until `max` pile up; then handed to `apply` in order.
 */
export class HeldByProcess<T> {
  private readonly held = new Map<number, T[]>();

  constructor(
    private readonly max: number,
    private readonly apply: (pid: number, items: T[]) => void,
  ) {}

  /** Hold `item` for `pid` (released at once when `max` are held). */
  hold(pid: number, item: T): void {
    const queue = this.held.get(pid) ?? [];
    queue.push(item);
    this.held.set(pid, queue);
    if (queue.length >= this.max) this.release(pid);
  }

  /** Apply what is held for `pid`, if anything. */
  release(pid: number): void {
    const queue = this.held.get(pid);
    this.held.delete(pid);
    if (queue) this.apply(pid, queue);
  }

  /** Apply everything still held (processes whose parent event never came). */
  releaseAll(): void {
    for (const pid of [...this.held.keys()]) this.release(pid);
  }
}

/**
 * Collects what a profiler observed (deduplicated) and builds the validated profile.
 * File kinds and sizes are read with lstat when the profile is built, not per event.
 */
export class ProfileCollector {
  /** Events (syscalls or samples) seen; reported as progress. */
  events = 0;
  private readonly files = new Map<string, FileEntry>();
  private readonly probes = new Set<string>();
  private probesLeftOut = 0;
  private readonly sockets = new Map<string, SocketUse>();
  private readonly ipc = new Map<string, IpcUse>();
  private readonly processes = new Map<number, ProcessInfo>();
  private readonly notes: string[] = [];
  private unresolvedCount = 0;
  private readonly unresolvedExamples: string[] = [];
  private incomplete = false;

  /** @param startedAt when watching started (ms since the epoch): files born after it were created by the program. */
  constructor(readonly startedAt: number = Date.now()) {}

  /**
   * Record a use of the file at absolute path `p`: only a call that succeeded (or a file seen
   * held open or mapped) is a use. `reason` says how the profiler saw it (default `traced`).
   */
  addFile(p: string, access: FileUse['access'][number], options: { sharedLibrary?: boolean; reason?: FileReason } = {}): void {
    const normal = path.posix.normalize(p);
    const entry = this.files.get(normal) ?? { access: new Set(), sharedLibrary: false, reasons: new Set() };
    entry.access.add(access);
    entry.sharedLibrary ||= options.sharedLibrary ?? false;
    entry.reasons.add(options.reason ?? 'traced');
    this.files.set(normal, entry);
  }

  /**
   * Record a path the program looked for and did not find (a failed open, stat, access, exec):
   * recorded in `probes`, never packed. Relative or empty paths are ignored (callers resolve
   * first); at most {@link MAX_PROBES} are kept, the rest counted in a note.
   */
  addProbe(p: string): void {
    if (!p.startsWith('/') || p.includes('\0')) return;
    const normal = path.posix.normalize(p);
    if (this.probes.has(normal) || isPseudoPath(normal)) return;
    if (this.probes.size >= MAX_PROBES) {
      this.probesLeftOut++;
      return;
    }
    this.probes.add(normal);
  }

  /**
   * A relative path whose directory is unknown (an unknown directory descriptor, a cwd lost
   * track of): never joined to a guessed directory. Counted in a note; the profile is incomplete.
   */
  unresolved(relativePath: string, where: string): void {
    this.unresolvedCount++;
    this.incomplete = true;
    if (this.unresolvedExamples.length < 3) this.unresolvedExamples.push(`"${relativePath.slice(0, 80)}" (${where})`);
  }

  /** Mark the profile incomplete (some uses may be missing), with a note saying why. */
  markIncomplete(sentence: string): void {
    this.incomplete = true;
    this.note(sentence);
  }

  /** Record a socket (duplicates are merged). */
  addSocket(socket: SocketUse): void {
    this.sockets.set(JSON.stringify(socket), socket);
  }

  /** Record an IPC object (merged by kind and key or name; a known id or size is kept). */
  addIpc(use: IpcUse): void {
    const key = `${use.kind}:${use.name ?? ''}:${use.key ?? (use.id !== undefined ? `id${use.id}` : '')}`;
    const before = this.ipc.get(key);
    this.ipc.set(key, { ...before, ...Object.fromEntries(Object.entries(use).filter(([, v]) => v !== undefined)) } as IpcUse);
  }

  /** Record a process of the program's tree (later facts fill in missing ones). */
  addProcess(info: ProcessInfo): void {
    const before = this.processes.get(info.pid);
    this.processes.set(info.pid, { ...before, ...Object.fromEntries(Object.entries(info).filter(([, v]) => v !== undefined)) } as ProcessInfo);
  }

  /** True once this pid was recorded. */
  hasProcess(pid: number): boolean {
    return this.processes.has(pid);
  }

  /** The pids recorded so far. */
  processIds(): number[] {
    return [...this.processes.keys()];
  }

  /**
   * Refresh the real uid/gid of every recorded process still alive from /proc/<pid>/status: a
   * daemon's workers drop privileges after they start, so the latest look is the one that counts.
   */
  async refreshProcessIds(): Promise<void> {
    for (const pid of this.processIds()) {
      const ids = idsOf(await readProcStatus(pid));
      if (ids.uid !== undefined) this.addProcess({ pid, ...ids });
    }
  }

  /**
   * What was recorded so far, before the file system is consulted: path -> how it was used and
   * why, and the probes (for tests of path resolution, which use paths that need not exist).
   */
  observed(): { files: Record<string, { access: Array<FileUse['access'][number]>; reasons: FileReason[] }>; probes: string[] } {
    const order = ['read', 'write', 'exec'] as const;
    const files = Object.fromEntries(
      [...this.files].map(([p, e]) => [p, { access: order.filter((a) => e.access.has(a)), reasons: REASON_ORDER.filter((r) => e.reasons.has(r)) }]),
    );
    return { files, probes: [...this.probes].sort() };
  }

  /** Add a sentence to the completeness notes (once). */
  note(sentence: string): void {
    if (!this.notes.includes(sentence)) this.notes.push(sentence);
  }

  /** Build and validate the profile. */
  async build(
    program: ProgramFacts,
    meta: { profiler: string; complete: boolean },
  ): Promise<Result<ResourceProfile, ProfileError>> {
    try {
      const files = await this.describeFiles();
      this.noteLeftOut();
      const used = new Set(files.map((f) => f.path));
      const probes = [...this.probes].filter((p) => !used.has(p)).sort();
      const exeStat = await lstat(program.executable).catch(() => undefined);
      const raw = {
        executable: program.executable,
        executableSize: exeStat?.isFile() ? exeStat.size : 0,
        argv: program.argv,
        cwd: program.cwd,
        ...(program.env ? { env: program.env } : {}),
        uid: program.uid,
        gid: program.gid,
        platform: currentPlatform(),
        files,
        sockets: dropBoundDuplicates([...this.sockets.values()]),
        ipc: [...this.ipc.values()],
        processes: withInheritedIds([...this.processes.values()]).sort((a, b) => a.pid - b.pid),
        probes,
        ...(program.start && Object.keys(program.start).length > 0 ? { start: program.start } : {}),
        completeness: { complete: meta.complete && !this.incomplete, notes: this.notes },
        profiler: { name: meta.profiler, startedAt: new Date(this.startedAt).toISOString(), durationMs: Date.now() - this.startedAt },
      };
      return validatedProfile(raw, meta.profiler);
    } catch (e) {
      return err(new ProfileError('PROFILER_FAILED', `Building the profile failed: ${toError(e).message}`, { cause: e }));
    }
  }

  /**
   * Every recorded file as it is now, sorted by path. Kernel views are left out, and so are
   * files only read that are gone by now; both are counted in a note.
   */
  private async describeFiles(): Promise<FileUse[]> {
    const files: FileUse[] = [];
    let skippedPseudo = 0;
    const gone: string[] = [];
    for (const [p, entry] of [...this.files].sort(([a], [b]) => a.localeCompare(b))) {
      if (isPseudoPath(p)) {
        skippedPseudo++;
        continue;
      }
      const use = await describeFile(p, entry, entry.sharedLibrary || isSharedLibraryPath(p), this.startedAt);
      if (use) files.push(use);
      else gone.push(p);
    }
    if (skippedPseudo > 0) this.note(`${skippedPseudo} /proc, /sys or /dev/pts entries were left out: they are kernel views, not files to send.`);
    if (gone.length > 0) {
      this.note(
        `${gone.length} files the program read no longer existed when the profile was built (removed meanwhile) and were left out, e.g. ${gone
          .slice(0, 3)
          .map((g) => JSON.stringify(g))
          .join(', ')}.`,
      );
    }
    return files;
  }

  /** Say what else was left out: relative paths never guessed, probes over the limit. */
  private noteLeftOut(): void {
    if (this.unresolvedCount > 0) {
      this.note(
        `${this.unresolvedCount} relative paths could not be resolved (their directory was not known) and were left out rather than guessed, e.g. ${this.unresolvedExamples.join(', ')}.`,
      );
    }
    if (this.probesLeftOut > 0) this.note(`The program looked for more than ${MAX_PROBES} paths it did not find: ${this.probesLeftOut} more were not listed in probes.`);
  }
}

/** The profile, checked against its schema: a profiler that built an invalid one failed. */
function validatedProfile(raw: unknown, profiler: string): Result<ResourceProfile, ProfileError> {
  const parsed = ResourceProfileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return err(
      new ProfileError('PROFILER_FAILED', `The ${profiler} profiler built an invalid profile at ${issue?.path.join('.') ?? '?'}: ${issue?.message ?? ''}`, {
        cause: parsed.error,
      }),
    );
  }
  return ok(parsed.data);
}

/**
 * A process gone before its /proc/<pid>/status could be read gets its parent's real ids: fork
 * copies them, and only setuid(2) and the like change them later.
 */
function withInheritedIds(processes: ProcessInfo[]): ProcessInfo[] {
  const byPid = new Map(processes.map((p) => [p.pid, { ...p }]));
  const idsOfPid = (pid: number, depth: number): { uid?: number; gid?: number } => {
    const p = byPid.get(pid);
    if (!p || depth > 64) return {};
    if (p.uid !== undefined && p.gid !== undefined) return { uid: p.uid, gid: p.gid };
    return p.ppid !== undefined ? idsOfPid(p.ppid, depth + 1) : {};
  };
  for (const p of byPid.values()) {
    if ((p.uid === undefined || p.gid === undefined) && p.ppid !== undefined) {
      const inherited = idsOfPid(p.ppid, 0);
      if (inherited.uid !== undefined && inherited.gid !== undefined) Object.assign(p, { uid: p.uid ?? inherited.uid, gid: p.gid ?? inherited.gid });
    }
  }
  return [...byPid.values()];
}

/** The order reasons are listed in. */
const REASON_ORDER: readonly FileReason[] = ['held-open', 'mapped', 'traced', 'package', 'config', 'data-root', 'user-included'];

/**
 * Describe one file: its kind and size now, whether it is new, its link target and reasons.
 * Undefined for a file only read that is gone by now: it cannot be sent, and nothing was lost.
 */
async function describeFile(p: string, entry: FileEntry, sharedLibrary: boolean, startedAt: number): Promise<FileUse | undefined> {
  const { access } = entry;
  const order = ['read', 'write', 'exec'] as const;
  const accessList = order.filter((a) => access.has(a));
  const reasons = REASON_ORDER.filter((r) => entry.reasons.has(r));
  const st = await lstat(p).catch(() => undefined);
  if (!st) {
    // Gone by now: a file the program wrote and removed was its own temporary file.
    if (!access.has('write')) return undefined;
    return { path: p, kind: 'unknown', access: accessList, size: 0, sharedLibrary, created: true, reasons };
  }
  const kind: FileUse['kind'] = st.isFile()
    ? 'regular'
    : st.isDirectory()
      ? 'directory'
      : st.isSymbolicLink()
        ? 'symlink'
        : st.isFIFO()
          ? 'fifo'
          : st.isSocket()
            ? 'unix-socket'
            : st.isCharacterDevice() || st.isBlockDevice()
              ? 'device'
              : 'unknown';
  // birthtime is 0 where the file system does not record it: then we cannot tell.
  const created = access.has('write') && st.birthtimeMs > 0 && st.birthtimeMs >= startedAt - 5;
  const use: FileUse = { path: p, kind, access: accessList, size: kind === 'regular' ? st.size : 0, sharedLibrary, created, reasons };
  if (kind === 'symlink') {
    const target = await readlink(p).catch(() => undefined);
    if (target !== undefined) use.linkTarget = target;
  }
  return use;
}

/** A bound-only socket adds nothing when the same address is also listed as listening. */
function dropBoundDuplicates(sockets: SocketUse[]): SocketUse[] {
  const listening = new Set(
    sockets.filter((s) => s.listening).map((s) => `${s.family}|${s.protocol}|${s.localAddress}|${s.localPort}|${s.path}`),
  );
  return sockets.filter((s) => s.listening || !listening.has(`${s.family}|${s.protocol}|${s.localAddress}|${s.localPort}|${s.path}`));
}

/** Map an open(2) flags string (`O_WRONLY|O_CREAT`) or number to how the file is used. */
export function accessFromOpenFlags(flags: string | number): Array<'read' | 'write'> {
  if (typeof flags === 'number') {
    const mode = flags & 3;
    const out: Array<'read' | 'write'> = mode === 0 ? ['read'] : mode === 1 ? ['write'] : ['read', 'write'];
    // O_TRUNC (0o1000) or O_CREAT (0o100) with read-only still changes the file.
    if (mode === 0 && (flags & 0o1000) !== 0) out.push('write');
    return out;
  }
  const parts = flags.split('|');
  if (parts.includes('O_RDWR')) return ['read', 'write'];
  if (parts.includes('O_WRONLY')) return ['write'];
  if (parts.includes('O_TRUNC')) return ['read', 'write'];
  return ['read'];
}

/** Where a launched program's standard output and error go. */
export type ProgramOutput = 'ignore' | 'inherit';

/** Find `command` the way execvp does: a name with a slash is taken relative to `cwd`, others are looked up on PATH. */
export async function resolveCommand(command: string, cwd: string, envPath = process.env.PATH ?? '/usr/bin:/bin'): Promise<string | undefined> {
  const candidates = command.includes('/') ? [resolvePath(cwd, command)] : envPath.split(':').filter(Boolean).map((dir) => resolvePath(cwd, path.posix.join(dir, command)));
  for (const candidate of candidates) {
    const st = await lstat(candidate).catch(() => undefined);
    if (!st) continue;
    if (await access(candidate, fsConstants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

/** Start `argv` directly (no shell) and wait until it has started or failed to. */
export async function launchProgram(
  argv: readonly string[],
  options: { cwd: string; env?: Record<string, string>; output: ProgramOutput; captureStderr?: boolean },
): Promise<Result<ChildProcess, ProfileError>> {
  const [program, ...args] = argv;
  if (!program) return err(new ProfileError('INVALID_INPUT', 'Empty command'));
  return new Promise((resolve) => {
    const child = spawn(program, args, {
      cwd: options.cwd,
      env: options.env ? { ...process.env, ...options.env } : process.env,
      stdio: ['ignore', options.output, options.captureStderr ? 'pipe' : options.output],
    });
    child.once('spawn', () => resolve(ok(child)));
    child.once('error', (cause) =>
      resolve(
        err(
          new ProfileError('LAUNCH_FAILED', `Cannot start "${program}": ${cause.message}`, {
            cause,
            details: { argv: [...argv], cwd: options.cwd },
          }),
        ),
      ),
    );
  });
}

/**
 * Wait for a child process to end; resolves at once when it already has. Waits for `exit`, not
 * `close`: a program strace started inherits strace's stderr and may hold it open for longer.
 */
export function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Resolves after `ms` (or never when undefined), when `signal` aborts, or when `ended` settles,
 * whichever comes first; says which.
 */
export function waitForStop(ms: number | undefined, signal: AbortSignal | undefined, ended: Promise<unknown>): Promise<'duration' | 'aborted' | 'ended'> {
  return new Promise((resolve) => {
    const timer = ms !== undefined ? setTimeout(() => finish('duration'), ms) : undefined;
    const onAbort = () => finish('aborted');
    function finish(why: 'duration' | 'aborted' | 'ended') {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(why);
    }
    if (signal?.aborted) return finish('aborted');
    signal?.addEventListener('abort', onAbort, { once: true });
    void ended.then(() => finish('ended'), () => finish('ended'));
  });
}

/** Run a profiling body; anything it throws becomes a PROFILER_FAILED error instead of escaping the public API. */
export async function guardProfile<T>(profiler: string, body: () => Promise<Result<T, ProfileError>>): Promise<Result<T, ProfileError>> {
  try {
    return await body();
  } catch (e) {
    return err(new ProfileError('PROFILER_FAILED', `The ${profiler} profiler failed: ${toError(e).message}`, { cause: e }));
  }
}

/** Shorten the longest run of zero groups to `::`, as inet_ntop does. */
export function compressIpv6(groups: string[]): string {
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLength && j - i > 1) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const text = bestStart < 0 ? groups.join(':') : `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLength).join(':')}`;
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(text);
  if (mapped) {
    const hi = Number.parseInt(mapped[1]!, 16);
    const lo = Number.parseInt(mapped[2]!, 16);
    return `::ffff:${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return text;
}
