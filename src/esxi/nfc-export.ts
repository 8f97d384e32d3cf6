/**
 * Export a powered-off VM's disks through an `HttpNfcLease` (`VirtualMachine.ExportVm`):
 * wait for the lease to be `ready`, read `info.deviceUrl` (a `*` host means "the host you
 * connected to"), stream each device with the session cookie, report `HttpNfcLeaseProgress`
 * every few seconds (a silent lease times out), then `HttpNfcLeaseComplete`, or
 * `HttpNfcLeaseAbort` on any failure.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { callThrowing, readRef, type VimClient } from './client.js';
import { assertSafeDatastorePath } from './datastore-http.js';
import { EsxiError, ProtocolError, asEsxiError } from './errors.js';
import {
  abortLease,
  byteCounter,
  completeLease,
  downloadLeaseUrl,
  percentOf,
  readLeaseInfo,
  startProgressTicker,
  waitLeaseReady,
  type ProgressTicker,
} from './nfc-lease.js';
import type { MoRef } from './soap.js';
import { child } from './xml.js';

/** One file the lease offers. */
export interface LeaseDevice {
  /** Device key (e.g. `/vm-9/VirtualLsiLogicController0:0`). */
  key: string;
  /** Download URL with any `*` host replaced. */
  url: URL;
  /** Target id (file name in an OVF); checked to be one plain file name (no `/`, `..`, NUL). */
  targetId: string | undefined;
  /** Whether it is a VMDK disk. */
  disk: boolean;
  /** Size in bytes when the server tells it. */
  fileSize: number | undefined;
}

/** Options of an ExportVm lease transfer. */
export interface LeaseExportOptions {
  /** Abort the export (the lease is then aborted). */
  signal?: AbortSignal;
  /** How often to call HttpNfcLeaseProgress (default 5000 ms). */
  progressIntervalMs?: number;
  /** Give up if the lease is not ready within this many milliseconds (default 5 minutes). */
  readyTimeoutMs?: number;
  /** Called with total bytes received so far. */
  onBytes?: (bytes: number) => void;
}

/** What an export moved. */
export interface LeaseExportResult {
  devices: LeaseDevice[];
  bytes: number;
}

export { rewriteLeaseUrl } from './nfc-lease.js';

async function readDevices(client: VimClient, lease: MoRef, options: LeaseExportOptions): Promise<{ devices: LeaseDevice[]; totalBytes: number }> {
  const info = await readLeaseInfo(client, lease, options);
  // A sink may well write each device to a file named by its targetId: only plain file names pass.
  for (const d of info.deviceUrls) if (d.targetId) assertSafeDatastorePath(d.targetId, `the export lease's targetId for ${d.key}`, 'name');
  const devices = info.deviceUrls.map((d) => ({ key: d.key, url: d.url, targetId: d.targetId, disk: d.disk, fileSize: d.fileSize }));
  const known = devices.reduce((sum, d) => sum + (d.fileSize ?? 0), 0);
  return { devices, totalBytes: known || info.totalDiskCapacityBytes };
}

/**
 * Export `vm` (powered off) and hand each device's byte stream to `sink`, which must consume it
 * fully (stream it somewhere; never buffer it). The lease is completed on success and aborted
 * on any failure, including the sink's.
 */
export async function exportVmViaLease(
  client: VimClient,
  vm: MoRef,
  sink: (device: LeaseDevice, body: Readable) => Promise<void>,
  options: LeaseExportOptions = {},
): Promise<LeaseExportResult> {
  const response = await callThrowing(client, 'ExportVm', vm, [], options);
  const lease = readRef(child(response, 'returnval'));
  if (!lease) throw new ProtocolError('ExportVm: no lease returned');
  let bytes = 0;
  let ticker: ProgressTicker | undefined;
  try {
    await waitLeaseReady(client, lease, options);
    const { devices, totalBytes } = await readDevices(client, lease, options);
    ticker = startProgressTicker(client, lease, () => percentOf(bytes, totalBytes), options.progressIntervalMs);
    for (const device of devices) {
      const body = await downloadLeaseUrl(client, device.url, options.signal);
      // Count bytes in a pass-through so the sink still sees the stream from its first byte.
      const counted = byteCounter((n) => {
        bytes += n;
        options.onBytes?.(bytes);
      });
      body.once('error', (e) => counted.destroy(e));
      body.pipe(counted);
      await sink(device, counted);
      if (!counted.readableEnded) {
        throw new ProtocolError(`sink returned before consuming ${device.url.pathname}`);
      }
    }
    await ticker.stop();
    await completeLease(client, lease);
    return { devices, bytes };
  } catch (err) {
    await ticker?.stop();
    const error = EsxiError.isInstance(err) ? err : asEsxiError(err, `export of ${vm.value}`);
    // Abort so the server releases the VM now instead of when the lease times out.
    await abortLease(client, lease);
    throw error;
  }
}
