/**
 * Transfers over emulated wide-area links (test/helpers/wan.ts): the baselines a migration over a
 * slow, distant link has to beat, timed on the same trees in the same run, each into a fresh
 * destination directory on an sshd in the destination namespace (reached through the pair's
 * ProxyCommand, so every byte crosses the shaped link):
 *
 * - `tar -c | ssh tar -x`, the reference every ratio is taken against;
 * - `tar -c | zstd | ssh 'zstd -d | tar -x'`;
 * - `rsync -a` over ssh into an empty directory;
 * - `rsync -a` onto a directory that already holds the tree's OS part (a package's files), mtimes
 *   included (the "destination already has the same OS" case: packaged files carry the package's
 *   mtimes), for trees that have one;
 * - `migrate()` itself ({@link timeApMigrate}): a real program with the tree as its data root, on
 *   a fresh destination (dedup off), and with the OS part as a package tree the destination
 *   already has (dedup on).
 *
 * Links: 100 Mbit/s + 20 ms RTT and 1 Gbit/s + 2 ms. Trees: a PostgreSQL-like service (a copy of
 * /usr/lib/postgresql/15 plus a generated ~40 MB data directory; the live cluster is not read) and
 * a mixed tree of BENCH_WAN_MIB MiB (default 256; the issue's full run is 2048) of text-like,
 * random and a few large files.
 *
 * `bwlimit`: the throttle (src/transfer/throttle.ts) in front of a loopback ssh upload, then of a
 * local pipe, each for BENCH_BWLIMIT_SECONDS (default 30) at BENCH_BWLIMIT_MIB MiB/s (default 20):
 * achieved over cap.
 *
 * Filters (comma lists): BENCH_WAN_TREES (`pg,mixed`), BENCH_WAN_LINKS (`100:20,1000:2`, Mbit/s:RTT
 * ms), BENCH_WAN_CONTENDERS (words of the contenders' names; the `tar | ssh` reference always runs).
 *
 * Needs root, tc, ip, python3 (when the kernel has no netem), sshd, zstd, rsync.
 * Run: `npm run bench -- wan`, `npm run bench -- bwlimit`, or `npx tsx bench/wan.ts [wan|bwlimit]`.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { createChrootDeployer, migrate } from '../src/index.js';
import { createThrottle } from '../src/transfer/index.js';
import { startNotesd } from '../test/helpers/notesd.js';
import buildReceiver from '../test/global-setup.js';
import { createOpenSshTransport } from '../src/transports/openssh.js';
import type { Transport } from '../src/spec/transport.js';
import { startSshd, type TestSshd } from '../test/helpers/sshd.js';
import { createWanLink, measureRtt, measureThroughput, type WanLink } from '../test/helpers/wan.js';
import { printRatios, quote, timeShell, type RatioLine } from './report.js';

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Trees

/** A tree to transfer. */
export interface BenchTree {
  name: string;
  /** Its root on this machine. */
  path: string;
  files: number;
  /** Sum of the regular files' sizes. */
  bytes: number;
  /**
   * The part of the tree that is the operating system's (a package's files), as a path relative
   * to `path` and the host path it was copied from. A destination that "already has the same OS"
   * holds this part and nothing else; a migration names it as a package tree at its host path.
   */
  os?: { relative: string; hostPath: string };
}

/** mulberry32: a seeded generator, so every run transfers the same bytes. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 3000 made-up words; picked with a skew towards the first ones, as word use is in real text. */
const WORDS = (() => {
  const r = rng(7);
  const letters = 'etaoinshrdlucmfwypvbgkjqxz';
  return Array.from({ length: 3000 }, () => {
    const length = 2 + Math.floor(r() * 9);
    return Buffer.from(Array.from({ length }, () => letters[Math.floor(r() ** 1.8 * letters.length)]).join('') + ' ');
  });
})();

/** `bytes` of log- or source-like text: lines of skewed words, some with numbers (zstd -3 makes ~3x of it). */
function text(r: () => number, bytes: number): Buffer {
  const out = Buffer.allocUnsafe(bytes + 64);
  let at = 0;
  while (at < bytes) {
    if (r() < 0.2) at += out.write(`${Math.floor(r() * 1e9)} `, at, 'latin1');
    const word = WORDS[Math.floor(r() ** 2.5 * WORDS.length)]!;
    at += word.copy(out, at);
    if (r() < 0.1) out[at - 1] = 0x0a;
  }
  return out.subarray(0, bytes);
}

/** A relation file of 8 KiB pages: header, line pointers, tuples at the end, zeros between. */
function pages(r: () => number, count: number): Buffer {
  const out = Buffer.alloc(count * 8192);
  for (let p = 0; p < count; p++) {
    const page = out.subarray(p * 8192, (p + 1) * 8192);
    randomBytes(8).copy(page, 0); // the LSN: differs from page to page
    const used = Math.floor(8192 * (0.3 + 0.7 * r()));
    const tuples = text(r, used - 64);
    tuples.copy(page, 8192 - tuples.length);
    for (let i = 0; i < 10; i++) page.writeUInt32LE(Math.floor(r() * 2 ** 32), 24 + 4 * i);
  }
  return out;
}

function write(path: string, data: Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data);
}

/** Files and bytes of the regular files under `path`. */
function measure(path: string): { files: number; bytes: number } {
  const sizes = execFileSync('find', [path, '-type', 'f', '-printf', '%s\\n'], { encoding: 'utf8', maxBuffer: 256 * MiB });
  const list = sizes.split('\n').filter(Boolean).map(Number);
  return { files: list.length, bytes: list.reduce((a, b) => a + b, 0) };
}

/** A PostgreSQL-like service: its package's files and a generated ~40 MB data directory. */
export function makePgTree(root: string): BenchTree {
  const path = join(root, 'pg');
  mkdirSync(join(path, 'usr/lib/postgresql'), { recursive: true });
  execFileSync('cp', ['-a', '/usr/lib/postgresql/15', join(path, 'usr/lib/postgresql/15')]);
  const data = join(path, 'var/lib/postgresql/15/main');
  const r = rng(15);
  // template1, template0 and postgres: catalog-sized relations (mostly 1-4 pages, a few large), as initdb leaves them.
  for (const db of ['1', '4', '5']) {
    for (let rel = 0; rel < 300; rel++) {
      const count = r() < 0.97 ? 1 + Math.floor(r() * 4) : 10 + Math.floor(r() * 30);
      write(join(data, 'base', db, String(1200 + rel * 7)), pages(r, count));
    }
  }
  // One WAL segment: records for its first part, zeros after (a fresh segment is pre-zeroed).
  const wal = Buffer.alloc(16 * MiB);
  text(r, 3 * MiB).copy(wal);
  randomBytes(MiB).copy(wal, 3 * MiB);
  write(join(data, 'pg_wal/000000010000000000000001'), wal);
  write(join(data, 'global/pg_control'), randomBytes(8192));
  for (let rel = 0; rel < 60; rel++) write(join(data, 'global', String(1260 + rel)), pages(r, 1 + Math.floor(r() * 3)));
  write(join(data, 'pg_xact/0000'), Buffer.alloc(8192));
  write(join(data, 'PG_VERSION'), Buffer.from('15\n'));
  write(join(data, 'postgresql.auto.conf'), Buffer.from('# Do not edit this file manually!\n'));
  return { name: 'postgresql-like', path, ...measure(path), os: { relative: 'usr', hostPath: '/usr/lib/postgresql/15' } };
}

/**
 * A mixed tree of about `mib` MiB: 40% small text-like files (4-64 KiB), 35% random files
 * (64 KiB-2 MiB, like compressed archives and media) and 25% in three large files (a log, a random
 * blob, and an image-like file of zero runs, text and random blocks).
 */
export function makeMixedTree(root: string, mib: number): BenchTree {
  const path = join(root, 'mixed');
  const r = rng(42);
  const total = mib * MiB;
  let n = 0;
  for (let bytes = 0; bytes < total * 0.4; n++) {
    const size = 4096 + Math.floor(r() * 60 * 1024);
    write(join(path, `text/d${n % 37}/e${n % 11}/f${n}.txt`), text(r, size));
    bytes += size;
  }
  for (let bytes = 0; bytes < total * 0.35; n++) {
    const size = 64 * 1024 + Math.floor(r() * 2 * MiB);
    write(join(path, `blobs/d${n % 13}/f${n}.bin`), randomBytes(size));
    bytes += size;
  }
  const large = Math.floor((total * 0.25) / 3 / MiB);
  const images: Array<[string, (i: number) => Buffer]> = [
    ['large/app.log', () => text(r, MiB)],
    ['large/archive.bin', () => randomBytes(MiB)],
    ['large/disk.img', (i) => (i % 3 === 0 ? Buffer.alloc(MiB) : i % 3 === 1 ? text(r, MiB) : randomBytes(MiB))],
  ];
  for (const [name, block] of images) write(join(path, name), Buffer.concat(Array.from({ length: Math.max(1, large) }, (_, i) => block(i))));
  return { name: `mixed-${mib}MiB`, path, ...measure(path) };
}

// ---------------------------------------------------------------------------------------------
// Links

/** A shaped link with an sshd on the destination side and an ssh_config that reaches it. */
export interface WanBenchLink {
  name: string;
  wan: WanLink;
  sshd: TestSshd;
  /** `ssh -F <this> wan` reaches the sshd through the link. */
  sshConfig: string;
}

export async function openLink(rateMbit: number, rttMs: number, dir: string): Promise<WanBenchLink> {
  const wan = await createWanLink({ rateMbit, rttMs });
  try {
    const { pair } = wan;
    const sshd = await startSshd({ host: pair.destinationAddress, wrap: pair.wrap(pair.destination) });
    const sshConfig = join(dir, `ssh_config-${rateMbit}-${rttMs}`);
    const config = [
      'Host wan',
      `  HostName ${sshd.host}`,
      `  Port ${sshd.port}`,
      '  User root',
      `  IdentityFile ${sshd.clientKeyPath}`,
      '  IdentitiesOnly yes',
      `  UserKnownHostsFile ${sshd.knownHostsPath}`,
      '  StrictHostKeyChecking yes',
      '  BatchMode yes',
      '  ControlMaster no',
      '  ControlPath none',
      `  ProxyCommand ${pair.proxyCommand}`,
    ];
    writeFileSync(sshConfig, config.join('\n') + '\n');
    const name = rateMbit >= 1000 ? `${rateMbit / 1000} Gbit/s + ${rttMs} ms` : `${rateMbit} Mbit/s + ${rttMs} ms`;
    return { name, wan, sshd, sshConfig };
  } catch (e) {
    await wan.teardown();
    throw e;
  }
}

export async function closeLink(link: WanBenchLink): Promise<void> {
  await link.sshd.stop();
  await link.wan.teardown();
}

// ---------------------------------------------------------------------------------------------
// Contenders



/**
 * The SDK's own migration over `link`: notesd (a small real program) with `tree` as a data root
 * that travels whole, moved by `migrate()` with the chroot method through the OpenSSH transport,
 * `compression: 'auto'` (negotiated and measured on this link), every file verified at the
 * destination, the program started and health-checked there; then rolled back. Wall time of the
 * whole `migrate()` call.
 *
 * With `sameOs` the tree's OS part travels as what it is, a package tree at its host path (the
 * rest as the data root), and dedup is on: the destination namespace host shares this machine's
 * file system, so it already has those files, as a destination running the same release would.
 * Without it the whole tree is the data root and dedup is off (a fresh destination).
 */
export async function timeApMigrate(link: WanBenchLink, tree: BenchTree, destination: string, sameOs = false): Promise<number | undefined> {
  mkdirSync(destination, { recursive: true });
  const source = startNotesd('wan');
  let transport: Transport | undefined;
  try {
    // Capture lists a package's files one by one (from the package database), so they do here.
    const packageFiles = sameOs && tree.os ? packageFilesUnder(tree.os.hostPath) : [];
    const trees =
      sameOs && tree.os
        ? readdirSync(tree.path).filter((entry) => entry !== tree.os!.relative).map((entry) => ({ path: join(tree.path, entry), reason: 'data-root' as const }))
        : [{ path: tree.path, reason: 'data-root' as const, bytes: tree.bytes, files: tree.files }];
    const profile = { ...source.profile, files: [...(source.profile.files ?? []), ...packageFiles], trees };
    // The clock starts before the transport connects: every other contender pays its ssh handshake.
    const started = process.hrtime.bigint();
    const opened = await createOpenSshTransport({
      host: link.sshd.host,
      port: link.sshd.port,
      username: 'root',
      identityFile: link.sshd.clientKeyPath,
      knownHostsPath: link.sshd.knownHostsPath,
      proxyCommand: link.wan.pair.proxyCommand,
      root: destination,
    });
    transport = opened._unsafeUnwrap();
    const result = await migrate({ allowRoot: true, target: { profile, pid: source.process.pid! }, destination: transport, name: 'wanbench', compression: 'auto', dedup: sameOs });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (result.isErr()) throw result.error;
    const r = result.value;
    const seeded = (r.rounds ?? []).reduce((sum, round) => sum + round.seededBytes, 0);
    console.log(`    ap-migrate: ${r.bytesSent} bytes sent, ${r.wireBytes} on the wire, ${seeded} seeded, compression ${r.compression?.codec ?? 'none'} (${r.compression?.reason ?? ''})`);
    console.log(`    phases: connect ${(seconds - r.phases.reduce((sum, p) => sum + p.ms, 0) / 1000).toFixed(2)}s (and the rest outside phases), ${r.phases.map((p) => `${p.phase} ${(p.ms / 1000).toFixed(2)}s`).join(', ')}`);
    await createChrootDeployer().rollback(
      { transport, profile: r.profile, plan: r.plan, name: r.name },
      { activated: { installDir: r.destination!.installDir, rootDir: join(r.destination!.installDir, 'root'), undo: [] }, started: { pid: r.destination!.pid, logPath: '', endpoints: [] } },
    );
    return seconds;
  } finally {
    source.stop();
    rmSync(source.base, { recursive: true, force: true });
    await transport?.close();
  }
}

/** The regular files under `dir` as a profile lists a package's files. */
function packageFilesUnder(dir: string): Array<{ path: string; kind: 'regular'; access: ['read']; size: number; reasons: ['package'] }> {
  const lines = execFileSync('find', [dir, '-type', 'f', '-printf', '%s %p\\n'], { encoding: 'utf8', maxBuffer: 64 * MiB }).split('\n').filter(Boolean);
  return lines.map((line) => {
    const space = line.indexOf(' ');
    return { path: line.slice(space + 1), kind: 'regular', access: ['read'], size: Number(line.slice(0, space)), reasons: ['package'] };
  });
}

/** One way of moving a tree: resolves with seconds, or undefined when it did not run. */
interface Contender {
  name: string;
  /** Fill `destination` before the clock starts (the "already there" case). */
  prepare?: (tree: BenchTree, destination: string) => void;
  run: (link: WanBenchLink, tree: BenchTree, destination: string) => Promise<number | undefined>;
  /** It checks what arrived itself (and removes it): the bench's file count is skipped. */
  verifiesItself?: boolean;
  /** Runs only on trees with an OS part (the "destination has the same OS" case). */
  needsOs?: boolean;
}

const REFERENCE = 'tar | ssh';

const CONTENDERS: Contender[] = [
  {
    name: REFERENCE,
    run: (l, t, d) => timeShell(`tar -cf - -C ${quote(t.path)} . | ssh -F ${quote(l.sshConfig)} wan ${quote(`mkdir -p ${quote(d)} && tar -xf - -C ${quote(d)}`)}`),
  },
  {
    name: 'tar | zstd -3 | ssh',
    run: (l, t, d) =>
      timeShell(`tar -cf - -C ${quote(t.path)} . | zstd -q -3 -T0 -c | ssh -F ${quote(l.sshConfig)} wan ${quote(`mkdir -p ${quote(d)} && zstd -q -d -c | tar -xf - -C ${quote(d)}`)}`),
  },
  {
    name: 'rsync -a (empty destination)',
    run: (l, t, d) => timeShell(`rsync -a -e ${quote(`ssh -F ${l.sshConfig}`)} ${quote(t.path + '/')} wan:${quote(d + '/')}`),
  },
  {
    name: 'rsync -a (destination has the OS)',
    needsOs: true,
    // The OS part, mtimes included (packaged files carry the package's mtimes); not the data.
    prepare: (t, d) => {
      mkdirSync(d, { recursive: true });
      execFileSync('cp', ['-a', join(t.path, t.os!.relative), join(d, t.os!.relative)]);
    },
    run: (l, t, d) => timeShell(`rsync -a -e ${quote(`ssh -F ${l.sshConfig}`)} ${quote(t.path + '/')} wan:${quote(d + '/')}`),
  },
  // migrate() checks every file's SHA-256 at the destination itself, and rolls back after timing.
  { name: 'ap-migrate (fresh destination)', run: (l, t, d) => timeApMigrate(l, t, d, false), verifiesItself: true },
  { name: 'ap-migrate (destination has the OS)', needsOs: true, run: (l, t, d) => timeApMigrate(l, t, d, true), verifiesItself: true },
];

// ---------------------------------------------------------------------------------------------
// The wan bench

/** One timed transfer. */
export interface WanRow {
  link: string;
  tree: string;
  treeBytes: number;
  contender: string;
  /** Undefined: the contender did not run (the hook not wired). */
  seconds: number | undefined;
  /** seconds / the reference's seconds on the same link and tree (lower is better). */
  ratio: number | undefined;
}

/** Time every contender on one tree; checks each destination got every file. */
async function timeTree(link: WanBenchLink, tree: BenchTree, sink: string): Promise<WanRow[]> {
  const rows: WanRow[] = [];
  let reference = 0;
  const only = process.env.BENCH_WAN_CONTENDERS?.split(',');
  for (const [i, c] of CONTENDERS.entries()) {
    if (c.needsOs && !tree.os) continue;
    if (only && c.name !== REFERENCE && !only.some((word) => c.name.includes(word))) continue;
    const destination = join(sink, `t${i}`);
    c.prepare?.(tree, destination);
    const seconds = await c.run(link, tree, destination);
    if (seconds !== undefined && !c.verifiesItself) {
      const got = measure(destination);
      if (got.files !== tree.files || got.bytes !== tree.bytes) throw new Error(`${c.name} left ${got.files} files / ${got.bytes} B of ${tree.files} / ${tree.bytes}`);
    }
    rmSync(destination, { recursive: true, force: true });
    if (c.name === REFERENCE) reference = seconds ?? 0;
    rows.push({ link: link.name, tree: tree.name, treeBytes: tree.bytes, contender: c.name, seconds, ratio: seconds === undefined ? undefined : seconds / reference });
    printRow(rows[rows.length - 1]!);
  }
  return rows;
}

function printRow(r: WanRow): void {
  const seconds = r.seconds === undefined ? '(not wired)'.padStart(9) : `${r.seconds.toFixed(2).padStart(8)}s`;
  const ratio = r.ratio === undefined ? '' : `${r.ratio.toFixed(2).padStart(6)}x`;
  const rate = r.seconds === undefined ? '' : `  ${((r.treeBytes * 8) / r.seconds / 1e6).toFixed(0).padStart(5)} Mbit/s of tree`;
  console.log(`  ${r.link.padEnd(20)} ${r.tree.padEnd(17)} ${r.contender.padEnd(36)} ${seconds} ${ratio}${rate}`);
}

/** Run every contender on both links and both trees. */
export async function benchWan(): Promise<WanRow[]> {
  // The receiver migrate() uploads, built as `npm run build` builds it.
  await buildReceiver();
  const mib = Number(process.env.BENCH_WAN_MIB ?? 256);
  const dir = mkdtempSync(join(tmpdir(), 'apmw-bench-'));
  const rows: WanRow[] = [];
  try {
    const wanted = process.env.BENCH_WAN_TREES?.split(',') ?? ['pg', 'mixed'];
    const trees = [...(wanted.includes('pg') ? [makePgTree(join(dir, 'src'))] : []), ...(wanted.includes('mixed') ? [makeMixedTree(join(dir, 'src'), mib)] : [])];
    for (const t of trees) {
      console.log(`  tree ${t.name}: ${t.files} files, ${(t.bytes / MiB).toFixed(1)} MiB`);
      execFileSync('sh', ['-c', `tar -cf - -C ${quote(t.path)} . | cat >/dev/null`]); // into the page cache, for every contender alike
    }
    console.log(`  ${'link'.padEnd(20)} ${'tree'.padEnd(17)} ${'contender'.padEnd(36)} ${'wall'.padStart(9)} ${'vs tar|ssh'}`);
    const links = (process.env.BENCH_WAN_LINKS ?? '100:20,1000:2').split(',').map((l) => l.split(':').map(Number) as [number, number]);
    for (const [rate, rtt] of links) {
      const link = await openLink(rate, rtt, dir);
      try {
        const rtts = await measureRtt(link.wan, 5);
        const probe = await measureThroughput(link.wan, Math.ceil((rate * 1e6) / 8));
        const handshake = await timeShell(`ssh -F ${quote(link.sshConfig)} wan true`);
        console.log(`  ${link.name} (${link.wan.emulator}): min RTT ${Math.min(...rtts).toFixed(1)} ms, one TCP flow ${probe.mbit.toFixed(0)} Mbit/s (${(probe.ratio * 100).toFixed(0)}%), \`ssh wan true\` ${handshake.toFixed(2)} s (every contender pays one)`);
        for (const t of trees) rows.push(...(await timeTree(link, t, join(dir, 'dst'))));
      } finally {
        await closeLink(link);
      }
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The bwlimit bench

/** Zeros, as fast as they are read, until `stop()`. */
function endlessZeros(): { stream: Readable; stop(): void } {
  const block = Buffer.alloc(256 * 1024);
  let stopped = false;
  const stream = new Readable({
    read() {
      this.push(stopped ? null : block);
    },
  });
  return { stream, stop: () => (stopped = true) };
}

/** What went through the throttle: total bytes, seconds, and the running total at every whole second. */
interface ThrottledRun {
  bytes: number;
  elapsed: number;
  totals: number[];
}

/** Zeros through the throttle into a command (`ssh host 'echo ready; cat >/dev/null'`) for `seconds`. */
async function throttledUpload(argv: string[], cap: number, seconds: number): Promise<ThrottledRun> {
  const ssh = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => ssh.once('close', resolve));
  // The clock starts once the command says "ready": after ssh's handshake (seconds on a loaded machine).
  await new Promise<void>((resolve, reject) => {
    ssh.stdout!.once('data', () => resolve());
    ssh.once('close', (code) => reject(new Error(`${argv[0]} exited ${code} before it was ready`)));
  });
  const source = endlessZeros();
  const throttle = createThrottle(cap);
  let bytes = 0;
  const totals: number[] = [];
  throttle.on('data', (c: Buffer) => (bytes += c.length));
  const sampler = setInterval(() => totals.push(bytes), 1000);
  const started = performance.now();
  setTimeout(() => source.stop(), seconds * 1000);
  await pipeline(source.stream, throttle, ssh.stdin);
  const code = await exited;
  const elapsed = (performance.now() - started) / 1000;
  clearInterval(sampler);
  if (code !== 0) throw new Error(`ssh exited ${code}`);
  return { bytes, elapsed, totals };
}

/** Ratio lines for one throttled run. */
function bwlimitLines(label: string, run: ThrottledRun, cap: number): RatioLine[] {
  const { bytes, elapsed, totals } = run;
  const perSecond = totals.map((t, i) => t - (totals[i - 1] ?? 0));
  // A fresh ssh session on a busy machine can take a few seconds to reach speed: the steady
  // figure leaves out the first 3 s, so it says what the throttle does rather than ssh.
  const warm = Math.min(3, totals.length - 1);
  const steady = warm > 0 ? (bytes - totals[warm - 1]!) / (elapsed - warm) : bytes / elapsed;
  const busiest = Math.max(0, ...perSecond.slice(1));
  const shown = perSecond.map((b) => (b / MiB).toFixed(1)).join(' ');
  return [
    { name: `bwlimit-${label}-achieved/cap`, ratio: bytes / elapsed / cap, detail: `${(bytes / MiB).toFixed(0)} MiB in ${elapsed.toFixed(1)} s, cap ${(cap / MiB).toFixed(0)} MiB/s` },
    { name: `bwlimit-${label}-achieved/cap-after-3s`, ratio: steady / cap, detail: `goal 0.95-1.00; MiB per second: ${shown}` },
    { name: `bwlimit-${label}-busiest-second/cap`, ratio: busiest / cap, detail: 'goal <= 1.05' },
  ];
}

/**
 * The throttle in front of a loopback ssh upload, and (the control, without ssh's own stalls)
 * in front of a local pipe: achieved rate over the cap, each for BENCH_BWLIMIT_SECONDS.
 */
export async function benchBwlimit(): Promise<RatioLine[]> {
  const seconds = Number(process.env.BENCH_BWLIMIT_SECONDS ?? 30);
  const cap = Number(process.env.BENCH_BWLIMIT_MIB ?? 20) * MiB;
  const sshd = await startSshd();
  try {
    const ssh = ['ssh', '-T', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${sshd.knownHostsPath}`, '-i', sshd.clientKeyPath, '-p', String(sshd.port), `root@${sshd.host}`, 'echo ready && exec cat >/dev/null'];
    const overSsh = await throttledUpload(ssh, cap, seconds);
    const overPipe = await throttledUpload(['sh', '-c', 'echo ready && exec cat >/dev/null'], cap, seconds);
    return [...bwlimitLines('ssh', overSsh, cap), ...bwlimitLines('pipe', overPipe, cap)];
  } finally {
    await sshd.stop();
  }
}

// `npx tsx bench/wan.ts [wan|bwlimit]`: run directly (bench/run.ts imports this file instead).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const which = process.argv[2];
  (async () => {
    if (!which || which === 'wan') await benchWan();
    if (!which || which === 'bwlimit') printRatios(await benchBwlimit());
  })().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
