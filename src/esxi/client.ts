/**
 * A vim25 session: RetrieveServiceContent, Login (session cookie), Logout, and `call()` which
 * sends one envelope, parses the reply namespace-aware and turns SOAP faults into typed errors.
 * A `NotAuthenticated` fault (expired session) triggers one fresh Login and one retry.
 *
 * @module
 */
import type http from 'node:http';
import { ResultAsync } from 'neverthrow';
import { ZodError } from 'zod';
import {
  CertificateMismatchError,
  EsxiAbortedError,
  EsxiError,
  EsxiTransportError,
  NotAuthenticatedError,
  ProtocolError,
  asEsxiError,
  faultToError,
} from './errors.js';
import { envelope, textEl, type MoRef } from './soap.js';
import { request, resolveEndpoint, type ResolvedEndpoint, type VimEndpoint } from './transport.js';
import { child, childText, parseXml, xsiType, SOAPENV_NS, type XmlElement } from './xml.js';
import { InvalidInputError } from '../errors.js';

/** Largest SOAP reply accepted; replies are small, this stops a misbehaving server from exhausting memory. */
const MAX_REPLY_BYTES = 64 * 1024 * 1024;

/** The parts of `ServiceContent` this client uses. */
export interface ServiceContent {
  rootFolder: MoRef;
  propertyCollector: MoRef;
  sessionManager: MoRef;
  fileManager?: MoRef;
  ovfManager?: MoRef;
  /** `HostAgent` for ESXi, `VirtualCenter` for vCenter. */
  apiType: string;
  apiVersion: string;
  /** e.g. `VMware ESXi 6.5.0 build-5969303`. */
  fullName: string;
}

/** Options of one call. */
export interface CallOptions {
  /** Abort the HTTP request. */
  signal?: AbortSignal;
}

/** Read a managed object reference element (`<x type="T">id</x>`). */
export function readRef(element: XmlElement | undefined): MoRef | undefined {
  if (!element) return undefined;
  const type = element.attrs.type ?? xsiType(element);
  return type ? { type, value: element.text.trim() } : undefined;
}

const SERVICE_INSTANCE: MoRef = { type: 'ServiceInstance', value: 'ServiceInstance' };

function transportError(err: unknown, what: string): EsxiError {
  if (EsxiError.isInstance(err)) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.name === 'AbortError') return new EsxiAbortedError(`${what}: aborted`, { cause: err });
  const code = e?.code ?? '';
  // Node 24's OpenSSL also refuses weak keys ("EE certificate key too weak", code UNSPECIFIED).
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code) || /certificate/i.test(e?.message ?? '')) {
    return new CertificateMismatchError(`${what}: server certificate not trusted (${code}); pin its thumbprint or add its CA`, { cause: err });
  }
  return new EsxiTransportError(`${what}: ${e?.message ?? String(err)}`, { cause: err });
}

async function readBody(res: http.IncomingMessage, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > MAX_REPLY_BYTES) {
      res.destroy();
      throw new ProtocolError(`${what}: reply larger than ${MAX_REPLY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The throwing forms of {@link VimClient.call} and {@link VimClient.renewSession}, set by the class's static block. */
let throwingForms!: {
  call: (client: VimClient, method: string, self: MoRef, params: readonly string[], options: CallOptions) => Promise<XmlElement>;
  renewSession: (client: VimClient, options: CallOptions) => Promise<void>;
};

/** A logged-in vim25 session with one host. Create with {@link VimClient.connect}. */
export class VimClient {
  /** The validated endpoint (origin, agent, credentials). */
  readonly endpoint: ResolvedEndpoint;
  /** What the server said it is and where its managers live. */
  serviceContent!: ServiceContent;
  #cookie: string | undefined;
  #soapAction = 'urn:vim25/6.0';
  #loggedIn = false;
  #renewals = 0;
  #renewing: Promise<void> | undefined;

  private constructor(endpoint: ResolvedEndpoint) {
    this.endpoint = endpoint;
  }

  /** Validate the endpoint, fetch ServiceContent and log in. */
  static connect(input: VimEndpoint, options: CallOptions = {}): ResultAsync<VimClient, EsxiError | InvalidInputError> {
    return ResultAsync.fromPromise(
      (async () => {
        let endpoint: ResolvedEndpoint;
        try {
          endpoint = resolveEndpoint(input);
        } catch (err) {
          if (InvalidInputError.isInstance(err)) throw err;
          const issues = err instanceof ZodError
            ? err.issues.map((i) => ({ path: i.path.join('.'), message: i.message }))
            : [{ path: 'url', message: err instanceof Error ? err.message : String(err) }];
          throw new InvalidInputError('vSphere endpoint', issues, { cause: err });
        }
        const client = new VimClient(endpoint);
        try {
          await client.#retrieveServiceContent(options);
          await client.#login(options);
        } catch (err) {
          // Close the keep-alive sockets, or a failed connect keeps the process alive.
          endpoint.agent.destroy();
          throw err;
        }
        return client;
      })(),
      (err) => (InvalidInputError.isInstance(err) ? err : asEsxiError(err, 'connect')),
    );
  }

  /** The cookie header value for datastore HTTP requests (`vmware_soap_session=...`). */
  get cookie(): string | undefined {
    return this.#cookie;
  }

  async #retrieveServiceContent(options: CallOptions): Promise<void> {
    const body = await this.#send('RetrieveServiceContent', SERVICE_INSTANCE, [], options);
    const rv = child(body, 'returnval');
    const about = child(rv, 'about');
    const need = (name: string): MoRef => {
      const ref = readRef(child(rv, name));
      if (!ref) throw new ProtocolError(`RetrieveServiceContent: reply lacks ${name}`);
      return ref;
    };
    this.serviceContent = {
      rootFolder: need('rootFolder'),
      propertyCollector: need('propertyCollector'),
      sessionManager: need('sessionManager'),
      fileManager: readRef(child(rv, 'fileManager')),
      ovfManager: readRef(child(rv, 'ovfManager')),
      apiType: childText(about, 'apiType') ?? '',
      apiVersion: childText(about, 'apiVersion') ?? '',
      fullName: childText(about, 'fullName') ?? '',
    };
    if (this.serviceContent.apiVersion) this.#soapAction = `urn:vim25/${this.serviceContent.apiVersion}`;
  }

  async #login(options: CallOptions): Promise<void> {
    this.#cookie = undefined;
    await this.#send(
      'Login',
      this.serviceContent.sessionManager,
      [textEl('userName', this.endpoint.username), textEl('password', this.endpoint.password)],
      options,
    );
    if (!this.#cookie) throw new ProtocolError('Login: server set no session cookie');
    this.#loggedIn = true;
  }

  /**
   * Call `method` on `self` with parameter elements built by the soap.ts helpers. Resolves with
   * the `<methodResponse>` element. Re-logs in once when the session expired.
   */
  call(method: string, self: MoRef, params: readonly string[], options: CallOptions = {}): ResultAsync<XmlElement, EsxiError> {
    return ResultAsync.fromPromise(this.#call(method, self, params, options), (e) => asEsxiError(e, method));
  }

  /**
   * Log in again with the same credentials (a fresh session cookie). Used when the session
   * expired under a long datastore transfer: HTTP `/folder` requests answer 401 then, and unlike
   * SOAP calls they carry no fault that `call` could recover from by itself.
   */
  renewSession(options: CallOptions = {}): ResultAsync<void, EsxiError> {
    return ResultAsync.fromPromise(this.#renewSession(options), (e) => asEsxiError(e, 'Login'));
  }

  // The throwing forms, reachable from this folder's modules through callThrowing and
  // renewSessionThrowing (below) but not from the class's public surface.
  static {
    throwingForms = {
      call: (client, method, self, params, options) => client.#call(method, self, params, options),
      renewSession: (client, options) => client.#renewSession(options),
    };
  }

  async #call(method: string, self: MoRef, params: readonly string[], options: CallOptions): Promise<XmlElement> {
    try {
      return await this.#send(method, self, params, options);
    } catch (err) {
      if (!NotAuthenticatedError.isInstance(err) || !this.#loggedIn) throw err;
      await this.#renewSession(options);
      return this.#send(method, self, params, options);
    }
  }

  async #renewSession(options: CallOptions): Promise<void> {
    // One login at a time: the keep-alive and a transfer may both find the session expired, and
    // two logins would leave requests without a cookie and a stray session on the host.
    this.#renewing ??= this.#login(options)
      .then(() => {
        this.#renewals++;
      })
      .finally(() => {
        this.#renewing = undefined;
      });
    await this.#renewing;
  }

  /** How many times this client logged in again after its session expired. */
  get sessionRenewals(): number {
    return this.#renewals;
  }

  /**
   * Keep the session from idling out during long transfers (ESXi ends idle sessions after about
   * 30 minutes, and a datastore transfer is not SOAP activity): call `CurrentTime` every
   * `intervalMs`. Returns a function that stops it. Failures are ignored here; the transfer's
   * own 401 handling renews the session if it still expires.
   */
  keepSessionAlive(intervalMs: number): () => void {
    const timer = setInterval(() => {
      this.#call('CurrentTime', SERVICE_INSTANCE, [], {}).catch(() => undefined);
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** End the session (best effort) and close idle connections. */
  logout(): ResultAsync<void, EsxiError> {
    return ResultAsync.fromPromise(
      (async () => {
        try {
          if (this.#loggedIn) await this.#send('Logout', this.serviceContent.sessionManager, [], {});
        } finally {
          this.#loggedIn = false;
          this.#cookie = undefined;
          this.endpoint.agent.destroy();
        }
      })(),
      (e) => asEsxiError(e, 'Logout'),
    );
  }

  async #send(method: string, self: MoRef, params: readonly string[], options: CallOptions): Promise<XmlElement> {
    const xml = envelope(method, self, params);
    const what = `${method} on ${this.endpoint.origin.host}`;
    let res: http.IncomingMessage;
    let text: string;
    try {
      const headers: http.OutgoingHttpHeaders = {
        'content-type': 'text/xml; charset=utf-8',
        soapaction: this.#soapAction,
        'content-length': Buffer.byteLength(xml),
      };
      if (this.#cookie) headers.cookie = this.#cookie;
      res = await request(this.endpoint, this.endpoint.sdkUrl, {
        method: 'POST',
        headers,
        signal: options.signal,
        timeoutMs: this.endpoint.requestTimeoutMs,
      }, (req) => req.end(xml));
      text = await readBody(res, what);
    } catch (err) {
      throw transportError(err, what);
    }
    for (const header of res.headers['set-cookie'] ?? []) {
      const pair = header.split(';')[0]?.trim();
      if (pair?.startsWith('vmware_soap_session=')) this.#cookie = pair;
    }
    let root: XmlElement;
    try {
      root = parseXml(text);
    } catch (err) {
      throw new ProtocolError(`${what}: HTTP ${res.statusCode}, reply is not XML: ${text.slice(0, 200)}`, { cause: err });
    }
    const body = root.children.find((c) => c.name === 'Body' && c.ns === SOAPENV_NS);
    if (!body) throw new ProtocolError(`${what}: HTTP ${res.statusCode}, reply has no SOAP Body`);
    const fault = body.children.find((c) => c.name === 'Fault' && c.ns === SOAPENV_NS);
    if (fault) throw readFault(fault, what);
    const response = body.children[0];
    if (!response) throw new ProtocolError(`${what}: empty SOAP Body`);
    return response;
  }
}

/** Turn a `<soapenv:Fault>` into a typed error carrying the server's message. */
export function readFault(fault: XmlElement, what: string): EsxiError {
  const message = childText(fault, 'faultstring') ?? '';
  const detail = child(fault, 'detail')?.children[0];
  const type = detail ? (xsiType(detail) ?? detail.name.replace(/Fault$/, '')) : 'RuntimeFault';
  return faultToError(type, message.trim(), what);
}

/**
 * {@link VimClient.call} for the modules of src/esxi, which compose many calls in one async
 * function: rejects with an EsxiError instead of returning a Result. Not exported from the package.
 */
export function callThrowing(client: VimClient, method: string, self: MoRef, params: readonly string[], options: CallOptions = {}): Promise<XmlElement> {
  return throwingForms.call(client, method, self, params, options);
}

/** {@link VimClient.renewSession} for the modules of src/esxi: rejects with an EsxiError. Not exported from the package. */
export function renewSessionThrowing(client: VimClient, options: CallOptions = {}): Promise<void> {
  return throwingForms.renewSession(client, options);
}
