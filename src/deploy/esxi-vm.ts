/**
 * The `esxi-vm` method: the program moves inside the VM that hosts it. The VM is measured from
 * its file layout (so the plan's estimate is measured), powered off (or snapshotted, when the user
 * accepts a crash-consistent copy of a running VM) for a consistent copy, copied
 * datastore to datastore (streamed, never on local disk), registered and powered on at the
 * destination host. The source VM is never destroyed; by source policy it is powered on again or
 * left off.
 *
 * @module
 */
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import { copyVmBetweenHosts, measureVmCopySize, powerOff, powerOn, VimClient } from '../esxi/index.js';
import type { CopyVmReport, QuiesceMode } from '../esxi/migrate-vm.js';
import type { VimEndpoint } from '../esxi/transport.js';
import { DeployError } from './common.js';

/** Where the VM hosting the program is, and where it goes. */
export interface HostingVm {
  /** vSphere endpoint of the source ESXi host. */
  source: VimEndpoint;
  /** The VM's name on the source host. */
  name: string;
  /** vSphere endpoint of the destination ESXi host. */
  destination: VimEndpoint;
  /** Datastore at the destination (default: the source datastore's name). */
  destinationDatastore?: string;
  /** Name of the copy (default: the same name). */
  destinationName?: string;
  /**
   * How to make a running VM consistent (default `power-off`). `snapshot` copies a
   * crash-consistent state while the VM, and the program in it, keep running until the copy is
   * verified; then the source policy decides.
   */
  quiesce?: QuiesceMode;
}

/** An open pair of vSphere sessions with the source VM's measured size. */
export interface VmSessions {
  source: VimClient;
  destination?: VimClient;
  sizeBytes: number;
}

/** Log in to the source host and measure the VM: its files, as the copy will send them. */
export function measureHostingVm(vm: HostingVm, signal?: AbortSignal): ResultAsync<VmSessions, ApMigrateError> {
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

/** Copy, register and power on the VM at the destination; the copy cleans up after itself on failure. */
export function moveHostingVm(
  vm: HostingVm,
  sessions: VmSessions,
  options: { signal?: AbortSignal; onBytes?: (bytes: number, total: number) => void } = {},
): ResultAsync<CopyVmReport, ApMigrateError> {
  if (!sessions.destination) return errAsync(new DeployError('PREFLIGHT_FAILED', 'No session with the destination host'));
  return copyVmBetweenHosts(sessions.source, sessions.destination, vm.name, {
    ...(vm.destinationDatastore ? { destinationDatastore: vm.destinationDatastore } : {}),
    ...(vm.destinationName ? { destinationName: vm.destinationName } : {}),
    ...(vm.quiesce ? { quiesce: vm.quiesce } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    onProgress: (p) => options.onBytes?.(p.totalBytes, p.expectedBytes),
  }).andThen((report) =>
    report.destinationPowerState === 'poweredOn'
      ? okAsync(report)
      : errAsync(new DeployError('HEALTH_CHECK_FAILED', `The copy of ${vm.name} is ${report.destinationPowerState}, not powered on`)),
  );
}

/**
 * After a verified copy: the source VM runs (keep running) or is off (stop). A power-off copy
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
