/**
 * The VM copy's two harder paths, between two vcsim processes reached through session proxies
 * (test/helpers/session-proxy.ts adds ESXi's 401 on `/folder` for an expired session, which
 * vcsim leaves out):
 * - `quiesce: 'snapshot'`: the source keeps running, a snapshot freezes its disks during the
 *   copy and is removed afterwards, on success and on failure;
 * - sessions that expire mid-copy: the copy logs in again and finishes; keep-alive calls run.
 */
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VimClient } from '../../src/esxi/client.js';
import { openDatastoreFile, putDatastoreFile } from '../../src/esxi/datastore-http.js';
import { EsxiTransportError, NotAuthenticatedError } from '../../src/esxi/errors.js';
import { findVmByName, getHostInventory } from '../../src/esxi/inventory.js';
import { copyVmBetweenHosts, findSnapshotByName } from '../../src/esxi/migrate-vm.js';
import { createSnapshot, destroyEntity, listDatastoreDirectory, powerOffVm, removeSnapshot } from '../../src/esxi/operations.js';
import { getProperties } from '../../src/esxi/properties.js';
import type { MoRef } from '../../src/esxi/soap.js';
import { diskStream, remoteSha } from '../helpers/datastore-bytes.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSessionProxy, type SessionProxy } from '../helpers/session-proxy.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../helpers/vcsim.js';

const DC = 'ha-datacenter';
const DS = 'LocalDS_0';
const VM = 'ha-host_VM0';
const DISK = { datacenter: DC, datastore: DS, path: `${VM}/disk1-flat.vmdk` };
const DISK_BYTES = 64 * 1024 * 1024;

describe.skipIf(skipUnless('tool:go'))('VM copy: snapshot quiesce and session renewal (two vcsims behind session proxies)', () => {
  let hosts: VcsimHost[] = [];
  let proxies: SessionProxy[] = [];
  let src: VimClient;
  let dst: VimClient;
  let diskSha: string;

  const connect = async (proxy: SessionProxy, host: VcsimHost) =>
    (await VimClient.connect({ url: proxy.url, username: host.username, password: host.password, insecureHttp: true }))._unsafeUnwrap();
  const powerState = async (client: VimClient, ref: MoRef) => (await getProperties(client, ref, ['runtime.powerState'])).get('runtime.powerState')?.text.trim();
  const snapshotNames = async (client: VimClient): Promise<string[]> => {
    const inv = await getHostInventory(client);
    const files = await listDatastoreDirectory(client, inv.datastores.find((d) => d.name === DS)!.browser!, `[${DS}] ${VM}`);
    return files.map((f) => f.path).filter((p) => p.endsWith('.vmsn'));
  };

  beforeEach(async () => {
    hosts = await startVcsim(2);
    proxies = await Promise.all(hosts.map((h) => startSessionProxy(h.hostPort)));
    src = await connect(proxies[0]!, hosts[0]!);
    dst = await connect(proxies[1]!, hosts[1]!);
    const hash = createHash('sha256');
    await putDatastoreFile(src, DISK, diskStream(DISK_BYTES, hash), DISK_BYTES);
    diskSha = hash.digest('hex');
    // vcsim starts every host with the same VM names: free the name at the destination.
    const existing = await findVmByName(dst, VM);
    await powerOffVm(dst, existing.ref);
    await destroyEntity(dst, existing.ref);
  });
  afterEach(async () => {
    await Promise.allSettled([src?.logout(), dst?.logout()]);
    await Promise.allSettled(proxies.map((p) => p.close()));
    await stopVcsim(hosts);
  });

  it('snapshot: copies while the source keeps running, then removes the snapshot', async () => {
    const source = await findVmByName(src, VM);
    expect(source.powerState).toBe('poweredOn');
    let during: Promise<[string | undefined, string | undefined]> | undefined;
    const report = (await copyVmBetweenHosts(src, dst, VM, {
      quiesce: 'snapshot',
      sessionKeepAliveMs: 50,
      onProgress: (p) => {
        // Mid-copy: the source runs and carries our snapshot.
        if (!during && p.totalBytes > 8 * 1024 * 1024) {
          during = getProperties(src, source.ref, ['runtime.powerState', 'snapshot.currentSnapshot']).then((m) => [
            m.get('runtime.powerState')?.text.trim(),
            m.get('snapshot.currentSnapshot')?.text.trim(),
          ]);
        }
      },
    }))._unsafeUnwrap();
    const [stateDuring, snapshotDuring] = await during!;
    expect(stateDuring).toBe('poweredOn');
    expect(snapshotDuring).toBeTruthy();
    expect(report.quiesce).toBe('snapshot');
    expect(report.sourceLeftPoweredOn).toBe(true);
    expect(report.warnings).toEqual([]);
    expect(report.destinationPowerState).toBe('poweredOn');
    expect(await remoteSha(dst, DISK)).toBe(diskSha);
    // Source: still running, snapshot gone (property and its .vmsn file); nothing of it copied.
    expect(await powerState(src, source.ref)).toBe('poweredOn');
    expect((await getProperties(src, source.ref, ['snapshot'])).get('snapshot')).toBeUndefined();
    expect(await snapshotNames(src)).toEqual([]);
    expect(await snapshotNames(dst)).toEqual([]);
    expect(report.files.some((f) => f.path.endsWith('.vmsn'))).toBe(false);
    // Keep-alive ran on both sessions during the copy.
    expect(proxies[0]!.currentTimeCalls).toBeGreaterThan(0);
    expect(proxies[1]!.currentTimeCalls).toBeGreaterThan(0);
  });

  it('snapshot: destination killed mid-copy removes the snapshot; the source never stopped', async () => {
    const source = await findVmByName(src, VM);
    const e = (await copyVmBetweenHosts(src, dst, VM, {
      quiesce: 'snapshot',
      onProgress: (p) => {
        if (p.totalBytes > 16 * 1024 * 1024) hosts[1]!.child.kill('SIGKILL');
      },
    }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(EsxiTransportError);
    expect(e.details.rollback).toContain('remove source snapshot: done');
    expect(e.details.rollback).not.toContain('power source VM back on: done');
    expect(await powerState(src, source.ref)).toBe('poweredOn');
    expect((await getProperties(src, source.ref, ['snapshot'])).get('snapshot')).toBeUndefined();
    expect(await snapshotNames(src)).toEqual([]);
    expect(await remoteSha(src, DISK)).toBe(diskSha);
  });

  it('finds a snapshot by name anywhere in the tree (how rollback finds one whose task timed out)', async () => {
    const source = await findVmByName(src, VM);
    const first = await createSnapshot(src, source.ref, { name: 'apm-first' });
    const second = await createSnapshot(src, source.ref, { name: 'apm-second' }); // a child of the first
    expect(await findSnapshotByName(src, source.ref, 'apm-first')).toEqual(first);
    expect(await findSnapshotByName(src, source.ref, 'apm-second')).toEqual(second);
    expect(await findSnapshotByName(src, source.ref, 'apm-none')).toBeUndefined();
    await removeSnapshot(src, second!);
    await removeSnapshot(src, first!);
    expect(await findSnapshotByName(src, source.ref, 'apm-first')).toBeUndefined();
  });

  it('a download with an expired session logs in again; an upload gets a typed NotAuthenticatedError', async () => {
    proxies[0]!.expireSessions();
    const download = await openDatastoreFile(src, DISK);
    download.body.destroy();
    expect(download.size).toBe(DISK_BYTES);
    expect(proxies[0]!.refused401).toBe(1);
    expect(proxies[0]!.logins).toBe(2);

    proxies[1]!.expireSessions();
    const upload = putDatastoreFile(dst, { ...DISK, path: 'x/small.bin' }, diskStream(4096, createHash('sha256')), 4096);
    await expect(upload).rejects.toBeInstanceOf(NotAuthenticatedError);
  });

  it('both sessions expire mid-copy: the copy logs in again, finishes bit-exact', async () => {
    let expired = false;
    const result = await copyVmBetweenHosts(src, dst, VM, {
      onProgress: () => {
        if (!expired) {
          expired = true;
          proxies[0]!.expireSessions();
          proxies[1]!.expireSessions();
        }
      },
    });
    if (result.isErr()) throw result.error;
    const report = result.value;
    expect(report.destinationPowerState).toBe('poweredOn');
    expect(await remoteSha(dst, DISK)).toBe(diskSha);
    // Later /folder requests on both sides met an expired session; both logged in again, and the
    // refused upload was sent once more.
    expect(proxies[0]!.refused401).toBeGreaterThan(0);
    expect(proxies[1]!.refused401).toBeGreaterThan(0);
    expect(report.sessionRenewals).toBeGreaterThanOrEqual(1);
    expect(proxies[0]!.logins).toBeGreaterThanOrEqual(2);
    expect(proxies[1]!.logins).toBeGreaterThanOrEqual(2);
  });
});
