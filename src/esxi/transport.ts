/**
 * HTTP(S) plumbing shared by SOAP calls and datastore file transfers: endpoint validation, TLS
 * policy (verified by default, optional certificate thumbprint pin, plain http only on request)
 * and one keep-alive agent per endpoint.
 *
 * @module
 */
import { X509Certificate, createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { z } from 'zod';
import { InvalidInputError } from '../errors.js';
import { CertificateMismatchError } from './errors.js';

/** How to reach and log in to one ESXi host (or vCenter). */
export const VimEndpointSchema = z.object({
  /** `https://host[:port][/sdk]`, or a bare host name. */
  url: z.string().min(1),
  username: z.string().min(1),
  password: z.string().min(1),
  /** Pin the server certificate by its SHA-256 or SHA-1 fingerprint (hex, colons optional). Replaces CA verification. */
  thumbprint: z
    .string()
    .transform((s) => s.replace(/:/g, '').toUpperCase())
    .refine((s) => /^([0-9A-F]{40}|[0-9A-F]{64})$/.test(s), 'thumbprint must be a SHA-1 (40 hex) or SHA-256 (64 hex) fingerprint')
    .optional(),
  /** Extra CA certificates (PEM) to trust for this endpoint. */
  ca: z.string().optional(),
  /** Allow a plain `http://` URL (the simulator). Never implied. */
  insecureHttp: z.boolean().optional(),
  /** Per-request timeout for SOAP calls in milliseconds (default 60 s). */
  requestTimeoutMs: z.number().int().positive().optional(),
});

/** Validated endpoint, see {@link VimEndpointSchema}. */
export type VimEndpoint = z.input<typeof VimEndpointSchema>;

/** Endpoint after validation, with its parsed base URL. */
export interface ResolvedEndpoint {
  /** `scheme://host:port` without path. */
  origin: URL;
  /** SOAP URL (`.../sdk`). */
  sdkUrl: URL;
  username: string;
  password: string;
  requestTimeoutMs: number;
  /** Agent for every request to this host. */
  agent: http.Agent;
}

/** Normalise a fingerprint string for comparison. */
export function normaliseThumbprint(value: string): string {
  return value.replace(/:/g, '').toUpperCase();
}

function pinningAgent(thumbprint: string, ca: string | undefined): https.Agent {
  const agent = new https.Agent({ keepAlive: true, ca });
  // Verify the pin before the socket is handed to the request, so no byte (credentials
  // included) is written to a server whose certificate does not match.
  const create = (options: tls.ConnectionOptions, callback: (err: Error | null, socket?: Socket) => void): undefined => {
    const socket = tls.connect({ ...options, rejectUnauthorized: false });
    const onError = (err: Error) => callback(err);
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      socket.off('error', onError);
      const raw = socket.getPeerCertificate().raw;
      const algorithm = thumbprint.length === 64 ? 'sha256' : 'sha1';
      const actual = raw ? createHash(algorithm).update(raw).digest('hex').toUpperCase() : '';
      if (actual !== thumbprint) {
        socket.destroy();
        callback(new CertificateMismatchError(`Certificate of ${options.host ?? '?'} has ${algorithm} fingerprint ${actual || '(none)'}, expected the pinned ${thumbprint}`));
        return;
      }
      callback(null, socket);
    });
    return undefined;
  };
  (agent as unknown as { createConnection: typeof create }).createConnection = create;
  return agent;
}

/**
 * Validate an endpoint and build its agent. Throws ZodError, InvalidInputError or Error, only for
 * bad input. A certificate pin (`thumbprint`) or extra CA (`ca`) on a plain `http://` URL is
 * refused: there is no certificate to check, so the pin would be dropped without a word.
 */
export function resolveEndpoint(input: VimEndpoint): ResolvedEndpoint {
  const ep = VimEndpointSchema.parse(input);
  const withScheme = /^[a-z]+:\/\//i.test(ep.url) ? ep.url : `https://${ep.url}`;
  const url = new URL(withScheme);
  if (url.protocol === 'http:' && !ep.insecureHttp) {
    throw new Error(`refusing plain http for ${url.host}: pass insecureHttp: true to allow it (simulators only)`);
  }
  if (url.protocol === 'http:' && (ep.thumbprint !== undefined || ep.ca !== undefined)) {
    const fields = [...(ep.thumbprint !== undefined ? ['thumbprint'] : []), ...(ep.ca !== undefined ? ['ca'] : [])];
    throw new InvalidInputError('vSphere endpoint', fields.map((field) => ({
      path: field,
      message: `${field} cannot be checked on the plain http URL ${url.origin} (insecureHttp): it has no certificate, so the ${field === 'thumbprint' ? 'pin' : 'CA'} would be ignored; use https, or drop ${field}`,
    })), { details: { fields: ['url', 'insecureHttp', ...fields] } });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`unsupported URL scheme ${url.protocol}`);
  if (url.username || url.password) throw new Error('put credentials in username/password, not in the URL');
  const origin = new URL(url.origin);
  const sdkUrl = new URL(url.pathname && url.pathname !== '/' ? url.pathname : '/sdk', origin);
  let agent: http.Agent;
  if (url.protocol === 'http:') agent = new http.Agent({ keepAlive: true });
  else if (ep.thumbprint) agent = pinningAgent(ep.thumbprint, ep.ca);
  else agent = new https.Agent({ keepAlive: true, ca: ep.ca });
  return { origin, sdkUrl, username: ep.username, password: ep.password, requestTimeoutMs: ep.requestTimeoutMs ?? 60_000, agent };
}

/** SHA-256 fingerprint of a PEM certificate, upper-case hex (handy to build a pin). */
export function pemThumbprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256.replace(/:/g, '');
}

/** Issue one request with the endpoint's agent; resolves with the response (body unread). */
export function request(
  endpoint: ResolvedEndpoint,
  url: URL,
  options: { method: string; headers: http.OutgoingHttpHeaders; signal?: AbortSignal; timeoutMs?: number; highWaterMark?: number },
  writeBody: (req: http.ClientRequest) => void,
): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const lib = url.protocol === 'https:' ? https : http;
    const req = lib.request(url, {
      method: options.method,
      headers: options.headers,
      agent: endpoint.agent,
      signal: options.signal,
      ...(options.highWaterMark ? { highWaterMark: options.highWaterMark } : {}),
    });
    if (options.timeoutMs) {
      req.setTimeout(options.timeoutMs, () => req.destroy(new Error(`no answer from ${url.host} within ${options.timeoutMs} ms`)));
    }
    req.once('error', reject);
    req.once('response', resolve);
    writeBody(req);
  });
}
