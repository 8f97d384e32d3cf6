/**
 * Strict parsers for the text the FreeBSD tools print: `procstat -b/-c/-f/-v`, `sockstat`,
 * `ipcs -a`, `kdump -H -n -d`, `ps`, `stat -f` and `uname -srm`; and {@link interpretKdump}, which turns
 * a kdump trace into file, socket, IPC and process observations (pure, so it is tested on samples).
 *
 * They were written from the tools' documented output formats (man pages and the column layouts
 * the tools print), not checked against a live FreeBSD host. They are strict on purpose: a header
 * or row they do not recognise is a {@link FreeBsdParseError} naming the command and the line,
 * never a silent guess, so a format change on some release shows up as a clear error.
 *
 * @module
 */
import path from 'node:path';
import { err, ok, type Result } from 'neverthrow';
import type { FileReason, FileUse, IpcUse, ProcessInfo, SocketUse } from '../policy/profile.js';
import { ApMigrateError } from '../errors.js';
import { ProfileError } from './common.js';

/** Output of a FreeBSD tool did not have the documented shape. `code` is `PARSE_FAILED`. */
export class FreeBsdParseError extends ProfileError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.FreeBsdParseError');
  }

  /** Whether `value` is a FreeBsdParseError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is FreeBsdParseError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.FreeBsdParseError');
  }

  /** Always `PARSE_FAILED`. */
  declare readonly code: 'PARSE_FAILED';
  /** The command whose output failed to parse, e.g. `procstat -f`. */
  readonly command: string;
  /** 1-based line number in the output (0 when the whole output is wrong). */
  readonly lineNumber: number;
  /** The offending line (cut to 200 characters). */
  readonly line: string;

  constructor(command: string, lineNumber: number, line: string, reason: string) {
    const shown = line.length > 200 ? `${line.slice(0, 200)}...` : line;
    super('PARSE_FAILED', `Cannot parse the output of \`${command}\` at line ${lineNumber}: ${reason}: ${JSON.stringify(shown)}`, {
      details: { command, lineNumber, line: shown, reason },
    });
    this.command = command;
    this.lineNumber = lineNumber;
    this.line = shown;
  }
}

/** Non-empty lines with their 1-based numbers (trailing spaces and a final CR removed). */
function numberedLines(text: string): Array<{ n: number; text: string }> {
  return text
    .split('\n')
    .map((raw, i) => ({ n: i + 1, text: raw.replace(/\r$/, '').trimEnd() }))
    .filter((l) => l.text.length > 0);
}

function toInt(s: string): number | undefined {
  return /^-?\d+$/.test(s) ? Number.parseInt(s, 10) : undefined;
}

// ---------------------------------------------------------------------------------------------
// uname -srm

/** The platform `uname -srm` describes. */
export interface UnameInfo {
  /** `FreeBSD`. */
  sysname: string;
  /** e.g. `13.2-RELEASE-p4`. */
  release: string;
  /** e.g. `amd64`. */
  machine: string;
}

/** Parse `uname -srm` (one line: `FreeBSD 13.2-RELEASE amd64`). Any other system is an error. */
export function parseUnameSrm(text: string): Result<UnameInfo, FreeBsdParseError> {
  const lines = numberedLines(text);
  const first = lines[0];
  if (!first || lines.length !== 1) return err(new FreeBsdParseError('uname -srm', first?.n ?? 0, text.trim(), 'expected exactly one line'));
  const words = first.text.trim().split(/\s+/);
  if (words.length !== 3) return err(new FreeBsdParseError('uname -srm', first.n, first.text, 'expected "<system> <release> <machine>"'));
  const [sysname, release, machine] = words as [string, string, string];
  if (sysname !== 'FreeBSD') return err(new FreeBsdParseError('uname -srm', first.n, first.text, `the host runs ${sysname}, not FreeBSD`));
  if (!/^\d+\.\d+-[A-Z0-9.-]+$/.test(release)) return err(new FreeBsdParseError('uname -srm', first.n, first.text, 'unknown release format'));
  return ok({ sysname, release, machine });
}

// ---------------------------------------------------------------------------------------------
// ps -ax -o pid= -o ppid= -o ruid= -o rgid= -o ruser=

/** One process as `ps` lists it. */
export interface PsEntry {
  pid: number;
  ppid: number;
  /** Real user id. */
  ruid: number;
  /** Real group id. */
  rgid: number;
  /** Real user name (or the number when the uid has no name). */
  ruser: string;
}

/** Parse `ps -ax -o pid= -o ppid= -o ruid= -o rgid= -o ruser=` (no header; five columns). */
export function parsePs(text: string): Result<PsEntry[], FreeBsdParseError> {
  const command = 'ps -ax -o pid= -o ppid= -o ruid= -o rgid= -o ruser=';
  const out: PsEntry[] = [];
  for (const line of numberedLines(text)) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)$/.exec(line.text);
    if (!m) return err(new FreeBsdParseError(command, line.n, line.text, 'expected "pid ppid ruid rgid ruser"'));
    out.push({ pid: Number(m[1]), ppid: Number(m[2]), ruid: Number(m[3]), rgid: Number(m[4]), ruser: m[5]! });
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------
// procstat -b

/** One row of `procstat -b`: the binary a process runs. */
export interface ProcstatBinary {
  pid: number;
  comm: string;
  /** osreldate the binary was built for. */
  osrel: number;
  /** Path of the binary (`undefined` when procstat printed `-`). */
  path?: string;
}

/** True when `line` is a procstat table header with exactly these column names. */
function isHeader(line: string, columns: readonly string[]): boolean {
  const words = line.trim().split(/\s+/);
  return words.length === columns.length && words.every((w, i) => w === columns[i]);
}

/** Parse `procstat -b <pid...>`. */
export function parseProcstatBinary(text: string): Result<ProcstatBinary[], FreeBsdParseError> {
  const command = 'procstat -b';
  const header = ['PID', 'COMM', 'OSREL', 'PATH'];
  const lines = numberedLines(text);
  if (!lines[0] || !isHeader(lines[0].text, header)) {
    return err(new FreeBsdParseError(command, lines[0]?.n ?? 0, lines[0]?.text ?? '', `unknown header (expected ${header.join(' ')})`));
  }
  const out: ProcstatBinary[] = [];
  for (const line of lines.slice(1)) {
    if (isHeader(line.text, header)) continue;
    const m = /^\s*(\d+)\s(.+?)\s+(-?\d+)\s(\S.*)$/.exec(line.text);
    if (!m) return err(new FreeBsdParseError(command, line.n, line.text, 'expected "PID COMM OSREL PATH"'));
    const path = m[4]!;
    if (path !== '-' && !path.startsWith('/')) return err(new FreeBsdParseError(command, line.n, line.text, 'PATH is neither absolute nor "-"'));
    out.push({ pid: Number(m[1]), comm: m[2]!.trim(), osrel: Number(m[3]), ...(path === '-' ? {} : { path }) });
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------
// procstat -c

/** Parse `procstat -c <pid>`: argv of each process. `commByPid` (from `procstat -b`) lets a command name with spaces be cut off exactly. */
export function parseProcstatArgs(text: string, commByPid: ReadonlyMap<number, string> = new Map()): Result<Map<number, string[]>, FreeBsdParseError> {
  const command = 'procstat -c';
  const header = ['PID', 'COMM', 'ARGS'];
  const lines = numberedLines(text);
  if (!lines[0] || !isHeader(lines[0].text, header)) {
    return err(new FreeBsdParseError(command, lines[0]?.n ?? 0, lines[0]?.text ?? '', `unknown header (expected ${header.join(' ')})`));
  }
  const out = new Map<number, string[]>();
  for (const line of lines.slice(1)) {
    if (isHeader(line.text, header)) continue;
    const m = /^\s*(\d+) (.+)$/.exec(line.text);
    if (!m) return err(new FreeBsdParseError(command, line.n, line.text, 'expected "PID COMM ARGS"'));
    const pid = Number(m[1]);
    let rest = m[2]!;
    const comm = commByPid.get(pid);
    if (comm !== undefined && rest.startsWith(comm)) rest = rest.slice(comm.length);
    else rest = rest.replace(/^\S+/, '');
    // procstat joins argv with single spaces: an argument that itself held spaces cannot be told apart.
    const args = rest.trim().split(/\s+/).filter(Boolean);
    if (args.length === 0) return err(new FreeBsdParseError(command, line.n, line.text, 'no arguments after the command name'));
    out.set(pid, args);
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------
// procstat -f

/** File descriptor types `procstat -f` prints in column T. */
export const PROCSTAT_FD_TYPES = {
  v: 'vnode',
  s: 'socket',
  p: 'pipe',
  f: 'fifo',
  k: 'kqueue',
  c: 'crypto',
  m: 'mqueue',
  h: 'shm',
  t: 'pts',
  e: 'sem',
  '?': 'unknown',
} as const;
/** A descriptor type from column T, spelled out. */
export type ProcstatFdType = (typeof PROCSTAT_FD_TYPES)[keyof typeof PROCSTAT_FD_TYPES];

/** Vnode types `procstat -f` prints in column V (`-` for non-vnodes). */
export const PROCSTAT_VNODE_TYPES = {
  '-': 'none',
  r: 'regular',
  d: 'directory',
  b: 'block',
  c: 'character',
  l: 'link',
  s: 'socket',
  f: 'fifo',
  x: 'revoked',
  '?': 'unknown',
} as const;
/** A vnode type from column V, spelled out. */
export type ProcstatVnodeType = (typeof PROCSTAT_VNODE_TYPES)[keyof typeof PROCSTAT_VNODE_TYPES];

/** One row of `procstat -f`. */
export interface ProcstatFile {
  pid: number;
  comm: string;
  /** A descriptor number, or `text`, `cwd`, `root`, `jail`, `ctty`, `trace`. */
  fd: number | 'text' | 'cwd' | 'root' | 'jail' | 'ctty' | 'trace';
  type: ProcstatFdType;
  vnodeType: ProcstatVnodeType;
  /** Open for reading (flag r). */
  read: boolean;
  /** Open for writing (flag w). */
  write: boolean;
  /** Open for appending (flag a). */
  append: boolean;
  /** Network protocol (TCP, UDP, UDS, UDD, ...) or undefined for `-`. */
  protocol?: string;
  /** NAME column: a path, socket addresses, or undefined when procstat printed `-`. */
  name?: string;
}

const FILE_HEADER = ['PID', 'COMM', 'FD', 'T', 'V', 'FLAGS', 'REF', 'OFFSET', 'PRO', 'NAME'];
// The 8-character FLAGS column (rwasfndl or '-') anchors the row, so a COMM with spaces still parses.
const FILE_ROW =
  /^\s*(\d+) (.+?)\s+(\d+|text|cwd|root|jail|ctty|trace) ([vspfkcmhte?]) ([-rdbclsfx?]) ([r-][w-][a-][s-][f-][n-][d-][l-])\s+(\d+|-)\s+(-?\d+|-) (\S+)(?: (.*))?$/;

/** Parse `procstat -f <pid...>` (the default layout, without `-C`). */
export function parseProcstatFiles(text: string): Result<ProcstatFile[], FreeBsdParseError> {
  const command = 'procstat -f';
  const lines = numberedLines(text);
  if (!lines[0] || !isHeader(lines[0].text, FILE_HEADER)) {
    return err(new FreeBsdParseError(command, lines[0]?.n ?? 0, lines[0]?.text ?? '', `unknown header (expected ${FILE_HEADER.join(' ')})`));
  }
  const out: ProcstatFile[] = [];
  for (const line of lines.slice(1)) {
    if (isHeader(line.text, FILE_HEADER)) continue;
    const m = FILE_ROW.exec(line.text);
    if (!m) return err(new FreeBsdParseError(command, line.n, line.text, 'row does not match "PID COMM FD T V FLAGS REF OFFSET PRO NAME"'));
    const fdText = m[3]!;
    const flags = m[6]!;
    const protocol = m[9]!;
    const name = (m[10] ?? '').trim();
    out.push({
      pid: Number(m[1]),
      comm: m[2]!.trim(),
      fd: /^\d+$/.test(fdText) ? Number(fdText) : (fdText as ProcstatFile['fd']),
      type: PROCSTAT_FD_TYPES[m[4] as keyof typeof PROCSTAT_FD_TYPES],
      vnodeType: PROCSTAT_VNODE_TYPES[m[5] as keyof typeof PROCSTAT_VNODE_TYPES],
      read: flags[0] === 'r',
      write: flags[1] === 'w',
      append: flags[2] === 'a',
      ...(protocol === '-' ? {} : { protocol }),
      ...(name === '' || name === '-' ? {} : { name }),
    });
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------
// procstat -v

/** VM object types `procstat -v` prints in column TP. */
export const PROCSTAT_VM_TYPES = ['--', 'dd', 'df', 'dv', 'ph', 'sw', 'vn', 'sg', 'md', 'gd', '??'] as const;

/** One mapping from `procstat -v`. */
export interface ProcstatMapping {
  pid: number;
  start: bigint;
  end: bigint;
  read: boolean;
  write: boolean;
  exec: boolean;
  /** VM object type: `vn` for a file, `sw`/`df` for anonymous memory, ... */
  objectType: (typeof PROCSTAT_VM_TYPES)[number];
  /** Mapped file (only for `vn` objects whose path is in the name cache). */
  path?: string;
}

const VM_ROW = /^\s*(\d+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+) ([r-])([w-])([x-])\s+\d+\s+\d+\s+\d+\s+\d+ ([CNSUDW-]{2,6})\s+(--|dd|df|dv|ph|sw|vn|sg|md|gd|\?\?)(?: (.*))?$/;

/** Parse `procstat -v <pid...>`. Accepts the `FL` (old) and `FLAG` (new) spellings of the flags column. */
export function parseProcstatVm(text: string): Result<ProcstatMapping[], FreeBsdParseError> {
  const command = 'procstat -v';
  const headers = [
    ['PID', 'START', 'END', 'PRT', 'RES', 'PRES', 'REF', 'SHD', 'FLAG', 'TP', 'PATH'],
    ['PID', 'START', 'END', 'PRT', 'RES', 'PRES', 'REF', 'SHD', 'FL', 'TP', 'PATH'],
  ];
  const lines = numberedLines(text);
  const header = (l: string) => headers.some((h) => isHeader(l, h));
  if (!lines[0] || !header(lines[0].text)) {
    return err(new FreeBsdParseError(command, lines[0]?.n ?? 0, lines[0]?.text ?? '', `unknown header (expected ${headers[0]!.join(' ')})`));
  }
  const out: ProcstatMapping[] = [];
  for (const line of lines.slice(1)) {
    if (header(line.text)) continue;
    const m = VM_ROW.exec(line.text);
    if (!m) return err(new FreeBsdParseError(command, line.n, line.text, 'row does not match "PID START END PRT RES PRES REF SHD FLAG TP PATH"'));
    const path = (m[9] ?? '').trim();
    if (path !== '' && !path.startsWith('/')) return err(new FreeBsdParseError(command, line.n, line.text, 'PATH is not absolute'));
    out.push({
      pid: Number(m[1]),
      start: BigInt(m[2]!),
      end: BigInt(m[3]!),
      read: m[4] === 'r',
      write: m[5] === 'w',
      exec: m[6] === 'x',
      objectType: m[8] as ProcstatMapping['objectType'],
      ...(path === '' ? {} : { path }),
    });
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------
// sockstat

/** One socket row of `sockstat`. */
export interface SockstatEntry {
  user: string;
  command: string;
  /** Undefined for sockets no descriptor holds (`?`). */
  pid?: number;
  fd?: number;
  /** `tcp4`, `tcp6`, `tcp46`, `udp4`, `sctp6`, `stream`, `dgram`, `seqpac` ... as printed. */
  proto: string;
  family: 'inet' | 'inet6' | 'unix';
  /** Transport for inet sockets, socket type for unix ones. */
  protocol: 'tcp' | 'udp' | 'stream' | 'dgram' | 'seqpacket' | 'other';
  /** inet: address (`*` becomes undefined) and port (`*` becomes undefined). */
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
  /** unix: the bound path, if any. */
  path?: string;
  /** unix: the path of the peer we connected to (`-> /path`), if any. */
  peerPath?: string;
}

const SOCKSTAT_HEADER = /^USER\s+COMMAND\s+PID\s+FD\s+PROTO\s+LOCAL ADDRESS\s+FOREIGN ADDRESS$/;
const SOCKSTAT_ROW = /^(\S+)\s+(.{1,10}?)\s+(\d+|\?)\s+(\d+|\?)\s+(tcp(?:4|6|46)|udp(?:4|6|46)|udplite(?:4|6|46)|sctp(?:4|6|46)|raw(?:4|6|46)|divert(?:4|6|46)|stream|dgram|seqpac(?:ket)?)(?:\s+(.*))?$/;

/** Split `addr:port` as sockstat prints it (IPv6 addresses are not bracketed: the last colon separates). */
function splitInet(s: string, family: 'inet' | 'inet6'): { address?: string; port?: number } | undefined {
  const colon = s.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const host = s.slice(0, colon);
  const portText = s.slice(colon + 1);
  const port = portText === '*' ? undefined : toInt(portText);
  if (portText !== '*' && (port === undefined || port < 0 || port > 65535)) return undefined;
  const address = host === '*' ? undefined : host;
  if (address !== undefined && family === 'inet' && !/^\d{1,3}(\.\d{1,3}){3}$/.test(address)) return undefined;
  if (address !== undefined && family === 'inet6' && !/^[0-9a-fA-F:.%a-z]+$/.test(address)) return undefined;
  return { ...(address === undefined ? {} : { address }), ...(port === undefined ? {} : { port }) };
}

/** Parse `sockstat` (default columns, optionally `-l` or `-c`). Extra columns (`-s`, `-S`, ...) are refused. */
export function parseSockstat(text: string, command = 'sockstat'): Result<SockstatEntry[], FreeBsdParseError> {
  const lines = numberedLines(text);
  if (!lines[0] || !SOCKSTAT_HEADER.test(lines[0].text.trim())) {
    return err(new FreeBsdParseError(command, lines[0]?.n ?? 0, lines[0]?.text ?? '', 'unknown header (expected USER COMMAND PID FD PROTO LOCAL ADDRESS FOREIGN ADDRESS)'));
  }
  const out: SockstatEntry[] = [];
  let lastProto = '';
  for (const line of lines.slice(1)) {
    // SCTP sockets with several addresses continue on indented lines holding only addresses.
    if (/^\s/.test(line.text)) {
      if (lastProto.startsWith('sctp')) continue;
      return err(new FreeBsdParseError(command, line.n, line.text, 'continuation line after a non-SCTP socket'));
    }
    const m = SOCKSTAT_ROW.exec(line.text);
    if (!m) return err(new FreeBsdParseError(command, line.n, line.text, 'row does not match "USER COMMAND PID FD PROTO LOCAL FOREIGN" with a known PROTO'));
    const proto = m[5]!;
    lastProto = proto;
    const rest = (m[6] ?? '').trim();
    const base = {
      user: m[1]!,
      command: m[2]!.trim(),
      ...(m[3] === '?' ? {} : { pid: Number(m[3]) }),
      ...(m[4] === '?' ? {} : { fd: Number(m[4]) }),
      proto,
    };
    if (['stream', 'dgram', 'seqpac', 'seqpacket'].includes(proto)) {
      const protocol = proto === 'stream' ? 'stream' : proto === 'dgram' ? 'dgram' : 'seqpacket';
      const entry: SockstatEntry = { ...base, family: 'unix', protocol };
      // Forms: "", "(not connected)", "(none)", "/path", "/path <- [pid fd],...", "-> /path", "-> [pid fd]", "/path -> ..."
      if (rest !== '' && rest !== '(not connected)' && rest !== '(none)') {
        const um = /^(\/\S*)?\s*(?:-> (\/\S*|\[\d+ \d+\]|\?\?))?\s*(?:<- (?:\[\d+ \d+\],?)*)?$/.exec(rest);
        if (!um || (um[1] === undefined && um[2] === undefined && !rest.startsWith('<-'))) {
          return err(new FreeBsdParseError(command, line.n, line.text, 'unknown unix socket address form'));
        }
        if (um[1] !== undefined) entry.path = um[1];
        if (um[2]?.startsWith('/')) entry.peerPath = um[2];
      }
      out.push(entry);
      continue;
    }
    const family = proto.endsWith('4') && !proto.endsWith('46') ? 'inet' : 'inet6';
    const transport = proto.startsWith('tcp') ? 'tcp' : proto.startsWith('udp') && !proto.startsWith('udplite') ? 'udp' : 'other';
    const words = rest.split(/\s+/).filter(Boolean);
    if (words.length !== 2) return err(new FreeBsdParseError(command, line.n, line.text, 'expected a local and a foreign address'));
    // tcp46 sockets accept IPv4 too but print IPv6-style wildcards; parse them as inet6.
    const local = splitInet(words[0]!, family);
    const remote = splitInet(words[1]!, family);
    if (!local || !remote) return err(new FreeBsdParseError(command, line.n, line.text, 'address is not "<host>:<port>"'));
    out.push({
      ...base,
      family,
      protocol: transport,
      ...(local.address === undefined ? {} : { localAddress: local.address }),
      ...(local.port === undefined ? {} : { localPort: local.port }),
      ...(remote.address === undefined ? {} : { remoteAddress: remote.address }),
      ...(remote.port === undefined ? {} : { remotePort: remote.port }),
    });
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------
// ipcs -a

/** One SysV IPC object from `ipcs -a`. */
export interface IpcsEntry {
  kind: 'sysv-msg' | 'sysv-shm' | 'sysv-sem';
  id: number;
  /** The key as a signed 32-bit number, as ipcs prints it (`IPC_PRIVATE` is 0). */
  key: number;
  owner: string;
  creator: string;
  /** Shared memory: segment size in bytes. */
  size?: number;
  /** Semaphores: number of semaphores in the set. */
  nsems?: number;
  /** Shared memory: creator and last attach/detach pid. Message queues: last send and receive pid. */
  pids: number[];
}

const IPCS_SECTIONS: Record<string, { kind: IpcsEntry['kind']; letter: string }> = {
  'Message Queues:': { kind: 'sysv-msg', letter: 'q' },
  'Shared Memory:': { kind: 'sysv-shm', letter: 'm' },
  'Semaphores:': { kind: 'sysv-sem', letter: 's' },
};
const IPCS_REQUIRED = ['T', 'ID', 'KEY', 'MODE', 'OWNER', 'GROUP', 'CREATOR', 'CGROUP'];

/** Parse `ipcs -a`: three sections, each a title, a header naming its columns, and rows. */
export function parseIpcs(text: string): Result<IpcsEntry[], FreeBsdParseError> {
  const command = 'ipcs -a';
  const out: IpcsEntry[] = [];
  let section: (typeof IPCS_SECTIONS)[string] | undefined;
  let columns: string[] | undefined;
  for (const line of numberedLines(text)) {
    const title = IPCS_SECTIONS[line.text.trim()];
    if (title) {
      section = title;
      columns = undefined;
      continue;
    }
    if (!section) return err(new FreeBsdParseError(command, line.n, line.text, 'expected a section title (Message Queues:, Shared Memory:, Semaphores:)'));
    const words = line.text.trim().split(/\s+/);
    if (!columns) {
      if (!IPCS_REQUIRED.every((c, i) => words[i] === c)) return err(new FreeBsdParseError(command, line.n, line.text, `unknown header (expected ${IPCS_REQUIRED.join(' ')} ...)`));
      columns = words;
      continue;
    }
    if (words[0] !== section.letter) return err(new FreeBsdParseError(command, line.n, line.text, `expected a row starting with "${section.letter}"`));
    if (words.length !== columns.length) {
      return err(new FreeBsdParseError(command, line.n, line.text, `row has ${words.length} fields but the header names ${columns.length}`));
    }
    const field = (name: string) => {
      const i = columns!.indexOf(name);
      return i < 0 ? undefined : words[i];
    };
    const num = (name: string) => {
      const v = field(name);
      return v === undefined ? undefined : toInt(v);
    };
    const id = num('ID');
    const key = num('KEY');
    if (id === undefined || key === undefined || !/^-[-r][-w][-a][-r][-w][-a][-r][-w][-a]$/.test(field('MODE')!.slice(1))) {
      return err(new FreeBsdParseError(command, line.n, line.text, 'ID, KEY or MODE is malformed'));
    }
    const pidColumns = section.kind === 'sysv-shm' ? ['CPID', 'LPID'] : section.kind === 'sysv-msg' ? ['LSPID', 'LRPID'] : [];
    const pids: number[] = [];
    for (const c of pidColumns) {
      const v = num(c);
      if (field(c) !== undefined && v === undefined) return err(new FreeBsdParseError(command, line.n, line.text, `${c} is not a number`));
      if (v !== undefined && v > 0) pids.push(v);
    }
    const size = section.kind === 'sysv-shm' ? num('SEGSZ') : undefined;
    const nsems = section.kind === 'sysv-sem' ? num('NSEMS') : undefined;
    out.push({
      kind: section.kind,
      id,
      key,
      owner: field('OWNER')!,
      creator: field('CREATOR')!,
      ...(size === undefined ? {} : { size }),
      ...(nsems === undefined ? {} : { nsems }),
      pids,
    });
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------
// stat -f '%z %Sp %N'

/** What `stat -f '%z %Sp %N'` says about one path. */
export interface StatEntry {
  path: string;
  size: number;
  kind: 'regular' | 'directory' | 'symlink' | 'fifo' | 'unix-socket' | 'device' | 'unknown';
}

const MODE_KIND: Record<string, StatEntry['kind']> = {
  '-': 'regular',
  d: 'directory',
  l: 'symlink',
  p: 'fifo',
  s: 'unix-socket',
  c: 'device',
  b: 'device',
  w: 'unknown',
};

/** Parse `stat -f '%z %Sp %N' <paths>`: size, symbolic mode (its first letter is the type), path. */
export function parseStat(text: string): Result<StatEntry[], FreeBsdParseError> {
  const command = "stat -f '%z %Sp %N'";
  const out: StatEntry[] = [];
  for (const line of numberedLines(text)) {
    const m = /^(\d+) ([-dlpscbw])[-rwxsStT]{9}[+@.]? {1,2}(\/.*)$/.exec(line.text);
    if (!m) return err(new FreeBsdParseError(command, line.n, line.text, 'expected "<size> <mode> <absolute path>"'));
    out.push({ size: Number(m[1]), kind: MODE_KIND[m[2]!] ?? 'unknown', path: m[3]! });
  }
  return ok(out);
}

// ---------------------------------------------------------------------------------------------
// kdump -H -n -d

/** Record types kdump prints (column after the command name). */
export const KDUMP_RECORD_TYPES = ['CALL', 'RET', 'NAMI', 'GIO', 'PSIG', 'CSW', 'USER', 'STRU', 'SCTL', 'CAP', 'EMUL', 'PFLT', 'PRET', 'ARGS', 'ENV', 'SPLT'] as const;

/** One kdump record. */
export interface KdumpRecord {
  pid: number;
  tid: number;
  comm: string;
  type: (typeof KDUMP_RECORD_TYPES)[number];
  /** Everything after the type. */
  body: string;
  /** 1-based line number in the output, for messages. */
  line: number;
}

const KDUMP_ROW = /^\s*(\d+)\s+(\d+)\s+(.{1,19}?)\s+(CALL|RET|NAMI|GIO|PSIG|CSW|USER|STRU|SCTL|CAP|EMUL|PFLT|PRET|ARGS|ENV|SPLT)(?:\s{1,2}(.*))?$/;

/** Parse the lines of `kdump -H -n -d -f <file>` into records (pid, thread id, command, type, body). */
export function parseKdumpRecords(text: string): Result<KdumpRecord[], FreeBsdParseError> {
  const command = 'kdump -H -n -d';
  const out: KdumpRecord[] = [];
  for (const line of numberedLines(text)) {
    const m = KDUMP_ROW.exec(line.text);
    if (!m) return err(new FreeBsdParseError(command, line.n, line.text, 'not a "PID TID COMMAND TYPE ..." record (was kdump run with -H?)'));
    out.push({ pid: Number(m[1]), tid: Number(m[2]), comm: m[3]!.trim(), type: m[4] as KdumpRecord['type'], body: m[5] ?? '', line: line.n });
  }
  return ok(out);
}

/** A system call as kdump printed it (with `-n -d`: every argument a decimal number). */
export interface KdumpCall {
  name: string;
  args: number[];
}

/** Parse a CALL body such as `openat(-100,34366292008,1048576,0)`. */
export function parseKdumpCall(body: string): KdumpCall | undefined {
  const m = /^([a-z_][a-z0-9_]*)(?:\((.*)\))?$/.exec(body.trim());
  if (!m) return undefined;
  const inner = m[2]?.trim() ?? '';
  const args = inner === '' ? [] : inner.split(',').map((a) => toInt(a.trim()));
  if (args.some((a) => a === undefined)) return undefined;
  return { name: m[1]!, args: args as number[] };
}

/** A system call result: `open 3`, `open -1 errno 2`, `execve JUSTRETURN`. */
export interface KdumpReturn {
  name: string;
  /** Return value when the call succeeded. */
  value?: number;
  /** errno when it failed. */
  errno?: number;
  /** `RESTART` or `JUSTRETURN` (a successful execve). */
  special?: 'RESTART' | 'JUSTRETURN';
}

/** Parse a RET body. */
export function parseKdumpReturn(body: string): KdumpReturn | undefined {
  const m = /^([a-z_][a-z0-9_]*) (?:(-?\d+)(?:\/0x[0-9a-f]+)?|-1 errno (\d+)(?: .*)?|(RESTART|JUSTRETURN))$/.exec(body.trim());
  if (!m) return undefined;
  if (m[3] !== undefined) return { name: m[1]!, errno: Number(m[3]) };
  if (m[4] !== undefined) return { name: m[1]!, special: m[4] as 'RESTART' | 'JUSTRETURN' };
  return { name: m[1]!, value: Number(m[2]) };
}

/** Parse a NAMI body: a quoted path. */
export function parseKdumpNamei(body: string): string | undefined {
  const m = /^"(.*)"$/.exec(body.trim());
  return m ? m[1] : undefined;
}

/** A socket address from a STRU record. */
export interface KdumpSockaddr {
  family: 'inet' | 'inet6' | 'unix' | 'other';
  address?: string;
  port?: number;
  path?: string;
}

/** Parse a STRU body `struct sockaddr { AF_INET, 127.0.0.1:8080 }`; other structures give undefined. */
export function parseKdumpSockaddr(body: string): KdumpSockaddr | undefined {
  const m = /^struct sockaddr \{ (AF_[A-Z0-9]+|<invalid=\d+>), (.*) \}$/.exec(body.trim());
  if (!m) return undefined;
  const family = m[1]!;
  const value = m[2]!;
  if (family === 'AF_INET') {
    const a = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d+)$/.exec(value);
    return a ? { family: 'inet', address: a[1]!, port: Number(a[2]) } : undefined;
  }
  if (family === 'AF_INET6') {
    const a = /^\[([0-9a-fA-F:.%a-z]+)\]:(\d+)$/.exec(value);
    return a ? { family: 'inet6', address: a[1]!, port: Number(a[2]) } : undefined;
  }
  if (family === 'AF_UNIX' || family === 'AF_LOCAL') return value === '' ? { family: 'unix' } : { family: 'unix', path: value };
  return { family: 'other' };
}

// ---------------------------------------------------------------------------------------------
// Interpreting a kdump trace.
//
// kdump prints a call as a CALL record, then NAMI (looked-up paths) and STRU (socket addresses)
// records, then a RET record, all tagged with the thread id; calls of different threads
// interleave, so pending calls are kept per thread.

/** How the program used one path, before the destination's stat fills in kind and size. */
export interface PathUse {
  access: Set<FileUse['access'][number]>;
  sharedLibrary: boolean;
  /** Kind known from how it was used (a fifo made by mkfifo, a directory from procstat). */
  kindHint?: FileUse['kind'];
  /** True when the program certainly created it (O_CREAT|O_EXCL succeeded, mkfifo). */
  created?: boolean;
  /** How the profiler saw it: traced (ktrace), held open (procstat -f) or mapped (procstat -v, the text). */
  reasons?: Set<FileReason>;
}

/** Everything a trace (or a snapshot) says the program used. */
export interface Observations {
  files: Map<string, PathUse>;
  sockets: SocketUse[];
  ipc: IpcUse[];
  processes: ProcessInfo[];
  /** The first program the traced process executed. */
  executable?: string;
  /** Absolute paths looked up by calls that failed (open, execve, chdir, stat, access): not uses. */
  probes?: string[];
  notes: string[];
  /** Records read (reported as progress). */
  events: number;
}

/** FreeBSD open(2) flag bits (sys/fcntl.h). */
const O_ACCMODE = 0x3;
const O_WRONLY = 0x1;
const O_RDWR = 0x2;
const O_APPEND = 0x8;
const O_CREAT = 0x200;
const O_TRUNC = 0x400;
const O_EXCL = 0x800;
/** `AT_FDCWD` on FreeBSD. */
const AT_FDCWD = -100;
/** errno EINPROGRESS on FreeBSD: a non-blocking connect that is under way still uses the address. */
const EINPROGRESS = 36;
/** Address families and socket types (sys/socket.h). */
const PF_LOCAL = 1;
const PF_INET = 2;
const PF_INET6 = 28;
const SOCK_TYPE_MASK = 0x0fffffff; // strips SOCK_CLOEXEC / SOCK_NONBLOCK

/** Record a use of a path, merging with earlier ones. */
export function addPathUse(
  files: Map<string, PathUse>,
  p: string,
  access: FileUse['access'][number],
  extra: Partial<Omit<PathUse, 'access' | 'reasons'>> & { reason?: FileReason } = {},
): void {
  const normal = path.posix.normalize(p);
  const entry = files.get(normal) ?? { access: new Set(), sharedLibrary: false };
  entry.access.add(access);
  entry.sharedLibrary ||= extra.sharedLibrary ?? false;
  if (extra.kindHint && !entry.kindHint) entry.kindHint = extra.kindHint;
  if (extra.created) entry.created = true;
  if (extra.reason) (entry.reasons ??= new Set()).add(extra.reason);
  files.set(normal, entry);
}

/** FreeBSD errno values of a failed lookup that are not a probe: EEXIST (it is there), EINTR, EAGAIN. */
const NOT_PROBE_ERRNO = new Set([17, 4, 35]);

/** True for FreeBSD shared objects and the run-time linker. */
export function isFreeBsdSharedLibrary(p: string): boolean {
  const base = path.posix.basename(p);
  return /^ld-elf(32)?\.so\.\d+$/.test(base) || /\.so(\.\d+)*$/.test(base);
}

/** How an open(2)/openat(2) flags value uses the file. */
export function accessFromFreeBsdOpenFlags(flags: number): Array<'read' | 'write'> {
  const mode = flags & O_ACCMODE;
  const out: Array<'read' | 'write'> = mode === O_WRONLY ? ['write'] : mode === O_RDWR ? ['read', 'write'] : ['read'];
  if (mode === 0 && (flags & (O_TRUNC | O_CREAT | O_APPEND)) !== 0) out.push('write');
  return out;
}

/** SysV keys are 32-bit: kdump prints the register, so fold values above 2^31 back to ipcs' signed form. */
function signedKey(v: number): number {
  return v > 0x7fffffff && v <= 0xffffffff ? v - 0x100000000 : v;
}

interface SocketState {
  domain: number;
  type: number;
  protocol: number;
  bound?: KdumpSockaddr;
  remote?: KdumpSockaddr;
  listening: boolean;
}

/** A CALL record and the NAMI and STRU records that followed it, waiting for its RET. */
interface Pending {
  pid: number;
  call: KdumpCall;
  namei: string[];
  sockaddrs: KdumpSockaddr[];
  line: number;
}

/** A call whose records are all read: what it looked up and passed, and how it returned. */
interface FinishedCall {
  pid: number;
  call: KdumpCall;
  /** Paths looked up (NAMI records), in order: an execve names its program, then its interpreters. */
  namei: string[];
  /** Socket addresses passed (STRU records). */
  sockaddrs: KdumpSockaddr[];
  /** Undefined when no RET came: a successful execve (the old image is gone) and exit never return. */
  ret: KdumpReturn | undefined;
  /** Failed with an errno; a non-blocking connect under way (EINPROGRESS) still uses the address. */
  failed: boolean;
}

const COMMAND = 'kdump -H -n -d';

/**
 * What a kdump trace showed so far: the uses found, and per process its working directory and
 * socket descriptors. Records are read in order; the handlers in {@link CALL_HANDLERS} update it
 * as each call completes.
 */
class KdumpTrace {
  readonly files = new Map<string, PathUse>();
  readonly ipc: IpcUse[] = [];
  readonly notes = new Set<string>();
  readonly processes = new Map<number, ProcessInfo>();
  /** Every socket created, in order (closing one only drops its descriptor). */
  readonly sockets: SocketState[] = [];
  /** The first program executed. */
  executable: string | undefined;
  /** openat(2) calls relative to a directory descriptor: kdump prints only the name, so the path is unknown. */
  unresolvedAt = 0;
  private events = 0;
  private readonly probes = new Set<string>();
  private readonly cwdByPid = new Map<number, string>();
  private readonly fdTables = new Map<number, Map<number, SocketState>>();
  /** The open call of each thread: calls of different threads interleave. */
  private readonly pending = new Map<number, Pending>();

  constructor(private readonly initialCwd: string) {}

  /** Read one record; a record without its documented shape is an error naming its line. */
  read(r: KdumpRecord): FreeBsdParseError | undefined {
    this.events++;
    if (!this.processes.has(r.pid)) this.noteProcess(r.pid);
    switch (r.type) {
      case 'CALL':
        return this.readCall(r);
      case 'NAMI':
        return this.readNamei(r);
      case 'STRU':
        return this.readStruct(r);
      case 'RET':
        return this.readReturn(r);
      default:
        return undefined; // PSIG, CSW, CAP, ... carry no resource use.
    }
  }

  /** Everything the trace showed; calls still pending at its end never returned (exit, a successful execve). */
  observations(): Observations {
    for (const p of this.pending.values()) this.finish(p, undefined);
    this.pending.clear();
    if (this.unresolvedAt > 0) this.notes.add(`${this.unresolvedAt} openat(2) calls relative to a directory descriptor could not be resolved to a path and were left out.`);
    const sockets: SocketUse[] = [];
    for (const s of this.sockets) {
      const use = socketUse(s);
      if (use) sockets.push(use);
    }
    return {
      files: this.files,
      sockets,
      ipc: this.ipc,
      processes: [...this.processes.values()],
      ...(this.executable !== undefined ? { executable: this.executable } : {}),
      probes: [...this.probes],
      notes: [...this.notes],
      events: this.events,
    };
  }

  /** Absolute form of `name` as process `pid` meant it (relative to its working directory). */
  resolve(pid: number, name: string): string {
    return path.posix.resolve(this.cwdOf(pid), name);
  }

  setCwd(pid: number, dir: string): void {
    this.cwdByPid.set(pid, dir);
  }

  /** A failed lookup of `name` (relative to the cwd, or to a descriptor: then dropped) is a probe. */
  probe(pid: number, name: string | undefined, dirfd: number | undefined, errno: number | undefined): void {
    if (name === undefined || name === '' || errno === undefined || NOT_PROBE_ERRNO.has(errno)) return;
    if (!name.startsWith('/') && dirfd !== undefined && dirfd !== AT_FDCWD) return;
    if (this.probes.size < 10_000) this.probes.add(this.resolve(pid, name));
    else this.notes.add('The program looked for more than 10000 paths it did not find: the rest are not listed in probes.');
  }

  /** The socket descriptors of `pid`. */
  socketsOf(pid: number): Map<number, SocketState> {
    let table = this.fdTables.get(pid);
    if (!table) this.fdTables.set(pid, (table = new Map()));
    return table;
  }

  /** A new process starts in its parent's directory, with copies of its descriptors. */
  forked(parent: number, child: number): void {
    this.noteProcess(child, parent);
    this.cwdByPid.set(child, this.cwdOf(parent));
    this.fdTables.set(child, new Map(this.socketsOf(parent)));
  }

  private cwdOf(pid: number): string {
    return this.cwdByPid.get(pid) ?? this.initialCwd;
  }

  private noteProcess(pid: number, ppid?: number): void {
    const before = this.processes.get(pid) ?? { pid };
    this.processes.set(pid, { ...before, ...(ppid !== undefined ? { ppid } : {}) });
  }

  private readCall(r: KdumpRecord): FreeBsdParseError | undefined {
    const call = parseKdumpCall(r.body);
    if (!call) return new FreeBsdParseError(COMMAND, r.line, r.body, 'CALL record is not "name(number,...)"');
    // A thread that makes a new call is done with the previous one, RET or not.
    const before = this.pending.get(r.tid);
    if (before) this.finish(before, undefined);
    this.pending.set(r.tid, { pid: r.pid, call, namei: [], sockaddrs: [], line: r.line });
    return undefined;
  }

  private readNamei(r: KdumpRecord): FreeBsdParseError | undefined {
    const name = parseKdumpNamei(r.body);
    if (name === undefined) return new FreeBsdParseError(COMMAND, r.line, r.body, 'NAMI record is not a quoted path');
    const p = this.pending.get(r.tid);
    if (!p) return new FreeBsdParseError(COMMAND, r.line, r.body, 'NAMI record outside a system call');
    p.namei.push(name);
    return undefined;
  }

  private readStruct(r: KdumpRecord): FreeBsdParseError | undefined {
    const addr = parseKdumpSockaddr(r.body);
    // Other structures (stat, ...) carry nothing we use; a socket address we cannot read is an error.
    if (r.body.trim().startsWith('struct sockaddr') && !addr) return new FreeBsdParseError(COMMAND, r.line, r.body, 'unknown sockaddr format');
    if (addr) this.pending.get(r.tid)?.sockaddrs.push(addr);
    return undefined;
  }

  private readReturn(r: KdumpRecord): FreeBsdParseError | undefined {
    const ret = parseKdumpReturn(r.body);
    if (!ret) return new FreeBsdParseError(COMMAND, r.line, r.body, 'RET record is not "name value" or "name -1 errno N"');
    const p = this.pending.get(r.tid);
    this.pending.delete(r.tid);
    // A RET without its CALL is the first record of a fork child, or ktrace(2) itself returning.
    if (!p) return undefined;
    if (p.call.name !== ret.name) return new FreeBsdParseError(COMMAND, r.line, r.body, `RET of ${ret.name} while ${p.call.name} was pending`);
    this.finish(p, ret);
    return undefined;
  }

  private finish(p: Pending, ret: KdumpReturn | undefined): void {
    const failed = ret?.errno !== undefined && !(p.call.name === 'connect' && ret.errno === EINPROGRESS);
    CALL_HANDLERS.get(p.call.name)?.(this, { pid: p.pid, call: p.call, namei: p.namei, sockaddrs: p.sockaddrs, ret, failed });
  }
}

/** Applies one completed call to the trace. */
type CallHandler = (trace: KdumpTrace, c: FinishedCall) => void;

function onOpen(t: KdumpTrace, c: FinishedCall): void {
  const target = c.namei[0];
  const at = c.call.name === 'openat';
  const dirfd = at ? c.call.args[0] : AT_FDCWD;
  if (c.failed) return t.probe(c.pid, target, dirfd, c.ret?.errno);
  if (c.ret === undefined || target === undefined) return;
  const flags = (at ? c.call.args[2] : c.call.args[1]) ?? 0;
  if (!target.startsWith('/') && dirfd !== AT_FDCWD) {
    t.unresolvedAt++;
    return;
  }
  const abs = t.resolve(c.pid, target);
  const created = (flags & (O_CREAT | O_EXCL)) === (O_CREAT | O_EXCL);
  for (const a of accessFromFreeBsdOpenFlags(flags)) addPathUse(t.files, abs, a, { sharedLibrary: isFreeBsdSharedLibrary(abs), created, reason: 'traced' });
}

/** stat(2), access(2) and the like: no use when they succeed, a probe when they fail. `dirArg` is the index of a `*at` call's directory. */
function lookup(dirArg?: number): CallHandler {
  return (t, c) => {
    if (c.failed) t.probe(c.pid, c.namei[0], dirArg === undefined ? AT_FDCWD : c.call.args[dirArg], c.ret?.errno);
  };
}

function onExecve(t: KdumpTrace, c: FinishedCall): void {
  if (c.failed) return t.probe(c.pid, c.namei[0], AT_FDCWD, c.ret?.errno);
  const [program, ...interpreters] = c.namei.map((n) => t.resolve(c.pid, n));
  if (program === undefined) return;
  addPathUse(t.files, program, 'exec', { reason: 'traced' });
  for (const i of interpreters) addPathUse(t.files, i, 'exec', { sharedLibrary: isFreeBsdSharedLibrary(i), reason: 'traced' });
  t.executable ??= program;
  t.processes.set(c.pid, { ...(t.processes.get(c.pid) ?? { pid: c.pid }), executable: program });
}

function onChdir(t: KdumpTrace, c: FinishedCall): void {
  if (c.failed) return t.probe(c.pid, c.namei[0], AT_FDCWD, c.ret?.errno);
  if (c.ret === undefined || c.namei[0] === undefined) return;
  t.setCwd(c.pid, t.resolve(c.pid, c.namei[0]));
}

function onFchdir(t: KdumpTrace, c: FinishedCall): void {
  if (!c.failed) t.notes.add('The program changed directory with fchdir(2); later relative paths may be resolved against the wrong directory.');
}

function onFork(t: KdumpTrace, c: FinishedCall): void {
  const child = c.ret?.value;
  if (c.failed || child === undefined || child <= 0) return;
  t.forked(c.pid, child);
}

function onMkfifo(t: KdumpTrace, c: FinishedCall): void {
  if (c.failed || c.ret === undefined || c.namei[0] === undefined) return;
  addPathUse(t.files, t.resolve(c.pid, c.namei[0]), 'write', { kindHint: 'fifo', created: true, reason: 'traced' });
}

function onSocket(t: KdumpTrace, c: FinishedCall): void {
  const fd = c.ret?.value;
  if (c.failed || fd === undefined) return;
  const [domain = 0, type = 0, protocol = 0] = c.call.args;
  const s: SocketState = { domain, type: type & SOCK_TYPE_MASK, protocol, listening: false };
  t.sockets.push(s);
  t.socketsOf(c.pid).set(fd, s);
}

/** bind(2) and connect(2): the address goes to the socket on that descriptor. */
function onAddress(t: KdumpTrace, c: FinishedCall): void {
  if (c.failed || c.ret === undefined) return;
  const s = t.socketsOf(c.pid).get(c.call.args[0] ?? -1);
  const addr = c.sockaddrs[0];
  if (!s || !addr) return;
  if (c.call.name === 'bind') s.bound = addr;
  else s.remote = addr;
}

function onListen(t: KdumpTrace, c: FinishedCall): void {
  if (c.failed || c.ret === undefined) return;
  const s = t.socketsOf(c.pid).get(c.call.args[0] ?? -1);
  if (s) s.listening = true;
}

function onClose(t: KdumpTrace, c: FinishedCall): void {
  if (!c.failed) t.socketsOf(c.pid).delete(c.call.args[0] ?? -1);
}

/** shmget(2), semget(2), msgget(2): the object's key and the id it got. */
function onSysvGet(t: KdumpTrace, c: FinishedCall): void {
  const id = c.ret?.value;
  if (c.failed || id === undefined) return;
  const [rawKey = 0, size] = c.call.args;
  const key = signedKey(rawKey);
  if (c.call.name === 'shmget') t.ipc.push({ kind: 'sysv-shm', key, id, ...(size !== undefined ? { size } : {}) });
  else t.ipc.push({ kind: c.call.name === 'semget' ? 'sysv-sem' : 'sysv-msg', key, id });
}

/** shmat(2), semop(2), msgsnd(2) ...: a use of an object by id (its key may come from a get elsewhere). */
function onSysvUse(t: KdumpTrace, c: FinishedCall): void {
  const id = c.call.args[0];
  if (c.failed || c.ret === undefined || id === undefined) return;
  const kind = c.call.name === 'shmat' ? 'sysv-shm' : c.call.name.startsWith('msg') ? 'sysv-msg' : 'sysv-sem';
  t.ipc.push({ kind, id });
}

function onPosixIpcByName(t: KdumpTrace, c: FinishedCall): void {
  if (!c.failed) t.notes.add('POSIX message queues and shared memory opened by name are seen in the trace but their names are not decoded; profile the running program (attach) to list them.');
}

/** What each system call means for the profile; calls not listed carry no resource use. */
const CALL_HANDLERS: ReadonlyMap<string, CallHandler> = new Map(
  Object.entries({
    open: onOpen,
    openat: onOpen,
    access: lookup(),
    eaccess: lookup(),
    stat: lookup(),
    lstat: lookup(),
    fstatat: lookup(0),
    faccessat: lookup(0),
    execve: onExecve,
    chdir: onChdir,
    fchdir: onFchdir,
    fork: onFork,
    vfork: onFork,
    rfork: onFork,
    pdfork: onFork,
    mkfifo: onMkfifo,
    mkfifoat: onMkfifo,
    socket: onSocket,
    bind: onAddress,
    connect: onAddress,
    listen: onListen,
    close: onClose,
    shmget: onSysvGet,
    semget: onSysvGet,
    msgget: onSysvGet,
    shmat: onSysvUse,
    semop: onSysvUse,
    __semctl: onSysvUse,
    msgsnd: onSysvUse,
    msgrcv: onSysvUse,
    kmq_open: onPosixIpcByName,
    shm_open: onPosixIpcByName,
    shm_open2: onPosixIpcByName,
  }),
);

/** Interpret kdump records. `initialCwd` is where the program was started. */
export function interpretKdump(records: readonly KdumpRecord[], initialCwd: string): Result<Observations, FreeBsdParseError> {
  const trace = new KdumpTrace(initialCwd);
  for (const r of records) {
    const failure = trace.read(r);
    if (failure) return err(failure);
  }
  return ok(trace.observations());
}

function socketUse(s: SocketState): SocketUse | undefined {
  if (s.domain === PF_LOCAL) {
    const protocol = s.type === 1 ? 'stream' : s.type === 2 ? 'dgram' : s.type === 5 ? 'seqpacket' : 'other';
    const p = s.bound?.path ?? s.remote?.path;
    if (p === undefined) return undefined;
    return { family: 'unix-path', protocol, path: p, listening: s.listening && s.bound?.path !== undefined };
  }
  if (s.domain !== PF_INET && s.domain !== PF_INET6) return undefined;
  if (!s.bound && !s.remote && !s.listening) return undefined;
  const family = s.domain === PF_INET ? 'inet' : 'inet6';
  const protocol = s.protocol === 6 || (s.protocol === 0 && s.type === 1) ? 'tcp' : s.protocol === 17 || (s.protocol === 0 && s.type === 2) ? 'udp' : s.type === 3 ? 'raw' : 'other';
  return {
    family,
    protocol,
    ...(s.bound?.address !== undefined ? { localAddress: s.bound.address } : {}),
    ...(s.bound?.port !== undefined ? { localPort: s.bound.port } : {}),
    ...(s.remote?.address !== undefined ? { remoteAddress: s.remote.address } : {}),
    ...(s.remote?.port !== undefined ? { remotePort: s.remote.port } : {}),
    listening: s.listening,
  };
}
