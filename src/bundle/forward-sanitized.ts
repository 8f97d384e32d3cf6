/**
 * The orchestrator's half of the receiver that needs no Node.js at the destination: read an
 * ap-migrate bundle as it streams past, apply every rule `unpackBundle` applies (decision 0102),
 * hash every file in flight and compare with the manifest (which comes last, decision 0101), and
 * re-emit a *plain* tar that any POSIX `tar -x` extracts the same way.
 *
 * What the output holds, and in what order:
 * 1. directories, regular files and fifos, in the bundle's order, under `prefix` (the root of the
 *    tree is `prefix` itself). Every parent is emitted explicitly before its children, so the
 *    destination's tar never invents a directory (mode 0755, owner 0, as `unpackBundle` would make it);
 * 2. once the manifest has arrived and matched, and the whole-tree symlink check has passed: hard
 *    links (to regular files emitted earlier), then symlinks. Nothing follows them, so no entry can
 *    be written through a link;
 * 3. optional trailer files (outside `prefix`), then the end-of-archive blocks.
 *
 * Headers are written by the repo's own encoder (`tar-header.ts`): ustar, with PAX records only for
 * long or non-ASCII names and large ids; no ACLs, extended attributes or file flags ever reach the
 * destination, whatever the bundle held. Any refused entry destroys the output stream (the
 * destination sees a cut archive) and `done` fails with the code `unpackBundle` would give.
 *
 * Deliberately stricter than `unpackBundle` (the destination's tar cannot be told how to resolve
 * them the same way everywhere): a name sent twice is refused unless both are directories; device
 * nodes are refused (there is no `allowDevices`); seeded entries are refused (no seeds here).
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { errAsync, ResultAsync } from 'neverthrow';
import { InvalidInputError, type InputIssue } from '../errors.js';
import * as tar from 'tar-stream';
import { BundleError } from './errors.js';
import { padToBlock, TAR_BLOCK, USTAR_MAX_ID } from './estimate.js';
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
import { resolvesInsideTree, splitMemberName, symlinkTargetStaysInside } from './paths.js';
import { SEED_PAX } from './seeds.js';
import { drainEntry, parseBundleMetadata, readSmallEntry, TarInput, type DecodedHeader, type EntryStream } from './tar-input.js';
import { encodeTarHeader, type TarEntryType } from './tar-header.js';

/** Options of {@link forwardSanitized}. */
export interface ForwardSanitizedOptions {
  /** Files with setuid/setgid bits: `reject` (default), `strip` the bits, or `allow` them. */
  setuid?: 'reject' | 'strip' | 'allow';
  /** Largest `bundle.json`/`manifest.json` accepted (default 64 MiB). */
  maxMetadataBytes?: number;
  /** Stop; the output is destroyed and `done` is `ABORTED`. */
  signal?: AbortSignal;
  /** Directory every emitted name is under (default `root`); the tree's root is this directory. */
  prefix?: string;
  /** Regular files to append after the tree (names outside `prefix`), computed once it is verified. */
  trailer?: (report: ForwardReport) => { name: string; data: Buffer }[];
  /**
   * What a refusal (or an abort) does to the output: `destroy` it with the error (default), or
   * `end` it where it is, as a cut archive, for a consumer that can tell a cut stream from a
   * complete one by itself (the POSIX receiver: its listing request comes last) and should stop
   * and clean up on its own rather than be killed.
   */
  onRefusal?: 'destroy' | 'end';
  /** Output buffered ahead of the consumer (default 1 MiB). */
  highWaterMark?: number;
}

/** One object of the tree the output creates, as the destination must hold it once extracted. */
export interface SanitizedEntry {
  /** Absolute path inside the tree (`/` is its root). */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'link' | 'fifo';
  /** Permission bits as emitted (setuid bits stripped when asked). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch, as emitted. */
  mtime: number;
  /** Data bytes (regular files). */
  size: number;
  /** SHA-256 of the data (regular files), computed in flight. */
  sha256?: string;
  /** Symlink target as stored; for hard links the absolute path (inside the tree) of the file linked to. */
  linkTarget?: string;
  /** A parent directory the bundle did not list (made 0755, owned by 0, as `unpackBundle` makes it). */
  implicit?: boolean;
}

/** What {@link forwardSanitized} read and emitted. */
export interface ForwardReport {
  info: BundleInfo;
  manifest: BundleManifest;
  /** Every object of the emitted tree (the root first), in emission order, each path once (its final state). */
  entries: SanitizedEntry[];
  /** Bundle entries by type (as `unpackBundle` counts them). */
  counts: Partial<Record<BundleEntryType, number>>;
  /** Data bytes of regular files. */
  dataBytes: number;
  /** Bytes read from the bundle. */
  bytesRead: number;
  /** Bytes of the plain tar emitted. */
  bytesWritten: number;
  /** Files whose setuid/setgid bits were removed (`setuid: 'strip'`). */
  strippedSetuid: string[];
}

/** The plain tar to send on, and how the reading ends. */
export interface SanitizedForward {
  /** The re-emitted plain tar. Destroyed (with the error) when the bundle is refused. */
  stream: Readable;
  /** Settles once the bundle has been read to its end and the output ended (or failed); `INVALID_INPUT` for arguments that are not a stream or valid options. */
  done: ResultAsync<ForwardReport, BundleError | InvalidInputError>;
}

const DEFAULT_MAX_METADATA = 64 * 1024 * 1024;
const READ_AHEAD_BYTES = 1024 * 1024;
const MAX_OCTAL_TIME = 0o77777777777;


/**
 * Read the bundle `input`, check it as `unpackBundle` does, and re-emit it as a plain tar on
 * `stream`. Never throws: an invalid option or input ends `done` with `BUNDLE_IO`/`INVALID`-like
 * bundle errors; a refused bundle destroys `stream` and `input`.
 */
export function forwardSanitized(input: Readable, options: ForwardSanitizedOptions = {}): SanitizedForward {
  const issues = checkArguments(input, options);
  if (issues.length > 0) {
    const stream = new Readable({ read() {} });
    const error = new InvalidInputError('forwardSanitized arguments', issues);
    stream.destroy(error);
    if (!issues.some((i) => i.path === 'input')) input.destroy();
    return { stream, done: errAsync(error) };
  }
  const forwarder = new Forwarder(input, options);
  return { stream: forwarder.output, done: ResultAsync.fromPromise(forwarder.run(), (e) => e as BundleError) };
}

function checkArguments(input: unknown, options: unknown): InputIssue[] {
  const issues: InputIssue[] = [];
  const stream = input as Record<string, unknown> | null;
  if (typeof input !== 'object' || stream === null || !['pipe', 'unpipe', 'on', 'destroy'].every((m) => typeof stream[m] === 'function')) {
    issues.push({ path: 'input', message: 'must be a readable stream' });
  } else if (stream.destroyed === true) {
    issues.push({ path: 'input', message: 'the stream is already destroyed' });
  }
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return [...issues, { path: 'options', message: 'must be an object' }];
  const o = options as Record<string, unknown>;
  if (o.setuid !== undefined && !['reject', 'strip', 'allow'].includes(o.setuid as string)) issues.push({ path: 'setuid', message: 'must be reject, strip or allow' });
  if (o.onRefusal !== undefined && o.onRefusal !== 'destroy' && o.onRefusal !== 'end') issues.push({ path: 'onRefusal', message: 'must be destroy or end' });
  if (o.prefix !== undefined && (typeof o.prefix !== 'string' || splitMemberName(o.prefix).isErr() || (o.prefix as string).replace(/\/+$/, '') === '')) issues.push({ path: 'prefix', message: 'must be a relative name without ".."' });
  if (o.maxMetadataBytes !== undefined && !(Number.isSafeInteger(o.maxMetadataBytes) && (o.maxMetadataBytes as number) > 0)) issues.push({ path: 'maxMetadataBytes', message: 'must be a positive integer' });
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) issues.push({ path: 'signal', message: 'must be an AbortSignal' });
  if (o.trailer !== undefined && typeof o.trailer !== 'function') issues.push({ path: 'trailer', message: 'must be a function' });
  return issues;
}

interface ModelEntry extends SanitizedEntry {
  /** Counted as a bundle entry (not an implicit parent). */
  counted: boolean;
}

/** What every entry of the tree has, before its type says the rest. */
type EntryBase = Pick<ModelEntry, 'path' | 'mode' | 'uid' | 'gid' | 'mtime' | 'size' | 'counted'>;

class Forwarder {
  readonly output: Readable;
  private readonly prefix: string;
  private readonly model = new Map<string, ModelEntry>();
  private readonly heldLinks: ModelEntry[] = [];
  private readonly heldSymlinks: ModelEntry[] = [];
  private readonly counts: Partial<Record<BundleEntryType, number>> = {};
  private readonly strippedSetuid: string[] = [];
  private info: BundleInfo | undefined;
  private manifest: BundleManifest | undefined;
  private entryIndex = 0;
  private dataBytes = 0;
  private bytesWritten = 0;
  private readonly tarInput: TarInput;
  private waiting: (() => void) | undefined;
  private outputClosed: unknown;
  private rootEmitted = false;

  constructor(
    private readonly input: Readable,
    private readonly options: ForwardSanitizedOptions,
  ) {
    this.tarInput = new TarInput(input);
    this.prefix = (options.prefix ?? BUNDLE_ROOT_DIR).replace(/\/+$/, '');
    this.output = new Readable({
      highWaterMark: options.highWaterMark ?? READ_AHEAD_BYTES,
      read: () => this.wake(),
      destroy: (error, callback) => {
        this.outputClosed ??= error ?? new BundleError('BUNDLE_IO', 'The consumer closed the sanitized stream before its end', { details: { consumerClosed: true } });
        this.wake();
        callback(error);
      },
    });
  }

  private wake(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }

  /** Push bytes with backpressure; throws when the consumer is gone. */
  private async emit(data: Buffer): Promise<void> {
    if (data.length === 0) return;
    if (this.outputClosed !== undefined) throw this.consumerGone();
    this.bytesWritten += data.length;
    if (this.output.push(data)) return;
    await new Promise<void>((resolve) => {
      this.waiting = resolve;
    });
    if (this.outputClosed !== undefined) throw this.consumerGone();
  }

  /** The consumer of the output went away (closed, failed): `done`'s error says so in `details.consumerClosed`. */
  private consumerGone(): BundleError {
    const cause = this.outputClosed;
    if (BundleError.isInstance(cause) && cause.details?.consumerClosed === true) return cause;
    return new BundleError('BUNDLE_IO', `The consumer closed the sanitized stream before its end${cause instanceof Error ? `: ${cause.message}` : ''}`, { cause, details: { consumerClosed: true } });
  }

  async run(): Promise<ForwardReport> {
    const extract = tar.extract({ highWaterMark: READ_AHEAD_BYTES });
    const onAbort = () => extract.destroy(new BundleError('ABORTED', 'Forwarding the bundle was aborted by the caller'));
    try {
      if (this.options.signal?.aborted) throw new BundleError('ABORTED', 'Forwarding the bundle was aborted by the caller');
      this.options.signal?.addEventListener('abort', onAbort, { once: true });
      this.tarInput.connect(extract);
      for await (const entry of extract) {
        await this.handle(entry.header as DecodedHeader, entry as unknown as EntryStream);
      }
      if (this.entryIndex === 0) {
        throw new BundleError('BUNDLE_TRUNCATED', `The bundle stream ended before ${BUNDLE_INFO_NAME} (${this.tarInput.bytesRead} bytes read, no entry): nothing was sent, or it was cut short`, {
          details: { bytesRead: this.tarInput.bytesRead },
        });
      }
      const report = this.finish();
      // The held links, grouped by directory (deepest first), each group after its directory's
      // header sent again: making a link changes its directory's times, and a tar restores a
      // directory's times when it leaves it in archive order (or, for links it delays, after them).
      // Every path here has only directories as parents, so the order among them is free.
      for (const group of this.heldGroups()) for (const entry of group) await this.emit(this.header(entry));
      for (const file of this.options.trailer?.(report) ?? []) {
        await this.emit(encodeTarHeader({ name: file.name, type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: Math.floor(Date.now() / 1000), size: file.data.length }));
        await this.emit(file.data);
        await this.emit(Buffer.alloc(padToBlock(file.data.length) - file.data.length));
      }
      await this.emit(Buffer.alloc(2 * TAR_BLOCK));
      report.bytesWritten = this.bytesWritten;
      this.output.push(null);
      return report;
    } catch (e) {
      const error = this.classify(e);
      extract.destroy();
      this.input.unpipe();
      this.input.destroy();
      if (this.options.onRefusal === 'end' && this.outputClosed === undefined && !this.output.readableEnded) this.output.push(null);
      else this.output.destroy(error);
      throw error;
    } finally {
      this.options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** The same classification as `unpackBundle`'s. */
  private classify(error: unknown): BundleError {
    const aborted = this.options.signal?.aborted ? new BundleError('ABORTED', 'Forwarding the bundle was aborted by the caller', { cause: error }) : undefined;
    return this.tarInput.classify(error, aborted, 'forwarding the bundle');
  }

  private unsafe(name: string, why: string, details: Record<string, unknown> = {}): BundleError {
    return new BundleError('BUNDLE_UNSAFE_ENTRY', `Refused tar entry "${name}": ${why}`, { details: { entry: name, ...details } });
  }

  private componentsOf(name: string, what: string): string[] {
    const split = splitMemberName(name);
    if (split.isErr()) throw this.unsafe(name, `its ${what} ${split.error}`);
    const components = split.value;
    if (components[0] !== BUNDLE_ROOT_DIR) throw this.unsafe(name, `its ${what} is not under ${BUNDLE_ROOT_DIR}/`);
    return components.slice(1);
  }

  /** The bundle's info (first) and manifest (last) entries; false for every other entry. */
  private async handleMetadata(header: DecodedHeader, entry: EntryStream): Promise<boolean> {
    const index = this.entryIndex++;
    if (this.manifest) {
      throw new BundleError('BUNDLE_MANIFEST_MISMATCH', `Entry "${header.name}" follows ${BUNDLE_MANIFEST_NAME}, which must be last`);
    }
    if (index === 0) {
      if (header.name !== BUNDLE_INFO_NAME || header.type !== 'file') {
        throw new BundleError('BUNDLE_MANIFEST_INVALID', `Not an ap-migrate bundle: the first entry is "${header.name}", not ${BUNDLE_INFO_NAME}`);
      }
      this.info = parseBundleMetadata(BundleInfoSchema, await this.readSmall(entry, header.name), header.name);
      return true;
    }
    if (header.name !== BUNDLE_MANIFEST_NAME) return false;
    this.manifest = parseBundleMetadata(BundleManifestSchema, await this.readSmall(entry, header.name), header.name);
    return true;
  }

  /** The entry's mode after the setuid policy: refused, stripped (and remembered) or kept. */
  private modeUnderSetuidPolicy(header: DecodedHeader): number {
    const mode = header.mode & 0o7777;
    if ((header.type as string | null) === 'directory' || (mode & 0o6000) === 0) return mode;
    const policy = this.options.setuid ?? 'reject';
    if (policy === 'reject') throw this.unsafe(header.name, `it has setuid/setgid bits (mode ${mode.toString(8)}); pass setuid: 'strip' or 'allow'`);
    if (policy === 'allow') return mode;
    this.strippedSetuid.push(header.name);
    return mode & ~0o6000;
  }

  private async handle(header: DecodedHeader, entry: EntryStream): Promise<void> {
    if (await this.handleMetadata(header, entry)) return;
    const components = this.componentsOf(header.name, 'name');
    const path = '/' + components.join('/');
    const mode = this.modeUnderSetuidPolicy(header);
    const type = header.type as string | null;
    if (components.length === 0 && type !== 'directory') throw this.unsafe(header.name, 'only a directory may stand for the root');
    const { uid, gid } = ownerOf(header);
    const base: EntryBase = { path, mode, uid, gid, mtime: timeOf(header), size: 0, counted: true };
    switch (type) {
      case 'file':
      case 'contiguous-file':
        if (header.pax?.[SEED_PAX.from] !== undefined) {
          throw this.unsafe(header.name, 'it is a seeded entry (data the destination would take from its own copy); this receiver takes no seeds: pack without held files');
        }
        return this.forwardFile(header, entry, components, { ...base, type: 'file' });
      case 'directory':
        await drainEntry(entry);
        return this.forwardDirectory(header.name, components, { ...base, type: 'directory' });
      case 'symlink':
        await drainEntry(entry);
        return this.holdSymlink(header, components, base);
      case 'link':
        await drainEntry(entry);
        return this.holdHardLink(header, components, base);
      case 'fifo':
        await drainEntry(entry);
        await this.claim(header.name, components);
        this.record({ ...base, type: 'fifo' }, 'fifo');
        return this.emit(this.header(this.model.get(path) as ModelEntry));
      case 'character-device':
      case 'block-device':
        throw this.unsafe(header.name, 'it is a device node; this receiver never creates device nodes');
      default:
        throw new BundleError('BUNDLE_UNSUPPORTED_ENTRY', `Tar entry "${header.name}" has a type this unpacker does not handle (${String(type)})`, { details: { entry: header.name } });
    }
  }

  /** A symlink waits for the end of the stream (as `unpackBundle` creates them last); its target must stay inside. */
  private async holdSymlink(header: DecodedHeader, components: string[], base: EntryBase): Promise<void> {
    const target = header.linkname ?? '';
    if (target === '' || !symlinkTargetStaysInside(components, target)) {
      throw this.unsafe(header.name, `its symlink target "${target}" leads outside the root`, { target });
    }
    await this.claim(header.name, components);
    const held: ModelEntry = { ...base, type: 'symlink', linkTarget: target };
    this.record(held, 'symlink');
    this.heldSymlinks.push(held);
  }

  /** A hard link waits too, and only to a regular file this stream already carried. */
  private async holdHardLink(header: DecodedHeader, components: string[], base: EntryBase): Promise<void> {
    const split = splitMemberName(header.linkname ?? '');
    const targetComponents = split.isOk() && split.value[0] === BUNDLE_ROOT_DIR ? split.value.slice(1) : undefined;
    if (targetComponents === undefined) throw this.unsafe(header.name, `its hard-link target "${header.linkname ?? ''}" is not a name under ${BUNDLE_ROOT_DIR}/`);
    const targetPath = '/' + targetComponents.join('/');
    const earlier = this.model.get(targetPath);
    if (!earlier || (earlier.type !== 'file' && earlier.type !== 'link')) {
      throw this.unsafe(header.name, `it is a hard link to "${header.linkname ?? ''}", which is not a regular file extracted earlier in this stream`);
    }
    await this.claim(header.name, components);
    // The destination's link shares the target's inode: its mode, owner and data are the target's.
    const held: ModelEntry = { ...base, type: 'link', linkTarget: targetPath };
    this.record(held, 'link');
    this.heldLinks.push(held);
  }

  /** The tree's root is emitted first: as the bundle's `root/` entry, or as a private directory (what `unpackBundle`'s staging is). */
  private async ensureRoot(): Promise<void> {
    if (this.rootEmitted) return;
    this.rootEmitted = true;
    const root: ModelEntry = { path: '/', type: 'directory', mode: 0o700, uid: 0, gid: 0, mtime: nowSeconds(), size: 0, implicit: true, counted: false };
    this.model.set('/', root);
    await this.emit(this.header(root));
  }

  /**
   * Every parent of `components` is a directory of the tree (missing ones are emitted, 0755, as
   * `unpackBundle` creates them); a symlink or other non-directory on the way is refused.
   */
  private async ensureParents(name: string, components: readonly string[]): Promise<void> {
    await this.ensureRoot();
    for (let depth = 1; depth < components.length; depth++) {
      const key = '/' + components.slice(0, depth).join('/');
      const existing = this.model.get(key);
      if (existing) {
        if (existing.type === 'symlink') throw this.unsafe(name, `it would be written through the symlink ${key} extracted earlier`);
        if (existing.type !== 'directory') throw this.unsafe(name, `its parent ${key} is not a directory`);
        continue;
      }
      const dir: ModelEntry = { path: key, type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: nowSeconds(), size: 0, implicit: true, counted: false };
      this.model.set(key, dir);
      await this.emit(this.header(dir));
    }
  }

  /** Parents checked; the name itself must be new (a name sent twice is refused, see the module note). */
  private async claim(name: string, components: readonly string[]): Promise<void> {
    await this.ensureParents(name, components);
    const existing = this.model.get('/' + components.join('/'));
    if (existing?.type === 'directory') throw this.unsafe(name, 'a directory of the same name was extracted earlier');
    if (existing) throw this.unsafe(name, 'an entry of the same name was sent earlier; this receiver refuses names sent twice');
  }

  private record(entry: ModelEntry, type: BundleEntryType): void {
    this.model.set(entry.path, entry);
    this.counts[type] = (this.counts[type] ?? 0) + 1;
  }

  private async forwardDirectory(name: string, components: string[], entry: ModelEntry): Promise<void> {
    if (components.length === 0) {
      const root = this.model.get('/');
      // Sent after the implicit root (or twice): re-emitted; the last header is what the destination keeps.
      if (root) {
        Object.assign(root, { ...entry, implicit: false });
      } else {
        this.rootEmitted = true;
        this.model.set('/', entry);
      }
      this.counts.directory = (this.counts.directory ?? 0) + 1;
      return this.emit(this.header(this.model.get('/') as ModelEntry));
    }
    await this.ensureParents(name, components);
    const existing = this.model.get(entry.path);
    if (existing && existing.type !== 'directory') throw this.unsafe(name, 'an entry of the same name was sent earlier; this receiver refuses names sent twice');
    if (existing) Object.assign(existing, { ...entry, implicit: false });
    else this.model.set(entry.path, entry);
    this.counts.directory = (this.counts.directory ?? 0) + 1;
    await this.emit(this.header(this.model.get(entry.path) as ModelEntry));
  }

  private async forwardFile(header: DecodedHeader, entry: EntryStream, components: string[], file: ModelEntry): Promise<void> {
    await this.claim(header.name, components);
    file.size = header.size ?? 0;
    await this.emit(this.header(file));
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of entry) {
      hash.update(chunk);
      size += chunk.length;
      await this.emit(chunk);
    }
    if (size !== file.size) throw new BundleError('BUNDLE_TRUNCATED', 'The bundle stream ended in the middle of an entry');
    await this.emit(Buffer.alloc(padToBlock(size) - size));
    file.sha256 = hash.digest('hex');
    this.dataBytes += size;
    this.record(file, 'file');
  }

  /** The header of one emitted object, named under the prefix. */
  private header(entry: SanitizedEntry): Buffer {
    const name = entry.path === '/' ? `${this.prefix}/` : `${this.prefix}${entry.path}${entry.type === 'directory' ? '/' : ''}`;
    const type: TarEntryType = entry.type;
    const big = entry.uid > USTAR_MAX_ID || entry.gid > USTAR_MAX_ID;
    const linkname = entry.type === 'link' ? `${this.prefix}${entry.linkTarget ?? ''}` : entry.type === 'symlink' ? entry.linkTarget : undefined;
    return encodeTarHeader({
      name,
      type,
      mode: entry.mode,
      uid: entry.uid,
      gid: entry.gid,
      mtime: entry.mtime,
      size: entry.type === 'file' ? entry.size : 0,
      linkname,
      ...(big ? { pax: { uid: String(entry.uid), gid: String(entry.gid) } } : {}),
    });
  }

  /** The held links by the directory they are made in: that directory, its hard links, its symlinks; deepest first. */
  private heldGroups(): ModelEntry[][] {
    const groups = new Map<string, ModelEntry[]>();
    for (const entry of [...this.heldLinks, ...this.heldSymlinks]) {
      const parent = entry.path.slice(0, entry.path.lastIndexOf('/')) || '/';
      let group = groups.get(parent);
      if (!group) {
        group = [this.model.get(parent) as ModelEntry];
        groups.set(parent, group);
      }
      group.push(entry);
    }
    const depth = (path: string) => (path === '/' ? 0 : path.split('/').length);
    return [...groups.entries()].sort((a, b) => depth(b[0]) - depth(a[0])).map(([, group]) => group);
  }

  /** The whole-tree checks once the stream has ended: links resolved in the tree, then the manifest. */
  private finish(): ForwardReport {
    for (const link of this.heldSymlinks) {
      const components = link.path.split('/').filter(Boolean);
      if (!this.resolvesInside(components, link.linkTarget ?? '')) {
        throw this.unsafe(link.path, `its symlink target "${link.linkTarget ?? ''}" leads outside the root once the links it goes through are followed`, { target: link.linkTarget });
      }
    }
    this.verifyAgainstManifest();
    const entries = [...this.model.values()].map(({ counted: _counted, ...rest }) => rest);
    return {
      info: this.info as BundleInfo,
      manifest: this.manifest as BundleManifest,
      entries,
      counts: this.counts,
      dataBytes: this.dataBytes,
      bytesRead: this.tarInput.bytesRead,
      bytesWritten: this.bytesWritten,
      strippedSetuid: this.strippedSetuid,
    };
  }

  /** `symlinkResolvesInside`, on the tree this stream describes instead of a file system. */
  private resolvesInside(linkComponents: readonly string[], target: string): boolean {
    return resolvesInsideTree(linkComponents, target, (components) => {
      const found = this.model.get('/' + components.join('/'));
      if (!found) return 'missing';
      return found.type === 'symlink' ? { symlink: found.linkTarget ?? '' } : 'other';
    });
  }

  /** `unpackBundle`'s manifest check, with the same codes. */
  private verifyAgainstManifest(): void {
    const manifest = this.manifest;
    if (!manifest) throw new BundleError('BUNDLE_TRUNCATED', `The bundle ended before its ${BUNDLE_MANIFEST_NAME} (the stream was cut short)`);
    const mismatch = (message: string, details: Record<string, unknown>) => new BundleError('BUNDLE_MANIFEST_MISMATCH', message, { details });
    const listed = new Set<string>();
    for (const expected of manifest.entries) {
      listed.add(expected.path);
      const got = this.model.get(expected.path);
      if (!got || !got.counted) throw mismatch(`${expected.path} is in the manifest but not in the bundle`, { path: expected.path });
      if (got.type !== expected.type) throw mismatch(`${expected.path} is a ${got.type} in the bundle but a ${expected.type} in the manifest`, { path: expected.path });
      if (expected.type === 'file' && (got.sha256 !== expected.sha256 || got.size !== expected.size)) {
        throw new BundleError('BUNDLE_HASH_MISMATCH', `${expected.path} does not match its manifest SHA-256 (the data changed in transit)`, {
          details: { path: expected.path, expected: expected.sha256, actual: got.sha256, expectedSize: expected.size, actualSize: got.size },
        });
      }
      if ((expected.type === 'symlink' || expected.type === 'link') && got.linkTarget !== expected.linkTarget) {
        throw mismatch(`${expected.path} links to ${String(got.linkTarget)} but the manifest says ${String(expected.linkTarget)}`, { path: expected.path });
      }
    }
    for (const [path, entry] of this.model) {
      if (entry.counted && !listed.has(path)) throw mismatch(`${path} is in the bundle but not in its manifest`, { path });
    }
  }

  private readSmall(entry: EntryStream, name: string): Promise<string> {
    return readSmallEntry(entry, name, this.options.maxMetadataBytes ?? DEFAULT_MAX_METADATA);
  }
}

function ownerOf(header: DecodedHeader): { uid: number; gid: number } {
  const pax = header.pax ?? {};
  const uid = pax.uid !== undefined ? Number(pax.uid) : header.uid;
  const gid = pax.gid !== undefined ? Number(pax.gid) : header.gid;
  const valid = (id: number | undefined) => (id !== undefined && Number.isSafeInteger(id) && id >= 0 && id <= 0xfffffffe ? id : 0);
  return { uid: valid(uid), gid: valid(gid) };
}

/** Whole seconds, clamped to what an ustar header holds. */
function timeOf(header: DecodedHeader): number {
  const seconds = Math.floor((header.mtime?.getTime() ?? 0) / 1000);
  if (!Number.isFinite(seconds) || seconds < 0) return 0;
  return Math.min(seconds, MAX_OCTAL_TIME);
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Whether `error` (from {@link SanitizedForward.done}) only says that the output's consumer went away. */
export function isConsumerClosed(error: unknown): boolean {
  return BundleError.isInstance(error) && error.details?.consumerClosed === true;
}
