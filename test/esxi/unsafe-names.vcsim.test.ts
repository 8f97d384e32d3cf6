/**
 * A hostile source host: names in its datastore listing and in `config.files.vmPathName` that
 * climb out of the VM's directory (`../other-vm/...`). vcsim never serves such names, so a small
 * proxy in front of the source simulator rewrites its SOAP replies (everything else is the real
 * simulator). A second, recording proxy in front of the destination shows that nothing was
 * created or written there, and the source proxy shows that no `/folder` request left the VM's
 * directory.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VimClient } from '../../src/esxi/client.js';
import { datastorePathExists } from '../../src/esxi/datastore-http.js';
import { UnsafeDatastorePathError } from '../../src/esxi/errors.js';
import { findVmByName, listVms } from '../../src/esxi/inventory.js';
import { copyVmBetweenHosts, measureVmCopyBytes } from '../../src/esxi/migrate-vm.js';
import { destroyEntity, powerOffVm } from '../../src/esxi/operations.js';
import { skipUnless } from '../helpers/requirements.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../helpers/vcsim.js';

const DC = 'ha-datacenter';
const DS = 'LocalDS_0';
const VM = 'ha-host_VM0';

/** A proxy that forwards to a vcsim, records every request, and rewrites SOAP reply bodies. */
interface RewritingProxy {
  url: string;
  /** `METHOD /folder/...` of every datastore file request. */
  folder: string[];
  /** vim25 method names of every SOAP call, in order. */
  soap: string[];
  rewrite: (body: string) => string;
  close(): Promise<void>;
}

async function readAll(stream: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

async function startProxy(target: string): Promise<RewritingProxy> {
  const [host, port] = target.split(':') as [string, string];
  const proxy: RewritingProxy = { url: '', folder: [], soap: [], rewrite: (b) => b, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const isSoap = req.method === 'POST' && req.url?.startsWith('/sdk');
    if (!isSoap) proxy.folder.push(`${req.method} ${req.url}`);
    void (async () => {
      const body = await readAll(req);
      if (isSoap) proxy.soap.push(/<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)/.exec(body.toString('utf8'))?.[1] ?? '?');
      const headers = { ...req.headers };
      delete headers['accept-encoding'];
      const upstream = request({ host, port: Number(port), method: req.method, path: req.url, headers }, (up) => {
        void readAll(up).then((reply) => {
          const out = isSoap ? Buffer.from(proxy.rewrite(reply.toString('utf8'))) : reply;
          const h = { ...up.headers, 'content-length': String(out.length) };
          delete h['transfer-encoding'];
          res.writeHead(up.statusCode ?? 502, h);
          res.end(out);
        });
      });
      upstream.on('error', () => res.destroy());
      upstream.end(body);
    })();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/sdk`;
  proxy.close = () => new Promise((r) => server.close(() => r()));
  return proxy;
}

describe.skipIf(skipUnless('tool:go'))('names from a hostile source host never leave the VM directory', () => {
  let hosts: VcsimHost[] = [];
  let proxies: RewritingProxy[] = [];
  let src: VimClient;
  let dst: VimClient;
  let direct: VimClient;

  const connect = async (url: string, h: VcsimHost) => (await VimClient.connect({ url, username: h.username, password: h.password, insecureHttp: true }))._unsafeUnwrap();

  beforeEach(async () => {
    hosts = await startVcsim(2);
    proxies = await Promise.all(hosts.map((h) => startProxy(h.hostPort)));
    src = await connect(proxies[0]!.url, hosts[0]!);
    dst = await connect(proxies[1]!.url, hosts[1]!);
    // vcsim starts every host with the same VMs: free the name at the destination (not recorded).
    direct = await connect(hosts[1]!.url, hosts[1]!);
    const existing = await findVmByName(direct, VM);
    await powerOffVm(direct, existing.ref);
    await destroyEntity(direct, existing.ref);
    for (const p of proxies) {
      p.folder.length = 0;
      p.soap.length = 0;
    }
  });
  afterEach(async () => {
    await Promise.allSettled([src?.logout(), dst?.logout(), direct?.logout()]);
    await Promise.all(proxies.map((p) => p.close()));
    await stopVcsim(hosts);
  });

  /** Nothing of the copy at the destination, and nothing that tried to escape. */
  async function destinationUntouched(): Promise<void> {
    expect(proxies[1]!.folder.filter((r) => r.startsWith('PUT'))).toEqual([]);
    expect(proxies[1]!.soap).not.toContain('MakeDirectory');
    expect(proxies[1]!.soap).not.toContain('RegisterVM_Task');
    for (const dir of [`${VM}/`, 'other-vm/']) expect(await datastorePathExists(direct, { datacenter: DC, datastore: DS, path: dir }), dir).toBe(false);
    expect((await listVms(direct)).some((v) => v.name === VM)).toBe(false);
  }

  it('a listing with "../other-vm/..." is refused (ESXI_UNSAFE_PATH): no GET or PUT leaves the directory, the source runs again', async () => {
    proxies[0]!.rewrite = (body) => body.replaceAll(`<path>${VM}.nvram</path>`, `<path>../other-vm/other-vm.nvram</path>`);
    // Measuring (what migrate() does first) already refuses it, before the VM is touched.
    await expect(measureVmCopyBytes(src, VM)).rejects.toBeInstanceOf(UnsafeDatastorePathError);
    expect(proxies[0]!.soap).not.toContain('PowerOffVM_Task');
    const e = (await copyVmBetweenHosts(src, dst, VM))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(UnsafeDatastorePathError);
    expect(e.code).toBe('ESXI_UNSAFE_PATH');
    expect(e.message).toContain('../other-vm/other-vm.nvram');
    expect(e.details.rollback).toEqual(['power source VM back on: done']);
    expect(proxies[0]!.folder.filter((r) => r.includes('..') || r.includes('other-vm'))).toEqual([]);
    await destinationUntouched();
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
  });

  it('a vmPathName whose directory climbs out is refused before the source is powered off', async () => {
    proxies[0]!.rewrite = (body) => body.replaceAll(`[${DS}] ${VM}/${VM}.vmx`, `[${DS}] ${VM}/../other-vm/${VM}.vmx`);
    const e = (await copyVmBetweenHosts(src, dst, VM))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(UnsafeDatastorePathError);
    expect(e.message).toContain(`${VM}/../other-vm`);
    expect(proxies[0]!.soap).not.toContain('PowerOffVM_Task');
    expect(proxies[0]!.folder).toEqual([]);
    await destinationUntouched();
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
  });

  it('a layoutEx file named ".." in the VM directory is refused too', async () => {
    proxies[0]!.rewrite = (body) => body.replaceAll(`<name>[${DS}] ${VM}/disk1.vmdk</name>`, `<name>[${DS}] ${VM}/..</name>`);
    const e = (await copyVmBetweenHosts(src, dst, VM))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(UnsafeDatastorePathError);
    expect(e.message).toContain('layoutEx');
    await destinationUntouched();
  });
});
