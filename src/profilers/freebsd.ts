/**
 * The FreeBSD profiler: drives FreeBSD's own tools over an {@link Executor} (this machine or SSH).
 *
 * - Attach (`{ pid }`): a snapshot of the process tree with `ps`, `procstat -b/-c/-f/-v`,
 *   `sockstat -l`/`-c` and `ipcs -a`. Nothing is slowed down, but files opened and closed
 *   before the snapshot are missed, which the profile says in `completeness`.
 * - Launch (`{ command }`): `ktrace -i -t cnst` records every system call, path lookup and socket
 *   address of the program and its children, and `kdump -H -n -d` prints the trace.
 *   (`i` in `-t` would also record every byte read and written, so it is left out.)
 *
 * Sizes and kinds of the files come from `stat -f '%z %Sp %N'` on the same host.
 * Every tool output goes through the strict parsers in `freebsd-parsers.ts`.
 *
 * @module
 */
import path from 'node:path';
import { err, errAsync, ok, type Result, ResultAsync } from 'neverthrow';
import { ApMigrateError, toError } from '../errors.js';
import { isPseudoPath } from '../policy/paths.js';
import { type FileUse, type IpcUse, type Platform, type ProcessInfo, type ResourceProfile, ResourceProfileSchema, type SocketUse } from '../policy/profile.js';
import type { ExecOptions, ExecResult, Executor } from '../spec/executor.js';
import type { AttachTarget, LaunchTarget, ProfileOptions, ProfileTarget, Profiler, ProfilerAvailability } from '../spec/profiler.js';
import { checkProfileCall, checkProfilerOptions, ProfileError } from './common.js';
import {
  addPathUse,
  FreeBsdParseError,
  interpretKdump,
  isFreeBsdSharedLibrary,
  type IpcsEntry,
  type KdumpRecord,
  type Observations,
  parseIpcs,
  parseKdumpRecords,
  parseProcstatArgs,
  parseProcstatBinary,
  parseProcstatFiles,
  parseProcstatVm,
  parsePs,
  parseSockstat,
  parseStat,
  parseUnameSrm,
  type PathUse,
  type ProcstatBinary,
  type ProcstatFile,
  type ProcstatMapping,
  type ProcstatVnodeType,
  type PsEntry,
  type SockstatEntry,
  type StatEntry,
  type UnameInfo,
} from './freebsd-parsers.js';

/** Options for {@link createFreeBsdProfiler}. */
export interface FreeBsdProfilerOptions {
  /** Where the FreeBSD tools run: a local executor on a FreeBSD machine, or an SSH one. */
  executor: Executor;
  /** Time limit for each inspection command (default 60 s). */
  commandTimeoutMs?: number;
  /** Cap on the kdump text read back (default 64 MiB); a bigger trace is an error, never truncated. */
  maxTraceBytes?: number;
  /** Paths per `stat` command (default 200), to stay well under the argument-length limit. */
  statBatchSize?: number;
}

/** Name of this profiler. */
export const FREEBSD_PROFILER_NAME = 'freebsd';
/** The tools the profiler needs on the host. */
export const FREEBSD_TOOLS = ['procstat', 'sockstat', 'ipcs', 'ktrace', 'kdump', 'ps', 'stat'] as const;
/** `ps` arguments: every process with its parent, real uid/gid and real user name. */
export const PS_ARGV = ['ps', '-ax', '-o', 'pid=', '-o', 'ppid=', '-o', 'ruid=', '-o', 'rgid=', '-o', 'ruser='] as const;
/** ktrace facilities: system calls, namei, signals, structures (socket addresses). */
export const KTRACE_FACILITIES = 'cnst';

/** Create the FreeBSD profiler. */
export function createFreeBsdProfiler(options: FreeBsdProfilerOptions): Profiler {
  // Kept, not thrown: profile() returns it and availability() says it.
  const badOptions = checkProfilerOptions('FreeBSD profiler options', options, {
    executor: 'executor',
    commandTimeoutMs: 'milliseconds',
    maxTraceBytes: 'count',
    statBatchSize: 'count',
  });
  const given = badOptions ? undefined : options;
  const ctx: Ctx = {
    executor: given?.executor as Executor,
    timeoutMs: given?.commandTimeoutMs ?? 60_000,
    maxTraceBytes: given?.maxTraceBytes ?? 64 * 1024 * 1024,
    statBatchSize: given?.statBatchSize ?? 200,
  };
  return {
    name: FREEBSD_PROFILER_NAME,
    availability: async () => (badOptions ? { name: FREEBSD_PROFILER_NAME, available: false, reason: badOptions.message } : availability(ctx)),
    profile: (target, profileOptions = {}) => {
      // The same rules as the Linux profilers, before any command runs.
      const invalid = badOptions ?? checkProfileCall(target, profileOptions);
      if (invalid) return errAsync<ResourceProfile, ApMigrateError>(invalid);
      return new ResultAsync(
        runProfile(ctx, target, profileOptions).catch((e: unknown) =>
          err(ApMigrateError.isInstance(e) ? e : new ProfileError('PROFILER_FAILED', `The FreeBSD profiler failed: ${toError(e).message}`, { cause: e })),
        ),
      );
    },
  };
}

interface Ctx {
  executor: Executor;
  timeoutMs: number;
  maxTraceBytes: number;
  statBatchSize: number;
}

type R<T> = Result<T, ApMigrateError>;

async function run(ctx: Ctx, argv: readonly string[], options: ExecOptions = {}): Promise<R<ExecResult>> {
  return ctx.executor.exec(argv, { timeoutMs: ctx.timeoutMs, ...options });
}

/** Map a failed inspection command to the profile error that explains it. */
function commandFailure(argv: readonly string[], result: ExecResult, pid?: number): ProfileError {
  const stderr = result.stderr.trim();
  const what = argv.slice(0, 2).join(' ');
  const details = { argv: [...argv], code: result.code, stderr: stderr.slice(0, 500) };
  if (/No such process/i.test(stderr)) return new ProfileError('NO_SUCH_PROCESS', `Process ${String(pid ?? '?')} is gone (${what}: ${stderr})`, { details });
  if (/Operation not permitted|Permission denied/i.test(stderr)) {
    return new ProfileError('PERMISSION_DENIED', `${what} was refused on ${argv[0] === 'ktrace' ? 'the program' : `process ${String(pid ?? '?')}`}: ${stderr}. Run as the process owner or root.`, { details });
  }
  if (result.code === 127 || /not found/i.test(stderr)) return new ProfileError('PROFILER_UNAVAILABLE', `${argv[0]} is missing on the host: ${stderr}`, { details });
  return new ProfileError('PROFILER_FAILED', `${what} exited with ${String(result.code ?? result.signal)}: ${stderr || '(no message)'}`, { details });
}

/** Run a command that must succeed and parse its standard output. */
async function runParsed<T>(ctx: Ctx, argv: readonly string[], parse: (stdout: string) => Result<T, FreeBsdParseError>, pid?: number, signal?: AbortSignal): Promise<R<T>> {
  const result = await run(ctx, argv, { allowNonZeroExit: true, ...(signal ? { signal } : {}) });
  if (result.isErr()) return err(result.error);
  if (result.value.code !== 0) return err(commandFailure(argv, result.value, pid));
  return parse(result.value.stdout);
}

async function availability(ctx: Ctx): Promise<ProfilerAvailability> {
  const uname = await runParsed(ctx, ['uname', '-srm'], parseUnameSrm);
  if (uname.isErr()) return { name: FREEBSD_PROFILER_NAME, available: false, reason: uname.error.message };
  const which = await run(ctx, ['which', ...FREEBSD_TOOLS], { allowNonZeroExit: true });
  if (which.isErr()) return { name: FREEBSD_PROFILER_NAME, available: false, reason: which.error.message };
  if (which.value.code !== 0) {
    const found = which.value.stdout.split('\n').map((l) => path.posix.basename(l.trim()));
    const missing = FREEBSD_TOOLS.filter((t) => !found.includes(t));
    return { name: FREEBSD_PROFILER_NAME, available: false, reason: `missing on ${ctx.executor.description}: ${missing.join(', ')}` };
  }
  return { name: FREEBSD_PROFILER_NAME, available: true, reason: `${uname.value.release} ${uname.value.machine} via ${ctx.executor.description}` };
}

async function runProfile(ctx: Ctx, target: ProfileTarget, options: ProfileOptions): Promise<R<ResourceProfile>> {
  const startedAt = Date.now();
  // The target was checked by checkProfileCall in profile().
  if ('command' in target) return launch(ctx, target, options, startedAt);
  return attach(ctx, target, options, startedAt);
}

// ---------------------------------------------------------------------------------------------
// Attach: a snapshot of a running process tree.

/** Every descendant of `root` (root first, breadth first). */
export function processTreeOf(entries: readonly PsEntry[], root: number): number[] {
  const tree = [root];
  for (let i = 0; i < tree.length; i++) {
    for (const e of entries) if (e.ppid === tree[i] && !tree.includes(e.pid)) tree.push(e.pid);
  }
  return tree;
}

/** What the snapshot commands printed about one process tree. */
interface Snapshot {
  uname: UnameInfo;
  ps: PsEntry[];
  /** The process attached to, as ps lists it. */
  self: PsEntry;
  /** It and every descendant, root first. */
  tree: number[];
  binaries: ProcstatBinary[];
  args: Map<number, string[]>;
  fds: ProcstatFile[];
  maps: ProcstatMapping[];
  listening: SockstatEntry[];
  connected: SockstatEntry[];
  ipcs: { entries: IpcsEntry[]; notes: string[] };
}

/** Run the snapshot commands in their documented order, each of which must succeed: uname, ps, procstat, sockstat, ipcs. */
async function takeSnapshot(ctx: Ctx, pid: number, signal: AbortSignal | undefined): Promise<R<Snapshot>> {
  const uname = await runParsed(ctx, ['uname', '-srm'], parseUnameSrm, undefined, signal);
  if (uname.isErr()) return err(uname.error);
  const ps = await runParsed(ctx, PS_ARGV, parsePs, undefined, signal);
  if (ps.isErr()) return err(ps.error);
  const self = ps.value.find((e) => e.pid === pid);
  if (!self) return err(new ProfileError('NO_SUCH_PROCESS', `No process ${pid} on ${ctx.executor.description}`, { details: { pid } }));
  const tree = processTreeOf(ps.value, pid);
  const procstat = await readProcstat(ctx, pid, tree, signal);
  if (procstat.isErr()) return err(procstat.error);
  const listening = await runParsed(ctx, ['sockstat', '-l'], (s) => parseSockstat(s, 'sockstat -l'), undefined, signal);
  if (listening.isErr()) return err(listening.error);
  const connected = await runParsed(ctx, ['sockstat', '-c'], (s) => parseSockstat(s, 'sockstat -c'), undefined, signal);
  if (connected.isErr()) return err(connected.error);
  const ipcs = await readIpcs(ctx, signal);
  if (ipcs.isErr()) return err(ipcs.error);
  return ok({ uname: uname.value, ps: ps.value, self, tree, ...procstat.value, listening: listening.value, connected: connected.value, ipcs: ipcs.value });
}

/** `procstat -b`, `-c` (argv of the root only), `-f` and `-v` of the tree. */
async function readProcstat(ctx: Ctx, pid: number, tree: readonly number[], signal: AbortSignal | undefined): Promise<R<Pick<Snapshot, 'binaries' | 'args' | 'fds' | 'maps'>>> {
  const pidArgs = tree.map(String);
  const binaries = await runParsed(ctx, ['procstat', '-b', ...pidArgs], parseProcstatBinary, pid, signal);
  if (binaries.isErr()) return err(binaries.error);
  // procstat -c prints the command name before argv: -b says where it ends, even with spaces in it.
  const commByPid = new Map(binaries.value.map((b) => [b.pid, b.comm]));
  const args = await runParsed(ctx, ['procstat', '-c', String(pid)], (s) => parseProcstatArgs(s, commByPid), pid, signal);
  if (args.isErr()) return err(args.error);
  const fds = await runParsed(ctx, ['procstat', '-f', ...pidArgs], parseProcstatFiles, pid, signal);
  if (fds.isErr()) return err(fds.error);
  const maps = await runParsed(ctx, ['procstat', '-v', ...pidArgs], parseProcstatVm, pid, signal);
  if (maps.isErr()) return err(maps.error);
  return ok({ binaries: binaries.value, args: args.value, fds: fds.value, maps: maps.value });
}

async function attach(ctx: Ctx, target: AttachTarget, options: ProfileOptions, startedAt: number): Promise<R<ResourceProfile>> {
  const { pid } = target;
  const snapshot = await takeSnapshot(ctx, pid, options.signal);
  if (snapshot.isErr()) return err(snapshot.error);
  const s = snapshot.value;
  const obs: Observations = { files: new Map(), sockets: [], ipc: [], processes: [], notes: [...s.ipcs.notes], events: 0 };
  const inTree = new Set(s.tree);
  const exeByPid = new Map<number, string>();
  for (const b of s.binaries) if (b.path) exeByPid.set(b.pid, b.path);
  const cwd = observeDescriptors(obs, s.fds, pid, exeByPid);
  observeMappings(obs, s.maps, inTree, new Set(exeByPid.values()));
  observeSockets(obs, s, inTree);
  observeSysvIpc(obs, s.ipcs.entries, s.self, inTree);
  obs.notes.push('A snapshot of a running program: files it opened and closed before the snapshot are not listed.');
  observeProcesses(obs, s, exeByPid);
  const executable = exeByPid.get(pid);
  if (!executable) return err(new ProfileError('PROFILER_FAILED', `procstat could not name the executable of process ${pid}`));
  if (!cwd) obs.notes.push('The working directory had no path in the name cache; "/" was recorded.');
  options.onProgress?.({ events: obs.events, elapsedMs: Date.now() - startedAt });
  return build(ctx, obs, {
    executable,
    argv: s.args.get(pid) ?? [executable],
    cwd: cwd ?? '/',
    uid: s.self.ruid,
    gid: s.self.rgid,
    platform: { os: 'freebsd', release: s.uname.release, arch: s.uname.machine },
    complete: false,
    startedAt,
    signal: options.signal,
  });
}

/**
 * Files held open, the text (executable) of each process and POSIX IPC objects from `procstat -f`.
 * Fills in `exeByPid` from the text vnodes; returns the working directory of `pid` when the
 * kernel's name cache knows it.
 */
function observeDescriptors(obs: Observations, fds: readonly ProcstatFile[], pid: number, exeByPid: Map<number, string>): string | undefined {
  let cwd: string | undefined;
  let nameless = 0;
  for (const f of fds) {
    obs.events++;
    if (f.fd === 'text' && f.name) {
      addPathUse(obs.files, f.name, 'exec', { reason: 'mapped' });
      if (!exeByPid.has(f.pid)) exeByPid.set(f.pid, f.name);
    } else if (f.fd === 'cwd') {
      if (f.pid === pid && f.name) cwd = f.name;
    } else if (f.fd === 'root' || f.fd === 'jail') {
      if (f.pid === pid && f.name && f.name !== '/') obs.notes.push(`The process runs chrooted or jailed at ${f.name}; its paths are relative to that root.`);
    } else if (f.type === 'vnode' || f.type === 'fifo') {
      if (f.name) addHeldOpen(obs, f, f.name);
      else nameless++;
    } else if (f.type === 'shm' || f.type === 'mqueue') {
      addPosixIpc(obs, f);
    }
    // Sockets come from sockstat (it knows which ones listen); pipes, kqueues and ptys are not resources to isolate.
  }
  if (nameless > 0) obs.notes.push(`${nameless} open files had no path in the kernel's name cache and could not be named.`);
  return cwd;
}

/** The file kind procstat's type columns show, until stat(1) says. */
const VNODE_KIND: Partial<Record<ProcstatVnodeType, FileUse['kind']>> = { fifo: 'fifo', directory: 'directory', character: 'device', block: 'device', regular: 'regular' };

function addHeldOpen(obs: Observations, f: ProcstatFile, name: string): void {
  const kindHint = f.type === 'fifo' ? 'fifo' : VNODE_KIND[f.vnodeType];
  const extra = { ...(kindHint ? { kindHint } : {}), reason: 'held-open' as const };
  // A descriptor open neither for reading nor for writing (O_PATH, O_EXEC) still names a file the program needs.
  if (f.read || (!f.write && !f.append)) addPathUse(obs.files, name, 'read', extra);
  if (f.write || f.append) addPathUse(obs.files, name, 'write', extra);
}

function addPosixIpc(obs: Observations, f: ProcstatFile): void {
  const kind = f.type === 'shm' ? 'posix-shm' : 'posix-mq';
  if (f.name?.startsWith('/')) obs.ipc.push({ kind, name: f.name });
  else obs.notes.push(`Process ${f.pid} holds an unnamed POSIX ${f.type === 'shm' ? 'shared memory object' : 'message queue'} (fd ${String(f.fd)}).`);
}

/** Files mapped into the tree (`procstat -v`): shared libraries, and what the executables map of themselves. */
function observeMappings(obs: Observations, maps: readonly ProcstatMapping[], inTree: ReadonlySet<number>, executables: ReadonlySet<string>): void {
  for (const m of maps) {
    if (m.objectType !== 'vn' || !m.path || !inTree.has(m.pid)) continue;
    obs.events++;
    const lib = m.exec && !executables.has(m.path);
    addPathUse(obs.files, m.path, m.exec ? 'exec' : 'read', { sharedLibrary: lib || isFreeBsdSharedLibrary(m.path), reason: 'mapped' });
  }
}

/** The tree's sockets: `sockstat -l` says which listen, `sockstat -c` which are connected. */
function observeSockets(obs: Observations, s: Pick<Snapshot, 'listening' | 'connected'>, inTree: ReadonlySet<number>): void {
  let anonymousUnix = 0;
  for (const [list, isListening] of [
    [s.listening, true],
    [s.connected, false],
  ] as const) {
    for (const entry of list) {
      if (entry.pid === undefined || !inTree.has(entry.pid)) continue;
      obs.events++;
      const use = socketFromSockstat(entry, isListening);
      if (use) obs.sockets.push(use);
      else anonymousUnix++;
    }
  }
  if (anonymousUnix > 0) obs.notes.push(`${anonymousUnix} unnamed unix sockets (socket pairs) were left out: they need no isolation.`);
}

/**
 * The tree's SysV objects from `ipcs -a`: segments and queues by the pids ipcs shows; semaphore
 * sets, for which ipcs shows none, by the user who created them (which the profile notes).
 */
function observeSysvIpc(obs: Observations, entries: readonly IpcsEntry[], self: PsEntry, inTree: ReadonlySet<number>): void {
  let semByCreator = 0;
  for (const e of entries) {
    const mine = e.kind === 'sysv-sem' ? e.creator === self.ruser : e.pids.some((p) => inTree.has(p));
    if (!mine) continue;
    if (e.kind === 'sysv-sem') semByCreator++;
    obs.ipc.push(ipcFromIpcs(e));
  }
  if (semByCreator > 0) {
    obs.notes.push(`ipcs shows no process ids for semaphores: ${semByCreator} semaphore sets were attributed to the program because user ${self.ruser} created them; some may belong to other programs of that user.`);
  }
}

/** Each process of the tree with its parent and real ids (from ps), executable, and the root's argv. */
function observeProcesses(obs: Observations, s: Snapshot, exeByPid: ReadonlyMap<number, string>): void {
  const root = s.self.pid;
  for (const p of s.tree) {
    const e = s.ps.find((x) => x.pid === p);
    const exe = exeByPid.get(p);
    // ps gives each process's real ids (a daemon's workers may run as another user than its master).
    obs.processes.push({
      pid: p,
      ...(e ? { ppid: e.ppid, uid: e.ruid, gid: e.rgid } : {}),
      ...(exe ? { executable: exe } : {}),
      ...(p === root ? { argv: s.args.get(root) ?? [] } : {}),
    });
  }
  obs.notes.push('argv was read from procstat -c, which joins arguments with spaces: an argument that contained spaces was split.');
}

/** `ipcs -a`; a kernel without SysV IPC makes ipcs fail, which means no SysV objects. */
async function readIpcs(ctx: Ctx, signal?: AbortSignal): Promise<R<{ entries: IpcsEntry[]; notes: string[] }>> {
  const argv = ['ipcs', '-a'];
  const result = await run(ctx, argv, { allowNonZeroExit: true, ...(signal ? { signal } : {}) });
  if (result.isErr()) return err(result.error);
  if (result.value.code !== 0) {
    if (/not configured|kern\.ipc|unknown oid|Function not implemented/i.test(result.value.stderr)) {
      return ok({ entries: [], notes: [`ipcs failed (${result.value.stderr.trim()}): the kernel offers no SysV IPC here, so the program uses none.`] });
    }
    return err(commandFailure(argv, result.value));
  }
  const parsed = parseIpcs(result.value.stdout);
  return parsed.isErr() ? err(parsed.error) : ok({ entries: parsed.value, notes: [] });
}

function ipcFromIpcs(e: IpcsEntry): IpcUse {
  return { kind: e.kind, key: e.key, id: e.id, ...(e.size !== undefined ? { size: e.size } : {}) };
}

/** Turn a sockstat row into a socket use; undefined for an unnamed unix socket. */
export function socketFromSockstat(s: SockstatEntry, fromListeningList: boolean): SocketUse | undefined {
  if (s.family === 'unix') {
    const p = s.path ?? s.peerPath;
    if (p === undefined) return undefined;
    const listening = fromListeningList && s.path !== undefined && s.protocol !== 'dgram';
    return { family: 'unix-path', protocol: s.protocol, path: p, listening };
  }
  const wildcard = s.family === 'inet' ? '0.0.0.0' : '::';
  return {
    family: s.family,
    protocol: s.protocol === 'tcp' || s.protocol === 'udp' ? s.protocol : 'other',
    localAddress: s.localAddress ?? wildcard,
    ...(s.localPort !== undefined ? { localPort: s.localPort } : {}),
    ...(s.remoteAddress !== undefined ? { remoteAddress: s.remoteAddress } : {}),
    ...(s.remotePort !== undefined ? { remotePort: s.remotePort } : {}),
    // sockstat -l lists bound UDP sockets too; only TCP (and SCTP) accept connections.
    listening: fromListeningList && s.protocol === 'tcp',
  };
}

// ---------------------------------------------------------------------------------------------
// Launch: trace the program from its first instruction.

/** The argv that runs `command` under ktrace (inside `timeout` when a duration is given). */
export function ktraceArgv(traceFile: string, command: readonly string[], durationMs?: number): string[] {
  const traced = ['ktrace', '-i', '-f', traceFile, '-t', KTRACE_FACILITIES, '--', ...command];
  if (durationMs === undefined) return traced;
  // timeout(1) signals its child, which ktrace has replaced with the program: the trace never includes timeout itself.
  return ['timeout', '-s', 'TERM', `${Math.max(1, Math.ceil(durationMs / 1000))}`, ...traced];
}

/** The argv that prints a trace file. */
export function kdumpArgv(traceFile: string): string[] {
  return ['kdump', '-H', '-n', '-d', '-f', traceFile];
}

async function launch(ctx: Ctx, target: LaunchTarget, options: ProfileOptions, startedAt: number): Promise<R<ResourceProfile>> {
  const signal = options.signal;
  const host = await hostAndUser(ctx, signal);
  if (host.isErr()) return err(host.error);
  const made = await runParsed(ctx, ['mktemp', '-t', 'ap-migrate-ktrace'], parseMktemp, undefined, signal);
  if (made.isErr()) return err(made.error);
  const traceFile = made.value;
  try {
    const traced = await traceProgram(ctx, target, options, traceFile);
    if (traced.isErr()) return err(traced.error);
    const records = await readTrace(ctx, traceFile, signal);
    if (records.isErr()) return err(records.error);
    const cwd = target.cwd ?? (await remoteCwd(ctx, signal));
    if (typeof cwd !== 'string') return err(cwd);
    const obs = observeTrace(records.value, cwd, target, options, startedAt);
    if (obs.isErr()) return err(obs.error);
    // A run cut short by the duration may not have used everything it will.
    if (traced.value.stopped) obs.value.notes.push(`The program still ran when the ${options.durationMs} ms were up and was stopped: what it does later is not in the profile.`);
    const { uname, uid, gid } = host.value;
    return build(ctx, obs.value, {
      executable: obs.value.executable,
      argv: [...target.command],
      cwd,
      ...(target.env ? { env: target.env } : {}),
      uid,
      gid,
      platform: { os: 'freebsd', release: uname.release, arch: uname.machine },
      complete: !traced.value.stopped,
      startedAt,
      signal,
    });
  } finally {
    // The trace may hold secrets (paths, addresses): never leave it behind.
    await run(ctx, ['rm', '-f', traceFile], { allowNonZeroExit: true });
  }
}

/** The host's platform, and the real ids the launched program will run as (ours). */
async function hostAndUser(ctx: Ctx, signal: AbortSignal | undefined): Promise<R<{ uname: UnameInfo; uid: number; gid: number }>> {
  const uname = await runParsed(ctx, ['uname', '-srm'], parseUnameSrm, undefined, signal);
  if (uname.isErr()) return err(uname.error);
  const uid = await runParsed(ctx, ['id', '-u'], (s) => parseId(s, 'id -u'), undefined, signal);
  if (uid.isErr()) return err(uid.error);
  const gid = await runParsed(ctx, ['id', '-g'], (s) => parseId(s, 'id -g'), undefined, signal);
  if (gid.isErr()) return err(gid.error);
  return ok({ uname: uname.value, uid: uid.value, gid: gid.value });
}

/** Run the program under ktrace until it ends (or `timeout` stops it); a program that cannot start is LAUNCH_FAILED. */
/** timeout(1)'s exit status when it stopped the command. */
const TIMED_OUT = 124;

/** Run the program under ktrace; `stopped` when the duration ran out before the program ended. */
async function traceProgram(ctx: Ctx, target: LaunchTarget, options: ProfileOptions, traceFile: string): Promise<R<{ stopped: boolean }>> {
  const argv = ktraceArgv(traceFile, target.command, options.durationMs);
  const traced = await run(ctx, argv, {
    allowNonZeroExit: true,
    // timeout(1) stops the program; this is only a backstop if the host does not.
    timeoutMs: options.durationMs !== undefined ? options.durationMs + ctx.timeoutMs : undefined,
    ...(target.cwd ? { cwd: target.cwd } : {}),
    ...(target.env ? { env: target.env } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  } as ExecOptions);
  if (traced.isErr()) return err(traced.error);
  const stopped = options.durationMs !== undefined && traced.value.code === TIMED_OUT;
  // The program's own exit status does not matter; ktrace's own complaints do.
  const ktraceError = traced.value.stderr.split('\n').find((l) => l.startsWith('ktrace: '));
  if (ktraceError === undefined || traced.value.code === 0) return ok({ stopped });
  if (/exec of .* failed/.test(ktraceError)) {
    return err(new ProfileError('LAUNCH_FAILED', `Cannot start "${target.command[0]}": ${ktraceError.slice('ktrace: '.length)}`, { details: { argv: [...target.command] } }));
  }
  return err(commandFailure(argv, traced.value));
}

/** Print the trace with kdump and split it into records; a trace over `maxTraceBytes` is an error, never cut. */
async function readTrace(ctx: Ctx, traceFile: string, signal: AbortSignal | undefined): Promise<R<KdumpRecord[]>> {
  const dump = await run(ctx, kdumpArgv(traceFile), { maxOutputBytes: ctx.maxTraceBytes, ...(signal ? { signal } : {}) });
  if (dump.isErr()) {
    if (dump.error.code === 'OUTPUT_TOO_LARGE') {
      return err(new ProfileError('PROFILER_FAILED', `The trace is larger than ${ctx.maxTraceBytes} bytes; profile a shorter run (durationMs) or raise maxTraceBytes`, { cause: dump.error }));
    }
    return err(dump.error);
  }
  return parseKdumpRecords(dump.value.stdout);
}

/** What the trace says the program used; the first process is the program, with the argv it was given. */
function observeTrace(records: readonly KdumpRecord[], cwd: string, target: LaunchTarget, options: ProfileOptions, startedAt: number): R<Observations & { executable: string }> {
  const obs = interpretKdump(records, cwd);
  if (obs.isErr()) return err(obs.error);
  const o = obs.value;
  options.onProgress?.({ events: o.events, elapsedMs: Date.now() - startedAt });
  const executable = o.executable;
  if (!executable) return err(new ProfileError('LAUNCH_FAILED', `The trace shows no successful execve of "${target.command[0]}"`));
  const root = o.processes[0];
  if (root) o.processes[0] = { ...root, argv: [...target.command] };
  o.notes.push('Traced with ktrace from the first instruction; POSIX IPC names and descriptor-relative paths may be missing (see the other notes).');
  return ok({ ...o, executable });
}

async function remoteCwd(ctx: Ctx, signal?: AbortSignal): Promise<string | ApMigrateError> {
  const r = await runParsed(ctx, ['pwd'], (s) => parseAbsoluteLine(s, 'pwd'), undefined, signal);
  return r.isOk() ? r.value : r.error;
}

function parseId(stdout: string, command: string): Result<number, FreeBsdParseError> {
  const line = stdout.trim();
  return /^\d+$/.test(line) ? ok(Number(line)) : err(new FreeBsdParseError(command, 1, line, 'expected a number'));
}

function parseAbsoluteLine(stdout: string, command: string): Result<string, FreeBsdParseError> {
  const lines = stdout.split('\n').filter((l) => l.length > 0);
  const line = lines[0] ?? '';
  return lines.length === 1 && line.startsWith('/') ? ok(line) : err(new FreeBsdParseError(command, 1, line, 'expected one absolute path'));
}

function parseMktemp(stdout: string): Result<string, FreeBsdParseError> {
  return parseAbsoluteLine(stdout, 'mktemp -t ap-migrate-ktrace');
}

// ---------------------------------------------------------------------------------------------
// Building the profile.

interface ProgramFacts {
  executable: string;
  argv: string[];
  cwd: string;
  env?: Record<string, string>;
  uid: number;
  gid: number;
  platform: Platform;
  complete: boolean;
  startedAt: number;
  signal: AbortSignal | undefined;
}


/** Paths whose kind and size `stat` is asked for (pseudo paths and names with newlines left out). */
export function statTargets(files: ReadonlyMap<string, PathUse>, executable: string): string[] {
  const paths = new Set([...files.keys()].filter((p) => !isPseudoPath(p)));
  paths.add(executable);
  return [...paths].filter((p) => !p.includes('\n')).sort();
}

async function statAll(ctx: Ctx, paths: readonly string[], signal?: AbortSignal): Promise<R<Map<string, StatEntry>>> {
  const out = new Map<string, StatEntry>();
  for (let i = 0; i < paths.length; i += ctx.statBatchSize) {
    const batch = paths.slice(i, i + ctx.statBatchSize);
    // A file the program removed makes stat exit 1 while still printing the others.
    const r = await run(ctx, ['stat', '-f', '%z %Sp %N', ...batch], { allowNonZeroExit: true, ...(signal ? { signal } : {}) });
    if (r.isErr()) return err(r.error);
    if (r.value.code !== 0 && r.value.stdout.trim() === '' && !/No such file/.test(r.value.stderr)) return err(commandFailure(['stat', '-f'], r.value));
    const parsed = parseStat(r.value.stdout);
    if (parsed.isErr()) return err(parsed.error);
    for (const e of parsed.value) out.set(e.path, e);
  }
  return ok(out);
}

async function build(ctx: Ctx, obs: Observations, program: ProgramFacts): Promise<R<ResourceProfile>> {
  const targets = statTargets(obs.files, program.executable);
  const stats = await statAll(ctx, targets, program.signal);
  if (stats.isErr()) return err(stats.error);
  const notes = [...new Set(obs.notes)];
  const files: FileUse[] = [];
  let pseudo = 0;
  for (const [p, use] of [...obs.files].sort(([a], [b]) => a.localeCompare(b))) {
    if (isPseudoPath(p)) {
      pseudo++;
      continue;
    }
    const st = stats.value.get(p);
    const access = (['read', 'write', 'exec'] as const).filter((a) => use.access.has(a));
    const kind = st?.kind ?? use.kindHint ?? 'unknown';
    const reasons = (['held-open', 'mapped', 'traced'] as const).filter((r) => use.reasons?.has(r));
    files.push({
      path: p,
      kind,
      access,
      size: st && st.kind === 'regular' ? st.size : 0,
      sharedLibrary: use.sharedLibrary,
      // Gone by now and written: the program's own temporary file.
      created: use.created === true || (!st && use.access.has('write')),
      ...(reasons.length > 0 ? { reasons } : {}),
    });
  }
  const used = new Set(files.map((f) => f.path));
  const probes = [...new Set(obs.probes ?? [])].filter((p) => !used.has(p) && !isPseudoPath(p) && !p.includes('\n')).sort();
  if (pseudo > 0) notes.push(`${pseudo} /proc, /dev/pts or /dev/fd entries were left out: they are kernel views, not files to send.`);
  const exeStat = stats.value.get(program.executable);
  const raw = {
    executable: program.executable,
    executableSize: exeStat?.kind === 'regular' ? exeStat.size : 0,
    argv: program.argv,
    cwd: program.cwd,
    ...(program.env ? { env: program.env } : {}),
    uid: program.uid,
    gid: program.gid,
    platform: program.platform,
    files,
    sockets: dedupeSockets(obs.sockets),
    ipc: dedupeIpc(obs.ipc),
    processes: dedupeProcesses(obs.processes),
    probes,
    completeness: { complete: program.complete, notes },
    profiler: { name: FREEBSD_PROFILER_NAME, startedAt: new Date(program.startedAt).toISOString(), durationMs: Date.now() - program.startedAt },
  };
  const parsed = ResourceProfileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return err(new ProfileError('PROFILER_FAILED', `The FreeBSD profiler built an invalid profile at ${issue?.path.join('.') ?? '?'}: ${issue?.message ?? ''}`, { cause: parsed.error }));
  }
  return ok(parsed.data);
}

function dedupeSockets(sockets: readonly SocketUse[]): SocketUse[] {
  const byKey = new Map<string, SocketUse>();
  for (const s of sockets) {
    const key = JSON.stringify([s.family, s.protocol, s.localAddress, s.localPort, s.remoteAddress, s.remotePort, s.path]);
    const before = byKey.get(key);
    byKey.set(key, before ? { ...before, listening: before.listening || s.listening } : s);
  }
  return [...byKey.values()];
}

/** Merge IPC uses of the same object: by kind and id (SysV) or name (POSIX); a later key or size fills in. */
function dedupeIpc(uses: readonly IpcUse[]): IpcUse[] {
  const byKey = new Map<string, IpcUse>();
  const keyOf = (u: IpcUse) => `${u.kind}:${u.name ?? (u.id !== undefined ? `id${u.id}` : `key${String(u.key)}`)}`;
  for (const u of uses) {
    const k = keyOf(u);
    const before = byKey.get(k);
    byKey.set(k, before ? { ...before, ...Object.fromEntries(Object.entries(u).filter(([, v]) => v !== undefined)) } : u);
  }
  return [...byKey.values()];
}

function dedupeProcesses(processes: readonly ProcessInfo[]): ProcessInfo[] {
  const byPid = new Map<number, ProcessInfo>();
  for (const p of processes) byPid.set(p.pid, { ...byPid.get(p.pid), ...p });
  return [...byPid.values()].sort((a, b) => a.pid - b.pid);
}
