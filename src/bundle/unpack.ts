/**
 * The unpacker: reads a bundle (or any tar GNU tar writes) into a staging directory, refusing
 * every entry that could write outside it, then checks every file against the manifest.
 *
 * Safety rules (docs/decisions/0102-extraction-safety.md):
 * - member names: no absolute names, no `..`; bundles keep everything under `root/`;
 * - never write through a symlink: every parent is lstat'ed and files are opened with
 *   `O_CREAT|O_EXCL|O_NOFOLLOW`;
 * - symlink targets must stay inside the root when resolved inside it (absolute targets start at
 *   the root), checked by name per entry and again, following links, once the tree is complete;
 * - hard links only to regular files extracted earlier in the same stream;
 * - device nodes only with `allowDevices`; setuid/setgid files rejected unless `setuid` says otherwise.
 * On any failure the staging directory is removed.
 *
 * Speed: files up to 256 KiB are written with synchronous calls (no thread-pool round trip per
 * syscall); larger ones through a bounded {@link WriteBehind} while the next chunks are hashed,
 * their tail finishing behind the next entries. Every rule above holds on both paths.
 *
 * @module
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, futimesSync, linkSync, openSync, writevSync } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, open, readdir, realpath, rename, rm, symlink, unlink, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { errAsync, ResultAsync } from 'neverthrow';
import * as tar from 'tar-stream';
import { InvalidInputError, type InputIssue } from '../errors.js';
import { BundleError, errnoOf, toBundleError } from './errors.js';
import {
  BUNDLE_INFO_NAME,
  BUNDLE_MANIFEST_NAME,
  BUNDLE_ROOT_DIR,
  BundleInfoSchema,
  BundleManifestSchema,
  type BundleEntryType,
  type BundleInfo,
  type BundleManifest,
} from './manifest.js';
import { splitMemberName, symlinkResolvesInside, symlinkTargetStaysInside } from './paths.js';
import { WriteBehind } from './write-behind.js';
import { addSeeded, journalPathOf, noSeeded, SEED_IDS, SEED_PAX, type Journal, type SeedId, type SeededTotals } from './seeds.js';
import { drainEntry, parseBundleMetadata, readSmallEntry, TarInput, type DecodedHeader, type EntryStream } from './tar-input.js';
import { copyChunkSync, loadJournal, openInTreeSync, openOnHostSync, readBuffer, resolveHostRoots, type HashedCopy, type JournalIndex, type ResolvedHostRoots } from './seed-store.js';

const execFileAsync = promisify(execFile);

/** Options of {@link unpackBundle}. */
export interface UnpackOptions {
  /**
   * Require `bundle.json` first and `manifest.json` last, and verify every entry against the
   * manifest (default true). Set false to read a plain tar (e.g. one GNU tar wrote), which has no
   * hashes to check: its members land directly in the staging directory.
   */
  requireManifest?: boolean;
  /** Create character and block device nodes (default false: such entries are rejected). */
  allowDevices?: boolean;
  /** Files with setuid/setgid bits: `reject` (default), `strip` the bits, or `allow` them. */
  setuid?: 'reject' | 'strip' | 'allow';
  /** Apply the archive's uid/gid (default: when running as root). */
  preserveOwners?: boolean;
  /** Largest `bundle.json`/`manifest.json` accepted (default 64 MiB); they are parsed in memory. */
  maxMetadataBytes?: number;
  /** Stop unpacking; the staging directory is removed and the error is `ABORTED`. */
  signal?: AbortSignal;
  /** Called about every MiB with the bytes read and entries written so far. */
  onProgress?: (progress: { bytes: number; entries: number }) => void;
  /**
   * Where seeded entries may take their data from (see `seeds.ts`): trees this receiver unpacked
   * earlier (`staged`, `resume`, each with its journal) and the host roots whose world-readable
   * files may be copied in (`hostRoots`). A seeded entry naming a seed not given here is refused.
   */
  seeds?: { staged?: string; resume?: string; hostRoots?: readonly string[] };
  /**
   * On a failure a retry may get past (the stream was cut: `BUNDLE_TRUNCATED`), keep the files
   * verified so far at this path with their journal, instead of removing them, for the next
   * attempt's `seeds.resume`. Whatever was there before is replaced.
   */
  keepPartialAt?: string;
}

/** What a successful unpack produced. */
export interface UnpackReport {
  /** Real path of the staging directory, now holding the tree. */
  stagingDir: string;
  /** Whether the stream was an ap-migrate bundle (and so was verified against its manifest). */
  isBundle: boolean;
  /** `bundle.json` of a bundle. */
  info?: BundleInfo;
  /** `manifest.json` of a bundle. */
  manifest?: BundleManifest;
  /** Entries written into the staging directory, by type. */
  counts: Partial<Record<BundleEntryType, number>>;
  /** Data bytes written to regular files. */
  dataBytes: number;
  /** Bytes read from the input stream. */
  bytesRead: number;
  /** Files whose setuid/setgid bits were removed (`setuid: 'strip'`). */
  strippedSetuid: string[];
  /** True when every entry matched the manifest's type, size and SHA-256. */
  verified: boolean;
  /** Files taken from a seed at the destination instead of the stream. */
  seeded: SeededTotals;
}

const DEFAULT_MAX_METADATA = 64 * 1024 * 1024;
/** Files up to this size are written with synchronous calls (see `writeSmallFile`); larger ones stream through a {@link WriteBehind}. */
const SMALL_FILE_BYTES = 256 * 1024;
/** Input buffered ahead of the parser (bounded memory, but enough to keep the sender writing while a chunk is hashed). */
const READ_AHEAD_BYTES = 1024 * 1024;
/** Longest stretch of synchronous file creation before the event loop gets a turn. */
const SYNC_SLICE_MS = 4;
/** How every regular file is created: new, never through a symlink. */
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** What a seeded entry claims: where its data is and what it must hash to. */
type SeedClaim = { from: SeedId; sha256: string; size: number };
/** A claim on one of our own trees (a hard link when the file system allows). */
type TreeClaim = SeedClaim & { from: 'staged' | 'resume' };

/** What was extracted at one path, for the manifest check. */
interface Extracted {
  type: BundleEntryType;
  size: number;
  sha256?: string;
  linkTarget?: string;
}

/**
 * Read a bundle from `input` into `stagingDir` (created if missing; must be empty), verify it,
 * and report what was written. Never throws; on failure the staging directory is removed, the
 * input is destroyed and the error is a {@link BundleError}, or an {@link InvalidInputError}
 * naming the argument (`input`, `stagingDir`) or option that is wrong. Any premature end of the
 * input (mid-entry, before the manifest, an empty stream, a stream closed without ending) is
 * `BUNDLE_TRUNCATED`.
 */
export function unpackBundle(input: Readable, stagingDir: string, options: UnpackOptions = {}): ResultAsync<UnpackReport, BundleError | InvalidInputError> {
  // Checked by hand before anything is touched: callers in plain JavaScript (and the receiver) may pass anything.
  const argumentIssues = checkArguments(input, stagingDir);
  const optionIssues = argumentIssues.length > 0 ? [] : checkOptions(options);
  if (argumentIssues.length > 0 || optionIssues.length > 0) {
    // As on every failure, a usable input is destroyed: its sender must not wait for a reader.
    if (!argumentIssues.some((i) => i.path === 'input')) {
      try {
        input.destroy();
      } catch {
        // a stream-like object whose destroy fails: nothing more to do
      }
    }
    return errAsync(
      argumentIssues.length > 0 ? new InvalidInputError('unpackBundle arguments', argumentIssues) : new InvalidInputError('unpack options', optionIssues),
    );
  }
  const unpacker = new Unpacker(input, resolvePath(stagingDir), options);
  return ResultAsync.fromPromise(unpacker.run(), (e) => e as BundleError);
}

/** Problems with the input stream and the staging directory, each naming its argument. */
function checkArguments(input: unknown, stagingDir: unknown): InputIssue[] {
  const issues: InputIssue[] = [];
  const stream = input as Partial<Readable> | null;
  if (typeof input !== 'object' || stream === null || !['pipe', 'unpipe', 'on', 'destroy'].every((m) => typeof (stream as Record<string, unknown>)[m] === 'function')) {
    issues.push({ path: 'input', message: `must be a readable stream, got ${describeValue(input)}` });
  } else if (stream.destroyed === true) {
    issues.push({ path: 'input', message: 'the stream is already destroyed' });
  }
  if (typeof stagingDir !== 'string' || stagingDir === '') {
    issues.push({ path: 'stagingDir', message: `must be a non-empty path, got ${describeValue(stagingDir)}` });
  } else if (stagingDir.includes('\0')) {
    issues.push({ path: 'stagingDir', message: 'must not contain a NUL byte' });
  }
  return issues;
}

/** Problems with {@link UnpackOptions}, each naming its field. */
function checkOptions(options: unknown): InputIssue[] {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    return [{ path: '', message: `must be an object, got ${describeValue(options)}` }];
  }
  const o = options as Record<string, unknown>;
  const issues: InputIssue[] = [];
  for (const key of ['requireManifest', 'allowDevices', 'preserveOwners'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') issues.push({ path: key, message: `must be true or false, got ${describeValue(o[key])}` });
  }
  if (o.setuid !== undefined && !['reject', 'strip', 'allow'].includes(o.setuid as string)) issues.push({ path: 'setuid', message: 'must be reject, strip or allow' });
  if (o.maxMetadataBytes !== undefined && !(Number.isSafeInteger(o.maxMetadataBytes) && (o.maxMetadataBytes as number) > 0)) {
    issues.push({ path: 'maxMetadataBytes', message: 'must be a positive integer' });
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) issues.push({ path: 'signal', message: 'must be an AbortSignal' });
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') issues.push({ path: 'onProgress', message: 'must be a function' });
  return issues;
}

/** A short description of a bad value for an error message (never the whole value). */
function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return value === '' ? 'an empty string' : 'a string';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : String(value);
  return typeof value;
}

class Unpacker {
  private root = '';
  private createdStaging = false;
  private isBundle = false;
  private info: BundleInfo | undefined;
  private manifest: BundleManifest | undefined;
  private readonly extracted = new Map<string, Extracted>();
  private readonly safeDirs = new Set<string>();
  private readonly directories: { components: string[]; mode: number; uid: number; gid: number; mtime: Date }[] = [];
  private readonly symlinks: { components: string[]; target: string }[] = [];
  private readonly counts: Partial<Record<BundleEntryType, number>> = {};
  private readonly strippedSetuid: string[] = [];
  private readonly preserveOwners: boolean;
  private readonly seeded = noSeeded();
  private readonly journals = new Map<'staged' | 'resume', JournalIndex>();
  private dataBytes = 0;
  private entryIndex = 0;
  private written = 0;
  private lastProgress = 0;
  private lastYield = 0;
  /** The tail of the last large file (see `writeFile`); it never rejects, its error is kept below. */
  private finishing: Promise<void> | undefined;
  private finishingFailed = false;
  private finishingError: unknown;
  /** The path whose tail is (or last was) finishing. */
  private finishingPath: string | undefined;
  private readonly tarInput: TarInput;
  /** The host seed roots, links resolved once. */
  private hostRoots: ResolvedHostRoots = [];
  /** Seeds are copied one at a time: one buffer for all of them, made at the first. */
  private seedBuffer: Buffer | undefined;
  /** Directories of the seed trees found real so far (see `openInTreeSync`). */
  private readonly checkedSeedDirs = new Set<string>();

  constructor(
    private readonly input: Readable,
    private readonly stagingDir: string,
    private readonly options: UnpackOptions,
  ) {
    this.preserveOwners = options.preserveOwners ?? process.getuid?.() === 0;
    this.tarInput = new TarInput(input);
  }

  async run(): Promise<UnpackReport> {
    // A read-ahead of READ_AHEAD_BYTES: with tar-stream's default 16 KiB, every 64 KiB chunk from
    // the pipe paused the input until the parser had taken it.
    const extract = tar.extract({ highWaterMark: READ_AHEAD_BYTES });
    const onAbort = () => extract.destroy(new BundleError('ABORTED', 'Unpacking was aborted by the caller'));
    try {
      await this.prepareStaging();
      await this.loadSeedJournals();
      if (this.options.signal?.aborted) throw new BundleError('ABORTED', 'Unpacking was aborted by the caller');
      this.options.signal?.addEventListener('abort', onAbort, { once: true });
      this.tarInput.connect(extract);
      for await (const entry of extract) {
        await this.handle(entry.header as DecodedHeader, entry as unknown as EntryStream);
        this.reportProgress();
      }
      await this.awaitFinishing();
      this.checkNotEmpty();
      await this.finish();
      await this.writeJournal(journalPathOf(this.root));
      return this.report();
    } catch (e) {
      throw await this.abandon(extract, e);
    } finally {
      this.options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** An empty stream is a cut one, not an empty bundle. */
  private checkNotEmpty(): void {
    if (this.entryIndex === 0 && this.options.requireManifest !== false) {
      throw new BundleError(
        'BUNDLE_TRUNCATED',
        `The bundle stream ended before ${BUNDLE_INFO_NAME} (${this.tarInput.bytesRead} bytes read, no entry): nothing was sent, or it was cut short`,
        { details: { bytesRead: this.tarInput.bytesRead } },
      );
    }
  }

  private report(): UnpackReport {
    return {
      stagingDir: this.root,
      isBundle: this.isBundle,
      ...(this.info ? { info: this.info } : {}),
      ...(this.manifest ? { manifest: this.manifest } : {}),
      counts: this.counts,
      dataBytes: this.dataBytes,
      bytesRead: this.tarInput.bytesRead,
      strippedSetuid: this.strippedSetuid,
      verified: this.isBundle,
      seeded: this.seeded,
    };
  }

  /** Stop reading, wait for writes in flight, remove staging; the error to report. */
  private async abandon(extract: ReturnType<typeof tar.extract>, e: unknown): Promise<BundleError> {
    extract.destroy();
    this.input.unpipe();
    this.input.destroy();
    // No write may still be running when staging is removed. A file finishing behind us came
    // earlier in the stream, so its error (a full disk) is the one to report, as when files were
    // finished one by one.
    await this.finishing;
    const error = this.classify(this.finishingFailed ? this.finishingError : e);
    if (this.options.keepPartialAt !== undefined && error.code === 'BUNDLE_TRUNCATED' && this.createdStaging) {
      if (await this.keepPartial(this.options.keepPartialAt)) return error;
    }
    await this.removeStaging();
    return error;
  }

  private classify(error: unknown): BundleError {
    const aborted = this.options.signal?.aborted ? new BundleError('ABORTED', 'Unpacking was aborted by the caller', { cause: error }) : undefined;
    return this.tarInput.classify(error, aborted, 'unpacking the bundle');
  }

  private async removeStaging(): Promise<void> {
    if (!this.createdStaging) return;
    await rm(this.stagingDir, { recursive: true, force: true }).catch(() => undefined);
  }

  private async prepareStaging(): Promise<void> {
    await mkdir(dirname(this.stagingDir), { recursive: true }).catch((e: unknown) => {
      throw toBundleError(e, 'BUNDLE_IO', `creating the parent of ${this.stagingDir}`);
    });
    try {
      await mkdir(this.stagingDir, { mode: 0o700 });
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw toBundleError(e, 'BUNDLE_IO', `creating ${this.stagingDir}`);
      const stats = await lstat(this.stagingDir);
      if (!stats.isDirectory() || (await readdir(this.stagingDir)).length > 0) {
        throw new BundleError('BUNDLE_STAGING_NOT_EMPTY', `The staging directory ${this.stagingDir} must be new or an empty directory`, {
          details: { stagingDir: this.stagingDir },
        });
      }
    }
    this.createdStaging = true;
    this.root = await realpath(this.stagingDir);
  }

  private reportProgress(): void {
    if (!this.options.onProgress || this.tarInput.bytesRead - this.lastProgress < 1024 * 1024) return;
    this.lastProgress = this.tarInput.bytesRead;
    this.options.onProgress({ bytes: this.tarInput.bytesRead, entries: this.written });
  }

  private unsafe(name: string, why: string, details: Record<string, unknown> = {}): BundleError {
    return new BundleError('BUNDLE_UNSAFE_ENTRY', `Refused tar entry "${name}": ${why}`, { details: { entry: name, ...details } });
  }

  /** Map a member name to components below the staging root, applying the bundle's `root/` rule. */
  private componentsOf(name: string, what: string): string[] {
    const split = splitMemberName(name);
    if (split.isErr()) throw this.unsafe(name, `its ${what} ${split.error}`);
    const components = split.value;
    if (!this.isBundle) return components;
    if (components[0] !== BUNDLE_ROOT_DIR) throw this.unsafe(name, `its ${what} is not under ${BUNDLE_ROOT_DIR}/`);
    return components.slice(1);
  }

  private async handle(header: DecodedHeader, entry: EntryStream): Promise<void> {
    if (this.finishingFailed) throw this.finishingError;
    const index = this.entryIndex++;
    if (this.manifest) {
      throw new BundleError('BUNDLE_MANIFEST_MISMATCH', `Entry "${header.name}" follows ${BUNDLE_MANIFEST_NAME}, which must be last`);
    }
    if (index === 0 && header.name === BUNDLE_INFO_NAME && header.type === 'file' && this.options.requireManifest !== false) {
      this.isBundle = true;
      this.info = parseBundleMetadata(BundleInfoSchema, await this.readSmall(entry, header.name), header.name);
      return;
    }
    if (index === 0 && this.options.requireManifest !== false) {
      throw new BundleError('BUNDLE_MANIFEST_INVALID', `Not an ap-migrate bundle: the first entry is "${header.name}", not ${BUNDLE_INFO_NAME} (pass requireManifest: false to read a plain tar)`);
    }
    if (this.isBundle && header.name === BUNDLE_MANIFEST_NAME) {
      this.manifest = parseBundleMetadata(BundleManifestSchema, await this.readSmall(entry, header.name), header.name);
      return;
    }
    const components = this.componentsOf(header.name, 'name');
    const path = '/' + components.join('/');
    const mode = header.mode & 0o7777;
    const type = header.type as string | null;
    if (type !== 'directory' && (mode & 0o6000) !== 0) {
      const policy = this.options.setuid ?? 'reject';
      if (policy === 'reject') throw this.unsafe(header.name, `it has setuid/setgid bits (mode ${mode.toString(8)}); pass setuid: 'strip' or 'allow'`);
    }
    if (components.length === 0 && type !== 'directory') throw this.unsafe(header.name, 'only a directory may stand for the root');
    switch (type) {
      case 'file':
      case 'contiguous-file':
        if (header.pax?.[SEED_PAX.from] !== undefined) return this.writeSeeded(header, entry, components, path, this.allowedMode(header.name, mode));
        return this.writeFile(header, entry, components, path, this.allowedMode(header.name, mode));
      case 'directory':
        return this.makeDirectory(header, entry, components, mode);
      case 'symlink':
        return this.makeSymlink(header, entry, components, path);
      case 'link':
        return this.makeHardLink(header, entry, components, path);
      case 'fifo':
        return this.makeSpecial(header, entry, components, path, 'fifo', this.allowedMode(header.name, mode));
      case 'character-device':
      case 'block-device':
        if (!this.options.allowDevices) throw this.unsafe(header.name, 'it is a device node; pass allowDevices: true to create device nodes');
        return this.makeSpecial(header, entry, components, path, type, this.allowedMode(header.name, mode));
      default:
        throw new BundleError('BUNDLE_UNSUPPORTED_ENTRY', `Tar entry "${header.name}" has a type this unpacker does not handle (${String(type)})`, {
          details: { entry: header.name },
        });
    }
  }

  private allowedMode(name: string, mode: number): number {
    if ((mode & 0o6000) === 0 || this.options.setuid === 'allow') return mode;
    this.strippedSetuid.push(name);
    return mode & ~0o6000;
  }

  private readSmall(entry: EntryStream, name: string): Promise<string> {
    return readSmallEntry(entry, name, this.options.maxMetadataBytes ?? DEFAULT_MAX_METADATA);
  }

  private ownerOf(header: DecodedHeader): { uid: number; gid: number } {
    const pax = header.pax ?? {};
    const uid = pax.uid !== undefined ? Number(pax.uid) : header.uid;
    const gid = pax.gid !== undefined ? Number(pax.gid) : header.gid;
    return { uid: Number.isSafeInteger(uid) && uid >= 0 ? uid : 0, gid: Number.isSafeInteger(gid) && gid >= 0 ? gid : 0 };
  }

  /**
   * Make sure every parent of `components` is a real directory inside the root, creating missing
   * ones; an existing symlink or file on the way is refused (it would redirect the write).
   *
   * `safeDirs` remembers directories already checked or created in this run, so a tree of many
   * small files costs one lstat per directory, not per file. That is safe because nothing can
   * turn a remembered directory into a symlink afterwards: within this unpacker every entry at a
   * directory's name is refused by `prepareTarget` ("a directory of the same name was extracted
   * earlier"), never unlinked or renamed, and the staging root is this process's own (created
   * 0700, or an empty directory the caller handed over), so no other unprivileged process can
   * reach into it while we write.
   */
  private async ensureParents(name: string, components: readonly string[]): Promise<void> {
    for (let depth = 1; depth < components.length; depth++) {
      const key = components.slice(0, depth).join('/');
      if (this.safeDirs.has(key)) continue;
      const full = join(this.root, key);
      try {
        const stats = await lstat(full);
        if (stats.isSymbolicLink()) throw this.unsafe(name, `it would be written through the symlink /${key} extracted earlier`);
        if (!stats.isDirectory()) throw this.unsafe(name, `its parent /${key} is not a directory`);
      } catch (e) {
        if (errnoOf(e) !== 'ENOENT') throw e;
        await mkdir(full, { mode: 0o755 });
      }
      this.safeDirs.add(key);
    }
  }

  /** Prepare the final path: parents checked, an existing non-directory removed (tar's overwrite). */
  private async prepareTarget(name: string, components: readonly string[], willBeDirectory: boolean): Promise<'fresh' | 'directory-exists'> {
    await this.ensureParents(name, components);
    const full = join(this.root, ...components);
    try {
      const stats = await lstat(full);
      if (stats.isDirectory()) {
        if (willBeDirectory) return 'directory-exists';
        throw this.unsafe(name, 'a directory of the same name was extracted earlier');
      }
      await unlink(full);
    } catch (e) {
      if (errnoOf(e) !== 'ENOENT') throw e;
    }
    return 'fresh';
  }

  private count(type: BundleEntryType, path: string, extracted: Extracted): void {
    this.counts[type] = (this.counts[type] ?? 0) + 1;
    this.written += 1;
    this.extracted.set(path, extracted);
  }

  /**
   * A file larger than {@link SMALL_FILE_BYTES}: created, then its data hashed here while a
   * {@link WriteBehind} writes it in the thread pool. Its tail (the last writes, owner, mode,
   * times, close) finishes behind us while the next entries are read: those are fd operations on a
   * file already created under its name, so no later entry's check or name operation depends on
   * them (a later entry of the same name unlinks the name, not the open file; a hard link to it
   * sees a regular file). At most one tail runs (bounded memory: one more WriteBehind); every
   * tail is awaited before the tree-wide checks, and before staging is removed on failure.
   */
  private async writeFile(header: DecodedHeader, entry: EntryStream, components: string[], path: string, mode: number): Promise<void> {
    if (header.size <= SMALL_FILE_BYTES) return this.writeSmallFile(header, entry, components, path, mode);
    const full = join(this.root, ...components);
    const handle = await this.createFile(header.name, components, full, (file, flags) => open(file, flags, 0o600));
    const hash = createHash('sha256');
    const writer = new WriteBehind(handle);
    let size = 0;
    try {
      for await (const chunk of entry) {
        // Hashed here while earlier chunks are written in the thread pool.
        hash.update(chunk);
        size += chunk.length;
        const wait = writer.push(chunk);
        if (wait) await wait;
      }
      await this.awaitFinishing();
    } catch (e) {
      await writer.settle();
      await handle.close();
      throw e;
    }
    const finishTail = async () => {
      try {
        await writer.flush();
        if (this.preserveOwners) {
          const { uid, gid } = this.ownerOf(header);
          await handle.chown(uid, gid);
        }
        // After chown, which may clear setuid bits.
        await handle.chmod(mode);
        await handle.utimes(header.mtime, header.mtime);
      } finally {
        await writer.settle();
        await handle.close();
      }
    };
    this.finishingPath = path;
    this.finishing = finishTail().then(
      () => {
        this.finishing = undefined;
      },
      (e: unknown) => {
        this.finishing = undefined;
        this.finishingFailed = true;
        this.finishingError = e;
      },
    );
    this.dataBytes += size;
    this.count('file', path, { type: 'file', size, sha256: hash.digest('hex') });
  }

  /** Journals of the tree seeds, read once before the first entry. */
  private async loadSeedJournals(): Promise<void> {
    for (const id of ['staged', 'resume'] as const) {
      const dir = this.options.seeds?.[id];
      if (dir !== undefined) this.journals.set(id, await loadJournal(dir));
    }
    this.hostRoots = await resolveHostRoots(this.options.seeds?.hostRoots ?? []);
  }

  /** The seed a seeded entry names, checked against what this unpack was offered. */
  private seedClaim(header: DecodedHeader): SeedClaim {
    const pax = header.pax ?? {};
    const from = pax[SEED_PAX.from] ?? '';
    const sha256 = pax[SEED_PAX.sha256] ?? '';
    const size = Number(pax[SEED_PAX.size]);
    if (!this.isBundle) throw this.unsafe(header.name, 'it is a seeded entry outside an ap-migrate bundle');
    if (!(SEED_IDS as readonly string[]).includes(from)) throw this.unsafe(header.name, `it names an unknown seed "${from}"`);
    if (header.size !== 0 || !/^[0-9a-f]{64}$/.test(sha256) || !Number.isSafeInteger(size) || size < 0) throw this.unsafe(header.name, 'its seed records are malformed');
    const seed = from as SeedId;
    const offered = seed === 'host' ? this.options.seeds?.hostRoots !== undefined : this.options.seeds?.[seed] !== undefined;
    if (!offered) throw this.unsafe(header.name, `it names the seed "${seed}", which this destination did not offer`);
    return { from: seed, sha256, size };
  }

  private seedMissing(path: string, from: SeedId, why: string): BundleError {
    return new BundleError('BUNDLE_SEED_MISSING', `${path} was to be taken from the destination's ${from} copy, but ${why}`, { details: { path, seed: from } });
  }

  /**
   * A seeded entry: its data from the seed it names (a link into a tree of ours, or a verified
   * copy of a host file). Synchronous system calls, as for small files: a thousand seeded
   * libraries cost a dozen thread-pool round trips each otherwise, more than the copying.
   */
  private async writeSeeded(header: DecodedHeader, entry: EntryStream, components: string[], path: string, mode: number): Promise<void> {
    await drainEntry(entry);
    const claim = this.seedClaim(header);
    await this.awaitFinishing();
    const full = join(this.root, ...components);
    const fd = claim.from === 'host' ? await this.copyHostSeed(header.name, components, full, path, claim) : await this.linkTreeSeed(header.name, components, full, path, claim as TreeClaim);
    try {
      this.settleFileSync(fd, header, mode);
    } finally {
      closeSync(fd);
    }
    addSeeded(this.seeded, claim.from, claim.size);
    this.count('file', path, { type: 'file', size: claim.size, sha256: claim.sha256 });
    await this.yieldNowAndThen();
  }

  /**
   * From a tree this receiver verified earlier: its journal must list the same content; linked
   * (same file system) or copied. Returns a descriptor of the file now at `full`.
   */
  private async linkTreeSeed(name: string, components: string[], full: string, path: string, claim: TreeClaim): Promise<number> {
    const dir = this.options.seeds?.[claim.from] as string;
    const known = this.journals.get(claim.from)?.get(path);
    if (!known || known.sha256 !== claim.sha256 || known.size !== claim.size) throw this.seedMissing(path, claim.from, 'its journal does not list that content');
    const from = openInTreeSync(dir, path, this.checkedSeedDirs);
    if (from === undefined) throw this.seedMissing(path, claim.from, 'it is not there');
    try {
      if (fstatSync(from).size !== claim.size) throw this.seedMissing(path, claim.from, 'its size changed');
      await this.prepareTarget(name, components, false);
      try {
        // The seed tree is private to this receiver (0700, root's): a hard link shares verified data at no cost.
        linkSync(join(dir, ...components), full);
      } catch (e) {
        if (errnoOf(e) !== 'EXDEV') throw e;
        return await this.copySeedData(name, components, full, path, from, claim);
      }
      // The link and `from` are one inode: owner, mode and times are set through it.
      return from;
    } catch (e) {
      closeSync(from);
      throw e;
    }
  }

  /** From the host: a world-readable system file, copied and hashed on the way. Returns a descriptor of the copy. */
  private async copyHostSeed(name: string, components: string[], full: string, path: string, claim: SeedClaim): Promise<number> {
    const from = openOnHostSync(path, this.hostRoots);
    if (from === undefined) throw this.seedMissing(path, 'host', 'the host has no world-readable regular file there under the allowed roots');
    try {
      return await this.copySeedData(name, components, full, path, from, claim);
    } finally {
      closeSync(from);
    }
  }

  /** Copy `from` into a new file at `full`, hashing on the way; the claim must match. Returns the new file's descriptor. */
  private async copySeedData(name: string, components: string[], full: string, path: string, from: number, claim: SeedClaim): Promise<number> {
    const out = await this.createFile(name, components, full, (file, flags) => openSync(file, flags, 0o600));
    const copied: HashedCopy = { hash: createHash('sha256'), size: 0 };
    try {
      while (copyChunkSync(from, out, (this.seedBuffer ??= readBuffer()), copied)) await this.yieldNowAndThen();
      if (copied.size !== claim.size || copied.hash.digest('hex') !== claim.sha256) throw this.seedMissing(path, claim.from, 'its content differs from what the bundle names');
      return out;
    } catch (e) {
      closeSync(out);
      throw e;
    }
  }

  /** The verified regular files extracted so far (a large file whose tail failed is not one). */
  private journal(): Journal {
    const files: Journal['files'] = [];
    for (const [path, e] of this.extracted) {
      if (e.type !== 'file' || e.sha256 === undefined) continue;
      if (this.finishingFailed && path === this.finishingPath) continue;
      files.push([path, e.size, e.sha256]);
    }
    return { kind: 'ap-migrate-journal', version: 1, files };
  }

  private async writeJournal(at: string): Promise<void> {
    await writeFile(at, JSON.stringify(this.journal()), { mode: 0o600 }).catch((e: unknown) => {
      throw toBundleError(e, 'BUNDLE_IO', `writing the journal ${at}`);
    });
  }

  /** Move what was verified to `at` with its journal, for the next attempt; false when that failed (staging is then removed). */
  private async keepPartial(at: string): Promise<boolean> {
    try {
      const journal = this.journal();
      await rm(at, { recursive: true, force: true });
      await mkdir(dirname(at), { recursive: true, mode: 0o700 });
      await rename(this.root, at);
      await writeFile(journalPathOf(at), JSON.stringify(journal), { mode: 0o600 });
      return true;
    } catch {
      return false;
    }
  }

  /** Wait for the tail of the previous large file; throw its error. */
  private async awaitFinishing(): Promise<void> {
    await this.finishing;
    if (this.finishingFailed) throw this.finishingError;
  }

  /**
   * A file of at most {@link SMALL_FILE_BYTES}: its data is gathered (bounded by that size), then
   * created, written and given its owner, mode and times with synchronous calls, as GNU tar does.
   * Six or seven round trips through libuv's thread pool per file cost more than the syscalls themselves
   * (tens of µs each on a busy machine); the event loop gets a turn every few ms.
   */
  private async writeSmallFile(header: DecodedHeader, entry: EntryStream, components: string[], path: string, mode: number): Promise<void> {
    const hash = createHash('sha256');
    // Copied into one buffer: a slow pipe may deliver the data in many tiny chunks, each a slice
    // that would keep its whole input buffer alive.
    const data = Buffer.allocUnsafe(header.size);
    const beyond: Buffer[] = []; // only if an entry yielded more than its header said (tar-stream does not)
    let filled = 0;
    let size = 0;
    for await (const chunk of entry) {
      hash.update(chunk);
      size += chunk.length;
      if (beyond.length === 0 && filled + chunk.length <= data.length) filled += chunk.copy(data, filled);
      else beyond.push(chunk);
    }
    const full = join(this.root, ...components);
    const fd = await this.createFile(header.name, components, full, (file, flags) => openSync(file, flags, 0o600));
    try {
      let rest = [data.subarray(0, filled), ...beyond].filter((b) => b.length > 0);
      while (rest.length > 0) {
        let written = writevSync(fd, rest);
        if (written === 0) throw Object.assign(new Error(`writev wrote nothing to ${path}`), { code: 'EIO' });
        // A short write (a filling disk): drop what was written and go on; the next call reports ENOSPC.
        while (rest.length > 0 && written >= (rest[0] as Buffer).length) {
          written -= (rest[0] as Buffer).length;
          rest = rest.slice(1);
        }
        if (written > 0 && rest.length > 0) rest = [(rest[0] as Buffer).subarray(written), ...rest.slice(1)];
      }
      this.settleFileSync(fd, header, mode);
    } finally {
      closeSync(fd);
    }
    this.dataBytes += size;
    this.count('file', path, { type: 'file', size, sha256: hash.digest('hex') });
    await this.yieldNowAndThen();
  }

  /** Owner (when preserved), mode and mtime of a written file, through its descriptor. */
  private settleFileSync(fd: number, header: DecodedHeader, mode: number): void {
    if (this.preserveOwners) {
      const { uid, gid } = this.ownerOf(header);
      fchownSync(fd, uid, gid);
    }
    // After chown, which may clear setuid bits.
    fchmodSync(fd, mode);
    futimesSync(fd, header.mtime, header.mtime);
  }

  /**
   * Create `full` with `O_CREAT|O_EXCL|O_NOFOLLOW` after checking its parents. Tried first without
   * looking at the name (it is almost always new); when it exists (EEXIST, also for a symlink or a
   * directory there), the full check runs (a directory is refused, anything else unlinked, as tar
   * overwrites) and the create is tried once more. O_EXCL is what guarantees no symlink is followed.
   */
  private async createFile<T>(name: string, components: readonly string[], full: string, create: (file: string, flags: number) => T | Promise<T>): Promise<T> {
    await this.ensureParents(name, components);
    try {
      return await create(full, CREATE_FLAGS);
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
    }
    await this.prepareTarget(name, components, false);
    return create(full, CREATE_FLAGS);
  }

  /** Give the event loop a turn after {@link SYNC_SLICE_MS} of synchronous work. */
  private async yieldNowAndThen(): Promise<void> {
    const now = performance.now();
    if (now - this.lastYield < SYNC_SLICE_MS) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.lastYield = performance.now();
  }

  private async makeDirectory(header: DecodedHeader, entry: EntryStream, components: string[], mode: number): Promise<void> {
    await drainEntry(entry);
    const path = '/' + components.join('/');
    if (components.length > 0) {
      const state = await this.prepareTarget(header.name, components, true);
      if (state === 'fresh') await mkdir(join(this.root, ...components), { mode: 0o700 });
      this.safeDirs.add(components.join('/'));
    }
    const { uid, gid } = this.ownerOf(header);
    // Applied at the end, deepest first: a read-only directory must not block its own children.
    this.directories.push({ components, mode, uid, gid, mtime: header.mtime });
    this.count('directory', path, { type: 'directory', size: 0 });
  }

  private async makeSymlink(header: DecodedHeader, entry: EntryStream, components: string[], path: string): Promise<void> {
    await drainEntry(entry);
    const target = header.linkname ?? '';
    if (target === '' || !symlinkTargetStaysInside(components, target)) {
      throw this.unsafe(header.name, `its symlink target "${target}" leads outside the root`, { target });
    }
    await this.prepareTarget(header.name, components, false);
    const full = join(this.root, ...components);
    await symlink(target, full);
    if (this.preserveOwners) {
      const { uid, gid } = this.ownerOf(header);
      await lchown(full, uid, gid);
    }
    await lutimes(full, header.mtime, header.mtime);
    this.symlinks.push({ components, target });
    this.count('symlink', path, { type: 'symlink', size: 0, linkTarget: target });
  }

  private async makeHardLink(header: DecodedHeader, entry: EntryStream, components: string[], path: string): Promise<void> {
    await drainEntry(entry);
    const targetComponents = this.componentsOf(header.linkname ?? '', 'hard-link target');
    const targetPath = '/' + targetComponents.join('/');
    const earlier = this.extracted.get(targetPath);
    if (!earlier || (earlier.type !== 'file' && earlier.type !== 'link')) {
      throw this.unsafe(header.name, `it is a hard link to "${header.linkname ?? ''}", which is not a regular file extracted earlier in this stream`);
    }
    const source = join(this.root, ...targetComponents);
    const stats = await lstat(source).catch(() => undefined);
    if (!stats?.isFile()) throw this.unsafe(header.name, `its hard-link target ${targetPath} is no longer a regular file`);
    await this.prepareTarget(header.name, components, false);
    // link(2) does not follow a symlink at the source; the target was checked to be a regular file.
    await link(source, join(this.root, ...components));
    this.count('link', path, { type: 'link', size: 0, linkTarget: targetPath });
  }

  private async makeSpecial(
    header: DecodedHeader,
    entry: EntryStream,
    components: string[],
    path: string,
    type: 'fifo' | 'character-device' | 'block-device',
    mode: number,
  ): Promise<void> {
    await drainEntry(entry);
    await this.prepareTarget(header.name, components, false);
    const full = join(this.root, ...components);
    // Node has no mkfifo/mknod; the tools create the node fresh (they fail if the name exists).
    try {
      if (type === 'fifo') await execFileAsync('mkfifo', ['-m', '600', '--', full]);
      else await execFileAsync('mknod', ['-m', '600', '--', full, type === 'character-device' ? 'c' : 'b', String(header.devmajor), String(header.devminor)]);
    } catch (e) {
      const stderr = typeof e === 'object' && e !== null && 'stderr' in e ? String((e as { stderr: unknown }).stderr) : '';
      if (/No space left/i.test(stderr)) throw new BundleError('NO_SPACE', `No space left creating ${path}`, { cause: e });
      throw new BundleError('BUNDLE_IO', `Could not create the ${type} ${path}: ${stderr.trim() || String(e)}`, { cause: e });
    }
    const stats = await lstat(full);
    if (stats.isSymbolicLink()) throw this.unsafe(header.name, 'it was replaced by a symlink while being created');
    if (this.preserveOwners) {
      const { uid, gid } = this.ownerOf(header);
      await lchown(full, uid, gid);
    }
    await chmod(full, mode);
    await utimes(full, header.mtime, header.mtime);
    this.count(type, path, { type, size: 0 });
  }

  /** Checks that need the whole tree, then directory metadata. */
  private async finish(): Promise<void> {
    for (const { components, target } of this.symlinks) {
      const name = '/' + components.join('/');
      const current = this.extracted.get(name);
      // A later entry of the same name replaced this link.
      if (current?.type !== 'symlink' || current.linkTarget !== target) continue;
      if (!symlinkResolvesInside(this.root, components, target)) {
        throw this.unsafe(name, `its symlink target "${target}" leads outside the root once the links it goes through are followed`, { target });
      }
    }
    if (this.isBundle) this.verifyAgainstManifest();
    const deepestFirst = [...this.directories].sort((a, b) => b.components.length - a.components.length);
    for (const dir of deepestFirst) {
      const full = join(this.root, ...dir.components);
      const stats = await lstat(full);
      if (!stats.isDirectory()) throw this.unsafe('/' + dir.components.join('/'), 'is no longer a directory');
      if (this.preserveOwners) await lchown(full, dir.uid, dir.gid);
      await chmod(full, dir.mode);
      await utimes(full, dir.mtime, dir.mtime);
    }
  }

  private verifyAgainstManifest(): void {
    const manifest = this.manifest;
    if (!manifest) {
      throw new BundleError('BUNDLE_TRUNCATED', `The bundle ended before its ${BUNDLE_MANIFEST_NAME} (the stream was cut short)`);
    }
    const mismatch = (message: string, details: Record<string, unknown>) => new BundleError('BUNDLE_MANIFEST_MISMATCH', message, { details });
    const listed = new Set<string>();
    for (const expected of manifest.entries) {
      listed.add(expected.path);
      const got = this.extracted.get(expected.path);
      if (!got) throw mismatch(`${expected.path} is in the manifest but not in the bundle`, { path: expected.path });
      if (got.type !== expected.type) {
        throw mismatch(`${expected.path} is a ${got.type} in the bundle but a ${expected.type} in the manifest`, { path: expected.path });
      }
      if (expected.type === 'file' && (got.sha256 !== expected.sha256 || got.size !== expected.size)) {
        throw new BundleError('BUNDLE_HASH_MISMATCH', `${expected.path} does not match its manifest SHA-256 (the data changed in transit)`, {
          details: { path: expected.path, expected: expected.sha256, actual: got.sha256, expectedSize: expected.size, actualSize: got.size },
        });
      }
      if ((expected.type === 'symlink' || expected.type === 'link') && got.linkTarget !== expected.linkTarget) {
        throw mismatch(`${expected.path} links to ${String(got.linkTarget)} but the manifest says ${String(expected.linkTarget)}`, { path: expected.path });
      }
    }
    for (const path of this.extracted.keys()) {
      if (!listed.has(path)) throw mismatch(`${path} is in the bundle but not in its manifest`, { path });
    }
  }
}
