/**
 * Building the program's root at the destination, as root, from a verified bundle that came from
 * the program being moved. Runs inside the receiver (`receiver.cjs build-root`), at a moment when
 * nothing of the program runs, so a path checked here stays what it was when it is used.
 *
 * Every path inside the root is resolved the way the kernel will resolve it once the program is
 * chrooted there (`RESOLVE_IN_ROOT`): a symbolic link is followed *inside* the root, `..` stops at
 * the root, so no host-side step can be led out of it. The root's skeleton (`/dev`, `/dev/shm`,
 * `/proc`, `/tmp`, `/.ap-migrate`) must be real directories or absent: a bundle that makes one a
 * link is refused. Host libraries are copied in only when they are ELF shared objects under the
 * destination's own library directories, found by reading ELF headers (never by running `ldd`).
 *
 * @module
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, constants, copyFileSync, fstatSync, lstatSync, lutimesSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, readlinkSync, realpathSync, statSync, unlinkSync, writeFileSync, type Stats } from 'node:fs';
import { posix } from 'node:path';
import { normalizeAbsolutePath } from '../policy/safe-input.js';
import { readElf, type ElfFacts } from './elf.js';

/** What to build: every path here except `root` and `wrapperSource` is a path inside the root. */
export interface RootBuildSpec {
  /** Host path of the root (the staging `root` directory). */
  root: string;
  /** The program's executable, as the program sees it. */
  executable: string;
  /** The program's working directory. */
  cwd: string;
  /** Directories the program creates files in. */
  dirs: string[];
  /** Host libraries the program was seen to map (copied in when they are safe and absent). */
  libraries: string[];
  /**
   * Other executables its processes ran (what a launched wrapper exec'd into), as the program sees
   * them: their needed libraries are copied in too, by the names they are looked up by.
   */
  programs?: string[];
  /**
   * Host path of the `env` binary placed at {@link WRAPPER_PATH} to set the program's environment
   * after the privilege drop; empty: the first of /usr/bin/env, /bin/env.
   */
  wrapperSource: string;
  /** Lines for the root's /etc/passwd and /etc/group (replacing the bundle's): the accounts the program uses, nothing else. */
  passwd?: string[];
  group?: string[];
}

/** Where the exec wrapper lives inside the program's root. */
export const WRAPPER_PATH = '/.ap-migrate/env';
/** Skeleton directories: created by the builder, never links. */
export const SKELETON_DIRS = ['/dev', '/dev/shm', '/proc', '/tmp', '/.ap-migrate'] as const;
const STICKY_DIRS = new Set(['/tmp', '/dev/shm']);
const DEVICES: ReadonlyArray<{ name: string; major: number; minor: number }> = [
  { name: 'null', major: 1, minor: 3 },
  { name: 'zero', major: 1, minor: 5 },
  { name: 'random', major: 1, minor: 8 },
  { name: 'urandom', major: 1, minor: 9 },
];
const MAX_LINK_HOPS = 40;
/** Library files larger than this are not read (no real shared object is this big). */
const MAX_ELF_BYTES = 512 * 1024 * 1024;

/** What the builder did. */
export interface RootBuildReport {
  /** Host libraries copied into the root. */
  copied: string[];
  /** Libraries not copied, and why (absent at the destination, not a shared object, outside the library directories). */
  skipped: Array<{ path: string; reason: string }>;
}

/** The bundle or the spec would make the builder act outside the root. */
export class UnsafeRootError extends Error {
  readonly code = 'UNSAFE_BUNDLE';
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The host path `path` names inside `root`, with every link followed inside the root and `..`
 * clamped at it. With `create`, missing directories on the way (and the last one) are made 0755.
 * The last component is followed only with `followLast`.
 */
export function resolveInRoot(root: string, path: string, options: { create?: boolean; followLast?: boolean } = {}): string {
  const queue = path.split('/');
  const resolved: string[] = [];
  let hops = 0;
  while (queue.length > 0) {
    const part = queue.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const last = !queue.some((p) => p !== '' && p !== '.');
    const here = posix.join(root, ...resolved, part);
    const st = lstatOrUndefined(here);
    if (!st) {
      if (!options.create) {
        resolved.push(part, ...queue.filter((p) => p !== '' && p !== '.'));
        if (resolved.includes('..')) throw new UnsafeRootError(`${path}: ".." below a missing directory`);
        return posix.join(root, ...resolved);
      }
      mkdirSync(here, { mode: 0o755 });
      resolved.push(part);
      continue;
    }
    if (st.isSymbolicLink() && (!last || options.followLast)) {
      if (++hops > MAX_LINK_HOPS) throw new UnsafeRootError(`${path}: too many symbolic links`);
      const target = readlinkSync(here);
      if (target.startsWith('/')) resolved.length = 0;
      queue.unshift(...target.split('/'));
      continue;
    }
    if (!last && !st.isDirectory()) throw new UnsafeRootError(`${path}: ${posix.join('/', ...resolved, part)} is not a directory`);
    resolved.push(part);
  }
  return posix.join(root, ...resolved);
}

/** Make a skeleton directory (and its parents) as a real directory; a link or a file in its place is refused. */
function ensureSkeletonDir(root: string, dir: string): string {
  let here = root;
  for (const part of dir.split('/').filter(Boolean)) {
    here = posix.join(here, part);
    const st = lstatOrUndefined(here);
    if (!st) mkdirSync(here, { mode: 0o755 });
    else if (!st.isDirectory()) {
      throw new UnsafeRootError(`The bundle makes ${posix.join('/', posix.relative(root, here))} a ${st.isSymbolicLink() ? 'symbolic link' : 'non-directory'}; the program's ${dir} must be a real directory`);
    }
  }
  if (STICKY_DIRS.has(dir)) chmodSync(here, 0o1777);
  return here;
}

/** Make the four device nodes every program expects, replacing whatever the bundle put there. */
function makeDevices(devDir: string): void {
  for (const { name, major, minor } of DEVICES) {
    const path = posix.join(devDir, name);
    const st = lstatOrUndefined(path);
    if (st?.isCharacterDevice() && st.rdev === major * 256 + minor) continue;
    if (st) {
      if (st.isDirectory()) throw new UnsafeRootError(`The bundle makes /dev/${name} a directory`);
      unlinkSync(path);
    }
    // mknod(1) creates exactly this name; it never follows a link (there is none left).
    execFileSync('mknod', ['-m', '666', '--', path, 'c', String(major), String(minor)], { stdio: 'ignore' });
  }
}

/** The destination's library directories: /etc/ld.so.conf (with its includes) and the loader's defaults, as real paths. */
export function hostLibraryDirs(): string[] {
  const dirs: string[] = [];
  const seen = new Set<string>();
  const readConf = (file: string, depth: number): void => {
    if (depth > 8) return;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return;
    }
    for (const raw of text.split('\n')) {
      const line = raw.replace(/#.*/, '').trim();
      if (!line) continue;
      if (line.startsWith('include ')) {
        for (const pattern of line.slice(8).trim().split(/\s+/)) for (const f of globConf(pattern, posix.dirname(file))) readConf(f, depth + 1);
      } else if (line.startsWith('/')) dirs.push(line);
    }
  };
  readConf('/etc/ld.so.conf', 0);
  dirs.push('/lib64', '/usr/lib64', '/lib', '/usr/lib', '/usr/local/lib');
  const out: string[] = [];
  for (const d of dirs) {
    try {
      const real = realpathSync(d);
      if (!seen.has(real) && statSync(real).isDirectory()) {
        seen.add(real);
        out.push(real);
      }
    } catch {
      // absent here
    }
  }
  return out;
}

/** `include` patterns of ld.so.conf: only `dir/*.conf`-style globs (what distributions use). */
function globConf(pattern: string, base: string): string[] {
  const abs = pattern.startsWith('/') ? pattern : posix.join(base, pattern);
  const dir = posix.dirname(abs);
  const name = posix.basename(abs);
  if (!name.includes('*')) return [abs];
  const re = new RegExp(`^${name.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  try {
    return readdirSync(dir).filter((f) => re.test(f)).sort().map((f) => posix.join(dir, f));
  } catch {
    return [];
  }
}

/** Read an ELF file's facts (bounded size); undefined for anything else. */
function elfAt(path: string): ElfFacts | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > MAX_ELF_BYTES) return undefined;
    const buf = Buffer.alloc(st.size);
    let got = 0;
    while (got < st.size) {
      const n = readSync(fd, buf, got, st.size - got, got);
      if (n === 0) break;
      got += n;
    }
    return readElf(buf.subarray(0, got));
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Copies trusted host libraries into the root, following each one's own DT_NEEDED. */
class LibraryCopier {
  readonly report: RootBuildReport = { copied: [], skipped: [] };
  private readonly done = new Set<string>();
  private readonly libDirs = hostLibraryDirs();

  constructor(private readonly root: string) {}

  /** Whether `real` (a host real path) lies under one of the destination's library directories. */
  private trusted(real: string): boolean {
    return this.libDirs.some((d) => real === d || real.startsWith(`${d}/`));
  }

  /** Copy host file `path` (as named, e.g. `/lib64/ld-linux-x86-64.so.2`) to the same path in the root. */
  copy(path: string, like?: ElfFacts): void {
    if (this.done.has(path)) return;
    this.done.add(path);
    const n = normalizeAbsolutePath(path);
    if (!n.ok) return void this.report.skipped.push({ path, reason: `not a usable path: ${n.reason}` });
    let real: string;
    try {
      real = realpathSync(n.path);
    } catch {
      return void this.report.skipped.push({ path, reason: 'absent at the destination' });
    }
    if (!this.trusted(real)) return void this.report.skipped.push({ path, reason: "outside the destination's library directories" });
    const elf = elfAt(real);
    if (!elf || elf.type !== 3) return void this.report.skipped.push({ path, reason: 'not an ELF shared object' });
    if (like && (elf.bits !== like.bits || elf.machine !== like.machine)) return void this.report.skipped.push({ path, reason: 'another architecture' });
    // The directory resolved with its last link followed too: the copy lands in a real directory of the root.
    const target = resolveInRoot(this.root, posix.dirname(n.path), { create: true, followLast: true });
    const dest = posix.join(target, posix.basename(n.path));
    if (!lstatOrUndefined(dest)) {
      // COPYFILE_EXCL: the name is created here, never written through something in its place.
      copyFileSync(real, dest, constants.COPYFILE_EXCL);
      const st = statSync(real);
      chmodSync(dest, st.mode & 0o755);
      lutimesSync(dest, st.atime, st.mtime);
      this.report.copied.push(n.path);
    }
    // Host libraries are the destination's own: their dependencies may be followed.
    this.dependenciesOf(elf);
  }

  /** Copy the interpreter and every needed library of an ELF (found in the destination's library directories). */
  dependenciesOf(elf: ElfFacts): void {
    if (elf.interpreter) this.copy(elf.interpreter, elf);
    for (const name of elf.needed) {
      // A needed name with a slash is a path the binary chose: not something to look up on the host.
      if (!name || name.includes('/')) continue;
      const found = this.find(name, elf);
      if (found) this.copy(found, elf);
    }
  }

  private find(soname: string, like: ElfFacts): string | undefined {
    for (const dir of this.libDirs) {
      const candidate = posix.join(dir, soname);
      const elf = lstatOrUndefined(candidate) ? elfAtFollowing(candidate) : undefined;
      if (elf && elf.bits === like.bits && elf.machine === like.machine) return candidate;
    }
    return undefined;
  }
}

function elfAtFollowing(path: string): ElfFacts | undefined {
  try {
    return elfAt(realpathSync(path));
  } catch {
    return undefined;
  }
}

/** Build the root: skeleton, devices, the program's directories, the exec wrapper and the libraries. */
export function buildRoot(spec: RootBuildSpec): RootBuildReport {
  const rootStat = lstatOrUndefined(spec.root);
  if (!rootStat?.isDirectory()) throw new UnsafeRootError(`${spec.root} is not a directory`);
  chmodSync(spec.root, 0o755);
  if (lstatOrUndefined(posix.join(spec.root, '.ap-migrate'))) throw new UnsafeRootError('The bundle holds /.ap-migrate, which is reserved for the exec wrapper');
  for (const dir of SKELETON_DIRS) ensureSkeletonDir(spec.root, dir);
  makeDevices(posix.join(spec.root, 'dev'));
  for (const dir of [spec.cwd, ...spec.dirs]) {
    const n = normalizeAbsolutePath(dir);
    if (!n.ok) throw new UnsafeRootError(`directory ${JSON.stringify(dir)} ${n.reason}`);
    resolveInRoot(spec.root, n.path, { create: true, followLast: true });
  }
  writeAccounts(spec);
  const copier = new LibraryCopier(spec.root);
  installWrapper(spec, copier);
  for (const program of [spec.executable, ...(spec.programs ?? [])]) {
    const n = normalizeAbsolutePath(program);
    if (!n.ok) throw new UnsafeRootError(`executable ${JSON.stringify(program)} ${n.reason}`);
    const elf = elfAt(resolveInRoot(spec.root, n.path, { followLast: true }));
    if (elf) copier.dependenciesOf(elf);
  }
  for (const lib of spec.libraries) copier.copy(lib);
  return copier.report;
}

/** Write the root's /etc/passwd and /etc/group from the spec (never the host's, never a shadow file). */
function writeAccounts(spec: RootBuildSpec): void {
  if (!spec.passwd?.length && !spec.group?.length) return;
  const etc = resolveInRoot(spec.root, '/etc', { create: true, followLast: true });
  for (const [name, lines] of [['passwd', spec.passwd], ['group', spec.group]] as const) {
    if (!lines?.length) continue;
    if (lines.some((l) => /[\n\0]/.test(l))) throw new UnsafeRootError(`an /etc/${name} line holds a newline or NUL`);
    const path = posix.join(etc, name);
    const st = lstatOrUndefined(path);
    if (st?.isDirectory()) throw new UnsafeRootError(`The bundle makes /etc/${name} a directory`);
    if (st) unlinkSync(path); // a link or the source's whole file: replaced, never written through
    writeFileSync(path, `${lines.join('\n')}\n`, { mode: 0o644, flag: 'wx' });
  }
}

/** Copy the destination's `env` to {@link WRAPPER_PATH}, with the libraries it needs. */
function installWrapper(spec: RootBuildSpec, copier: LibraryCopier): void {
  const dest = posix.join(spec.root, WRAPPER_PATH);
  const source = spec.wrapperSource || ['/usr/bin/env', '/bin/env'].find((p) => lstatOrUndefined(p));
  if (!source) throw new Error('No env binary at the destination (/usr/bin/env, /bin/env) to start the program with');
  const real = realpathSync(source);
  copyFileSync(real, dest, constants.COPYFILE_EXCL);
  chmodSync(dest, 0o755);
  const elf = elfAt(real);
  if (elf) copier.dependenciesOf(elf);
}
