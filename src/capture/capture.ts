/**
 * Complete capture: what a program holds now is not all it needs. A profile taken by attaching to
 * a running daemon misses what it read at start-up and closed (its config), what it will load
 * later (plugins), the rest of its data directory and the accounts it switches to. These rules,
 * none of which knows any program by name, add them, each file marked with why it is there:
 *
 * - `package`: every file of the package owning the executable and each other program its
 *   processes ran (a launched wrapper's exec target; dpkg, rpm or FreeBSD pkg), and the
 *   non-library, non-documentation files of the packages it directly depends on (time zones,
 *   shared config): a library the program needs is found from its ELF headers at the destination.
 * - `config`: absolute paths named in argv, in the text config files it opened itself (under
 *   `/etc`, or named in argv) and in the `/etc` files of its own package (the package owning the
 *   executable, and those built from the same source package), followed through the config files
 *   those name; a directory named there travels whole, as does the directory of a glob
 *   (`conf.d/*.conf`). The `/etc` files of the packages it merely depends on travel but are never
 *   read for paths or account names: they describe those packages (a user-management tool's
 *   `/home` and skeleton directory, another service's init scripts), not this program.
 * - `data-root`: a directory the program writes into travels whole (files it holds open for
 *   writing, its cwd when it writes there, directories named in argv), so files it creates later
 *   travel too. Written wins over named: a directory a config file names and the program writes
 *   into (a log directory) is a data root.
 * - accounts: the uids and gids its processes run as and the user names in its argv and config
 *   get their `/etc/passwd` and `/etc/group` entries (never shadow).
 * - `user-included` / excluded: the caller's corrections.
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import { InvalidInputError, type ApMigrateError } from '../errors.js';
import type { FileReason, FileUse, GroupEntry, ResourceProfile, TreeUse, UserEntry } from '../policy/profile.js';
import { otherProgramsRun } from '../policy/programs.js';
import { normalizeAbsolutePath } from '../policy/safe-input.js';
import type { Executor } from '../spec/executor.js';
import { accountDatabases, measureSourceTrees, packageFacts, readSmallFiles, statPaths, type PackageFacts, type PathFacts } from './source-facts.js';
import { isBroadDirectory, isDocumentationPath, isLibraryPath, isPseudoPath } from './paths.js';
import { absolutePathsIn, configWordsIn, wordsIn } from './scan.js';
import { selectAccounts } from './accounts.js';

/** Options of {@link captureProgram}. */
export interface CaptureOptions {
  /** Files of the executable's package and its dependencies (default true). */
  packages?: boolean;
  /** Paths named in argv and config files (default true). */
  config?: boolean;
  /** Directories the program writes into travel whole (default true). */
  dataRoots?: boolean;
  /** Extra paths to carry (a directory travels whole). */
  include?: string[];
  /** Paths to leave out (a directory: everything under it). */
  exclude?: string[];
  /** A directory tree larger than this is not carried whole (a note says so; default 2 GiB). */
  maxTreeBytes?: number;
  /** How many config files are followed from one another (default 64). */
  maxConfigFiles?: number;
}

/** What one capture added, by reason. */
export type CaptureSummary = Record<FileReason, { files: number; bytes: number }>;

const DEFAULT_MAX_TREE = 2 * 1024 * 1024 * 1024;
const SECRET_ACCOUNT_FILES = new Set(['/etc/shadow', '/etc/gshadow', '/etc/shadow-', '/etc/gshadow-', '/etc/master.passwd', '/etc/spwd.db']);

/**
 * Extend `profile` with what the program needs beyond what it held when profiled. Reads the source
 * host through `executor` (the host the profile was taken on).
 */
export function captureProgram(profile: ResourceProfile, executor: Executor, options: CaptureOptions = {}): ResultAsync<ResourceProfile, ApMigrateError> {
  const bad = checkOptions(options);
  if (bad) return errAsync(bad);
  const state = new CaptureState(profile, options);
  return state
    .resolveInvocation(executor)
    .andThen(() => (options.packages === false ? okAsync(undefined) : state.addPackages(executor)))
    .andThen(() => (options.config === false ? okAsync(undefined) : state.addConfig(executor)))
    .andThen(() => (options.config === false ? okAsync(undefined) : state.addResolverConfig(executor)))
    .andThen(() => state.addIncluded(executor))
    .andThen(() => (options.dataRoots === false ? okAsync(undefined) : okAsync(state.addDataRoots())))
    .andThen(() => state.measureTrees(executor))
    .andThen(() => state.addAccounts(executor))
    .map(() => state.result());
}

function checkOptions(options: CaptureOptions): InvalidInputError | undefined {
  for (const field of ['include', 'exclude'] as const) {
    const list = options[field];
    if (list === undefined) continue;
    if (!Array.isArray(list)) return new InvalidInputError('capture options', [{ path: field, message: 'must be an array of absolute paths' }]);
    for (const [i, p] of list.entries()) {
      const n = normalizeAbsolutePath(p);
      if (!n.ok) return new InvalidInputError('capture options', [{ path: `${field}.${i}`, message: n.reason }]);
    }
  }
  return undefined;
}

/**
 * Files under /etc that describe the whole host, not the program: its accounts, names and
 * mounts. A program reads them (to drop to its user, to resolve a name), but the paths and words
 * in them are every other service's (home directories, data directories, account names), so
 * they are never scanned as the program's config. They still travel when the profile lists them.
 */
const HOST_DATABASES = new Set([
  '/etc/passwd', '/etc/group', '/etc/shadow', '/etc/gshadow', '/etc/subuid', '/etc/subgid',
  '/etc/hosts', '/etc/services', '/etc/protocols', '/etc/networks', '/etc/nsswitch.conf', '/etc/host.conf',
  '/etc/fstab', '/etc/mtab', '/etc/ld.so.cache', '/etc/localtime', '/etc/login.defs', '/etc/shells',
]);

/** Reasons a profiler gives: what the program itself did. */
const PROFILER_REASONS = new Set<FileReason>(['held-open', 'mapped', 'traced']);

/** The profile being extended: files by path, trees, and what config said. */
class CaptureState {
  private readonly files = new Map<string, FileUse>();
  private readonly trees = new Map<string, TreeUse>();
  private readonly notes: string[] = [];
  private readonly words = new Set<string>();
  /** The package each packaged file came from (the first that lists it, the program's own first). */
  private readonly packageOf = new Map<string, string>();
  /** The program's own packages: the owner(s) of its executable and their same-source dependencies. */
  private readonly ownPackages = new Set<string>();
  private readonly excluded: string[];
  private invokedAs: string | undefined;
  private argvRewritten = false;
  private users: UserEntry[] = [];
  private groups: GroupEntry[] = [];

  constructor(
    private readonly profile: ResourceProfile,
    private readonly options: CaptureOptions,
  ) {
    for (const f of profile.files) this.files.set(f.path, f);
    for (const t of profile.trees) this.trees.set(t.path, t);
    this.excluded = (options.exclude ?? []).map((p) => (normalizeAbsolutePath(p) as { path: string }).path);
    for (const a of profile.argv.slice(1)) for (const w of wordsIn(a)) this.words.add(w);
  }

  private isExcluded(path: string): boolean {
    return this.excluded.some((e) => path === e || path.startsWith(`${e}/`));
  }

  /** Add (or mark) a file use with `reason`, from what stat said of it. */
  private addFile(path: string, facts: PathFacts, reason: FileReason): void {
    if (this.isExcluded(path) || isPseudoPath(path)) return;
    const existing = this.files.get(path);
    if (existing) {
      if (!(existing.reasons ?? []).includes(reason)) existing.reasons = [...(existing.reasons ?? []), reason];
      return;
    }
    const kind = facts.type === 'f' ? 'regular' : facts.type === 'd' ? 'directory' : facts.type === 'l' ? 'symlink' : undefined;
    if (!kind) return; // sockets, fifos of a running program, devices: never from these rules
    this.files.set(path, { path, kind, access: ['read'], size: kind === 'regular' ? facts.size : 0, sharedLibrary: false, created: false, reasons: [reason] });
  }

  private addTree(path: string, reason: FileReason): void {
    if (this.isExcluded(path) || isPseudoPath(path) || isBroadDirectory(path)) return;
    const existing = this.trees.get(path);
    if (!existing) this.trees.set(path, { path, reason, bytes: 0, files: 0 });
    // Written wins over named: a directory config names and the program writes into is a data root.
    else if (reason === 'data-root' && existing.reason === 'config') existing.reason = 'data-root';
  }

  /** Whether `path` is a file of a package the program depends on but that is not its own. */
  private isDependencyFile(path: string): boolean {
    const pkg = this.packageOf.get(path);
    return pkg !== undefined && !this.ownPackages.has(pkg);
  }

  /** The path the program was started by (a symlink it may decide its role from), and whether its title replaced argv. */
  resolveInvocation(executor: Executor): ResultAsync<void, ApMigrateError> {
    const first = this.profile.argv[0] ?? '';
    const token = first.split(/\s+/)[0] ?? '';
    this.argvRewritten = this.profile.argv.length === 1 && /\s/.test(first);
    const candidates = token.startsWith('/') ? [token] : token && !token.includes('/') ? ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'].map((d) => `${d}/${token.replace(/:$/, '')}`) : [];
    return statPaths(executor, [this.profile.executable, ...candidates]).map((facts) => {
      const exeReal = facts.get(this.profile.executable)?.real ?? this.profile.executable;
      const hit = candidates.find((c) => facts.get(c) && facts.get(c)!.real === exeReal);
      if (hit && hit !== this.profile.executable) {
        this.invokedAs = hit;
        this.addFile(hit, facts.get(hit)!, 'traced');
      }
    });
  }

  /** The packages of the executable and of every other program its processes ran, whole; their direct dependencies' data and config files. */
  addPackages(executor: Executor): ResultAsync<void, ApMigrateError> {
    // Every program its processes ran: a launched wrapper's package is not the server's it exec'd.
    const owned = [this.profile.executable, ...(this.invokedAs ? [this.invokedAs] : []), ...otherProgramsRun(this.profile)];
    return packageFacts(executor, owned.flatMap(dpkgAliases)).andThen((facts) => {
      for (const p of ownPackagesOf(facts)) this.ownPackages.add(p);
      const wanted = packageFilesWanted(facts, this.ownPackages);
      for (const [path, pkg] of wanted) this.packageOf.set(path, pkg);
      return statPaths(executor, [...wanted.keys()]).map((stats) => {
        for (const path of wanted.keys()) {
          const st = stats.get(path);
          if (st) this.addFile(path, st, 'package');
        }
      });
    });
  }

  /** Paths named in argv and in the config files the program read, followed from file to file. */
  addConfig(executor: Executor): ResultAsync<void, ApMigrateError> {
    const fromArgv = this.profile.argv.slice(1).flatMap((a) => absolutePathsIn(a));
    const isConfigText = (f: FileUse) => f.kind === 'regular' && f.path.startsWith('/etc/') && !f.sharedLibrary && !HOST_DATABASES.has(f.path);
    // Config the program opened itself (the profile's own files), and its own package's /etc files
    // (a daemon attached to long after start-up holds none open). Not the /etc files of the
    // packages it depends on: the paths and names in those are theirs.
    // (A file only an earlier capture added is not one the program opened.)
    const opened = this.profile.files.filter((f) => isConfigText(f) && f.access.includes('read') && (!f.reasons?.length || f.reasons.some((r) => PROFILER_REASONS.has(r)))).map((f) => f.path);
    const ownConfig = [...this.files.values()].filter((f) => isConfigText(f) && f.reasons?.includes('package') && this.ownPackages.has(this.packageOf.get(f.path) ?? '')).map((f) => f.path);
    const readConfigs = [...new Set([...opened, ...ownConfig])];
    const seenConfigs = new Set<string>();
    const max = this.options.maxConfigFiles ?? 64;
    const round = (named: string[], configs: string[], depth: number): ResultAsync<void, ApMigrateError> => {
      const toRead = configs.filter((c) => !seenConfigs.has(c)).slice(0, Math.max(0, max - seenConfigs.size));
      for (const c of toRead) seenConfigs.add(c);
      return readSmallFiles(executor, toRead)
        .andThen((texts) => {
          const more = new Set(named);
          for (const [, text] of texts) {
            if (text.includes('\0')) continue; // not text
            for (const p of absolutePathsIn(text)) more.add(p);
            for (const w of configWordsIn(text)) this.words.add(w);
          }
          const globDirs = [...more].filter((p) => /[*?[]/.test(p)).map((p) => p.slice(0, p.search(/[*?[]/)).replace(/\/[^/]*$/, '') || '/');
          const plain = [...more].filter((p) => !/[*?[]/.test(p));
          return statPaths(executor, [...plain, ...globDirs]).map((stats) => ({ stats, globDirs, plain }));
        })
        .andThen(({ stats, globDirs, plain }) => {
          const nextConfigs: string[] = [];
          for (const p of [...plain, ...globDirs]) {
            const st = stats.get(p);
            if (!st) continue;
            if (st.type === 'd') this.addTree(p, 'config');
            else {
              this.addFile(p, st, 'config');
              // A link travels with what it points at (sites-enabled/x -> ../sites-available/x).
              if (st.type === 'l' && st.real !== p) nextConfigs.push(st.real);
              if (st.type === 'f' && p.startsWith('/etc/')) nextConfigs.push(p);
            }
            if (st.type === 'l' && st.real.startsWith('/')) this.addTree(st.real, 'config');
          }
          // A named file travels; it is read in turn unless it describes the host or is a dependency's own config.
          const follow = nextConfigs.filter((c) => !HOST_DATABASES.has(c) && !this.isDependencyFile(c));
          return depth >= 4 || follow.length === 0 ? okAsync(undefined) : round([], follow, depth + 1);
        });
    };
    // The directory of a config file named in argv travels whole: it holds what the file includes relatively (conf.d).
    return statPaths(executor, fromArgv).andThen((stats) => {
      for (const p of fromArgv) if (stats.get(p)?.type === 'f' && p.startsWith('/etc/')) this.addTree(parentOf(p), 'config');
      return round(fromArgv, [...readConfigs, ...fromArgv.filter((p) => p.startsWith('/etc/'))], 0);
    });
  }

  /**
   * The resolver's configuration, for a program that uses the network: it resolves names (even
   * "localhost") through these, usually at start-up, so an attach profile does not see them.
   */
  addResolverConfig(executor: Executor): ResultAsync<void, ApMigrateError> {
    if (!this.profile.sockets.some((s) => s.family === 'inet' || s.family === 'inet6')) return okAsync(undefined);
    const files = ['/etc/hosts', '/etc/nsswitch.conf', '/etc/host.conf', '/etc/resolv.conf', '/etc/gai.conf', '/etc/services', '/etc/protocols'];
    return statPaths(executor, files).map((stats) => {
      for (const f of files) {
        const st = stats.get(f);
        if (st) this.addFile(f, st, 'config');
      }
    });
  }

  /** The caller's includes: a directory travels whole. */
  addIncluded(executor: Executor): ResultAsync<void, ApMigrateError> {
    const include = (this.options.include ?? []).map((p) => (normalizeAbsolutePath(p) as { path: string }).path);
    if (!include.length) return okAsync(undefined);
    return statPaths(executor, include).andThen((stats) => {
      const missing = include.filter((p) => !stats.has(p));
      if (missing.length) return errAsync(new InvalidInputError('capture options', missing.map((p) => ({ path: 'include', message: `${p} does not exist on the source` }))));
      for (const p of include) {
        const st = stats.get(p)!;
        if (st.type === 'd') this.trees.set(p, { path: p, reason: 'user-included', bytes: 0, files: 0 });
        else this.addFile(p, st, 'user-included');
      }
      return okAsync(undefined);
    });
  }

  /** Directories the program writes into, and directories named in its argv. */
  addDataRoots(): void {
    const written = this.profile.files.filter((f) => f.access.includes('write') && (f.kind === 'regular' || f.kind === 'directory') && !isPseudoPath(f.path));
    const dirs = new Set<string>();
    for (const f of written) dirs.add(f.kind === 'directory' ? f.path : parentOf(f.path));
    if (written.some((f) => f.path.startsWith(`${this.profile.cwd}/`))) dirs.add(this.profile.cwd);
    for (const [path, tree] of this.trees) if (tree.reason === 'config' && this.profile.argv.slice(1).some((a) => absolutePathsIn(a).includes(path))) tree.reason = 'data-root';
    for (const d of dirs) this.addTree(d, 'data-root');
  }

  /** Sizes of the trees; a tree too large is dropped with a note; a tree inside another is dropped. */
  measureTrees(executor: Executor): ResultAsync<void, ApMigrateError> {
    const paths = [...this.trees.keys()].sort();
    const outer = paths.filter((p) => !paths.some((q) => q !== p && p.startsWith(`${q}/`)));
    for (const p of paths) {
      if (outer.includes(p)) continue;
      // A named tree holding a directory the program writes into is a data root.
      if (this.trees.get(p)!.reason === 'data-root') for (const q of outer) if (p.startsWith(`${q}/`) && this.trees.get(q)!.reason === 'config') this.trees.get(q)!.reason = 'data-root';
      this.trees.delete(p);
    }
    return measureSourceTrees(executor, outer).map((sizes) => {
      const max = this.options.maxTreeBytes ?? DEFAULT_MAX_TREE;
      for (const p of outer) {
        const size = sizes.get(p);
        const tree = this.trees.get(p)!;
        if (!size) {
          this.trees.delete(p);
          continue;
        }
        if (size.bytes > max && tree.reason !== 'user-included') {
          this.trees.delete(p);
          this.notes.push(`${p} (${Math.round(size.bytes / 1048576)} MiB) was not carried whole: larger than maxTreeBytes; include it to carry it`);
          continue;
        }
        tree.bytes = size.bytes;
        tree.files = size.files;
      }
      // Files inside a tree travel with it: keep them (their reasons stay), the packer writes each once.
    });
  }

  /** passwd and group entries of the ids the program runs as and the names it mentions. */
  addAccounts(executor: Executor): ResultAsync<void, ApMigrateError> {
    return accountDatabases(executor).map(({ passwd, group }) => {
      const ids = { uids: new Set<number>([this.profile.uid]), gids: new Set<number>([this.profile.gid, ...(this.profile.start?.groups ?? [])]) };
      for (const p of this.profile.processes) {
        if (p.uid !== undefined) ids.uids.add(p.uid);
        if (p.gid !== undefined) ids.gids.add(p.gid);
      }
      const chosen = selectAccounts(passwd, group, ids, this.words);
      this.users = chosen.users;
      this.groups = chosen.groups;
    });
  }

  result(): ResourceProfile {
    // Never the source's password hashes: the root gets passwd/group entries of its own accounts only.
    const files = [...this.files.values()].filter((f) => !this.isExcluded(f.path) && !SECRET_ACCOUNT_FILES.has(f.path));
    const start = { ...this.profile.start, ...(this.invokedAs ? { invokedAs: this.invokedAs } : {}), ...(this.argvRewritten ? { argvRewritten: true } : {}) };
    return {
      ...this.profile,
      files,
      trees: [...this.trees.values()],
      users: mergeBy(this.profile.users, this.users, (u) => u.name),
      groups: mergeBy(this.profile.groups, this.groups, (g) => g.name),
      ...(Object.keys(start).length ? { start } : {}),
      completeness: { ...this.profile.completeness, notes: [...this.profile.completeness.notes, ...this.notes] },
    };
  }
}

function mergeBy<T>(a: T[], b: T[], key: (t: T) => string): T[] {
  const out = new Map<string, T>();
  for (const t of [...a, ...b]) if (!out.has(key(t))) out.set(key(t), t);
  return [...out.values()];
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

/** dpkg records merged-/usr files under their historical names (`/lib/...` for `/usr/lib/...`): ask for both. */
function dpkgAliases(path: string): string[] {
  const m = /^\/usr\/(bin|sbin|lib|lib32|lib64|libx32)\//.exec(path);
  return m ? [path, path.slice(4)] : [path];
}

/**
 * The program's own packages: those owning its executable, and the dependencies built from the
 * same source package (a distribution's split of one program into a binary and a `-common` or
 * `-data` package holding its config). A package manager that names no sources: the owners.
 */
function ownPackagesOf(facts: Pick<PackageFacts, 'owners' | 'dependencies' | 'sources'>): Set<string> {
  const own = new Set(facts.owners);
  const sources = new Set(facts.owners.map((o) => facts.sources.get(o)).filter((s): s is string => !!s));
  for (const d of facts.dependencies) if (sources.has(facts.sources.get(d) ?? '')) own.add(d);
  return own;
}

/**
 * The files of the owning packages (all but documentation), and of their dependencies (no
 * libraries, no documentation), each with the package it came from (the program's own packages
 * are asked first, so a path two packages list is the program's).
 */
function packageFilesWanted(facts: PackageFacts, own: ReadonlySet<string>): Map<string, string> {
  const wanted = new Map<string, string>();
  const ordered = [...facts.files].sort(([a], [b]) => Number(own.has(b)) - Number(own.has(a)));
  for (const [pkg, files] of ordered) {
    const owner = facts.owners.includes(pkg);
    for (const path of files) {
      if (wanted.has(path) || isDocumentationPath(path)) continue;
      if (!owner && isLibraryPath(path)) continue;
      wanted.set(path, pkg);
    }
  }
  return wanted;
}
