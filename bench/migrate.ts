/**
 * A whole migration of a ~2 GiB program over a loopback sshd with the OpenSSH transport: notesd
 * plus a generated tree of a few hundred files in its profile, migrated with chroot, started and
 * health-checked at the destination. Measured: the time of every phase, this process's peak RSS
 * (sampled every 50 ms, and the kernel's high-water mark VmHWM, reset just before the migration),
 * and the transfer phase's throughput against `tar -cf - DIR | ssh host tar -xf - -C DST`
 * (OpenSSH) of the same tree in the same run, rounds interleaved, fastest kept.
 *
 * Our transfer phase includes what a migration pays for beyond tar: a remote check for the
 * receiver, the receiver's start, SHA-256 of every byte on both sides and the manifest check.
 * Both sides pay their remote shell's start-up (each ssh command runs the remote login's bashrc).
 *
 * Needs root (chroot, sshd) and gcc. Run alone: `npx tsx bench/migrate.ts`
 * (AP_MIGRATE_BENCH_MIGRATE_MIB=2048, AP_MIGRATE_BENCH_MIGRATE_FILES=320, AP_MIGRATE_BENCH_MIGRATE_ROUNDS=1).
 */
// The same receiver build the tests use (test/global-setup.ts), so the bench uploads what users ship.
import buildReceiver from '../test/global-setup.js';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createChrootDeployer, migrate, type MigrationReport, type ResourceProfileInput } from '../src/index.js';
import { createOpenSshTransport } from '../src/transports/openssh.js';
import type { Transport } from '../src/spec/transport.js';
import { startNotesd, type NotesdSource } from '../test/helpers/notesd.js';
import { startSshd, type TestSshd } from '../test/helpers/sshd.js';
import { quote, runWhenCalledDirectly, timeShell } from './report.js';

/** One benchmark line: `ratio` is ours over the reference (higher is better). */
export interface MigrateBenchLine {
  name: string;
  ratio: number;
  detail: string;
}

const MiB = 1024 * 1024;
/** The issue's goal for peak RSS while migrating a 2 GiB tree. */
const RSS_GOAL_BYTES = 200 * 1000 * 1000;



/**
 * `files` files of `totalMiB` in all under `dir`, written 1 MiB at a time (never a whole file in
 * memory); random content at a different offset per file, so nothing is compressible or shared.
 */
function makeTree(dir: string, totalMiB: number, files: number): NonNullable<ResourceProfileInput['files']> {
  const pool = randomBytes(2 * MiB);
  const perFile = Math.floor((totalMiB * MiB) / files);
  const entries: NonNullable<ResourceProfileInput['files']> = [];
  for (let i = 0; i < files; i++) {
    const sub = join(dir, `d${i % 16}`);
    mkdirSync(sub, { recursive: true });
    const path = join(sub, `f${i}.bin`);
    const fd = openSync(path, 'w');
    try {
      const offset = (i * 7919) % MiB;
      for (let left = perFile; left > 0; left -= MiB) writeSync(fd, pool, offset, Math.min(MiB, left));
    } finally {
      closeSync(fd);
    }
    entries.push({ path, kind: 'regular', access: ['read'], size: statSync(path).size });
  }
  return entries;
}

/** This process's RSS high-water mark (VmHWM), in bytes. */
function peakRss(): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return match ? Number(match[1]) * 1024 : Number.NaN;
}

/** Reset VmHWM to the current RSS (Linux >= 4.0); false when the kernel refuses. */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

interface OurRound {
  report: MigrationReport;
  transferSeconds: number;
  sampledPeak: number;
  kernelPeak: number;
  kernelPeakReset: boolean;
}

/** One migration, sampling RSS; the deployment is rolled back afterwards (its files removed). */
async function migrateOnce(transport: Transport, profile: ResourceProfileInput, sourcePid: number, name: string): Promise<OurRound> {
  const kernelPeakReset = resetPeakRss();
  let sampledPeak = process.memoryUsage.rss();
  const sampler = setInterval(() => {
    sampledPeak = Math.max(sampledPeak, process.memoryUsage.rss());
  }, 50);
  let result;
  try {
    result = await migrate({ allowRoot: true, target: { profile, pid: sourcePid }, destination: transport, name });
  } finally {
    clearInterval(sampler);
  }
  const kernelPeak = peakRss();
  if (result.isErr()) throw result.error;
  const report = result.value;
  const rolledBack = await createChrootDeployer().rollback(
    { transport, profile: report.profile, plan: report.plan, name: report.name },
    {
      activated: { installDir: report.destination!.installDir, rootDir: join(report.destination!.installDir, 'root'), undo: [] },
      started: { pid: report.destination!.pid, logPath: '', endpoints: [] },
    },
  );
  if (rolledBack.isErr()) throw rolledBack.error;
  const transferMs = report.phases.find((p) => p.phase === 'transfer')?.ms ?? Number.NaN;
  return { report, transferSeconds: transferMs / 1000, sampledPeak: Math.max(sampledPeak, process.memoryUsage.rss()), kernelPeak, kernelPeakReset };
}


/** The benchmark (see the module comment). Returns nothing (with a warning) unless root. */
export async function benchMigrate(): Promise<MigrateBenchLine[]> {
  if (process.getuid?.() !== 0) {
    console.warn('  skipped: the migration benchmark needs root (chroot, sshd)');
    return [];
  }
  const treeMib = Number(process.env.AP_MIGRATE_BENCH_MIGRATE_MIB ?? 2048);
  const fileCount = Number(process.env.AP_MIGRATE_BENCH_MIGRATE_FILES ?? 320);
  const rounds = Number(process.env.AP_MIGRATE_BENCH_MIGRATE_ROUNDS ?? 1);
  await buildReceiver();
  const work = mkdtempSync(join(tmpdir(), 'apm-bench-migrate-'));
  const tree = join(work, 'tree');
  const dst = join(work, 'dst');
  const sink = join(work, 'sink');
  let sshd: TestSshd | undefined;
  let source: NotesdSource | undefined;
  let transport: Transport | undefined;
  try {
    source = startNotesd('bench');
    const treeFiles = makeTree(tree, treeMib, fileCount);
    const treeBytes = treeFiles.reduce((sum, f) => sum + (f.size ?? 0), 0);
    const profile: ResourceProfileInput = { ...source.profile, files: [...(source.profile.files ?? []), ...treeFiles] };
    sshd = await startSshd();
    const opened = await createOpenSshTransport({
      host: sshd.host,
      port: sshd.port,
      username: 'root',
      identityFile: sshd.clientKeyPath,
      knownHostsPath: sshd.knownHostsPath,
      root: dst,
    });
    if (opened.isErr()) throw opened.error;
    transport = opened.value;
    const sshBase = [
      'ssh -T -o BatchMode=yes -o StrictHostKeyChecking=yes -o ControlMaster=no -o ControlPath=none',
      `-o UserKnownHostsFile=${quote(sshd.knownHostsPath)} -i ${quote(sshd.clientKeyPath)} -p ${sshd.port} root@${sshd.host}`,
    ].join(' ');

    const tarSeconds: number[] = [];
    const ours: OurRound[] = [];
    for (let round = 0; round < rounds; round++) {
      const into = join(sink, `r${round}`);
      mkdirSync(into, { recursive: true });
      tarSeconds.push(await timeShell(`tar -cf - -C ${quote(tree)} . | ${sshBase} tar -xf - -C ${quote(into)}`));
      rmSync(sink, { recursive: true, force: true });
      ours.push(await migrateOnce(transport, profile, source.process.pid!, `bench${round}`));
    }

    const best = ours.reduce((a, b) => (b.transferSeconds < a.transferSeconds ? b : a));
    const tarRate = treeBytes / MiB / Math.min(...tarSeconds);
    const ourRate = best.report.bytesSent / MiB / best.transferSeconds;
    const sampledPeak = Math.max(...ours.map((o) => o.sampledPeak));
    const kernelPeak = Math.max(...ours.map((o) => o.kernelPeak));
    const phases = best.report.phases.map((p) => `${p.phase} ${(p.ms / 1000).toFixed(2)}s`).join(', ');
    const total = best.report.phases.reduce((sum, p) => sum + p.ms, 0) / 1000;
    return [
      {
        name: 'migrate-transfer-vs-tar-ssh',
        ratio: ourRate / tarRate,
        detail:
          `${(best.report.bytesSent / MiB).toFixed(0)} MiB bundle (${fileCount} files) in ${best.transferSeconds.toFixed(2)}s: ${ourRate.toFixed(0)} MiB/s ` +
          `vs tar|ssh|tar -x ${(treeBytes / MiB).toFixed(0)} MiB in ${Math.min(...tarSeconds).toFixed(2)}s: ${tarRate.toFixed(0)} MiB/s (best of ${rounds})`,
      },
      {
        name: 'migrate-peak-rss-headroom',
        ratio: RSS_GOAL_BYTES / Math.max(sampledPeak, best.kernelPeakReset ? kernelPeak : 0),
        detail:
          `goal ${RSS_GOAL_BYTES / 1e6} MB / peak RSS: sampled every 50 ms ${(sampledPeak / 1e6).toFixed(0)} MB, ` +
          `kernel VmHWM ${best.kernelPeakReset ? `${(kernelPeak / 1e6).toFixed(0)} MB` : 'not resettable here'} (>= 1 meets the goal)`,
      },
      {
        name: 'migrate-phases',
        ratio: best.report.bytesSent / MiB / total / tarRate,
        detail: `end to end ${total.toFixed(2)}s (${phases}); ratio = whole-migration MiB/s over tar|ssh's`,
      },
    ];
  } finally {
    await transport?.close();
    await sshd?.stop();
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }
}

runWhenCalledDirectly(import.meta.url, benchMigrate);
