/**
 * The vim25 client against a real vcsim process (govmomi's simulator, ESX model): session,
 * TLS policy, property reads, tasks, typed faults, datastore files. Also pins down the facts
 * about this vcsim build that the ESXi method relies on.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callThrowing, VimClient } from '../../src/esxi/client.js';
import { datastorePathExists, openDatastoreFile, putDatastoreFile } from '../../src/esxi/datastore-http.js';
import {
  CertificateMismatchError,
  FileNotFoundError,
  InvalidLoginError,
  InvalidStateError,
  MethodNotSupportedError,
} from '../../src/esxi/errors.js';
import { estimateVmSize, findVm, hostInventory, powerOff, snapshotVm } from '../../src/esxi/index.js';
import { getHostInventory, listVms } from '../../src/esxi/inventory.js';
import { createSnapshot, deleteDatastoreFile, listDatastoreDirectory, makeDirectory, registerVm } from '../../src/esxi/operations.js';
import { retrieveProperties } from '../../src/esxi/properties.js';
import { textEl } from '../../src/esxi/soap.js';
import { InvalidInputError } from '../../src/errors.js';
import { skipUnless } from '../helpers/requirements.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../helpers/vcsim.js';

const DC = 'ha-datacenter';
const DS = 'LocalDS_0';

function connect(h: VcsimHost, extra: Partial<Parameters<typeof VimClient.connect>[0]> = {}) {
  return VimClient.connect({ url: h.url, username: h.username, password: h.password, insecureHttp: true, ...extra });
}

async function sha256(stream: AsyncIterable<Buffer>): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk);
  return hash.digest('hex');
}

describe.skipIf(skipUnless('tool:go'))('vim25 client against vcsim (http)', () => {
  let hosts: VcsimHost[] = [];
  let host: VcsimHost;
  let client: VimClient;

  beforeAll(async () => {
    hosts = await startVcsim(1);
    host = hosts[0]!;
    client = (await connect(host))._unsafeUnwrap();
  });
  afterAll(async () => {
    await client?.logout();
    await stopVcsim(hosts);
  });

  it('logs in and reads ServiceContent', () => {
    expect(client.serviceContent.apiType).toBe('HostAgent');
    expect(client.serviceContent.propertyCollector.type).toBe('PropertyCollector');
    expect(client.cookie).toMatch(/^vmware_soap_session=/);
  });

  it('returns InvalidLoginError for a wrong password (server message kept)', async () => {
    const r = await connect(host, { password: 'wrong' });
    expect(r.isErr()).toBe(true);
    const e = r._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(InvalidLoginError);
    expect(e.code).toBe('ESXI_INVALID_LOGIN');
    expect(e.message).toContain('Login failure');
  });

  it('refuses plain http unless insecureHttp is given', async () => {
    const r = await VimClient.connect({ url: host.url, username: 'root', password: 'x' });
    expect(r._unsafeUnwrapErr()).toBeInstanceOf(InvalidInputError);
    expect(r._unsafeUnwrapErr().message).toContain('insecureHttp');
  });

  it('logs in again once when the session has expired', async () => {
    const c = (await connect(host))._unsafeUnwrap();
    const before = c.cookie;
    const inv = await getHostInventory(c);
    // End the session behind the client's back, as an idle timeout on the host would.
    await callThrowing(c, 'Logout', c.serviceContent.sessionManager, []);
    // vcsim answers property reads without a session (empty), so use a call it guards.
    await makeDirectory(c, `[${DS}] relogin`, inv.datacenter);
    expect(c.cookie).not.toBe(before);
    expect(await datastorePathExists(c, { datacenter: DC, datastore: DS, path: 'relogin/' })).toBe(true);
    await c.logout();
  });

  it('renewSession() logs in again (a fresh cookie, counted); call() returns faults as Results', async () => {
    const c = (await connect(host))._unsafeUnwrap();
    const before = c.cookie;
    expect((await c.renewSession()).isOk()).toBe(true);
    expect([c.cookie !== before, c.sessionRenewals]).toEqual([true, 1]);
    const vm = (await findVm(c, 'ha-host_VM0'))._unsafeUnwrap();
    expect(MethodNotSupportedError.isInstance((await c.call('ExportVm', vm.ref, []))._unsafeUnwrapErr())).toBe(true);
    await c.logout();
  });

  it('finds VMs and sizes them from layoutEx.file', async () => {
    const vm = (await findVm(client, 'ha-host_VM1'))._unsafeUnwrap();
    expect(vm.vmPathName).toBe(`[${DS}] ha-host_VM1/ha-host_VM1.vmx`);
    expect(vm.files.map((f) => f.type)).toContain('diskExtent');
    const size = (await estimateVmSize(client, 'ha-host_VM1'))._unsafeUnwrap();
    // vcsim reports its VM files as 0 bytes except the log it writes.
    expect(size).toBe(vm.files.reduce((s, f) => s + f.size, 0));
    const missing = await findVm(client, 'no-such-vm');
    expect(missing._unsafeUnwrapErr().code).toBe('ESXI_NOT_FOUND');
  });

  it('reads the host inventory (datacenter, folder, pool, datastores)', async () => {
    const inv = (await hostInventory(client))._unsafeUnwrap();
    expect(inv.datacenterName).toBe(DC);
    expect(inv.datastores.map((d) => d.name)).toEqual([DS]);
    expect(inv.resourcePool.type).toBe('ResourcePool');
  });

  it('runs tasks and maps task faults to typed errors (power off twice)', async () => {
    const vm = (await findVm(client, 'ha-host_VM1'))._unsafeUnwrap();
    expect(vm.powerState).toBe('poweredOn');
    expect((await powerOff(client, vm.ref)).isOk()).toBe(true);
    const again = await powerOff(client, vm.ref);
    const e = again._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(InvalidStateError);
    expect(e.faultType).toBe('InvalidPowerState');
    const snap = (await snapshotVm(client, vm.ref, { name: 'before-move' }))._unsafeUnwrap();
    expect(snap?.type).toBe('VirtualMachineSnapshot');
    expect(await createSnapshot(client, vm.ref, { name: 'second' })).toBeDefined();
  });

  it('creates and deletes datastore directories; deleting twice is FileNotFound', async () => {
    const inv = await getHostInventory(client);
    await makeDirectory(client, `[${DS}] scratch/a`, inv.datacenter);
    expect(await datastorePathExists(client, { datacenter: DC, datastore: DS, path: 'scratch/a/' })).toBe(true);
    await deleteDatastoreFile(client, `[${DS}] scratch`, inv.datacenter);
    expect(await datastorePathExists(client, { datacenter: DC, datastore: DS, path: 'scratch/' })).toBe(false);
    await expect(deleteDatastoreFile(client, `[${DS}] scratch`, inv.datacenter)).rejects.toBeInstanceOf(FileNotFoundError);
  });

  it('streams datastore files up and down bit-exact, and 404 becomes FileNotFoundError', async () => {
    const size = 8 * 1024 * 1024 + 13;
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i++) data[i] = (i * 31 + 7) & 0xff;
    const file = { datacenter: DC, datastore: DS, path: 'roundtrip/blob.bin' };
    let progress = 0;
    const sent = await putDatastoreFile(client, file, Readable.from([data.subarray(0, 1000), data.subarray(1000)]), size, { onProgress: (b) => (progress = b) });
    expect(sent).toBe(size);
    expect(progress).toBe(size);
    const got = await openDatastoreFile(client, file);
    expect(got.size).toBe(size);
    expect(await sha256(got.body)).toBe(createHash('sha256').update(data).digest('hex'));
    const inv = await getHostInventory(client);
    const listing = await listDatastoreDirectory(client, inv.datastores[0]!.browser!, `[${DS}] roundtrip`);
    expect(listing).toEqual([{ path: 'blob.bin', size }]);
    await expect(openDatastoreFile(client, { ...file, path: 'roundtrip/missing' })).rejects.toBeInstanceOf(FileNotFoundError);
    await expect(openDatastoreFile(client, { ...file, datastore: 'NoSuchDS' })).rejects.toBeInstanceOf(FileNotFoundError);
  });

  it('rejects a PUT whose stream is shorter than announced', async () => {
    const file = { datacenter: DC, datastore: DS, path: 'roundtrip/short.bin' };
    await expect(putDatastoreFile(client, file, Readable.from([Buffer.alloc(10)]), 20)).rejects.toThrow(/ended after 10 of the announced 20/);
    await expect(putDatastoreFile(client, file, Readable.from([Buffer.alloc(30)]), 20)).rejects.toThrow(/more than the announced 20/);
  });

  it('RegisterVM_Task of a missing .vmx is a FileNotFoundError', async () => {
    const inv = await getHostInventory(client);
    await expect(registerVm(client, { folder: inv.vmFolder, vmxPath: `[${DS}] nope/nope.vmx`, name: 'nope', pool: inv.resourcePool })).rejects.toBeInstanceOf(FileNotFoundError);
  });

  it('vcsim facts: no ExportVm, no ContinueRetrievePropertiesEx, no paging, synchronous tasks', async () => {
    const vm = (await findVm(client, 'ha-host_VM0'))._unsafeUnwrap();
    await expect(callThrowing(client, 'ExportVm', vm.ref, [])).rejects.toBeInstanceOf(MethodNotSupportedError);
    await expect(callThrowing(client, 'ContinueRetrievePropertiesEx', client.serviceContent.propertyCollector, [textEl('token', 'x')])).rejects.toBeInstanceOf(MethodNotSupportedError);
    await expect(callThrowing(client, 'CreateDescriptor', client.serviceContent.ovfManager!, [])).rejects.toBeInstanceOf(MethodNotSupportedError);
    // maxObjects 1 still returns every VM in one reply (no token).
    const all = await retrieveProperties(client, [{ type: 'VirtualMachine', paths: ['name'] }], [{ obj: client.serviceContent.rootFolder, selectSet: (await import('../../src/esxi/properties.js')).INVENTORY_TRAVERSAL }], { maxObjects: 1 });
    expect(all.filter((o) => o.obj.type === 'VirtualMachine').length).toBe(2);
    // A task is already finished when its reference comes back.
    const r = await callThrowing(client, 'PowerOnVM_Task', vm.ref, []);
    const task = r.children[0]!;
    const info = await retrieveProperties(client, [{ type: 'Task', paths: ['info.state'] }], [{ obj: { type: 'Task', value: task.text } }]);
    expect(['success', 'error']).toContain(info[0]!.props.get('info.state')!.text);
  });
});

describe.skipIf(skipUnless('tool:go'))('vcsim login and datastore access facts', () => {
  let hosts: VcsimHost[] = [];
  afterAll(() => stopVcsim(hosts));

  it('accepts any non-empty credentials unless started with -user/-pass, and serves /folder without a session', async () => {
    hosts = await startVcsim(1, { anyCredentials: true });
    const c = (await VimClient.connect({ url: hosts[0]!.url, username: 'anyone', password: 'anything', insecureHttp: true }))._unsafeUnwrap();
    await c.logout();
    const res = await fetch(`http://${hosts[0]!.hostPort}/folder/ha-host_VM0/vmware.log?dcPath=${DC}&dsName=${DS}`);
    expect(res.status).toBe(200);
    expect((await res.text()).length).toBeGreaterThan(0);
  });
});

describe.skipIf(skipUnless('tool:go'))('vim25 client TLS policy against vcsim (https)', () => {
  let hosts: VcsimHost[] = [];
  let host: VcsimHost;
  beforeAll(async () => {
    hosts = await startVcsim(1, { tls: true });
    host = hosts[0]!;
  });
  afterAll(() => stopVcsim(hosts));

  const ep = () => ({ url: host.url, username: host.username, password: host.password });

  it('rejects the self-signed certificate by default', async () => {
    const e = (await VimClient.connect(ep()))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(CertificateMismatchError);
    expect(e.isRetryable).toBe(false);
  });

  it('accepts it when its SHA-256 or SHA-1 thumbprint is pinned', async () => {
    for (const thumbprint of [host.sha256!, host.sha1!.match(/../g)!.join(':')]) {
      const c = (await VimClient.connect({ ...ep(), thumbprint }))._unsafeUnwrap();
      expect(c.serviceContent.apiType).toBe('HostAgent');
      await c.logout();
    }
  });

  it('refuses a wrong pin before sending credentials', async () => {
    const e = (await VimClient.connect({ ...ep(), thumbprint: 'AB'.repeat(32) }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(CertificateMismatchError);
    expect(e.message).toContain('pinned');
  });

  it('rejects a malformed thumbprint as invalid input', async () => {
    const e = (await VimClient.connect({ ...ep(), thumbprint: 'xyz' }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(InvalidInputError);
  });
});
