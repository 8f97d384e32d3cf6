/**
 * What the destination already has is not sent again, through the real migrate() over real
 * transports, with notesd (a program that keeps its notes in a file it rewrites):
 *
 * - resume: a 1 GiB transfer over a real OpenSSH server is cut at half (the sshd processes
 *   serving it are killed); the second attempt resends at most 55% of the bytes, counted;
 * - pre-copy: everything is copied while notesd runs, a note is written during that round, then
 *   notesd is frozen and only what changed travels; the note is there at the destination;
 * - dedup: a world-readable host file the destination has travels as a seed, unless turned off.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChrootDeployer, migrate, type MigrationReport, type ResourceProfileInput } from '../../src/index.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import type { Transport } from '../../src/spec/transport.js';
import { skipUnless } from '../helpers/requirements.js';
import { startNotesd, talkToNotesd, type NotesdSource } from '../helpers/notesd.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const GiB = 1024 * 1024 * 1024;
const HOST_FILE = '/usr/share/common-licenses/GPL-3';

/** What is left under the destination's work dir: staging directories and resume stores. */
function leftovers(dst: string): string[] {
  const work = join(dst, '.ap-migrate');
  return existsSync(work) ? readdirSync(work).filter((n) => n.startsWith('staging-') || n.startsWith('resume-')) : [];
}

/** `count` files of random bytes under `dir`, `bytes` in all, as profile entries. */
function randomFiles(dir: string, count: number, bytes: number): NonNullable<ResourceProfileInput['files']> {
  mkdirSync(dir, { recursive: true });
  const each = Math.floor(bytes / count);
  const block = randomBytes(each);
  return Array.from({ length: count }, (_, i) => {
    const path = join(dir, `part-${String(i).padStart(3, '0')}.bin`);
    // One random block, made distinct per file by its first bytes (cheap, and nothing compresses it).
    block.writeUInt32BE(i, 0);
    writeFileSync(path, block);
    return { path, kind: 'regular' as const, access: ['read' as const], size: each };
  });
}

async function rollBack(transport: Transport, report: MigrationReport | undefined): Promise<void> {
  if (!report?.destination) return;
  await createChrootDeployer().rollback(
    { transport, profile: report.profile, plan: report.plan, name: report.name },
    { activated: { installDir: report.destination.installDir, rootDir: join(report.destination.installDir, 'root'), undo: [] }, started: { pid: report.destination.pid, logPath: '', endpoints: [] } },
  );
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:pgrep'))('resume over a cut OpenSSH connection', () => {
  let source: NotesdSource;
  let profile: ResourceProfileInput;
  let sshd: TestSshd;
  let transport: Transport;
  let dst: string;
  let report: MigrationReport | undefined;

  beforeAll(async () => {
    source = startNotesd('resume');
    profile = { ...source.profile, files: [...(source.profile.files ?? []), ...randomFiles(join(source.dataDir, 'blobs'), 64, GiB)] };
    sshd = await startSshd();
    dst = mkdtempSync(join(tmpdir(), 'apm-resume-dst-'));
    const opened = await createOpenSshTransport({ host: sshd.host, port: sshd.port, username: 'root', identityFile: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath, root: dst });
    transport = opened._unsafeUnwrap();
  }, 120_000);

  afterAll(async () => {
    if (transport) await rollBack(transport, report);
    await transport?.close();
    await sshd?.stop();
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
    if (dst) rmSync(dst, { recursive: true, force: true });
  });

  it('a cut at 50% of a 1 GiB transfer: the retry resends at most 55% of the bytes, and the program answers', async () => {
    let cut: { at: number; total: number } | undefined;
    const result = await migrate({
      allowRoot: true, // the fixture runs as root here
      target: { profile, pid: source.process.pid! },
      destination: transport,
      name: 'notesd-resume',
      transferAttempts: 2,
      onProgress: (p) => {
        if (cut || p.phase !== 'transfer' || p.bytesSent === undefined || !p.bytesTotal) return;
        if (p.bytesSent >= p.bytesTotal / 2) {
          for (const pid of sshd.sessionPids()) process.kill(pid, 'SIGKILL');
          cut = { at: p.bytesSent, total: p.bytesTotal };
        }
      },
    });
    if (result.isErr()) throw result.error;
    report = result.value;
    expect(cut).toBeDefined();
    const [round] = report.rounds;
    console.log(`resume: cut at ${cut!.at} of ${cut!.total} bytes; first attempt sent ${round?.bytesSentBefore}, the retry ${round?.bytesSent} (${((100 * (round?.bytesSent ?? 0)) / cut!.total).toFixed(1)}%), seeded ${round?.seededBytes}`);
    expect(round?.attempts).toBe(2);
    // Counted, not timed: the first attempt sent about half, the retry at most 55% of the whole.
    expect(round!.bytesSentBefore).toBeGreaterThanOrEqual(cut!.at);
    expect(round!.bytesSent).toBeLessThanOrEqual(0.55 * cut!.total);
    expect(round!.seededBytes).toBeGreaterThanOrEqual(0.4 * GiB);
    const root = join(dst, 'notesd-resume', 'root');
    expect(statSync(join(root, source.dataDir, 'blobs', 'part-063.bin')).size).toBe(Math.floor(GiB / 64));
    expect(await talkToNotesd(root, source.dataDir, 'after the cut', 2)).toContain('notes=2');
    // The resume store went with the success.
    expect(leftovers(dst)).toEqual([]);
  }, 300_000);
});

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare'))('pre-copy and dedup, to a local destination', () => {
  let source: NotesdSource;
  let dst: string;
  const reports: MigrationReport[] = [];

  beforeAll(() => {
    dst = mkdtempSync(join(tmpdir(), 'apm-precopy-dst-'));
  });
  afterAll(async () => {
    const transport = createLocalTransport({ root: dst });
    for (const r of reports) await rollBack(transport, r);
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
    rmSync(dst, { recursive: true, force: true });
  });

  it('pre-copy: a note written during the first round is at the destination; the second round sends only what changed', async () => {
    source = startNotesd('precopy');
    const hostFile = { path: HOST_FILE, kind: 'regular' as const, access: ['read' as const], size: statSync(HOST_FILE).size };
    const profile = { ...source.profile, files: [...(source.profile.files ?? []), hostFile, ...randomFiles(join(source.dataDir, 'blobs'), 8, 64 * 1024 * 1024)] };
    let wrote = false;
    const result = await migrate({
      allowRoot: true,
      target: { profile, pid: source.process.pid! },
      destination: createLocalTransport({ root: dst }),
      name: 'notesd-precopy',
      cutover: 'pre-copy',
      onProgress: (p) => {
        if (wrote || p.phase !== 'precopy' || !p.bytesSent) return;
        wrote = true;
        // notesd reads its FIFO and rewrites notes.db: a change made while the first round runs.
        writeFileSync(join(source.dataDir, 'in.fifo'), 'written during the pre-copy\n');
        execFileSync('sh', ['-c', `for i in $(seq 100); do grep -q 'notes=2' '${join(source.dataDir, 'status')}' && exit 0; sleep 0.05; done; exit 1`]);
      },
    });
    if (result.isErr()) throw result.error;
    const report = result.value;
    reports.push(report);
    expect(wrote).toBe(true);
    expect(report.phases.map((p) => p.phase)).toContain('precopy');
    expect(report.rounds.map((r) => r.round)).toEqual(['full', 'delta']);
    const [first, second] = report.rounds as [MigrationReport['rounds'][number], MigrationReport['rounds'][number]];
    console.log(`pre-copy: round 1 sent ${first.bytesSent} (seeded ${first.seededBytes}), round 2 sent ${second.bytesSent} (seeded ${second.seededBytes}); downtime ${report.cutover.downtimeMs?.toFixed(0)} ms of ${report.totalMs.toFixed(0)} ms (${report.cutover.freezer})`);
    expect(second.bytesSent).toBeLessThan(first.bytesSent / 20);
    expect(second.seededBytes).toBeGreaterThanOrEqual(64 * 1024 * 1024);
    // The host file was the destination's own already (dedup), in the first round.
    expect(first.seededBytes).toBeGreaterThanOrEqual(hostFile.size);
    expect(report.cutover.mode).toBe('pre-copy');
    expect(report.cutover.downtimeMs).toBeGreaterThan(0);
    expect(report.cutover.downtimeMs!).toBeLessThan(report.totalMs);
    expect(report.source.action).toBe('stopped');
    const root = join(dst, 'notesd-precopy', 'root');
    // The note from the first round is there: the next one is the third.
    expect(await talkToNotesd(root, source.dataDir, 'at the destination', 3)).toContain('notes=3');
    expect(leftovers(dst)).toEqual([]);
  }, 180_000);

  it('bandwidthLimit: the transfer never goes faster than the cap (a slower machine only makes it slower)', async () => {
    const other = startNotesd('bwlimit');
    try {
      const limit = 4 * 1024 * 1024;
      const profile = { ...other.profile, files: [...(other.profile.files ?? []), ...randomFiles(join(other.dataDir, 'blobs'), 2, 12 * 1024 * 1024)] };
      const result = await migrate({ allowRoot: true, target: { profile, pid: other.process.pid! }, destination: createLocalTransport({ root: dst }), name: 'notesd-bwlimit', bandwidthLimit: limit });
      if (result.isErr()) throw result.error;
      reports.push(result.value);
      const transferMs = result.value.phases.find((p) => p.phase === 'transfer')!.ms;
      // A ratio to the cap, not a time: bytes over the phase's own duration.
      expect(result.value.bytesSent / (transferMs / 1000) / limit).toBeLessThan(1.05);
      expect(await talkToNotesd(join(dst, 'notesd-bwlimit', 'root'), other.dataDir, 'capped', 2)).toContain('notes=2');
    } finally {
      other.stop();
      rmSync(other.base, { recursive: true, force: true });
    }
  }, 120_000);

  it('compression: zstd on the wire when asked and the data arrives whole; auto says what it chose and why', async () => {
    const other = startNotesd('compress');
    try {
      const text = join(other.dataDir, 'text.log');
      writeFileSync(text, 'a line of a log file that compresses well, number 12345\n'.repeat(200_000));
      const profile = { ...other.profile, files: [...(other.profile.files ?? []), { path: text, kind: 'regular' as const, access: ['read' as const], size: statSync(text).size }] };
      const zstd = await migrate({ allowRoot: true, target: { profile, pid: other.process.pid! }, destination: createLocalTransport({ root: dst }), name: 'notesd-zstd', compression: 'zstd' });
      if (zstd.isErr()) throw zstd.error;
      reports.push(zstd.value);
      expect(zstd.value.compression?.codec).toBe('zstd');
      // bytesSent counts the bundle before compression; what was verified is the whole file.
      expect(statSync(join(dst, 'notesd-zstd', 'root', text)).size).toBe(statSync(text).size);
      const auto = await migrate({ allowRoot: true, target: { profile, pid: other.process.pid! }, destination: createLocalTransport({ root: dst }), name: 'notesd-auto', compression: 'auto' });
      if (auto.isErr()) throw auto.error;
      reports.push(auto.value);
      expect(['zstd', 'gzip', 'none']).toContain(auto.value.compression?.codec);
      expect(auto.value.compression?.reason.length).toBeGreaterThan(0);
      expect(await talkToNotesd(join(dst, 'notesd-zstd', 'root'), other.dataDir, 'compressed', 2)).toContain('notes=2');
    } finally {
      other.stop();
      rmSync(other.base, { recursive: true, force: true });
    }
  }, 120_000);

  it('dedup off: the host file travels as data', async () => {
    const other = startNotesd('nodedup');
    try {
      const hostFile = { path: HOST_FILE, kind: 'regular' as const, access: ['read' as const], size: statSync(HOST_FILE).size };
      const profile = { ...other.profile, files: [...(other.profile.files ?? []), hostFile] };
      const on = await migrate({ allowRoot: true, target: { profile, pid: other.process.pid! }, destination: createLocalTransport({ root: dst }), name: 'notesd-dedup-on', dryRun: false });
      if (on.isErr()) throw on.error;
      reports.push(on.value);
      const off = await migrate({ allowRoot: true, target: { profile, pid: other.process.pid! }, destination: createLocalTransport({ root: dst }), name: 'notesd-dedup-off', dedup: false });
      if (off.isErr()) throw off.error;
      reports.push(off.value);
      expect(on.value.rounds[0]!.seededBytes).toBeGreaterThanOrEqual(hostFile.size);
      expect(off.value.rounds[0]!.seededBytes).toBe(0);
      // The data is no longer on the wire; the seeded entry's header and claim (a PAX record) are.
      expect(off.value.bytesSent - on.value.bytesSent).toBeGreaterThanOrEqual(hostFile.size - 2048);
    } finally {
      other.stop();
      rmSync(other.base, { recursive: true, force: true });
    }
  }, 120_000);
});
