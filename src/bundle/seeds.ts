/**
 * What the destination already has: files it can take from its own disk instead of receiving
 * them. One mechanism serves three uses (see docs/decisions/0103-seeded-entries.md):
 *
 * - `resume`: the files an interrupted attempt verified, kept with a journal;
 * - `staged`: the tree the first round of a pre-copy staged, when the second round sends only
 *   what changed since;
 * - `host`: world-readable system files the destination host has at the same path (dedup).
 *
 * The destination answers an inventory ({@link HeldFiles}); the packer then writes a *seeded*
 * entry (a regular-file header with no data and {@link SEED_PAX} records) for every file whose
 * size and SHA-256 match, and the unpacker takes the data from the seed and verifies it. Which
 * directory or host roots a seed id stands for is decided at the destination, never by the bundle.
 *
 * @module
 */
import { z } from 'zod';
import type { HeldFiles, SeedId } from '../spec/packager.js';

export type { HeldFile, HeldFiles, SeedId } from '../spec/packager.js';

/** Where a seeded entry's data comes from at the destination. */
export const SEED_IDS = ['staged', 'resume', 'host'] as const satisfies readonly SeedId[];

/** PAX records of a seeded entry. */
export const SEED_PAX = { from: 'APMIGRATE.seed', sha256: 'APMIGRATE.sha256', size: 'APMIGRATE.size' } as const;

/** Host directories whose world-readable files may seed a root by default (the system's own files). */
export const DEFAULT_HOST_SEED_ROOTS: readonly string[] = ['/usr', '/lib', '/lib32', '/lib64', '/bin', '/sbin', '/opt', '/etc'];

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const size = z.number().int().nonnegative();
const absolute = z.string().startsWith('/').max(4096);

/** The journal written beside an unpacked tree: every regular file it holds, verified. */
export const JournalSchema = z.object({
  kind: z.literal('ap-migrate-journal'),
  version: z.literal(1),
  files: z.array(z.tuple([absolute, size, sha256Hex])),
});
/** The journal of an unpacked tree. */
export type Journal = z.infer<typeof JournalSchema>;

/** Where the journal of the tree unpacked at `root` lives (beside it, outside the program's root). */
export function journalPathOf(root: string): string {
  return `${root.replace(/\/+$/, '')}.journal.json`;
}

/** The inventory a deployer asks of its destination. */
export const InventoryRequestSchema = z.object({
  /** A tree staged by an earlier round of this migration (pre-copy). */
  staged: absolute.optional(),
  /** The files kept from an interrupted attempt. */
  resume: absolute.optional(),
  /** Host files at these paths, if they are world-readable regular files under `roots`. */
  host: z.object({ roots: z.array(absolute).max(64), paths: z.array(absolute).max(200_000) }).optional(),
});
/** The inventory a deployer asks of its destination. */
export type InventoryRequest = z.infer<typeof InventoryRequestSchema>;

/** The destination's answer, validated by the side that asked (it came over a wire). */
export const HeldFilesSchema: z.ZodType<HeldFiles> = z.record(absolute, z.object({ size, sha256: sha256Hex, from: z.enum(SEED_IDS) }));

/** Bytes and files a set of seeded entries saved, by seed. */
export interface SeededTotals {
  files: number;
  bytes: number;
  bySeed: Partial<Record<SeedId, { files: number; bytes: number }>>;
}

/** An empty {@link SeededTotals}. */
export function noSeeded(): SeededTotals {
  return { files: 0, bytes: 0, bySeed: {} };
}

/** Add one seeded file to `totals`. */
export function addSeeded(totals: SeededTotals, from: SeedId, bytes: number): void {
  totals.files += 1;
  totals.bytes += bytes;
  const seed = (totals.bySeed[from] ??= { files: 0, bytes: 0 });
  seed.files += 1;
  seed.bytes += bytes;
}
