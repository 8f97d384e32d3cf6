/**
 * vSphere (vim25) client for the ESXi isolation method: a typed SOAP client without WSDL, task
 * waiting, inventory look-ups, datastore file streaming, ExportVm leases, and a host-to-host VM
 * copy. Every fallible function here returns a neverthrow `ResultAsync` whose error is an
 * {@link EsxiError} subclass (or an InvalidInputError for bad options).
 *
 * The modules behind it work with functions that reject instead (easier to compose in one async
 * function); each is wrapped into a Result once, here or next to it, and none is exported from
 * here. Where such a function has a Result twin it is named `...Throwing` (`callThrowing`,
 * `exportImportVmThrowing`, ...) or `run...` (`runOvfImport`).
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { ResultAsync } from 'neverthrow';
import type { VimClient } from './client.js';
import { openDatastoreFile, putDatastoreFile, type DatastoreDownload, type DatastoreFileRef, type TransferOptions } from './datastore-http.js';
import { asEsxiError, type EsxiError } from './errors.js';
import { findVmByName, getHostInventory, vmSizeBytes, type HostInventory, type VmInfo } from './inventory.js';
import { exportVmViaLease, type LeaseDevice, type LeaseExportOptions, type LeaseExportResult } from './nfc-export.js';
import { createSnapshot, powerOffVm, powerOnVm, removeSnapshot } from './operations.js';
import type { MoRef } from './soap.js';
import type { WaitOptions } from './tasks.js';

export { VimClient, type ServiceContent, type CallOptions } from './client.js';
export * from './errors.js';
export type { VimEndpoint, ResolvedEndpoint } from './transport.js';
export type { XmlElement } from './xml.js';
export { VimEndpointSchema, pemThumbprint } from './transport.js';
export type { MoRef } from './soap.js';
export type { HostInventory, VmInfo, VmFile, DatastoreInfo } from './inventory.js';
export type { DatastoreFileRef, DatastoreDownload, TransferOptions } from './datastore-http.js';
import { findSnapshotByName, measureVmCopyBytes } from './migrate-vm.js';
export {
  copyVmBetweenHosts,
  preflightVmCopy,
  undoVmCopy,
  type CopyVmOptions,
  type CopyVmReport,
  type CopyProgress,
  type QuiesceMode,
  type VmCopyPreflight,
  type VmCopyPreflightOptions,
  type VmCopyToUndo,
} from './migrate-vm.js';
export type { LeaseDevice, LeaseExportOptions, LeaseExportResult } from './nfc-export.js';
export {
  importOvf,
  OvfImportRejectedError,
  type ImportOvfInput,
  type ImportOvfOptions,
  type ImportOvfReport,
  type ImportedFile,
  type OvfProblem,
  type OvfFileSource,
} from './ovf-import.js';
export {
  describeVm,
  buildOvfDescriptor,
  type VmDescriptor,
  type DescriptorSource,
  type DescribedFile,
  type VmHardware,
  type VmDisk,
  type VmController,
  type DescriptorDiskFile,
} from './ovf-descriptor.js';
export { exportImportVm, type ExportImportOptions, type ExportImportReport } from './ovf-migrate.js';
export type { WaitOptions } from './tasks.js';

function wrap<T>(what: string, run: () => Promise<T>): ResultAsync<T, EsxiError> {
  return ResultAsync.fromPromise(run(), (e) => asEsxiError(e, what));
}

/** Find a VM by exact name with its power state, `.vmx` path and `layoutEx.file` list. */
export function findVm(client: VimClient, name: string, options: { signal?: AbortSignal } = {}): ResultAsync<VmInfo, EsxiError> {
  return wrap(`find VM ${name}`, () => findVmByName(client, name, options));
}

/** The VM's real size in bytes from `layoutEx.file` (disks, snapshots, config, logs). */
export function estimateVmSize(client: VimClient, name: string, options: { signal?: AbortSignal } = {}): ResultAsync<number, EsxiError> {
  return wrap(`size of VM ${name}`, async () => vmSizeBytes(await findVmByName(client, name, options)));
}

/** Bytes a copy of the VM would send (its directory listing merged with `layoutEx.file`). */
export function measureVmCopySize(client: VimClient, name: string, options: { signal?: AbortSignal } = {}): ResultAsync<number, EsxiError> {
  return wrap(`copy size of VM ${name}`, () => measureVmCopyBytes(client, name, options));
}

/** Datacenter, VM folder, resource pool, host and datastores of a standalone host. */
export function hostInventory(client: VimClient, options: { signal?: AbortSignal } = {}): ResultAsync<HostInventory, EsxiError> {
  return wrap('host inventory', () => getHostInventory(client, options));
}

/** Power a VM off and wait (InvalidStateError if it already is off). */
export function powerOff(client: VimClient, vm: MoRef, options: WaitOptions = {}): ResultAsync<void, EsxiError> {
  return wrap(`power off ${vm.value}`, () => powerOffVm(client, vm, options));
}

/** Power a VM on and wait. */
export function powerOn(client: VimClient, vm: MoRef, options: WaitOptions = {}): ResultAsync<void, EsxiError> {
  return wrap(`power on ${vm.value}`, () => powerOnVm(client, vm, options));
}

/** Take a crash-consistent (no memory, no quiesce unless asked) snapshot. */
export function snapshotVm(
  client: VimClient,
  vm: MoRef,
  spec: { name: string; description?: string; memory?: boolean; quiesce?: boolean },
  options: WaitOptions = {},
): ResultAsync<MoRef | undefined, EsxiError> {
  return wrap(`snapshot ${vm.value}`, () => createSnapshot(client, vm, spec, options));
}

/** Remove a snapshot (children kept) and consolidate its delta into the parent disk. */
export function removeVmSnapshot(client: VimClient, snapshot: MoRef, options: WaitOptions & { consolidate?: boolean } = {}): ResultAsync<void, EsxiError> {
  return wrap(`remove snapshot ${snapshot.value}`, () => removeSnapshot(client, snapshot, options));
}

/** The snapshot of `vm` with this name, searched through its whole snapshot tree (undefined when none). */
export function findVmSnapshot(client: VimClient, vm: MoRef, name: string): ResultAsync<MoRef | undefined, EsxiError> {
  return wrap(`find snapshot ${name} of ${vm.value}`, () => findSnapshotByName(client, vm, name));
}

/** Open a datastore file for streaming download (consume or destroy `body`). */
export function downloadDatastoreFile(client: VimClient, file: DatastoreFileRef, options: TransferOptions = {}): ResultAsync<DatastoreDownload, EsxiError> {
  return wrap(`download ${file.path}`, () => openDatastoreFile(client, file, options));
}

/** Stream `body` (exactly `size` bytes) into a datastore file; resolves with bytes sent. */
export function uploadDatastoreFile(client: VimClient, file: DatastoreFileRef, body: Readable, size: number, options: TransferOptions = {}): ResultAsync<number, EsxiError> {
  return wrap(`upload ${file.path}`, () => putDatastoreFile(client, file, body, size, options));
}

/** Export a powered-off VM's devices through an HttpNfcLease, streaming each to `sink`. */
export function exportVm(
  client: VimClient,
  vm: MoRef,
  sink: (device: LeaseDevice, body: Readable) => Promise<void>,
  options: LeaseExportOptions = {},
): ResultAsync<LeaseExportResult, EsxiError> {
  return wrap(`export ${vm.value}`, () => exportVmViaLease(client, vm, sink, options));
}
