/**
 * OVF import (CreateImportSpec + ImportVApp + HttpNfcLease upload) against a real vcsim process,
 * the generated descriptor round-tripping through vcsim's CreateImportSpec, and the OVF
 * export/import migration with the local stand-in (test/esxi/vim-standin.ts, vcsim has no
 * ExportVm) as source and vcsim as destination.
 *
 * vcsim discards NFC uploads but logs `nfc POST <file>: transferred N bytes` on stderr; the
 * tests read that line as the server's own count of the bytes it received.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VimClient } from '../../src/esxi/client.js';
import { AlreadyExistsError, EsxiAbortedError, InvalidStateError, ProtocolError, UnsafeDatastorePathError } from '../../src/esxi/errors.js';
import { listVms } from '../../src/esxi/inventory.js';
import { resolveLeaseUrl } from '../../src/esxi/nfc-lease.js';
import { buildOvfDescriptor, describeVm, readVmHardware, type VmHardware } from '../../src/esxi/ovf-descriptor.js';
import { importOvf, importSpecToXml, OvfImportRejectedError, type ImportOvfInput } from '../../src/esxi/ovf-import.js';
import { exportImportVm } from '../../src/esxi/ovf-migrate.js';
import { getProperties } from '../../src/esxi/properties.js';
import { parseXml } from '../../src/esxi/xml.js';
import { InvalidInputError } from '../../src/errors.js';
import { skipUnless } from '../helpers/requirements.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../helpers/vcsim.js';
import { startStandin, type Standin } from './vim-standin.js';

const ONE_DISK_OVF = readFileSync(join(import.meta.dirname, 'fixtures', 'one-disk.ovf'), 'utf8');
const ONE_DISK_BYTES = 4 * 1024 * 1024; // the fixture's References size
const CHUNK = 64 * 1024;

/** A lazily generated stream of `size` bytes; `pulled()` tells how many bytes were produced so far. */
function generated(size: number, options: { delayMs?: number } = {}): { stream: Readable; pulled: () => number } {
  let produced = 0;
  async function* chunks() {
    while (produced < size) {
      const n = Math.min(CHUNK, size - produced);
      produced += n;
      if (options.delayMs) await sleep(options.delayMs);
      yield Buffer.alloc(n, produced & 0xff);
    }
  }
  return { stream: Readable.from(chunks(), { objectMode: false, highWaterMark: CHUNK }), pulled: () => produced };
}

function oneDiskInput(name: string, source: () => Readable, opened: { count: number } = { count: 0 }, size = ONE_DISK_BYTES): ImportOvfInput {
  return {
    descriptor: ONE_DISK_OVF,
    name,
    files: (path) => (path === 'disk-0.vmdk' ? { size, open: async () => (opened.count++, source()) } : undefined),
  };
}

describe('OVF helpers (no server)', () => {
  it('escapes names in the generated descriptor and keeps it well-formed', () => {
    const hw: VmHardware = {
      name: 'a&b <"quoted"> \'x\'',
      guestId: 'otherGuest',
      numCPU: 2,
      memoryMB: 128,
      version: 'vmx-13',
      controllers: [{ key: 1000, resourceType: 6, subType: 'lsilogic', busNumber: 0 }],
      disks: [{ key: 2000, controllerKey: 1000, unitNumber: 0, capacityBytes: 1 << 20, label: 'Hard <disk> 1' }],
    };
    const xml = buildOvfDescriptor(hw, () => ({ href: 'd&1.vmdk', size: 42 }));
    const root = parseXml(xml);
    const vs = root.children.find((c) => c.name === 'VirtualSystem');
    expect(vs?.children.find((c) => c.name === 'Name')?.text).toBe(hw.name);
    const file = root.children.find((c) => c.name === 'References')?.children[0];
    expect(file?.attrs['{http://schemas.dmtf.org/ovf/envelope/1}href']).toBe('d&1.vmdk');
    expect(xml).toContain('<rasd:ElementName>Hard &lt;disk&gt; 1</rasd:ElementName>');
  });

  it('refuses a disk on a controller it cannot describe', () => {
    const hw: VmHardware = { name: 'x', guestId: 'g', numCPU: 1, memoryMB: 4, version: undefined, controllers: [], disks: [{ key: 1, controllerKey: 99, unitNumber: 0, capacityBytes: 1, label: undefined }] };
    expect(() => buildOvfDescriptor(hw)).toThrow(ProtocolError);
  });

  it('writes the import spec back with xsi:type resolved by namespace, not by prefix', () => {
    const spec = parseXml(
      '<importSpec xmlns="urn:vim25" xmlns:X="http://www.w3.org/2001/XMLSchema-instance" xmlns:s="http://www.w3.org/2001/XMLSchema" xmlns:fake="urn:not-xsi" X:type="VirtualMachineImportSpec">' +
        '<configSpec><name>a&amp;b</name><extraConfig X:type="OptionValue"><key>k</key><value X:type="s:string">v</value></extraConfig></configSpec>' +
        '<resPoolEntity type="ResourcePool" fake:type="nope">pool-1</resPoolEntity></importSpec>',
    );
    expect(importSpecToXml(spec, 'spec')).toBe(
      '<spec xsi:type="VirtualMachineImportSpec"><configSpec><name>a&amp;b</name><extraConfig xsi:type="OptionValue"><key>k</key><value xsi:type="xsd:string">v</value></extraConfig></configSpec>' +
        '<resPoolEntity type="ResourcePool">pool-1</resPoolEntity></spec>',
    );
  });

  it('resolves a `*` lease host against the connected origin', () => {
    const origin = new URL('http://127.0.0.1:8989');
    expect(resolveLeaseUrl('https://*/nfc/l-1/disk-0.vmdk', origin).href).toBe('http://127.0.0.1:8989/nfc/l-1/disk-0.vmdk');
    expect(resolveLeaseUrl('https://*:902/nfc/x', origin).href).toBe('https://127.0.0.1:902/nfc/x');
    expect(resolveLeaseUrl('https://10.0.0.5/nfc/x', origin).host).toBe('10.0.0.5');
  });
});

describe.skipIf(skipUnless('tool:go'))('OVF import into vcsim', () => {
  let host: VcsimHost;
  let client: VimClient;
  let nfcLog = '';
  let standin: Standin | undefined;
  let standinClient: VimClient | undefined;

  beforeAll(async () => {
    [host] = (await startVcsim(1, { anyCredentials: true })) as [VcsimHost];
    host.child.stderr?.on('data', (c: Buffer) => {
      nfcLog += c.toString();
    });
    client = (await VimClient.connect({ url: host.url, username: 'any', password: 'any', insecureHttp: true }))._unsafeUnwrap();
  }, 120_000);

  afterAll(async () => {
    await client?.logout();
    if (host) await stopVcsim([host]);
  });

  afterEach(async () => {
    await standinClient?.logout();
    standinClient = undefined;
    await standin?.close();
    standin = undefined;
  });

  /** Bytes vcsim says it received for `<vm dir>/<file>` (sum over its `nfc POST` log lines). */
  const serverReceived = (vmName: string, file: string): number => {
    let total = 0;
    for (const m of nfcLog.matchAll(/nfc (?:POST|PUT) (\S+): transferred (\d+) bytes/g)) {
      if (m[1]?.endsWith(`/${vmName}/${file}`)) total += Number(m[2]);
    }
    return total;
  };
  const vmNames = async () => (await listVms(client)).map((v) => v.name);

  it('imports a one-disk OVF, streaming the disk, and the VM can be powered on', async () => {
    const name = 'ovf-one-disk';
    const source = generated(ONE_DISK_BYTES);
    const seen: number[] = [];
    let maxAhead = 0;
    const report = (await importOvf(client, oneDiskInput(name, () => source.stream), {
      powerOn: true,
      progressIntervalMs: 20,
      onBytes: (b) => {
        seen.push(b);
        maxAhead = Math.max(maxAhead, source.pulled() - b);
      },
    }))._unsafeUnwrap();
    expect(report.bytes).toBe(ONE_DISK_BYTES);
    expect(report.files).toEqual([{ path: 'disk-0.vmdk', deviceId: `/${name}/disk:0`, bytes: ONE_DISK_BYTES }]);
    expect(report.warnings).toEqual([]);
    // Counted in many steps, never all at once.
    expect(seen.length).toBeGreaterThanOrEqual(ONE_DISK_BYTES / CHUNK);
    expect(seen.at(-1)).toBe(ONE_DISK_BYTES);
    expect(maxAhead).toBeLessThan(ONE_DISK_BYTES);
    await vi_waitFor(() => serverReceived(name, 'disk-0.vmdk') === ONE_DISK_BYTES);
    const vm = (await listVms(client)).find((v) => v.name === name);
    expect(vm?.ref).toEqual(report.vm);
    expect(vm?.powerState).toBe('poweredOn');
    const props = await getProperties(client, report.vm, ['config.hardware.numCPU', 'config.hardware.memoryMB']);
    expect(props.get('config.hardware.numCPU')?.text).toBe('2');
    expect(props.get('config.hardware.memoryMB')?.text).toBe('64');
  });

  it('keeps memory bounded: a 32 MiB source is pulled only a few buffers ahead of the upload', async () => {
    const size = 32 * 1024 * 1024;
    const source = generated(size);
    let maxAhead = 0;
    const report = (await importOvf(client, oneDiskInput('ovf-bounded', () => source.stream, undefined, size), {
      onBytes: (b) => {
        maxAhead = Math.max(maxAhead, source.pulled() - b);
      },
    }))._unsafeUnwrap();
    expect(report.bytes).toBe(size);
    expect(maxAhead).toBeLessThan(4 * 1024 * 1024);
    await vi_waitFor(() => serverReceived('ovf-bounded', 'disk-0.vmdk') === size);
  });

  it('turns a descriptor the server rejects into OvfImportRejectedError and creates nothing', async () => {
    const before = await vmNames();
    const opened = { count: 0 };
    const input = { ...oneDiskInput('ovf-rejected', () => generated(ONE_DISK_BYTES).stream, opened), descriptor: ONE_DISK_OVF.replace('>lsilogic<', '>megaraid<') };
    const e = (await importOvf(client, input))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(OvfImportRejectedError);
    const rejected = e as OvfImportRejectedError;
    expect(rejected.code).toBe('ESXI_OVF_REJECTED');
    expect(rejected.problems[0]?.faultType).toBe('OvfUnsupportedType');
    expect(rejected.message).toContain('megaraid');
    expect(opened.count).toBe(0);
    expect(await vmNames()).toEqual(before);
  });

  it('aborts the lease and destroys the new VM when the caller aborts mid-upload', async () => {
    const before = await vmNames();
    const controller = new AbortController();
    const e = (await importOvf(client, oneDiskInput('ovf-aborted', () => generated(ONE_DISK_BYTES, { delayMs: 5 }).stream), {
      signal: controller.signal,
      onBytes: (b) => {
        if (b >= 1024 * 1024) controller.abort();
      },
    }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(EsxiAbortedError);
    const rollback = e.details.rollback as string[];
    expect(rollback[0]).toMatch(/^aborted lease /);
    expect(rollback[1]).toMatch(/^destroyed vm-/);
    expect(await vmNames()).toEqual(before);
    expect(serverReceived('ovf-aborted', 'disk-0.vmdk')).toBeLessThan(ONE_DISK_BYTES);
  });

  it('fails a source shorter than announced, and cleans up', async () => {
    const before = await vmNames();
    const e = (await importOvf(client, oneDiskInput('ovf-short', () => generated(ONE_DISK_BYTES - 1000).stream)))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e.message).toContain('source ended after');
    expect(await vmNames()).toEqual(before);
  });

  it('refuses a name that already exists with AlreadyExistsError before creating anything', async () => {
    const before = await vmNames();
    const opened = { count: 0 };
    const e = (await importOvf(client, oneDiskInput('ha-host_VM0', () => generated(ONE_DISK_BYTES).stream, opened)))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(AlreadyExistsError);
    expect(e.message).toContain('ha-host_VM0');
    expect(opened.count).toBe(0);
    expect(await vmNames()).toEqual(before);
  });

  it('rejects bad input with InvalidInputError naming the field', async () => {
    const ok = oneDiskInput('x', () => generated(1).stream);
    const empty = (await importOvf(client, { ...ok, name: '' }))._unsafeUnwrapErr();
    expect(empty).toBeInstanceOf(InvalidInputError);
    expect((empty as InvalidInputError).issues[0]?.path).toBe('name');
    const notXml = (await importOvf(client, { ...ok, descriptor: '<Envelope><References>' }))._unsafeUnwrapErr();
    expect(notXml).toBeInstanceOf(InvalidInputError);
    expect((notXml as InvalidInputError).issues[0]?.path).toBe('descriptor');
    const badSize = (await importOvf(client, { ...ok, name: 'ovf-bad-size', files: () => ({ size: -1, open: async () => generated(1).stream }) }))._unsafeUnwrapErr();
    expect(badSize).toBeInstanceOf(InvalidInputError);
    expect((badSize as InvalidInputError).issues[0]?.path).toBe('files(disk-0.vmdk).size');
    const badOption = (await importOvf(client, ok, { progressIntervalMs: 0 }))._unsafeUnwrapErr();
    expect(badOption).toBeInstanceOf(InvalidInputError);
    expect(await vmNames()).not.toContain('ovf-bad-size');
  });

  it('round-trips the generated descriptor of a vcsim VM through CreateImportSpec and ImportVApp', async () => {
    const vm = (await listVms(client)).find((v) => v.name === 'ha-host_VM1')!;
    const described = (await describeVm(client, vm.ref))._unsafeUnwrap();
    // vcsim has no CreateDescriptor, so this is the generated fallback.
    expect(described.source).toBe('generated');
    const hw = await readVmHardware(client, vm.ref);
    expect(hw.disks.length).toBe(1);
    const diskBytes = 512 * 1024;
    const report = (await importOvf(client, {
      descriptor: described.descriptor,
      name: 'ovf-roundtrip',
      files: (path) => (path === 'disk-0.vmdk' ? { size: diskBytes, open: async () => generated(diskBytes).stream } : undefined),
    }))._unsafeUnwrap();
    expect(report.warnings).toEqual([]);
    const copy = await readVmHardware(client, report.vm);
    expect(copy).toMatchObject({ name: 'ovf-roundtrip', guestId: hw.guestId, numCPU: hw.numCPU, memoryMB: hw.memoryMB, version: hw.version });
    expect(copy.disks.map((d) => d.capacityBytes)).toEqual(hw.disks.map((d) => d.capacityBytes));
  });

  describe('export from the stand-in, import into vcsim', () => {
    const DISK = 3 * 1024 * 1024 + 4096;
    const connectStandin = async (s: Standin) => (await VimClient.connect({ url: s.url, username: 'root', password: 'pw', insecureHttp: true }))._unsafeUnwrap();

    it('streams the exported disk into the import and completes both leases', async () => {
      standin = await startStandin({ diskBytes: DISK, initializingPolls: 1, chunkDelayMs: 1, vm: { name: 'web-1', numCPU: 2, memoryMB: 256 } });
      standinClient = await connectStandin(standin);
      let lastBytes = 0;
      const report = (await exportImportVm(standinClient, client, 'web-1', { targetName: 'web-1-ovf', progressIntervalMs: 20, onBytes: (b) => (lastBytes = b) }))._unsafeUnwrap();
      expect(report.descriptorSource).toBe('generated');
      expect(report.bytes).toBe(DISK);
      expect(lastBytes).toBe(DISK);
      expect(standin.completed).toBe(true);
      expect(standin.aborted).toBe(false);
      expect(standin.downloadsWithoutCookie).toBe(0);
      expect(standin.progress.length).toBeGreaterThan(0);
      await vi_waitFor(() => serverReceived('web-1-ovf', 'disk-0.vmdk') === DISK);
      const copy = await readVmHardware(client, report.vm);
      expect(copy).toMatchObject({ name: 'web-1-ovf', numCPU: 2, memoryMB: 256, guestId: 'otherLinux64Guest' });
      expect(copy.disks.map((d) => d.capacityBytes)).toEqual([DISK]);
    });

    it('uses CreateDescriptor when the source has it', async () => {
      const descriptor = ONE_DISK_OVF.replace('ovf:size="4194304"', `ovf:size="${DISK}"`);
      standin = await startStandin({ diskBytes: DISK, initializingPolls: 0, vm: { name: 'web-2' }, createDescriptor: { descriptor } });
      standinClient = await connectStandin(standin);
      const report = (await exportImportVm(standinClient, client, 'web-2'))._unsafeUnwrap();
      expect(report.descriptorSource).toBe('CreateDescriptor');
      expect(standin.createDescriptorFiles).toEqual([['disk-0.vmdk']]);
      expect(report.bytes).toBe(DISK);
      // The fixture's CPU/memory came through, not the stand-in's configuration.
      const copy = await readVmHardware(client, report.vm);
      expect(copy).toMatchObject({ numCPU: 2, memoryMB: 64 });
    });

    it('falls back to the generated descriptor on a NotImplemented fault', async () => {
      standin = await startStandin({ diskBytes: 8192, initializingPolls: 0, vm: { name: 'web-3' }, createDescriptor: 'notImplemented' });
      standinClient = await connectStandin(standin);
      const report = (await exportImportVm(standinClient, client, 'web-3'))._unsafeUnwrap();
      expect(report.descriptorSource).toBe('generated');
    });

    it('aborts both leases and leaves nothing at the destination when the source download is cut', async () => {
      const before = await vmNames();
      standin = await startStandin({ diskBytes: DISK, initializingPolls: 0, vm: { name: 'web-4' }, failDownloadAfterBytes: 1024 * 1024 });
      standinClient = await connectStandin(standin);
      const e = (await exportImportVm(standinClient, client, 'web-4'))._unsafeUnwrapErr();
      expect(e.code).toMatch(/^ESXI_(TRANSPORT|PROTOCOL)$/);
      expect(standin.aborted).toBe(true);
      expect(standin.completed).toBe(false);
      expect((e.details.rollback as string[]).some((s) => s.startsWith('destroyed vm-'))).toBe(true);
      expect(await vmNames()).toEqual(before);
    });

    it('refuses a source lease whose targetId climbs out (../): no descriptor, no import, source lease aborted', async () => {
      const before = await vmNames();
      standin = await startStandin({ diskBytes: 4096, initializingPolls: 0, vm: { name: 'web-6' }, targetId: '../../other-vm/other-vm-flat.vmdk', createDescriptor: { descriptor: ONE_DISK_OVF } });
      standinClient = await connectStandin(standin);
      const e = (await exportImportVm(standinClient, client, 'web-6'))._unsafeUnwrapErr();
      expect(e).toBeInstanceOf(UnsafeDatastorePathError);
      expect(e.code).toBe('ESXI_UNSAFE_PATH');
      expect(standin.createDescriptorFiles).toEqual([]);
      expect(standin.downloads).toBe(0);
      expect(standin.aborted).toBe(true);
      expect(await vmNames()).toEqual(before);
    });

    it('refuses a powered-on source without opening a lease', async () => {
      standin = await startStandin({ diskBytes: 10, vm: { name: 'web-5', powerState: 'poweredOn' } });
      standinClient = await connectStandin(standin);
      const e = (await exportImportVm(standinClient, client, 'web-5'))._unsafeUnwrapErr();
      expect(e).toBeInstanceOf(InvalidStateError);
      expect(standin.aborted).toBe(false);
      expect(standin.completed).toBe(false);
    });
  });
});

/** Wait until `check()` holds (vcsim writes its log line just after answering the upload). */
async function vi_waitFor(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(20);
  }
}
