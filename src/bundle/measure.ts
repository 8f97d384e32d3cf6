/**
 * How many bytes whole directory trees add to a bundle, measured locally with the same walk and
 * the same per-entry rules as the packer, so a thick bundle can be estimated precisely.
 *
 * @module
 */
import type { Stats } from 'node:fs';
import { lstat, readlink } from 'node:fs/promises';
import { posix } from 'node:path';
import { errAsync, ResultAsync } from 'neverthrow';
import { InvalidInputError, type InputIssue } from '../errors.js';
import { BundleError, toBundleError } from './errors.js';
import { padToBlock, tarHeaderBytes, tarNameOf, USTAR_MAX_ID } from './estimate.js';
import { comparePaths, normaliseAbsolute } from './select.js';
import { isPseudoPath } from '../policy/paths.js';
import { walkTree } from './walk.js';

/** What {@link measureTrees} found. */
export interface TreeMeasurement {
  /** Bytes the trees add to a bundle: headers, PAX records, data and padding (pass as `extraTreeBytes`). */
  bytes: number;
  /** Data bytes of regular files (each inode once). */
  dataBytes: number;
  /** Regular files, counting every hard-link name. */
  files: number;
  /** Directories, including the trees' roots and their ancestors. */
  dirs: number;
  /** Entries of any type the bundle gets. */
  entries: number;
  /** Sockets and devices, which the bundle leaves out. */
  skipped: number;
}

/** Options of {@link measureTrees}. */
export interface MeasureTreesOptions {
  /** Count device nodes as the packer would with `includeDevices: true` (default false: left out). */
  includeDevices?: boolean;
  /** Stop measuring; settles with `ABORTED`. */
  signal?: AbortSignal;
  /** Directory that stands for `/` when reading, as the packer's `sourceRoot` (default `/`). */
  sourceRoot?: string;
}

/**
 * Walk `paths` (absolute) as the packer's `extraTrees` would and return what they add to a bundle.
 * Streaming: memory grows with directory width and the number of multiply-linked inodes, never with
 * the tree. It counts each tree's ancestors (one header each), which the profile may already
 * carry, and does not resolve symlinked ancestors; missing trees count nothing.
 */
export function measureTrees(paths: readonly string[], options: MeasureTreesOptions = {}): ResultAsync<TreeMeasurement, BundleError | InvalidInputError> {
  if (!Array.isArray(paths)) {
    return errAsync(new InvalidInputError('measureTrees paths', [{ path: '', message: 'must be an array of absolute paths' }]));
  }
  const bad = paths.findIndex((path) => typeof path !== 'string' || !path.startsWith('/') || path.includes('\0'));
  if (bad !== -1) {
    return errAsync(new InvalidInputError('measureTrees paths', [{ path: String(bad), message: 'must be an absolute path' }]));
  }
  const issues = measureOptionsIssues(options);
  if (issues.length > 0) return errAsync(new InvalidInputError('measureTrees options', issues));
  return ResultAsync.fromPromise(measure(paths, options), (e) =>
    options.signal?.aborted ? new BundleError('ABORTED', 'Measuring was aborted by the caller', { cause: e }) : toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', 'measuring trees'),
  );
}

/** Problems with {@link MeasureTreesOptions}, each naming its field (`''` for the whole value). */
function measureOptionsIssues(options: unknown): InputIssue[] {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return [{ path: '', message: 'must be an options object' }];
  const o = options as Record<string, unknown>;
  const issues: InputIssue[] = [];
  if (o.includeDevices !== undefined && typeof o.includeDevices !== 'boolean') issues.push({ path: 'includeDevices', message: 'must be true or false' });
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) issues.push({ path: 'signal', message: 'must be an AbortSignal' });
  if (o.sourceRoot !== undefined && (typeof o.sourceRoot !== 'string' || !o.sourceRoot.startsWith('/') || o.sourceRoot.includes('\0'))) {
    issues.push({ path: 'sourceRoot', message: 'must be an absolute path without NUL bytes' });
  }
  return issues;
}

/** What a measurement has counted so far, and how it reads the source. */
interface Tally {
  result: TreeMeasurement;
  /** First path of each multiply-linked inode: later ones are hard links, with no data. */
  inodes: Map<string, string>;
  /** Directories already counted as ancestors of a tree. */
  ancestors: Set<string>;
  sourcePath: (path: string) => string;
  includeDevices: boolean;
  sliceStart: number;
}

/** Count one entry as the packer would emit it: header, PAX records, data padded to a block. */
async function countEntry(tally: Tally, path: string, stats: Stats): Promise<void> {
  const { result } = tally;
  const isDirectory = stats.isDirectory();
  const pax = stats.uid > USTAR_MAX_ID || stats.gid > USTAR_MAX_ID ? { uid: String(stats.uid), gid: String(stats.gid) } : undefined;
  let linkname: string | undefined;
  let data = 0;
  if (isDirectory) {
    result.dirs += 1;
  } else if (stats.isSymbolicLink()) {
    linkname = await readlink(tally.sourcePath(path));
  } else if (stats.isFile()) {
    result.files += 1;
    const key = `${stats.dev}:${stats.ino}`;
    const first = stats.nlink > 1 ? tally.inodes.get(key) : undefined;
    if (first !== undefined) {
      linkname = tarNameOf(first, false);
    } else {
      if (stats.nlink > 1) tally.inodes.set(key, path);
      data = stats.size;
    }
  } else if (stats.isSocket() || ((stats.isCharacterDevice() || stats.isBlockDevice()) && !tally.includeDevices)) {
    result.skipped += 1;
    return;
  }
  result.entries += 1;
  result.dataBytes += data;
  result.bytes += tarHeaderBytes({ name: tarNameOf(path, isDirectory), linkname, pax }) + padToBlock(data);
}

/** The packer emits each tree's ancestors (directories) first: count those not counted yet. */
function countAncestors(tally: Tally, root: string): void {
  for (let dir = posix.dirname(root); !tally.ancestors.has(dir); dir = posix.dirname(dir)) {
    tally.ancestors.add(dir);
    tally.result.dirs += 1;
    tally.result.entries += 1;
    tally.result.bytes += tarHeaderBytes({ name: tarNameOf(dir, true) });
  }
}

/** Count one tree, yielding to the event loop every few milliseconds (and checking for an abort then). */
async function countTree(tally: Tally, root: string, signal: AbortSignal | undefined): Promise<void> {
  countAncestors(tally, root);
  let rootStats: Stats;
  try {
    rootStats = await lstat(tally.sourcePath(root));
  } catch {
    return; // a tree that does not exist adds nothing (the packer skips it the same way)
  }
  if (root !== '/') await countEntry(tally, root, rootStats);
  if (!rootStats.isDirectory()) return;
  for await (const entry of walkTree(root, { sourcePath: tally.sourcePath, exclude: isPseudoPath })) {
    await countEntry(tally, entry.path, entry.stats);
    if (performance.now() - tally.sliceStart > 4) {
      if (signal?.aborted) throw new BundleError('ABORTED', 'Measuring was aborted by the caller');
      await new Promise<void>((resolve) => setImmediate(resolve));
      tally.sliceStart = performance.now();
    }
  }
}

async function measure(paths: readonly string[], options: MeasureTreesOptions): Promise<TreeMeasurement> {
  const roots = [...new Set(paths.map(normaliseAbsolute))].filter((p) => !isPseudoPath(p)).sort(comparePaths);
  // A tree inside another is counted with it.
  const distinct = roots.filter((root, i) => !roots.slice(0, i).some((outer) => outer === '/' || root.startsWith(outer + '/')));
  const sourceRoot = options.sourceRoot ?? '/';
  const tally: Tally = {
    result: { bytes: 0, dataBytes: 0, files: 0, dirs: 0, entries: 0, skipped: 0 },
    inodes: new Map(),
    ancestors: new Set(['/']),
    sourcePath: (path) => (sourceRoot === '/' ? path : posix.join(sourceRoot, path)),
    includeDevices: options.includeDevices === true,
    sliceStart: performance.now(),
  };
  for (const root of distinct) await countTree(tally, root, options.signal);
  return tally.result;
}
