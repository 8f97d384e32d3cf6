/**
 * `migrate()`: profile -> capture -> measure -> plan -> pre-flight -> transfer (the packer's
 * payload streamed into the deployer, verified there) -> activate -> start -> health -> source.
 * The source program is never touched before the destination is verified and running; any failure
 * after the destination was touched is rolled back there, so a failed or aborted migration leaves
 * no half-installed destination.
 *
 * `migrate()` knows no method by name: every method is a {@link Deployer} with its packager, run
 * through the same short phase functions (`src/migrate/`).
 *
 * @module
 */
import { errAsync, ok, ResultAsync, safeTry } from 'neverthrow';
import type { ApMigrateError } from './errors.js';
import type { Deployer, PreflightReport } from './spec/deployer.js';
import type { PackEstimate, PackSummary } from './spec/packager.js';
import { createExecutorSource } from './source/executor-source.js';
import { defaultDeployers } from './methods/defaults.js';
import { checkMigrateOptions } from './migrate/check-options.js';
import { capturePhase, measurePhase, planPhase, profilePhase } from './migrate/source-phases.js';
import {
  chooseMethod,
  deployPhases,
  estimatePayload,
  freezeSource,
  preflightPhase,
  settleSourcePhase,
  transferPhase,
  canPreCopy,
  takesSeeds,
  type Round,
  undoAfterFailure,
  type ChosenMethod,
} from './migrate/deploy-phases.js';
import { buildReport, type ReportParts } from './migrate/report.js';
import { emit, guarded, notAborted, startRun, type Run } from './migrate/run.js';
import type { MigrateOptions, MigrationReport } from './migrate/types.js';

export * from './migrate/types.js';

/**
 * Migrate a program. Returns a report, or a typed error; on error after the destination was
 * touched, everything created there has been removed and the source is untouched (thawed, for
 * `stop-and-copy`). One exception: when the destination is healthy but the source cannot be
 * stopped, the destination is kept (it holds the state) and the error says so
 * (`details.destinationKept`). Options that
 * are not what {@link MigrateOptions} says are `INVALID_INPUT` naming the field, before anything runs.
 */
export function migrate(options: MigrateOptions): ResultAsync<MigrationReport, ApMigrateError> {
  const invalid = checkMigrateOptions(options);
  if (invalid) return errAsync(invalid);
  const run = startRun(options, options.source ?? createExecutorSource());
  const deployers: Record<string, Deployer<unknown, unknown>> = {
    ...defaultDeployers({ allowRoot: options.allowRoot === true, ...(options.vm ? { vm: options.vm } : {}) }),
    ...options.deployers,
  };
  return runMigration(run, deployers).mapErr((error) => {
    // A program we launched to profile keeps running after a failure: say which one it is.
    if (run.launchedPid !== undefined) error.details.sourcePid = run.launchedPid;
    return error;
  });
}

/** Profile, capture, measure, plan and choose the method; then deploy with it. */
function runMigration(run: Run, deployers: Record<string, Deployer<unknown, unknown>>): ResultAsync<MigrationReport, ApMigrateError> {
  return safeTry(async function* () {
    const profiled = yield* profilePhase(run);
    const program = yield* capturePhase(run, profiled);
    const facts = yield* measurePhase(run, program.profile, Object.values(deployers));
    const plan = yield* planPhase(run, program.profile, facts);
    const chosen = yield* chooseMethod(run, plan, program.profile, deployers);
    return ok({ profile: program.profile, plan, chosen, ...(program.sourcePid !== undefined ? { sourcePid: program.sourcePid } : {}) });
  }).andThen((base) => releasing(run, base.chosen, deploy(run, base)));
}

/** Estimate, pre-flight (a dry run ends there), freeze, cut over, settle the source. */
function deploy(run: Run, base: Omit<ReportParts, 'estimate'>): ResultAsync<MigrationReport, ApMigrateError> {
  const { chosen, sourcePid } = base;
  return safeTry(async function* () {
    // Nothing reaches the destination once the caller has aborted (not even a pre-flight).
    yield* notAborted(run);
    const estimate = yield* estimatePayload(chosen);
    const preflight = yield* preflightPhase(run, chosen, estimate);
    yield* notAborted(run);
    if (run.options.dryRun) return ok(buildReport(run, { ...base, estimate }));
    // pre-copy: everything once while the source runs; after the freeze only what changed since.
    const preCopied = run.cutover === 'pre-copy' && canPreCopy(chosen, preflight);
    if (run.cutover === 'pre-copy' && !takesSeeds(preflight)) {
      emit(run, { phase: 'preflight', message: `pre-copy needs a receiver that takes seeded entries (${preflight.receiver?.kind ?? 'this one'} does not): one full round after the freeze` });
    }
    if (preCopied) yield* transferPhase(run, chosen, preflight, estimate, 'full').orElse((error) => undoAfterFailure(run, chosen, NOT_FROZEN, error));
    const frozen = yield* freezeSource(run, chosen, sourcePid);
    const sent = yield* cutOver(run, chosen, preflight, estimate, preCopied ? 'delta' : 'full').orElse((error) => undoAfterFailure(run, chosen, frozen, error));
    const healthyAt = performance.now();
    const sourceOutcome = yield* settleSourcePhase(run, chosen, sourcePid, frozen);
    return ok(buildReport(run, { ...base, estimate, sent, frozen, healthyAt, ...(sourceOutcome ? { sourceOutcome } : {}) }));
  });
}

/** No process frozen (yet): what a failure before the freeze thaws. */
const NOT_FROZEN = { pids: [], at: 0 };

/** Everything that is rolled back on failure: transfer, activate, start, health. */
function cutOver(run: Run, chosen: ChosenMethod, preflight: PreflightReport<unknown>, estimate: PackEstimate, round: Round): ResultAsync<PackSummary, ApMigrateError> {
  return transferPhase(run, chosen, preflight, estimate, round).andThen((sent) => deployPhases(run, chosen, preflight).map(() => sent));
}

/** Let the deployer release what its pre-flight opened (sessions) once `result` settles, whatever it is. */
function releasing<T>(run: Run, chosen: ChosenMethod, result: ResultAsync<T, ApMigrateError>): ResultAsync<T, ApMigrateError> {
  const release = chosen.deployer.release;
  if (!release) return result;
  const settled = async () => {
    const outcome = await result;
    // Releasing is cleanup of what a pre-flight opened, once one was called (it may have failed
    // half-way); its failure (or throw) never replaces the migration's outcome.
    if (run.preflightCalled) await guarded('Releasing', () => release.call(chosen.deployer, chosen.context, run.deployment));
    return outcome;
  };
  return new ResultAsync(settled());
}
