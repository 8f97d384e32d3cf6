/**
 * The resource model: what a program uses, as a profiler reports it.
 *
 * A {@link ResourceProfile} is plain JSON-compatible data, validated by {@link ResourceProfileSchema}.
 * Profilers produce it; the planner, packagers and deployers consume it.
 *
 * @module
 */
import { z } from 'zod';
import { envProblems, normalizeAbsolutePath } from './safe-input.js';

/** The paper's three resource classes. */
export const RESOURCE_CLASSES = ['file', 'network', 'ipc'] as const;
/** A resource class: files (incl. devices, pipes, the binary, libraries), network sockets, or IPC. */
export type ResourceClass = (typeof RESOURCE_CLASSES)[number];

/** Current version of the profile format. */
export const PROFILE_FORMAT_VERSION = 1 as const;

/**
 * Why a file is in the profile: the profiler saw it held open, mapped or used (traced); or the
 * capture rules added it: it belongs to the program's package, is named in its argv or config,
 * lies in a data root, or the user included it.
 */
export const FILE_REASONS = ['held-open', 'mapped', 'traced', 'package', 'config', 'data-root', 'user-included'] as const;
/** Why a file is in the profile. */
export type FileReason = (typeof FILE_REASONS)[number];

/** Kinds of file-system object a program can use. */
export const FILE_KINDS = ['regular', 'directory', 'symlink', 'fifo', 'unix-socket', 'device', 'unknown'] as const;
/** How a program used a file. */
export const FILE_ACCESS = ['read', 'write', 'exec'] as const;
/** Socket address families. `unix-path` is bound to a file-system path; `unix-abstract` is not. */
export const SOCKET_FAMILIES = ['inet', 'inet6', 'unix-path', 'unix-abstract', 'netlink', 'other'] as const;
/** Socket protocols (transport for inet; socket type for unix). */
export const SOCKET_PROTOCOLS = ['tcp', 'udp', 'stream', 'dgram', 'seqpacket', 'raw', 'other'] as const;
/** Kinds of inter-process communication object. */
export const IPC_KINDS = ['sysv-shm', 'sysv-sem', 'sysv-msg', 'posix-mq', 'posix-shm'] as const;

const nonNegativeInt = z.number().int().nonnegative();

/**
 * An absolute path from the source, normalised (`//`, `.` and a trailing `/` removed); one with
 * `..`, NUL or not absolute is refused, since deployers act on these paths inside the program's root.
 */
const absolutePath = z.string().transform((value, ctx) => {
  const n = normalizeAbsolutePath(value);
  if (n.ok) return n.path;
  ctx.issues.push({ code: 'custom', message: n.reason, input: value });
  return z.NEVER;
});

/** The program's environment: portable names, no NUL, bounded in size (see `safe-input.ts`). */
const environment = z.record(z.string(), z.string()).superRefine((env, ctx) => {
  for (const problem of envProblems(env)) {
    ctx.issues.push({ code: 'custom', message: `${problem.name ? `${JSON.stringify(problem.name)} ` : ''}${problem.reason}`, input: env, path: problem.name ? [problem.name] : [] });
  }
});
const port = z.number().int().min(0).max(65535);
/** A uid or gid: (uid_t)-1 is "no id" to the kernel, so the largest usable one is 2^32 - 2. */
const unixId = z.number().int().min(0).max(0xfffffffe);

/** Where a profile was taken: the operating system, its release and the machine architecture. */
export const PlatformSchema = z.object({
  /** Operating system, lower case: `linux`, `freebsd`, ... */
  os: z.string().min(1).regex(/^[a-z0-9_-]+$/, 'lower-case OS name such as "linux" or "freebsd"'),
  /** Kernel release as `uname -r` prints it, e.g. `9.2-RELEASE` or `6.1.0-18-amd64`. */
  release: z.string().min(1),
  /** Machine architecture as `uname -m` prints it, e.g. `x86_64` or `amd64`. */
  arch: z.string().min(1),
});
/** Where a profile was taken. */
export type Platform = z.infer<typeof PlatformSchema>;

/** One file-system object the program used. */
export const FileUseSchema = z.object({
  /** Absolute, normalised path as the program saw it. */
  path: absolutePath,
  kind: z.enum(FILE_KINDS),
  /** Every way the program used it (at least one). */
  access: z.array(z.enum(FILE_ACCESS)).min(1),
  /** Size in bytes when profiled (0 for non-regular files). */
  size: nonNegativeInt,
  /** True for shared libraries and the dynamic loader: the destination may supply its own. */
  sharedLibrary: z.boolean().default(false),
  /** True when the program created it (it did not exist before): it needs no transfer. */
  created: z.boolean().default(false),
  /** Link target, for symlinks. */
  linkTarget: z.string().optional(),
  /** Why it is there (see {@link FILE_REASONS}); empty or absent for hand-written profiles. */
  reasons: z.array(z.enum(FILE_REASONS)).optional(),
});
/** One file-system object the program used. */
export type FileUse = z.infer<typeof FileUseSchema>;

/** One socket the program held. */
export const SocketUseSchema = z.object({
  family: z.enum(SOCKET_FAMILIES),
  protocol: z.enum(SOCKET_PROTOCOLS),
  localAddress: z.string().optional(),
  localPort: port.optional(),
  remoteAddress: z.string().optional(),
  remotePort: port.optional(),
  /** File-system path (`unix-path`) or abstract name without the leading NUL (`unix-abstract`). */
  path: z.string().optional(),
  /** True when the program listened (accepted connections) on it. */
  listening: z.boolean().default(false),
});
/** One socket the program held. */
export type SocketUse = z.infer<typeof SocketUseSchema>;

/** One IPC object the program used. */
export const IpcUseSchema = z.object({
  kind: z.enum(IPC_KINDS),
  /** SysV key (`IPC_PRIVATE` is 0). */
  key: z.number().int().optional(),
  /** SysV identifier returned by `shmget`/`semget`/`msgget`. */
  id: nonNegativeInt.optional(),
  /** POSIX name, e.g. `/queue`. */
  name: z.string().optional(),
  /** Segment size in bytes, where known. */
  size: nonNegativeInt.optional(),
});
/** One IPC object the program used. */
export type IpcUse = z.infer<typeof IpcUseSchema>;

/** A directory that travels whole. */
export const TreeUseSchema = z.object({
  path: absolutePath,
  reason: z.enum(FILE_REASONS),
  /** Bytes and files measured when profiled (for the estimate). */
  bytes: nonNegativeInt.default(0),
  files: nonNegativeInt.default(0),
});
/** A directory that travels whole. */
export type TreeUse = z.infer<typeof TreeUseSchema>;

const accountName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/, 'a user or group name');
/** One /etc/passwd entry (no password: the destination root gets `x` and no shadow entry). */
export const UserEntrySchema = z.object({
  name: accountName,
  uid: unixId,
  gid: unixId,
  gecos: z.string().regex(/^[^:\n\0]*$/, 'no ":", newline or NUL').default(''),
  home: absolutePath,
  shell: absolutePath,
});
/** One /etc/passwd entry. */
export type UserEntry = z.infer<typeof UserEntrySchema>;
/** One /etc/group entry. */
export const GroupEntrySchema = z.object({ name: accountName, gid: unixId, members: z.array(accountName).default([]) });
/** One /etc/group entry. */
export type GroupEntry = z.infer<typeof GroupEntrySchema>;

/**
 * Resource limits by their `prlimit` name (`RLIMIT_NOFILE` is `nofile`). Profilers record
 * {@link CAPTURED_RLIMITS}; a hand-written profile may name any of these.
 */
export const RLIMIT_NAMES = ['as', 'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'] as const;
/** A resource limit's name, as `prlimit` spells it. */
export type RlimitName = (typeof RLIMIT_NAMES)[number];
/** The limits profilers record: the ones that change how a service behaves when they differ. */
export const CAPTURED_RLIMITS = ['nofile', 'nproc', 'core', 'memlock', 'stack'] as const satisfies readonly RlimitName[];
/** Most supplementary groups a Linux process can have (NGROUPS_MAX). */
export const MAX_GROUPS = 65536;

/** One limit value: `unlimited` (RLIM_INFINITY) or a count that JSON carries exactly. */
const rlimitValue = z.union([z.literal('unlimited'), z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)]);
/** True when soft limit `soft` is at most `hard` (`unlimited` is the largest). */
export function softWithinHard(soft: number | 'unlimited', hard: number | 'unlimited'): boolean {
  return hard === 'unlimited' || (soft !== 'unlimited' && soft <= hard);
}
/** A soft and a hard limit; the kernel refuses a soft limit above the hard one. */
export const RlimitSchema = z
  .object({ soft: rlimitValue, hard: rlimitValue })
  .refine((l) => softWithinHard(l.soft, l.hard), { message: 'the soft limit must not be above the hard limit' });
/** A soft and a hard limit. */
export type Rlimit = z.infer<typeof RlimitSchema>;

/** Start facts a faithful restart needs besides argv, cwd, env and uid/gid. */
export const StartFactsSchema = z.object({
  /** The path the program was started by when it differs from `executable` (a symlink it decides its role from). */
  invokedAs: absolutePath.optional(),
  /** Supplementary group ids (at most {@link MAX_GROUPS}). */
  groups: z.array(unixId).max(MAX_GROUPS).optional(),
  /** The file-mode creation mask. */
  umask: z.number().int().min(0).max(0o777).optional(),
  /** Resource limits, soft and hard, by name (only known names; see {@link RLIMIT_NAMES}). */
  rlimits: z
    .partialRecord(z.enum(RLIMIT_NAMES), RlimitSchema, {
      // zod names every unknown key in its message; a hostile one may be megabytes long.
      error: (issue) => (issue.code === 'invalid_type' ? undefined : `unknown resource limit name (known: ${RLIMIT_NAMES.join(', ')})`),
    })
    .optional(),
  /** True when the program's title replaced its argv (argv[0] with spaces): its arguments are unknown. */
  argvRewritten: z.boolean().optional(),
});
/** Start facts a faithful restart needs. */
export type StartFacts = z.infer<typeof StartFactsSchema>;

/** A process of the program's tree seen by the profiler. */
export const ProcessInfoSchema = z.object({
  pid: z.number().int().positive(),
  ppid: nonNegativeInt.optional(),
  executable: z.string().optional(),
  argv: z.array(z.string()).optional(),
  /** Real uid and gid of this process (a daemon's workers may run as another user than its master). */
  uid: unixId.optional(),
  gid: unixId.optional(),
});
/** A process of the program's tree. */
export type ProcessInfo = z.infer<typeof ProcessInfoSchema>;

/** How complete a profile is, and why not. */
export const CompletenessSchema = z.object({
  /** False when uses may have been missed (sampling, attach after start, dropped events). */
  complete: z.boolean(),
  /** Sentences explaining what may be missing. */
  notes: z.array(z.string()).default([]),
});

/** Everything the SDK knows about what a program uses. */
export const ResourceProfileSchema = z.object({
  formatVersion: z.literal(PROFILE_FORMAT_VERSION).default(PROFILE_FORMAT_VERSION),
  /** Absolute path of the program's executable. */
  executable: absolutePath,
  /** Size of the executable in bytes. */
  executableSize: nonNegativeInt.default(0),
  argv: z.array(z.string()).min(1),
  cwd: absolutePath,
  /** Environment to start the program with at the destination (optional; secrets are the caller's call). */
  env: environment.optional(),
  uid: unixId,
  gid: unixId,
  platform: PlatformSchema,
  files: z.array(FileUseSchema).default([]),
  sockets: z.array(SocketUseSchema).default([]),
  ipc: z.array(IpcUseSchema).default([]),
  processes: z.array(ProcessInfoSchema).default([]),
  /** Directories that travel whole (data roots, config directories): walked when packing, so files created later travel too. */
  trees: z.array(TreeUseSchema).default([]),
  /** Accounts the program runs as or names: written into the destination root's /etc/passwd and /etc/group (never shadow). */
  users: z.array(UserEntrySchema).default([]),
  groups: z.array(GroupEntrySchema).default([]),
  /** Paths the program looked for and did not find (failed open/stat): recorded, never packed. */
  probes: z.array(absolutePath).default([]),
  /** How the program was started, beyond argv: the path it was invoked by, supplementary groups, umask, resource limits. */
  start: StartFactsSchema.optional(),
  completeness: CompletenessSchema.default({ complete: true, notes: [] }),
  /** Which profiler produced this, and when. */
  profiler: z
    .object({ name: z.string(), startedAt: z.string().optional(), durationMs: z.number().nonnegative().optional() })
    .optional(),
});
/** Everything the SDK knows about what a program uses (validated, defaults filled in). */
export type ResourceProfile = z.infer<typeof ResourceProfileSchema>;
/** A profile as written by hand or read from JSON, before defaults are filled in. */
export type ResourceProfileInput = z.input<typeof ResourceProfileSchema>;

const FILE_KIND_SET: ReadonlySet<string> = new Set(FILE_KINDS);
const FILE_ACCESS_SET: ReadonlySet<string> = new Set(FILE_ACCESS);
const FILE_REASON_SET: ReadonlySet<string> = new Set(FILE_REASONS);

/**
 * The file-use check of {@link FileUseSchema}, by hand: a profile can hold 100,000 file uses, and
 * zod's per-element cost (and the garbage it leaves) made planning grow faster than linearly.
 * Returns the normalised use, or undefined when anything is off (then zod runs to name the field).
 */
/** The keys a file use may have (read once: zod's `shape` is not free to consult per element). */
let fileUseKeys: Set<string> | undefined;

function fastFileUse(value: unknown): FileUse | undefined {
  const FILE_USE_KEYS = (fileUseKeys ??= new Set(Object.keys(FileUseSchema.shape)));
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const { path, kind, access, size, sharedLibrary, created, linkTarget, reasons } = v;
  const normal = normalizeAbsolutePath(path);
  if (!normal.ok) return undefined;
  if (typeof kind !== 'string' || !FILE_KIND_SET.has(kind)) return undefined;
  if (!Array.isArray(access) || access.length === 0 || !access.every((a) => typeof a === 'string' && FILE_ACCESS_SET.has(a))) return undefined;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return undefined;
  if (sharedLibrary !== undefined && typeof sharedLibrary !== 'boolean') return undefined;
  if (created !== undefined && typeof created !== 'boolean') return undefined;
  if (linkTarget !== undefined && typeof linkTarget !== 'string') return undefined;
  if (reasons !== undefined && !(Array.isArray(reasons) && reasons.every((r) => typeof r === 'string' && FILE_REASON_SET.has(r)))) return undefined;
  for (const key in v) {
    if (!FILE_USE_KEYS.has(key)) return undefined; // unknown keys: let zod decide (it strips them)
  }
  const use: FileUse = { path: normal.path, kind: kind as FileUse['kind'], access: [...access] as FileUse['access'], size, sharedLibrary: sharedLibrary ?? false, created: created ?? false };
  if (linkTarget !== undefined) use.linkTarget = linkTarget;
  if (reasons !== undefined) use.reasons = [...reasons] as FileReason[];
  return use;
}

/**
 * Validate a profile exactly as {@link ResourceProfileSchema} does, faster for large file lists:
 * file uses are checked by hand and only a profile with a bad one goes through zod element by
 * element (so the error still names the field). Returns the zod result shape.
 */
export function safeParseProfile(value: unknown): ReturnType<typeof ResourceProfileSchema.safeParse> {
  if (typeof value === 'object' && value !== null && Array.isArray((value as { files?: unknown }).files)) {
    const { files, ...rest } = value as { files: unknown[] };
    const fast: FileUse[] = [];
    for (const f of files) {
      const use = fastFileUse(f);
      if (!use) return ResourceProfileSchema.safeParse(value);
      fast.push(use);
    }
    const head = ResourceProfileSchema.safeParse({ ...rest, files: [] });
    if (head.success) head.data.files = fast;
    return head;
  }
  return ResourceProfileSchema.safeParse(value);
}
