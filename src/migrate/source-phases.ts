/**
 * The phases before anything reaches the destination: profile (or take the given profile),
 * capture, measure (what only a method can measure, like a hosting VM) and plan.
 *
 * @module
 */
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import { ApMigrateError, InvalidInputError } from '../errors.js';
import { captureProgram } from '../capture/index.js';
import { planMigration, type MigrationPlan, type PlanOptions } from '../policy/plan.js';
import { safeParseProfile, type ResourceProfile, type ResourceProfileInput } from '../policy/profile.js';
import type { Deployer } from '../spec/deployer.js';
import type { PlanFacts } from '../spec/packager.js';
import { signalOption, timed, type Run } from './run.js';
import type { MigrateOptions } from './types.js';

/** The program as profiled, and its pid on the source host when it has one. */
export interface ProfiledProgram {
  profile: ResourceProfile;
  sourcePid?: number;
}

function isGivenProfile(target: MigrateOptions['target']): target is { profile: ResourceProfileInput; pid?: number } {
  return 'profile' in target;
}

/** A given profile, validated once (the fast path of the schema, same verdicts). */
function givenProfile(target: { profile: ResourceProfileInput; pid?: number }): ResultAsync<ProfiledProgram, ApMigrateError> {
  const parsed = safeParseProfile(target.profile);
  if (!parsed.success) {
    return errAsync(new InvalidInputError('resource profile', parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }))));
  }
  return okAsync({ profile: parsed.data, ...(target.pid !== undefined ? { sourcePid: target.pid } : {}) });
}

/** Phase `profile`: watch the program (attach by pid, or launch), or take the given profile. */
export function profilePhase(run: Run): ResultAsync<ProfiledProgram, ApMigrateError> {
  const { target, profiler } = run.options;
  return timed(run, 'profile', () => {
    if (isGivenProfile(target)) return givenProfile(target);
    // checkMigrateOptions made sure a profiler is there for a pid or command.
    return profiler!
      .profile(target, { durationMs: run.options.profileDurationMs ?? 3000, ...signalOption(run), keepRunning: true })
      .map((profile) => {
        // A program launched to be profiled keeps running: it is the source now.
        if ('pid' in target) return { profile, sourcePid: target.pid };
        run.launchedPid = profile.processes[0]?.pid;
        return { profile, ...(run.launchedPid !== undefined ? { sourcePid: run.launchedPid } : {}) };
      });
  });
}

/**
 * Phase `capture`: what a profiler saw held or traced is not all a program needs (package files,
 * config, data roots, accounts). On by default for a profiled program, off for a given profile.
 */
export function capturePhase(run: Run, program: ProfiledProgram): ResultAsync<ProfiledProgram, ApMigrateError> {
  const options = run.options.capture ?? (isGivenProfile(run.options.target) ? false : {});
  if (options === false) return okAsync(program);
  return timed(run, 'capture', () => captureProgram(program.profile, run.source.executor, options)).map((profile) => ({ ...program, profile }));
}

/** Phase `measure`: facts only a method can measure (a hosting VM's size), for every method that has some. */
export function measurePhase(run: Run, profile: ResourceProfile, deployers: readonly Deployer<unknown, unknown>[]): ResultAsync<PlanFacts, ApMigrateError> {
  const measuring = deployers.filter((d) => typeof d.packager.measure === 'function');
  if (!measuring.length) return okAsync({});
  return timed(run, 'measure', () =>
    ResultAsync.combine(measuring.map((d) => d.packager.measure!(profile, run.source, run.options.signal))).map((all) =>
      all.reduce<PlanFacts>((merged, facts) => ({ ...merged, ...facts, sizes: { ...merged.sizes, ...facts.sizes } }), {}),
    ),
  );
}

/**
 * What the plan assumes about compression: `migrate()`'s `compression` decides the codec, the
 * caller's `planOptions.compression` may add measured ratios (and a level for that codec). `none`
 * and `auto` plan without compression: nothing is compressed, or the codec is not known yet.
 */
export function planCompression(requested: MigrateOptions['compression'], given: PlanOptions['compression']): PlanOptions['compression'] {
  if (requested !== 'zstd' && requested !== 'gzip') return undefined;
  return {
    codec: requested,
    ...(given?.ratio !== undefined ? { ratio: given.ratio } : {}),
    ...(given?.codec === requested && given.level !== undefined ? { level: given.level } : {}),
  };
}

/** Phase `plan`: the lightest allowed method, cheapest by estimated bytes (after compression for zstd and gzip). Pure: no I/O is timed here. */
export function planPhase(run: Run, profile: ResourceProfile, facts: PlanFacts): ResultAsync<MigrationPlan, ApMigrateError> {
  const { planOptions, method } = run.options;
  const { compression: givenCompression, ...otherPlanOptions } = planOptions ?? {};
  const compression = planCompression(run.options.compression, givenCompression);
  const options: PlanOptions = {
    ...otherPlanOptions,
    // Without a measured hosting VM the esxi-vm candidate says why it cannot be chosen.
    hostingVm: facts.hostingVm ?? false,
    sizes: { ...planOptions?.sizes, ...facts.sizes },
    ...(method ? { allowedMethods: [method] } : {}),
    ...(compression ? { compression } : {}),
  };
  run.planOptions = options;
  return timed(run, 'plan', () => {
    const planned = planMigration(profile, options);
    return planned.isOk() ? okAsync(planned.value) : errAsync(planned.error);
  });
}
