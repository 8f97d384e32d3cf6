/**
 * Bundle size arithmetic: what tar-stream writes for each entry, and the bytes a bundle of a profile
 * should take, computed from the profile alone.
 *
 * @module
 */
import { posix } from 'node:path';
import type { ResourceProfile } from '../policy/profile.js';
import { BUNDLE_FORMAT_VERSION, BUNDLE_INFO_NAME, BUNDLE_ROOT_DIR, type BundleInfo } from './manifest.js';
import { selectProfilePaths, type BundleSelectionOptions } from './select.js';

/** Tar block size: headers and data are padded to it. */
export const TAR_BLOCK = 512;
/** Two zero blocks end an archive. */
export const TAR_END_BYTES = 2 * TAR_BLOCK;
/** Largest uid/gid a ustar header holds (7 octal digits are written as 6 plus a terminator). */
export const USTAR_MAX_ID = 0o777777;

/** Round `bytes` up to whole tar blocks. */
export function padToBlock(bytes: number): number {
  return Math.ceil(bytes / TAR_BLOCK) * TAR_BLOCK;
}

/** One PAX record, `"<len> key=value\n"`, where len counts itself. */
function paxRecordBytes(key: string, value: string): number {
  const body = Buffer.byteLength(` ${key}=${value}\n`);
  let digits = String(body).length;
  if (body + digits >= 10 ** digits) digits += 1;
  return body + digits;
}

/** Whether a name fits a ustar header (ASCII, split into prefix <= 155 and name <= 100 at a `/`). */
function fitsUstar(name: string): boolean {
  if (Buffer.byteLength(name) !== name.length) return false;
  let rest = name;
  let prefix = '';
  while (rest.length > 100) {
    const slash = rest.indexOf('/');
    if (slash === -1) return false;
    prefix += prefix ? '/' + rest.slice(0, slash) : rest.slice(0, slash);
    rest = rest.slice(slash + 1);
  }
  return prefix.length <= 155;
}

/** What decides an entry's header size. */
export interface TarHeaderShape {
  name: string;
  linkname?: string | undefined;
  /** Extra PAX records (e.g. large uid/gid). */
  pax?: Record<string, string> | undefined;
}

/** Bytes of an entry's header(s) as tar-stream writes them: 512, or PAX header + records + 512. */
export function tarHeaderBytes(shape: TarHeaderShape): number {
  const needsPax =
    shape.pax !== undefined || !fitsUstar(shape.name) || (shape.linkname !== undefined && Buffer.byteLength(shape.linkname) > 100);
  if (!needsPax) return TAR_BLOCK;
  let records = paxRecordBytes('path', shape.name);
  if (shape.linkname) records += paxRecordBytes('linkpath', shape.linkname);
  for (const [key, value] of Object.entries(shape.pax ?? {})) records += paxRecordBytes(key, value);
  return TAR_BLOCK + padToBlock(records) + TAR_BLOCK;
}

/** The tar name of an absolute destination path (`/usr/bin/x` -> `root/usr/bin/x`, directories end in `/`). */
export function tarNameOf(absolutePath: string, isDirectory: boolean): string {
  const base = absolutePath === '/' ? BUNDLE_ROOT_DIR : BUNDLE_ROOT_DIR + absolutePath;
  return isDirectory ? base + '/' : base;
}

/** What {@link estimateBundleBytes} expects a bundle to take. */
export interface BundleEstimate {
  /** All bytes of the tar stream except the `manifest.json` entry. */
  bytes: number;
  /** Entries expected (including `bundle.json` and ancestor directories, excluding the manifest). */
  entries: number;
  /** Data bytes of regular files. */
  dataBytes: number;
  /** Headers, PAX records, padding, `bundle.json` and the end-of-archive blocks (without the extra trees). */
  overheadBytes: number;
  /** The `extraTreeBytes` the caller measured, included in `bytes`. */
  extraTreeBytes: number;
}

/** Options of {@link estimateBundleBytes}. */
export interface BundleEstimateOptions extends BundleSelectionOptions {
  /** Bytes the `extraTrees` add (headers, data, padding), as `measureTrees` measured them (default 0). */
  extraTreeBytes?: number;
}

/** Shape of the `bundle.json` a packer writes; the estimate builds the same to know its size. */
export function makeBundleInfo(profile: ResourceProfile, createdAt: Date, estimatedEntries: number, estimatedBytes: number): BundleInfo {
  return {
    kind: 'ap-migrate-bundle',
    formatVersion: BUNDLE_FORMAT_VERSION,
    createdAt: createdAt.toISOString(),
    estimatedEntries,
    estimatedBytes,
    profile,
  };
}

/**
 * Bytes a bundle of `profile` takes, without its manifest: the 512-byte tar headers, PAX records,
 * padding and data of `bundle.json`, every ancestor directory and every selected path, plus the
 * end-of-archive blocks. Computed from the profile alone, so it assumes what the profile says:
 * file sizes as profiled, no hard links (a hard link sends no data, so the bundle only gets smaller)
 * and no symlinked ancestors. Thick bundles add `extraTreeBytes` (from `measureTrees`).
 */
export function estimateBundleBytes(profile: ResourceProfile, options: BundleEstimateOptions = {}): BundleEstimate {
  const extraTreeBytes = options.extraTreeBytes ?? 0;
  const { paths } = selectProfilePaths(profile, options);
  const directories = new Set<string>(['/']);
  let headerBytes = tarHeaderBytes({ name: tarNameOf('/', true) });
  let dataBytes = 0;
  let entries = 1;
  const addDirectory = (dir: string) => {
    if (directories.has(dir)) return;
    directories.add(dir);
    headerBytes += tarHeaderBytes({ name: tarNameOf(dir, true) });
    entries += 1;
  };
  for (const selected of paths) {
    const ancestors: string[] = [];
    for (let dir = posix.dirname(selected.path); dir !== '/'; dir = posix.dirname(dir)) ancestors.unshift(dir);
    ancestors.forEach(addDirectory);
    if (selected.kind === 'directory') {
      addDirectory(selected.path);
      continue;
    }
    if (selected.path === '/' || directories.has(selected.path)) continue;
    headerBytes += tarHeaderBytes({ name: tarNameOf(selected.path, false), linkname: selected.linkTarget });
    entries += 1;
    if (selected.kind === 'regular') dataBytes += selected.size;
    // Padding per file, not on the sum.
    headerBytes += padToBlock(selected.kind === 'regular' ? selected.size : 0) - (selected.kind === 'regular' ? selected.size : 0);
  }
  const withoutInfo = headerBytes + dataBytes + TAR_END_BYTES;
  const info = JSON.stringify(makeBundleInfo(profile, new Date(0), entries + 1, withoutInfo + extraTreeBytes + 1024));
  const infoBytes = tarHeaderBytes({ name: BUNDLE_INFO_NAME }) + padToBlock(Buffer.byteLength(info));
  const profileBytes = withoutInfo + infoBytes;
  return { bytes: profileBytes + extraTreeBytes, entries: entries + 1, dataBytes, overheadBytes: profileBytes - dataBytes, extraTreeBytes };
}
