/**
 * The packer: streams a program's files, exactly as its profile lists them, into a tar bundle.
 *
 * Every file is read once, in chunks, and hashed on the way; memory stays bounded by the stream
 * high-water marks whatever the file sizes. See docs/bundle.md for the layout.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { err, errAsync, ok, ResultAsync, type Result } from 'neverthrow';
import { InvalidInputError, type InputIssue } from '../errors.js';
import { safeParseProfile, type ResourceProfile, type ResourceProfileInput } from '../policy/profile.js';
import { BundleError, errnoOf, toBundleError } from './errors.js';
import { estimateBundleBytes, makeBundleInfo, padToBlock, tarNameOf, USTAR_MAX_ID, type BundleEstimate } from './estimate.js';
import { encodeTarHeader, type TarHeaderFields } from './tar-header.js';
import { TarOutput } from './tar-output.js';
import { walkTree, type WalkedEntry } from './walk.js';
import {
  BUNDLE_FORMAT_VERSION,
  BUNDLE_INFO_NAME,
  BUNDLE_MANIFEST_NAME,
  type BundleCounts,
  type BundleEntryType,
  type BundleManifest,
  type ManifestEntry,
} from './manifest.js';
import {
  comparePaths,
  emptySkipCounts,
  normaliseAbsolute,
  selectProfilePaths,
  type BundleSelectionOptions,
  type SkipReason,
} from './select.js';
import { isPseudoPath } from '../policy/paths.js';
import { addSeeded, HeldFilesSchema, noSeeded, SEED_PAX, type HeldFiles, type SeededTotals } from './seeds.js';
import { copyChunkSync, readBuffer, type HashedCopy } from './seed-store.js';

/** Options of {@link createBundleStream} and {@link packBundle}. */
export interface PackOptions extends BundleSelectionOptions {
  /** The migration plan, stored opaque in the manifest (must be JSON-serialisable). */
  plan?: unknown;
  /** A profile file missing at pack time: `error` (default) fails with `BUNDLE_SOURCE_MISSING`; `warn` records it in the manifest. */
  onMissing?: 'error' | 'warn';
  /** Directory that stands for `/` when reading files (default `/`), e.g. a mounted snapshot. */
  sourceRoot?: string;
  /** Also carry the targets of symlinks the profile names (default true: the program used them through the link). */
  followSymlinks?: boolean;
  /** Stop packing; the stream is destroyed with an `ABORTED` error. */
  signal?: AbortSignal;
  /** Called about every MiB with the bytes and entries emitted so far. */
  onProgress?: (progress: PackProgress) => void;
  /** Bytes per read from a large file (default 1 MiB). */
  readChunkBytes?: number;
  /**
   * What the destination already holds (its inventory, see `seeds.ts`): a regular file of the
   * same path, size and SHA-256 travels as a seeded entry, without its data.
   */
  held?: HeldFiles;
  /**
   * Bytes the `extraTrees` will add, as measured by {@link measureTrees}; only used for the estimate
   * written into `bundle.json` and the report (default 0).
   */
  extraTreeBytes?: number;
}

/** Progress of a pack. */
export interface PackProgress {
  bytes: number;
  entries: number;
}

/** What a finished pack wrote. */
export interface PackReport {
  /** Every byte of the tar stream. */
  totalBytes: number;
  /** Bytes of the `manifest.json` entry (header and padded data). */
  manifestBytes: number;
  /** `totalBytes - manifestBytes`: what {@link estimateBundleBytes} predicts. */
  bytesWithoutManifest: number;
  /** The estimate made from the profile before packing. */
  estimate: BundleEstimate;
  /** Entries written, including `bundle.json` and `manifest.json`. */
  entryCount: number;
  /** Entries by type and profile files left out by reason. */
  counts: BundleCounts;
  /** Data bytes of regular files (seeded ones included: the manifest describes the tree, not the wire). */
  dataBytes: number;
  /** Files that travelled as seeded entries (their data was already at the destination). */
  seeded: SeededTotals;
  warnings: string[];
}

/** A bundle being produced: read `stream`; `report` settles once the stream has been read to the end. */
export interface BundleStream {
  stream: Readable;
  report: ResultAsync<PackReport, BundleError>;
}

const DEFAULT_CHUNK = 1024 * 1024;
const MAX_SYMLINK_HOPS = 40;
/** Chunk reads in flight per large file: the thread pool reads ahead while this thread hashes. */
const READ_AHEAD = 4;
/** Files at most this large are read with one synchronous call straight into the output batch. */
const SMALL_FILE_BYTES = 1024 * 1024;
/** How many times a small file that shrank under its read is read before the bundle fails. */
const SMALL_FILE_READS = 3;
/** Synchronous file-system work runs at most this long before the event loop gets a turn. */
const SLICE_MS = 4;
/** Bytes the output stream holds before the packer waits for its consumer. */
const OUTPUT_HIGH_WATER_MARK = 2 * 1024 * 1024;

/** Problems with {@link PackOptions} other than `plan`, each naming its field (`''` for the whole value). */
function packOptionsIssues(options: unknown): InputIssue[] {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return [{ path: '', message: 'must be an options object' }];
  const o = options as Record<string, unknown>;
  const issues: InputIssue[] = [];
  for (const key of ['includeSharedLibraries', 'includeDevices', 'followSymlinks'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') issues.push({ path: key, message: 'must be true or false' });
  }
  if (o.onMissing !== undefined && o.onMissing !== 'error' && o.onMissing !== 'warn') issues.push({ path: 'onMissing', message: 'must be error or warn' });
  if (o.sourceRoot !== undefined && (typeof o.sourceRoot !== 'string' || !o.sourceRoot.startsWith('/') || o.sourceRoot.includes('\0'))) {
    issues.push({ path: 'sourceRoot', message: 'must be an absolute path without NUL bytes' });
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) issues.push({ path: 'signal', message: 'must be an AbortSignal' });
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') issues.push({ path: 'onProgress', message: 'must be a function' });
  if (o.readChunkBytes !== undefined && !(Number.isSafeInteger(o.readChunkBytes) && (o.readChunkBytes as number) > 0)) {
    issues.push({ path: 'readChunkBytes', message: 'must be a positive integer' });
  }
  if (o.extraTreeBytes !== undefined && !(Number.isSafeInteger(o.extraTreeBytes) && (o.extraTreeBytes as number) >= 0)) {
    issues.push({ path: 'extraTreeBytes', message: 'must be a non-negative integer' });
  }
  if (o.held !== undefined && !HeldFilesSchema.safeParse(o.held).success) issues.push({ path: 'held', message: 'must map absolute paths to { size, sha256, from }' });
  if (o.extraTrees !== undefined) {
    if (!Array.isArray(o.extraTrees)) {
      issues.push({ path: 'extraTrees', message: 'must be an array of absolute paths' });
    } else {
      const badTree = o.extraTrees.findIndex((tree) => typeof tree !== 'string' || !tree.startsWith('/') || tree.includes('\0'));
      if (badTree !== -1) issues.push({ path: `extraTrees.${badTree}`, message: 'must be an absolute path' });
    }
  }
  return issues;
}

/** Check the arguments of {@link createBundleStream}: the parsed profile and the plan as stored. Never throws. */
function checkPackInput(profileInput: unknown, options: unknown): Result<{ profile: ResourceProfile; plan: unknown; options: PackOptions }, InvalidInputError> {
  // The schema's fast path: same verdicts, no per-file zod cost (a profile may list 100k files).
  const parsed = safeParseProfile(profileInput);
  if (!parsed.success) {
    return err(
      new InvalidInputError(
        'resource profile',
        parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
      ),
    );
  }
  const issues = packOptionsIssues(options);
  if (issues.length > 0) return err(new InvalidInputError('pack options', issues));
  const o = options as PackOptions;
  let plan: unknown = null;
  try {
    plan = o.plan === undefined ? null : JSON.parse(JSON.stringify(o.plan));
  } catch (cause) {
    return err(new InvalidInputError('pack options', [{ path: 'plan', message: 'must be JSON-serialisable' }], { cause }));
  }
  return ok({ profile: parsed.data, plan, options: o });
}

/**
 * Start packing `profile` into a tar stream. Returns at once; errors while packing destroy the
 * stream and settle `report` with a typed {@link BundleError}. A malformed profile or options is
 * an {@link InvalidInputError} naming the field; never throws.
 */
export function createBundleStream(
  profileInput: ResourceProfileInput,
  options: PackOptions = {},
): Result<BundleStream, InvalidInputError> {
  return checkPackInput(profileInput, options).map((input) => new Packer(input.profile, input.plan, input.options).start());
}

/** Whether `value` looks like a writable stream `pipeline` can write to (a Node Writable or a web WritableStream). */
function isWritableStream(value: unknown): value is Writable {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const o = value as Record<string, unknown>;
  if (typeof o.getWriter === 'function') return true; // a web WritableStream, which pipeline also takes
  return typeof o.write === 'function' && typeof o.end === 'function' && typeof o.on === 'function' && typeof o.once === 'function';
}

/** Pack `profile` into `output` (a file, a socket, a transport stream), respecting its backpressure. */
export function packBundle(
  profileInput: ResourceProfileInput,
  output: Writable,
  options: PackOptions = {},
): ResultAsync<PackReport, BundleError | InvalidInputError> {
  const input = checkPackInput(profileInput, options);
  if (input.isErr()) return errAsync(input.error);
  if (!isWritableStream(output)) {
    return errAsync(new InvalidInputError('packBundle arguments', [{ path: 'output', message: 'must be a writable stream' }]));
  }
  const { stream, report } = new Packer(input.value.profile, input.value.plan, input.value.options).start();
  return ResultAsync.fromSafePromise(pipeline(stream, output).then(() => undefined, (e: unknown) => e)).andThen((pipeError) =>
    pipeError === undefined
      ? report
      : // The stream fails with the packer's own BundleError when packing failed; otherwise the output failed.
        errAsync(toBundleError(pipeError, 'BUNDLE_IO', 'writing the bundle')),
  );
}

/** An entry of an extra tree; `isRoot` marks the tree's root, which needs its ancestors first. */
type TreeEntry = WalkedEntry & { isRoot?: boolean };

/** Manifest fields every entry of one object shares. */
type EntryBase = Omit<ManifestEntry, 'path' | 'type' | 'size'>;

class Packer {
  private readonly output = new TarOutput(OUTPUT_HIGH_WATER_MARK);
  private readonly selectionOptions: BundleSelectionOptions;
  private readonly sourceRoot: string;
  private readonly chunkBytes: number;
  /** Paths the profile part emitted (tree entries are checked against it, not added). */
  private readonly emitted = new Set<string>();
  private readonly directoriesSeen = new Set<string>();
  private readonly symlinksSeen = new Map<string, string>();
  /** First name of every inode with more than one link, by `dev:ino`. */
  private readonly inodes = new Map<string, string>();
  /** Manifest entries, each already serialised: a string is far smaller than the object it came from. */
  private readonly entryJson: string[] = [];
  private entryJsonBytes = 0;
  private readonly typeCounts: Record<string, number> = {};
  private readonly skipped = emptySkipCounts();
  private readonly warnings: string[] = [];
  private readonly seeded = noSeeded();
  private readonly createdAt = new Date();
  private readonly estimate: BundleEstimate;
  private dataBytes = 0;
  private entryCount = 0;
  private sliceStart = performance.now();
  /** For hashing held files, allocated on the first one. */
  private hashBuffer: Buffer | undefined;
  /** Roots of the extra trees whose walk has started, and the last tree entry emitted. */
  private readonly treeRoots: string[] = [];
  private treeCursor = '';
  private lastProgress = 0;

  constructor(
    private readonly profile: ResourceProfile,
    private readonly plan: unknown,
    private readonly options: PackOptions,
  ) {
    this.selectionOptions = { includeSharedLibraries: options.includeSharedLibraries ?? false, includeDevices: options.includeDevices ?? false };
    this.sourceRoot = options.sourceRoot ?? '/';
    this.chunkBytes = options.readChunkBytes ?? DEFAULT_CHUNK;
    this.estimate = estimateBundleBytes(profile, { ...this.selectionOptions, extraTreeBytes: options.extraTreeBytes ?? 0 });
  }

  start(): BundleStream {
    let manifestBytes = 0;
    const stream = this.output.stream;
    // Failures reach the consumer through its pipe and the caller through `report`; this only
    // keeps an error nobody listens to from becoming an uncaught exception.
    stream.on('error', () => undefined);
    const readDone = new Promise<void>((resolve, reject) => {
      stream.once('end', resolve);
      stream.once('close', () => {
        if (!stream.readableEnded) reject(new BundleError('BUNDLE_IO', 'The bundle stream was closed before its end'));
      });
    });
    readDone.catch(() => undefined);
    const onAbort = () => stream.destroy(new BundleError('ABORTED', 'Packing was aborted by the caller'));
    if (this.options.signal?.aborted) queueMicrotask(onAbort);
    this.options.signal?.addEventListener('abort', onAbort, { once: true });

    const run = this.run().then((bytes) => (manifestBytes = bytes));
    run.catch((e: unknown) => stream.destroy(toBundleError(e, 'BUNDLE_IO', 'packing')));
    const settled = Promise.all([run, readDone]).finally(() => this.options.signal?.removeEventListener('abort', onAbort));
    const report = ResultAsync.fromPromise(settled, (e) =>
      this.options.signal?.aborted ? new BundleError('ABORTED', 'Packing was aborted by the caller', { cause: e }) : toBundleError(e, 'BUNDLE_IO', 'packing'),
    ).map(
      (): PackReport => ({
        totalBytes: this.output.bytes,
        manifestBytes,
        bytesWithoutManifest: this.output.bytes - manifestBytes,
        estimate: this.estimate,
        entryCount: this.entryCount,
        counts: this.counts(),
        dataBytes: this.dataBytes,
        seeded: this.seeded,
        warnings: this.warnings,
      }),
    );
    return { stream, report };
  }

  /**
   * Called before every entry: stop on abort or a closed stream, wait for the consumer, and give the
   * event loop a turn after {@link SLICE_MS} of synchronous file-system work.
   */
  private async pace(): Promise<void> {
    this.throwIfAborted();
    this.output.checkOpen();
    if (performance.now() - this.sliceStart >= SLICE_MS) {
      this.output.flush();
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.sliceStart = performance.now();
    }
    await this.output.room();
    this.progress();
  }

  /** Tell the caller about every MiB written. */
  private progress(): void {
    if (this.options.onProgress && this.output.bytes - this.lastProgress >= 1024 * 1024) {
      this.lastProgress = this.output.bytes;
      this.options.onProgress({ bytes: this.output.bytes, entries: this.entryCount });
    }
  }

  /** Writes every entry; resolves with the bytes of the manifest entry. */
  private async run(): Promise<number> {
    await this.pace();
    const info = makeBundleInfo(this.profile, this.createdAt, this.estimate.entries, this.estimate.bytes);
    this.writeBuffer(BUNDLE_INFO_NAME, Buffer.from(JSON.stringify(info)));
    const rootStats = this.lstatSource('/', '/');
    if (!rootStats) throw new BundleError('BUNDLE_SOURCE_MISSING', `The source root ${this.sourceRoot} does not exist`);
    await this.emitOnce('/', rootStats);
    const selection = selectProfilePaths(this.profile, this.selectionOptions);
    for (const [reason, count] of Object.entries(selection.skipped)) this.skipped[reason as SkipReason] += count;
    // The profile's paths and the trees' entries, merged in path order, so that every directory's
    // entries stay contiguous (GNU tar restores a directory's time once it has left it).
    const trees = this.treeEntries(await this.resolveTreeRoots());
    let tree = await trees.next();
    for (const selected of selection.paths) {
      while (!tree.done && comparePaths(tree.value.path, selected.path) <= 0) {
        await this.emitTreeEntry(tree.value);
        tree = await trees.next();
      }
      await this.pace();
      await this.visit(selected.path, this.options.followSymlinks !== false);
    }
    for (; !tree.done; tree = await trees.next()) await this.emitTreeEntry(tree.value);
    await this.pace();
    const manifestBytes = await this.writeManifest();
    this.output.end();
    return manifestBytes;
  }

  /**
   * Write `manifest.json` piece by piece, with backpressure: the bytes are exactly
   * `JSON.stringify(manifest)`, but the entries are never joined into one string.
   */
  private async writeManifest(): Promise<number> {
    const head: Omit<BundleManifest, 'entries' | 'counts' | 'dataBytes' | 'warnings'> = {
      kind: 'ap-migrate-manifest',
      formatVersion: BUNDLE_FORMAT_VERSION,
      createdAt: this.createdAt.toISOString(),
      profile: this.profile,
      plan: this.plan,
    };
    const tail: Pick<BundleManifest, 'counts' | 'dataBytes' | 'warnings'> = { counts: this.counts(), dataBytes: this.dataBytes, warnings: this.warnings };
    const prefix = Buffer.from(JSON.stringify(head).slice(0, -1) + ',"entries":[');
    const suffix = Buffer.from('],' + JSON.stringify(tail).slice(1));
    const commas = Math.max(0, this.entryJson.length - 1);
    const size = prefix.length + this.entryJsonBytes + commas + suffix.length;
    const header = encodeTarHeader({ name: BUNDLE_MANIFEST_NAME, type: 'file', mode: 0o100644, uid: 0, gid: 0, mtime: Math.floor(this.createdAt.getTime() / 1000), size });
    this.output.write(header);
    this.output.write(prefix);
    const entries = this.entryJson.splice(0);
    for (let start = 0; start < entries.length; start += 1000) {
      const piece = entries.slice(start, start + 1000).join(',');
      this.output.write(Buffer.from(start === 0 ? piece : ',' + piece));
      await this.pace();
    }
    this.output.write(suffix);
    this.output.zeros(padToBlock(size) - size);
    this.entryCount += 1;
    return header.length + padToBlock(size);
  }

  private counts(): BundleCounts {
    return { entries: { ...this.typeCounts }, skipped: { ...this.skipped } };
  }

  private throwIfAborted(): void {
    if (this.options.signal?.aborted) throw new BundleError('ABORTED', 'Packing was aborted by the caller');
  }

  private sourcePath(path: string): string {
    return this.sourceRoot === '/' ? path : posix.join(this.sourceRoot, path);
  }

  /** lstat a destination path in the source tree; undefined when it does not exist. */
  private lstatSource(path: string, named: string): Stats | undefined {
    try {
      return lstatSync(this.sourcePath(path), { throwIfNoEntry: false });
    } catch (e) {
      if (errnoOf(e) === 'ENOTDIR') return undefined;
      throw new BundleError('BUNDLE_SOURCE_UNREADABLE', `Cannot read ${path} (for ${named}): ${String(e)}`, { cause: e, details: { path } });
    }
  }

  private readLink(path: string): string {
    try {
      return readlinkSync(this.sourcePath(path));
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `reading the symlink ${path}`);
    }
  }

  private missing(named: string, at: string): void {
    const message = at === named ? `${named} does not exist` : `${named} does not exist (${at} is missing)`;
    if (this.options.onMissing === 'warn') {
      this.warnings.push(message);
      this.skipped.missing += 1;
      return;
    }
    throw new BundleError('BUNDLE_SOURCE_MISSING', `A file in the profile is missing at pack time: ${message}`, { details: { path: named, missing: at } });
  }

  /**
   * Walk `named` one component at a time the way the kernel does, emitting every ancestor
   * directory and every symlink met on the way, so the destination gets the same tree shape
   * (e.g. `/lib -> usr/lib` then `/usr/lib/...`) and no entry is written through a symlink.
   * Resolves with the path `named` leads to (undefined when it is missing or pseudo). With
   * `emit: false` it only resolves: nothing is emitted, cached or reported missing.
   */
  private async visit(named: string, followFinal: boolean, emit = true): Promise<string | undefined> {
    const pending = named.split('/').filter(Boolean);
    let current = '/';
    let hops = 0;
    let viaFinalSymlink = false;
    while (pending.length > 0) {
      const component = pending.shift() as string;
      if (component === '.') continue;
      if (component === '..') {
        current = posix.dirname(current);
        continue;
      }
      const next = current === '/' ? `/${component}` : `${current}/${component}`;
      // A symlink into /proc or /sys: the destination's kernel provides it.
      if (isPseudoPath(next)) return undefined;
      const isLast = pending.length === 0;
      // Ancestors shared by many files are looked up once.
      if (emit && !isLast && this.directoriesSeen.has(next)) {
        current = next;
        continue;
      }
      const knownTarget = emit ? this.symlinksSeen.get(next) : undefined;
      const stats = knownTarget === undefined ? this.lstatSource(next, named) : undefined;
      if (knownTarget !== undefined || stats?.isSymbolicLink()) {
        const target = knownTarget ?? this.readLink(next);
        if (stats && emit) {
          this.symlinksSeen.set(next, target);
          await this.emitOnce(next, stats, target);
        }
        if (isLast && !followFinal) return next;
        if (++hops > MAX_SYMLINK_HOPS) {
          throw new BundleError('BUNDLE_SOURCE_UNREADABLE', `Too many symlinks resolving ${named}`, { details: { path: named } });
        }
        if (isLast) viaFinalSymlink = true;
        if (target.startsWith('/')) current = '/';
        pending.unshift(...target.split('/').filter(Boolean));
        continue;
      }
      if (!emit && (!stats || (!isLast && !stats.isDirectory()))) return undefined;
      if (!stats) {
        if (viaFinalSymlink) this.warnings.push(`dangling symlink: ${named} points to the missing ${next}`);
        else this.missing(named, next);
        return undefined;
      }
      if (!isLast && !stats.isDirectory()) {
        if (viaFinalSymlink) this.warnings.push(`dangling symlink: ${named} goes through the non-directory ${next}`);
        else this.missing(named, next);
        return undefined;
      }
      if (emit) {
        if (stats.isDirectory()) this.directoriesSeen.add(next);
        await this.emitOnce(next, stats);
      }
      current = next;
    }
    return current;
  }

  /**
   * Where each of the `extraTrees` really is (symlinked ancestors resolved, nothing emitted yet),
   * sorted, with trees inside other trees dropped (they are walked as part of the outer one).
   */
  private async resolveTreeRoots(): Promise<string[]> {
    const roots: string[] = [];
    for (const tree of this.options.extraTrees ?? []) {
      const normal = normaliseAbsolute(tree);
      if (isPseudoPath(normal)) {
        this.skipped.pseudo += 1;
        continue;
      }
      if (normal === '/') {
        roots.push('/');
        continue;
      }
      const parent = await this.visit(posix.dirname(normal), true, false);
      const root = parent === undefined ? undefined : posix.join(parent, posix.basename(normal));
      if (root === undefined || !this.lstatSource(root, tree)) {
        this.missing(tree, root ?? tree);
        continue;
      }
      roots.push(root);
    }
    roots.sort(comparePaths);
    return roots.filter((root, i) => !roots.slice(0, i).some((outer) => outer === root || outer === '/' || root.startsWith(outer + '/')));
  }

  /** Every entry of the trees, in path order: each root (flagged), then what is below it. */
  private async *treeEntries(roots: string[]): AsyncGenerator<TreeEntry> {
    for (const root of roots) {
      const stats = this.lstatSource(root, root);
      if (!stats) {
        this.missing(root, root);
        continue;
      }
      yield { path: root, stats, isRoot: true };
      if (!stats.isDirectory()) continue;
      const walk = walkTree(root, {
        sourcePath: (path) => this.sourcePath(path),
        exclude: (path) => {
          if (!isPseudoPath(path)) return false;
          this.skipped.pseudo += 1;
          return true;
        },
        onVanished: (path) => {
          this.warnings.push(`${path} vanished while its tree was packed`);
          this.skipped.missing += 1;
        },
      });
      yield* walk;
    }
  }

  /** Emit one tree entry (a root after its ancestors); symlinks are stored, never followed. */
  private async emitTreeEntry(entry: TreeEntry): Promise<void> {
    await this.pace();
    if (entry.isRoot) {
      if (entry.path !== '/') await this.visit(posix.dirname(entry.path), true);
      this.treeRoots.push(entry.path);
    }
    this.treeCursor = entry.path;
    await this.emitOnce(entry.path, entry.stats, undefined, false);
  }

  /**
   * Whether a tree already emitted `path`: it lies in a tree being (or done being) walked, at or
   * before the walk's position. Tree entries are not remembered one by one, to keep memory flat.
   */
  private treeCovers(path: string): boolean {
    if (this.treeRoots.length === 0 || comparePaths(path, this.treeCursor) > 0) return false;
    return this.treeRoots.some((root) => root === '/' || path === root || path.startsWith(root + '/'));
  }

  private count(type: BundleEntryType): void {
    this.typeCounts[type] = (this.typeCounts[type] ?? 0) + 1;
    this.entryCount += 1;
  }

  /** Write a header-only entry and record it. */
  private writeEntry(fields: TarHeaderFields, entry: ManifestEntry): void {
    this.output.write(encodeTarHeader(fields));
    this.record(entry);
  }

  /** Add an entry to the manifest and the counts. */
  private record(entry: ManifestEntry): void {
    const json = JSON.stringify(entry);
    this.entryJson.push(json);
    this.entryJsonBytes += Buffer.byteLength(json);
    this.count(entry.type);
  }

  /**
   * Emit one tar entry for `path` (once), choosing its type from lstat. `remember: false` (tree
   * entries) checks the paths emitted so far without adding to them, so a large tree costs no
   * memory per entry beyond its manifest line.
   */
  private async emitOnce(path: string, stats: Stats, symlinkTarget?: string, remember = true): Promise<void> {
    if (this.emitted.has(path)) return;
    if (remember) {
      if (this.treeCovers(path)) return;
      this.emitted.add(path);
    }
    const base: EntryBase = {
      mode: stats.mode & 0o7777,
      uid: stats.uid,
      gid: stats.gid,
      // Tar's octal field cannot hold times before 1970.
      mtime: Math.max(0, Math.floor(stats.mtimeMs / 1000)),
    };
    const fields: TarHeaderFields = {
      name: tarNameOf(path, stats.isDirectory()),
      type: 'file',
      mode: stats.mode,
      uid: base.uid,
      gid: base.gid,
      mtime: base.mtime,
      size: 0,
    };
    if (base.uid > USTAR_MAX_ID || base.gid > USTAR_MAX_ID) fields.pax = { uid: String(base.uid), gid: String(base.gid) };

    if (stats.isDirectory()) {
      this.writeEntry({ ...fields, type: 'directory' }, { path, type: 'directory', size: 0, ...base });
    } else if (stats.isSymbolicLink()) {
      const target = symlinkTarget ?? this.readLink(path);
      this.writeEntry({ ...fields, type: 'symlink', linkname: target }, { path, type: 'symlink', size: 0, ...base, linkTarget: target });
    } else if (stats.isFIFO()) {
      this.writeEntry({ ...fields, type: 'fifo' }, { path, type: 'fifo', size: 0, ...base });
    } else if (stats.isCharacterDevice() || stats.isBlockDevice()) {
      if (!this.selectionOptions.includeDevices) {
        this.skipped.device += 1;
        return;
      }
      const type = stats.isCharacterDevice() ? 'character-device' : 'block-device';
      const devmajor = Math.floor(stats.rdev / 256) & 0xfff;
      const devminor = (stats.rdev & 0xff) | (Math.floor(stats.rdev / 4096) & ~0xff);
      this.writeEntry({ ...fields, type, devmajor, devminor }, { path, type, size: 0, ...base, devmajor, devminor });
    } else if (stats.isSocket()) {
      this.skipped.socket += 1;
    } else if (stats.isFile()) {
      const inode = `${stats.dev}:${stats.ino}`;
      const first = stats.nlink > 1 ? this.inodes.get(inode) : undefined;
      if (first !== undefined) {
        this.writeEntry({ ...fields, type: 'link', linkname: tarNameOf(first, false) }, { path, type: 'link', size: 0, ...base, linkTarget: first });
        return;
      }
      if (stats.nlink > 1) this.inodes.set(inode, path);
      if (await this.writeSeededIfHeld(path, stats, fields, base)) return;
      if (stats.size > SMALL_FILE_BYTES || !this.writeSmallFile(path, stats, fields, base)) await this.writeLargeFile(path, stats, fields, base);
    }
  }

  /**
   * When the destination holds this path with the same size and SHA-256, write a seeded entry:
   * the header and its claim, no data. The file is hashed here first (read once more only when
   * it differs, by the normal path).
   */
  private async writeSeededIfHeld(path: string, stats: Stats, fields: TarHeaderFields, base: EntryBase): Promise<boolean> {
    const held = this.options.held?.[path];
    if (!held || held.size !== stats.size) return false;
    // Synchronous reads, as for small files: a thousand held libraries would otherwise cost
    // several thread-pool round trips each, more than hashing them.
    let fd: number;
    try {
      fd = openSync(this.sourcePath(path), this.openFlags());
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `opening ${path}`);
    }
    const local: HashedCopy = { hash: createHash('sha256'), size: 0 };
    try {
      this.checkOpened(path, stats, fstatSync(fd));
      while (copyChunkSync(fd, undefined, (this.hashBuffer ??= readBuffer()), local)) await this.pace();
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `reading ${path}`);
    } finally {
      closeSync(fd);
    }
    if (local.size !== held.size || local.hash.digest('hex') !== held.sha256) return false;
    const pax = { ...(fields.pax ?? {}), [SEED_PAX.from]: held.from, [SEED_PAX.sha256]: held.sha256, [SEED_PAX.size]: String(held.size) };
    this.output.write(encodeTarHeader({ ...fields, type: 'file', size: 0, pax }));
    this.dataBytes += held.size;
    this.record({ path, type: 'file', size: held.size, ...base, sha256: held.sha256 });
    addSeeded(this.seeded, held.from, held.size);
    await this.output.room();
    return true;
  }

  private writeBuffer(name: string, data: Buffer): void {
    this.output.write(encodeTarHeader({ name, type: 'file', mode: 0o100644, uid: 0, gid: 0, mtime: Math.floor(this.createdAt.getTime() / 1000), size: data.length }));
    this.output.write(data);
    this.output.zeros(padToBlock(data.length) - data.length);
    this.entryCount += 1;
  }

  private checkOpened(path: string, stats: Stats, opened: Stats): void {
    if (!opened.isFile() || opened.ino !== stats.ino || opened.dev !== stats.dev) {
      throw new BundleError('BUNDLE_SOURCE_CHANGED', `${path} was replaced while packing`, { details: { path } });
    }
  }

  private openFlags(): number {
    // O_NOFOLLOW: the path was a regular file when lstat'ed; never follow a symlink swapped in since.
    // O_NONBLOCK: a FIFO swapped in must not hang the open.
    return constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
  }

  /**
   * A small file, synchronously: open, fstat, read straight into one batch region behind its
   * header, hash, close. Four system calls and no thread-pool round trip, like GNU tar; the
   * caller's {@link pace} bounds how long the event loop waits. Nothing is committed until the
   * whole file is read, so a file the running program rewrites (truncate, then write) and that
   * shrank under the read is read again (up to {@link SMALL_FILE_READS} times) instead of failing
   * the bundle. Returns false when the file has grown past {@link SMALL_FILE_BYTES} since its
   * lstat (it is then streamed).
   */
  private writeSmallFile(path: string, stats: Stats, fields: TarHeaderFields, base: EntryBase): boolean {
    for (let attempt = 1; ; attempt++) {
      const read = this.readSmallFile(path, stats, fields);
      if (read === 'large') return false;
      if ('sha256' in read) {
        this.dataBytes += read.size;
        this.record({ path, type: 'file', size: read.size, ...base, sha256: read.sha256 });
        return true;
      }
      if (attempt >= SMALL_FILE_READS) throw this.shrank(path, read.size, read.read);
    }
  }

  /**
   * One read of a small file into a reserved region (header, data, padding), committed only when
   * complete. When the file shrank under the read: its size and what was read (nothing committed).
   */
  private readSmallFile(path: string, stats: Stats, fields: TarHeaderFields): { size: number; sha256: string } | { size: number; read: number } | 'large' {
    let fd: number;
    try {
      fd = openSync(this.sourcePath(path), this.openFlags());
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `opening ${path}`);
    }
    try {
      const opened = fstatSync(fd);
      this.checkOpened(path, stats, opened);
      const size = opened.size;
      if (size > SMALL_FILE_BYTES) return 'large';
      const header = encodeTarHeader({ ...fields, type: 'file', size });
      const region = this.output.reserve(header.length + padToBlock(size));
      const data = region.subarray(header.length, header.length + size);
      for (let filled = 0; filled < size; ) {
        const bytesRead = readSync(fd, data, filled, size - filled, filled);
        if (bytesRead === 0) return { size, read: filled };
        filled += bytesRead;
      }
      header.copy(region);
      region.fill(0, header.length + size);
      const sha256 = createHash('sha256').update(data).digest('hex');
      this.output.commit(region.length);
      return { size, sha256 };
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `reading ${path}`);
    } finally {
      closeSync(fd);
    }
  }

  private shrank(path: string, size: number, read: number): BundleError {
    return new BundleError('BUNDLE_SOURCE_CHANGED', `${path} shrank while packing (${read} of ${size} bytes read)`, {
      details: { path, expected: size, read },
    });
  }

  /**
   * A large file, streamed: a few chunk reads in flight in the thread pool while this thread
   * hashes and hands on the previous one; never held whole.
   */
  private async writeLargeFile(path: string, stats: Stats, fields: TarHeaderFields, base: EntryBase): Promise<void> {
    let handle: FileHandle;
    try {
      handle = await open(this.sourcePath(path), this.openFlags());
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `opening ${path}`);
    }
    const ahead: Promise<Buffer>[] = [];
    try {
      const opened = await handle.stat();
      this.checkOpened(path, stats, opened);
      const size = opened.size;
      this.output.write(encodeTarHeader({ ...fields, type: 'file', size }));
      const hash = createHash('sha256');
      const readAt = async (at: number): Promise<Buffer> => {
        const want = Math.min(this.chunkBytes, size - at);
        // A fresh buffer per read: the consumer may hold the previous ones until it has written them.
        const buffer = Buffer.allocUnsafe(want);
        const { bytesRead } = await handle.read(buffer, 0, want, at);
        return bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
      };
      let requested = 0;
      const refill = () => {
        while (ahead.length < READ_AHEAD && requested < size) {
          const read = readAt(requested);
          read.catch(() => undefined);
          ahead.push(read);
          requested += Math.min(this.chunkBytes, size - requested);
        }
      };
      let offset = 0;
      refill();
      while (offset < size) {
        const chunk = await (ahead.shift() as Promise<Buffer>);
        // A short read means the file shrank; later reads would be misplaced.
        if (chunk.length < Math.min(this.chunkBytes, size - offset)) throw this.shrank(path, size, offset + chunk.length);
        offset += chunk.length;
        refill();
        hash.update(chunk);
        this.output.write(chunk);
        await this.output.room();
        this.throwIfAborted();
        this.progress();
      }
      this.output.zeros(padToBlock(size) - size);
      this.dataBytes += size;
      this.record({ path, type: 'file', size, ...base, sha256: hash.digest('hex') });
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `reading ${path}`);
    } finally {
      // Reads still in flight finish before the handle closes.
      await Promise.allSettled(ahead);
      await handle.close();
    }
  }
}
