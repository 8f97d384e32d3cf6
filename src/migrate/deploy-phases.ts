/**
 * The phases that reach the destination: choose the method's deployer, estimate, pre-flight,
 * freeze (stop-and-copy), transfer, activate, start, health, and settle the source. From the
 * freeze on, a failure thaws the source and rolls the destination back.
 *
 * @module
 */
import { err, errAsync, ok, okAsync, ResultAsync, type Result } from 'neverthrow';
import { ApMigrateError, InvalidInputError, MigrationError } from '../errors.js';
import { planMigration, type MigrationPlan } from '../policy/plan.js';
import type { ResourceProfile } from '../policy/profile.js';
import type { DeployContext, Deployer, PreflightReport, SourceOutcome, StagedBundle } from '../spec/deployer.js';
import type { HeldFiles, PackEstimate, PackRequest, PackSummary } from '../spec/packager.js';
import { noTransport } from './no-transport.js';
import { chooseCodec, LINK_SAMPLE_BYTES, localCompressors, measureLinkThroughput, probeCodecs, ZSTD_LEVEL_3_BELOW_BYTES_PER_SECOND, type CodecChoice } from '../transfer/compression.js';
import type { ReceiveOptions } from '../spec/deployer.js';
import { abortedError, emit, guarded, notAborted, signalOption, timed, type Run } from './run.js';

/** The chosen method's deployer and what all its phases know. */
export interface ChosenMethod {
  deployer: Deployer<unknown, unknown>;
  context: DeployContext;
  request: PackRequest;
}

/** A name usable at the destination, from the executable's base name. */
export function nameFromExecutable(profile: ResourceProfile): string {
  const base = profile.executable.split('/').pop() ?? 'program';
  return base.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z0-9]+/, '') || 'program';
}

/** The registered deployer of the plan's method, with its context. */
export function chooseMethod(run: Run, plan: MigrationPlan, profile: ResourceProfile, deployers: Record<string, Deployer<unknown, unknown>>): Result<ChosenMethod, ApMigrateError> {
  const deployer = deployers[plan.chosen];
  if (!deployer) {
    const have = Object.keys(deployers).join(', ');
    return err(new MigrationError('NO_DEPLOYER', `The plan chose ${plan.chosen}, but no deployer for it is registered (have: ${have})`, { details: { plan } }));
  }
  const ownsDestination = deployer.destination === 'own';
  if (!ownsDestination && !run.options.destination) {
    return err(new InvalidInputError('migrate options', [{ path: 'destination', message: `a destination transport is needed for ${plan.chosen}` }]));
  }
  const context: DeployContext = {
    transport: run.options.destination ?? noTransport(plan.chosen),
    profile,
    plan,
    name: run.options.name ?? deployer.defaultName?.(profile) ?? nameFromExecutable(profile),
    ...signalOption(run),
  };
  return ok({ deployer, context, request: { profile, plan, source: run.source, ...signalOption(run) } });
}

/** Bytes the chosen method moves (whole trees measured on the source; outside any phase's timer, as before). */
export function estimatePayload(chosen: ChosenMethod): ResultAsync<PackEstimate, ApMigrateError> {
  return guarded('Estimating the payload', () => chosen.deployer.packager.estimate(chosen.request));
}

/**
 * Phase `preflight`: the destination can take the program; nothing changes there. The wire codec
 * is chosen meanwhile (its probes and link sample only read, from `/`), and once pre-flight passed
 * the destination answers the first round's inventory while the codec choice finishes (each is a
 * round trip to it; neither depends on the other).
 */
export function preflightPhase(run: Run, chosen: ChosenMethod, estimate: PackEstimate): ResultAsync<PreflightReport<unknown>, ApMigrateError> {
  run.preflightCalled = true;
  return timed(run, 'preflight', () => {
    // A pre-flight that fails stops the codec's commands, and is answered once they ended.
    const stopCodec = new AbortController();
    const signal = run.options.signal ? AbortSignal.any([run.options.signal, stopCodec.signal]) : stopCodec.signal;
    const preflight = chosen.deployer.preflight(chosen.context, estimate.bytes);
    // The link sample follows pre-flight's own script, which would otherwise queue behind its
    // bytes; then it runs beside the receiver check (decision 0203, fourth amendment).
    const codec = chooseCompression(run, chosen, signal, (async () => void (await preflight))());
    return preflight
      .orElse((error) => {
        stopCodec.abort();
        return codec.orElse(() => okAsync(undefined)).andThen(() => errAsync(error));
      })
      .andThen((report) => {
        run.deployment.preflight = report;
        if (report.receiver) emit(run, { phase: 'preflight', message: report.receiver.summary });
        if (!abortedError(run) && !run.options.dryRun) run.firstInventory = heldAtDestination(run, chosen, report, 'full', 1);
        return codec.map(() => report);
      });
  })
    // A pre-flight cut short by the caller's abort may say so in its own words: it is an abort.
    .mapErr((error) => abortedError(run) ?? error);
}

/**
 * The wire codec, chosen beside pre-flight (file-based methods only): what both ends have, and for
 * `auto` none when the measured link is faster than the compressor. Part of the preflight phase's time.
 */
function chooseCompression(run: Run, chosen: ChosenMethod, signal: AbortSignal, samplesAfter: Promise<void>): ResultAsync<void, ApMigrateError> {
  const requested = run.options.compression ?? 'none';
  if (requested === 'none' || !chosen.deployer.inventory) return okAsync(undefined);
  const transport = chosen.context.transport;
  // From `/`: the destination's root may not exist yet (pre-flight does not create it).
  const exec = (argv: string[]) => transport.exec(argv, { cwd: '/', signal });
  const link = requested === 'auto' ? measureLinkThroughput(transport, LINK_SAMPLE_BYTES, { cwd: '/', signal, enoughBelow: ZSTD_LEVEL_3_BELOW_BYTES_PER_SECOND, samplesAfter }).map((bps): number | undefined => bps) : okAsync<number | undefined, ApMigrateError>(undefined);
  return ResultAsync.combine([localCompressors(), probeCodecs(exec), link] as const)
    .andThen(([sourceHas, destinationHas, linkBytesPerSecond]) => {
      const choice = chooseCodec({ requested, sourceHas, destinationHas, ...(linkBytesPerSecond !== undefined ? { linkBytesPerSecond } : {}) });
      return choice.isOk() ? okAsync(choice.value) : errAsync(choice.error);
    })
    .map((choice) => {
      run.compression = choice;
      const wire = estimatedWireBytes(run, chosen, choice);
      if (wire !== undefined) run.estimatedWireBytes = wire;
      emit(run, { phase: 'preflight', message: `compression: ${choice.codec} (${choice.reason})` });
    });
}

/**
 * The chosen method's estimate after compression with `choice`: the plan's own when it assumed
 * that codec and level (an explicit `zstd` or `gzip`), else (`auto`, negotiated after pre-flight)
 * the same plan made again with it. Only reported: the method is not chosen again (decision 0204).
 */
function estimatedWireBytes(run: Run, chosen: ChosenMethod, choice: CodecChoice): number | undefined {
  if (choice.codec === 'none') return undefined;
  const plan = chosen.context.plan;
  const planned = plan.candidates.find((c) => c.method === plan.chosen);
  if (plan.compression?.codec === choice.codec && plan.compression.level === (choice.level ?? plan.compression.level) && planned?.estimate.wireBytes !== undefined) {
    return planned.estimate.wireBytes;
  }
  const ratio = run.options.planOptions?.compression?.ratio;
  const again = planMigration(chosen.context.profile, {
    ...run.planOptions,
    compression: { codec: choice.codec, ...(choice.level !== undefined ? { level: choice.level } : {}), ...(ratio !== undefined ? { ratio } : {}) },
  });
  return again.isOk() ? again.value.candidates.find((c) => c.method === plan.chosen)?.estimate.wireBytes : undefined;
}

/** The source's process tree, stopped (stop-and-copy), with the moment it stopped. */
export interface Frozen {
  pids: number[];
  at: number;
}

/** stop-and-copy: freeze the source's process tree now; from here a failure thaws it (it never noticed). */
export function freezeSource(run: Run, chosen: ChosenMethod, sourcePid: number | undefined): ResultAsync<Frozen, ApMigrateError> {
  // A method that quiesces the source itself (a VM powered off) is never frozen from outside.
  if (run.cutover === 'copy' || sourcePid === undefined || chosen.deployer.settleSource) return okAsync({ pids: [], at: 0 });
  return guarded('Freezing the source', () => run.source.freeze(sourcePid)).map((pids) => ({ pids, at: performance.now() }));
}

/**
 * When both sides of the transfer fail, one failure caused the other. A destination that went away
 * (a cut connection, a full disk, a rejected entry) makes the packer fail with a generic BUNDLE_IO
 * ("closed before its end"), which would hide the real, often retryable, cause; a packer that failed
 * on its own (a source file changed, vanished, unreadable; an abort) has a specific code.
 */
function transferOutcome(run: Run, staged: Result<StagedBundle, ApMigrateError>, done: Result<PackSummary, ApMigrateError>): Result<PackSummary, ApMigrateError> {
  if (staged.isErr() && done.isErr() && done.error.code === 'BUNDLE_IO') {
    staged.error.details.packError = done.error.message;
    return err(staged.error);
  }
  if (staged.isOk()) run.deployment.staged = staged.value;
  if (done.isErr()) return err(done.error);
  if (staged.isErr()) return err(staged.error);
  return ok(done.value);
}

/** Destroy a payload that is a stream (a VM payload has nothing to stop). */
function destroyPayload(payload: unknown): void {
  const stream = payload as { destroy?: (error?: Error) => void; destroyed?: boolean } | null;
  if (stream && typeof stream.destroy === 'function' && !stream.destroyed) stream.destroy();
}

/** The paths the destination host itself may already have (dedup): the program's regular files. */
function hostPathsOf(run: Run, profile: ResourceProfile): string[] | undefined {
  if (run.options.dedup === false) return undefined;
  return [profile.executable, ...profile.files.filter((f) => f.kind === 'regular' && !f.created).map((f) => f.path)];
}

/**
 * What the destination already holds for this round (a method without an inventory holds
 * nothing). An inventory that fails costs only bytes: everything is sent, as without one.
 */
function heldAtDestination(run: Run, chosen: ChosenMethod, preflight: PreflightReport<unknown>, round: Round, attempt: number): ResultAsync<HeldFiles | undefined, ApMigrateError> {
  const { deployer, context } = chosen;
  // A receiver that takes no seeded entries could use nothing the destination holds.
  if (!deployer.inventory || !takesSeeds(preflight)) return okAsync(undefined);
  const hostPaths = hostPathsOf(run, context.profile);
  const query = { round, attempt, ...(hostPaths ? { hostPaths } : {}) };
  return guarded('Asking the destination what it holds', () => deployer.inventory!(context, preflight, query))
    .map((held): HeldFiles | undefined => held)
    .orElse(() => {
      const aborted = abortedError(run);
      return aborted ? errAsync(aborted) : okAsync(undefined);
    });
}

/** The inventory of a round's attempt: the one pre-flight started for the first, asked now for any other. */
function inventoryFor(run: Run, chosen: ChosenMethod, preflight: PreflightReport<unknown>, round: Round, attempt: number): ResultAsync<HeldFiles | undefined, ApMigrateError> {
  const started = round === 'full' && attempt === 1 ? run.firstInventory : undefined;
  delete run.firstInventory;
  return started ?? heldAtDestination(run, chosen, preflight, round, attempt);
}

/** A transfer round: `full` fills staging, `delta` (pre-copy's second) sends what changed since the first. */
export type Round = 'full' | 'delta';

/** What one attempt has sent so far: the bundle's bytes (as the destination counts them) and, when the deployer counts them, the bytes given to the transport. */
interface SentSoFar {
  bytes: number;
  wireBytes?: number;
}

/** One attempt of a round: the packer's payload streamed into the deployer, verified there. */
function transferOnce(run: Run, chosen: ChosenMethod, preflight: PreflightReport<unknown>, estimate: PackEstimate, round: Round, attempt: number, sent: SentSoFar): ResultAsync<PackSummary, ApMigrateError> {
  const { deployer, context, request } = chosen;
  const receiveOptions: ReceiveOptions = {
    round,
    attempt,
    hostSeeds: run.options.dedup !== false && takesSeeds(preflight),
    ...(run.options.bandwidthLimit !== undefined ? { bandwidthLimit: run.options.bandwidthLimit } : {}),
    ...(run.compression && run.compression.codec !== 'none' ? { compression: run.compression } : {}),
    onWireBytes: (bytes: number) => void (sent.wireBytes = bytes),
  };
  const phase = round === 'full' && run.cutover === 'pre-copy' && canPreCopy(chosen, preflight) ? 'precopy' : 'transfer';
  // The transfer phase's round is the last: activation follows (a pre-copy round is followed by a delta).
  if (phase === 'transfer') receiveOptions.activateNext = true;
  return inventoryFor(run, chosen, preflight, round, attempt).andThen((held) =>
    deployer.packager.pack({ ...request, ...(held ? { held } : {}) }, estimate).andThen((packed) => {
      if (held) receiveOptions.afterInventory = true;
      const onBytes = (bytes: number) => {
        sent.bytes = bytes;
        emit(run, { phase, bytesSent: bytes, bytesTotal: estimate.bytes });
      };
      // A receive that failed (or threw) without reading the payload to its end: stop the packer, so
      // its `done` settles (a remote packer stops too) instead of waiting for a reader forever.
      const received = guarded('Receiving', () => deployer.receive(context, preflight, packed.payload, onBytes, receiveOptions)).mapErr((error) => {
        destroyPayload(packed.payload);
        return error;
      });
      return ResultAsync.fromSafePromise(Promise.all([received, packed.done])).andThen(([staged, done]) => transferOutcome(run, staged, done));
    }),
  );
}

/** A round, attempted again (resuming) while it fails with a retryable error and attempts remain. */
function transferRound(
  run: Run,
  chosen: ChosenMethod,
  preflight: PreflightReport<unknown>,
  estimate: PackEstimate,
  round: Round,
  attempt = 1,
  before: { bytes: number; wireBytes: number } = { bytes: 0, wireBytes: 0 },
): ResultAsync<PackSummary, ApMigrateError> {
  const sentThisAttempt: SentSoFar = { bytes: 0 };
  return transferOnce(run, chosen, preflight, estimate, round, attempt, sentThisAttempt)
    .map((sent) => {
      run.rounds.push({
        round,
        bytesSent: sent.totalBytes,
        // A deployer that does not count what it gives its transport sends the payload as it is.
        wireBytes: sentThisAttempt.wireBytes ?? sent.totalBytes,
        seededBytes: run.deployment.staged?.seededBytes ?? sent.seededBytes ?? 0,
        bytesSentBefore: before.bytes,
        wireBytesBefore: before.wireBytes,
        attempts: attempt,
      });
      return sent;
    })
    .orElse((error) => {
      const attempts = run.options.transferAttempts ?? 1;
      if (!error.isRetryable || attempt >= attempts || abortedError(run)) return errAsync(error);
      emit(run, { phase: 'transfer', message: `attempt ${attempt} of ${attempts} failed (${error.code}): resuming from what the destination verified` });
      const next = { bytes: before.bytes + sentThisAttempt.bytes, wireBytes: before.wireBytes + (sentThisAttempt.wireBytes ?? sentThisAttempt.bytes) };
      return transferRound(run, chosen, preflight, estimate, round, attempt + 1, next);
    });
}

/** Phase `transfer` (and `precopy`, the first round of a pre-copy): a round, verified at the destination. */
export function transferPhase(run: Run, chosen: ChosenMethod, preflight: PreflightReport<unknown>, estimate: PackEstimate, round: Round = 'full'): ResultAsync<PackSummary, ApMigrateError> {
  const phase = round === 'full' && run.cutover === 'pre-copy' && canPreCopy(chosen, preflight) ? 'precopy' : 'transfer';
  return timed(run, phase, () => transferRound(run, chosen, preflight, estimate, round));
}

/**
 * A method can pre-copy when its destination can say what it holds, its receiver takes seeded
 * entries (the delta round is made of them), and it does not quiesce the source itself.
 */
export function canPreCopy(chosen: ChosenMethod, preflight: PreflightReport<unknown>): boolean {
  return chosen.deployer.inventory !== undefined && chosen.deployer.settleSource === undefined && takesSeeds(preflight);
}

/** Whether the receiver pre-flight picked takes seeded entries (a method without a choice: yes). */
export function takesSeeds(preflight: PreflightReport<unknown>): boolean {
  return preflight.receiver?.seeds !== false;
}

/** Phases `activate`, `start` and `health`, each refused when the caller aborted before it. */
export function deployPhases(run: Run, chosen: ChosenMethod, preflight: PreflightReport<unknown>): ResultAsync<void, ApMigrateError> {
  const { deployer, context } = chosen;
  const state = run.deployment;
  const check = () => notAborted(run);
  return check()
    .andThen(() => timed(run, 'activate', () => deployer.activate(context, preflight, state.staged!)))
    .map((activated) => {
      state.activated = activated;
      delete state.staged; // moved into place: rollback removes the install dir instead
    })
    .andThen(check)
    .andThen(() => timed(run, 'start', () => deployer.start(context, state.activated!)))
    .map((started) => void (state.started = started))
    .andThen(check)
    .andThen(() => timed(run, 'health', () => deployer.healthCheck(context, state.started!)))
    .map((outcome) => void (outcome ? (state.health = outcome) : undefined))
    // An abort during a health check that passed is still an abort: the source must not be touched.
    .andThen(check);
}

/**
 * Phase `source`: only now may the source be touched. A method that quiesced it settles it by the
 * policy; otherwise it is stopped on its own host when the policy or the cutover says so (a frozen
 * one is stopped, never thawed to run on).
 */
export function settleSourcePhase(run: Run, chosen: ChosenMethod, sourcePid: number | undefined, frozen: Frozen): ResultAsync<SourceOutcome | undefined, ApMigrateError> {
  const policy = run.options.sourcePolicy ?? 'keep-running';
  return timed(run, 'source', () => {
    if (chosen.deployer.settleSource) return chosen.deployer.settleSource(chosen.context, run.deployment, policy);
    if ((policy === 'stop' || run.cutover !== 'copy') && sourcePid !== undefined) return run.source.stop(sourcePid).map(() => 'stopped' as const);
    return okAsync(undefined);
  }).mapErr((error) => sourceNotSettled(run, error, frozen));
}

/**
 * The destination is healthy and holds the program's state, but the source could not be settled.
 * Rolling back and thawing could leave two writers (the stop may have half-worked), so the
 * destination is kept, the source left as it is, and the error says both (decision 0014).
 */
function sourceNotSettled(run: Run, error: ApMigrateError, frozen: Frozen): ApMigrateError {
  const where = run.deployment.activated?.installDir ?? 'the destination';
  const frozenNote = frozen.pids.length ? `; its processes ${frozen.pids.join(', ')} are still frozen there` : '';
  return new ApMigrateError(error.code, `The destination runs (${where}), but the source could not be settled: ${error.message}${frozenNote}. Check the source before using the destination`, {
    cause: error,
    isRetryable: false,
    details: { ...error.details, destinationKept: true, frozenPids: frozen.pids },
  });
}

/** After a failure from the freeze on: thaw the source, roll the destination back, and return `error` (saying if rollback failed). */
export function undoAfterFailure(run: Run, chosen: ChosenMethod, frozen: Frozen, error: ApMigrateError): ResultAsync<never, ApMigrateError> {
  const undo = async (): Promise<Result<never, ApMigrateError>> => {
    const failure = abortedError(run) ?? error;
    const thawed = frozen.pids.length ? await guarded('Thawing the source', () => run.source.thaw(frozen.pids)) : ok(undefined);
    if (thawed.isErr()) failure.details.thawError = thawed.error.message;
    const rolledBack = await guarded('Rollback', () => chosen.deployer.rollback(chosen.context, run.deployment));
    if (rolledBack.isOk()) return err(failure);
    return err(
      new ApMigrateError(failure.code, `${failure.message} (and rollback failed: ${rolledBack.error.message})`, {
        cause: failure,
        isRetryable: false,
        details: { ...failure.details, rollbackError: rolledBack.error.message },
      }),
    );
  };
  return new ResultAsync(undo());
}
