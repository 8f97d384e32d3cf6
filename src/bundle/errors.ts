/**
 * Typed errors of the bundle packer and unpacker.
 *
 * @module
 */
import { ApMigrateError, toError } from '../errors.js';

/** Stable codes a {@link BundleError} carries. */
export const BUNDLE_ERROR_CODES = [
  /** A file named in the profile does not exist at pack time. */
  'BUNDLE_SOURCE_MISSING',
  /** A file changed size while it was being packed. */
  'BUNDLE_SOURCE_CHANGED',
  /** A file could not be read (permissions, symlink loop, I/O error). */
  'BUNDLE_SOURCE_UNREADABLE',
  /** An entry would land outside the staging root, write through a symlink, or is forbidden (device, setuid). */
  'BUNDLE_UNSAFE_ENTRY',
  /** An entry type the unpacker does not handle (GNU sparse, multi-volume ...). */
  'BUNDLE_UNSUPPORTED_ENTRY',
  /** A file's SHA-256 differs from the manifest. */
  'BUNDLE_HASH_MISMATCH',
  /** The entries extracted differ from the manifest's list (missing, extra, other type or size). */
  'BUNDLE_MANIFEST_MISMATCH',
  /** `bundle.json` or `manifest.json` is not valid. */
  'BUNDLE_MANIFEST_INVALID',
  /** The stream ended early: mid-entry, before the manifest, with no entry at all (an empty stream), or closed without ending. */
  'BUNDLE_TRUNCATED',
  /** A tar header is damaged (bad checksum, unknown format). */
  'BUNDLE_CORRUPT',
  /** A seeded entry's data is not at the destination (or not what the entry says): see seeds.ts. */
  'BUNDLE_SEED_MISSING',
  /** The staging directory exists and is not empty. */
  'BUNDLE_STAGING_NOT_EMPTY',
  /** The destination file system is full (or over quota). */
  'NO_SPACE',
  /** Another file-system error while writing or reading. */
  'BUNDLE_IO',
  /** The caller aborted through its AbortSignal. */
  'ABORTED',
] as const;

/** A stable bundle error code. */
export type BundleErrorCode = (typeof BUNDLE_ERROR_CODES)[number];

/** An error from packing or unpacking a bundle. */
export class BundleError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.BundleError');
  }

  /** Whether `value` is a BundleError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is BundleError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.BundleError');
  }

  /** The stable code, narrowed to bundle codes. */
  declare readonly code: BundleErrorCode;

  constructor(
    code: BundleErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown>; isRetryable?: boolean } = {},
  ) {
    super(code, message, options);
  }
}

/** Node's errno codes that mean "the disk is full". */
const NO_SPACE_ERRNOS = new Set(['ENOSPC', 'EDQUOT']);

/** The errno code of a Node system error, if it is one. */
export function errnoOf(value: unknown): string | undefined {
  if (typeof value === 'object' && value !== null && 'code' in value) {
    const code = (value as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * Turn anything thrown during packing/unpacking into a {@link BundleError}: keeps BundleErrors,
 * maps a full disk to `NO_SPACE` and other system errors to `fallback`.
 */
export function toBundleError(value: unknown, fallback: BundleErrorCode, context: string): BundleError {
  if (BundleError.isInstance(value)) return value;
  const errno = errnoOf(value);
  const error = toError(value);
  if (errno && NO_SPACE_ERRNOS.has(errno)) {
    return new BundleError('NO_SPACE', `No space left on the destination while ${context}`, { cause: error, details: { errno } });
  }
  if (errno === 'ABORT_ERR' || error.name === 'AbortError') {
    return new BundleError('ABORTED', `Aborted while ${context}`, { cause: error });
  }
  return new BundleError(fallback, `${context}: ${error.message}`, { cause: error, details: errno ? { errno } : {} });
}
