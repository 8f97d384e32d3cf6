/**
 * The strace profiler: runs `strace -f -yy` (ptrace; seccomp-bpf filtering for launched
 * programs) on a few syscall classes and turns each successful call into a resource use, and
 * each failed lookup into a probe.
 * Works without BPF, costs more than eBPF (every traced syscall stops the thread twice).
 *
 * @module
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { err, errAsync, ok, type Result, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ResourceProfile, SocketUse } from '../policy/profile.js';
import type { ProfileOptions, Profiler, ProfilerAvailability, ProfileTarget } from '../spec/profiler.js';
import {
  accessFromOpenFlags,
  guardProfile,
  idsOf,
  isLaunchTarget,
  isProbeError,
  killTree,
  launchedProgramFacts,
  processExists,
  processTree,
  HeldByProcess,
  ProfileCollector,
  ProfileError,
  type ProgramFacts,
  type ProgramOutput,
  readProcLink,
  readProcLimits,
  readProcStatus,
  resolveCommand,
  resolvePath,
  checkProfileCall,
  checkProfilerOptions,
  startFactsOf,
  waitForExit,
  waitForStop,
} from './common.js';
import { ProcfsSampler, parseSysvTable } from './procfs.js';
import {
  parseFdArg,
  parseQuoted,
  parseSockaddr,
  parseSocketDecoration,
  parseStringArray,
  type StraceCall,
  StraceLineParser,
} from './strace-parser.js';

const execFileAsync = promisify(execFile);

/** The syscalls traced: those that name files, sockets, IPC objects, or change the process tree or cwd. */
export const TRACED_SYSCALLS = [
  // files
  'open', 'openat', 'openat2', 'creat', 'execve', 'execveat', 'chdir', 'fchdir', 'mkdir', 'mkdirat', 'mknod', 'mknodat',
  'rename', 'renameat', 'renameat2', 'unlink', 'unlinkat', 'rmdir', 'truncate', 'link', 'linkat', 'symlink', 'symlinkat',
  // lookups: a failure is a probe (a path looked for and not found); a success alone is no use
  'stat', 'lstat', 'newfstatat', 'statx', 'access', 'faccessat', 'faccessat2',
  // network
  'bind', 'listen', 'connect',
  // ipc
  'shmget', 'shmat', 'semget', 'msgget', 'mq_open',
  // process
  'clone', 'clone3', 'fork', 'vfork',
] as const;

/**
 * Where each path-taking call has the path it looks up, and the directory argument it is
 * relative to (-1: the cwd). A failed call makes that path a probe.
 */
const LOOKUP_ARGS: Readonly<Record<string, readonly [path: number, dir: number]>> = {
  open: [0, -1], creat: [0, -1], openat: [1, 0], openat2: [1, 0], execve: [0, -1], execveat: [1, 0], chdir: [0, -1],
  mkdir: [0, -1], mknod: [0, -1], unlink: [0, -1], rmdir: [0, -1], truncate: [0, -1], mkdirat: [1, 0], mknodat: [1, 0], unlinkat: [1, 0],
  rename: [0, -1], link: [0, -1], renameat: [1, 0], renameat2: [1, 0], linkat: [1, 0], symlink: [1, -1], symlinkat: [2, 1],
  stat: [0, -1], lstat: [0, -1], newfstatat: [1, 0], statx: [1, 0], access: [0, -1], faccessat: [1, 0], faccessat2: [1, 0],
};

/** Calls that write the one path they name (at the place {@link LOOKUP_ARGS} gives). */
const WRITES_ONE_PATH = ['mkdir', 'mknod', 'unlink', 'rmdir', 'truncate', 'mkdirat', 'mknodat', 'unlinkat', 'symlink', 'symlinkat'] as const;

/** Where rename and link calls have their second path (the first is in {@link LOOKUP_ARGS}). */
const SECOND_PATH: Readonly<Record<string, readonly [path: number, dir: number]>> = {
  rename: [1, -1], link: [1, -1], renameat: [3, 2], renameat2: [3, 2], linkat: [3, 2],
};

/** Applies one successful call. */
type CallHandler = (call: StraceCall) => void;

/** `[name, handler]` for each name, for a handler table. */
function handle(names: readonly string[], handler: CallHandler): Array<[string, CallHandler]> {
  return names.map((name) => [name, handler]);
}

/** Calls of a process kept until the clone that made it is seen (strace may print a child's first calls before the parent's clone returns). */
const MAX_HELD_CALLS = 10_000;

/**
 * Turns parsed strace calls into uses in a {@link ProfileCollector}: resolves relative paths
 * against the calling process's cwd (tracked per process through clone, chdir/fchdir and
 * `AT_FDCWD<...>`) or the `*at` directory descriptor's `-yy` path. A successful call is a use; a
 * failed lookup is a probe. A relative name whose directory is not known is never joined to a
 * guess: it is counted in a note.
 */
export class StraceInterpreter {
  /** Thread id -> process id (thread-group id), for every thread seen. */
  private readonly group = new Map<number, number>();
  /** Process id -> cwd (undefined once we lost track of it). */
  private readonly cwds = new Map<number, string | undefined>();
  private readonly held = new HeldByProcess<StraceCall>(MAX_HELD_CALLS, (pid, queue) => {
    if (!this.group.has(pid)) {
      this.group.set(pid, pid);
      this.cwds.set(pid, undefined);
    }
    for (const call of queue) this.apply(call);
  });
  private rootSeen = false;
  private readonly shmIdsFromGet = new Set<number>();
  private readonly attachedShmIds = new Set<number>();
  /** The first successful execve of the root process (its executable and argv). */
  rootExec?: { executable: string; argv: string[] };
  /** Called with the pid of each process first seen (its ids can be read from /proc meanwhile). */
  onNewProcess?: (pid: number) => void;

  constructor(
    readonly collector: ProfileCollector,
    /** The root process's pid, or `first-exec` when the first call traced is the root's (launch). */
    private readonly rootPid: number | 'first-exec' | undefined,
    private readonly initialCwd: string,
  ) {}

  /** Set the cwd of a pid known from elsewhere (/proc, when attaching). */
  setCwd(pid: number, cwd: string): void {
    this.group.set(pid, pid);
    this.cwds.set(pid, cwd);
  }

  /** Say that thread `tid` belongs to process `pid` (from /proc/<pid>/task, when attaching). */
  setThread(tid: number, pid: number): void {
    this.group.set(tid, pid);
    if (!this.cwds.has(pid)) this.cwds.set(pid, undefined);
  }

  private groupOf(tid: number): number {
    return this.group.get(tid) ?? tid;
  }

  private cwdOf(tid: number): string | undefined {
    return this.cwds.get(this.groupOf(tid));
  }

  /**
   * Absolute form of path argument `p`, against `AT_FDCWD<cwd>`, a directory descriptor's `-yy`
   * path, or the tracked cwd. Undefined when that directory is unknown: a use is then counted
   * (`collector.unresolved`), a probe dropped.
   */
  private resolve(pid: number, p: string, dirArg?: string, what: 'use' | 'probe' = 'use'): string | undefined {
    if (p.startsWith('/')) return path.posix.normalize(p);
    let base: string | undefined;
    let where = `cwd of pid ${this.groupOf(pid)} unknown`;
    if (dirArg === undefined) base = this.cwdOf(pid);
    else {
      const dir = parseFdArg(dirArg);
      if (dir?.fd === 'AT_FDCWD') {
        if (dir.decoration?.startsWith('/')) {
          base = dir.decoration;
          this.cwds.set(this.groupOf(pid), base);
        } else base = this.cwdOf(pid);
      } else {
        base = dir?.decoration?.startsWith('/') ? dir.decoration : undefined;
        where = `descriptor ${dirArg.slice(0, 40)} of pid ${this.groupOf(pid)} not a directory path`;
      }
    }
    if (base === undefined) {
      if (what === 'use') this.collector.unresolved(p, where);
      return undefined;
    }
    return resolvePath(base, p);
  }

  /** Apply one call (held back while the clone that made its process has not been seen). */
  handle(call: StraceCall): void {
    this.collector.events++;
    if (!this.group.has(call.pid)) {
      const isRoot = this.rootPid === call.pid || (this.rootPid === 'first-exec' && !this.rootSeen);
      if (isRoot) {
        this.rootSeen = true;
        this.group.set(call.pid, call.pid);
        this.cwds.set(call.pid, this.initialCwd);
      } else {
        this.held.hold(call.pid, call);
        return;
      }
    }
    this.apply(call);
  }

  /** Apply the calls still held (their process's clone was never seen): their cwd is unknown. Call at the end of the trace. */
  finish(): void {
    this.held.releaseAll();
  }

  /** The handler of each call whose success is a use (see {@link TRACED_SYSCALLS}); lookups alone have none. */
  private readonly handlers: ReadonlyMap<string, CallHandler> = new Map([
    ...handle(['open', 'creat', 'openat', 'openat2'], (c) => this.onOpen(c)),
    ...handle(['execve', 'execveat'], (c) => this.onExec(c)),
    ...handle(['chdir'], (c) => this.onChdir(c)),
    ...handle(['fchdir'], (c) => this.onFchdir(c)),
    ...handle(WRITES_ONE_PATH, (c) => this.onPathWritten(c)),
    ...handle(Object.keys(SECOND_PATH), (c) => this.onRenameOrLink(c)),
    ...handle(['bind', 'connect'], (c) => this.socketCall(c)),
    ...handle(['listen'], (c) => this.listen(c)),
    ...handle(['shmget', 'semget', 'msgget'], (c) => this.onSysvGet(c)),
    ...handle(['shmat'], (c) => this.onShmat(c)),
    ...handle(['mq_open'], (c) => this.onMqOpen(c)),
    ...handle(['clone', 'clone3', 'fork', 'vfork'], (c) => this.onClone(c)),
  ]);

  private apply(call: StraceCall): void {
    // A failed call is no use; a failed lookup is a probe. A non-blocking connect in progress is a use.
    if (call.errno !== undefined && !(call.name === 'connect' && call.errno === 'EINPROGRESS')) return this.onFailure(call, call.errno);
    this.handlers.get(call.name)?.(call);
  }

  private onFailure(call: StraceCall, errno: number | string): void {
    const lookup = LOOKUP_ARGS[call.name];
    const p = lookup ? parseQuoted(call.args[lookup[0]] ?? '') : undefined;
    if (!lookup || !p || !isProbeError(errno)) return;
    const probe = this.resolve(call.pid, p, lookup[1] >= 0 ? call.args[lookup[1]] : undefined, 'probe');
    if (probe) this.collector.addProbe(probe);
  }

  /** The absolute path a call names at `[path, dir]` (see {@link LOOKUP_ARGS}); undefined when it names none or its directory is unknown. */
  private pathAt(call: StraceCall, [pathIndex, dirIndex]: readonly [number, number]): string | undefined {
    const p = parseQuoted(call.args[pathIndex] ?? '');
    return p ? this.resolve(call.pid, p, dirIndex >= 0 ? call.args[dirIndex] : undefined) : undefined;
  }

  private onOpen(call: StraceCall): void {
    const file = this.pathAt(call, LOOKUP_ARGS[call.name]!);
    if (!file) return;
    const { name, args } = call;
    const flags =
      name === 'creat' ? 'O_WRONLY|O_CREAT' : name === 'openat2' ? (/flags=([\w|]+)/.exec(args[2] ?? '')?.[1] ?? '') : name === 'openat' ? (args[2] ?? '') : (args[1] ?? '');
    this.open(file, flags);
  }

  private onExec(call: StraceCall): void {
    const lookup = LOOKUP_ARGS[call.name]!;
    const executable = this.pathAt(call, lookup);
    if (!executable) return;
    const argv = parseStringArray(call.args[lookup[0] + 1] ?? '') ?? [];
    const proc = this.groupOf(call.pid);
    this.collector.addFile(executable, 'exec');
    const known = this.collector.hasProcess(proc);
    this.collector.addProcess({ pid: proc, executable, ...(argv.length > 0 ? { argv } : {}) });
    if (!known) this.onNewProcess?.(proc);
    if ((proc === this.rootPid || this.rootPid === 'first-exec') && !this.rootExec) this.rootExec = { executable, argv };
  }

  private onChdir(call: StraceCall): void {
    const p = parseQuoted(call.args[0] ?? '');
    if (p !== undefined) this.cwds.set(this.groupOf(call.pid), this.resolve(call.pid, p));
  }

  private onFchdir(call: StraceCall): void {
    // A descriptor strace could not name leaves the cwd unknown rather than wrong.
    const dir = parseFdArg(call.args[0] ?? '')?.decoration;
    this.cwds.set(this.groupOf(call.pid), dir?.startsWith('/') ? dir : undefined);
  }

  /** mkdir, unlink, truncate, symlink ...: the path they name is written. */
  private onPathWritten(call: StraceCall): void {
    const file = this.pathAt(call, LOOKUP_ARGS[call.name]!);
    if (file) this.collector.addFile(file, 'write');
  }

  /** rename and link: the first path is moved (written) or linked to (read), the second one written. */
  private onRenameOrLink(call: StraceCall): void {
    const from = this.pathAt(call, LOOKUP_ARGS[call.name]!);
    const to = this.pathAt(call, SECOND_PATH[call.name]!);
    if (from) this.collector.addFile(from, call.name === 'link' || call.name === 'linkat' ? 'read' : 'write');
    if (to) this.collector.addFile(to, 'write');
  }

  private onSysvGet(call: StraceCall): void {
    const { name, args } = call;
    const key = Number(args[0] === 'IPC_PRIVATE' ? 0 : args[0]) | 0;
    const kind = name === 'shmget' ? 'sysv-shm' : name === 'semget' ? 'sysv-sem' : 'sysv-msg';
    const size = name === 'shmget' ? Number(args[1]) : undefined;
    if (call.retval === undefined || Number.isNaN(key)) return;
    if (kind === 'sysv-shm') this.shmIdsFromGet.add(call.retval);
    this.collector.addIpc({ kind, key, id: call.retval, ...(size !== undefined && Number.isFinite(size) ? { size } : {}) });
  }

  /** A segment attached by id; its key is looked up at the end unless a shmget of ours named it. */
  private onShmat(call: StraceCall): void {
    const id = Number(call.args[0]);
    if (Number.isInteger(id)) this.attachedShmIds.add(id);
  }

  private onMqOpen(call: StraceCall): void {
    const name = parseQuoted(call.args[0] ?? '');
    if (name !== undefined) this.collector.addIpc({ kind: 'posix-mq', name: name.startsWith('/') ? name : `/${name}` });
  }

  private onClone(call: StraceCall): void {
    const child = call.retval;
    if (child === undefined || child <= 0) return;
    const parent = this.groupOf(call.pid);
    if (/CLONE_THREAD/.test(call.args.join(','))) {
      // Threads share the process (and its cwd); only new processes go in the process list.
      this.group.set(child, parent);
    } else {
      this.group.set(child, child);
      this.cwds.set(child, this.cwds.get(parent));
      this.collector.addProcess({ pid: child, ppid: parent });
      this.onNewProcess?.(child);
    }
    this.held.release(child);
  }

  private open(p: string, flags: string): void {
    if (p.startsWith('/dev/shm/')) {
      this.collector.addIpc({ kind: 'posix-shm', name: p.slice('/dev/shm'.length) });
      return;
    }
    for (const access of accessFromOpenFlags(flags)) this.collector.addFile(p, access);
  }

  private socketCall(call: StraceCall): void {
    const addr = parseSockaddr(call.args[1] ?? '');
    if (!addr) return;
    const deco = parseSocketDecoration(parseFdArg(call.args[0] ?? '')?.decoration ?? '');
    const protocol = deco?.protocol ?? 'other';
    const use: SocketUse = { family: addr.family, protocol, listening: false };
    const isConnect = call.name === 'connect';
    if (addr.family === 'unix-path' || addr.family === 'unix-abstract') {
      if (addr.path === undefined || addr.path === '') return;
      use.path = addr.path;
    } else if (addr.family === 'inet' || addr.family === 'inet6') {
      if (isConnect) Object.assign(use, { remoteAddress: addr.address, remotePort: addr.port });
      else Object.assign(use, { localAddress: addr.address, localPort: addr.port });
    }
    this.collector.addSocket(use);
  }

  private listen(call: StraceCall): void {
    const deco = parseSocketDecoration(parseFdArg(call.args[0] ?? '')?.decoration ?? '');
    if (!deco) return;
    if (deco.family === 'inet' || deco.family === 'inet6') {
      if (deco.localPort === undefined) return;
      this.collector.addSocket({ family: deco.family, protocol: deco.protocol, localAddress: deco.localAddress, localPort: deco.localPort, listening: true });
    } else if (deco.family === 'unix' && deco.path) {
      const abstract = deco.path.startsWith('@');
      this.collector.addSocket({
        family: abstract ? 'unix-abstract' : 'unix-path',
        protocol: deco.protocol,
        path: abstract ? deco.path.slice(1) : deco.path,
        listening: true,
      });
    }
  }

  /** Segments attached with shmat but created elsewhere: find their keys in /proc/sysvipc/shm. */
  async resolveAttachedSegments(): Promise<void> {
    const missing = [...this.attachedShmIds].filter((id) => !this.shmIdsFromGet.has(id));
    if (missing.length === 0) return;
    const table = parseSysvTable(await readFile('/proc/sysvipc/shm', 'utf8').catch(() => ''), 'sysv-shm');
    for (const id of missing) {
      const entry = table.find((e) => e.id === id);
      this.collector.addIpc({ kind: 'sysv-shm', id, ...(entry ? { key: entry.key, ...(entry.size !== undefined ? { size: entry.size } : {}) } : {}) });
    }
  }
}

/** Options of {@link createStraceProfiler}. */
export interface StraceProfilerOptions {
  /** The strace binary (default `strace` on PATH). */
  straceBinary?: string;
  /** Where a launched program's output goes (default `ignore`). */
  programOutput?: ProgramOutput;
  /** Record the program's environment in the profile (default false: it may hold secrets). */
  captureEnv?: boolean;
}

const DEFAULT_DURATION_MS = 10_000;

/** Create the strace profiler (ptrace; needs the `strace` package, and root to attach to others' processes). */
export function createStraceProfiler(options: StraceProfilerOptions = {}): Profiler {
  const badOptions = checkProfilerOptions('strace profiler options', options, { straceBinary: 'string', programOutput: 'output', captureEnv: 'boolean' });
  return {
    name: 'strace',
    availability: async () => (badOptions ? { name: 'strace', available: false, reason: badOptions.message } : straceAvailability(options.straceBinary)),
    profile: (target, profileOptions = {}) => {
      const invalid = badOptions ?? checkProfileCall(target, profileOptions);
      if (invalid) return errAsync<ResourceProfile, ApMigrateError>(invalid);
      return new ResultAsync<ResourceProfile, ApMigrateError>(guardProfile('strace', () => runStrace(target, profileOptions, options)));
    },
  };
}

/** Whether strace is installed and new enough (5.3+ for `--seccomp-bpf`). */
export async function straceAvailability(binary = 'strace'): Promise<ProfilerAvailability> {
  const found = await resolveCommand(binary, process.cwd());
  if (!found) return { name: 'strace', available: false, reason: `the "${binary}" tool is not installed (Debian package strace)` };
  try {
    const { stdout } = await execFileAsync(found, ['-V'], { timeout: 5000 });
    const version = /version (\d+)\.(\d+)/.exec(stdout);
    const major = Number(version?.[1] ?? 0);
    const minor = Number(version?.[2] ?? 0);
    if (major < 5 || (major === 5 && minor < 3)) {
      return { name: 'strace', available: false, reason: `strace ${major}.${minor} is too old: 5.3 or newer is needed for --seccomp-bpf` };
    }
    const root = process.getuid?.() === 0;
    return { name: 'strace', available: true, reason: `strace ${major}.${minor}${root ? '' : '; not root: only own processes can be attached'}` };
  } catch (e) {
    return { name: 'strace', available: false, reason: `"${found} -V" failed: ${String(e)}` };
  }
}

/** A FIFO strace writes into, read as a stream (bounded memory, progress while it runs). */
async function openTraceFifo(): Promise<{ fifo: string; socket: net.Socket; closeWriter: () => void; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ap-migrate-strace-'));
  const fifo = path.join(dir, 'trace');
  await execFileAsync('mkfifo', ['-m', '600', fifo]);
  // Non-blocking opens never wait for the other end. Our own writer keeps the reader from
  // seeing end-of-file before strace has opened the FIFO; it is closed once strace is done.
  const readFd = openSync(fifo, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  let writeFd: number | undefined = openSync(fifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
  const socket = new net.Socket({ fd: readFd, readable: true, writable: false });
  return {
    fifo,
    socket,
    closeWriter: () => {
      if (writeFd !== undefined) closeSync(writeFd);
      writeFd = undefined;
    },
    cleanup: async () => {
      if (writeFd !== undefined) closeSync(writeFd);
      writeFd = undefined;
      socket.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Keep the last `max` bytes of a stream (strace's own messages, for error reports). */
function tail(stream: NodeJS.ReadableStream | null, max = 8192): () => string {
  let text = '';
  stream?.on('data', (chunk: Buffer) => {
    text = (text + chunk.toString('utf8')).slice(-max);
  });
  return () => text;
}

/** Wait until `pid` is traced by `tracer` (strace attaches in the background). */
async function waitTraced(pid: number, tracer: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    if (new RegExp(`^TracerPid:\\s*${tracer}$`, 'm').test(status)) return true;
    if (!status) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

async function runStrace(target: ProfileTarget, opts: ProfileOptions, config: StraceProfilerOptions) {
  const binary = await resolveCommand(config.straceBinary ?? 'strace', process.cwd());
  if (!binary) return err(new ProfileError('PROFILER_UNAVAILABLE', `strace is not installed: install the Debian package "strace"`));
  const collector = new ProfileCollector();
  const trace = await openTraceFifo();
  try {
    return isLaunchTarget(target) ? await straceLaunch(binary, target, opts, config, collector, trace) : await straceAttach(binary, target.pid, opts, config, collector, trace);
  } finally {
    await trace.cleanup();
  }
}

type TraceFifo = Awaited<ReturnType<typeof openTraceFifo>>;

function baseArgs(fifo: string): string[] {
  return ['-f', '-qq', '-yy', '-s', '4096', '-e', `trace=${TRACED_SYSCALLS.join(',')}`, '-o', fifo];
}

/**
 * Read each process's real ids from /proc when it first shows up; the returned function waits
 * for those reads, then reads again for every process still alive (workers drop privileges).
 */
function watchIds(interpreter: StraceInterpreter, collector: ProfileCollector): () => Promise<void> {
  const reads: Array<Promise<void>> = [];
  interpreter.onNewProcess = (pid) => {
    reads.push(
      readProcStatus(pid).then((status) => {
        const ids = idsOf(status);
        if (ids.uid !== undefined) collector.addProcess({ pid, ...ids });
      }),
    );
  };
  return async () => {
    await Promise.all(reads);
    await collector.refreshProcessIds();
  };
}

/** Read the trace into the interpreter; resolves at end of file. */
function consume(trace: TraceFifo, interpreter: StraceInterpreter, parser: StraceLineParser): Promise<void> {
  const lines = readline.createInterface({ input: trace.socket, crlfDelay: Infinity });
  lines.on('line', (line) => {
    const event = parser.push(line);
    if (event?.type === 'call') interpreter.handle(event.call);
  });
  return new Promise((resolve) => lines.once('close', () => resolve()));
}

function progressTimer(collector: ProfileCollector, opts: ProfileOptions): () => void {
  if (!opts.onProgress) return () => {};
  const started = Date.now();
  const timer = setInterval(() => opts.onProgress?.({ events: collector.events, elapsedMs: Date.now() - started }), 250);
  return () => clearInterval(timer);
}

/** End of file on the trace, or give up after `ms` (a stuck strace must not hang us). */
function drained(done: Promise<void>, ms: number): Promise<boolean> {
  return Promise.race([done.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
}

/** Start strace; a spawn failure (no binary, no permission) is PROFILER_UNAVAILABLE. `echoStderr` copies its messages to ours. */
async function spawnStrace(binary: string, args: readonly string[], options: SpawnOptions, echoStderr: boolean): Promise<Result<{ child: ChildProcess; stderr: () => string }, ProfileError>> {
  const child = spawn(binary, args, options);
  const stderr = tail(child.stderr);
  if (echoStderr) child.stderr?.pipe(process.stderr);
  const spawnError = await new Promise<Error | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (e) => resolve(e));
  });
  if (spawnError) return err(new ProfileError('PROFILER_UNAVAILABLE', `Cannot run strace: ${spawnError.message}`, { cause: spawnError }));
  return ok({ child, stderr });
}

/** Wait for strace to exit (SIGKILL after 5 s), then read the trace to its end (given up after 5 s more). */
async function drainTrace(child: ChildProcess, exited: Promise<void>, trace: TraceFifo, done: Promise<void>): Promise<void> {
  if (!(await drained(exited, 5000))) child.kill('SIGKILL');
  await exited;
  trace.closeWriter();
  if (!(await drained(done, 5000))) trace.socket.destroy();
}

/**
 * A command that cannot start is LAUNCH_FAILED before strace runs: a missing working directory
 * or executable (spawn's ENOENT would not say which, nor tell it from strace being missing).
 */
async function checkLaunchable(command: readonly string[], cwd: string, envPath: string | undefined): Promise<ProfileError | undefined> {
  if (!(await stat(cwd).then((s) => s.isDirectory(), () => false))) {
    return new ProfileError('LAUNCH_FAILED', `The working directory ${cwd} does not exist or is not a directory`, { details: { argv: [...command], cwd } });
  }
  if (!(await resolveCommand(command[0]!, cwd, envPath))) {
    return new ProfileError('LAUNCH_FAILED', `Cannot start "${command[0]}": no such executable (looked in the cwd and on PATH)`, { details: { argv: [...command], cwd } });
  }
  return undefined;
}

async function straceLaunch(
  binary: string,
  target: { command: readonly string[]; cwd?: string; env?: Record<string, string> },
  opts: ProfileOptions,
  config: StraceProfilerOptions,
  collector: ProfileCollector,
  trace: TraceFifo,
) {
  const cwd = target.cwd ?? process.cwd();
  const unlaunchable = await checkLaunchable(target.command, cwd, target.env?.PATH ?? process.env.PATH);
  if (unlaunchable) return err(unlaunchable);
  // --seccomp-bpf stops the program only for the traced syscalls, but its filter outlives
  // strace: a program left running (keepRunning) would then see ENOSYS. Only use it when
  // the program ends with the profile.
  const args = [...baseArgs(trace.fifo), ...(opts.keepRunning ? [] : ['--seccomp-bpf']), '--', ...target.command];
  const output = config.programOutput ?? 'ignore';
  const env = target.env ? { ...process.env, ...target.env } : process.env;
  const started = await spawnStrace(binary, args, { cwd, env, stdio: ['ignore', output, 'pipe'] }, output === 'inherit');
  if (started.isErr()) return err(started.error);
  const { child, stderr } = started.value;
  const interpreter = new StraceInterpreter(collector, 'first-exec', cwd);
  const parser = new StraceLineParser();
  const why = await watchLaunched(child, opts, interpreter, parser, trace);
  if (!interpreter.rootExec) {
    const message = stderr().trim().split('\n').filter(Boolean).at(-1) ?? `exit code ${child.exitCode}`;
    return err(new ProfileError('LAUNCH_FAILED', `Cannot start "${target.command[0]}" under strace: ${message}`, { details: { argv: [...target.command], cwd, stderr: stderr() } }));
  }
  await interpreter.resolveAttachedSegments();
  if (parser.unparsed.length > 0) collector.note(`${parser.unparsed.length} strace lines could not be parsed, e.g. ${JSON.stringify(parser.unparsed[0])}.`);
  // strace starts the program with our groups, umask and limits.
  const facts = await launchedProgramFacts(interpreter.rootExec.executable, target, cwd, config.captureEnv);
  const complete = why === 'ended' && parser.unparsed.length === 0;
  if (why !== 'ended') collector.note('Watching stopped before the program ended: later uses are not in the profile.');
  return collector.build(facts, { profiler: 'strace', complete });
}

/** Trace the launched program until it ends, the duration is over or the caller aborts; strace is stopped and the trace read. */
async function watchLaunched(child: ChildProcess, opts: ProfileOptions, interpreter: StraceInterpreter, parser: StraceLineParser, trace: TraceFifo) {
  const { collector } = interpreter;
  const readIds = watchIds(interpreter, collector);
  const done = consume(trace, interpreter, parser);
  const stopProgress = progressTimer(collector, opts);
  const exited = waitForExit(child);
  const why = await waitForStop(opts.durationMs ?? DEFAULT_DURATION_MS, opts.signal, exited);
  await readIds();
  if (why !== 'ended') {
    // keepRunning: killing strace makes the kernel detach its tracees, which run on untraced.
    if (opts.keepRunning) child.kill('SIGKILL');
    else await killTree(child.pid!, { includeRoot: false }); // strace exits after its last tracee
  }
  await drainTrace(child, exited, trace, done);
  stopProgress();
  interpreter.finish();
  return why;
}

/** A pid to attach to must exist and its /proc entry be readable (by its user, or root). */
async function checkAttachable(pid: number): Promise<ProfileError | undefined> {
  if (!(await processExists(pid))) return new ProfileError('NO_SUCH_PROCESS', `No process with pid ${pid} is running`, { details: { pid } });
  if (!(await readProcLink(`/proc/${pid}/exe`))) {
    return new ProfileError('PERMISSION_DENIED', `Cannot read /proc/${pid}: run as root or as the process's user`, { details: { pid } });
  }
  return undefined;
}

async function straceAttach(
  binary: string,
  pid: number,
  opts: ProfileOptions,
  config: StraceProfilerOptions,
  collector: ProfileCollector,
  trace: TraceFifo,
) {
  const unattachable = await checkAttachable(pid);
  if (unattachable) return err(unattachable);
  // What the program already holds: long-running daemons acquire most resources at start-up.
  const sampler = new ProcfsSampler(pid, collector, { captureEnv: config.captureEnv ?? false });
  await sampler.sample();
  collector.note('Attached to a running program: what it held then was sampled from /proc; files it opened and closed before are missed.');
  const tree = await processTree(pid);
  const interpreter = new StraceInterpreter(collector, undefined, sampler.root.cwd ?? '/');
  await describeTree(interpreter, tree);
  const readIds = watchIds(interpreter, collector);
  // No --seccomp-bpf: strace cannot install a filter in a process that is already running.
  const args = [...baseArgs(trace.fifo), ...tree.flatMap((p) => ['-p', String(p)])];
  const started = await spawnStrace(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] }, false);
  if (started.isErr()) return err(started.error);
  const { child, stderr } = started.value;
  const parser = new StraceLineParser();
  const done = consume(trace, interpreter, parser);
  const exited = waitForExit(child);
  if (!(await Promise.race([waitTraced(pid, child.pid!, 5000), exited.then(() => false)]))) {
    child.kill('SIGKILL');
    await exited;
    trace.closeWriter();
    return err(await attachFailure(pid, stderr().trim()));
  }
  const stopProgress = progressTimer(collector, opts);
  const why = await waitForStop(opts.durationMs ?? DEFAULT_DURATION_MS, opts.signal, exited);
  // A last look at what is held, while still attached (before the program may end).
  await sampler.sample();
  await readIds();
  if (why !== 'ended') child.kill('SIGINT'); // strace detaches; the attached program keeps running
  await drainTrace(child, exited, trace, done);
  stopProgress();
  interpreter.finish();
  await interpreter.resolveAttachedSegments();
  return collector.build(await attachedFacts(sampler, pid), { profiler: 'strace', complete: false });
}

/** The cwd of each process of the tree, and which process each thread belongs to (strace names threads by their own ids). */
async function describeTree(interpreter: StraceInterpreter, tree: readonly number[]): Promise<void> {
  for (const p of tree) {
    const cwd = await readProcLink(`/proc/${p}/cwd`);
    if (cwd) interpreter.setCwd(p, cwd);
    for (const tid of await readdir(`/proc/${p}/task`).catch(() => [] as string[])) {
      if (/^\d+$/.test(tid) && Number(tid) !== p) interpreter.setThread(Number(tid), p);
    }
  }
}

/** Why strace did not attach: refused, the process ended meanwhile, or something else (its message says). */
async function attachFailure(pid: number, message: string): Promise<ProfileError> {
  const denied = /Operation not permitted|EPERM/.test(message);
  if (!denied && !(await processExists(pid))) return new ProfileError('NO_SUCH_PROCESS', `Process ${pid} ended before strace could attach`, { details: { pid } });
  return new ProfileError(denied ? 'PERMISSION_DENIED' : 'PROFILER_FAILED', `strace could not attach to pid ${pid}: ${message || 'no reason given'}`, { details: { pid, stderr: message } });
}

/** The attached program as the sampler first saw it (ids from /proc when the sample had none). */
async function attachedFacts(sampler: ProcfsSampler, pid: number): Promise<ProgramFacts> {
  const root = sampler.root;
  const [status, limits] = await Promise.all([readProcStatus(pid), readProcLimits(pid)]);
  const facts: ProgramFacts = {
    executable: root.executable ?? '/',
    argv: root.argv ?? ['?'],
    cwd: root.cwd ?? '/',
    uid: root.uid ?? status?.uid ?? 0,
    gid: root.gid ?? status?.gid ?? 0,
    ...(root.env ? { env: root.env } : {}),
  };
  const start = root.start ?? startFactsOf(status, limits);
  if (start) facts.start = start;
  return facts;
}
