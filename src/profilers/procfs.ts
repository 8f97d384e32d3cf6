/**
 * The procfs profiler: samples /proc for the program's process tree. It costs the program
 * nothing (no tracing) but sees only what is held at the moment of a sample, so its profiles are
 * always marked incomplete.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { readFile, readdir, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { err, errAsync, ok, type Result, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ResourceProfile, SocketUse, StartFacts } from '../policy/profile.js';
import type { LaunchTarget, ProfileOptions, Profiler, ProfilerAvailability, ProfileTarget } from '../spec/profiler.js';
import {
  accessFromOpenFlags,
  guardProfile,
  childPids,
  idsOf,
  isLaunchTarget,
  killTree,
  launchedProgramFacts,
  launchProgram,
  processExists,
  ProfileCollector,
  ProfileError,
  type ProgramFacts,
  type ProgramOutput,
  readCmdline,
  readEnviron,
  readProcLink,
  readProcLimits,
  readProcStatus,
  resolveCommand,
  checkProfileCall,
  checkProfilerOptions,
  startFactsOf,
  waitForExit,
  waitForStop,
  compressIpv6,
} from './common.js';

const execFileAsync = promisify(execFile);

/** One row of /proc/net/{tcp,udp,tcp6,udp6,unix}, reduced to what a profile needs. */
export interface NetTableEntry {
  /** Socket inode (what /proc/<pid>/fd/N points at as `socket:[inode]`). */
  inode: number;
  /** The socket as the profile will record it (before deciding whether it listens). */
  socket: SocketUse;
  /** TCP listening, or a unix socket accepting connections. */
  listening: boolean;
  /** TCP established (either end). */
  established: boolean;
}

/** Decode a /proc/net address `0100007F:1F90` (IPv4) or 32 hex digits (IPv6); both little-endian per 32-bit word. */
export function decodeProcNetAddress(hex: string): { address: string; port: number } {
  const [addr = '', portHex = '0'] = hex.split(':');
  const port = Number.parseInt(portHex, 16);
  const words = addr.match(/.{8}/g) ?? [];
  const bytes = words.flatMap((w) => [w.slice(6, 8), w.slice(4, 6), w.slice(2, 4), w.slice(0, 2)].map((b) => Number.parseInt(b, 16)));
  if (bytes.length === 4) return { address: bytes.join('.'), port };
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return { address: compressIpv6(groups), port };
}


/** Parse /proc/net/{tcp,tcp6,udp,udp6}. */
export function parseInetTable(text: string, family: 'inet' | 'inet6', protocol: 'tcp' | 'udp'): NetTableEntry[] {
  const entries: NetTableEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 10) continue;
    const local = decodeProcNetAddress(cols[1]!);
    const remote = decodeProcNetAddress(cols[2]!);
    const state = Number.parseInt(cols[3]!, 16);
    const inode = Number(cols[9]);
    const socket: SocketUse = { family, protocol, localAddress: local.address, localPort: local.port, listening: false };
    // UDP "connected" sockets and established TCP sockets have a remote end.
    if (remote.port !== 0) Object.assign(socket, { remoteAddress: remote.address, remotePort: remote.port });
    entries.push({ inode, socket, listening: protocol === 'tcp' && state === 0x0a, established: protocol === 'tcp' && state === 0x01 });
  }
  return entries;
}

/** Parse /proc/net/unix. */
export function parseUnixTable(text: string): NetTableEntry[] {
  const entries: NetTableEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 7) continue;
    const flags = Number.parseInt(cols[3]!, 16);
    const type = Number.parseInt(cols[4]!, 16);
    const inode = Number(cols[6]);
    const name = cols.slice(7).join(' ');
    const protocol = type === 1 ? 'stream' : type === 2 ? 'dgram' : type === 5 ? 'seqpacket' : 'other';
    const socket: SocketUse = name.startsWith('@')
      ? { family: 'unix-abstract', protocol, path: name.slice(1), listening: false }
      : name
        ? { family: 'unix-path', protocol, path: name, listening: false }
        : { family: 'unix-path', protocol, listening: false };
    // __SO_ACCEPTCON marks a listening unix socket.
    entries.push({ inode, socket, listening: (flags & 0x10000) !== 0, established: false });
  }
  return entries;
}

/** One SysV IPC object from /proc/sysvipc/{shm,sem,msg}. */
export interface SysvEntry {
  /** `sysv-shm`, `sysv-sem` or `sysv-msg`. */
  kind: 'sysv-shm' | 'sysv-sem' | 'sysv-msg';
  key: number;
  id: number;
  /** Segment size (shm) or number of semaphores (sem) or bytes queued (msg). */
  size?: number;
  /** Pids the kernel records against it (creator, last operation). */
  pids: number[];
}

/** Parse /proc/sysvipc/shm, sem or msg. Keys are printed as signed decimal. */
export function parseSysvTable(text: string, kind: SysvEntry['kind']): SysvEntry[] {
  const lines = text.split('\n');
  const header = (lines[0] ?? '').trim().split(/\s+/);
  const col = (cols: string[], name: string) => {
    const i = header.indexOf(name);
    return i < 0 ? undefined : Number(cols[i]);
  };
  const entries: SysvEntry[] = [];
  for (const line of lines.slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4) continue;
    const id = col(cols, kind === 'sysv-shm' ? 'shmid' : kind === 'sysv-sem' ? 'semid' : 'msqid') ?? Number.NaN;
    const key = Number(cols[0]);
    if (!Number.isFinite(id) || !Number.isFinite(key)) continue;
    const pids = ['cpid', 'lpid', 'lspid', 'lrpid'].map((n) => col(cols, n)).filter((p): p is number => p !== undefined && p > 0);
    const size = kind === 'sysv-shm' ? col(cols, 'size') : undefined;
    entries.push({ kind, key, id, ...(size !== undefined ? { size } : {}), pids });
  }
  return entries;
}

/** Pids of the last semop on each semaphore of set `semid`, from `ipcs -s -i` (procfs does not show them). */
async function semaphorePids(semid: number): Promise<number[]> {
  try {
    const { stdout } = await execFileAsync('ipcs', ['-s', '-i', String(semid)], { timeout: 5000 });
    const rows = stdout.split('\n').filter((l) => /^\d+\s+\d+\s+\d+\s+\d+\s+\d+\s*$/.test(l.trim()));
    return rows.map((r) => Number(r.trim().split(/\s+/)[4])).filter((p) => p > 0);
  } catch {
    return [];
  }
}

/** Facts the sampler learned about the root process (for the profile header). */
export interface RootFacts {
  executable?: string;
  argv?: string[];
  cwd?: string;
  uid?: number;
  gid?: number;
  env?: Record<string, string>;
  /** Supplementary groups, umask and resource limits when first seen. */
  start?: StartFacts;
}

/**
 * Samples the process tree under one root pid into a {@link ProfileCollector}. The strace
 * profiler reuses it to record what an attached program already holds.
 */
export class ProcfsSampler {
  /** Every pid ever seen in the tree (also after it exits: SysV objects name it). */
  readonly seenPids = new Set<number>();
  /** What the root process looked like when first seen. */
  readonly root: RootFacts = {};
  private readonly listeningPorts = new Set<string>();
  private readonly extraRoots = new Set<number>();
  /**
   * SysV segments the tree has attached, by shmid, with the key they were created with (from the
   * `/SYSV<key>` mappings). /proc/sysvipc/shm names only a segment's creator and its last
   * attach/detach pid, neither of which need be in the tree, and shows key 0 once it is removed.
   */
  private readonly attachedShm = new Map<number, number>();

  constructor(
    readonly rootPid: number,
    readonly collector: ProfileCollector,
    private readonly options: { captureEnv?: boolean } = {},
  ) {
    // The root may be gone before the first sample; SysV objects it created still name it.
    this.seenPids.add(rootPid);
  }

  /** Also sample this pid and its descendants (processes the tree started but re-parented). */
  addRoot(pid: number): void {
    this.extraRoots.add(pid);
  }

  /** Take one sample of the whole tree. */
  async sample(): Promise<void> {
    const pids = new Set<number>();
    const queue = [this.rootPid, ...this.extraRoots];
    while (queue.length > 0) {
      const pid = queue.shift()!;
      if (pids.has(pid) || !(await processExists(pid))) continue;
      pids.add(pid);
      queue.push(...(await childPids(pid)));
    }
    this.collector.events++;
    if (pids.size === 0) return this.sampleSysv();
    const firstPid = [...pids][0]!;
    const sockets = await readSocketTables(firstPid);
    const held: NetTableEntry[] = [];
    for (const pid of pids) {
      this.seenPids.add(pid);
      held.push(...(await this.sampleProcess(pid, sockets)));
    }
    this.recordSockets(held);
    await this.sampleSysv();
  }

  private async sampleProcess(pid: number, sockets: Map<number, NetTableEntry>): Promise<NetTableEntry[]> {
    const [status, exe, cwd, argv] = await Promise.all([
      readProcStatus(pid),
      readProcLink(`/proc/${pid}/exe`),
      readProcLink(`/proc/${pid}/cwd`),
      readCmdline(pid),
    ]);
    if (!status) return [];
    const executable = exe?.replace(/ \(deleted\)$/, '');
    // Every sample refreshes the ids: a daemon's workers drop privileges after they start.
    this.collector.addProcess({ pid, ppid: status.ppid, ...(executable ? { executable } : {}), ...(argv ? { argv } : {}), ...idsOf(status) });
    // The running executable is mapped (it is also the first lines of /proc/<pid>/maps).
    if (executable) this.collector.addFile(executable, 'exec', { reason: 'mapped' });
    if (pid === this.rootPid && this.root.executable === undefined) {
      Object.assign(this.root, { executable, argv, cwd, uid: status.uid, gid: status.gid });
      const start = startFactsOf(status, await readProcLimits(pid));
      if (start) this.root.start = start;
      if (this.options.captureEnv) this.root.env = await readEnviron(pid);
    }
    await this.sampleMaps(pid);
    return this.sampleFds(pid, sockets);
  }

  /** Mapped files (libraries, the loader, mmapped data) and attached SysV / POSIX shared memory. */
  private async sampleMaps(pid: number): Promise<void> {
    const maps = await readFile(`/proc/${pid}/maps`, 'utf8').catch(() => '');
    for (const line of maps.split('\n')) {
      const match = /^\S+\s+(\S{4})\s+\S+\s+\S+\s+(\d+)\s+(\/.*)$/.exec(line);
      if (!match) continue;
      const [, perms = '', inode = '', rawPath = ''] = match;
      const sysv = /^\/SYSV([0-9a-f]{8}) \(deleted\)$/.exec(rawPath);
      if (sysv) {
        // The mapping's inode is the segment's shmid; its name carries the key it was created with.
        const key = Number.parseInt(sysv[1]!, 16) | 0;
        const id = Number(inode);
        if (Number.isSafeInteger(id)) this.attachedShm.set(id, key);
        this.collector.addIpc({ kind: 'sysv-shm', key, ...(Number.isSafeInteger(id) ? { id } : {}) });
        continue;
      }
      const p = rawPath.replace(/ \(deleted\)$/, '');
      if (p.startsWith('/dev/shm/')) {
        this.collector.addIpc({ kind: 'posix-shm', name: p.slice('/dev/shm'.length) });
        continue;
      }
      this.collector.addFile(p, perms.includes('x') ? 'exec' : 'read', { reason: 'mapped' });
      if (perms[1] === 'w' && perms[3] === 's') this.collector.addFile(p, 'write', { reason: 'mapped' });
    }
  }

  /** Open descriptors: files with their access mode, sockets by inode, POSIX queues. */
  private async sampleFds(pid: number, sockets: Map<number, NetTableEntry>): Promise<NetTableEntry[]> {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    const held: NetTableEntry[] = [];
    for (const fd of fds) {
      const target = await readProcLink(`/proc/${pid}/fd/${fd}`);
      if (!target) continue;
      const socket = /^socket:\[(\d+)\]$/.exec(target);
      if (socket) {
        const entry = sockets.get(Number(socket[1]));
        if (entry) held.push(entry);
        continue;
      }
      if (!target.startsWith('/')) continue; // pipe:[..], anon_inode:..: nothing in the file system
      const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
      const flags = Number.parseInt(/^flags:\s*([0-7]+)/m.exec(info)?.[1] ?? '0', 8);
      const p = target.replace(/ \(deleted\)$/, '');
      if (await isPosixQueue(pid, fd, p, info)) {
        this.collector.addIpc({ kind: 'posix-mq', name: p });
        continue;
      }
      for (const access of accessFromOpenFlags(flags)) this.collector.addFile(p, access, { reason: 'held-open' });
    }
    return held;
  }

  /** Record the sockets the tree holds; accepted connections on a listening port are left out. */
  private recordSockets(held: NetTableEntry[]): void {
    for (const entry of held) {
      if (entry.listening) this.listeningPorts.add(`${entry.socket.protocol}:${entry.socket.localPort}`);
    }
    for (const entry of held) {
      const s = entry.socket;
      if (entry.listening) {
        this.collector.addSocket({ ...s, listening: true });
      } else if (entry.established) {
        // The server's end of an accepted connection says nothing new about the program.
        if (this.listeningPorts.has(`${s.protocol}:${s.localPort}`)) continue;
        this.collector.addSocket({
          family: s.family,
          protocol: s.protocol,
          ...(s.remoteAddress !== undefined ? { remoteAddress: s.remoteAddress, remotePort: s.remotePort } : {}),
          listening: false,
        });
      } else if (s.family === 'unix-path' && s.path === undefined) {
        continue; // unnamed unix sockets (socketpair, client ends) carry no address to isolate
      } else {
        this.collector.addSocket(s);
      }
    }
  }

  /**
   * SysV objects whose creator or last user is in the tree, and segments the tree has attached
   * (whoever created them, and whoever touched them last).
   */
  private async sampleSysv(): Promise<void> {
    for (const kind of ['shm', 'sem', 'msg'] as const) {
      const text = await readFile(`/proc/sysvipc/${kind}`, 'utf8').catch(() => '');
      for (const entry of parseSysvTable(text, `sysv-${kind}`)) {
        const mappedKey = kind === 'shm' ? this.attachedShm.get(entry.id) : undefined;
        // Not the segment the tree mapped if the id was reused by another key since.
        const attachedKey = mappedKey !== undefined && (entry.key === mappedKey || entry.key === 0) ? mappedKey : undefined;
        if (attachedKey === undefined) {
          const pids = kind === 'sem' ? await semaphorePids(entry.id) : entry.pids;
          if (!pids.some((p) => this.seenPids.has(p))) continue;
        }
        // A removed segment still attached shows key 0 (IPC_PRIVATE) here; the key it was created
        // with, from its mapping, is the one the program used.
        const key = attachedKey ?? entry.key;
        this.collector.addIpc({ kind: entry.kind, key, id: entry.id, ...(entry.size !== undefined ? { size: entry.size } : {}) });
      }
    }
  }
}

/** All sockets of the network namespace `pid` lives in, by inode. */
async function readSocketTables(pid: number): Promise<Map<number, NetTableEntry>> {
  const byInode = new Map<number, NetTableEntry>();
  const tables = [
    ['tcp', 'inet', 'tcp'],
    ['tcp6', 'inet6', 'tcp'],
    ['udp', 'inet', 'udp'],
    ['udp6', 'inet6', 'udp'],
  ] as const;
  for (const [file, family, protocol] of tables) {
    const text = await readFile(`/proc/${pid}/net/${file}`, 'utf8').catch(() => '');
    for (const entry of parseInetTable(text, family, protocol)) byInode.set(entry.inode, entry);
  }
  const unix = await readFile(`/proc/${pid}/net/unix`, 'utf8').catch(() => '');
  for (const entry of parseUnixTable(unix)) byInode.set(entry.inode, entry);
  return byInode;
}

/**
 * A POSIX message queue descriptor reads as `/name` but lives on the kernel's mqueue mount:
 * either a mount of type mqueue, or (when /dev/mqueue is not mounted) an internal mount the
 * process's mount table does not list, while no such file exists at that path.
 */
async function isPosixQueue(pid: number, fd: string, p: string, fdinfo: string): Promise<boolean> {
  if (p.split('/').length !== 2) return false;
  const mountId = /^mnt_id:\s*(\d+)/m.exec(fdinfo)?.[1];
  if (mountId === undefined) return false;
  const mounts = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '');
  const mount = mounts.split('\n').find((line) => line.split(' ')[0] === mountId);
  if (mount) return / - mqueue /.test(mount);
  const [object, onDisk] = await Promise.all([stat(`/proc/${pid}/fd/${fd}`).catch(() => undefined), stat(p).catch(() => undefined)]);
  return object !== undefined && (onDisk === undefined || onDisk.ino !== object.ino || onDisk.dev !== object.dev);
}

/** Options of {@link createProcfsProfiler}. */
export interface ProcfsProfilerOptions {
  /** Milliseconds between samples (default 100). */
  intervalMs?: number;
  /** Where a launched program's output goes (default `ignore`). */
  programOutput?: ProgramOutput;
  /** Record the program's environment in the profile (default false: it may hold secrets). */
  captureEnv?: boolean;
}

const DEFAULT_DURATION_MS = 10_000;
const INCOMPLETE_NOTE =
  'procfs samples what the program holds at each sample: files opened and closed, and processes that lived, between samples are missed.';

/** Create the procfs profiler: samples /proc; no tracing, no slowdown, always marked incomplete. */
export function createProcfsProfiler(options: ProcfsProfilerOptions = {}): Profiler {
  const badOptions = checkProfilerOptions('procfs profiler options', options, { intervalMs: 'milliseconds', programOutput: 'output', captureEnv: 'boolean' });
  return {
    name: 'procfs',
    availability: async () => (badOptions ? { name: 'procfs', available: false, reason: badOptions.message } : procfsAvailability()),
    profile: (target, profileOptions = {}) => {
      const invalid = badOptions ?? checkProfileCall(target, profileOptions);
      if (invalid) return errAsync<ResourceProfile, ApMigrateError>(invalid);
      return new ResultAsync<ResourceProfile, ApMigrateError>(guardProfile('procfs', () => runProcfs(target, profileOptions, options)));
    },
  };
}

/** procfs works wherever /proc is mounted; root is needed to look at other users' processes. */
export async function procfsAvailability(): Promise<ProfilerAvailability> {
  const mounted = await stat('/proc/self/fd').then(() => true, () => false);
  if (!mounted) return { name: 'procfs', available: false, reason: '/proc is not mounted' };
  const root = process.getuid?.() === 0;
  return { name: 'procfs', available: true, ...(root ? {} : { reason: 'not root: only processes of the same user can be sampled' }) };
}

/** The process tree sampled: its root, a promise that settles when the root ends, and for a launch what was started. */
interface SampledTarget {
  rootPid: number;
  ended: Promise<void>;
  launched?: { target: LaunchTarget; cwd: string; executable: string | undefined };
}

/** Launch the command, or check that the pid can be sampled; `stopped` ends the wait for an attached root. */
async function startTarget(target: ProfileTarget, config: ProcfsProfilerOptions, interval: number, stopped: () => boolean): Promise<Result<SampledTarget, ProfileError>> {
  if (isLaunchTarget(target)) {
    const cwd = target.cwd ?? process.cwd();
    const executable = await resolveCommand(target.command[0]!, cwd, target.env?.PATH ?? process.env.PATH);
    const launched = await launchProgram(target.command, { cwd, ...(target.env ? { env: target.env } : {}), output: config.programOutput ?? 'ignore' });
    if (launched.isErr()) return err(launched.error);
    const child = launched.value;
    return ok({ rootPid: child.pid!, ended: waitForExit(child), launched: { target, cwd, executable } });
  }
  const rootPid = target.pid;
  if (!(await processExists(rootPid))) {
    return err(new ProfileError('NO_SUCH_PROCESS', `No process with pid ${rootPid} is running`, { details: { pid: rootPid } }));
  }
  if (!(await readProcLink(`/proc/${rootPid}/exe`))) {
    return err(new ProfileError('PERMISSION_DENIED', `Cannot read /proc/${rootPid}: run as root or as the process's user`, { details: { pid: rootPid } }));
  }
  // Not our child: poll until it is gone.
  const ended = (async () => {
    while (!stopped() && (await processExists(rootPid))) await new Promise((r) => setTimeout(r, interval));
  })();
  return ok({ rootPid, ended });
}

async function runProcfs(target: ProfileTarget, opts: ProfileOptions, config: ProcfsProfilerOptions) {
  const collector = new ProfileCollector();
  collector.note(INCOMPLETE_NOTE);
  const interval = config.intervalMs ?? 100;
  let stopped = false;
  const started = await startTarget(target, config, interval, () => stopped);
  if (started.isErr()) return err(started.error);
  const { rootPid, ended, launched } = started.value;
  const sampler = new ProcfsSampler(rootPid, collector, { captureEnv: config.captureEnv ?? false });
  const startedAt = Date.now();
  const stop = waitForStop(opts.durationMs ?? DEFAULT_DURATION_MS, opts.signal, ended);
  void stop.then(() => (stopped = true));
  while (!stopped) {
    await sampler.sample();
    opts.onProgress?.({ events: collector.events, elapsedMs: Date.now() - startedAt });
    await Promise.race([stop, new Promise((r) => setTimeout(r, interval))]);
  }
  // SysV objects outlive their creators: one last look, with every pid ever seen.
  await sampler.sample();
  if (launched && !opts.keepRunning) {
    await killTree(rootPid);
    await ended;
  }
  const facts = await sampledFacts(sampler, launched, config.captureEnv);
  if (sampler.root.executable === undefined) collector.note('The program ended before the first sample: almost nothing could be seen.');
  if (launched?.executable) collector.addFile(launched.executable, 'exec', { reason: 'mapped' });
  return collector.build(facts, { profiler: 'procfs', complete: false });
}

/**
 * An attached program as first sampled; a launched one as it was launched (the command as given,
 * run as us), whatever it exec'd into or dropped to before the first sample, as the tracers
 * report it: it is started again the same way at the destination.
 */
async function sampledFacts(sampler: ProcfsSampler, launched: SampledTarget['launched'], captureEnv: boolean | undefined): Promise<ProgramFacts> {
  const root = sampler.root;
  if (launched) return launchedProgramFacts(launched.executable ?? root.executable ?? '/', launched.target, launched.cwd, captureEnv);
  const status = root.uid === undefined ? await readProcStatus(sampler.rootPid) : undefined;
  const facts: ProgramFacts = {
    executable: root.executable ?? '/',
    argv: root.argv ?? ['?'],
    cwd: root.cwd ?? '/',
    uid: root.uid ?? status?.uid ?? process.getuid?.() ?? 0,
    gid: root.gid ?? status?.gid ?? process.getgid?.() ?? 0,
    ...(root.env ? { env: root.env } : {}),
  };
  if (root.start) facts.start = root.start;
  return facts;
}
