/**
 * Deployer: the destination side of one isolation method. `migrate()` drives every deployer
 * through the same phases, so a new method plugs in by implementing this interface.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { MigrationPlan } from '../policy/plan.js';
import type { ResourceProfile } from '../policy/profile.js';
import type { Transport } from './transport.js';
import type { BundleSelectionOptions } from '../bundle/select.js';

/** What every phase of a deployment knows. */
export interface DeployContext {
  transport: Transport;
  profile: ResourceProfile;
  plan: MigrationPlan;
  /** Name of the migrated program at the destination (directory name, namespace name). */
  name: string;
  signal?: AbortSignal;
}

/** Facts the pre-flight check found at the destination. */
export interface PreflightReport {
  /** `uname -s -r -m` of the destination. */
  platform: { os: string; release: string; arch: string };
  /** Free bytes where the bundle will be unpacked. */
  freeBytes: number;
  /** Tools found, by name, with their path. */
  tools: Record<string, string>;
  /** Directory the program will live in. */
  installDir: string;
}

/** A verified bundle waiting in a staging directory. */
export interface StagedBundle {
  stagingDir: string;
  /** Bytes the destination read from the stream. */
  bytesReceived: number;
  /** Entries the manifest listed and the destination verified. */
  entriesVerified: number;
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
  /** Pid at the destination (in the destination's initial pid namespace). */
  pid: number;
  /** File receiving its stdout and stderr. */
  logPath: string;
  /** Addresses a client at the destination can reach it on, e.g. `10.231.0.2:8080`. */
  endpoints: string[];
}

/** The destination side of one isolation method. */
export interface Deployer {
  /** The method id this deployer implements, e.g. `chroot`. */
  readonly method: string;
  /** What the bundle must carry for this method (default: shared libraries included). */
  bundleSelection?(context: DeployContext): BundleSelectionOptions;
  /** Check the destination can take the program: platform, tools, free space, no name collision. */
  preflight(context: DeployContext, estimatedBytes: number): ResultAsync<PreflightReport, ApMigrateError>;
  /** Receive `bundle` into a staging directory and verify every hash. Removes staging on failure. */
  receive(context: DeployContext, bundle: Readable, onBytes?: (bytes: number) => void): ResultAsync<StagedBundle, ApMigrateError>;
  /** Build the environment and move it into place atomically. Leaves nothing behind on failure. */
  activate(context: DeployContext, staged: StagedBundle): ResultAsync<ActivatedDeployment, ApMigrateError>;
  /** Start the program inside its environment. */
  start(context: DeployContext, activated: ActivatedDeployment): ResultAsync<StartedProgram, ApMigrateError>;
  /** Check the program is running (and listening, if it listened at the source). */
  healthCheck(context: DeployContext, started: StartedProgram): ResultAsync<void, ApMigrateError>;
  /** Undo whatever exists: stop the program, unmount, remove staging and install directories. */
  rollback(context: DeployContext, state: { staged?: StagedBundle; activated?: ActivatedDeployment; started?: StartedProgram }): ResultAsync<void, ApMigrateError>;
}
