/**
 * The bundle's two metadata entries and their schemas.
 *
 * A bundle is a tar stream laid out as:
 * 1. `bundle.json` ({@link BundleInfo}): format version, the profile and an entry-count estimate;
 *    small, written first so a reader knows what it receives before the data.
 * 2. `root/...`: the program's files under their absolute paths (`/usr/bin/x` is `root/usr/bin/x`).
 * 3. `manifest.json` ({@link BundleManifest}): every entry with its SHA-256, written last because
 *    hashes are only known once each file has streamed (see docs/decisions/0101-manifest-last.md).
 *
 * @module
 */
import { z } from 'zod';
import { ResourceProfileSchema } from '../policy/profile.js';

/** Version of the bundle layout and of both metadata entries. */
export const BUNDLE_FORMAT_VERSION = 1 as const;
/** Name of the first tar entry. */
export const BUNDLE_INFO_NAME = 'bundle.json';
/** Name of the last tar entry. */
export const BUNDLE_MANIFEST_NAME = 'manifest.json';
/** Directory inside the tar that stands for the destination's `/`. */
export const BUNDLE_ROOT_DIR = 'root';

/** Entry types a bundle carries (tar-stream's names). */
export const BUNDLE_ENTRY_TYPES = ['file', 'directory', 'symlink', 'link', 'fifo', 'character-device', 'block-device'] as const;
/** One entry type. */
export type BundleEntryType = (typeof BUNDLE_ENTRY_TYPES)[number];

const nonNegativeInt = z.number().int().nonnegative();
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'a lower-case hex SHA-256');

/** One entry of the manifest. */
export const ManifestEntrySchema = z.object({
  /** Absolute path at the destination, e.g. `/usr/bin/x` (the tar name is `root/usr/bin/x`). */
  path: z.string().startsWith('/'),
  type: z.enum(BUNDLE_ENTRY_TYPES),
  /** Data bytes in the tar (0 for everything but regular files). */
  size: nonNegativeInt,
  /** Permission bits including setuid/setgid/sticky (`0o7777` mask). */
  mode: z.number().int().min(0).max(0o7777),
  uid: nonNegativeInt,
  gid: nonNegativeInt,
  /** Modification time, whole seconds since the epoch (tar's precision). */
  mtime: z.number().int(),
  /** Symlink target as stored, or (hard links) the absolute path of the entry linked to. */
  linkTarget: z.string().optional(),
  /** SHA-256 of the data (regular files only). */
  sha256: sha256Hex.optional(),
  devmajor: nonNegativeInt.optional(),
  devminor: nonNegativeInt.optional(),
});
/** One entry of the manifest. */
export type ManifestEntry = z.infer<typeof ManifestEntrySchema>;

/** Counts of packed entries by type, and of profile files left out by reason. */
export const BundleCountsSchema = z.object({
  entries: z.record(z.string(), nonNegativeInt),
  skipped: z.record(z.string(), nonNegativeInt),
});
/** Counts of packed entries by type, and of profile files left out by reason. */
export type BundleCounts = z.infer<typeof BundleCountsSchema>;

/** The first entry, `bundle.json`. */
export const BundleInfoSchema = z.object({
  kind: z.literal('ap-migrate-bundle'),
  formatVersion: z.literal(BUNDLE_FORMAT_VERSION),
  createdAt: z.string(),
  /** Entries the packer expects to write (from the profile; ancestors and symlink targets may add some). */
  estimatedEntries: nonNegativeInt,
  /** Bytes the packer expects to write, without the manifest. */
  estimatedBytes: nonNegativeInt,
  profile: ResourceProfileSchema,
});
/** The first entry, `bundle.json`. */
export type BundleInfo = z.infer<typeof BundleInfoSchema>;

/** The last entry, `manifest.json`. */
export const BundleManifestSchema = z.object({
  kind: z.literal('ap-migrate-manifest'),
  formatVersion: z.literal(BUNDLE_FORMAT_VERSION),
  createdAt: z.string(),
  profile: ResourceProfileSchema,
  /** The migration plan, opaque JSON passed in by the caller. */
  plan: z.unknown(),
  entries: z.array(ManifestEntrySchema),
  counts: BundleCountsSchema,
  /** Sum of the data bytes of regular files. */
  dataBytes: nonNegativeInt,
  /** Problems that did not stop packing (files missing with `onMissing: 'warn'`). */
  warnings: z.array(z.string()).default([]),
});
/** The last entry, `manifest.json`. */
export type BundleManifest = z.infer<typeof BundleManifestSchema>;
