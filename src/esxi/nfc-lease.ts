/**
 * `HttpNfcLease` plumbing shared by ExportVm (download) and ImportVApp (upload): wait until the
 * lease is `ready`, read `info` (entity, `deviceUrl` with `*` hosts rewritten), keep it alive with
 * `HttpNfcLeaseProgress` every few seconds (a silent lease times out), stream a body to a lease
 * URL with bounded memory, and finish with `HttpNfcLeaseComplete` or `HttpNfcLeaseAbort`.
 *
 * @module
 */
import type http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { callThrowing, readRef, type CallOptions, type VimClient } from './client.js';
import { EsxiAbortedError, EsxiError, EsxiTimeoutError, EsxiTransportError, ProtocolError, TaskFailedError, faultToError } from './errors.js';
import { getProperties } from './properties.js';
import { textEl, type MoRef } from './soap.js';
import { request } from './transport.js';
import { child, childText, childrenNamed, xsiType } from './xml.js';

/** Stream buffer size for lease transfers; memory stays bounded by a few of these per stream. */
export const LEASE_BUFFER_BYTES = 256 * 1024;

/** One `HttpNfcLeaseDeviceUrl` of a lease. */
export interface LeaseDeviceUrl {
  /** Device key (export: `/vm-9/VirtualLsiLogicController0:0`). */
  key: string;
  /** Import: matches an `OvfFileItem.deviceId` of the import spec. */
  importKey: string | undefined;
  /** Transfer URL with any `*` host replaced by the host this client connected to. */
  url: URL;
  /** Target id (the file name in an OVF). */
  targetId: string | undefined;
  /** Whether it is a VMDK disk. */
  disk: boolean;
  /** Size in bytes when the server tells it (export only; 0 means unknown). */
  fileSize: number | undefined;
}

/** `HttpNfcLease.info` as this client uses it. */
export interface LeaseInfo {
  /** The VM (or vApp) the lease is for; for an import, the entity it created. */
  entity: MoRef | undefined;
  deviceUrls: LeaseDeviceUrl[];
  /** `totalDiskCapacityInKB` x 1024, 0 when absent. */
  totalDiskCapacityBytes: number;
}

/** Options of lease waiting. */
export interface LeaseWaitOptions extends CallOptions {
  /** Give up if the lease is not ready within this many milliseconds (default 5 minutes). */
  readyTimeoutMs?: number;
}

/** Replace a `*` host in a lease URL with the host this client connected to. */
export function rewriteLeaseUrl(raw: string, connectedHost: string): URL {
  const host = connectedHost.includes(':') && !connectedHost.startsWith('[') ? `[${connectedHost}]` : connectedHost;
  return new URL(raw.replace(/^(https?:\/\/)\*(?=[:/]|$)/i, `$1${host}`));
}

/**
 * Resolve a lease URL against the endpoint this client uses. A `*` host without a port means
 * "the host you connected to": like govmomi, take its host *and* port (port forwarding works),
 * and its scheme too, because a plain-http endpoint (the simulator, opted in with
 * `insecureHttp`) has no TLS listener for the `https://*` URL it hands out. A `*` with an
 * explicit port keeps that port and scheme; other hosts are left alone.
 */
export function resolveLeaseUrl(raw: string, origin: URL): URL {
  if (/^https?:\/\/\*(?=\/|$)/i.test(raw)) {
    const url = new URL(raw.replace(/^(https?:\/\/)\*/i, '$1placeholder'));
    return new URL(`${url.pathname}${url.search}`, origin);
  }
  return rewriteLeaseUrl(raw, origin.hostname);
}

/** Poll `state` until `ready`; rejects with the lease's typed fault on `error`, or on timeout/abort. */
export async function waitLeaseReady(client: VimClient, lease: MoRef, options: LeaseWaitOptions = {}): Promise<void> {
  const deadline = Date.now() + (options.readyTimeoutMs ?? 300_000);
  let delay = 100;
  for (;;) {
    if (options.signal?.aborted) throw new EsxiAbortedError(`HttpNfcLease ${lease.value}: aborted while waiting for ready`);
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

/** Read `info` of a lease (entity and device URLs, `*` hosts rewritten). */
export async function readLeaseInfo(client: VimClient, lease: MoRef, options: CallOptions = {}): Promise<LeaseInfo> {
  const info = (await getProperties(client, lease, ['info'], options)).get('info');
  const deviceUrls = childrenNamed(info, 'deviceUrl').map((d) => {
    const size = childText(d, 'fileSize');
    const importKey = childText(d, 'importKey')?.trim();
    return {
      key: childText(d, 'key') ?? '',
      importKey: importKey ? importKey : undefined,
      url: resolveLeaseUrl(childText(d, 'url') ?? '', client.endpoint.origin),
      targetId: childText(d, 'targetId'),
      disk: childText(d, 'disk') === 'true',
      fileSize: size === undefined ? undefined : Number(size),
    };
  });
  return {
    entity: readRef(child(info, 'entity')),
    deviceUrls,
    totalDiskCapacityBytes: Number(childText(info, 'totalDiskCapacityInKB') ?? 0) * 1024,
  };
}

/** A running `HttpNfcLeaseProgress` keep-alive. */
export interface ProgressTicker {
  /** Stop reporting and wait for a report in flight. */
  stop(): Promise<void>;
}

/**
 * Report `percent()` (clamped to 0-99: 100 is implied by Complete) every `intervalMs`.
 * A failed report is ignored: a dead lease shows up in the transfer itself.
 */
export function startProgressTicker(client: VimClient, lease: MoRef, percent: () => number, intervalMs = 5000): ProgressTicker {
  let last: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    const p = Math.max(0, Math.min(99, Math.floor(percent())));
    last = callThrowing(client, 'HttpNfcLeaseProgress', lease, [textEl('percent', p)]).catch(() => undefined);
  }, intervalMs);
  return {
    stop: async () => {
      clearInterval(timer);
      await last;
    },
  };
}

/** `HttpNfcLeaseComplete`. */
export async function completeLease(client: VimClient, lease: MoRef): Promise<void> {
  await callThrowing(client, 'HttpNfcLeaseComplete', lease, []);
}

/** `HttpNfcLeaseAbort`, best effort (the lease may already be gone); never rejects. */
export async function abortLease(client: VimClient, lease: MoRef): Promise<boolean> {
  return callThrowing(client, 'HttpNfcLeaseAbort', lease, []).then(() => true, () => false);
}

/** Percentage of `done` in `total` (0 when the total is unknown). */
export function percentOf(done: number, total: number): number {
  return total > 0 ? (done * 100) / total : 0;
}

/** A pass-through that counts bytes (and calls `onChunk`), so consumers see the stream unchanged. */
export function byteCounter(onChunk: (bytes: number) => void): Transform {
  return new Transform({
    highWaterMark: LEASE_BUFFER_BYTES,
    transform(chunk: Buffer, _enc, done) {
      onChunk(chunk.length);
      done(null, chunk);
    },
  });
}

/**
 * The session cookie for a lease URL, only when the URL is on the host this client logged in to:
 * a lease naming another host must not receive the session (standalone hosts answer with `*` or
 * their own name). Rejects such a URL with a ProtocolError that names both hosts.
 */
function sessionCookieFor(client: VimClient, url: URL): { cookie?: string } {
  if (url.hostname !== client.endpoint.origin.hostname) {
    throw new ProtocolError(`Lease URL ${url.origin} is not on ${client.endpoint.origin.host}; refusing to send the session cookie to another host`);
  }
  return client.cookie ? { cookie: client.cookie } : {};
}

/** Open a lease URL for download with the session cookie; rejects on a non-200 status. */
export async function downloadLeaseUrl(client: VimClient, url: URL, signal?: AbortSignal): Promise<Readable> {
  const headers = sessionCookieFor(client, url);
  let res: http.IncomingMessage;
  try {
    res = await request(client.endpoint, url, { method: 'GET', headers, signal, highWaterMark: LEASE_BUFFER_BYTES }, (req) => req.end());
  } catch (err) {
    throw transferError(err, `GET ${url.pathname}`);
  }
  if (res.statusCode !== 200) {
    res.resume();
    throw new EsxiTransportError(`GET ${url.pathname}: HTTP ${res.statusCode}`, { isRetryable: (res.statusCode ?? 0) >= 500 });
  }
  return res;
}

/** How to upload one file to an import lease URL. */
export interface LeaseUploadOptions {
  /**
   * `true` (`OvfFileItem.create`, non-disk files such as an .iso): `PUT` with `Overwrite: t`.
   * `false`: `POST` with `application/x-vnd.vmware-streamVmdk` (a stream-optimized VMDK), as
   * govmomi's nfc.Lease.Upload and ovftool do.
   */
  create: boolean;
  /** Exact byte count; sent as Content-Length and checked. Undefined: chunked transfer. */
  size: number | undefined;
  signal?: AbortSignal;
  /** Called with the size of every chunk sent. */
  onChunk?: (bytes: number) => void;
  /**
   * Fail when no byte moves for this long (default 120 s). The lease is kept alive by progress
   * reports, so a stalled connection would otherwise hold it, and the VM, forever.
   */
  idleTimeoutMs?: number;
}

function transferError(err: unknown, what: string): EsxiError {
  if (EsxiError.isInstance(err)) return err;
  const e = err as Error;
  if (e?.name === 'AbortError') return new EsxiAbortedError(`${what}: aborted`, { cause: err });
  return new EsxiTransportError(`${what}: ${e?.message ?? String(err)}`, { cause: err });
}

/** One upload's running state, shared by its byte counter, its idle watchdog and its request. */
interface UploadState {
  /** `PUT /nfc/...` or `POST /nfc/...`, for messages. */
  what: string;
  sent: number;
  lastByteAt: number;
  /** The first failure seen, which wins over the socket errors it causes. */
  failure: unknown;
}

/** A pass-through that counts bytes and fails on a source longer or shorter than announced. */
function checkedByteCounter(state: UploadState, options: LeaseUploadOptions): Transform {
  return new Transform({
    highWaterMark: LEASE_BUFFER_BYTES,
    transform(chunk: Buffer, _enc, done) {
      state.sent += chunk.length;
      state.lastByteAt = Date.now();
      if (options.size !== undefined && state.sent > options.size) {
        state.failure ??= new ProtocolError(`${state.what}: source gave more than the announced ${options.size} bytes`);
        done(state.failure as Error);
        return;
      }
      options.onChunk?.(chunk.length);
      done(null, chunk);
    },
    // A short source must fail the request, or the server waits for the missing bytes.
    flush(done) {
      if (options.size !== undefined && state.sent !== options.size) {
        state.failure ??= new ProtocolError(`${state.what}: source ended after ${state.sent} of the announced ${options.size} bytes`);
        done(state.failure as Error);
      } else done();
    },
  });
}

function uploadHeaders(client: VimClient, url: URL, options: LeaseUploadOptions): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = options.create
    ? { 'content-type': 'application/octet-stream', overwrite: 't' }
    : { 'content-type': 'application/x-vnd.vmware-streamVmdk' };
  if (options.size !== undefined) headers['content-length'] = options.size;
  return Object.assign(headers, sessionCookieFor(client, url));
}

/**
 * Fail the upload when no byte moved for `idleMs`: the lease is kept alive by progress reports,
 * so a stalled connection would otherwise hold it, and the VM, forever. Returns its stop function.
 */
function startIdleWatchdog(state: UploadState, idleMs: number, streams: { counter: Transform; body: Readable }): () => void {
  const watchdog = setInterval(() => {
    if (Date.now() - state.lastByteAt <= idleMs) return;
    state.failure ??= new EsxiTransportError(`${state.what}: no data for ${idleMs} ms`, { isRetryable: true });
    streams.counter.destroy(state.failure as Error);
    streams.body.destroy();
  }, Math.min(idleMs, 5000));
  watchdog.unref();
  return () => clearInterval(watchdog);
}

/** Stream `body` to an import lease URL with the session cookie. Resolves with the bytes sent. */
export async function uploadToLeaseUrl(client: VimClient, url: URL, body: Readable, options: LeaseUploadOptions): Promise<number> {
  const method = options.create ? 'PUT' : 'POST';
  const state: UploadState = { what: `${method} ${url.pathname}`, sent: 0, lastByteAt: Date.now(), failure: undefined };
  const { what } = state;
  const counter = checkedByteCounter(state, options);
  const headers = uploadHeaders(client, url, options);
  const stopWatchdog = startIdleWatchdog(state, options.idleTimeoutMs ?? 120_000, { counter, body });
  try {
    const res = await request(client.endpoint, url, { method, headers, signal: options.signal, highWaterMark: LEASE_BUFFER_BYTES }, (req) => {
      body.once('error', (err) => {
        state.failure ??= EsxiError.isInstance(err) ? err : new EsxiTransportError(`${what}: source failed: ${err.message}`, { cause: err });
      });
      pipeline(body, counter, req).catch((err: unknown) => req.destroy(err instanceof Error ? err : new Error(String(err))));
    });
    res.resume();
    await new Promise<void>((resolve, reject) => {
      res.once('end', resolve);
      res.once('error', reject);
    });
    if (res.statusCode !== 200 && res.statusCode !== 201) {
      throw new EsxiTransportError(`${what}: HTTP ${res.statusCode}`, { isRetryable: (res.statusCode ?? 0) >= 500 });
    }
    if (options.size !== undefined && state.sent !== options.size) throw new ProtocolError(`${what}: sent ${state.sent} bytes, expected ${options.size}`);
    return state.sent;
  } catch (err) {
    body.destroy();
    throw transferError(state.failure ?? err, what);
  } finally {
    stopWatchdog();
  }
}
