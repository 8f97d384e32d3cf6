/**
 * An HTTP proxy in front of a vcsim process that adds the one session rule vcsim leaves out:
 * ESXi answers `/folder` requests whose session cookie is unknown or expired with HTTP 401
 * (vcsim serves them to anyone). `expireSessions()` makes every session seen so far expire, as
 * ESXi does after its idle timeout: SOAP calls carrying an expired cookie then get the
 * `NotAuthenticated` fault and `/folder` requests get 401, until the client logs in again.
 * Everything else is forwarded, streamed, to the real simulator.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A running proxy and what it saw. */
export interface SessionProxy {
  /** SOAP URL through the proxy (`http://127.0.0.1:PORT/sdk`). */
  url: string;
  /** Expire every session cookie issued so far. */
  expireSessions(): void;
  /** `/folder` requests refused with 401. */
  refused401: number;
  /** SOAP calls refused with NotAuthenticated. */
  refusedSoap: number;
  /** Successful Login calls seen. */
  logins: number;
  /** `CurrentTime` calls seen (session keep-alive). */
  currentTimeCalls: number;
  close(): Promise<void>;
}

const NOT_AUTHENTICATED_FAULT =
  '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>The session is not authenticated.</faultstring><detail><NotAuthenticatedFault xmlns="urn:vim25" xsi:type="NotAuthenticated"><privilegeId>System.View</privilegeId></NotAuthenticatedFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>';

function sessionOf(req: IncomingMessage): string | undefined {
  return /vmware_soap_session=([^;\s]+)/.exec(req.headers.cookie ?? '')?.[1];
}

/** Start a proxy on a free loopback port forwarding to `target` (`host:port` of a vcsim). */
export async function startSessionProxy(target: string): Promise<SessionProxy> {
  const [targetHost, targetPort] = target.split(':') as [string, string];
  const live = new Set<string>();
  const expired = new Set<string>();
  const state = { refused401: 0, refusedSoap: 0, logins: 0, currentTimeCalls: 0 };

  const forward = (req: IncomingMessage, res: ServerResponse, body?: Buffer) => {
    const upstream = request({ host: targetHost, port: Number(targetPort), method: req.method, path: req.url, headers: req.headers }, (up) => {
      for (const cookie of up.headers['set-cookie'] ?? []) {
        const id = /vmware_soap_session=([^;\s]+)/.exec(cookie)?.[1];
        if (id) live.add(id);
      }
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    if (body) upstream.end(body);
    else req.pipe(upstream);
  };

  const server: Server = createServer((req, res) => {
    const session = sessionOf(req);
    if (req.url?.startsWith('/folder')) {
      if (!session || !live.has(session)) {
        state.refused401++;
        res.writeHead(401, { connection: 'close' });
        res.end();
        req.resume();
        return;
      }
      forward(req, res);
      return;
    }
    // SOAP: small bodies, read whole to see which method it is.
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const text = body.toString('utf8');
      const isLogin = /<(\w+:)?Login[\s>]/.test(text);
      if (/<(\w+:)?CurrentTime[\s>/]/.test(text)) state.currentTimeCalls++;
      if (session && expired.has(session) && !isLogin) {
        state.refusedSoap++;
        res.writeHead(500, { 'content-type': 'text/xml; charset=utf-8' });
        res.end(NOT_AUTHENTICATED_FAULT);
        return;
      }
      if (isLogin) state.logins++;
      forward(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/sdk`,
    expireSessions() {
      for (const id of live) expired.add(id);
      live.clear();
    },
    get refused401() {
      return state.refused401;
    },
    get refusedSoap() {
      return state.refusedSoap;
    },
    get logins() {
      return state.logins;
    },
    get currentTimeCalls() {
      return state.currentTimeCalls;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
