/**
 * migrate() end to end with the esxi-vm method between two vcsim processes: a FreeBSD 9.2
 * program using SysV IPC can only move as a VM; the plan measures the VM (layoutEx), the VM is
 * copied with a 64 MiB disk of real bytes, registered and powered on at the second host, and the
 * report shows estimated vs sent bytes.
 */
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrate, planMigration } from '../../src/index.js';
import { VimClient } from '../../src/esxi/client.js';
import { putDatastoreFile } from '../../src/esxi/datastore-http.js';
import { findVmByName } from '../../src/esxi/inventory.js';
import { destroyEntity, powerOffVm } from '../../src/esxi/operations.js';
import { getProperties } from '../../src/esxi/properties.js';
import { diskStream, remoteSha as remoteShaOf } from '../helpers/datastore-bytes.js';
import { skipUnless } from '../helpers/requirements.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../helpers/vcsim.js';
import { withSysvIpc } from '../policy/profiles.js';

const DC = 'ha-datacenter';
const DS = 'LocalDS_0';
const VM = 'ha-host_VM0';
const DISK = `${VM}/disk1-flat.vmdk`;
const DISK_BYTES = 64 * 1024 * 1024;

const remoteSha = (client: VimClient, path: string) => remoteShaOf(client, { datacenter: DC, datastore: DS, path });

describe.skipIf(skipUnless('tool:go'))('migrate() with esxi-vm between two vcsim hosts', () => {
  let hosts: VcsimHost[] = [];
  const endpoint = (h: VcsimHost) => ({ url: h.url, username: h.username, password: h.password, insecureHttp: true });
  let diskSha = '';

  beforeEach(async () => {
    hosts = await startVcsim(2);
    const src = (await VimClient.connect(endpoint(hosts[0]!)))._unsafeUnwrap();
    const hash = createHash('sha256');
    await putDatastoreFile(src, { datacenter: DC, datastore: DS, path: DISK }, diskStream(DISK_BYTES, hash), DISK_BYTES);
    diskSha = hash.digest('hex');
    await src.logout();
    // vcsim starts every host with the same VM names: free the name at the destination.
    const dst = (await VimClient.connect(endpoint(hosts[1]!)))._unsafeUnwrap();
    const existing = await findVmByName(dst, VM);
    await powerOffVm(dst, existing.ref);
    await destroyEntity(dst, existing.ref);
    await dst.logout();
  });
  afterEach(() => stopVcsim(hosts));

  it('plans esxi-vm for SysV IPC on FreeBSD 9.2, moves the VM bit-exact and powers it on', async () => {
    const phases: string[] = [];
    const result = await migrate({
      target: { profile: withSysvIpc() },
      vm: { source: endpoint(hosts[0]!), destination: endpoint(hosts[1]!), name: VM },
      onProgress: (p) => void (phases.includes(p.phase) || phases.push(p.phase)),
    });
    if (result.isErr()) throw result.error;
    const report = result.value;
    expect(report.method).toBe('esxi-vm');
    const vmCandidate = report.plan.candidates.find((c) => c.method === 'esxi-vm')!;
    // The estimate is the VM's measured size, not the paper's 2098 MB.
    expect(vmCandidate.estimate.measured).toBe(true);
    expect(report.estimatedBytes).toBeGreaterThanOrEqual(DISK_BYTES);
    expect(report.bytesSent).toBeGreaterThanOrEqual(DISK_BYTES);
    expect(Math.abs(report.bytesSent - report.estimatedBytes) / report.estimatedBytes).toBeLessThan(0.02);
    expect(report.vm!.powerState).toBe('poweredOn');
    // The VM is measured in its own phase (the plan does no I/O); activate, start and health have nothing left
    // to do after the move powered the copy on and verified it, and still run, as for every method.
    expect(phases).toEqual(['profile', 'measure', 'plan', 'preflight', 'transfer', 'activate', 'start', 'health', 'source']);
    const dst = (await VimClient.connect(endpoint(hosts[1]!)))._unsafeUnwrap();
    expect(await remoteSha(dst, DISK)).toBe(diskSha);
    const copy = await findVmByName(dst, VM);
    expect(copy.powerState).toBe('poweredOn');
    // The source VM still exists, powered on again (keep-running is the default source policy).
    const src = (await VimClient.connect(endpoint(hosts[0]!)))._unsafeUnwrap();
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
    expect(report.source.action).toBe('kept-running');
  });

  it('quiesce by snapshot: the source VM runs through the copy, then the stop policy powers it off', async () => {
    const src = (await VimClient.connect(endpoint(hosts[0]!)))._unsafeUnwrap();
    const source = await findVmByName(src, VM);
    let during: Promise<string | undefined> | undefined;
    const result = await migrate({
      target: { profile: withSysvIpc() },
      vm: { source: endpoint(hosts[0]!), destination: endpoint(hosts[1]!), name: VM, quiesce: 'snapshot' },
      sourcePolicy: 'stop',
      onProgress: (p) => {
        if (p.phase === 'transfer' && !during && (p.bytesSent ?? 0) > 8 * 1024 * 1024) {
          during = getProperties(src, source.ref, ['runtime.powerState']).then((m) => m.get('runtime.powerState')?.text.trim());
        }
      },
    });
    if (result.isErr()) throw result.error;
    expect(await during).toBe('poweredOn');
    expect(result.value.vm).toMatchObject({ quiesce: 'snapshot', powerState: 'poweredOn', warnings: [] });
    expect(result.value.source.action).toBe('stopped');
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOff');
    const dst = (await VimClient.connect(endpoint(hosts[1]!)))._unsafeUnwrap();
    expect(await remoteSha(dst, DISK)).toBe(diskSha);
    await Promise.allSettled([src.logout(), dst.logout()]);
  });

  it('without a named VM, esxi-vm is not a candidate and the plan says why', async () => {
    const result = await migrate({ target: { profile: withSysvIpc() }, dryRun: true });
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('NO_ALLOWED_METHOD');
    expect(error.message).toContain('no such VM was named');
    expect(planMigration(withSysvIpc(), { hostingVm: false }).isErr()).toBe(true);
  });

  it('a wrong password at the destination fails pre-flight; the source VM is untouched', async () => {
    const result = await migrate({
      target: { profile: withSysvIpc() },
      vm: { source: endpoint(hosts[0]!), destination: { ...endpoint(hosts[1]!), password: 'wrong' }, name: VM },
    });
    expect(result._unsafeUnwrapErr().code).toMatch(/LOGIN/);
    const src = (await VimClient.connect(endpoint(hosts[0]!)))._unsafeUnwrap();
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
  });
});
