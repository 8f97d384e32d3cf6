/**
 * Names that come from the source host (its datastore listing, a VM's `.vmx` path, an export
 * lease's `targetId`) and endpoint settings that would silently weaken TLS: refused before any
 * URL is built or any connection is made. No simulator needed: the URL builder is pure, and the
 * refusals happen before a request.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { VimClient } from '../../src/esxi/client.js';
import { datastoreFileUrl, datastoreNameProblem, datastorePathProblem, openDatastoreFile, putDatastoreFile } from '../../src/esxi/datastore-http.js';
import { UnsafeDatastorePathError } from '../../src/esxi/errors.js';
import { resolveEndpoint } from '../../src/esxi/transport.js';
import type { InvalidInputError } from '../../src/errors.js';

/** Just enough of a client for the URL builder and the transfer functions. */
function fakeClient(origin: string): VimClient {
  const endpoint = resolveEndpoint({ url: origin, username: 'u', password: 'p', insecureHttp: true });
  return { endpoint, cookie: 'vmware_soap_session="x"' } as unknown as VimClient;
}

const FILE = { datacenter: 'ha-datacenter', datastore: 'LocalDS_0' };

describe('datastore paths from the source', () => {
  const client = fakeClient('http://127.0.0.1:9');

  it('builds /folder URLs for plain names and directories', () => {
    expect(datastoreFileUrl(client, { ...FILE, path: 'vm/vm.vmx' }).href).toBe('http://127.0.0.1:9/folder/vm/vm.vmx?dcPath=ha-datacenter&dsName=LocalDS_0');
    expect(datastoreFileUrl(client, { ...FILE, path: 'vm/disk 1#?.vmdk' }).pathname).toBe('/folder/vm/disk%201%23%3F.vmdk');
    expect(datastoreFileUrl(client, { ...FILE, path: 'vm/' }).pathname).toBe('/folder/vm');
  });

  // Without the check, `new URL('/folder/vm/../../x')` resolves the dots: /x, outside /folder.
  const unsafe: Array<[string, string]> = [
    ['vm/../../etc/x', '".."'],
    ['../other-vm/other-vm-flat.vmdk', '".."'],
    ['vm/..', '".."'],
    ['vm/./x', '"."'],
    ['/vmfs/volumes/other/x', 'leading "/"'],
    ['', 'empty'],
    ['vm//x', 'empty'],
    ['vm/a\0b', 'NUL'],
    ['vm/a\nb', 'control'],
    ['vm/..\\..\\x', 'backslash'],
  ];
  for (const [path, why] of unsafe) {
    it(`refuses ${JSON.stringify(path)} (${why}) before building a URL`, () => {
      let thrown: unknown;
      try {
        datastoreFileUrl(client, { ...FILE, path });
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(UnsafeDatastorePathError);
      expect((thrown as UnsafeDatastorePathError).code).toBe('ESXI_UNSAFE_PATH');
      expect((thrown as UnsafeDatastorePathError).details).toMatchObject({ value: path });
    });
  }

  it('names one component: no "/", "..", ".", NUL, backslash or empty', () => {
    expect(datastoreNameProblem('vm-flat.vmdk')).toBeUndefined();
    expect(datastoreNameProblem('.lck-0123')).toBeUndefined();
    for (const bad of ['', '.', '..', 'a/b', 'a\\b', 'a\0', 'a\x7f', 42]) expect(datastoreNameProblem(bad), String(bad)).toBeDefined();
    expect(datastorePathProblem('a/b/c/')).toBeUndefined();
    expect(datastorePathProblem('a/../b')).toContain('".."');
  });

  describe('transfers refuse before any request', () => {
    let server: Server | undefined;
    afterEach(async () => {
      await new Promise((r) => server?.close(r));
      server = undefined;
    });

    it('GET and PUT of a path with ".." reach no server, and the upload body is destroyed', async () => {
      let requests = 0;
      server = createServer((req, res) => {
        requests++;
        req.resume();
        res.end();
      });
      await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
      const local = fakeClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
      await expect(openDatastoreFile(local, { ...FILE, path: 'vm/../../x' })).rejects.toBeInstanceOf(UnsafeDatastorePathError);
      const body = Readable.from([Buffer.alloc(16)]);
      await expect(putDatastoreFile(local, { ...FILE, path: '../x' }, body, 16)).rejects.toBeInstanceOf(UnsafeDatastorePathError);
      expect(body.destroyed).toBe(true);
      expect(requests).toBe(0);
    });
  });
});

describe('endpoint TLS settings that plain http would drop', () => {
  const base = { url: 'http://127.0.0.1:9/sdk', username: 'root', password: 'pw', insecureHttp: true };

  it('refuses a thumbprint pin on an http URL with INVALID_INPUT naming the fields, before connecting', async () => {
    const e = (await VimClient.connect({ ...base, thumbprint: 'AB'.repeat(32) }))._unsafeUnwrapErr() as InvalidInputError;
    expect(e.code).toBe('INVALID_INPUT');
    expect(e.issues.map((i) => i.path)).toEqual(['thumbprint']);
    expect(e.message).toContain('thumbprint');
    expect(e.message).toContain('http');
    expect(e.details).toMatchObject({ fields: ['url', 'insecureHttp', 'thumbprint'] });
  });

  it('refuses an extra CA on an http URL too, and accepts http alone (the simulator)', async () => {
    const e = (await VimClient.connect({ ...base, ca: '-----BEGIN CERTIFICATE-----' }))._unsafeUnwrapErr() as InvalidInputError;
    expect(e.code).toBe('INVALID_INPUT');
    expect(e.issues.map((i) => i.path)).toEqual(['ca']);
    expect(() => resolveEndpoint(base)).not.toThrow();
    // https keeps the pin: the agent verifies it.
    expect(() => resolveEndpoint({ ...base, url: 'https://127.0.0.1:9/sdk', thumbprint: 'AB'.repeat(32) })).not.toThrow();
  });
});
