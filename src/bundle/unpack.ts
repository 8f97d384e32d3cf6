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
 * @module
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, open, readdir, realpath, rm, symlink, unlink, utimes } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { promisify } from 'node:util';
import { errAsync, ResultAsync } from 'neverthrow';
import * as tar from 'tar-stream';
import { InvalidInputError } from '../errors.js';
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
}

const DEFAULT_MAX_METADATA = 64 * 1024 * 1024;

/** Header fields tar-stream decodes, with the PAX records it keeps. */
type DecodedHeader = tar.Header & { pax?: Record<string, string> | null };

/** One entry's data stream, as tar-stream's extract yields it. */
type EntryStream = AsyncIterable<Buffer> & { header: tar.Header };

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
 * input is destroyed and the error is a {@link BundleError}.
 */
export function unpackBundle(input: Readable, stagingDir: string, options: UnpackOptions = {}): ResultAsync<UnpackReport, BundleError | InvalidInputError> {
  if (options.setuid !== undefined && !['reject', 'strip', 'allow'].includes(options.setuid)) {
    return errAsync(new InvalidInputError('unpack options', [{ path: 'setuid', message: 'must be reject, strip or allow' }]));
  }
  if (options.maxMetadataBytes !== undefined && !(Number.isInteger(options.maxMetadataBytes) && options.maxMetadataBytes > 0)) {
    return errAsync(new InvalidInputError('unpack options', [{ path: 'maxMetadataBytes', message: 'must be a positive integer' }]));
  }
  const unpacker = new Unpacker(input, resolvePath(stagingDir), options);
  return ResultAsync.fromPromise(unpacker.run(), (e) => e as BundleError);
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
  private dataBytes = 0;
  private bytesRead = 0;
  private entryIndex = 0;
  private written = 0;
  private lastProgress = 0;

  constructor(
    private readonly input: Readable,
    private readonly stagingDir: string,
    private readonly options: UnpackOptions,
  ) {
    this.preserveOwners = options.preserveOwners ?? process.getuid?.() === 0;
  }

  async run(): Promise<UnpackReport> {
    const extract = tar.extract();
    const onAbort = () => extract.destroy(new BundleError('ABORTED', 'Unpacking was aborted by the caller'));
    try {
      await this.prepareStaging();
      if (this.options.signal?.aborted) throw new BundleError('ABORTED', 'Unpacking was aborted by the caller');
      this.options.signal?.addEventListener('abort', onAbort, { once: true });
      const counter = new Transform({
        transform: (chunk: Buffer, _encoding, callback) => {
          this.bytesRead += chunk.length;
          callback(null, chunk);
        },
      });
      this.input.on('error', (e) => extract.destroy(e));
      counter.on('error', (e) => extract.destroy(e));
      this.input.pipe(counter).pipe(extract as unknown as NodeJS.WritableStream);
      for await (const entry of extract) {
        await this.handle(entry.header as DecodedHeader, entry as unknown as EntryStream);
        this.reportProgress();
      }
      await this.finish();
      return {
        stagingDir: this.root,
        isBundle: this.isBundle,
        ...(this.info ? { info: this.info } : {}),
        ...(this.manifest ? { manifest: this.manifest } : {}),
        counts: this.counts,
        dataBytes: this.dataBytes,
        bytesRead: this.bytesRead,
        strippedSetuid: this.strippedSetuid,
        verified: this.isBundle,
      };
    } catch (e) {
      const error = this.classify(e);
      extract.destroy();
      this.input.unpipe();
      this.input.destroy();
      await this.removeStaging();
      throw error;
    } finally {
      this.options.signal?.removeEventListener('abort', onAbort);
    }
  }

  private classify(e: unknown): BundleError {
    if (this.options.signal?.aborted) return new BundleError('ABORTED', 'Unpacking was aborted by the caller', { cause: e });
    if (e instanceof BundleError) return e;
    const message = e instanceof Error ? e.message : String(e);
    if (/Unexpected end of data/.test(message)) {
      return new BundleError('BUNDLE_TRUNCATED', 'The bundle stream ended in the middle of an entry', { cause: e });
    }
    if (/Invalid tar header|Header exceeds max size|Invalid header|unknown format/.test(message)) {
      return new BundleError('BUNDLE_CORRUPT', `A tar header is damaged: ${message}`, { cause: e });
    }
    return toBundleError(e, 'BUNDLE_IO', 'unpacking the bundle');
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
    if (!this.options.onProgress || this.bytesRead - this.lastProgress < 1024 * 1024) return;
    this.lastProgress = this.bytesRead;
    this.options.onProgress({ bytes: this.bytesRead, entries: this.written });
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
    const index = this.entryIndex++;
    if (this.manifest) {
      throw new BundleError('BUNDLE_MANIFEST_MISMATCH', `Entry "${header.name}" follows ${BUNDLE_MANIFEST_NAME}, which must be last`);
    }
    if (index === 0 && header.name === BUNDLE_INFO_NAME && header.type === 'file' && this.options.requireManifest !== false) {
      this.isBundle = true;
      this.info = this.parseMetadata(BundleInfoSchema, await this.readSmall(entry, header.name), header.name);
      return;
    }
    if (index === 0 && this.options.requireManifest !== false) {
      throw new BundleError('BUNDLE_MANIFEST_INVALID', `Not an ap-migrate bundle: the first entry is "${header.name}", not ${BUNDLE_INFO_NAME} (pass requireManifest: false to read a plain tar)`);
    }
    if (this.isBundle && header.name === BUNDLE_MANIFEST_NAME) {
      this.manifest = this.parseMetadata(BundleManifestSchema, await this.readSmall(entry, header.name), header.name);
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

  private parseMetadata<T>(schema: { safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } } }, text: string, name: string): T {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new BundleError('BUNDLE_MANIFEST_INVALID', `${name} is not valid JSON`, { cause: e });
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new BundleError('BUNDLE_MANIFEST_INVALID', `${name} is not valid${issue ? ` at ${issue.path.map(String).join('.')}: ${issue.message}` : ''}`, {
        details: { issues: parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })) },
      });
    }
    return parsed.data;
  }

  private async readSmall(entry: EntryStream, name: string): Promise<string> {
    const limit = this.options.maxMetadataBytes ?? DEFAULT_MAX_METADATA;
    if (entry.header.size > limit) throw new BundleError('BUNDLE_MANIFEST_INVALID', `${name} is larger than ${limit} bytes`);
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk);
    return Buffer.concat(chunks).toString('utf8');
  }

  private async drain(entry: EntryStream): Promise<void> {
    for await (const chunk of entry) void chunk;
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

  private async writeFile(header: DecodedHeader, entry: EntryStream, components: string[], path: string, mode: number): Promise<void> {
    await this.prepareTarget(header.name, components, false);
    const full = join(this.root, ...components);
    const handle = await open(full, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    const hash = createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of entry) {
        hash.update(chunk);
        size += chunk.length;
        let offset = 0;
        while (offset < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
          offset += bytesWritten;
        }
      }
      const mtime = header.mtime;
      if (this.preserveOwners) {
        const { uid, gid } = this.ownerOf(header);
        await handle.chown(uid, gid);
      }
      // After chown, which may clear setuid bits.
      await handle.chmod(mode);
      await handle.utimes(mtime, mtime);
    } finally {
      await handle.close();
    }
    this.dataBytes += size;
    this.count('file', path, { type: 'file', size, sha256: hash.digest('hex') });
  }

  private async makeDirectory(header: DecodedHeader, entry: EntryStream, components: string[], mode: number): Promise<void> {
    await this.drain(entry);
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
    await this.drain(entry);
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
    await this.drain(entry);
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
    await this.drain(entry);
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
      if (!(await symlinkResolvesInside(this.root, components, target))) {
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
