/**
 * Decodes the output of the bpftrace program from `ebpf-script.ts` (run with `-f json`) into
 * typed events, and folds those events into a profile (`EbpfEventTracker`). No I/O of its own:
 * /proc is read through an injected `ProcReader`, so every rule is unit-tested.
 *
 * Read bpftrace's stdout as `latin1` and hand each line to {@link parseEbpfLine}: bpftrace 0.17
 * writes bytes >= 0x80 either raw or as the broken escape `\uffffffXX` (a sign-extended char);
 * both become one char per byte here, and strings are then decoded as UTF-8.
 *
 * @module
 */
import path from 'node:path';
import { err, ok, type Result } from 'neverthrow';
import type { SocketUse } from '../policy/profile.js';
import { accessFromOpenFlags, compressIpv6, HeldByProcess, idsOf, isProbeError, isSharedLibraryPath, parseProcStatus, type ProfileCollector } from './common.js';
import { EBPF_MAX_EXEC_ARGS, EBPF_MAX_STRLEN } from './ebpf-script.js';

/** Socket address fields read from a `struct sockaddr` at bind(2)/connect(2). */
export interface EbpfSockaddr {
  /** Address family number (AF_UNIX 1, AF_INET 2, AF_INET6 10 ...). */
  family: number;
  /** Port in host order (inet/inet6). */
  port: number;
  /** Dotted IPv4 address (inet). */
  ipv4: string;
  /** IPv6 address in full hex groups, lower-case (inet6). */
  ipv6: string;
  /** Unix socket path, or abstract name without its leading NUL. */
  path: string;
  /** True for an abstract unix socket name. */
  abstract: boolean;
}

/** One event the bpftrace program reported. Every event carries the process and thread id. */
export type EbpfEvent =
  /** An open family call: `fd` is the new descriptor, or the negative errno when it failed. */
  | { type: 'open'; pid: number; tid: number; dirfd: number; flags: number; fd: number; path: string; truncated: boolean }
  /** A failed path lookup (exec, stat, access, chdir): `ret` is the negative errno. */
  | { type: 'probe'; pid: number; tid: number; dirfd: number; ret: number; path: string; truncated: boolean }
  /**
   * A successful exec: the kernel's file name, how many of the new program's arguments the
   * kernel read at the exec (`argc`, printed just before as `exec_arg` events; -1 when it could
   * not read them) and whether there were more than it reads (`more`).
   */
  | { type: 'exec'; pid: number; tid: number; argc: number; more: boolean; path: string; truncated: boolean }
  /** Argument `index` of the exec whose `exec` event follows (as the new program starts with it). */
  | { type: 'exec_arg'; pid: number; tid: number; index: number; arg: string; truncated: boolean }
  | { type: 'chdir'; pid: number; tid: number; path: string; truncated: boolean }
  | { type: 'fchdir'; pid: number; tid: number; fd: number }
  | { type: 'fork'; pid: number; tid: number; child: number }
  | { type: 'exit'; pid: number; tid: number }
  | { type: 'socket'; pid: number; tid: number; fd: number; family: number; socketType: number; protocol: number }
  | { type: 'bind' | 'connect'; pid: number; tid: number; ret: number; fd: number; address: EbpfSockaddr; truncated: boolean }
  | { type: 'listen'; pid: number; tid: number; fd: number }
  | { type: 'accept'; pid: number; tid: number; listenFd: number; fd: number }
  | { type: 'shmget' | 'semget' | 'msgget'; pid: number; tid: number; key: number; size: number; id: number }
  | { type: 'shmat' | 'semop' | 'msgop'; pid: number; tid: number; id: number }
  | { type: 'mq_open'; pid: number; tid: number; fd: number; flags: number; name: string; truncated: boolean }
  | { type: 'mmap_exec'; pid: number; tid: number; fd: number };

/** A decoded output line: an event, or one of bpftrace's own notices. */
export type EbpfLine =
  | { kind: 'event'; event: EbpfEvent }
  /** The readiness marker: every probe is attached. */
  | { kind: 'ready' }
  /** The once-a-second heartbeat. */
  | { kind: 'tick' }
  /** bpftrace dropped events because its buffer was full. */
  | { kind: 'lost'; count: number }
  /** Anything else bpftrace prints in JSON mode (attached_probes, maps ...). */
  | { kind: 'other'; type: string };

/** A line that does not follow the format; `line` is the raw text (cut to 200 chars). */
export interface EbpfParseError {
  /** What is wrong with the line. */
  message: string;
  /** The line itself, cut to 200 characters. */
  line: string;
}

/** Longest string (bytes, without NUL) a bpftrace `str()` of `EBPF_MAX_STRLEN` can return. */
const MAX_STRING_BYTES = 199;
/** Longest string read for a unix socket path (`sun_path` is 108 bytes). */
const MAX_SUN_PATH_BYTES = 107;

/** Replace bpftrace's `\uffffffXX` with `\u00XX`, leaving escaped backslashes alone. */
function repairHighByteEscapes(jsonLine: string): string {
  return jsonLine.replace(/(?<!\\)((?:\\\\)*)\\uffffff([0-9a-fA-F]{2})/g, '$1\\u00$2');
}

/** Chars of a latin1-decoded string are bytes: decode them as UTF-8. */
function bytesToUtf8(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

function int(field: string | undefined, name: string): number {
  if (field === undefined || !/^-?\d+$/.test(field)) throw new Error(`field ${name} is not an integer: ${String(field)}`);
  return Number(field);
}

function ipv4FromMemoryWord(word: number): string {
  // The 4 address bytes were read as a little-endian u32: memory order is the low byte first.
  return [word & 0xff, (word >>> 8) & 0xff, (word >>> 16) & 0xff, (word >>> 24) & 0xff].join('.');
}

function ipv6FromMemoryWords(high: string, low: string): string {
  const bytes = Buffer.alloc(16);
  bytes.writeBigUInt64LE(BigInt(high), 0);
  bytes.writeBigUInt64LE(BigInt(low), 8);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return compressIpv6(groups);
}

/** Split `data` into `count` fixed fields and the rest (the trailing string, tabs included). */
function fieldsAndRest(data: string, count: number): { fields: string[]; rest: string | undefined } {
  const fields: string[] = [];
  let start = 0;
  for (let i = 0; i < count; i++) {
    const tab = data.indexOf('\t', start);
    if (tab < 0) {
      fields.push(data.slice(start));
      return { fields, rest: undefined };
    }
    fields.push(data.slice(start, tab));
    start = tab + 1;
  }
  return { fields, rest: data.slice(start) };
}

/** The text of one record line, split the way its tag's format says. */
class RecordFields {
  constructor(private readonly data: string) {}

  /** `n` tab-separated fields, then the trailing string (which may hold tabs). */
  withString(n: number, maxBytes = MAX_STRING_BYTES): { f: string[]; s: string; truncated: boolean } {
    const { fields, rest } = fieldsAndRest(this.data, n);
    if (rest === undefined) throw new Error(`expected ${n} fields and a string`);
    // Byte length decides truncation: bpftrace cuts at MAX_STRING_BYTES bytes, not chars.
    return { f: fields, s: bytesToUtf8(rest), truncated: rest.length >= maxBytes };
  }

  /** Exactly `n` tab-separated fields. */
  plain(n: number): string[] {
    const parts = this.data.split('\t');
    if (parts.length !== n) throw new Error(`expected ${n} fields, got ${parts.length}`);
    return parts;
  }
}

/** Every record's second and third fields: the process and thread id. */
function ids(f: string[]): { pid: number; tid: number } {
  return { pid: int(f[1], 'pid'), tid: int(f[2], 'tid') };
}

/** Decodes the fields of one record kind (throws on a malformed field). */
type RecordDecoder = (r: RecordFields) => EbpfEvent;

function decodeSockaddr(type: 'bind' | 'connect'): RecordDecoder {
  return (r) => {
    const { f, s, truncated } = r.withString(11, MAX_SUN_PATH_BYTES);
    const abstract = int(f[10], 'abstract') === 1;
    const portWord = int(f[6], 'port');
    const address: EbpfSockaddr = {
      family: int(f[5], 'family'),
      // Read as a little-endian u16; the port is stored in network (big-endian) order.
      port: ((portWord & 0xff) << 8) | (portWord >> 8),
      ipv4: ipv4FromMemoryWord(int(f[7], 'ipv4')),
      ipv6: ipv6FromMemoryWords(f[8] ?? '0', f[9] ?? '0'),
      path: s,
      abstract,
    };
    return { type, ...ids(f), ret: int(f[3], 'ret'), fd: int(f[4], 'fd'), address, truncated };
  };
}

function decodePath(type: 'chdir'): RecordDecoder {
  return (r) => {
    const { f, s, truncated } = r.withString(3);
    return { type, ...ids(f), path: s, truncated };
  };
}

function decodeSysvGet(type: 'shmget' | 'semget' | 'msgget'): RecordDecoder {
  return (r) => {
    const f = r.plain(6);
    return { type, ...ids(f), key: int(f[3], 'key'), size: int(f[4], 'size'), id: int(f[5], 'id') };
  };
}

function decodeSysvUse(type: 'shmat' | 'semop' | 'msgop'): RecordDecoder {
  return (r) => {
    const f = r.plain(4);
    return { type, ...ids(f), id: int(f[3], 'id') };
  };
}

/** The decoder of each record tag the script prints (see the formats in `docs/profilers-ebpf.md`). */
const RECORD_DECODERS: ReadonlyMap<string, RecordDecoder> = new Map(
  Object.entries({
    O: (r) => {
      const { f, s, truncated } = r.withString(6);
      return { type: 'open', ...ids(f), dirfd: int(f[3], 'dirfd'), flags: int(f[4], 'flags'), fd: int(f[5], 'fd'), path: s, truncated };
    },
    P: (r) => {
      const { f, s, truncated } = r.withString(5);
      return { type: 'probe', ...ids(f), dirfd: int(f[3], 'dirfd'), ret: int(f[4], 'ret'), path: s, truncated };
    },
    X: (r) => {
      const { f, s, truncated } = r.withString(5);
      return { type: 'exec', ...ids(f), argc: int(f[3], 'argc'), more: int(f[4], 'more') !== 0, path: s, truncated };
    },
    XA: (r) => {
      const { f, s, truncated } = r.withString(4);
      return { type: 'exec_arg', ...ids(f), index: int(f[3], 'index'), arg: s, truncated };
    },
    C: decodePath('chdir'),
    D: (r) => {
      const f = r.plain(5);
      return { type: 'fchdir', ...ids(f), fd: int(f[3], 'fd') };
    },
    F: (r) => {
      const f = r.plain(4);
      return { type: 'fork', ...ids(f), child: int(f[3], 'child') };
    },
    E: (r) => ({ type: 'exit', ...ids(r.plain(3)) }),
    S: (r) => {
      const f = r.plain(7);
      return { type: 'socket', ...ids(f), fd: int(f[3], 'fd'), family: int(f[4], 'family'), socketType: int(f[5], 'type'), protocol: int(f[6], 'protocol') };
    },
    B: decodeSockaddr('bind'),
    K: decodeSockaddr('connect'),
    L: (r) => {
      const f = r.plain(5);
      return { type: 'listen', ...ids(f), fd: int(f[3], 'fd') };
    },
    A: (r) => {
      const f = r.plain(5);
      return { type: 'accept', ...ids(f), listenFd: int(f[3], 'fd'), fd: int(f[4], 'fd') };
    },
    HG: decodeSysvGet('shmget'),
    SG: decodeSysvGet('semget'),
    MG: decodeSysvGet('msgget'),
    HA: decodeSysvUse('shmat'),
    SO: decodeSysvUse('semop'),
    MO: decodeSysvUse('msgop'),
    Q: (r) => {
      const { f, s, truncated } = r.withString(5);
      return { type: 'mq_open', ...ids(f), fd: int(f[3], 'fd'), flags: int(f[4], 'flags'), name: s, truncated };
    },
    MM: (r) => {
      const f = r.plain(4);
      return { type: 'mmap_exec', ...ids(f), fd: int(f[3], 'fd') };
    },
  } satisfies Record<string, RecordDecoder>),
);

/** Decode one printf line's text (the `data` of bpftrace's JSON), without its final newline. */
export function parseEbpfRecord(data: string): EbpfLine {
  const tag = data.slice(0, data.indexOf('\t') < 0 ? data.length : data.indexOf('\t'));
  if (tag === 'R') return { kind: 'ready' };
  if (tag === 'T') return { kind: 'tick' };
  const decode = RECORD_DECODERS.get(tag);
  if (!decode) throw new Error(`unknown record tag "${tag}"`);
  return { kind: 'event', event: decode(new RecordFields(data)) };
}

/**
 * Decode one line of `bpftrace -f json` output (read as latin1). Blank lines are `other`.
 * A malformed line is an error naming what is wrong; callers count it rather than stop.
 */
export function parseEbpfLine(line: string): Result<EbpfLine, EbpfParseError> {
  const trimmed = line.trim();
  if (trimmed === '') return ok({ kind: 'other', type: 'blank' });
  let parsed: unknown;
  try {
    parsed = JSON.parse(repairHighByteEscapes(trimmed));
  } catch (e) {
    return err({ message: `not JSON: ${e instanceof Error ? e.message : String(e)}`, line: trimmed.slice(0, 200) });
  }
  if (typeof parsed !== 'object' || parsed === null || typeof (parsed as { type?: unknown }).type !== 'string') {
    return err({ message: 'JSON without a "type" field', line: trimmed.slice(0, 200) });
  }
  const { type, data } = parsed as { type: string; data?: unknown };
  if (type === 'lost_events') {
    const count = typeof data === 'object' && data !== null ? Number((data as { events?: unknown }).events) : NaN;
    return ok({ kind: 'lost', count: Number.isFinite(count) ? count : 1 });
  }
  if (type !== 'printf') return ok({ kind: 'other', type });
  if (typeof data !== 'string') return err({ message: 'printf record without string data', line: trimmed.slice(0, 200) });
  try {
    return ok(parseEbpfRecord(data.endsWith('\n') ? data.slice(0, -1) : data));
  } catch (e) {
    return err({ message: e instanceof Error ? e.message : String(e), line: trimmed.slice(0, 200) });
  }
}

// ---------------------------------------------------------------------------------------------
// Turning events into a profile
// ---------------------------------------------------------------------------------------------

const AT_FDCWD = -100;
const O_CREAT = 0o100;
const O_PATH = 0o10000000;

/** Reads /proc synchronously so an event is interpreted while the process is still in that state. */
export interface ProcReader {
  /** Target of a /proc symlink, undefined when it cannot be read. */
  readlink(p: string): string | undefined;
  /** Text of a /proc file, undefined when it cannot be read. */
  readFile(p: string): string | undefined;
  /** Entries of a /proc directory (`/proc/<pid>/fd`), undefined when it cannot be read. */
  readdir?(p: string): string[] | undefined;
}

interface SocketState {
  family: number;
  socketType: number;
  bound?: SocketUse;
}

interface ProcessState {
  /** The working directory, undefined once we lost track of it (then relative names stay unresolved). */
  cwd: string | undefined;
  /** What each descriptor names, as far as printed opens tell (see the script's `@fdp`). */
  files: Map<number, string>;
  sockets: Map<number, SocketState>;
}

/** What the tracker learned of one process of the tree. */
export interface TrackedProcess {
  ppid?: number;
  executable?: string;
  argv?: string[];
  /** Real uid and gid, from /proc/<pid>/status when last read. */
  uid?: number;
  gid?: number;
}

/**
 * Events of a process whose fork line has not arrived yet, kept (up to this many) until it does:
 * bpftrace reads one buffer per CPU, so a child's first events can come before its parent's fork.
 */
const MAX_HELD_EVENTS = 10_000;

const SOCKET_FAMILY: Record<number, SocketUse['family']> = { 2: 'inet', 10: 'inet6', 16: 'netlink' };

function socketProtocol(family: SocketUse['family'], socketType: number): SocketUse['protocol'] {
  const base = socketType & 0xf;
  if (family === 'inet' || family === 'inet6') return base === 1 ? 'tcp' : base === 2 ? 'udp' : base === 3 ? 'raw' : 'other';
  return base === 1 ? 'stream' : base === 2 ? 'dgram' : base === 5 ? 'seqpacket' : base === 3 ? 'raw' : 'other';
}

/** A descriptor's /proc link names a file for us: not `pipe:[..]`, a memfd or a deleted file. */
function linkedFile(link: string | undefined): string | undefined {
  if (!link?.startsWith('/') || link.startsWith('/memfd:') || link.endsWith(' (deleted)')) return undefined;
  return link;
}

/**
 * Folds bpftrace events into a `ProfileCollector`: resolves relative paths against each
 * process's cwd (tracked through fork and chdir) or the `*at` directory descriptor (known from
 * the open that returned it), remembers which descriptor is which file or socket, and names SysV
 * ids by their keys. A successful call is a use; a failed lookup is a probe. A relative name
 * whose directory is unknown is never joined to a guess: it is counted in a note.
 */
export class EbpfEventTracker {
  /** Processes of the tree (not threads), with what we learned of them. */
  readonly processes = new Map<number, TrackedProcess>();
  /** Processes still alive, as far as events tell. */
  readonly live = new Set<number>();
  /** First executable the root process ran (launch mode). */
  rootExecutable: string | undefined;
  /** argv of that first exec. */
  rootArgv: string[] | undefined;
  /** Strings bpftrace cut at its length limit (their prefixes). */
  readonly truncated: string[] = [];
  /**
   * Pids whose argv was read from /proc/<pid>/cmdline when the exec line was handled, because
   * the line did not carry it: by then the process may have exec'd again (a note says so).
   */
  readonly argvFromProc = new Set<number>();
  /** Arguments of each process's next exec line (`XA` lines come just before their `X`). */
  private readonly execArgs = new Map<number, { args: string[]; cut: boolean[] }>();
  private readonly state = new Map<number, ProcessState>();
  private readonly forkedFrom = new Map<number, number>();
  private readonly pending = new Set<number>();
  private readonly held = new HeldByProcess<EbpfEvent>(MAX_HELD_EVENTS, (pid, queue) => {
    this.stateOf(pid);
    for (const e of queue) this.apply(e);
  });
  private readonly sysvKeys = new Map<string, { key: number; size?: number }>();

  constructor(
    readonly collector: ProfileCollector,
    readonly rootPid: number,
    private readonly proc: ProcReader,
  ) {}

  /** Start tracking a process that already runs (seeded pids): its cwd, descriptors and ids from /proc. */
  seed(pid: number, ppid?: number): void {
    this.noteProcess(pid, ppid);
    if (!this.state.has(pid)) this.state.set(pid, this.stateFromProc(pid));
    this.readIds(pid);
  }

  private stateFromProc(pid: number): ProcessState {
    const cwd = this.proc.readlink(`/proc/${pid}/cwd`);
    const files = new Map<number, string>();
    for (const fd of this.proc.readdir?.(`/proc/${pid}/fd`) ?? []) {
      const file = linkedFile(this.proc.readlink(`/proc/${pid}/fd/${fd}`));
      if (file && /^\d+$/.test(fd)) files.set(Number(fd), file);
    }
    return { cwd: cwd?.startsWith('/') ? cwd : undefined, files, sockets: new Map() };
  }

  private noteProcess(pid: number, ppid?: number): void {
    if (!this.processes.has(pid)) {
      this.processes.set(pid, ppid !== undefined ? { ppid } : {});
      this.live.add(pid);
    }
  }

  /** Real uid/gid of `pid` from /proc (`statusText` when already read). */
  private readIds(pid: number, statusText = this.proc.readFile(`/proc/${pid}/status`)): void {
    const info = this.processes.get(pid);
    if (!info || statusText === undefined) return;
    Object.assign(info, idsOf(parseProcStatus(statusText)));
  }

  /** Read the ids of every process still alive again: workers drop privileges after they start. */
  refreshIds(): void {
    for (const pid of this.live) this.readIds(pid);
  }

  /** The root (seeded, or the launched wrapper) and every process whose fork we saw are known. */
  private isKnown(pid: number): boolean {
    return this.state.has(pid) || pid === this.rootPid;
  }

  private stateOf(pid: number): ProcessState {
    let s = this.state.get(pid);
    if (!s) {
      // Only the root gets here without a seed (tests); any other process's cwd is not known.
      s = pid === this.rootPid ? this.stateFromProc(pid) : { cwd: undefined, files: new Map(), sockets: new Map() };
      this.state.set(pid, s);
    }
    return s;
  }

  /** Directory `dirfd` names in `pid` (AT_FDCWD is the cwd), or undefined when unknown. */
  private directoryOf(pid: number, dirfd: number): string | undefined {
    const s = this.stateOf(pid);
    return dirfd === AT_FDCWD ? s.cwd : s.files.get(dirfd);
  }

  /**
   * Absolute form of `p` as process `pid` meant it. A relative name whose directory is unknown
   * is undefined: for a use it is counted (`collector.unresolved`), a probe is simply dropped.
   */
  private resolve(pid: number, p: string, dirfd = AT_FDCWD, what: 'use' | 'probe' = 'use'): string | undefined {
    if (p.startsWith('/')) return path.posix.normalize(p);
    const base = this.directoryOf(pid, dirfd);
    if (base === undefined || !base.startsWith('/')) {
      if (what === 'use') this.collector.unresolved(p, dirfd === AT_FDCWD ? `cwd of pid ${pid} unknown` : `descriptor ${dirfd} of pid ${pid} unknown`);
      return undefined;
    }
    return path.posix.resolve(base, p);
  }

  private cut(what: string): void {
    this.truncated.push(what);
    this.collector.note(
      `bpftrace cuts strings at ${EBPF_MAX_STRLEN - 1} bytes: a longer path starting "${what.slice(0, 60)}..." was left out.`,
    );
  }

  /** Apply one event (held back while its process's fork line has not arrived). */
  handle(event: EbpfEvent): void {
    this.collector.events++;
    if (!this.isKnown(event.pid)) {
      this.held.hold(event.pid, event);
      return;
    }
    this.apply(event);
  }

  /**
   * Apply what is still held: processes whose fork line never came (lost events). Their cwd is
   * unknown, so their relative names stay unresolved. Call once bpftrace has stopped.
   */
  finish(): void {
    this.held.releaseAll();
  }

  private apply(event: EbpfEvent): void {
    const pid = event.pid;
    if (this.pending.delete(pid)) this.noteProcess(pid, this.forkedFrom.get(pid));
    switch (event.type) {
      case 'fork':
        return this.onFork(pid, event.child);
      case 'exit':
        this.live.delete(pid);
        return;
      case 'exec_arg':
        return this.onExecArg(event);
      case 'exec':
        return this.onExec(event);
      case 'chdir':
        return this.onChdir(pid, event.path, event.truncated);
      case 'fchdir':
        // A descriptor we cannot name leaves the cwd unknown (never a guess from /proc later on).
        this.stateOf(pid).cwd = this.stateOf(pid).files.get(event.fd);
        return;
      case 'open':
        return this.onOpen(event);
      case 'probe':
        return this.onProbe(event);
      case 'mmap_exec':
        return this.onExecutableMapping(pid, event.fd);
      case 'socket':
        this.stateOf(pid).sockets.set(event.fd, { family: event.family, socketType: event.socketType });
        return;
      case 'bind':
      case 'connect':
        return this.onAddress(event.type, pid, event.fd, event.address, event.truncated);
      case 'listen':
        return this.onListening(pid, event.fd);
      case 'accept':
        return this.onListening(pid, event.listenFd);
      case 'shmget':
      case 'semget':
      case 'msgget':
        return this.onSysvGet(event);
      case 'shmat':
      case 'semop':
      case 'msgop':
        return this.onSysvUse(event);
      case 'mq_open':
        return this.onMqOpen(event.name, event.truncated);
    }
  }

  private onFork(pid: number, child: number): void {
    // The child of a thread-creating clone is a thread of `pid`: only real processes count.
    const status = this.proc.readFile(`/proc/${child}/status`);
    const tgid = status ? Number(/^Tgid:\s*(\d+)/m.exec(status)?.[1]) : undefined;
    if (tgid !== undefined && tgid !== child) return;
    const parent = this.stateOf(pid);
    this.forkedFrom.set(child, pid);
    if (!this.state.has(child)) this.state.set(child, { cwd: parent.cwd, files: new Map(parent.files), sockets: new Map(parent.sockets) });
    // Already gone: a process or a thread? Its own events (an exit as leader) will tell.
    if (tgid === undefined) this.pending.add(child);
    else {
      this.noteProcess(child, pid);
      this.readIds(child, status);
    }
    this.held.release(child);
  }

  private onChdir(pid: number, dir: string, truncated: boolean): void {
    if (truncated) {
      this.stateOf(pid).cwd = undefined;
      return this.cut(dir);
    }
    this.stateOf(pid).cwd = this.resolve(pid, dir);
  }

  private onProbe(event: Extract<EbpfEvent, { type: 'probe' }>): void {
    if (event.truncated || event.path === '' || !isProbeError(-event.ret)) return;
    const file = this.resolve(event.pid, event.path, event.dirfd, 'probe');
    if (file) this.collector.addProbe(file);
  }

  /** An executable mapping of a file: how a dlopen'ed library shows up. */
  private onExecutableMapping(pid: number, fd: number): void {
    const file = this.stateOf(pid).files.get(fd) ?? linkedFile(this.proc.readlink(`/proc/${pid}/fd/${fd}`));
    if (file) this.collector.addFile(file, 'read', { sharedLibrary: true });
  }

  /** listen(2), or accept(2) on a socket (which shows it listens even when the listen came before the trace). */
  private onListening(pid: number, fd: number): void {
    const sock = this.stateOf(pid).sockets.get(fd);
    if (sock?.bound) this.collector.addSocket({ ...sock.bound, listening: true });
    else if (sock) {
      const family = SOCKET_FAMILY[sock.family] ?? (sock.family === 1 ? 'unix-path' : 'other');
      this.collector.addSocket({ family, protocol: socketProtocol(family, sock.socketType), listening: true });
    }
  }

  private onSysvGet(event: Extract<EbpfEvent, { type: 'shmget' | 'semget' | 'msgget' }>): void {
    const kind = event.type === 'shmget' ? 'sysv-shm' : event.type === 'semget' ? 'sysv-sem' : 'sysv-msg';
    const size = event.type === 'shmget' ? { size: event.size } : {};
    this.sysvKeys.set(`${kind}:${event.id}`, { key: event.key, ...size });
    this.collector.addIpc({ kind, key: event.key, id: event.id, ...size });
  }

  /** A use of a SysV object by id: its key comes from the get we saw, or from /proc/sysvipc. */
  private onSysvUse(event: Extract<EbpfEvent, { type: 'shmat' | 'semop' | 'msgop' }>): void {
    const kind = event.type === 'shmat' ? 'sysv-shm' : event.type === 'semop' ? 'sysv-sem' : 'sysv-msg';
    const known = this.sysvKeys.get(`${kind}:${event.id}`) ?? this.lookupSysv(kind, event.id);
    this.collector.addIpc({ kind, id: event.id, ...(known ?? {}) });
  }

  private onMqOpen(name: string, truncated: boolean): void {
    if (truncated) return this.cut(name);
    // glibc passes the name without its leading slash.
    this.collector.addIpc({ kind: 'posix-mq', name: name.startsWith('/') ? name : `/${name}` });
  }

  private onExecArg(event: Extract<EbpfEvent, { type: 'exec_arg' }>): void {
    let pending = this.execArgs.get(event.pid);
    // Index 0 starts an exec's arguments (what is left of one whose exec line was lost is dropped).
    if (!pending || event.index === 0) {
      pending = { args: [], cut: [] };
      this.execArgs.set(event.pid, pending);
    }
    pending.args[event.index] = event.arg;
    pending.cut[event.index] = event.truncated;
  }

  /** /proc/<pid>/cmdline now (which is the argv of the process's latest exec, not of a given one). */
  private cmdlineNow(pid: number): string[] | undefined {
    const argv = this.proc.readFile(`/proc/${pid}/cmdline`)?.split('\0').filter((a, i, all) => a !== '' || i < all.length - 1);
    return argv && argv.length > 0 ? argv : undefined;
  }

  /**
   * The argv of this exec: the arguments the kernel read at the exec. Only what they lack (more
   * arguments than it reads, one cut at the string limit, lines lost) is taken from /proc, and
   * only when /proc agrees with what they hold (else the process has exec'd again meanwhile).
   */
  private execArgv(event: Extract<EbpfEvent, { type: 'exec' }>, named: string | undefined): string[] | undefined {
    const pid = event.pid;
    const pending = this.execArgs.get(pid);
    this.execArgs.delete(pid);
    const program = named ?? event.path;
    // None read (-1), or none found: Linux >= 5.18 gives every program at least one argument, so
    // zero means the new stack could not be read.
    if (event.argc <= 0) {
      const argv = this.cmdlineNow(pid);
      if (argv) {
        this.argvFromProc.add(pid);
        this.collector.note(
          `The arguments of pid ${pid}'s exec of ${program} were not seen: they were read from /proc/${pid}/cmdline later, after any exec it made since.`,
        );
      }
      return argv;
    }
    const seen = pending?.args ?? [];
    const cut = pending?.cut ?? [];
    const all = Array.from({ length: event.argc }, (_, i) => seen[i] !== undefined && !cut[i]).every(Boolean);
    if (all && seen.length === event.argc && !event.more) return seen;
    // Some are missing: /proc completes them if it still shows this exec's arguments.
    const now = this.cmdlineNow(pid);
    const agrees =
      now !== undefined &&
      (event.more ? now.length > event.argc : now.length === event.argc) &&
      // A cut argument may end in half a UTF-8 character: compare what comes before it.
      seen.every((a, i) => a === undefined || (cut[i] ? now[i]!.startsWith(a.replace(/\uFFFD+$/, '')) : now[i] === a));
    if (agrees) return now;
    const kept = seen.map((a) => a ?? '');
    this.truncated.push(kept.join(' ').slice(0, 60));
    this.collector.note(
      `The arguments of pid ${pid}'s exec of ${program} are incomplete (more than ${EBPF_MAX_EXEC_ARGS}, longer than ${MAX_STRING_BYTES} bytes, or lost), and /proc/${pid}/cmdline no longer shows them: only the first ${kept.length} are known.`,
    );
    return kept;
  }

  private onExec(event: Extract<EbpfEvent, { type: 'exec' }>): void {
    const { pid, truncated, path: rawPath } = event;
    this.noteProcess(pid, this.forkedFrom.get(pid));
    const info = this.processes.get(pid)!;
    const named = truncated ? undefined : this.resolve(pid, rawPath);
    // The binary really running (a script's interpreter) as /proc shows it now; if the process
    // exec'd again meanwhile, that later program, which its own exec line records anyway.
    const exe = this.proc.readlink(`/proc/${pid}/exe`)?.replace(/ \(deleted\)$/, '');
    if (truncated) this.cut(rawPath);
    // The name used may be a script or a symlink; /proc/<pid>/exe is the binary really running.
    if (named) this.collector.addFile(named, 'exec');
    if (exe?.startsWith('/')) this.collector.addFile(exe, 'exec');
    const argv = this.execArgv(event, named);
    info.executable = named ?? exe;
    // (An earlier exec's argv is not this one's: none is better.)
    if (argv && argv.length > 0) info.argv = argv;
    else delete info.argv;
    this.readIds(pid);
    if (pid === this.rootPid && this.rootExecutable === undefined) {
      this.rootExecutable = info.executable;
      this.rootArgv = info.argv;
    }
    // The kernel maps the dynamic loader itself (no open(2) to see): take it from the maps.
    const maps = this.proc.readFile(`/proc/${pid}/maps`) ?? '';
    for (const line of maps.split('\n')) {
      const m = /^\S+\s+\S\S(x)\S\s+\S+\s+\S+\s+\d+\s+(\/.*)$/.exec(line);
      const file = m?.[2];
      if (file && file !== exe && isSharedLibraryPath(file)) this.collector.addFile(file, 'read', { sharedLibrary: true, reason: 'mapped' });
    }
    // Descriptors stay as they are: those without close-on-exec live on, and a closed one is
    // only named again by the open that reuses its number (which always prints, see @fdp).
  }

  private onOpen(event: Extract<EbpfEvent, { type: 'open' }>): void {
    const state = this.stateOf(event.pid);
    if (event.truncated) {
      if (event.fd >= 0) state.files.delete(event.fd);
      return this.cut(event.path);
    }
    if (event.fd < 0) {
      // A failed open is a probe, never a use.
      if (event.path === '' || !isProbeError(-event.fd)) return;
      const probe = this.resolve(event.pid, event.path, event.dirfd, 'probe');
      if (probe) this.collector.addProbe(probe);
      return;
    }
    const file = event.path === '' ? undefined : this.resolve(event.pid, event.path, event.dirfd);
    if (!file) {
      state.files.delete(event.fd);
      return;
    }
    state.files.set(event.fd, file);
    if (file.startsWith('/dev/shm/') && file.split('/').length === 4) {
      this.collector.addIpc({ kind: 'posix-shm', name: file.slice('/dev/shm'.length) });
      return;
    }
    const accesses: Array<'read' | 'write'> = (event.flags & O_PATH) !== 0 ? ['read'] : accessFromOpenFlags(event.flags);
    for (const access of accesses) this.collector.addFile(file, access);
    if ((event.flags & O_CREAT) !== 0 && !accesses.includes('write')) this.collector.addFile(file, 'write');
  }

  private onAddress(type: 'bind' | 'connect', pid: number, fd: number, address: EbpfSockaddr, truncated: boolean): void {
    const state = this.stateOf(pid);
    const sock = state.sockets.get(fd) ?? { family: address.family, socketType: 0 };
    const use = this.socketUse(pid, address, sock.socketType, type === 'bind' ? 'local' : 'remote');
    if (!use) return;
    if (truncated) this.collector.note(`A unix socket path may have been cut at 107 bytes: "${address.path.slice(0, 60)}..."`);
    if (type === 'bind') {
      state.sockets.set(fd, { ...sock, bound: use });
    }
    this.collector.addSocket(use);
  }

  private socketUse(pid: number, a: EbpfSockaddr, socketType: number, side: 'local' | 'remote'): SocketUse | undefined {
    if (a.family === 1) {
      const family = a.abstract ? 'unix-abstract' : 'unix-path';
      // An unnamed unix address (autobind, or an empty connect) names nothing to isolate.
      if (a.path === '' && !a.abstract) return undefined;
      // A relative socket path is relative to the cwd, like any other path.
      const p = a.abstract ? a.path : this.resolve(pid, a.path);
      if (p === undefined) return undefined;
      return { family, protocol: socketProtocol(family, socketType), path: p, listening: false };
    }
    const family = SOCKET_FAMILY[a.family];
    if (!family) return a.family === 0 ? undefined : { family: 'other', protocol: 'other', listening: false };
    const protocol = socketProtocol(family, socketType);
    if (family === 'netlink') return { family, protocol, listening: false };
    const address = family === 'inet' ? a.ipv4 : a.ipv6;
    return side === 'local'
      ? { family, protocol, localAddress: address, localPort: a.port, listening: false }
      : { family, protocol, remoteAddress: address, remotePort: a.port, listening: false };
  }

  /** Key and size of a SysV object by id, from /proc/sysvipc (another process created it). */
  private lookupSysv(kind: 'sysv-shm' | 'sysv-sem' | 'sysv-msg', id: number): { key: number; size?: number } | undefined {
    const text = this.proc.readFile(`/proc/sysvipc/${kind.slice('sysv-'.length)}`) ?? '';
    for (const line of text.split('\n').slice(1)) {
      const [key, ident, , size] = line.trim().split(/\s+/);
      if (Number(ident) !== id) continue;
      const found = { key: Number(key), ...(kind === 'sysv-shm' ? { size: Number(size) } : {}) };
      this.sysvKeys.set(`${kind}:${id}`, found);
      return found;
    }
    return undefined;
  }
}

