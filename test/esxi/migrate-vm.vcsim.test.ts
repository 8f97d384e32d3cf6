/**
 * End to end: copy a VM between two separate vcsim processes (two standalone "hosts") through
 * the datastore HTTP API with a 256 MiB disk file of real bytes, then the faults: wrong
 * password, destination datastore missing, name collision, a failing task at the destination,
 * and either simulator killed mid-copy. After every failure the destination holds nothing of
 * the copy and the source VM is intact.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { VimClient } from '../../src/esxi/client.js';
import { datastorePathExists, putDatastoreFile } from '../../src/esxi/datastore-http.js';
import { AlreadyExistsError, EsxiAbortedError, EsxiError, EsxiTransportError, FileNotFoundError, InvalidLoginError, ObjectNotFoundError, UnsafeDatastorePathError } from '../../src/esxi/errors.js';
import { findVmByName, listVms } from '../../src/esxi/inventory.js';
import { copyVmBetweenHosts, preflightVmCopy, undoVmCopy } from '../../src/esxi/migrate-vm.js';
import { destroyEntity, powerOffVm } from '../../src/esxi/operations.js';
import { diskStream, remoteSha as remoteShaOf } from '../helpers/datastore-bytes.js';
import { skipUnless } from '../helpers/requirements.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../helpers/vcsim.js';

const DC = 'ha-datacenter';
const DS = 'LocalDS_0';
const VM = 'ha-host_VM0';
const DISK = `${VM}/disk1-flat.vmdk`;
const DISK_BYTES = 256 * 1024 * 1024;

const remoteSha = (client: VimClient, path: string) => remoteShaOf(client, { datacenter: DC, datastore: DS, path });

async function localSha(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

/** The source disk inside a (possibly killed) simulator's datastore directory. */
function diskOnHostDisk(host: VcsimHost): string {
  const ds = readdirSync(host.tmpDir).find((d) => d.startsWith(`govcsim-${DC}-${DS}`));
  return join(host.tmpDir, ds ?? 'missing', DISK);
}

const connect = async (h: VcsimHost) => (await VimClient.connect({ url: h.url, username: h.username, password: h.password, insecureHttp: true }))._unsafeUnwrap();

describe.skipIf(skipUnless('tool:go'))('copyVmBetweenHosts between two vcsim processes', () => {
  let hosts: VcsimHost[] = [];
  let src: VimClient;
  let dst: VimClient;
  let diskSha: string;

  beforeEach(async () => {
    hosts = await startVcsim(2);
    [src, dst] = await Promise.all(hosts.map(connect)) as [VimClient, VimClient];
    const hash = createHash('sha256');
    await putDatastoreFile(src, { datacenter: DC, datastore: DS, path: DISK }, diskStream(DISK_BYTES, hash), DISK_BYTES);
    diskSha = hash.digest('hex');
  });
  afterEach(async () => {
    await Promise.allSettled([src?.logout(), dst?.logout()]);
    await stopVcsim(hosts);
  });

  /** vcsim starts every host with the same VM names; free the name at the destination. */
  async function freeDestinationName(): Promise<void> {
    const existing = await findVmByName(dst, VM);
    await powerOffVm(dst, existing.ref);
    await destroyEntity(dst, existing.ref);
  }

  it('copies the VM bit-exact, registers and powers it on at the destination; source stays', async () => {
    await freeDestinationName();
    let lastProgress = 0;
    const report = (await copyVmBetweenHosts(src, dst, VM, { onProgress: (p) => (lastProgress = p.totalBytes) }))._unsafeUnwrap();
    expect(report.destinationPowerState).toBe('poweredOn');
    expect(report.sentBytes).toBeGreaterThanOrEqual(DISK_BYTES);
    expect(lastProgress).toBe(report.sentBytes);
    expect(report.files.find((f) => f.path === 'disk1-flat.vmdk')?.size).toBe(DISK_BYTES);
    expect(report.sourceWasPoweredOn).toBe(true);
    const copy = await findVmByName(dst, VM);
    expect(copy.ref).toEqual(report.destinationVm);
    expect(copy.powerState).toBe('poweredOn');
    expect(await remoteSha(dst, DISK)).toBe(diskSha);
    // Source: still registered, powered off (never destroyed), disk unchanged.
    const source = await findVmByName(src, VM);
    expect(source.powerState).toBe('poweredOff');
    expect(await remoteSha(src, DISK)).toBe(diskSha);
  });

  it('wrong password at the destination: InvalidLoginError, nothing touched', async () => {
    const r = await VimClient.connect({ url: hosts[1]!.url, username: 'root', password: 'wrong', insecureHttp: true });
    expect(r._unsafeUnwrapErr()).toBeInstanceOf(InvalidLoginError);
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
  });

  it('destination datastore missing: ObjectNotFoundError before anything changes', async () => {
    await freeDestinationName();
    const e = (await copyVmBetweenHosts(src, dst, VM, { destinationDatastore: 'NoSuchDS' }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(ObjectNotFoundError);
    expect(e.message).toContain('NoSuchDS');
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
    expect(await datastorePathExists(dst, { datacenter: DC, datastore: DS, path: `${VM}/` })).toBe(false);
  });

  it('name already taken at the destination: AlreadyExistsError, the existing VM left alone', async () => {
    const before = await listVms(dst);
    const e = (await copyVmBetweenHosts(src, dst, VM))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(AlreadyExistsError);
    expect((await listVms(dst)).map((v) => v.name)).toEqual(before.map((v) => v.name));
    expect(await datastorePathExists(dst, { datacenter: DC, datastore: DS, path: `${VM}/${VM}.vmx` })).toBe(true);
  });

  it('a failing task at the destination (RegisterVM) rolls back the copied files and restarts the source', async () => {
    // vcsim only registers a .vmx whose .nvram carries the new name, so a rename makes RegisterVM_Task fail.
    const e = (await copyVmBetweenHosts(src, dst, VM, { destinationName: 'renamed', destinationDirectory: 'renamed' }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(FileNotFoundError);
    expect(e.message).toContain('RegisterVM_Task');
    expect(e.details.rollback).toEqual(['delete destination directory: done', 'power source VM back on: done']);
    expect(await datastorePathExists(dst, { datacenter: DC, datastore: DS, path: 'renamed/' })).toBe(false);
    expect((await listVms(dst)).some((v) => v.name === 'renamed')).toBe(false);
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
    expect(await remoteSha(src, DISK)).toBe(diskSha);
  });

  it('source simulator killed mid-copy: transport error, destination cleaned, source files intact', async () => {
    await freeDestinationName();
    const e = (await copyVmBetweenHosts(src, dst, VM, {
      onProgress: (p) => {
        if (p.totalBytes > 64 * 1024 * 1024) hosts[0]!.child.kill('SIGKILL');
      },
    }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(EsxiTransportError);
    expect(e.details.rollback).toContain('delete destination directory: done');
    expect(await datastorePathExists(dst, { datacenter: DC, datastore: DS, path: `${VM}/` })).toBe(false);
    expect((await listVms(dst)).some((v) => v.name === VM)).toBe(false);
    expect(await localSha(diskOnHostDisk(hosts[0]!))).toBe(diskSha);
  });

  it('abort signal mid-copy: EsxiAbortedError, destination cleaned, source powered back on', async () => {
    await freeDestinationName();
    const controller = new AbortController();
    const e = (await copyVmBetweenHosts(src, dst, VM, {
      signal: controller.signal,
      onProgress: (p) => {
        if (p.totalBytes > 32 * 1024 * 1024) controller.abort();
      },
    }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(EsxiAbortedError);
    expect(e.details.rollback).toEqual(['delete destination directory: done', 'power source VM back on: done']);
    expect(await datastorePathExists(dst, { datacenter: DC, datastore: DS, path: `${VM}/` })).toBe(false);
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
  });

  it('destination simulator killed mid-copy: transport error, source powered back on and intact', async () => {
    await freeDestinationName();
    const e = (await copyVmBetweenHosts(src, dst, VM, {
      onProgress: (p) => {
        if (p.totalBytes > 64 * 1024 * 1024) hosts[1]!.child.kill('SIGKILL');
      },
    }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(EsxiTransportError);
    expect(e.details.rollback).toContain('power source VM back on: done');
    const source = await findVmByName(src, VM);
    expect(source.powerState).toBe('poweredOn');
    expect(await remoteSha(src, DISK)).toBe(diskSha);
  });
});

describe.skipIf(skipUnless('tool:go'))('preflightVmCopy and undoVmCopy between two vcsim processes', () => {
  let hosts: VcsimHost[] = [];
  let src: VimClient;
  let dst: VimClient;

  beforeAll(async () => {
    hosts = await startVcsim(2);
    [src, dst] = await Promise.all(hosts.map(connect)) as [VimClient, VimClient];
  });
  afterAll(async () => {
    await Promise.allSettled([src?.logout(), dst?.logout()]);
    await stopVcsim(hosts);
  });

  /** What a pre-flight must leave alone: the source's power state, the destination's VMs and the directory. */
  async function sidesNow(directory: string): Promise<[string, string[], boolean]> {
    return [
      (await findVmByName(src, VM)).powerState,
      (await listVms(dst)).map((v) => v.name).sort(),
      await datastorePathExists(dst, { datacenter: DC, datastore: DS, path: `${directory}/` }),
    ];
  }

  it('pre-flight finds every conflict the copy would, and changes nothing', async () => {
    const before = await sidesNow(VM);
    // vcsim starts both hosts with the same VMs: the name is taken at the destination.
    expect((await preflightVmCopy(src, dst, VM))._unsafeUnwrapErr()).toBeInstanceOf(AlreadyExistsError);
    const free = { destinationName: 'apm-free', destinationDirectory: 'apm-free' };
    const noDs = (await preflightVmCopy(src, dst, VM, { ...free, destinationDatastore: 'NoSuchDS' }))._unsafeUnwrapErr();
    expect(noDs).toBeInstanceOf(ObjectNotFoundError);
    expect(noDs.message).toContain('NoSuchDS');
    expect((await preflightVmCopy(src, dst, VM, { destinationName: 'apm-free' }))._unsafeUnwrapErr().message).toContain(`Directory [${DS}] ${VM} already exists`);
    expect((await preflightVmCopy(src, dst, VM, { ...free, destinationDirectory: '../x' }))._unsafeUnwrapErr()).toBeInstanceOf(UnsafeDatastorePathError);
    expect((await preflightVmCopy(src, dst, 'no-such-vm'))._unsafeUnwrapErr().code).toBe('ESXI_NOT_FOUND');
    const ok = (await preflightVmCopy(src, dst, VM, free))._unsafeUnwrap();
    expect(ok).toMatchObject({
      sourcePowerState: 'poweredOn',
      quiesce: 'power-off',
      destinationDatastore: DS,
      destinationName: 'apm-free',
      destinationVmx: `[${DS}] apm-free/${VM}.vmx`,
    });
    expect(ok.sourceVm).toEqual((await findVmByName(src, VM)).ref);
    expect((await preflightVmCopy(src, dst, VM, { ...free, quiesce: 'snapshot' }))._unsafeUnwrap().quiesce).toBe('snapshot');
    expect(await sidesNow(VM)).toEqual(before);
    expect(await sidesNow('apm-free')).toEqual([before[0], before[1], false]);
  });

  it('undo of a finished copy removes the copy and its directory and powers the source on again', async () => {
    const existing = await findVmByName(dst, VM);
    await powerOffVm(dst, existing.ref);
    await destroyEntity(dst, existing.ref);
    const report = (await copyVmBetweenHosts(src, dst, VM))._unsafeUnwrap();
    expect([report.destinationPowerState, (await findVmByName(src, VM)).powerState]).toEqual(['poweredOn', 'poweredOff']);
    const steps = (await undoVmCopy(src, dst, report))._unsafeUnwrap();
    expect(steps).toEqual(['power off destination VM: done', 'destroy destination VM: done', 'delete destination directory: done', 'power source VM back on: done']);
    expect((await listVms(dst)).some((v) => v.name === VM)).toBe(false);
    expect(await datastorePathExists(dst, { datacenter: DC, datastore: DS, path: `${VM}/` })).toBe(false);
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
    // Twice: the copy is gone, so its steps fail; the error says so and lists every step.
    const again = (await undoVmCopy(src, dst, report))._unsafeUnwrapErr();
    expect(EsxiError.isInstance(again)).toBe(true);
    expect(again.details.rollback).toHaveLength(4);
    expect((again.details.rollback as string[]).slice(2)).toEqual(['delete destination directory: done', 'power source VM back on: done']);
  });
});
