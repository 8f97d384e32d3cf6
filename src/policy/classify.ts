/**
 * Classification: which resource classes (and finer resource kinds) a profile uses.
 *
 * The rules, in order (each is also returned as evidence so a plan can explain itself):
 *
 * 1. Every file use is class `file`, whatever its kind: regular files, directories, devices, the
 *    program's own binary, shared libraries, and **named pipes (FIFOs)**. The paper counts named
 *    pipes as files: they are reached by a path, so a private root hides them.
 * 2. A **path-bound unix socket** (`unix-path`) is a file-system object: it is reached by its path,
 *    so it is class `file` (kind `file`). File-system isolation decides who can reach it.
 * 3. **Abstract unix sockets** (`unix-abstract`) have no path; they live in the network
 *    namespace, so they are class `network`. So are `inet`, `inet6`, `netlink` and other sockets.
 * 4. **SysV** shared memory, semaphores and message queues are class `ipc` (kinds `sysv-shm`,
 *    `sysv-sem`, `sysv-msg`): their keys are one host-wide namespace that chroot cannot hide.
 * 5. **POSIX message queues** are class `ipc` (kind `posix-mq`): on Linux they live in the
 *    mqueue file system, which the IPC namespace (not chroot) separates; on FreeBSD in mqueuefs.
 * 6. **POSIX shared memory** depends on the platform. On Linux, `shm_open` is a file under
 *    `/dev/shm` (a tmpfs): a private root with its own `/dev/shm` isolates it, so it is class
 *    `file`. Elsewhere (FreeBSD) it is a kernel object outside the file system: class `ipc`,
 *    kind `posix-shm`.
 *
 * @module
 */
import type { FileUse, IpcUse, ResourceClass, ResourceProfile, SocketUse } from './profile.js';

/** Finer-grained kinds, so a capability matrix can say e.g. "jails isolate SysV IPC but not POSIX mq". */
export const RESOURCE_KINDS = ['file', 'network', 'sysv-shm', 'sysv-sem', 'sysv-msg', 'posix-mq', 'posix-shm'] as const;
/** A resource kind; each belongs to one {@link ResourceClass}. */
export type ResourceKind = (typeof RESOURCE_KINDS)[number];

/** Each kind in words, plural, for messages: `SysV shared memory`, `network sockets`. */
export const RESOURCE_KIND_LABELS: Readonly<Record<ResourceKind, string>> = {
  file: 'files',
  network: 'network sockets',
  'sysv-shm': 'SysV shared memory',
  'sysv-sem': 'SysV semaphores',
  'sysv-msg': 'SysV message queues',
  'posix-mq': 'POSIX message queues',
  'posix-shm': 'POSIX shared memory',
};

/** The class each kind belongs to. */
export const CLASS_OF_KIND: Readonly<Record<ResourceKind, ResourceClass>> = {
  file: 'file',
  network: 'network',
  'sysv-shm': 'ipc',
  'sysv-sem': 'ipc',
  'sysv-msg': 'ipc',
  'posix-mq': 'ipc',
  'posix-shm': 'ipc',
};

/** Identifiers of the classification rules above, used in evidence. */
export type ClassificationRule =
  | 'file-use'
  | 'executable'
  | 'unix-path-socket-is-file'
  | 'socket-is-network'
  | 'sysv-ipc'
  | 'posix-mq'
  | 'posix-shm-linux-is-file'
  | 'posix-shm-is-ipc';

/** Why a kind is in the set: the first use that put it there, and how many uses share it. */
export interface KindEvidence {
  kind: ResourceKind;
  resourceClass: ResourceClass;
  rule: ClassificationRule;
  /** A short description of the first use seen, e.g. `SysV shared memory key 0x00001234`. */
  example: string;
  /** The identifying part of `example` alone, e.g. `key 0x00001234`, `tcp 0.0.0.0:8080 (listening)`. */
  detail: string;
  /** How many uses fall under this kind. */
  count: number;
}

/** The result of {@link classifyProfile}. */
export interface Classification {
  /** Classes used, in the order file, network, ipc. */
  classes: ResourceClass[];
  /** Kinds used, in {@link RESOURCE_KINDS} order. */
  kinds: ResourceKind[];
  /** One entry per kind, explaining it. */
  evidence: KindEvidence[];
}

/** Describe a socket briefly for messages. */
export function describeSocket(s: SocketUse): string {
  if (s.family === 'unix-path' || s.family === 'unix-abstract') {
    const name = s.family === 'unix-abstract' ? `@${s.path ?? ''}` : (s.path ?? '?');
    return `unix ${s.protocol} ${name}${s.listening ? ' (listening)' : ''}`;
  }
  const local = s.localAddress !== undefined || s.localPort !== undefined ? `${s.localAddress ?? '*'}:${s.localPort ?? '*'}` : '';
  const remote = s.remoteAddress !== undefined ? ` -> ${s.remoteAddress}:${s.remotePort ?? '*'}` : '';
  return `${s.protocol} ${local}${remote}${s.listening ? ' (listening)' : ''}`.replace(/\s+/g, ' ').trim();
}

const IPC_LABEL: Record<IpcUse['kind'], string> = {
  'sysv-shm': 'SysV shared memory',
  'sysv-sem': 'SysV semaphore',
  'sysv-msg': 'SysV message queue',
  'posix-mq': 'POSIX message queue',
  'posix-shm': 'POSIX shared memory',
};

/** The identifier of an IPC object: `key 0x00001234`, `id 5` or its POSIX name. */
export function describeIpcIdentity(u: IpcUse): string {
  if (u.name !== undefined) return u.name;
  if (u.key !== undefined) return `key 0x${(u.key >>> 0).toString(16).padStart(8, '0')}`;
  return u.id !== undefined ? `id ${u.id}` : 'unnamed';
}

/** Describe an IPC object briefly, e.g. `SysV shared memory key 0x00001234`. */
export function describeIpc(u: IpcUse): string {
  return `${IPC_LABEL[u.kind]} ${describeIpcIdentity(u)}`;
}

function describeFile(f: FileUse): string {
  return `${f.kind === 'regular' ? '' : `${f.kind} `}${f.path}`;
}

function kindOfSocket(s: SocketUse): { kind: ResourceKind; rule: ClassificationRule } {
  return s.family === 'unix-path'
    ? { kind: 'file', rule: 'unix-path-socket-is-file' }
    : { kind: 'network', rule: 'socket-is-network' };
}

function kindOfIpc(u: IpcUse, os: string): { kind: ResourceKind; rule: ClassificationRule } {
  switch (u.kind) {
    case 'sysv-shm':
    case 'sysv-sem':
    case 'sysv-msg':
      return { kind: u.kind, rule: 'sysv-ipc' };
    case 'posix-mq':
      return { kind: 'posix-mq', rule: 'posix-mq' };
    case 'posix-shm':
      return os === 'linux' ? { kind: 'file', rule: 'posix-shm-linux-is-file' } : { kind: 'posix-shm', rule: 'posix-shm-is-ipc' };
  }
}

/**
 * Derive the resource classes and kinds a profile uses, with evidence for each.
 * Pure and linear in the number of uses. The program's own executable always counts as a file.
 */
export function classifyProfile(profile: ResourceProfile): Classification {
  const found = new Map<ResourceKind, KindEvidence>();
  const note = (kind: ResourceKind, rule: ClassificationRule, example: () => string, detail: () => string) => {
    const seen = found.get(kind);
    if (seen) seen.count += 1;
    else found.set(kind, { kind, resourceClass: CLASS_OF_KIND[kind], rule, example: example(), detail: detail(), count: 1 });
  };
  const exe = () => profile.executable;
  note('file', 'executable', exe, exe);
  for (const f of profile.files) note('file', 'file-use', () => describeFile(f), () => describeFile(f));
  for (const s of profile.sockets) {
    const { kind, rule } = kindOfSocket(s);
    note(kind, rule, () => describeSocket(s), () => describeSocket(s));
  }
  for (const u of profile.ipc) {
    const { kind, rule } = kindOfIpc(u, profile.platform.os);
    note(kind, rule, () => describeIpc(u), () => describeIpcIdentity(u));
  }
  const kinds = RESOURCE_KINDS.filter((k) => found.has(k));
  const classes = (['file', 'network', 'ipc'] as const).filter((c) => kinds.some((k) => CLASS_OF_KIND[k] === c));
  return { classes, kinds, evidence: kinds.map((k) => found.get(k)!) };
}
