/**
 * ESXi datastore copy benchmark between two vcsim processes (test/helpers/vcsim.ts):
 * 1. throughput of our streamed GET -> PUT copy of a 256 MiB file vs `curl GET | curl PUT` of the
 *    same file in the same run (best of 5 interleaved pairs; ratio > 1 means faster than curl);
 * 2. peak RSS of this process while copyVmBetweenHosts moves a VM with that 1 GiB disk (ratio is
 *    the 200 MB budget divided by the peak, so >= 1 meets the goal).
 * Run alone with `npx tsx bench/esxi.ts`.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { Readable } from 'node:stream';
import { VimClient } from '../src/esxi/client.js';
import { datastoreFileUrl, openDatastoreFile, putDatastoreFile } from '../src/esxi/datastore-http.js';
import { findVmByName, getHostInventory } from '../src/esxi/inventory.js';
import { copyVmBetweenHosts } from '../src/esxi/migrate-vm.js';
import { deleteDatastoreFile, destroyEntity, powerOffVm } from '../src/esxi/operations.js';
import { startVcsim, stopVcsim } from '../test/helpers/vcsim.js';
import { runWhenCalledDirectly } from './report.js';

const DC = 'ha-datacenter';
const DS = 'LocalDS_0';
const SIZE = 1024 * 1024 * 1024;
const SAMPLE = 256 * 1024 * 1024;
const RSS_BUDGET = 200 * 1024 * 1024;

function bytes(size: number): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const n = Math.min(1 << 20, size - sent);
      const buf = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i += 4) buf.writeUInt32LE((sent + i) >>> 0, i);
      sent += n;
      this.push(buf);
    },
  });
}

function curlCopy(from: string, to: string, cookie: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', 'curl -sSf -b "$3" "$1" | curl -sSf -b "$3" -T - "$2" -o /dev/null', 'sh', from, to, cookie], (err) => (err ? reject(err) : resolve()));
  });
}

const mbps = (n: number, ms: number) => n / 1048576 / (ms / 1000);

/** Run the benchmark; returns one row per measure. */
export async function benchEsxiCopy(): Promise<{ name: string; ratio: number; detail: string }[]> {
  // Datastores in memory when possible: otherwise disk writeback stalls dominate (and vary) the numbers.
  const hosts = await startVcsim(2, existsSync('/dev/shm') ? { tmpRoot: '/dev/shm' } : {});
  const clients: VimClient[] = [];
  try {
    for (const h of hosts) clients.push((await VimClient.connect({ url: h.url, username: h.username, password: h.password, insecureHttp: true }))._unsafeUnwrap());
    const [a, b] = clients as [VimClient, VimClient];
    const disk = { datacenter: DC, datastore: DS, path: 'ha-host_VM0/disk1-flat.vmdk' };
    await putDatastoreFile(a, disk, bytes(SIZE), SIZE);

    let ours = Infinity;
    let curl = Infinity;
    const inv = await getHostInventory(b);
    const drop = (path: string) => deleteDatastoreFile(b, `[${DS}] ${path}`, inv.datacenter);
    // Throughput: 5 interleaved pairs on a 256 MiB file (shorter runs suffer less from other load).
    const sample = { ...disk, path: 'bench/sample.bin' };
    await putDatastoreFile(a, sample, bytes(SAMPLE), SAMPLE);
    for (let round = 0; round < 5; round++) {
      let t = performance.now();
      const d = await openDatastoreFile(a, sample);
      await putDatastoreFile(b, { datacenter: DC, datastore: DS, path: `bench/ours-${round}.bin` }, d.body, SAMPLE);
      ours = Math.min(ours, performance.now() - t);
      await drop(`bench/ours-${round}.bin`);
      t = performance.now();
      await curlCopy(datastoreFileUrl(a, sample).href, datastoreFileUrl(b, { ...disk, path: `bench/curl-${round}.bin` }).href, a.cookie ?? '');
      curl = Math.min(curl, performance.now() - t);
      await drop(`bench/curl-${round}.bin`);
    }

    const old = await findVmByName(b, 'ha-host_VM0');
    await powerOffVm(b, old.ref);
    await destroyEntity(b, old.ref);
    global.gc?.();
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    const t = performance.now();
    const copied = await copyVmBetweenHosts(a, b, 'ha-host_VM0');
    if (copied.isErr()) throw copied.error;
    const report = copied.value;
    const vmMs = performance.now() - t;
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage().rss);

    return [
      {
        name: 'esxi datastore copy vs curl GET|PUT (256 MiB, two vcsims)',
        ratio: curl / ours,
        detail: `ours ${mbps(SAMPLE, ours).toFixed(0)} MiB/s, curl ${mbps(SAMPLE, curl).toFixed(0)} MiB/s (best of 5 each, interleaved, same run, datastores on ${existsSync('/dev/shm') ? 'tmpfs' : 'disk'}, load average ${loadavg()[0]?.toFixed(1)} on ${cpus().length} CPUs)`,
      },
      {
        name: 'esxi VM copy peak RSS vs 200 MB budget (1 GiB disk)',
        ratio: RSS_BUDGET / peak,
        detail: `peak RSS ${(peak / 1048576).toFixed(0)} MiB (baseline ${(baseline / 1048576).toFixed(0)} MiB before the copy); copied ${(report.sentBytes / 1048576).toFixed(0)} MiB at ${mbps(report.sentBytes, vmMs).toFixed(0)} MiB/s incl. power off/register/power on`,
      },
    ];
  } finally {
    await Promise.allSettled(clients.map((c) => c.logout()));
    await stopVcsim(hosts);
  }
}

runWhenCalledDirectly(import.meta.url, benchEsxiCopy);
