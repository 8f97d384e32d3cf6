/**
 * Datastore file access over HTTP: `GET`/`PUT /folder/<path>?dcPath=<dc>&dsName=<ds>` with the
 * session cookie. Bodies are streams end to end (never buffered), with byte-count progress.
 *
 * @module
 */
import type http from 'node:http';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { renewSessionThrowing, type VimClient } from './client.js';
import { EsxiAbortedError, EsxiError, EsxiTransportError, FileNotFoundError, InvalidLoginError, NotAuthenticatedError, ProtocolError, UnsafeDatastorePathError } from './errors.js';
import { request } from './transport.js';

/** Stream buffer size for transfers (per stream; memory stays bounded by a few of these). */
export const TRANSFER_BUFFER_BYTES = 256 * 1024;

/** Which datastore file. */
export interface DatastoreFileRef {
  /** Datacenter name (`ha-datacenter` on a standalone ESXi). */
  datacenter: string;
  /** Datastore name. */
  datastore: string;
  /** Path inside the datastore, `/`-separated, no leading slash. */
  path: string;
}

/** Options of a transfer. */
export interface TransferOptions {
  signal?: AbortSignal;
  /** Called with the bytes moved so far (throttled by the stream's chunking). */
  onProgress?: (bytes: number) => void;
  /** Abort when no byte moves for this many milliseconds (default 120 s). */
  idleTimeoutMs?: number;
}

/**
 * Why `name` cannot be one component of a datastore path (undefined when it can): empty, `.`,
 * `..`, or holding `/`, a backslash, NUL or another control character. Names read from a host (its
 * datastore listing, a VM's files) come from the VM being moved and are checked with this
 * before they become part of a URL or a datastore path.
 */
export function datastoreNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return 'must be a string';
  if (name.length === 0) return 'must not be empty';
  if (name === '.' || name === '..') return `must not be "${name}"`;
  if (name.includes('/')) return 'must not contain "/"';
  if (name.includes('\\')) return 'must not contain "\\"';
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'must not contain NUL or control characters';
  return undefined;
}

/**
 * Why `path` is not a safe path inside a datastore (undefined when it is): it must be relative
 * (no leading `/`) and every `/`-separated component pass {@link datastoreNameProblem}; one
 * trailing `/` (a directory) is allowed.
 */
export function datastorePathProblem(path: unknown): string | undefined {
  if (typeof path !== 'string') return 'must be a string';
  if (path.length === 0) return 'must not be empty';
  if (path.startsWith('/')) return 'must be relative to the datastore (no leading "/")';
  const body = path.endsWith('/') ? path.slice(0, -1) : path;
  for (const part of body.split('/')) {
    const problem = datastoreNameProblem(part);
    if (problem) return `has a component ${JSON.stringify(part)} that ${problem}`;
  }
  return undefined;
}

/** Throw {@link UnsafeDatastorePathError} when `value` is not a safe name (`kind: 'name'`) or datastore path. */
export function assertSafeDatastorePath(value: unknown, what: string, kind: 'name' | 'path' = 'path'): asserts value is string {
  const problem = kind === 'name' ? datastoreNameProblem(value) : datastorePathProblem(value);
  if (problem) {
    throw new UnsafeDatastorePathError(`Refusing ${what} ${JSON.stringify(value)}: it ${problem}`, { details: { what, value, reason: problem } });
  }
}

/**
 * The `/folder` URL of a datastore file on this client's host. The path is checked first
 * ({@link datastorePathProblem}): a `..` component would otherwise be resolved by URL parsing and
 * reach outside `/folder/<dir>`. Throws UnsafeDatastorePathError.
 */
export function datastoreFileUrl(client: VimClient, file: DatastoreFileRef): URL {
  assertSafeDatastorePath(file.path, 'the datastore path');
  const encoded = file.path.split('/').filter(Boolean).map(encodeURIComponent).join('/');
  const url = new URL(`/folder/${encoded}`, client.endpoint.origin);
  url.searchParams.set('dcPath', file.datacenter);
  url.searchParams.set('dsName', file.datastore);
  return url;
}

function headers(client: VimClient, extra: http.OutgoingHttpHeaders = {}): http.OutgoingHttpHeaders {
  return client.cookie ? { ...extra, cookie: client.cookie } : extra;
}

function statusError(status: number | undefined, method: string, url: URL): EsxiError {
  const where = `${method} ${url.pathname}${url.search}`;
  if (status === 404) return new FileNotFoundError(`${where}: not found (HTTP 404): wrong path, datastore or datacenter`);
  // 401 on /folder means the session cookie is missing or expired: renewable, unlike 403.
  if (status === 401) return new NotAuthenticatedError(`${where}: session not accepted (HTTP 401): expired or missing`, { details: { host: url.host } });
  if (status === 403) return new InvalidLoginError(`${where}: access denied (HTTP 403)`);
  return new EsxiTransportError(`${where}: HTTP ${status}`, { isRetryable: status !== undefined && status >= 500 });
}

function wrap(err: unknown, what: string): EsxiError {
  if (EsxiError.isInstance(err)) return err;
  const e = err as Error;
  if (e?.name === 'AbortError') return new EsxiAbortedError(`${what}: aborted`, { cause: err });
  return new EsxiTransportError(`${what}: ${e?.message ?? String(err)}`, { cause: err });
}

/**
 * Run a request that carries no body of ours (GET, HEAD) and, when the session turned out to be
 * expired (401), log in again and run it once more. A PUT cannot be replayed (its body stream is
 * spent); callers that own the source reopen it instead (see the VM copy).
 */
async function withSessionRenewal<T>(client: VimClient, options: TransferOptions, attempt: () => Promise<T>): Promise<T> {
  try {
    return await attempt();
  } catch (err) {
    if (!NotAuthenticatedError.isInstance(err)) throw err;
    await renewSessionThrowing(client, options.signal ? { signal: options.signal } : {});
    return attempt();
  }
}

/** A readable body of a datastore file and its announced size. Consume or destroy it. */
export interface DatastoreDownload {
  body: Readable;
  /** Content-Length, when the server sent one. */
  size: number | undefined;
}

/** Start downloading a datastore file. Rejects with FileNotFoundError on 404. */
export function openDatastoreFile(client: VimClient, file: DatastoreFileRef, options: TransferOptions = {}): Promise<DatastoreDownload> {
  return withSessionRenewal(client, options, () => openOnce(client, file, options));
}

async function openOnce(client: VimClient, file: DatastoreFileRef, options: TransferOptions): Promise<DatastoreDownload> {
  const url = datastoreFileUrl(client, file);
  try {
    const res = await request(client.endpoint, url, { method: 'GET', headers: headers(client), signal: options.signal, highWaterMark: TRANSFER_BUFFER_BYTES }, (req) => req.end());
    if (res.statusCode !== 200) {
      res.resume();
      throw statusError(res.statusCode, 'GET', url);
    }
    const length = res.headers['content-length'];
    return { body: res, size: length === undefined ? undefined : Number(length) };
  } catch (err) {
    throw wrap(err, `GET ${url.pathname}`);
  }
}

/** Whether a datastore path exists (HEAD; a directory path should end with `/`). */
export function datastorePathExists(client: VimClient, file: DatastoreFileRef, options: TransferOptions = {}): Promise<boolean> {
  return withSessionRenewal(client, options, () => pathExistsOnce(client, file, options));
}

async function pathExistsOnce(client: VimClient, file: DatastoreFileRef, options: TransferOptions): Promise<boolean> {
  const url = datastoreFileUrl(client, file);
  if (file.path.endsWith('/')) url.pathname += '/';
  try {
    const res = await request(client.endpoint, url, { method: 'HEAD', headers: headers(client), signal: options.signal, timeoutMs: client.endpoint.requestTimeoutMs }, (req) => req.end());
    res.resume();
    if (res.statusCode === 404) return false;
    if (res.statusCode !== undefined && res.statusCode < 400) return true;
    throw statusError(res.statusCode, 'HEAD', url);
  } catch (err) {
    throw wrap(err, `HEAD ${url.pathname}`);
  }
}

/** Counts bytes and enforces the idle timeout while passing chunks through unchanged. */
interface Meter {
  stream: Transform;
  bytes: () => number;
  /** The first error of the source or the meter itself, kept because the HTTP layer reports a vaguer one ("socket hang up"). */
  failure: () => unknown;
  noteFailure: (err: unknown) => void;
  stop: () => void;
}

function meter(options: TransferOptions, what: string, expected?: number): Meter {
  let bytes = 0;
  let failure: unknown;
  let last = Date.now();
  const idle = options.idleTimeoutMs ?? 120_000;
  const stream = new Transform({
    // Larger buffers cut per-chunk overhead several-fold on fast links; still a bounded 2 x 256 KiB.
    highWaterMark: TRANSFER_BUFFER_BYTES,
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      last = Date.now();
      if (expected !== undefined && bytes > expected) {
        failure ??= new ProtocolError(`${what}: source gave more than the announced ${expected} bytes`);
        done(failure as Error);
        return;
      }
      options.onProgress?.(bytes);
      done(null, chunk);
    },
    // A short source must fail the request: the server would otherwise wait for the missing bytes.
    flush(done) {
      if (expected !== undefined && bytes !== expected) {
        failure ??= new ProtocolError(`${what}: source ended after ${bytes} of the announced ${expected} bytes`);
        done(failure as Error);
      } else done();
    },
  });
  const timer = setInterval(() => {
    if (Date.now() - last > idle) {
      failure ??= new EsxiTransportError(`${what}: no data for ${idle} ms`);
      stream.destroy(failure as Error);
    }
  }, Math.min(idle, 5000));
  timer.unref();
  return {
    stream,
    bytes: () => bytes,
    failure: () => failure,
    noteFailure: (err) => {
      failure ??= err;
    },
    stop: () => clearInterval(timer),
  };
}

/**
 * Upload a stream to a datastore file (created or replaced). `size` is required: ESXi wants a
 * Content-Length, and it lets the upload be checked for truncation. Resolves with bytes sent.
 */
export async function putDatastoreFile(client: VimClient, file: DatastoreFileRef, body: Readable, size: number, options: TransferOptions = {}): Promise<number> {
  let url: URL;
  try {
    url = datastoreFileUrl(client, file);
  } catch (err) {
    body.destroy();
    throw err;
  }
  const what = `PUT ${url.pathname}`;
  const m = meter(options, what, size);
  try {
    const res = await request(
      client.endpoint,
      url,
      { method: 'PUT', headers: headers(client, { 'content-type': 'application/octet-stream', 'content-length': size }), signal: options.signal, highWaterMark: TRANSFER_BUFFER_BYTES },
      (req) => {
        body.once('error', (err) => m.noteFailure(new EsxiTransportError(`${what}: source failed: ${err.message}`, { cause: err })));
        pipeline(body, m.stream, req).catch((err: unknown) => req.destroy(err instanceof Error ? err : new Error(String(err))));
      },
    );
    res.resume();
    if (res.statusCode !== 200 && res.statusCode !== 201 && res.statusCode !== 204) throw statusError(res.statusCode, 'PUT', url);
    await new Promise<void>((resolve, reject) => {
      res.once('end', resolve);
      res.once('error', reject);
    });
    if (m.bytes() !== size) throw new ProtocolError(`${what}: sent ${m.bytes()} bytes, expected ${size}`);
    return m.bytes();
  } catch (err) {
    body.destroy();
    throw wrap(m.failure() ?? err, what);
  } finally {
    m.stop();
  }
}
