/**
 * Packager: the source side of one isolation method. It says how many bytes the method would
 * move (for the plan and the destination's space check) and produces what travels: a bundle
 * stream for the file-based methods, a VM to move for `esxi-vm`. `migrate()` hands what it
 * produces, unopened, to the same method's {@link Deployer}.
 *
 * @module
 */
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { MigrationPlan, PlanOptions } from '../policy/plan.js';
import type { ResourceProfile } from '../policy/profile.js';
import type { Source } from './source.js';

/** Where the destination would take a file it already holds from (see `bundle/seeds.ts`). */
export type SeedId = 'staged' | 'resume' | 'host';

/** What the destination holds at one path. */
export interface HeldFile {
  size: number;
  sha256: string;
  from: SeedId;
}

/** Path → what the destination holds there. A plain object: it crosses to a remote packer as JSON. */
export type HeldFiles = Record<string, HeldFile>;

/** What a packager works from: the program, where it runs, and (after planning) the plan. */
export interface PackRequest {
  profile: ResourceProfile;
  /** The plan that chose this method. */
  plan: MigrationPlan;
  /** The host the program runs on: files are read there. */
  source: Source;
  /** What the destination already holds: a packer may send those files as claims, without data. */
  held?: HeldFiles;
  signal?: AbortSignal;
}

/** Facts a packager measured before planning, merged into the planner's options. */
export type PlanFacts = Pick<PlanOptions, 'hostingVm' | 'sizes'>;

/** Bytes a method would move. */
export interface PackEstimate {
  /** Bytes on the wire (for a bundle: the whole stream except its manifest). */
  bytes: number;
  /** Of `bytes`, those of whole trees measured on disk (data roots, a thick jail's base). */
  measuredTreeBytes: number;
}

/** What a finished pack sent. */
export interface PackSummary {
  /** Every byte that travelled. */
  totalBytes: number;
  /** Of `totalBytes`, the bytes of the manifest (0 when the payload has none). */
  manifestBytes: number;
  /** Bytes of files sent as claims on what the destination held (not in `totalBytes`). */
  seededBytes?: number;
}

/**
 * What travels, being produced: `payload` goes to the deployer; `done` settles once it has been
 * consumed to its end (or failed: then with the packer's own error).
 */
export interface Packed<Payload> {
  payload: Payload;
  done: ResultAsync<PackSummary, ApMigrateError>;
}

/** The source side of one isolation method. */
export interface Packager<Payload> {
  /**
   * Facts the planner needs that only this method can measure (a hosting VM's size). Called
   * before planning, for every registered method; absent when there are none.
   */
  measure?(profile: ResourceProfile, source: Source, signal?: AbortSignal): ResultAsync<PlanFacts, ApMigrateError>;
  /** Bytes the method would move for this plan; reads the source only to measure whole trees. */
  estimate(request: PackRequest): ResultAsync<PackEstimate, ApMigrateError>;
  /** Start producing the payload. Nothing is sent until the deployer reads it. */
  pack(request: PackRequest, estimate: PackEstimate): ResultAsync<Packed<Payload>, ApMigrateError>;
}
