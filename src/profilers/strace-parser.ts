/**
 * Parser for the text `strace -f -yy -o FILE` writes: one call per line, prefixed with the pid,
 * calls split across lines as `<unfinished ...>` / `<... name resumed>`, C-style quoted strings,
 * and `-yy` decorations (`3</etc/passwd>`, `AT_FDCWD</tmp>`, `4<TCP:[127.0.0.1:80]>`).
 * Pure: no I/O, so it is unit-tested on literal lines.
 *
 * @module
 */

/** One finished system call. */
export interface StraceCall {
  /** Thread id that made the call (strace -f prints it first). */
  pid: number;
  /** System call name, e.g. `openat`. */
  name: string;
  /** Top-level arguments, still in strace's notation. */
  args: string[];
  /** The text after ` = `, e.g. `3</etc/passwd>` or `-1 ENOENT (No such file or directory)`. */
  result: string;
  /** The numeric return value, when there is one. */
  retval?: number;
  /** The `-yy` decoration of the returned descriptor, unescaped (a path or `TCP:[...]`). */
  retDecoration?: string;
  /** The errno name when the call failed (`ENOENT`), else undefined. */
  errno?: string;
}

/** A process or thread ended. */
export interface StraceExit {
  pid: number;
  /** Exit status, or undefined when killed by a signal. */
  code?: number;
  /** The signal that killed it. */
  signal?: string;
}

/** What one line of strace output turned out to be. */
export type StraceEvent = { type: 'call'; call: StraceCall } | { type: 'exit'; exit: StraceExit };

/**
 * Turns lines into events. Keeps the first half of each unfinished call (per pid) until its
 * `resumed` line arrives; a half that never resumes (the thread died) is dropped.
 */
export class StraceLineParser {
  private readonly pending = new Map<number, string>();
  /** Lines that could not be understood (kept for diagnostics, at most 20). */
  readonly unparsed: string[] = [];

  /** Parse one line; undefined for signals, unfinished halves and lines without meaning to us. */
  push(line: string): StraceEvent | undefined {
    const m = /^(\d+)\s+(.*)$/.exec(line);
    const pid = m ? Number(m[1]) : 0;
    let text = m ? m[2]! : line;
    if (text.startsWith('---') || text === '') return undefined;
    if (text.startsWith('+++')) {
      const exited = /^\+\+\+ exited with (\d+) \+\+\+$/.exec(text);
      if (exited) return { type: 'exit', exit: { pid, code: Number(exited[1]) } };
      const killed = /^\+\+\+ killed by (\S+)/.exec(text);
      return killed ? { type: 'exit', exit: { pid, signal: killed[1]! } } : undefined;
    }
    const resumed = /^<\.\.\. ([\w]+) resumed>(.*)$/.exec(text);
    if (resumed) {
      const first = this.pending.get(pid);
      this.pending.delete(pid);
      if (first === undefined) return this.reject(line);
      text = first + resumed[2]!;
    } else if (text.endsWith('<unfinished ...>')) {
      this.pending.set(pid, text.slice(0, -'<unfinished ...>'.length).trimEnd());
      return undefined;
    }
    const call = parseCallText(pid, text);
    return call ? { type: 'call', call } : this.reject(line);
  }

  private reject(line: string): undefined {
    if (this.unparsed.length < 20) this.unparsed.push(line);
    return undefined;
  }
}

/** Parse `name(args) = result` (one whole call). */
export function parseCallText(pid: number, text: string): StraceCall | undefined {
  const open = text.indexOf('(');
  if (open <= 0) return undefined;
  const name = text.slice(0, open);
  if (!/^\w+$/.test(name)) return undefined;
  const close = findClosing(text, open);
  if (close < 0) return undefined;
  const rest = /^\s*=\s*(.*)$/.exec(text.slice(close + 1));
  if (!rest) return undefined;
  const result = rest[1]!.trim();
  const call: StraceCall = { pid, name, args: splitArgs(text.slice(open + 1, close)), result };
  const ret = /^(-?\d+|0x[0-9a-f]+)(?:<(.*)>)?(?:\s+(E[A-Z0-9]+)\b)?/.exec(result);
  if (ret) {
    call.retval = ret[1]!.startsWith('0x') ? Number.parseInt(ret[1]!, 16) : Number(ret[1]);
    if (ret[2] !== undefined) call.retDecoration = unescapeC(ret[2]);
    if (ret[3] !== undefined) call.errno = ret[3];
  } else if (result.startsWith('?')) {
    call.errno = 'UNKNOWN';
  }
  return call;
}

/** True when `c` opens a `-yy` decoration: after a descriptor number or `AT_FDCWD`. */
function startsDecoration(text: string, i: number): boolean {
  if (text[i] !== '<') return false;
  const before = text.slice(Math.max(0, i - 8), i);
  return /\d$/.test(before) || before.endsWith('AT_FDCWD');
}

/** Index of the `)` that closes the `(` at `open`, skipping strings, decorations and nesting. */
function findClosing(text: string, open: number): number {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') i = skipQuoted(text, i, '"');
    else if (startsDecoration(text, i)) i = skipQuoted(text, i, '>');
    else if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      depth--;
      if (depth === 0 && c === ')') return i;
    }
  }
  return -1;
}

/** Index of the unescaped `end` after position `start`. */
function skipQuoted(text: string, start: number, end: string): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === end) return i;
  }
  return text.length;
}

/** Split an argument list at top-level commas. */
export function splitArgs(text: string): string[] {
  const args: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') i = skipQuoted(text, i, '"');
    else if (startsDecoration(text, i)) i = skipQuoted(text, i, '>');
    else if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    else if (c === ',' && depth === 0) {
      args.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  const last = text.slice(start).trim();
  if (last !== '' || args.length > 0) args.push(last);
  return args;
}

/** Undo C escapes (`\n`, `\"`, `\\`, `\x41`, `\101`) and decode the bytes as UTF-8. */
export function unescapeC(text: string): string {
  const bytes: number[] = [];
  const simple: Record<string, number> = { n: 10, t: 9, r: 13, v: 11, f: 12, a: 7, b: 8, e: 27, '\\': 92, '"': 34, "'": 39, '?': 63 };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c !== '\\' || i + 1 >= text.length) {
      bytes.push(...Buffer.from(c, 'utf8'));
      continue;
    }
    const next = text[i + 1]!;
    const hex = /^x([0-9a-fA-F]{1,2})/.exec(text.slice(i + 1, i + 4));
    const octal = /^[0-7]{1,3}/.exec(text.slice(i + 1, i + 4));
    if (hex) {
      bytes.push(Number.parseInt(hex[1]!, 16));
      i += hex[0].length;
    } else if (octal) {
      bytes.push(Number.parseInt(octal[0], 8) & 0xff);
      i += octal[0].length;
    } else {
      bytes.push(simple[next] ?? next.charCodeAt(0));
      i += 1;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** The string of a quoted argument (`"a\"b"` or `"abc"...` when truncated); undefined if not quoted. */
export function parseQuoted(arg: string): string | undefined {
  const m = /^@?"((?:[^"\\]|\\.)*)"(\.\.\.)?$/s.exec(arg.trim());
  return m ? unescapeC(m[1]!) : undefined;
}

/** A descriptor argument with its `-yy` decoration: `3</etc/passwd>`, `AT_FDCWD</tmp>`. */
export interface DecoratedFd {
  /** The descriptor number, or `AT_FDCWD`. */
  fd: number | 'AT_FDCWD';
  /** The decoration, unescaped: a path, or `TCP:[...]` and the like. */
  decoration?: string;
}

/** Parse a descriptor argument; undefined when it is not one. */
export function parseFdArg(arg: string): DecoratedFd | undefined {
  const m = /^(-?\d+|AT_FDCWD)(?:<(.*)>)?$/s.exec(arg.trim());
  if (!m) return undefined;
  const fd = m[1] === 'AT_FDCWD' ? 'AT_FDCWD' : Number(m[1]);
  return m[2] !== undefined ? { fd, decoration: unescapeC(m[2]) } : { fd };
}

/** A string array argument such as execve's argv: `["ls", "-l"]`, possibly ending in `...`. */
export function parseStringArray(arg: string): string[] | undefined {
  const t = arg.trim();
  if (!t.startsWith('[') || !t.endsWith(']')) return undefined;
  return splitArgs(t.slice(1, -1))
    .map(parseQuoted)
    .filter((s): s is string => s !== undefined);
}

/** A socket address as strace prints it, reduced to what a profile needs. */
export interface ParsedSockaddr {
  family: 'inet' | 'inet6' | 'unix-path' | 'unix-abstract' | 'netlink' | 'other';
  address?: string;
  port?: number;
  /** Path (unix-path) or abstract name without the leading NUL (unix-abstract). */
  path?: string;
}

/** Parse `{sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("1.2.3.4")}` and friends. */
export function parseSockaddr(arg: string): ParsedSockaddr | undefined {
  const family = /sa_family=(\w+)/.exec(arg)?.[1];
  if (!family) return undefined;
  const port = /sin6?_port=htons\((\d+)\)/.exec(arg)?.[1];
  switch (family) {
    case 'AF_INET': {
      const address = /inet_addr\("([^"]*)"\)/.exec(arg)?.[1];
      return { family: 'inet', ...(address !== undefined ? { address } : {}), ...(port !== undefined ? { port: Number(port) } : {}) };
    }
    case 'AF_INET6': {
      const address = /inet_pton\(AF_INET6, "([^"]*)"/.exec(arg)?.[1];
      return { family: 'inet6', ...(address !== undefined ? { address } : {}), ...(port !== undefined ? { port: Number(port) } : {}) };
    }
    case 'AF_UNIX': {
      const m = /sun_path=(@?)("(?:[^"\\]|\\.)*")/.exec(arg);
      if (!m) return { family: 'unix-path' };
      const p = parseQuoted(m[2]!) ?? '';
      return m[1] === '@' ? { family: 'unix-abstract', path: p } : { family: 'unix-path', path: p };
    }
    case 'AF_NETLINK':
      return { family: 'netlink' };
    default:
      return { family: 'other' };
  }
}

/** What a socket decoration (`TCP:[...]`, `UNIX-STREAM:[...]`) says about the socket. */
export interface SocketDecoration {
  protocol: 'tcp' | 'udp' | 'stream' | 'dgram' | 'seqpacket' | 'raw' | 'other';
  family?: 'inet' | 'inet6' | 'unix' | 'netlink';
  /** Inode, when the socket has no address yet. */
  inode?: number;
  /** Local address and port (`127.0.0.1:80`, `[::]:80`). */
  localAddress?: string;
  localPort?: number;
  /** Peer, for connected inet sockets. */
  remoteAddress?: string;
  remotePort?: number;
  /** Unix socket path (a leading `@` marks an abstract name). */
  path?: string;
}

/** Parse a socket decoration; undefined when it is a plain path. */
export function parseSocketDecoration(decoration: string): SocketDecoration | undefined {
  const m = /^([A-Z0-9v-]+):\[(.*)\]$/s.exec(decoration);
  if (!m) return undefined;
  const label = m[1]!;
  const body = m[2]!;
  const base: SocketDecoration = label.startsWith('TCP')
    ? { protocol: 'tcp', family: label.endsWith('v6') ? 'inet6' : 'inet' }
    : label.startsWith('UDP')
      ? { protocol: 'udp', family: label.endsWith('v6') ? 'inet6' : 'inet' }
      : label.startsWith('UNIX')
        ? { protocol: label.endsWith('DGRAM') ? 'dgram' : label.endsWith('SEQPACKET') ? 'seqpacket' : 'stream', family: 'unix' }
        : label === 'NETLINK'
          ? { protocol: 'other', family: 'netlink' }
          : { protocol: label.startsWith('RAW') ? 'raw' : 'other' };
  if (/^\d+$/.test(body)) return { ...base, inode: Number(body) };
  if (base.family === 'unix') {
    const u = /^(\d+)(?:,(".*"))?/.exec(body);
    const p = u?.[2] ? parseQuoted(u[2]) : undefined;
    return { ...base, ...(u ? { inode: Number(u[1]) } : {}), ...(p !== undefined ? { path: p } : {}) };
  }
  const [local = '', remote] = body.split('->');
  const hostPort = (s: string) => {
    const hp = /^\[?(.*?)\]?:(\d+)$/.exec(s);
    return hp ? { address: hp[1]!, port: Number(hp[2]) } : undefined;
  };
  const l = hostPort(local);
  const r = remote !== undefined ? hostPort(remote) : undefined;
  return {
    ...base,
    ...(l ? { localAddress: l.address, localPort: l.port } : {}),
    ...(r ? { remoteAddress: r.address, remotePort: r.port } : {}),
  };
}
