/**
 * The state of one migration run, shared by its phase functions: the options, the source, the
 * phase timings, and what the phases found so far. Phases return what they produce; only the
 * timings and the destination's {@link DeploymentState} accumulate here.
 *
 * @module
 */
import { err, errAsync, okAsync, ResultAsync, type Result } from 'neverthrow';
import { ApMigrateError, MigrationError } from '../errors.js';
import type { PlanOptions } from '../policy/plan.js';
import type { DeploymentState } from '../spec/deployer.js';
import type { HeldFiles } from '../spec/packager.js';
import type { Source } from '../spec/source.js';
import type { Cutover, MigrateOptions, MigrationPhase, MigrationProgress, PhaseTiming, TransferRound } from './types.js';

/** One migration in progress. */
export interface Run {
  readonly options: MigrateOptions;
  readonly source: Source;
  readonly cutover: Cutover;
  readonly startedAt: number;
  readonly phases: PhaseTiming[];
  /** What exists at the destination: what rollback undoes. */
  readonly deployment: DeploymentState;
  /** The deployer's pre-flight was called: from then on its `release` runs at the end. */
  preflightCalled?: boolean;
  /** A program launched to be profiled: it keeps running, and is the source from then on. */
  launchedPid?: number;
  /** The transfer rounds done so far. */
  readonly rounds: TransferRound[];
  /** The wire codec chosen after pre-flight. */
  compression?: { codec: 'zstd' | 'gzip' | 'none'; level?: number; reason: string };
  /** The options the plan was made with (for the estimate after compression once `auto` has chosen). */
  planOptions?: PlanOptions;
  /** The chosen method's estimate after compression with the codec used (a compressed bundle only). */
  estimatedWireBytes?: number;
  /** The first round's inventory, asked during pre-flight while the codec is chosen; taken by that round. */
  firstInventory?: ResultAsync<HeldFiles | undefined, ApMigrateError>;
}

/** A new run of `options`. */
export function startRun(options: MigrateOptions, source: Source): Run {
  return { options, source, cutover: options.cutover ?? 'copy', startedAt: performance.now(), phases: [], deployment: {}, rounds: [] };
}

/** Tell the caller about progress (never lets a throwing callback break the migration). */
export function emit(run: Run, progress: MigrationProgress): void {
  try {
    run.options.onProgress?.(progress);
  } catch {
    // The caller's progress display failing is no reason to stop moving its program.
  }
}

/** Call a plug-in: a throw (instead of a returned Result) becomes a typed error, never a rejection. */
export function guarded<T>(what: string, call: () => ResultAsync<T, ApMigrateError>): ResultAsync<T, ApMigrateError> {
  const settled = (async (): Promise<Result<T, ApMigrateError>> => {
    try {
      return await call();
    } catch (thrown) {
      return err(ApMigrateError.isInstance(thrown) ? thrown : new MigrationError('MIGRATION_FAILED', `${what} failed: ${String(thrown)}`, { cause: thrown }));
    }
  })();
  return new ResultAsync(settled);
}

/** Run one phase: announce it, time it, and record the time whatever its outcome. */
export function timed<T>(run: Run, phase: MigrationPhase, work: () => ResultAsync<T, ApMigrateError>): ResultAsync<T, ApMigrateError> {
  emit(run, { phase, message: `${phase}...` });
  const start = performance.now();
  const settled = async () => {
    const result = await guarded(`The ${phase} phase`, work);
    run.phases.push({ phase, ms: performance.now() - start });
    return result;
  };
  return new ResultAsync(settled());
}

/** Err(ABORTED) when the caller's signal fired, else Ok: a check between phases. */
export function notAborted(run: Run): ResultAsync<void, ApMigrateError> {
  const aborted = abortedError(run);
  return aborted ? errAsync(aborted) : okAsync(undefined);
}

/** `ABORTED` when the caller's signal fired, else undefined. */
export function abortedError(run: Run): ApMigrateError | undefined {
  const signal = run.options.signal;
  return signal?.aborted ? new MigrationError('ABORTED', 'The migration was aborted', { cause: signal.reason }) : undefined;
}

/** The signal option, spread into calls that take one. */
export function signalOption(run: Run): { signal?: AbortSignal } {
  return run.options.signal ? { signal: run.options.signal } : {};
}
