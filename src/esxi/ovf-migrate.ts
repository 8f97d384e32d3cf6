/**
 * Move a powered-off VM between two hosts the OVF way: an ExportVm lease on the source, a
 * descriptor for it (CreateDescriptor, or generated from the VM's configuration), and an
 * ImportVApp lease on the destination, each exported disk streamed straight from its download
 * URL into the matching import URL. No local disk; memory is a few stream buffers. Both leases
 * are kept alive with progress reports; on any failure both are aborted and the destination VM
 * the import created is destroyed. The source VM is never changed.
 *
 * Unlike the datastore copy (migrate-vm.ts), this works when the two hosts have different
 * datastore layouts, and the disks travel in the hosts' own stream-optimized format.
 *
 * @module
 */
import { pipeline } from 'node:stream';
import { ResultAsync } from 'neverthrow';
import { z } from 'zod';
import { callThrowing, readRef, type VimClient } from './client.js';
import { assertSafeDatastorePath } from './datastore-http.js';
import { EsxiError, InvalidStateError, MethodNotSupportedError, ProtocolError, asEsxiError } from './errors.js';
import { findVmByName } from './inventory.js';
import { abortLease, byteCounter, completeLease, downloadLeaseUrl, percentOf, readLeaseInfo, startProgressTicker, waitLeaseReady, type LeaseDeviceUrl, type ProgressTicker } from './nfc-lease.js';
import { describeVmThrowing, type DescriptorSource } from './ovf-descriptor.js';
import { ImportOvfOptionsSchema, runOvfImport, type ImportOvfOptions, type ImportOvfReport } from './ovf-import.js';
import type { MoRef } from './soap.js';
import { child } from './xml.js';
import { InvalidInputError } from '../errors.js';

/** Options of {@link exportImportVm}. */
export interface ExportImportOptions extends ImportOvfOptions {
  /** Name of the VM at the destination (default: the source name). */
  targetName?: string;
  /** Destination datastore name (default: its first). */
  datastore?: string;
  /** OVF network name -> destination network name. */
  networkMapping?: Record<string, string>;
}

/** What {@link exportImportVm} did. */
export interface ExportImportReport extends ImportOvfReport {
  /** How the descriptor was made. */
  descriptorSource: DescriptorSource;
}

const ExportImportOptionsSchema = ImportOvfOptionsSchema.extend({
  targetName: z.string().min(1).max(80).optional(),
  datastore: z.string().min(1).optional(),
  networkMapping: z.record(z.string().min(1), z.string().min(1)).optional(),
});

/** A disk the export lease offers, with its size when the source knows it. */
interface ExportDisk {
  device: LeaseDeviceUrl;
  /** The name it has in the descriptor (and so at the destination). */
  path: string;
  size: number | undefined;
}

/** The export side's progress: bytes read from the source, and its lease's keep-alive. */
interface ExportProgress {
  exported: number;
  ticker: ProgressTicker | undefined;
}

/** Refuse bad options and an empty name before any call; throws InvalidInputError. */
function checkMigrationInput(vmName: string, options: ExportImportOptions): void {
  const parsed = ExportImportOptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new InvalidInputError('OVF migration options', parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })), { cause: parsed.error });
  }
  if (vmName.length === 0) throw new InvalidInputError('OVF migration', [{ path: 'vmName', message: 'VM name is empty' }]);
}

/** Find the powered-off source VM and open its ExportVm lease. */
async function openExportLease(src: VimClient, vmName: string, signal: AbortSignal | undefined): Promise<{ vm: MoRef; lease: MoRef }> {
  const vm = await findVmByName(src, vmName, { signal });
  // ExportVm needs a powered-off VM; powering it off is the caller's decision, not ours.
  if (vm.powerState !== 'poweredOff') {
    throw new InvalidStateError(`VM "${vmName}" on ${src.endpoint.origin.host} is ${vm.powerState}; power it off before an OVF export`, { faultType: 'InvalidPowerState', details: { vmName, powerState: vm.powerState } });
  }
  const response = await callThrowing(src, 'ExportVm', vm.ref, [], { signal }).catch((err: unknown) => {
    // Marked so callers can tell "this host cannot export" (nothing started yet) from later failures.
    if (MethodNotSupportedError.isInstance(err)) (err.details as Record<string, unknown>).method = 'ExportVm';
    throw err;
  });
  const lease = readRef(child(response, 'returnval'));
  if (!lease) throw new ProtocolError('ExportVm: no lease returned');
  return { vm: vm.ref, lease };
}

/** Wait for the export lease, list its disks (names checked) and start its keep-alive. */
async function readExportDisks(src: VimClient, lease: MoRef, options: ExportImportOptions, progress: ExportProgress): Promise<ExportDisk[]> {
  const { signal } = options;
  await waitLeaseReady(src, lease, { signal, readyTimeoutMs: options.readyTimeoutMs });
  const info = await readLeaseInfo(src, lease, { signal });
  // 0 is no real VMDK size: servers that do not know it send 0.
  const disks = info.deviceUrls.filter((d) => d.disk).map((d, i) => ({ device: d, path: d.targetId ?? `disk-${i}.vmdk`, size: d.fileSize ? d.fileSize : undefined }));
  // The source names each disk file (targetId); it goes into the descriptor the destination reads.
  for (const d of disks) if (d.device.targetId) assertSafeDatastorePath(d.device.targetId, `the export lease's targetId for ${d.device.key}`, 'name');
  const total = disks.reduce((sum, d) => sum + (d.size ?? 0), 0) || info.totalDiskCapacityBytes;
  progress.ticker = startProgressTicker(src, lease, () => percentOf(progress.exported, total), options.progressIntervalMs);
  return disks;
}

/** Describe the source VM and import it at `dst`, each disk streamed from its export URL. */
async function importExportedDisks(
  src: VimClient,
  dst: VimClient,
  source: { vmName: string; vm: MoRef; disks: readonly ExportDisk[] },
  options: ExportImportOptions,
  progress: ExportProgress,
): Promise<ExportImportReport> {
  const { signal } = options;
  const described = await describeVmThrowing(src, source.vm, source.disks.map((d) => ({ deviceId: d.device.key, path: d.path, size: d.size })), { signal });
  const byPath = new Map(source.disks.map((d) => [d.path, d]));
  const open = async (disk: ExportDisk) => {
    const body = await downloadLeaseUrl(src, disk.device.url, signal);
    const counted = byteCounter((n) => {
      progress.exported += n;
    });
    // pipeline, not pipe: a failed upload destroys `counted`, and this closes the download's socket too.
    return pipeline(body, counted, () => undefined);
  };
  const report = await runOvfImport(dst, {
    descriptor: described.descriptor,
    name: options.targetName ?? source.vmName,
    datastore: options.datastore,
    networkMapping: options.networkMapping,
    files: (path) => {
      const disk = byPath.get(path);
      return disk ? { size: disk.size, open: () => open(disk) } : undefined;
    },
  }, options);
  return { ...report, descriptorSource: described.source };
}

/**
 * The export/import, throwing: rejects with InvalidInputError or EsxiError. The Result form
 * {@link exportImportVm} is the public one; this is for callers that compose it in an async
 * function (src/methods/esxi-vm/hosting-vm.ts).
 */
export async function exportImportVmThrowing(src: VimClient, dst: VimClient, vmName: string, options: ExportImportOptions = {}): Promise<ExportImportReport> {
  checkMigrationInput(vmName, options);
  const { vm, lease } = await openExportLease(src, vmName, options.signal);
  const progress: ExportProgress = { exported: 0, ticker: undefined };
  try {
    const disks = await readExportDisks(src, lease, options, progress);
    const report = await importExportedDisks(src, dst, { vmName, vm, disks }, options, progress);
    await progress.ticker?.stop();
    // The copy is complete and running at the destination: failing to release the source's
    // export lease (it expires on its own) must not turn a finished move into a failed one.
    try {
      await completeLease(src, lease);
    } catch (e) {
      report.warnings.push({ faultType: 'HttpNfcLeaseComplete', message: `the source's export lease ${lease.value} could not be completed (it times out by itself): ${(e as Error).message}` });
    }
    return report;
  } catch (err) {
    await progress.ticker?.stop();
    const error = InvalidInputError.isInstance(err) ? err : asEsxiError(err, `OVF migration of ${vmName}`);
    // The destination side was already cleaned by runOvfImport; release the source VM now.
    await abortLease(src, lease);
    throw error;
  }
}

/**
 * Export the powered-off VM `vmName` from `src` and import it into `dst` through two
 * HttpNfcLeases, streaming each disk host to host. On failure both leases are aborted and the
 * destination holds nothing of the copy; the source VM is left as it was (powered off).
 */
export function exportImportVm(src: VimClient, dst: VimClient, vmName: string, options: ExportImportOptions = {}): ResultAsync<ExportImportReport, EsxiError | InvalidInputError> {
  return ResultAsync.fromPromise(exportImportVmThrowing(src, dst, vmName, options), (e) => (InvalidInputError.isInstance(e) ? e : asEsxiError(e, `OVF migration of ${vmName}`)));
}
