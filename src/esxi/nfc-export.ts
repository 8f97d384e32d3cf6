/**
 * Export a powered-off VM's disks through an `HttpNfcLease` (`VirtualMachine.ExportVm`):
 * wait for the lease to be `ready`, read `info.deviceUrl` (a `*` host means "the host you
 * connected to"), stream each device with the session cookie, report `HttpNfcLeaseProgress`
 * every few seconds (a silent lease times out), then `HttpNfcLeaseComplete`, or
 * `HttpNfcLeaseAbort` on any failure.
 *
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Transform, type Readable } from 'node:stream';
import { readRef, type VimClient } from './client.js';
import { EsxiAbortedError, EsxiError, EsxiTimeoutError, EsxiTransportError, ProtocolError, TaskFailedError, asEsxiError, faultToError } from './errors.js';
import { getProperties } from './properties.js';
import { textEl, type MoRef } from './soap.js';
import { request } from './transport.js';
import { child, childText, childrenNamed, xsiType } from './xml.js';

/** One file the lease offers. */
export interface LeaseDevice {
  /** Device key (e.g. `/vm-9/VirtualLsiLogicController0:0`). */
  key: string;
  /** Download URL with any `*` host replaced. */
  url: URL;
  /** Target id (file name in an OVF). */
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

/** Replace a `*` host in a lease URL with the host this client connected to. */
export function rewriteLeaseUrl(raw: string, connectedHost: string): URL {
  const host = connectedHost.includes(':') && !connectedHost.startsWith('[') ? `[${connectedHost}]` : connectedHost;
  return new URL(raw.replace(/^(https?:\/\/)\*(?=[:/]|$)/i, `$1${host}`));
}

async function waitLeaseReady(client: VimClient, lease: MoRef, options: LeaseExportOptions): Promise<void> {
  const deadline = Date.now() + (options.readyTimeoutMs ?? 300_000);
  let delay = 100;
  for (;;) {
    const props = await getProperties(client, lease, ['state', 'error'], options);
    const state = props.get('state')?.text.trim();
    if (state === 'ready') return;
    if (state === 'error' || state === 'done') {
      const err = props.get('error');
      const fault = child(err, 'fault');
      const type = (fault && xsiType(fault)) ?? 'RuntimeFault';
      const e = faultToError(type, childText(err, 'localizedMessage') ?? `lease is ${state}`, `HttpNfcLease ${lease.value}`);
      throw e.code === 'ESXI_SOAP_FAULT' ? new TaskFailedError(e.message, { faultType: type }) : e;
    }
    if (Date.now() >= deadline) throw new EsxiTimeoutError(`HttpNfcLease ${lease.value} not ready after ${options.readyTimeoutMs ?? 300_000} ms (state ${state})`);
    try {
      await sleep(delay, undefined, { signal: options.signal });
    } catch {
      throw new EsxiAbortedError(`HttpNfcLease ${lease.value}: aborted while waiting for ready`);
    }
    delay = Math.min(delay * 2, 2000);
  }
}

async function readDevices(client: VimClient, lease: MoRef, options: LeaseExportOptions): Promise<{ devices: LeaseDevice[]; totalBytes: number }> {
  const info = (await getProperties(client, lease, ['info'], options)).get('info');
  const host = client.endpoint.origin.hostname;
  const devices = childrenNamed(info, 'deviceUrl').map((d) => {
    const size = childText(d, 'fileSize');
    return {
      key: childText(d, 'key') ?? '',
      url: rewriteLeaseUrl(childText(d, 'url') ?? '', host),
      targetId: childText(d, 'targetId'),
      disk: childText(d, 'disk') === 'true',
      fileSize: size === undefined ? undefined : Number(size),
    };
  });
  const known = devices.reduce((sum, d) => sum + (d.fileSize ?? 0), 0);
  const capacityKb = Number(childText(info, 'totalDiskCapacityInKB') ?? 0);
  return { devices, totalBytes: known || capacityKb * 1024 };
}

async function download(client: VimClient, device: LeaseDevice, signal: AbortSignal | undefined): Promise<Readable> {
  const headers = client.cookie ? { cookie: client.cookie } : {};
  let res;
  try {
    res = await request(client.endpoint, device.url, { method: 'GET', headers, signal }, (req) => req.end());
  } catch (err) {
    throw new EsxiTransportError(`GET ${device.url.pathname}: ${(err as Error).message}`, { cause: err });
  }
  if (res.statusCode !== 200) {
    res.resume();
    throw new EsxiTransportError(`GET ${device.url.pathname}: HTTP ${res.statusCode}`, { isRetryable: (res.statusCode ?? 0) >= 500 });
  }
  return res;
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
  const response = await client.callAsync('ExportVm', vm, [], options);
  const lease = readRef(child(response, 'returnval'));
  if (!lease) throw new ProtocolError('ExportVm: no lease returned');
  let bytes = 0;
  let timer: NodeJS.Timeout | undefined;
  try {
    await waitLeaseReady(client, lease, options);
    const { devices, totalBytes } = await readDevices(client, lease, options);
    let lastReport: Promise<unknown> = Promise.resolve();
    timer = setInterval(() => {
      const percent = totalBytes > 0 ? Math.min(99, Math.floor((bytes * 100) / totalBytes)) : 0;
      // Keep-alive: failures surface through the transfer itself, so a lost report is only logged in details.
      lastReport = client.callAsync('HttpNfcLeaseProgress', lease, [textEl('percent', percent)]).catch(() => undefined);
    }, options.progressIntervalMs ?? 5000);
    for (const device of devices) {
      const body = await download(client, device, options.signal);
      // Count bytes in a pass-through so the sink still sees the stream from its first byte.
      const counted = new Transform({
        transform(chunk: Buffer, _enc, done) {
          bytes += chunk.length;
          options.onBytes?.(bytes);
          done(null, chunk);
        },
      });
      body.once('error', (e) => counted.destroy(e));
      body.pipe(counted);
      await sink(device, counted);
      if (!counted.readableEnded) {
        throw new ProtocolError(`sink returned before consuming ${device.url.pathname}`);
      }
    }
    clearInterval(timer);
    await lastReport;
    await client.callAsync('HttpNfcLeaseComplete', lease, []);
    return { devices, bytes };
  } catch (err) {
    if (timer) clearInterval(timer);
    const error = err instanceof EsxiError ? err : asEsxiError(err, `export of ${vm.value}`);
    // Abort so the server releases the VM now instead of when the lease times out.
    await client.callAsync('HttpNfcLeaseAbort', lease, []).catch(() => undefined);
    throw error;
  }
}
