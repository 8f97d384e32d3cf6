/**
 * The `esxi-vm` transfer choice (`vm.transfer`) between real vcsim processes: `auto` falls back
 * to the datastore copy because vcsim has no ExportVm, a forced `export-import` fails typed and
 * leaves the source running and the destination clean, and `snapshot` + `export-import` is
 * refused before anything changes. The export/import happy path runs at the moveHostingVm level
 * with the local stand-in (test/esxi/vim-standin.ts, which has ExportVm) as the source host.
 */
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrate } from '../../src/index.js';
import { VimClient } from '../../src/esxi/client.js';
import { datastorePathExists, putDatastoreFile } from '../../src/esxi/datastore-http.js';
import { MethodNotSupportedError } from '../../src/esxi/errors.js';
import { findVmByName, listVms } from '../../src/esxi/inventory.js';
import { destroyEntity, powerOffVm } from '../../src/esxi/operations.js';
import { getProperties } from '../../src/esxi/properties.js';
import { moveHostingVm, settleSourceVm, type HostingVm } from '../../src/methods/esxi-vm/hosting-vm.js';
import { InvalidInputError } from '../../src/errors.js';
import { diskStream, remoteSha as remoteShaOf } from '../helpers/datastore-bytes.js';
import { skipUnless } from '../helpers/requirements.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../helpers/vcsim.js';
import { startStandin, type Standin } from '../esxi/vim-standin.js';
import { withSysvIpc } from '../policy/profiles.js';

const DC = 'ha-datacenter';
const DS = 'LocalDS_0';
const VM = 'ha-host_VM0';
const DISK = `${VM}/disk1-flat.vmdk`;
const DISK_BYTES = 16 * 1024 * 1024;

const remoteSha = (client: VimClient, path: string) => remoteShaOf(client, { datacenter: DC, datastore: DS, path });

describe.skipIf(skipUnless('tool:go'))('esxi-vm transfer choice between two vcsim hosts', () => {
  let hosts: VcsimHost[] = [];
  let clients: VimClient[] = [];
  let standin: Standin | undefined;
  const endpoint = (h: VcsimHost) => ({ url: h.url, username: h.username, password: h.password, insecureHttp: true });
  const connect = async (h: VcsimHost) => {
    const c = (await VimClient.connect(endpoint(h)))._unsafeUnwrap();
    clients.push(c);
    return c;
  };
  const hostingVm = (extra: Partial<HostingVm> = {}): HostingVm => ({ source: endpoint(hosts[0]!), destination: endpoint(hosts[1]!), name: VM, ...extra });
  let diskSha = '';

  beforeEach(async () => {
    hosts = await startVcsim(2);
    const src = await connect(hosts[0]!);
    const hash = createHash('sha256');
    await putDatastoreFile(src, { datacenter: DC, datastore: DS, path: DISK }, diskStream(DISK_BYTES, hash), DISK_BYTES);
    diskSha = hash.digest('hex');
    // vcsim starts every host with the same VM names: free the name at the destination.
    const dst = await connect(hosts[1]!);
    const existing = await findVmByName(dst, VM);
    await powerOffVm(dst, existing.ref);
    await destroyEntity(dst, existing.ref);
  });
  afterEach(async () => {
    await Promise.allSettled(clients.map((c) => c.logout()));
    clients = [];
    await standin?.close();
    standin = undefined;
    await stopVcsim(hosts);
  });

  /** The destination holds neither a VM of that name nor its directory. */
  const expectDestinationClean = async (dst: VimClient) => {
    expect((await listVms(dst)).map((v) => v.name)).not.toContain(VM);
    expect(await datastorePathExists(dst, { datacenter: DC, datastore: DS, path: `${VM}/` })).toBe(false);
  };

  it("'auto' falls back to the datastore copy (vcsim has no ExportVm), bit-exact, powered on at the destination", async () => {
    const progress: number[] = [];
    const result = await migrate({
      target: { profile: withSysvIpc() },
      vm: hostingVm({ transfer: 'auto' }),
      onProgress: (p) => void (p.phase === 'transfer' && p.bytesSent !== undefined && progress.push(p.bytesSent)),
    });
    if (result.isErr()) throw result.error;
    const vm = result.value.vm!;
    expect(vm.transfer).toBe('datastore-copy');
    expect(vm.fallbackReason).toMatch(/no ExportVm/);
    expect(vm.fallbackReason).toContain('MethodNotFound');
    // The source was powered off once, for the export attempt, and the copy used that.
    expect(vm.quiesce).toBe('power-off');
    expect(vm.powerState).toBe('poweredOn');
    expect(result.value.bytesSent).toBeGreaterThanOrEqual(DISK_BYTES);
    expect(progress.at(-1)).toBe(result.value.bytesSent);
    const dst = await connect(hosts[1]!);
    expect(await remoteSha(dst, DISK)).toBe(diskSha);
    expect((await findVmByName(dst, VM)).powerState).toBe('poweredOn');
    // keep-running: the source VM, powered off for the move, runs again.
    expect(result.value.source.action).toBe('kept-running');
    const src = await connect(hosts[0]!);
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
  });

  it("forced 'export-import' against vcsim fails with MethodNotSupportedError; the source runs again, the destination is clean", async () => {
    const result = await migrate({ target: { profile: withSysvIpc() }, vm: hostingVm({ transfer: 'export-import' }) });
    const error = result._unsafeUnwrapErr();
    expect(error).toBeInstanceOf(MethodNotSupportedError);
    expect(error.code).toBe('ESXI_METHOD_NOT_SUPPORTED');
    expect(error.message).toMatch(/^ExportVm /);
    expect(error.details.rollback).toEqual(['power source VM back on: done']);
    const src = await connect(hosts[0]!);
    expect((await findVmByName(src, VM)).powerState).toBe('poweredOn');
    await expectDestinationClean(await connect(hosts[1]!));
  });

  it("'snapshot' with 'export-import' is refused before anything changes", async () => {
    const src = await connect(hosts[0]!);
    const source = await findVmByName(src, VM);
    const result = await migrate({ target: { profile: withSysvIpc() }, vm: hostingVm({ transfer: 'export-import', quiesce: 'snapshot' }) });
    const error = result._unsafeUnwrapErr();
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error.code).toBe('INVALID_INPUT');
    expect((error as InvalidInputError).issues[0]?.path).toBe('vm.quiesce');
    expect(error.message).toContain('ExportVm needs the VM powered off');
    // Same refusal from moveHostingVm itself (no session is even needed to refuse).
    const direct = await moveHostingVm(hostingVm({ transfer: 'export-import', quiesce: 'snapshot' }), { source: src, sizeBytes: 0 });
    expect(direct._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    const after = await getProperties(src, source.ref, ['runtime.powerState', 'snapshot']);
    expect(after.get('runtime.powerState')?.text.trim()).toBe('poweredOn');
    expect(after.get('snapshot')).toBeUndefined();
    await expectDestinationClean(await connect(hosts[1]!));
  });

  it("'auto' with quiesce 'snapshot' of a running VM goes straight to the datastore copy and leaves the source running", async () => {
    const result = await migrate({ target: { profile: withSysvIpc() }, vm: hostingVm({ transfer: 'auto', quiesce: 'snapshot' }) });
    if (result.isErr()) throw result.error;
    expect(result.value.vm).toMatchObject({ transfer: 'datastore-copy', quiesce: 'snapshot', powerState: 'poweredOn', warnings: [] });
    expect(result.value.vm!.fallbackReason).toContain("quiesce 'snapshot' keeps the source running");
    expect(result.value.source.action).toBe('kept-running');
    const dst = await connect(hosts[1]!);
    expect(await remoteSha(dst, DISK)).toBe(diskSha);
  });

  it('an unknown transfer is refused with INVALID_INPUT naming vm.transfer', async () => {
    const result = await migrate({ target: { profile: withSysvIpc() }, vm: hostingVm({ transfer: 'rsync' as never }), dryRun: true });
    const error = result._unsafeUnwrapErr() as InvalidInputError;
    expect(error.code).toBe('INVALID_INPUT');
    expect(error.issues[0]?.path).toBe('vm.transfer');
  });

  describe('export/import from the stand-in (it has ExportVm) into vcsim', () => {
    const EXPORTED = 3 * 1024 * 1024 + 4096;
    const connectStandin = async (s: Standin) => {
      const c = (await VimClient.connect({ url: s.url, username: 'root', password: 'pw', insecureHttp: true }))._unsafeUnwrap();
      clients.push(c);
      return c;
    };
    const standinVm = (name: string, transfer: HostingVm['transfer']): HostingVm => ({
      source: { url: standin!.url, username: 'root', password: 'pw', insecureHttp: true },
      destination: endpoint(hosts[1]!),
      name,
      transfer,
    });

    it("'auto' takes the export/import, powers the copy on, and reports it in the move report's shape", async () => {
      standin = await startStandin({ diskBytes: EXPORTED, initializingPolls: 1, chunkDelayMs: 1, vm: { name: 'web-1', numCPU: 2, memoryMB: 256 } });
      const src = await connectStandin(standin);
      const dst = await connect(hosts[1]!);
      const sessions = { source: src, destination: dst, sizeBytes: EXPORTED };
      const seen: Array<[number, number]> = [];
      const moved = await moveHostingVm(standinVm('web-1', 'auto'), sessions, { onBytes: (b, t) => seen.push([b, t]) });
      if (moved.isErr()) throw moved.error;
      const report = moved.value;
      expect(report.transfer).toBe('export-import');
      expect(report.fallbackReason).toBeUndefined();
      expect(report.sentBytes).toBe(EXPORTED);
      expect(report.files).toEqual([{ path: 'disk-0.vmdk', size: EXPORTED }]);
      expect(report.destinationPowerState).toBe('poweredOn');
      // The stand-in's datastore (ds1) is not at vcsim: the import took the destination's first.
      expect(report.destinationVmx.startsWith(`[${DS}] `)).toBe(true);
      expect(report).toMatchObject({ sourceWasPoweredOn: false, quiesce: 'none', sourceLeftPoweredOn: false, warnings: [] });
      expect(seen.length).toBeGreaterThan(1);
      expect(seen.at(-1)).toEqual([EXPORTED, EXPORTED]);
      expect(standin.completed).toBe(true);
      const copy = await findVmByName(dst, 'web-1');
      expect(copy.ref).toEqual(report.destinationVm);
      expect(copy.powerState).toBe('poweredOn');
      // A source that was off stays off, whatever the policy.
      expect((await settleSourceVm(sessions, report, 'keep-running'))._unsafeUnwrap()).toBe('stopped');
    });

    it("'export-import' of a running source powers it off for the export; keep-running powers it on after", async () => {
      standin = await startStandin({ diskBytes: EXPORTED, initializingPolls: 0, powerTasks: true, vm: { name: 'web-3', powerState: 'poweredOn' } });
      const src = await connectStandin(standin);
      const dst = await connect(hosts[1]!);
      const sessions = { source: src, destination: dst, sizeBytes: EXPORTED };
      const moved = await moveHostingVm(standinVm('web-3', 'export-import'), sessions);
      if (moved.isErr()) throw moved.error;
      expect(moved.value).toMatchObject({ transfer: 'export-import', sourceWasPoweredOn: true, quiesce: 'power-off', sourceLeftPoweredOn: false, destinationPowerState: 'poweredOn' });
      expect(standin.powerChanges).toEqual(['poweredOff']);
      expect((await settleSourceVm(sessions, moved.value, 'keep-running'))._unsafeUnwrap()).toBe('kept-running');
      expect(standin.powerChanges).toEqual(['poweredOff', 'poweredOn']);
    });

    it('a failure mid-export powers a source it powered off back on, and leaves no VM at the destination', async () => {
      standin = await startStandin({ diskBytes: EXPORTED, initializingPolls: 0, powerTasks: true, vm: { name: 'web-4', powerState: 'poweredOn' }, failDownloadAfterBytes: 1024 * 1024 });
      const src = await connectStandin(standin);
      const dst = await connect(hosts[1]!);
      const before = (await listVms(dst)).map((v) => v.name);
      const moved = await moveHostingVm(standinVm('web-4', 'auto'), { source: src, destination: dst, sizeBytes: EXPORTED });
      const error = moved._unsafeUnwrapErr();
      // Not a missing ExportVm: 'auto' does not fall back after the export started.
      expect(error.code).toMatch(/^ESXI_(TRANSPORT|PROTOCOL)$/);
      expect(standin.powerChanges).toEqual(['poweredOff', 'poweredOn']);
      expect(error.details.rollback).toContain('power source VM back on: done');
      expect(standin.aborted).toBe(true);
      expect((await listVms(dst)).map((v) => v.name)).toEqual(before);
    });

    it("a cut export download fails the forced 'export-import' and leaves no VM at the destination", async () => {
      standin = await startStandin({ diskBytes: EXPORTED, initializingPolls: 0, vm: { name: 'web-2' }, failDownloadAfterBytes: 1024 * 1024 });
      const src = await connectStandin(standin);
      const dst = await connect(hosts[1]!);
      const before = (await listVms(dst)).map((v) => v.name);
      const moved = await moveHostingVm(standinVm('web-2', 'export-import'), { source: src, destination: dst, sizeBytes: EXPORTED });
      const error = moved._unsafeUnwrapErr();
      expect(error.code).toMatch(/^ESXI_(TRANSPORT|PROTOCOL)$/);
      expect(standin.aborted).toBe(true);
      expect((error.details.rollback as string[]).some((s) => s.startsWith('destroyed vm-'))).toBe(true);
      expect((await listVms(dst)).map((v) => v.name)).toEqual(before);
    });
  });
});
