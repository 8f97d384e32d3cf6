/**
 * The types of `migrate()`: its options, progress and report.
 *
 * @module
 */
import type { MigrationPlan, PlanOptions } from '../policy/plan.js';
import type { ResourceProfile, ResourceProfileInput } from '../policy/profile.js';
import type { Deployer, HealthOutcome, ReceiverChoice, VmMoveSummary } from '../spec/deployer.js';
import type { ProfileTarget, Profiler } from '../spec/profiler.js';
import type { FreezerKind, Source, SourcePolicy } from '../spec/source.js';
import type { Transport } from '../spec/transport.js';
import type { CaptureOptions } from '../capture/index.js';
import type { HostingVm } from '../methods/esxi-vm/hosting-vm.js';

export type { SourcePolicy };

/**
 * The phases of a migration, in order. `capture` runs when the capture is on; `measure` when a
 * registered method measures something before planning (the hosting VM's size); `precopy` (the
 * first round, while the source runs) with the `pre-copy` cutover.
 */
export const MIGRATION_PHASES = ['profile', 'capture', 'measure', 'plan', 'preflight', 'precopy', 'transfer', 'activate', 'start', 'health', 'source'] as const;
/** One phase of a migration. */
export type MigrationPhase = (typeof MIGRATION_PHASES)[number];

/** Progress of a migration: the phase, and bytes for the transfer phase. */
export interface MigrationProgress {
  phase: MigrationPhase;
  /** Bytes sent so far (transfer phase). */
  bytesSent?: number;
  /** Bytes expected in all (transfer phase). */
  bytesTotal?: number;
  /** A short line for people. */
  message?: string;
}

/** How the source hands over to the destination (see {@link MigrateOptions.cutover}). */
export type Cutover = 'copy' | 'stop-and-copy' | 'pre-copy';


/** Options of {@link migrate}. */
export interface MigrateOptions {
  /** The program: profile it (launch or attach with `profiler`), or take a given profile. */
  target: ProfileTarget | { profile: ResourceProfileInput; pid?: number };
  /** Where it goes (for the file-based methods: chroot, namespaces, jail). */
  destination?: Transport;
  /**
   * The VM hosting the program and the ESXi host to move it to. Without it the `esxi-vm` method
   * is not a candidate (the plan says why); with it, its estimate is the VM's measured size.
   */
  vm?: HostingVm;
  /** Name at the destination (directory, namespace); default: the executable's base name. */
  name?: string;
  /** Force a method (it must still be allowed by the plan). */
  method?: string;
  /** Profiler used when `target` is not a profile. */
  profiler?: Profiler;
  /** How long to watch when profiling (default 3 s). */
  profileDurationMs?: number;
  /** Extra planner options (destination facts, sizes, methods). */
  planOptions?: PlanOptions;
  /**
   * Methods by id: each deployer brings its packager (defaults: chroot, linux-namespaces,
   * freebsd-jail, and esxi-vm when `vm` is given). Given ones replace the defaults of their id.
   */
  deployers?: Record<string, Deployer<unknown, unknown>>;
  /** Stop everything; whatever exists at the destination is rolled back. */
  signal?: AbortSignal;
  /** Called as the migration moves through its phases, and with bytes while transferring. */
  onProgress?: (progress: MigrationProgress) => void;
  /** Profile, plan and pre-flight only: nothing is sent or changed. */
  dryRun?: boolean;
  /**
   * Complete the capture (package files, config, data roots, accounts; see `captureProgram`).
   * Default: on when the program is profiled here (pid or command), off for a given profile;
   * `false` turns it off. `include`/`exclude` correct what it carries.
   */
  capture?: CaptureOptions | false;
  /**
   * The host the program runs on: capture reads it, and the program is frozen, thawed and stopped
   * there (default: this machine). See `createExecutorSource` for a host reached over SSH.
   */
  source?: Source;
  /**
   * How the source hands over: `copy` (default) copies while it runs and leaves it running;
   * `stop-and-copy` freezes its process tree, copies, starts and checks the destination, then
   * stops the source (on any failure it is thawed and never noticed); `pre-copy` copies everything
   * while it runs, then freezes it and sends only what changed since (new, changed and deleted
   * files), so the downtime is the second, small round. Both need a source pid.
   */
  cutover?: Cutover;
  /**
   * Let the destination take files it already has instead of receiving them: world-readable
   * system files at the same path with the same SHA-256 (default true). See docs/transfer.md.
   */
  dedup?: boolean;
  /**
   * Attempts of each transfer round (default 1). A round cut short (a dropped connection) is tried
   * again up to this many times, resuming: the destination keeps what it verified and the retry
   * sends only the rest. After the last failed attempt everything is rolled back.
   */
  transferAttempts?: number;
  /**
   * Compress the bundle on the wire (file-based methods): `none` (default), `zstd`, `gzip`, or
   * `auto`: the best codec both ends have, or none when the link (measured with 8 MiB after
   * pre-flight) is faster than the compressor. An explicit codec one end lacks is `TOOL_MISSING`.
   * With `zstd` or `gzip` the plan ranks the methods by their estimates after compression (with
   * `planOptions.compression.ratio` when given, else the measured defaults); with `auto` it ranks
   * them by bytes before compression (the codec is negotiated only after pre-flight) and the report
   * gives the chosen method's estimate after compression with the negotiated codec
   * (`estimatedWireBytes`). See docs/compression.md.
   */
  compression?: 'auto' | 'zstd' | 'gzip' | 'none';
  /** Send at most this many bytes per second (default: as fast as the link goes). Held within 5% over 30 s (`npm run bench -- bwlimit`). */
  bandwidthLimit?: number;
  /**
   * Let the default chroot and namespaces deployers start a program whose profile says uid or gid
   * 0. Root in a chroot or these namespaces is root on the destination host, so this is off by
   * default; turn it on only for a program the source really ran as root and that you trust.
   */
  allowRoot?: boolean;
  /** Default `keep-running`: the source is left alone. `stop` sends it SIGTERM after the destination is healthy. */
  sourcePolicy?: SourcePolicy;
}

/** One transfer round of a migration. */
export interface TransferRound {
  round: 'full' | 'delta';
  /** Bytes of the payload (the bundle before compression) in the attempt that succeeded. */
  bytesSent: number;
  /**
   * Bytes written to the transport in the attempt that succeeded: after compression and the
   * bandwidth cap. Equal to `bytesSent` for a deployer that does not count them (one that does
   * not send through the receiver's stream, e.g. `esxi-vm`: its payload travels as it is).
   */
  wireBytes: number;
  /** Bytes of files the destination took from what it held (dedup, resume, the first round). */
  seededBytes: number;
  /** Bytes sent by attempts that were cut short before it. */
  bytesSentBefore: number;
  /** Bytes written to the transport by the attempts that were cut short before it. */
  wireBytesBefore: number;
  attempts: number;
}

/** Time spent in one phase. */
export interface PhaseTiming {
  phase: MigrationPhase;
  ms: number;
}

/** What a migration did. */
export interface MigrationReport {
  name: string;
  method: string;
  plan: MigrationPlan;
  profile: ResourceProfile;
  dryRun: boolean;
  /** The plan's estimate for the chosen method. */
  estimatedBytes: number;
  /** The bundle's own estimate (the plan's files plus tar headers, without the manifest). */
  bundleEstimatedBytes: number;
  /**
   * Bytes of the bundle actually sent, before compression, over every round and attempt (0 for a
   * dry run). The destination verified these bytes; see `wireBytes` for what crossed the wire.
   */
  bytesSent: number;
  /**
   * Bytes written to the transport, after compression and the bandwidth cap, over every round and
   * attempt (0 for a dry run). Without compression: `bytesSent`.
   */
  wireBytes: number;
  /**
   * When the bundle travels compressed: the plan's estimate for the chosen method after
   * compression with the codec and level used (for `auto`, computed once the codec was negotiated).
   */
  estimatedWireBytes?: number;
  /** Bytes of the manifest entry in `bytesSent`. */
  manifestBytes: number;
  phases: PhaseTiming[];
  destination?: { installDir: string; pid: number; endpoints: string[]; logPath: string };
  /** For `esxi-vm`: the registered copy and its power state. */
  vm?: VmMoveSummary;
  source: { pid?: number; action: 'kept-running' | 'stopped' | 'none' };
  /** How the destination's health check decided the program was ready, with any warning (decision 0015). */
  health?: HealthOutcome;
  /** The hand-over: its mode, and for `stop-and-copy` and `pre-copy` the downtime (freeze to destination healthy). */
  cutover: { mode: Cutover; downtimeMs?: number; frozenProcesses?: number; freezer?: FreezerKind; freezerNote?: string };
  /** Each transfer round (two for `pre-copy`): bytes on the wire, bytes the destination already had, attempts. */
  rounds: TransferRound[];
  /** The receiver pre-flight picked at the destination, when the method had a choice. */
  receiver?: ReceiverChoice;
  /** The codec the bundle travelled with, and why it was chosen. */
  compression?: { codec: 'zstd' | 'gzip' | 'none'; level?: number; reason: string };
  /** Wall time of the whole migration. */
  totalMs: number;
}

