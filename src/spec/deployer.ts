/**
 * Deployer: the destination side of one isolation method, paired with the {@link Packager} that
 * produces what it receives. `migrate()` drives every method through the same phases and knows
 * none by name: a new method plugs in by implementing this interface.
 *
 * State is explicit: what pre-flight learnt is returned in its report and passed to the later
 * phases, and rollback gets everything that exists. A deployer keeps no per-migration state of its
 * own, so one instance serves any number of migrations, of the same name too, at once.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { MigrationPlan } from '../policy/plan.js';
import type { ResourceProfile } from '../policy/profile.js';
import type { HeldFiles, Packager } from './packager.js';
import type { SourcePolicy } from './source.js';
import type { Transport } from './transport.js';

/** What every phase of a deployment knows. */
export interface DeployContext {
  /** How the destination is reached (a deployer that reaches its own, like `esxi-vm`, ignores it). */
  transport: Transport;
  profile: ResourceProfile;
  plan: MigrationPlan;
  /** Name of the migrated program at the destination (directory name, namespace name). */
  name: string;
  signal?: AbortSignal;
}

/** Facts the pre-flight check found at the destination; `facts` is what the method itself learnt. */
export interface PreflightReport<Facts = unknown> {
  /** `uname -s -r -m` of the destination. */
  platform: { os: string; release: string; arch: string };
  /** Free bytes where the payload will land. */
  freeBytes: number;
  /** Tools found, by name, with their path. */
  tools: Record<string, string>;
  /** Directory (or VM path) the program will live in. */
  installDir: string;
  /** Where `receive` writes, chosen here so rollback can remove it even when receiving failed. */
  stagingDir: string;
  /** What later phases of this method need from pre-flight. */
  facts: Facts;
  /** What will receive the payload there, when the method had a choice (pre-flight picked it). */
  receiver?: ReceiverChoice;
}

/** The receiver pre-flight picked, and what it can take. */
export interface ReceiverChoice {
  /** `node`: the SDK's receiver run by the destination's Node.js; `posix-sh`: its `sh` and `tar`, checked by the SDK. */
  kind: 'node' | 'posix-sh';
  /**
   * Whether it takes seeded entries (files the destination already holds). Without them there is
   * no dedup, no pre-copy delta round and no resume: every round sends every byte.
   */
  seeds: boolean;
  /** One line for the report: what was picked and why. */
  summary: string;
}

/** A verified payload waiting at the destination. */
export interface StagedBundle {
  stagingDir: string;
  /** Bytes the destination read. */
  bytesReceived: number;
  /** Entries the manifest listed and the destination verified. */
  entriesVerified: number;
  /** Bytes of files the destination took from what it already had (seeded entries), not from the wire. */
  seededBytes?: number;
  /**
   * The deployer already did its activation's first step while receiving (asked by
   * `ReceiveOptions.activateNext`, e.g. built the root in staging): `activate` does only the rest.
   */
  prepared?: boolean;
}

/**
 * One transfer round, as `migrate()` asks for it. `full` (default) fills staging; `delta` is the
 * second round of a pre-copy: seeded from what the first round staged, it replaces that once
 * verified. Later attempts of a round resume from what the earlier ones kept.
 */
export interface ReceiveOptions {
  round?: 'full' | 'delta';
  /** 1 for the first attempt of this round. */
  attempt?: number;
  /** Let the destination take world-readable system files it already has (dedup). */
  hostSeeds?: boolean;
  /** Send at most this many bytes per second (a link shared with other traffic). */
  bandwidthLimit?: number;
  /** Compress the payload on the wire with this codec (chosen by `migrate()` from what both ends have). */
  compression?: { codec: 'zstd' | 'gzip' | 'none'; level?: number };
  /** Called with the bytes written to the transport after compression and the bandwidth cap (the report's `wireBytes`). */
  onWireBytes?: (bytes: number) => void;
  /**
   * This deployer's `inventory` for this attempt has just answered: what it set up at the
   * destination to answer (its receiver) is there, and need not be checked again.
   */
  afterInventory?: boolean;
  /**
   * No round follows this one: `activate` comes next with what it stages. A deployer may do its
   * activation's first step now, in the same command, and say so in `StagedBundle.prepared`.
   */
  activateNext?: boolean;
}

/** What `migrate()` asks a destination before packing a round: which files it already holds. */
export interface InventoryQuery {
  round: 'full' | 'delta';
  /** 1 for the first attempt of this round; later ones first let the cut attempt's receiver finish keeping its files. */
  attempt?: number;
  /** Paths to look for on the destination host itself (dedup); none: the host is not asked. */
  hostPaths?: readonly string[];
}

/** How a health check that passed decided the program was ready (decision 0015). */
export interface HealthOutcome {
  /**
   * `roles`: every long-lived role of the source's tree is back; `probe`: the readiness probe
   * succeeded; `listening`: there were no roles to wait for; `quiet`: some roles never appeared,
   * but the tree stayed unchanged for the quiet time; `timeout`: some roles had not appeared by the
   * health timeout.
   */
  readiness: 'roles' | 'probe' | 'listening' | 'quiet' | 'timeout';
  /** Roles of the source's tree that never appeared at the destination (masked titles). */
  missingRoles: string[];
  /** What the caller should know: set when `readiness` is `quiet` or `timeout`. */
  warnings: string[];
}

/** The program's environment, built and moved into place, not yet started. */
export interface ActivatedDeployment {
  installDir: string;
  /** Root directory the program will see as `/`. */
  rootDir: string;
  /** Things to undo on rollback besides removing `installDir` (mounts, namespaces, interfaces). */
  undo: string[][];
}

/** A started program at the destination. */
export interface StartedProgram {
  /** Pid at the destination (in the destination's initial pid namespace; 0 when not known, e.g. in a VM). */
  pid: number;
  /** File receiving its stdout and stderr. */
  logPath: string;
  /** Addresses a client at the destination can reach it on, e.g. `10.231.0.2:8080`. */
  endpoints: string[];
}

/** Everything that exists at the destination for one migration, phase by phase. */
export interface DeploymentState<Facts = unknown> {
  preflight?: PreflightReport<Facts>;
  staged?: StagedBundle;
  activated?: ActivatedDeployment;
  started?: StartedProgram;
  /** How its health check decided it was ready (when the method says). */
  health?: HealthOutcome;
}

/** A VM moved by the `esxi-vm` method, as the migration report shows it. */
export interface VmMoveSummary {
  name: string;
  destinationVmx: string;
  powerState: string;
  files: number;
  /** How the VM travelled: its directory copied datastore to datastore, or exported and imported as OVF. */
  transfer: 'datastore-copy' | 'export-import';
  /** With `vm.transfer: 'auto'`, why the datastore copy ran instead of the export/import. */
  fallbackReason?: string;
  /** How the source VM was quiesced (`none`: it was already off). */
  quiesce: 'power-off' | 'snapshot' | 'none';
  /** What went wrong without failing the move (e.g. a source snapshot left behind). */
  warnings: string[];
}

/** Method-specific parts of a migration report. */
export interface MethodReport {
  vm?: VmMoveSummary;
}

/** What happened to the source once the destination was healthy. */
export type SourceOutcome = 'kept-running' | 'stopped';

/**
 * The destination side of one isolation method. `Payload` is what its packager produces (a bundle
 * stream for the file-based methods); `Facts` what its pre-flight learns.
 */
export interface Deployer<Payload = Readable, Facts = unknown> {
  /** The method id this deployer implements, e.g. `chroot`. */
  readonly method: string;
  /** Produces what `receive` takes. */
  readonly packager: Packager<Payload>;
  /** `transport` (default): needs `migrate({ destination })`; `own`: reaches its destination itself. */
  readonly destination?: 'transport' | 'own';
  /** The name at the destination when the caller gives none (default: from the executable). */
  defaultName?(profile: ResourceProfile): string;
  /** Check the destination can take the program: platform, tools, free space, no name collision. Changes nothing. */
  preflight(context: DeployContext, estimatedBytes: number): ResultAsync<PreflightReport<Facts>, ApMigrateError>;
  /** Receive the payload into `preflight.stagingDir` and verify it. */
  receive(context: DeployContext, preflight: PreflightReport<Facts>, payload: Payload, onBytes?: (bytes: number) => void, options?: ReceiveOptions): ResultAsync<StagedBundle, ApMigrateError>;
  /**
   * What the destination already holds for a round (see `bundle/seeds.ts`): the packer sends those
   * files as seeded entries. A method without it receives everything, and has no pre-copy.
   */
  inventory?(context: DeployContext, preflight: PreflightReport<Facts>, query: InventoryQuery): ResultAsync<HeldFiles, ApMigrateError>;
  /** Build the environment and move it into place atomically. */
  activate(context: DeployContext, preflight: PreflightReport<Facts>, staged: StagedBundle): ResultAsync<ActivatedDeployment, ApMigrateError>;
  /** Start the program inside its environment. */
  start(context: DeployContext, activated: ActivatedDeployment): ResultAsync<StartedProgram, ApMigrateError>;
  /** Check the program runs (and listens, if it listened at the source, and is ready); how readiness was decided, where the method knows. */
  healthCheck(context: DeployContext, started: StartedProgram): ResultAsync<HealthOutcome | void, ApMigrateError>;
  /** Undo whatever exists: stop the program, unmount, remove staging and install directories. */
  rollback(context: DeployContext, state: DeploymentState<Facts>): ResultAsync<void, ApMigrateError>;
  /**
   * For a method whose packager quiesced the source itself (a VM powered off): settle it by the
   * policy once the destination is healthy. Without it, `migrate()` stops the program through the
   * {@link Source} when the policy says `stop`.
   */
  settleSource?(context: DeployContext, state: DeploymentState<Facts>, policy: SourcePolicy): ResultAsync<SourceOutcome, ApMigrateError>;
  /** What the method adds to the migration report (for `esxi-vm`: the VM that moved). */
  describe?(context: DeployContext, state: DeploymentState<Facts>): MethodReport;
  /** Release what pre-flight opened (sessions); called once at the end, whatever happened. */
  release?(context: DeployContext, state: DeploymentState<Facts>): ResultAsync<void, ApMigrateError>;
}
