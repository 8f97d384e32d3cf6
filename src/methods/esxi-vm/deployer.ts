/**
 * The `esxi-vm` method as a packager + deployer pair: the program moves inside the VM that hosts
 * it. The packager measures the VM before planning (one login, then logout) and hands over the VM
 * to move; the deployer's pre-flight logs in to both hosts and checks the settings, `receive`
 * moves the VM (quiesced, copied or exported/imported, powered on and verified there), and
 * `settleSource` powers the source VM on again or leaves it off by the source policy.
 *
 * @module
 */
import { errAsync, okAsync, ResultAsync, type Result } from 'neverthrow';
import type { ApMigrateError } from '../../errors.js';
import { DeployError } from '../../destination/deploy-error.js';
import { isSafeName } from '../../destination/layout.js';
import type { Deployer, DeploymentState, PreflightReport, StagedBundle } from '../../spec/deployer.js';
import type { PackEstimate, Packager, PackRequest, PackSummary } from '../../spec/packager.js';
import { AlreadyExistsError, preflightVmCopy, undoVmCopy, VimClient } from '../../esxi/index.js';
import {
  checkHostingVm,
  closeSessions,
  measureHostingVm,
  moveHostingVm,
  settleSourceVm,
  type HostingVm,
  type HostingVmMoveReport,
  type VmSessions,
} from './hosting-vm.js';

/**
 * What the packager hands the deployer: the VM to move (nothing travels until `receive`), and how
 * `receive` tells the packager's `done` what the move sent.
 */
export interface VmPayload {
  vm: HostingVm;
  /** Settle the packager's `done` with the move's outcome. */
  settle(outcome: Result<PackSummary, ApMigrateError>): void;
}

/**
 * What pre-flight opened and what the move did. Created by this migration's pre-flight and
 * passed on in its report, so nothing is kept between migrations; `moved` is set by `receive`.
 */
export interface EsxiVmFacts {
  sessions: VmSessions & { destination: VimClient };
  moved?: HostingVmMoveReport;
}

/** The bytes the plan measured for the VM (its files as the copy sends them). */
function plannedBytes(request: PackRequest): number {
  return request.plan.candidates.find((c) => c.method === request.plan.chosen)?.estimate.totalBytes ?? 0;
}

/** The packager: measure the hosting VM for the plan; the payload is the VM itself. */
function createVmPackager(vm: HostingVm): Packager<VmPayload> {
  return {
    measure: (_profile, _source, signal) =>
      measureHostingVm(vm, signal).andThen((sessions) =>
        ResultAsync.fromSafePromise(closeSessions(sessions)).map(() => ({ hostingVm: { name: vm.name, sizeBytes: sessions.sizeBytes } })),
      ),
    estimate: (request) => okAsync<PackEstimate, ApMigrateError>({ bytes: plannedBytes(request), measuredTreeBytes: 0 }),
    // The move reports what it sent: `done` settles when the deployer's receive has moved the VM.
    pack: () => {
      let settle!: (outcome: Result<PackSummary, ApMigrateError>) => void;
      const outcome = new Promise<Result<PackSummary, ApMigrateError>>((resolve) => (settle = resolve));
      return okAsync({ payload: { vm, settle }, done: new ResultAsync(outcome) });
    },
  };
}

/**
 * For the datastore copy, every check the copy itself makes, changing nothing: the source VM is
 * there with safe names, the destination datastore exists, the name and directory are free. (The
 * export/import checks its own at the destination when it imports.)
 */
function checkCopyPossible(vm: HostingVm, source: VimClient, destination: VimClient, signal: AbortSignal | undefined): ResultAsync<string, ApMigrateError> {
  if ((vm.transfer ?? 'datastore-copy') !== 'datastore-copy') return okAsync('');
  return preflightVmCopy(source, destination, vm.name, {
    ...(vm.quiesce ? { quiesce: vm.quiesce } : {}),
    ...(vm.destinationDatastore ? { destinationDatastore: vm.destinationDatastore } : {}),
    ...(vm.destinationName ? { destinationName: vm.destinationName } : {}),
    ...(signal ? { signal } : {}),
  })
    .map((checked) => checked.destinationVmx)
    .mapErr((e): ApMigrateError =>
      // The same verdict as every method's: the name is taken at the destination.
      AlreadyExistsError.isInstance(e) ? new DeployError('DESTINATION_EXISTS', `${vm.destinationName ?? vm.name} already exists at ${vm.destination.url}: ${e.message}`, { cause: e }) : e,
    );
}

const logoutQuietly = (client: VimClient) => ResultAsync.fromSafePromise(client.logout().then(() => undefined, () => undefined));

/** Pre-flight: the settings work together, and both hosts accept a login. Changes nothing. */
function preflightVm(vm: HostingVm, estimatedBytes: number, signal: AbortSignal | undefined): ResultAsync<PreflightReport<EsxiVmFacts>, ApMigrateError> {
  const refused = checkHostingVm(vm);
  if (refused) return errAsync(refused);
  const connect = (endpoint: HostingVm['source']) => VimClient.connect(endpoint, signal ? { signal } : {}).mapErr((e): ApMigrateError => e);
  return connect(vm.source).andThen((source) =>
    connect(vm.destination)
      .andThen((destination) =>
        checkCopyPossible(vm, source, destination, signal)
          .map((vmx) => ({ destination, vmx }))
          // A refused pre-flight logs out of what it opened: both sessions.
          .orElse((e) => logoutQuietly(destination).andThen(() => errAsync<{ destination: VimClient; vmx: string }, ApMigrateError>(e))),
      )
      .orElse((e) => logoutQuietly(source).andThen(() => errAsync<{ destination: VimClient; vmx: string }, ApMigrateError>(e)))
      .map(({ destination, vmx }): PreflightReport<EsxiVmFacts> => ({
        platform: { os: 'esxi', release: '', arch: '' },
        freeBytes: 0,
        tools: {},
        installDir: `${vm.destinationName ?? vm.name} at ${vm.destination.url}`,
        // The copy's .vmx, where the datastore copy will write (the export/import's is known once imported).
        stagingDir: vmx,
        facts: { sessions: { source, destination, sizeBytes: estimatedBytes } },
      })),
  );
}

/** Receive: move the VM (each transfer cleans up after itself on failure) and keep its report in the facts. */
function receiveVm(payload: VmPayload, preflight: PreflightReport<EsxiVmFacts>, signal: AbortSignal | undefined, onBytes?: (bytes: number) => void): ResultAsync<StagedBundle, ApMigrateError> {
  const move = async (): Promise<Result<StagedBundle, ApMigrateError>> => {
    const result = await moveHostingVm(payload.vm, preflight.facts.sessions, { ...(signal ? { signal } : {}), onBytes: (bytes) => onBytes?.(bytes) });
    payload.settle(result.map((moved) => ({ totalBytes: moved.sentBytes, manifestBytes: 0 })));
    return result.map((moved) => {
      preflight.facts.moved = moved;
      return { stagingDir: moved.destinationVmx, bytesReceived: moved.sentBytes, entriesVerified: moved.files.length };
    });
  };
  return new ResultAsync(move());
}

/** Undo a move that succeeded but whose migration failed later (an abort between phases). */
function rollbackVm(state: DeploymentState<EsxiVmFacts>): ResultAsync<void, ApMigrateError> {
  const facts = state.preflight?.facts;
  const moved = facts?.moved;
  if (!facts || !moved) return okAsync(undefined);
  // Powers the copy off, destroys it, removes its directory, and powers the source on if the move powered it off.
  return undoVmCopy(facts.sessions.source, facts.sessions.destination, moved)
    // Undone: a second rollback has nothing left to remove.
    .map(() => void delete facts.moved)
    .mapErr((e) => new DeployError('ROLLBACK_FAILED', `Could not remove the copy ${moved.destinationVmx}: ${e.message}`, { cause: e, details: { rollback: e.details.rollback } }));
}

/** The `esxi-vm` deployer for the VM `vm` hosting the program. */
export function createEsxiVmDeployer(vm: HostingVm): Deployer<VmPayload, EsxiVmFacts> {
  return {
    method: 'esxi-vm',
    packager: createVmPackager(vm),
    destination: 'own',
    // The migration's name follows every method's rule; the copy keeps the VM's own name, which
    // vSphere allows to hold spaces, so the default name is that name made safe.
    defaultName: () => (vm.destinationName ?? vm.name).replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 63) || 'vm',
    preflight: (context, estimatedBytes) =>
      isSafeName(context.name)
        ? preflightVm(vm, estimatedBytes, context.signal)
        : errAsync(new DeployError('PREFLIGHT_FAILED', `Invalid migration name "${context.name}": use letters, digits, dot, dash, underscore (max 63)`)),
    receive: (context, preflight, payload, onBytes) => receiveVm(payload, preflight, context.signal, onBytes),
    // The move registered the copy and powered it on; activation and start have nothing left to do.
    activate: (_context, preflight, staged) => okAsync({ installDir: preflight.facts.moved?.destinationVmx ?? staged.stagingDir, rootDir: '', undo: [] }),
    start: () => okAsync({ pid: 0, logPath: '', endpoints: [] }),
    healthCheck: (_context, _started) => okAsync(undefined),
    rollback: (_context, state) => rollbackVm(state),
    settleSource: (_context, state, policy) => {
      const facts = state.preflight?.facts;
      if (!facts?.moved) return errAsync(new DeployError('START_FAILED', 'The VM was not moved; its source cannot be settled'));
      return settleSourceVm(facts.sessions, facts.moved, policy);
    },
    describe: (_context, state) => {
      const moved = state.preflight?.facts.moved;
      if (!moved) return {};
      return {
        vm: {
          name: vm.destinationName ?? vm.name,
          destinationVmx: moved.destinationVmx,
          powerState: moved.destinationPowerState,
          files: moved.files.length,
          transfer: moved.transfer,
          ...(moved.fallbackReason ? { fallbackReason: moved.fallbackReason } : {}),
          quiesce: moved.quiesce,
          warnings: moved.warnings,
        },
      };
    },
    release: (_context, state) => ResultAsync.fromSafePromise(closeSessions(state.preflight?.facts.sessions)),
  };
}
