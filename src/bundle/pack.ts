/**
 * The packer: streams a program's files, exactly as its profile lists them, into a tar bundle.
 *
 * Every file is read once, in chunks, and hashed on the way; memory stays bounded by the stream
 * high-water marks whatever the file sizes. See docs/bundle.md for the layout.
 *
 * @module
 */
import { createHash, type Hash } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, open, readlink, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { err, errAsync, ok, ResultAsync, type Result } from 'neverthrow';
import * as tar from 'tar-stream';
import { InvalidInputError } from '../errors.js';
import { ResourceProfileSchema, type ResourceProfile, type ResourceProfileInput } from '../policy/profile.js';
import { BundleError, errnoOf, toBundleError } from './errors.js';
import { estimateBundleBytes, makeBundleInfo, padToBlock, tarHeaderBytes, tarNameOf, USTAR_MAX_ID, type BundleEstimate } from './estimate.js';
import {
  BUNDLE_FORMAT_VERSION,
  BUNDLE_INFO_NAME,
  BUNDLE_MANIFEST_NAME,
  type BundleCounts,
  type BundleEntryType,
  type BundleManifest,
  type ManifestEntry,
} from './manifest.js';
import { emptySkipCounts, isPseudoFilesystemPath, selectProfilePaths, type BundleSelectionOptions, type SkipReason } from './select.js';

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
  /** Bytes per read from a file (default 256 KiB). */
  readChunkBytes?: number;
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
  /** Data bytes of regular files. */
  dataBytes: number;
  warnings: string[];
}

/** A bundle being produced: read `stream`; `report` settles once the stream has been read to the end. */
export interface BundleStream {
  stream: Readable;
  report: ResultAsync<PackReport, BundleError>;
}

const DEFAULT_CHUNK = 256 * 1024;
/** Pause metadata-only entries (which tar-stream buffers without backpressure) above this. */
const PACK_BUFFER_LIMIT = 4 * 1024 * 1024;
const MAX_SYMLINK_HOPS = 40;
/** Small chunks are gathered up to this size before they are passed on. */
const BATCH_BYTES = 64 * 1024;
/** Profile paths whose lstat is started ahead of their turn. */
const LSTAT_AHEAD = 16;
/** Chunk reads in flight per large file. */
const READ_AHEAD = 4;
/** Files at most this large are read whole ahead of their turn. */
const PREFETCH_BYTES = 256 * 1024;
/** Entries queued ahead of the one being written (each may hold an open file). */
const MAX_PENDING_JOBS = 32;
/** Bytes read ahead across queued files. */
const MAX_PENDING_BYTES = 8 * 1024 * 1024;

/**
 * Start packing `profile` into a tar stream. Returns at once; errors while packing destroy the
 * stream and settle `report` with a typed {@link BundleError}.
 */
export function createBundleStream(
  profileInput: ResourceProfileInput,
  options: PackOptions = {},
): Result<BundleStream, InvalidInputError> {
  const parsed = ResourceProfileSchema.safeParse(profileInput);
  if (!parsed.success) {
    return err(
      new InvalidInputError(
        'resource profile',
        parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
      ),
    );
  }
  let plan: unknown = null;
  try {
    plan = options.plan === undefined ? null : JSON.parse(JSON.stringify(options.plan));
  } catch (cause) {
    return err(new InvalidInputError('pack options', [{ path: 'plan', message: 'must be JSON-serialisable' }], { cause }));
  }
  if (options.readChunkBytes !== undefined && !(Number.isInteger(options.readChunkBytes) && options.readChunkBytes > 0)) {
    return err(new InvalidInputError('pack options', [{ path: 'readChunkBytes', message: 'must be a positive integer' }]));
  }
  return ok(new Packer(parsed.data, plan, options).start());
}

/** Pack `profile` into `output` (a file, a socket, a transport stream), respecting its backpressure. */
export function packBundle(
  profileInput: ResourceProfileInput,
  output: Writable,
  options: PackOptions = {},
): ResultAsync<PackReport, BundleError | InvalidInputError> {
  const created = createBundleStream(profileInput, options);
  if (created.isErr()) return errAsync(created.error);
  const { stream, report } = created.value;
  return ResultAsync.fromSafePromise(pipeline(stream, output).then(() => undefined, (e: unknown) => e)).andThen((pipeError) =>
    pipeError === undefined
      ? report
      : // The stream fails with the packer's own BundleError when packing failed; otherwise the output failed.
        errAsync(toBundleError(pipeError, 'BUNDLE_IO', 'writing the bundle')),
  );
}

/** What tar-stream accepts as an entry header. */
type EntryHeader = Partial<tar.Header> & { name: string; pax?: Record<string, string> };

class Packer {
  private readonly pack = tar.pack();
  private readonly selectionOptions: BundleSelectionOptions;
  private readonly sourceRoot: string;
  private readonly chunkBytes: number;
  private readonly emitted = new Set<string>();
  private readonly directoriesSeen = new Set<string>();
  private readonly symlinksSeen = new Map<string, string>();
  private readonly lstatAhead = new Map<string, Promise<Stats>>();
  private readonly inodes = new Map<string, string>();
  private readonly entries: ManifestEntry[] = [];
  private readonly typeCounts: Record<string, number> = {};
  private readonly skipped = emptySkipCounts();
  private readonly warnings: string[] = [];
  private readonly createdAt = new Date();
  private readonly estimate: BundleEstimate;
  private dataBytes = 0;
  private emittedBytes = 0;
  private entryCount = 0;
  private drainWaiters: (() => void)[] = [];
  private writeChain: Promise<void> = Promise.resolve();
  private pendingJobs = 0;
  private pendingBytes = 0;
  private slotWaiters: (() => void)[] = [];
  private failed = false;

  constructor(
    private readonly profile: ResourceProfile,
    private readonly plan: unknown,
    private readonly options: PackOptions,
  ) {
    this.selectionOptions = { includeSharedLibraries: options.includeSharedLibraries ?? false, includeDevices: options.includeDevices ?? false };
    this.sourceRoot = options.sourceRoot ?? '/';
    this.chunkBytes = options.readChunkBytes ?? DEFAULT_CHUNK;
    this.estimate = estimateBundleBytes(profile, this.selectionOptions);
    // Failures reach the caller through the stream and the report; this only keeps an error
    // raised after the stream has closed from becoming an uncaught exception.
    this.pack.on('error', () => undefined);
  }

  start(): BundleStream {
    let manifestBytes = 0;
    let settleReading!: (error?: unknown) => void;
    const readDone = new Promise<void>((resolve, reject) => (settleReading = (e) => (e === undefined ? resolve() : reject(e))));
    readDone.catch(() => undefined);
    const stream = Readable.from(this.countBytes(settleReading), { objectMode: false, highWaterMark: 1024 * 1024 });
    // A consumer that stops early must also stop the packer, or it would wait for room forever.
    stream.on('close', () => {
      if (!stream.readableEnded) this.pack.destroy(new BundleError('BUNDLE_IO', 'The bundle stream was closed before its end'));
    });
    const onAbort = () => stream.destroy(new BundleError('ABORTED', 'Packing was aborted by the caller'));
    if (this.options.signal?.aborted) queueMicrotask(onAbort);
    this.options.signal?.addEventListener('abort', onAbort, { once: true });

    const run = this.run().then((bytes) => (manifestBytes = bytes));
    run.catch((e: unknown) => this.pack.destroy(toBundleError(e, 'BUNDLE_IO', 'packing')));
    const settled = Promise.all([run, readDone]).finally(() => this.options.signal?.removeEventListener('abort', onAbort));
    const report = ResultAsync.fromPromise(settled, (e) =>
      this.options.signal?.aborted ? new BundleError('ABORTED', 'Packing was aborted by the caller', { cause: e }) : toBundleError(e, 'BUNDLE_IO', 'packing'),
    ).map(
      (): PackReport => ({
        totalBytes: this.emittedBytes,
        manifestBytes,
        bytesWithoutManifest: this.emittedBytes - manifestBytes,
        estimate: this.estimate,
        entryCount: this.entryCount,
        counts: this.counts(),
        dataBytes: this.dataBytes,
        warnings: this.warnings,
      }),
    );
    return { stream, report };
  }

  /** Re-yield tar-stream's output, counting bytes and waking metadata writers once it drains. */
  private async *countBytes(settle: (error?: unknown) => void): AsyncGenerator<Buffer> {
    let lastProgress = 0;
    let completed = false;
    try {
      // Headers and small files arrive as many small chunks: send them in batches, so a consumer
      // writing to a file or socket makes one system call per batch instead of three per file.
      let batch: Buffer[] = [];
      let batched = 0;
      const flush = (): Buffer => {
        const out = batch.length === 1 ? (batch[0] as Buffer) : Buffer.concat(batch, batched);
        batch = [];
        batched = 0;
        return out;
      };
      for await (const chunk of this.pack as AsyncIterable<Buffer>) {
        this.emittedBytes += chunk.length;
        if (chunk.length >= BATCH_BYTES) {
          if (batched > 0) yield flush();
          yield chunk;
        } else {
          batch.push(chunk);
          batched += chunk.length;
          if (batched >= BATCH_BYTES) yield flush();
        }
        if (this.drainWaiters.length && this.packBuffered() < PACK_BUFFER_LIMIT) {
          for (const wake of this.drainWaiters.splice(0)) wake();
        }
        if (this.options.onProgress && this.emittedBytes - lastProgress >= 1024 * 1024) {
          lastProgress = this.emittedBytes;
          this.options.onProgress({ bytes: this.emittedBytes, entries: this.entryCount });
        }
      }
      if (batched > 0) yield flush();
      completed = true;
      settle();
    } catch (e) {
      settle(e);
      throw e;
    } finally {
      if (!completed) settle(new BundleError('BUNDLE_IO', 'The bundle stream was closed before its end'));
      for (const wake of this.drainWaiters.splice(0)) wake();
    }
  }

  /** Bytes tar-stream holds that nobody has read yet (streamx internals; 0 if they change). */
  private packBuffered(): number {
    const state = (this.pack as unknown as { _readableState?: { buffered?: unknown } })._readableState;
    return typeof state?.buffered === 'number' ? state.buffered : 0;
  }

  private async waitForRoom(): Promise<void> {
    if (this.packBuffered() < PACK_BUFFER_LIMIT) return;
    await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
  }

  /** Writes every entry; resolves with the bytes of the manifest entry. */
  private async run(): Promise<number> {
    const info = makeBundleInfo(this.profile, this.createdAt, this.estimate.entries, this.estimate.bytes);
    await this.writeBuffer(BUNDLE_INFO_NAME, Buffer.from(JSON.stringify(info)));
    const rootStats = await this.lstatSource('/', '/');
    if (!rootStats) throw new BundleError('BUNDLE_SOURCE_MISSING', `The source root ${this.sourceRoot} does not exist`);
    await this.emitOnce('/', rootStats);
    const selection = selectProfilePaths(this.profile, this.selectionOptions);
    for (const [reason, count] of Object.entries(selection.skipped)) this.skipped[reason as SkipReason] += count;
    try {
      const paths = selection.paths;
      for (const [index, selected] of paths.entries()) {
        this.throwIfAborted();
        // Look a few paths ahead: their lstat round trips overlap this one's walk.
        for (const upcoming of paths.slice(index + 1, index + 1 + LSTAT_AHEAD)) {
          if (this.lstatAhead.has(upcoming.path)) continue;
          const pending = lstat(this.sourcePath(upcoming.path));
          pending.catch(() => undefined);
          this.lstatAhead.set(upcoming.path, pending);
        }
        await this.visit(selected.path);
      }
      this.lstatAhead.clear();
    } finally {
      // On failure too: queued files must be closed before the error surfaces.
      await this.writeChain.catch(() => undefined);
    }
    await this.writeChain;
    const manifest: BundleManifest = {
      kind: 'ap-migrate-manifest',
      formatVersion: BUNDLE_FORMAT_VERSION,
      createdAt: this.createdAt.toISOString(),
      profile: this.profile,
      plan: this.plan,
      entries: this.entries,
      counts: this.counts(),
      dataBytes: this.dataBytes,
      warnings: this.warnings,
    };
    const manifestData = Buffer.from(JSON.stringify(manifest));
    await this.writeBuffer(BUNDLE_MANIFEST_NAME, manifestData);
    this.pack.finalize();
    return tarHeaderBytes({ name: BUNDLE_MANIFEST_NAME }) + padToBlock(manifestData.length);
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
  private async lstatSource(path: string, named: string): Promise<Stats | undefined> {
    const prefetched = this.lstatAhead.get(path);
    this.lstatAhead.delete(path);
    try {
      return await (prefetched ?? lstat(this.sourcePath(path)));
    } catch (e) {
      const errno = errnoOf(e);
      if (errno === 'ENOENT' || errno === 'ENOTDIR') return undefined;
      throw new BundleError('BUNDLE_SOURCE_UNREADABLE', `Cannot read ${path} (for ${named}): ${String(e)}`, { cause: e, details: { path } });
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
   */
  private async visit(named: string): Promise<void> {
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
      if (isPseudoFilesystemPath(next)) return;
      const isLast = pending.length === 0;
      // Ancestors shared by many files are looked up once.
      if (!isLast && this.directoriesSeen.has(next)) {
        current = next;
        continue;
      }
      const knownTarget = this.symlinksSeen.get(next);
      const stats = knownTarget === undefined ? await this.lstatSource(next, named) : undefined;
      if (knownTarget !== undefined || stats?.isSymbolicLink()) {
        const target = knownTarget ?? (await readlink(this.sourcePath(next)));
        if (stats) {
          this.symlinksSeen.set(next, target);
          await this.emitOnce(next, stats, target);
        }
        if (isLast && this.options.followSymlinks === false) return;
        if (++hops > MAX_SYMLINK_HOPS) {
          throw new BundleError('BUNDLE_SOURCE_UNREADABLE', `Too many symlinks resolving ${named}`, { details: { path: named } });
        }
        if (isLast) viaFinalSymlink = true;
        if (target.startsWith('/')) current = '/';
        pending.unshift(...target.split('/').filter(Boolean));
        continue;
      }
      if (!stats) {
        if (viaFinalSymlink) this.warnings.push(`dangling symlink: ${named} points to the missing ${next}`);
        else this.missing(named, next);
        return;
      }
      if (!isLast && !stats.isDirectory()) {
        if (viaFinalSymlink) this.warnings.push(`dangling symlink: ${named} goes through the non-directory ${next}`);
        else this.missing(named, next);
        return;
      }
      if (stats.isDirectory()) this.directoriesSeen.add(next);
      await this.emitOnce(next, stats);
      current = next;
    }
  }

  private count(type: BundleEntryType): void {
    this.typeCounts[type] = (this.typeCounts[type] ?? 0) + 1;
    this.entryCount += 1;
  }

  /** Emit one tar entry for `path` (once), choosing its type from lstat. */
  private async emitOnce(path: string, stats: Stats, symlinkTarget?: string): Promise<void> {
    if (this.emitted.has(path)) return;
    this.emitted.add(path);
    const base = {
      mode: stats.mode & 0o7777,
      uid: stats.uid,
      gid: stats.gid,
      // Tar's octal field cannot hold times before 1970.
      mtime: Math.max(0, Math.floor(stats.mtimeMs / 1000)),
    };
    const header: EntryHeader = {
      name: tarNameOf(path, stats.isDirectory()),
      // Keep the file-type bits: tar-stream replaces a falsy mode (000) with 0644; it masks them off when encoding.
      mode: stats.mode,
      uid: base.uid,
      gid: base.gid,
      mtime: new Date(base.mtime * 1000),
    };
    if (base.uid > USTAR_MAX_ID || base.gid > USTAR_MAX_ID) header.pax = { uid: String(base.uid), gid: String(base.gid) };

    if (stats.isDirectory()) {
      await this.writeVoid({ ...header, type: 'directory' }, { path, type: 'directory', size: 0, ...base });
    } else if (stats.isSymbolicLink()) {
      const target = symlinkTarget ?? (await readlink(this.sourcePath(path)));
      await this.writeVoid({ ...header, type: 'symlink', linkname: target }, { path, type: 'symlink', size: 0, ...base, linkTarget: target });
    } else if (stats.isFIFO()) {
      await this.writeVoid({ ...header, type: 'fifo' }, { path, type: 'fifo', size: 0, ...base });
    } else if (stats.isCharacterDevice() || stats.isBlockDevice()) {
      if (!this.selectionOptions.includeDevices) {
        this.skipped.device += 1;
        return;
      }
      const type = stats.isCharacterDevice() ? 'character-device' : 'block-device';
      const devmajor = Math.floor(stats.rdev / 256) & 0xfff;
      const devminor = (stats.rdev & 0xff) | (Math.floor(stats.rdev / 4096) & ~0xff);
      await this.writeVoid({ ...header, type, devmajor, devminor }, { path, type, size: 0, ...base, devmajor, devminor });
    } else if (stats.isSocket()) {
      this.skipped.socket += 1;
    } else if (stats.isFile()) {
      const inode = `${stats.dev}:${stats.ino}`;
      const first = stats.nlink > 1 ? this.inodes.get(inode) : undefined;
      if (first !== undefined) {
        await this.writeVoid(
          { ...header, type: 'link', linkname: tarNameOf(first, false) },
          { path, type: 'link', size: 0, ...base, linkTarget: first },
        );
        return;
      }
      if (stats.nlink > 1) this.inodes.set(inode, path);
      await this.writeFile(path, stats, header, base);
    }
  }

  private entryDone(sinkCallback: (resolve: () => void, reject: (e: unknown) => void) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => sinkCallback(resolve, reject));
  }

  private async writeBuffer(name: string, data: Buffer): Promise<void> {
    await this.waitForRoom();
    await this.entryDone((resolve, reject) =>
      this.pack.entry({ name, type: 'file', mode: 0o100644, mtime: this.createdAt, size: data.length }, data, (e) => (e ? reject(e) : resolve())),
    );
    this.entryCount += 1;
  }

  private writeVoid(header: EntryHeader, entry: ManifestEntry): Promise<void> {
    return this.schedule(
      async () => undefined,
      async () => {
        await this.waitForRoom();
        await this.entryDone((resolve, reject) => this.pack.entry(header, (e) => (e ? reject(e) : resolve())));
        this.entries.push(entry);
        this.count(entry.type);
      },
      async () => undefined,
      0,
    );
  }

  /**
   * Queue an entry behind the earlier ones (tar entries are strictly sequential) while its
   * preparation (opening the file, reading a small one ahead) starts at once, so the file-system
   * round trips of the next files overlap the sending of this one. Bounded by
   * `MAX_PENDING_JOBS` open files and `MAX_PENDING_BYTES` read ahead.
   */
  private async schedule<P>(prepare: () => Promise<P>, write: (prepared: P) => Promise<void>, discard: (prepared: P) => Promise<void>, cost: number): Promise<void> {
    while (!this.failed && this.pendingJobs > 0 && (this.pendingJobs >= MAX_PENDING_JOBS || this.pendingBytes + cost > MAX_PENDING_BYTES)) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    if (this.failed) await this.writeChain; // rethrows the failure
    this.pendingJobs += 1;
    this.pendingBytes += cost;
    const prepared = prepare();
    prepared.catch(() => undefined);
    const release = () => {
      this.pendingJobs -= 1;
      this.pendingBytes -= cost;
      for (const wake of this.slotWaiters.splice(0)) wake();
    };
    this.writeChain = this.writeChain.then(
      async () => {
        try {
          await write(await prepared);
        } finally {
          release();
        }
      },
      async (e: unknown) => {
        release();
        await prepared.then(discard, () => undefined);
        throw e;
      },
    );
    this.writeChain.catch(() => {
      this.failed = true;
      for (const wake of this.slotWaiters.splice(0)) wake();
    });
  }

  /** Queue one regular file: opened (and, when small, read) now, streamed into the tar in turn. */
  private writeFile(path: string, stats: Stats, header: EntryHeader, base: Omit<ManifestEntry, 'path' | 'type' | 'size'>): Promise<void> {
    const cost = stats.size <= PREFETCH_BYTES ? stats.size : 0;
    return this.schedule(
      () => this.prepareFile(path, stats),
      (prepared) => this.emitFile(path, prepared, header, base),
      (prepared) => prepared.handle.close(),
      cost,
    );
  }

  private async prepareFile(path: string, stats: Stats): Promise<PreparedFile> {
    let handle: FileHandle;
    try {
      // O_NOFOLLOW: the path was a regular file when lstat'ed; never follow a symlink swapped in since.
      // O_NONBLOCK: a FIFO swapped in must not hang the open.
      handle = await open(this.sourcePath(path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `opening ${path}`);
    }
    try {
      const opened = await handle.stat();
      if (!opened.isFile() || opened.ino !== stats.ino || opened.dev !== stats.dev) {
        throw new BundleError('BUNDLE_SOURCE_CHANGED', `${path} was replaced while packing`, { details: { path } });
      }
      const size = opened.size;
      if (size > PREFETCH_BYTES) return { handle, size };
      const head = Buffer.allocUnsafe(size);
      let offset = 0;
      while (offset < size) {
        const { bytesRead } = await handle.read(head, offset, size - offset, offset);
        if (bytesRead === 0) throw this.shrank(path, size, offset);
        offset += bytesRead;
      }
      return { handle, size, head };
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  private shrank(path: string, size: number, read: number): BundleError {
    return new BundleError('BUNDLE_SOURCE_CHANGED', `${path} shrank while packing (${read} of ${size} bytes read)`, {
      details: { path, expected: size, read },
    });
  }

  /** Stream one opened file into the tar, hashing it on the way; a large file is never held whole. */
  private async emitFile(path: string, prepared: PreparedFile, header: EntryHeader, base: Omit<ManifestEntry, 'path' | 'type' | 'size'>): Promise<void> {
    const { handle, size, head } = prepared;
    try {
      const hash = createHash('sha256');
      if (head) {
        hash.update(head);
        await this.waitForRoom();
        await this.entryDone((resolve, reject) => this.pack.entry({ ...header, type: 'file', size }, head, (e) => (e ? reject(e) : resolve())));
      } else {
        await this.streamFile(path, handle, size, header, hash);
      }
      this.dataBytes += size;
      this.entries.push({ path, type: 'file', size, ...base, sha256: hash.digest('hex') });
      this.count('file');
    } finally {
      await handle.close();
    }
  }

  private async streamFile(path: string, handle: FileHandle, size: number, header: EntryHeader, hash: Hash): Promise<void> {
    let sinkError: unknown;
    const done = new Promise<void>((resolve, reject) => {
      const sink = this.pack.entry({ ...header, type: 'file', size }, (e) => (e ? reject(e) : resolve()));
      void (async () => {
        const readAt = async (at: number): Promise<Buffer> => {
          const want = Math.min(this.chunkBytes, size - at);
          // A fresh buffer per read: tar-stream keeps a reference until the consumer has read it.
          const buffer = Buffer.allocUnsafe(want);
          const { bytesRead } = await handle.read(buffer, 0, want, at);
          return bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
        };
        // A few reads ahead: the disk (thread pool) works on the next chunks while this one is hashed and sent.
        const ahead: Promise<Buffer>[] = [];
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
          const chunk: Buffer = await (ahead.shift() as Promise<Buffer>);
          // A short read means the file shrank; later reads would be misplaced.
          if (chunk.length < Math.min(this.chunkBytes, size - offset)) throw this.shrank(path, size, offset + chunk.length);
          offset += chunk.length;
          refill();
          hash.update(chunk);
          if (!sink.write(chunk)) await waitForDrain(sink);
        }
        sink.end(undefined);
      })().catch((e: unknown) => {
        sinkError = e;
        sink.destroy(e instanceof Error ? e : new Error(String(e)));
        reject(e);
      });
    });
    await done.catch((e: unknown) => {
      throw sinkError ?? e;
    });
  }
}

/** An opened regular file; a small one is read whole ahead of its turn. */
interface PreparedFile {
  handle: FileHandle;
  size: number;
  head?: Buffer;
}

/** The events {@link waitForDrain} listens to, shared by Node and streamx writables. */
interface DrainEmitter {
  on(event: string, listener: (...args: any[]) => void): unknown;
  off(event: string, listener: (...args: any[]) => void): unknown;
}

/** Resolve when a (streamx or Node) writable asks for more, or rejects if it fails first. */
function waitForDrain(sink: DrainEmitter): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      sink.off('drain', onDrain);
      sink.off('error', onError);
      sink.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onError = (e: unknown) => {
      cleanup();
      reject(e);
    };
    const onClose = () => {
      cleanup();
      reject(new BundleError('BUNDLE_IO', 'The bundle stream was closed while a file was being written'));
    };
    sink.on('drain', onDrain);
    sink.on('error', onError);
    sink.on('close', onClose);
  });
}
