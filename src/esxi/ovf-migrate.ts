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
import { readRef, type VimClient } from './client.js';
import { assertSafeDatastorePath } from './datastore-http.js';
import { EsxiError, InvalidStateError, MethodNotSupportedError, ProtocolError, asEsxiError } from './errors.js';
import { findVmByName } from './inventory.js';
import { abortLease, byteCounter, completeLease, downloadLeaseUrl, percentOf, readLeaseInfo, startProgressTicker, waitLeaseReady, type ProgressTicker } from './nfc-lease.js';
import { describeVmAsync, type DescriptorSource } from './ovf-descriptor.js';
import { ImportOvfOptionsSchema, runOvfImport, type ImportOvfOptions, type ImportOvfReport } from './ovf-import.js';
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

/** Promise form of {@link exportImportVm}; rejects with InvalidInputError or EsxiError. */
export async function exportImportVmAsync(src: VimClient, dst: VimClient, vmName: string, options: ExportImportOptions = {}): Promise<ExportImportReport> {
  const parsed = ExportImportOptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new InvalidInputError('OVF migration options', parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })), { cause: parsed.error });
  }
  if (vmName.length === 0) throw new InvalidInputError('OVF migration', [{ path: 'vmName', message: 'VM name is empty' }]);
  const { signal } = options;
  const vm = await findVmByName(src, vmName, { signal });
  // ExportVm needs a powered-off VM; powering it off is the caller's decision, not ours.
  if (vm.powerState !== 'poweredOff') {
    throw new InvalidStateError(`VM "${vmName}" on ${src.endpoint.origin.host} is ${vm.powerState}; power it off before an OVF export`, { faultType: 'InvalidPowerState', details: { vmName, powerState: vm.powerState } });
  }
  const response = await src.callAsync('ExportVm', vm.ref, [], { signal }).catch((err: unknown) => {
    // Marked so callers can tell "this host cannot export" (nothing started yet) from later failures.
    if (err instanceof MethodNotSupportedError) (err.details as Record<string, unknown>).method = 'ExportVm';
    throw err;
  });
  const lease = readRef(child(response, 'returnval'));
  if (!lease) throw new ProtocolError('ExportVm: no lease returned');
  let ticker: ProgressTicker | undefined;
  let exported = 0;
  try {
    await waitLeaseReady(src, lease, { signal, readyTimeoutMs: options.readyTimeoutMs });
    const info = await readLeaseInfo(src, lease, { signal });
    // 0 is no real VMDK size: servers that do not know it send 0.
    const disks = info.deviceUrls.filter((d) => d.disk).map((d) => ({ device: d, size: d.fileSize ? d.fileSize : undefined }));
    // The source names each disk file (targetId); it goes into the descriptor the destination reads.
    for (const d of disks) if (d.device.targetId) assertSafeDatastorePath(d.device.targetId, `the export lease's targetId for ${d.device.key}`, 'name');
    const total = disks.reduce((sum, d) => sum + (d.size ?? 0), 0) || info.totalDiskCapacityBytes;
    ticker = startProgressTicker(src, lease, () => percentOf(exported, total), options.progressIntervalMs);
    const { descriptor, source } = await describeVmAsync(
      src,
      vm.ref,
      disks.map((d, i) => ({ deviceId: d.device.key, path: d.device.targetId ?? `disk-${i}.vmdk`, size: d.size })),
      { signal },
    );
    const byPath = new Map(disks.map((d, i) => [d.device.targetId ?? `disk-${i}.vmdk`, d]));
    const report = await runOvfImport(dst, {
      descriptor,
      name: options.targetName ?? vmName,
      datastore: options.datastore,
      networkMapping: options.networkMapping,
      files: (path) => {
        const disk = byPath.get(path);
        if (!disk) return undefined;
        return {
          size: disk.size,
          open: async () => {
            const body = await downloadLeaseUrl(src, disk.device.url, signal);
            const counted = byteCounter((n) => {
              exported += n;
            });
            // pipeline, not pipe: a failed upload destroys `counted`, and this closes the download's socket too.
            return pipeline(body, counted, () => undefined);
          },
        };
      },
    }, options);
    await ticker.stop();
    // The copy is complete and running at the destination: failing to release the source's
    // export lease (it expires on its own) must not turn a finished move into a failed one.
    try {
      await completeLease(src, lease);
    } catch (e) {
      report.warnings.push({ faultType: 'HttpNfcLeaseComplete', message: `the source's export lease ${lease.value} could not be completed (it times out by itself): ${(e as Error).message}` });
    }
    return { ...report, descriptorSource: source };
  } catch (err) {
    await ticker?.stop();
    const error = err instanceof InvalidInputError ? err : asEsxiError(err, `OVF migration of ${vmName}`);
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
  return ResultAsync.fromPromise(exportImportVmAsync(src, dst, vmName, options), (e) => (e instanceof InvalidInputError ? e : asEsxiError(e, `OVF migration of ${vmName}`)));
}
