/**
 * The `esxi-vm` method: the program moves inside the VM that hosts it. The VM is measured from
 * its file layout (so the plan's estimate is measured), made consistent (powered off, or
 * snapshotted when the user accepts a crash-consistent copy of a running VM), moved to the
 * destination host and powered on there. Two transfers exist (`HostingVm.transfer`): the
 * datastore copy (the VM's directory streamed datastore to datastore, then registered) and the
 * OVF export/import (an `ExportVm` lease piped into `ImportVApp`); `auto` takes the second where
 * the source host has `ExportVm`. Nothing is written to local disk. The source VM is never
 * destroyed; by source policy it is powered on again or left off.
 *
 * @module
 */
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import { InvalidInputError, type ApMigrateError } from '../../errors.js';
import { copyVmBetweenHosts, measureVmCopySize, MethodNotSupportedError, powerOff, powerOn, VimClient, asEsxiError, InvalidStateError } from '../../esxi/index.js';
import { getHostInventory, findVmByName, parseDatastorePath } from '../../esxi/inventory.js';
import type { CopyVmReport, QuiesceMode } from '../../esxi/migrate-vm.js';
import { destroyEntity, powerOffVm, powerOnVm } from '../../esxi/operations.js';
import { exportImportVmThrowing } from '../../esxi/ovf-migrate.js';
import type { MoRef } from '../../esxi/soap.js';
import type { VimEndpoint } from '../../esxi/transport.js';
import { DeployError } from '../../destination/deploy-error.js';

/**
 * How the VM travels to the destination host:
 * - `datastore-copy` (the default): every file of the VM's directory is streamed datastore to
 *   datastore over `/folder`, then the `.vmx` is registered. Byte-exact, keeps NICs, NVRAM and
 *   snapshot chains, and works with `quiesce: 'snapshot'`; needs a datastore of the same name
 *   (or `destinationDatastore`).
 * - `export-import`: an `ExportVm` lease on the powered-off source piped into `CreateImportSpec`
 *   + `ImportVApp` at the destination. Disks travel stream-optimized (thin at the destination)
 *   and the destination builds the VM from an OVF descriptor, so datastore layouts may differ.
 *   The source must be powered off: a running one is powered off first (and on again on failure).
 * - `auto`: `export-import` where the source host has `ExportVm`, else the datastore copy (the
 *   report's `fallbackReason` says why). A `snapshot` quiesce of a running VM, or a suspended VM,
 *   goes straight to the datastore copy.
 */
export type VmTransfer = 'auto' | 'datastore-copy' | 'export-import';

/** The transfer that actually ran. */
export type VmTransferUsed = Exclude<VmTransfer, 'auto'>;

const TRANSFERS: readonly VmTransfer[] = ['auto', 'datastore-copy', 'export-import'];

/** Where the VM hosting the program is, and where it goes. */
export interface HostingVm {
  /** vSphere endpoint of the source ESXi host. */
  source: VimEndpoint;
  /** The VM's name on the source host. */
  name: string;
  /** vSphere endpoint of the destination ESXi host. */
  destination: VimEndpoint;
  /**
   * Datastore at the destination. Default: the source datastore's name; with `export-import`,
   * the destination's first datastore when it has none of that name.
   */
  destinationDatastore?: string;
  /** Name of the copy (default: the same name). */
  destinationName?: string;
  /**
   * How to make a running VM consistent (default `power-off`). `snapshot` copies a
   * crash-consistent state while the VM, and the program in it, keep running until the copy is
   * verified; then the source policy decides. Only the datastore copy can do `snapshot`.
   */
  quiesce?: QuiesceMode;
  /** How the VM travels (default `datastore-copy`, see {@link VmTransfer} and docs/decisions/0304). */
  transfer?: VmTransfer;
}

/** An open pair of vSphere sessions with the source VM's measured size. */
export interface VmSessions {
  source: VimClient;
  destination?: VimClient;
  sizeBytes: number;
}

/** What a move did, whichever transfer ran; the copy fields keep their meaning for both. */
export interface HostingVmMoveReport extends CopyVmReport {
  /** The transfer that moved the VM. */
  transfer: VmTransferUsed;
  /** With `transfer: 'auto'`, why the datastore copy ran instead of the export/import. */
  fallbackReason?: string;
}

/** Progress and abort options of {@link moveHostingVm}. */
export interface MoveHostingVmOptions {
  /** Abort the move: what was created at the destination is removed, the source powered on again. */
  signal?: AbortSignal;
  /** Bytes sent so far and bytes expected (the export/import expects the VM's measured size). */
  onBytes?: (bytes: number, total: number) => void;
}

/** Problems with the shape of `vm` (any value accepted: nothing here throws). */
function hostingVmShapeIssues(vm: unknown): { path: string; message: string }[] {
  if (typeof vm !== 'object' || vm === null || Array.isArray(vm)) return [{ path: '', message: 'must be an object { source, name, destination, ... }' }];
  const v = vm as Record<string, unknown>;
  const issues: { path: string; message: string }[] = [];
  if (typeof v.source !== 'object' || v.source === null) issues.push({ path: 'source', message: 'must be the source host\'s vSphere endpoint' });
  if (typeof v.name !== 'string' || v.name.length === 0) issues.push({ path: 'name', message: 'must be the VM\'s name on the source host' });
  return issues;
}

/**
 * Refuse settings that cannot work together, before anything is changed: an unknown transfer,
 * or `export-import` with `quiesce: 'snapshot'` (ExportVm needs a powered-off VM, a snapshot
 * copy exists to keep it running).
 */
export function checkHostingVm(vm: HostingVm): InvalidInputError | undefined {
  const transfer = vm.transfer ?? 'datastore-copy';
  if (!TRANSFERS.includes(transfer)) {
    return new InvalidInputError('hosting VM', [{ path: 'vm.transfer', message: `"${String(transfer)}" is not one of ${TRANSFERS.join(', ')}` }]);
  }
  if (transfer === 'export-import' && vm.quiesce === 'snapshot') {
    return new InvalidInputError('hosting VM', [{
      path: 'vm.quiesce',
      message: "quiesce 'snapshot' cannot be used with transfer 'export-import': ExportVm needs the VM powered off (use 'power-off', or transfer 'datastore-copy' / 'auto')",
    }]);
  }
  return undefined;
}

/** Log in to the source host and measure the VM: its files, as the copy will send them. */
export function measureHostingVm(vm: HostingVm, signal?: AbortSignal): ResultAsync<VmSessions, ApMigrateError> {
  const shape = hostingVmShapeIssues(vm);
  if (shape.length) return errAsync(new InvalidInputError('hosting VM', shape));
  return VimClient.connect(vm.source, signal ? { signal } : {})
    .mapErr((e): ApMigrateError => e)
    .andThen((source) =>
      measureVmCopySize(source, vm.name, signal ? { signal } : {})
        .map((sizeBytes): VmSessions => ({ source, sizeBytes }))
        // Do not leave a session open on the source when measuring fails.
        .orElse((e) => source.logout().orElse(() => okAsync(undefined)).andThen(() => errAsync<VmSessions, ApMigrateError>(e))),
    );
}

/** Log in to the destination host (pre-flight: reachable, authenticated). */
export function connectDestination(vm: HostingVm, sessions: VmSessions, signal?: AbortSignal): ResultAsync<VmSessions, ApMigrateError> {
  return VimClient.connect(vm.destination, signal ? { signal } : {}).map((destination) => ({ ...sessions, destination }));
}

/**
 * Move the VM to the destination host by the chosen transfer, power it on there and verify it
 * runs. Each transfer removes what it created at the destination on failure, and powers the
 * source back on if it powered it off; the source VM is never destroyed.
 */
export function moveHostingVm(vm: HostingVm, sessions: VmSessions, options: MoveHostingVmOptions = {}): ResultAsync<HostingVmMoveReport, ApMigrateError> {
  const refused = checkHostingVm(vm);
  if (refused) return errAsync(refused);
  const dst = sessions.destination;
  if (!dst) return errAsync(new DeployError('PREFLIGHT_FAILED', 'No session with the destination host'));
  const transfer = vm.transfer ?? 'datastore-copy';
  if (transfer === 'datastore-copy') return datastoreCopy(vm, sessions.source, dst, options);
  return ResultAsync.fromPromise(moveByExportFirst(vm, { ...sessions, destination: dst }, transfer, options), toApMigrateError(vm));
}

function toApMigrateError(vm: HostingVm): (e: unknown) => ApMigrateError {
  return (e) => (InvalidInputError.isInstance(e) || DeployError.isInstance(e) ? e : asEsxiError(e, `move of VM ${vm.name}`));
}

/** The datastore copy, verified powered on at the destination. */
function datastoreCopy(
  vm: HostingVm,
  src: VimClient,
  dst: VimClient,
  options: MoveHostingVmOptions,
  fallbackReason?: string,
): ResultAsync<HostingVmMoveReport, ApMigrateError> {
  return copyVmBetweenHosts(src, dst, vm.name, {
    ...(vm.destinationDatastore ? { destinationDatastore: vm.destinationDatastore } : {}),
    ...(vm.destinationName ? { destinationName: vm.destinationName } : {}),
    ...(vm.quiesce ? { quiesce: vm.quiesce } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    onProgress: (p) => options.onBytes?.(p.totalBytes, p.expectedBytes),
  }).andThen((report) =>
    report.destinationPowerState === 'poweredOn'
      ? okAsync<HostingVmMoveReport, ApMigrateError>({ ...report, transfer: 'datastore-copy', ...(fallbackReason ? { fallbackReason } : {}) })
      : errAsync(new DeployError('HEALTH_CHECK_FAILED', `The copy of ${vm.name} is ${report.destinationPowerState}, not powered on`)),
  );
}

/** `export-import`, or `auto`: export/import first, the datastore copy when the source has no ExportVm. */
async function moveByExportFirst(
  vm: HostingVm,
  sessions: VmSessions & { destination: VimClient },
  transfer: 'auto' | 'export-import',
  options: MoveHostingVmOptions,
): Promise<HostingVmMoveReport> {
  const { source: src, destination: dst } = sessions;
  const signal = options.signal;
  const source = await findVmByName(src, vm.name, { signal });
  if (transfer === 'auto') {
    // These cases cannot be exported without losing what the user asked for: go straight to the copy.
    const skip =
      source.powerState === 'poweredOn' && vm.quiesce === 'snapshot'
        ? "quiesce 'snapshot' keeps the source running, and ExportVm needs it powered off"
        : source.powerState === 'suspended'
          ? 'the source VM is suspended; ExportVm needs it powered off, and powering it off would discard its suspended state'
          : undefined;
    if (skip) return unwrap(datastoreCopy(vm, src, dst, options, skip));
  }
  const sourceWasPoweredOn = source.powerState === 'poweredOn';
  let poweredOffByUs = false;
  try {
    if (sourceWasPoweredOn) {
      // Flagged before the wait: an aborted wait does not stop the task on the host, and the
      // source was on, so powering it on in rollback restores it either way.
      poweredOffByUs = true;
      await powerOffVm(src, source.ref, { signal });
    }
    const moved = await exportImportVerified(vm, sessions, source.ref, options);
    return { ...moved, sourceWasPoweredOn, quiesce: sourceWasPoweredOn ? 'power-off' : 'none', sourceLeftPoweredOn: false };
  } catch (err) {
    // Only a missing ExportVm on the source falls back; it fails before the destination is touched.
    if (transfer === 'auto' && MethodNotSupportedError.isInstance(err) && err.details.method === 'ExportVm') {
      return copyAfterFallback(vm, src, dst, options, { sourceRef: source.ref, sourceWasPoweredOn, poweredOffByUs, reason: err.message });
    }
    if (poweredOffByUs) await powerSourceBackOn(src, source.ref, err);
    throw err;
  }
}

/** The datastore copy of a source that this call may already have powered off for the export. */
async function copyAfterFallback(
  vm: HostingVm,
  src: VimClient,
  dst: VimClient,
  options: MoveHostingVmOptions,
  state: { sourceRef: MoRef; sourceWasPoweredOn: boolean; poweredOffByUs: boolean; reason: string },
): Promise<HostingVmMoveReport> {
  const fallbackReason = `the source host has no ExportVm (${state.reason}); moved by the datastore copy`;
  try {
    const report = await unwrap(datastoreCopy(vm, src, dst, options, fallbackReason));
    // The copy found the source already off; the report tells what this move did to it.
    return state.poweredOffByUs ? { ...report, sourceWasPoweredOn: true, quiesce: 'power-off', sourceLeftPoweredOn: false } : report;
  } catch (err) {
    if (state.poweredOffByUs) await powerSourceBackOn(src, state.sourceRef, err);
    throw err;
  }
}

/** Export/import with the copy powered on, then check it runs; a copy that does not is removed. */
async function exportImportVerified(
  vm: HostingVm,
  sessions: VmSessions & { destination: VimClient },
  sourceRef: MoRef,
  options: MoveHostingVmOptions,
): Promise<Omit<HostingVmMoveReport, 'sourceWasPoweredOn' | 'quiesce' | 'sourceLeftPoweredOn'>> {
  const { source: src, destination: dst, sizeBytes } = sessions;
  const signal = options.signal;
  const targetName = vm.destinationName ?? vm.name;
  const datastore = vm.destinationDatastore ?? (await sameNamedDatastore(src, dst, vm.name, signal));
  // exportImportVm cleans the destination (lease aborted, imported VM destroyed) on its own failures.
  const imported = await exportImportVmThrowing(src, dst, vm.name, {
    targetName,
    ...(datastore ? { datastore } : {}),
    powerOn: true,
    ...(signal ? { signal } : {}),
    onBytes: (bytes) => options.onBytes?.(bytes, Math.max(bytes, sizeBytes)),
  });
  try {
    const copy = await findVmByName(dst, targetName, { signal });
    if (copy.powerState !== 'poweredOn') {
      throw new DeployError('HEALTH_CHECK_FAILED', `The imported copy of ${vm.name} is ${copy.powerState}, not powered on`);
    }
    return {
      transfer: 'export-import',
      sourceVm: sourceRef,
      destinationVm: imported.vm,
      destinationVmx: copy.vmPathName,
      files: imported.files.map((f) => ({ path: f.path, size: f.bytes })),
      estimatedBytes: sizeBytes,
      sentBytes: imported.bytes,
      destinationPowerState: copy.powerState,
      warnings: imported.warnings.map((w) => `OVF import warning ${w.faultType}: ${w.message}`),
      sessionRenewals: 0,
    };
  } catch (err) {
    // After a successful import nobody else cleans up: remove the copy (no signal: rollback must run).
    const rollback: string[] = [];
    try {
      await powerOffVm(dst, imported.vm).catch((e: unknown) => {
        if (!InvalidStateError.isInstance(e)) throw e;
      });
      await destroyEntity(dst, imported.vm);
      rollback.push(`destroyed ${imported.vm.value}`);
    } catch (e) {
      rollback.push(`destroying ${imported.vm.value} failed: ${(e as Error).message}`);
    }
    const error = DeployError.isInstance(err) ? err : asEsxiError(err, `check of the imported copy of ${vm.name}`);
    (error.details as Record<string, unknown>).rollback = rollback;
    throw error;
  }
}

/** The source VM's datastore name when the destination has one of that name (else the import picks). */
async function sameNamedDatastore(src: VimClient, dst: VimClient, vmName: string, signal: AbortSignal | undefined): Promise<string | undefined> {
  const source = await findVmByName(src, vmName, { signal });
  const name = parseDatastorePath(source.vmPathName).datastore;
  const inventory = await getHostInventory(dst, { signal });
  return inventory.datastores.some((d) => d.name === name) ? name : undefined;
}

/** Power the source on again after a failed move; a failure to do so is added to the move's error. */
async function powerSourceBackOn(src: VimClient, ref: MoRef, cause: unknown): Promise<void> {
  const step = await powerOnVm(src, ref).then(
    () => 'power source VM back on: done',
    // Still on: the power-off never happened.
    (e: unknown) => (InvalidStateError.isInstance(e) ? 'power source VM back on: done (it was still on)' : `power source VM back on: failed: ${(e as Error).message}`),
  );
  if (cause instanceof Error && 'details' in cause && typeof cause.details === 'object' && cause.details !== null) {
    const details = cause.details as Record<string, unknown>;
    details.rollback = [...(Array.isArray(details.rollback) ? (details.rollback as string[]) : []), step];
  }
}

async function unwrap<T>(result: ResultAsync<T, ApMigrateError>): Promise<T> {
  const r = await result;
  if (r.isErr()) throw r.error;
  return r.value;
}

/**
 * After a verified move: the source VM runs (keep running) or is off (stop). A power-off move
 * left it off, a snapshot copy left it running; only the difference is acted on. Never destroyed.
 */
export function settleSourceVm(sessions: VmSessions, copy: CopyVmReport, policy: 'keep-running' | 'stop'): ResultAsync<'kept-running' | 'stopped', ApMigrateError> {
  if (!copy.sourceWasPoweredOn) return okAsync('stopped' as const);
  if (policy === 'stop') {
    return copy.sourceLeftPoweredOn ? powerOff(sessions.source, copy.sourceVm).map(() => 'stopped' as const) : okAsync('stopped' as const);
  }
  return copy.sourceLeftPoweredOn ? okAsync('kept-running' as const) : powerOn(sessions.source, copy.sourceVm).map(() => 'kept-running' as const);
}

/** End both sessions; errors are ignored (the sessions expire anyway). */
export async function closeSessions(sessions: VmSessions | undefined): Promise<void> {
  await Promise.all([sessions?.source.logout(), sessions?.destination?.logout()]);
}
