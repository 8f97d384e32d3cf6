/**
 * `migrate()`: profile -> plan -> pre-flight -> pack and send as one stream -> verify -> activate
 * -> start -> health check -> source policy. The source program is never touched before the
 * destination is verified and running; any failure after the destination was touched is rolled
 * back there, so a failed or aborted migration leaves no half-installed destination.
 *
 * @module
 */
import { errAsync, ok, okAsync, ResultAsync } from 'neverthrow';
import { ApMigrateError, InvalidInputError } from './errors.js';
import { createBundleStream, type PackReport } from './bundle/pack.js';
import { estimateBundleBytes } from './bundle/estimate.js';
import { measureTrees } from './bundle/measure.js';
import { planMigration, type MigrationPlan, type PlanOptions } from './policy/plan.js';
import { ResourceProfileSchema, type ResourceProfile, type ResourceProfileInput } from './policy/profile.js';
import type { ActivatedDeployment, Deployer, DeployContext, StagedBundle, StartedProgram } from './spec/deployer.js';
import type { ProfileTarget, Profiler } from './spec/profiler.js';
import { validateTarget } from './profilers/common.js';
import type { Transport } from './spec/transport.js';
import { createChrootDeployer } from './deploy/chroot.js';
import { createNamespacesDeployer } from './deploy/namespaces.js';
import { createJailDeployer } from './deploy/jail.js';
import { captureProgram, type CaptureOptions } from './capture/index.js';
import type { Source } from './spec/source.js';
import { createExecutorSource } from './source/executor-source.js';
import { checkHostingVm, closeSessions, connectDestination, measureHostingVm, moveHostingVm, settleSourceVm, type HostingVm, type VmSessions } from './deploy/esxi-vm.js';

/** The phases of a migration, in order. */
export const MIGRATION_PHASES = ['profile', 'plan', 'preflight', 'transfer', 'activate', 'start', 'health', 'source'] as const;
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
export type Cutover = 'copy' | 'stop-and-copy';

/** What to do with the source program once the destination runs and is healthy. */
export type SourcePolicy = 'keep-running' | 'stop';

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
  /** Deployers by method id (defaults: chroot, linux-namespaces). */
  deployers?: Record<string, Deployer>;
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
   * stops the source (on any failure it is thawed and never noticed). Needs a source pid.
   */
  cutover?: Cutover;
  /**
   * Let the default chroot and namespaces deployers start a program whose profile says uid or gid
   * 0. Root in a chroot or these namespaces is root on the destination host, so this is off by
   * default; turn it on only for a program the source really ran as root and that you trust.
   */
  allowRoot?: boolean;
  /** Default `keep-running`: the source is left alone. `stop` sends it SIGTERM after the destination is healthy. */
  sourcePolicy?: SourcePolicy;
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
  /** Bytes of the bundle actually sent (0 for a dry run). */
  bytesSent: number;
  /** Bytes of the manifest entry in `bytesSent`. */
  manifestBytes: number;
  phases: PhaseTiming[];
  destination?: { installDir: string; pid: number; endpoints: string[]; logPath: string };
  /** For `esxi-vm`: the registered copy and its power state. */
  vm?: {
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
  };
  source: { pid?: number; action: 'kept-running' | 'stopped' | 'none' };
  /** The hand-over: its mode, and for `stop-and-copy` the downtime (freeze to destination healthy). */
  cutover: { mode: Cutover; downtimeMs?: number; frozenProcesses?: number };
  /** Wall time of the whole migration. */
  totalMs: number;
}

const DEFAULT_DEPLOYERS = (allowRoot: boolean): Record<string, Deployer> => ({
  chroot: createChrootDeployer({ allowRoot }),
  'linux-namespaces': createNamespacesDeployer({ allowRoot }),
  'freebsd-jail': createJailDeployer({ allowRoot }),
});

function isProfileTarget(target: MigrateOptions['target']): target is { profile: ResourceProfileInput; pid?: number } {
  return 'profile' in target;
}

function defaultName(profile: ResourceProfile): string {
  const base = profile.executable.split('/').pop() ?? 'program';
  return base.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z0-9]+/, '') || 'program';
}

/** The first problem with {@link migrate}'s options, found before anything runs; never throws. */
function checkMigrateOptions(options: unknown): InvalidInputError | undefined {
  const invalid = (path: string, message: string) => new InvalidInputError('migrate options', [{ path, message }]);
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(options)) return invalid('', 'must be an object with at least `target`');
  const o = options;
  if (!isObject(o.target)) return invalid('target', 'must be { profile }, { command: [...] } or { pid }');
  if ('profile' in o.target) {
    const pid = o.target.pid;
    if (pid !== undefined && !(typeof pid === 'number' && Number.isInteger(pid) && pid > 0 && pid <= 2 ** 31 - 1)) return invalid('target.pid', 'must be a positive integer');
  } else {
    const target = validateTarget(o.target);
    if (target.isErr()) return new InvalidInputError('migrate options', target.error.issues.map((i) => ({ ...i, path: i.path ? `target.${i.path}` : 'target' })));
    if (!isObject(o.profiler) || typeof o.profiler.profile !== 'function') return invalid('profiler', 'a profiler is needed to profile a pid or command');
  }
  if (o.profiler !== undefined && (!isObject(o.profiler) || typeof o.profiler.profile !== 'function')) return invalid('profiler', 'must be a Profiler');
  for (const key of ['destination', 'vm', 'planOptions', 'deployers'] as const) {
    if (o[key] !== undefined && !isObject(o[key])) return invalid(key, 'must be an object');
  }
  for (const key of ['name', 'method'] as const) {
    const v = o[key];
    if (v !== undefined && (typeof v !== 'string' || v === '' || v.includes('\0'))) return invalid(key, 'must be a non-empty string without NUL');
  }
  const ms = o.profileDurationMs;
  if (ms !== undefined && !(typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 && ms <= 2 ** 31 - 1)) return invalid('profileDurationMs', 'must be a number of milliseconds');
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) return invalid('signal', 'must be an AbortSignal');
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') return invalid('onProgress', 'must be a function');
  if (o.dryRun !== undefined && typeof o.dryRun !== 'boolean') return invalid('dryRun', 'must be true or false');
  if (o.sourcePolicy !== undefined && o.sourcePolicy !== 'keep-running' && o.sourcePolicy !== 'stop') return invalid('sourcePolicy', 'must be keep-running or stop');
  if (o.cutover !== undefined && o.cutover !== 'copy' && o.cutover !== 'stop-and-copy') return invalid('cutover', 'must be copy or stop-and-copy');
  if (o.source !== undefined && !(isObject(o.source) && typeof o.source.freeze === 'function' && isObject(o.source.executor))) return invalid('source', 'must be a Source (see createExecutorSource)');
  return undefined;
}

/**
 * Migrate a program. Returns a report, or a typed error; on error after the destination was
 * touched, everything created there has been removed and the source is untouched. Options that
 * are not what {@link MigrateOptions} says are `INVALID_INPUT` naming the field, before anything runs.
 */
export function migrate(options: MigrateOptions): ResultAsync<MigrationReport, ApMigrateError> {
  const invalid = checkMigrateOptions(options);
  if (invalid) return errAsync(invalid);
  const launched: { pid?: number } = {};
  return ResultAsync.fromPromise(runMigration(options, launched), (e) =>
    e instanceof ApMigrateError ? e : new ApMigrateError('MIGRATION_FAILED', `Migration failed: ${String(e)}`, { cause: e }),
  )
    .andThen((r) => r)
    .mapErr((error) => {
      // A program we launched to profile keeps running after a failure: say which one it is.
      if (launched.pid !== undefined) error.details.sourcePid = launched.pid;
      return error;
    });
}

async function runMigration(options: MigrateOptions, launched: { pid?: number }): Promise<ResultAsync<MigrationReport, ApMigrateError>> {
  const phases: PhaseTiming[] = [];
  const startedAt = performance.now();
  const source = options.source ?? createExecutorSource();
  const cutover: Cutover = options.cutover ?? 'copy';
  const emit = (p: MigrationProgress) => options.onProgress?.(p);
  const timed = async <T>(phase: MigrationPhase, work: () => PromiseLike<T>): Promise<T> => {
    emit({ phase, message: `${phase}...` });
    const start = performance.now();
    try {
      return await work();
    } finally {
      phases.push({ phase, ms: performance.now() - start });
    }
  };
  const aborted = () =>
    options.signal?.aborted ? new ApMigrateError('ABORTED', 'The migration was aborted', { cause: options.signal.reason }) : undefined;

  // 1. Profile (or validate a given one).
  const target = options.target;
  let sourcePid: number | undefined;
  const profiled = await timed('profile', async () => {
    if (isProfileTarget(target)) {
      sourcePid = target.pid;
      const parsed = ResourceProfileSchema.safeParse(target.profile);
      return parsed.success
        ? okAsync<ResourceProfile, ApMigrateError>(parsed.data)
        : errAsync<ResourceProfile, ApMigrateError>(
            new InvalidInputError('resource profile', parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }))),
          );
    }
    if ('pid' in target) sourcePid = target.pid;
    if (!options.profiler) return errAsync<ResourceProfile, ApMigrateError>(new InvalidInputError('migrate options', [{ path: 'profiler', message: 'a profiler is needed to profile a pid or command' }]));
    return options.profiler.profile(target, {
      durationMs: options.profileDurationMs ?? 3000,
      ...(options.signal ? { signal: options.signal } : {}),
      keepRunning: true,
    });
  });
  if (profiled.isErr()) return errAsync(profiled.error);
  // 1b. Complete the capture: what a profiler saw held or traced is not all the program needs.
  const captureOptions = options.capture ?? (isProfileTarget(target) ? false : {});
  const captured = captureOptions === false ? ok<ResourceProfile, ApMigrateError>(profiled.value) : await timed('profile', () => captureProgram(profiled.value, source.executor, captureOptions));
  if (captured.isErr()) return errAsync(captured.error);
  const profile = captured.value;
  // A program we launched to profile keeps running: it is the source now.
  if (sourcePid === undefined && !isProfileTarget(target)) sourcePid = launched.pid = profile.processes[0]?.pid;

  // 2. Plan (measuring the hosting VM first, when there is one).
  let vmSessions: VmSessions | undefined;
  const planned = await timed('plan', async () => {
    if (options.vm) {
      const measured = await measureHostingVm(options.vm, options.signal);
      if (measured.isErr()) return errAsync<MigrationPlan, ApMigrateError>(measured.error);
      vmSessions = measured.value;
    }
    return planMigration(profile, {
      ...options.planOptions,
      hostingVm: options.vm && vmSessions ? { name: options.vm.name, sizeBytes: vmSessions.sizeBytes } : false,
      ...(options.method ? { allowedMethods: [options.method] } : {}),
    });
  });
  if (planned.isErr()) {
    await closeSessions(vmSessions);
    return errAsync(planned.error);
  }
  const plan = planned.value;
  if (plan.chosen === 'esxi-vm' && options.vm && vmSessions) {
    try {
      return await migrateHostingVm(options, options.vm, vmSessions, { profile, plan, phases, timed, emit, sourcePid });
    } finally {
      await closeSessions(vmSessions);
    }
  }
  await closeSessions(vmSessions);
  if (!options.destination) {
    return errAsync(new InvalidInputError('migrate options', [{ path: 'destination', message: `a destination transport is needed for ${plan.chosen}` }]));
  }
  const destination = options.destination;
  const chosen = plan.candidates.find((c) => c.method === plan.chosen)!;
  const deployers = { ...DEFAULT_DEPLOYERS(options.allowRoot === true), ...options.deployers };
  const deployer = deployers[plan.chosen];
  if (!deployer) {
    return errAsync(
      new ApMigrateError('NO_DEPLOYER', `The plan chose ${plan.chosen}, but no deployer for it is registered (have: ${Object.keys(deployers).join(', ')})`, {
        details: { plan },
      }),
    );
  }
  const name = options.name ?? defaultName(profile);
  const context: DeployContext = { transport: destination, profile, plan, name, ...(options.signal ? { signal: options.signal } : {}) };
  const chosenSelection = deployer.bundleSelection?.(context) ?? { includeSharedLibraries: true };
  // Trees the capture found (data roots, config directories) travel whole, walked when packing.
  const profileTrees = profile.trees.map((t: { path: string }) => t.path);
  const selection = profileTrees.length ? { ...chosenSelection, extraTrees: [...(chosenSelection.extraTrees ?? []), ...profileTrees] } : chosenSelection;
  // Whole trees (a thick jail's base userland) are measured on disk: the profile cannot size them.
  let extraTreeBytes: number | undefined;
  if (selection.extraTrees?.length) {
    const measured = await measureTrees(selection.extraTrees, options.signal ? { signal: options.signal } : {});
    if (measured.isErr()) return errAsync(measured.error);
    extraTreeBytes = measured.value.bytes;
  }
  const bundleEstimate = estimateBundleBytes(profile, { ...selection, ...(extraTreeBytes !== undefined ? { extraTreeBytes } : {}) });

  // 3. Pre-flight: reachable, authenticated, tools, space, no collision.
  const pre = await timed('preflight', () => deployer.preflight(context, bundleEstimate.bytes));
  if (pre.isErr()) return errAsync(pre.error);
  const report: MigrationReport = {
    name,
    method: plan.chosen,
    plan,
    profile,
    dryRun: !!options.dryRun,
    estimatedBytes: chosen.estimate.totalBytes,
    bundleEstimatedBytes: bundleEstimate.bytes,
    bytesSent: 0,
    manifestBytes: 0,
    phases,
    source: { ...(sourcePid !== undefined ? { pid: sourcePid } : {}), action: sourcePid !== undefined ? 'kept-running' : 'none' },
    cutover: { mode: cutover },
    totalMs: 0,
  };
  if (cutover === 'stop-and-copy' && sourcePid === undefined) {
    return errAsync(new InvalidInputError('migrate options', [{ path: 'cutover', message: 'stop-and-copy needs the source program: give target.pid (or profile it by pid or command)' }]));
  }
  if (options.dryRun) return okAsync({ ...report, totalMs: performance.now() - startedAt });
  const abortedBeforeSend = aborted();
  if (abortedBeforeSend) return errAsync(abortedBeforeSend);

  // 4. stop-and-copy: freeze the source now; from here a failure thaws it (it never noticed).
  let frozen: number[] = [];
  let frozenAt = 0;
  if (cutover === 'stop-and-copy') {
    const froze = await source.freeze(sourcePid!);
    if (froze.isErr()) return errAsync(froze.error);
    frozen = froze.value;
    frozenAt = performance.now();
    report.cutover.frozenProcesses = frozen.length;
  }

  // 4..7: everything from here on is rolled back on failure.
  const state: { staged?: StagedBundle; activated?: ActivatedDeployment; started?: StartedProgram } = {};
  const fail = async (error: ApMigrateError): Promise<ResultAsync<MigrationReport, ApMigrateError>> => {
    const thawed = frozen.length ? await source.thaw(frozen) : ok(undefined);
    if (thawed.isErr()) error.details.thawError = thawed.error.message;
    const rolledBack = await deployer.rollback(context, state);
    if (rolledBack.isErr()) {
      return errAsync(new ApMigrateError(error.code, `${error.message} (and rollback failed: ${rolledBack.error.message})`, { cause: error, isRetryable: false }));
    }
    return errAsync(error);
  };

  const transfer = await timed('transfer', async () => {
    const bundle = createBundleStream(profile, {
      ...selection,
      ...(extraTreeBytes !== undefined ? { extraTreeBytes } : {}),
      plan,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (bundle.isErr()) return errAsync<{ staged: StagedBundle; pack: PackReport }, ApMigrateError>(bundle.error);
    const { stream, report: packReport } = bundle.value;
    const received = deployer.receive(context, stream, (bytes) => emit({ phase: 'transfer', bytesSent: bytes, bytesTotal: bundleEstimate.bytes }));
    const [staged, pack] = await Promise.all([received, packReport]);
    // When both sides fail, one failure caused the other. A destination that went away (a cut
    // connection, a full disk, a rejected entry) makes the packer fail with a generic BUNDLE_IO
    // ("closed before its end"), which would hide the real, often retryable, cause; a packer that
    // failed on its own (a source file changed, vanished, unreadable; an abort) has a specific code.
    if (staged.isErr() && pack.isErr() && pack.error.code === 'BUNDLE_IO') {
      staged.error.details.packError = pack.error.message;
      return errAsync<{ staged: StagedBundle; pack: PackReport }, ApMigrateError>(staged.error);
    }
    if (pack.isErr()) {
      if (staged.isOk()) state.staged = staged.value;
      return errAsync<{ staged: StagedBundle; pack: PackReport }, ApMigrateError>(pack.error);
    }
    if (staged.isErr()) return errAsync<{ staged: StagedBundle; pack: PackReport }, ApMigrateError>(staged.error);
    return okAsync<{ staged: StagedBundle; pack: PackReport }, ApMigrateError>({ staged: staged.value, pack: pack.value });
  });
  if (transfer.isErr()) return fail(aborted() ?? transfer.error);
  state.staged = transfer.value.staged;
  report.bytesSent = transfer.value.pack.totalBytes;
  report.manifestBytes = transfer.value.pack.manifestBytes;

  const steps: Array<[MigrationPhase, () => ResultAsync<unknown, ApMigrateError>]> = [
    ['activate', () => deployer.activate(context, state.staged!).map((a) => (state.activated = a))],
    ['start', () => deployer.start(context, state.activated!).map((s) => (state.started = s))],
    ['health', () => deployer.healthCheck(context, state.started!)],
  ];
  for (const [phase, step] of steps) {
    const early = aborted();
    if (early) return fail(early);
    const result = await timed(phase, step);
    if (result.isErr()) return fail(aborted() ?? result.error);
    if (phase === 'activate') delete state.staged; // moved into place: rollback removes the install dir instead
  }
  const started = state.started!;
  report.destination = { installDir: state.activated!.installDir, pid: started.pid, endpoints: started.endpoints, logPath: started.logPath };

  if (frozen.length) report.cutover.downtimeMs = performance.now() - frozenAt;

  // 8. Only now may the source be touched: stopped on its own host (a frozen one is stopped, never thawed to run on).
  const settled = await timed('source', async () => {
    if ((options.sourcePolicy === 'stop' || cutover === 'stop-and-copy') && sourcePid !== undefined) {
      const stopped = await source.stop(sourcePid);
      if (stopped.isErr()) return stopped;
      report.source.action = 'stopped';
    }
    return ok(undefined);
  });
  if (settled.isErr()) return errAsync(settled.error);
  report.totalMs = performance.now() - startedAt;
  return okAsync(report);
}

interface VmMigrationState {
  profile: ResourceProfile;
  plan: MigrationPlan;
  phases: PhaseTiming[];
  timed: <T>(phase: MigrationPhase, work: () => PromiseLike<T>) => Promise<T>;
  emit: (p: MigrationProgress) => void;
  sourcePid: number | undefined;
}

/** The `esxi-vm` path: pre-flight (destination session), move (copy + register, or export + import) + power on, verify, settle the source VM. */
async function migrateHostingVm(
  options: MigrateOptions,
  vm: HostingVm,
  sessions: VmSessions,
  { profile, plan, phases, timed, emit, sourcePid }: VmMigrationState,
): Promise<ResultAsync<MigrationReport, ApMigrateError>> {
  const chosen = plan.candidates.find((c) => c.method === plan.chosen)!;
  // Settings that cannot work together are refused before pre-flight, dry run included.
  const refused = checkHostingVm(vm);
  if (refused) return errAsync(refused);
  const pre = await timed('preflight', () => connectDestination(vm, sessions, options.signal));
  if (pre.isErr()) return errAsync(pre.error);
  // The caller's closeSessions(sessions) then logs out of the destination too.
  sessions.destination = pre.value.destination;
  const report: MigrationReport = {
    name: vm.destinationName ?? vm.name,
    method: 'esxi-vm',
    plan,
    profile,
    dryRun: !!options.dryRun,
    estimatedBytes: chosen.estimate.totalBytes,
    bundleEstimatedBytes: sessions.sizeBytes,
    bytesSent: 0,
    manifestBytes: 0,
    phases,
    source: { ...(sourcePid !== undefined ? { pid: sourcePid } : {}), action: 'none' },
    // The VM's own quiesce (power-off or snapshot) is its cutover; see `vm.quiesce`.
    cutover: { mode: 'copy' },
    totalMs: 0,
  };
  if (options.dryRun) return okAsync(report);
  // The move quiesces the source first (power-off, or a snapshot when asked), by datastore copy or
  // OVF export/import (vm.transfer), and removes what it created on failure.
  const copied = await timed('transfer', () =>
    moveHostingVm(vm, pre.value, {
      ...(options.signal ? { signal: options.signal } : {}),
      onBytes: (bytesSent, bytesTotal) => emit({ phase: 'transfer', bytesSent, bytesTotal }),
    }),
  );
  if (copied.isErr()) return errAsync(copied.error);
  report.bytesSent = copied.value.sentBytes;
  report.vm = {
    name: report.name,
    destinationVmx: copied.value.destinationVmx,
    powerState: copied.value.destinationPowerState,
    files: copied.value.files.length,
    transfer: copied.value.transfer,
    ...(copied.value.fallbackReason ? { fallbackReason: copied.value.fallbackReason } : {}),
    quiesce: copied.value.quiesce,
    warnings: copied.value.warnings,
  };
  const settled = await timed('source', () => settleSourceVm(pre.value, copied.value, options.sourcePolicy ?? 'keep-running'));
  if (settled.isErr()) return errAsync(settled.error);
  report.source.action = settled.value;
  return okAsync(report);
}
