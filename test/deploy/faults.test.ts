/**
 * Faults and bad input at the destination, with real components (issue 4): a byte flipped in
 * transit, a destination disk that fills up mid-transfer (a real tmpfs), crafted bundles fed to
 * the real receiver, and a wrong host key on a real sshd. Each test checks that nothing is lost:
 * a typed error, nothing activated or started, no staging left, nothing written outside it, and
 * the source program still running. (Connection cuts: faults-cut.test.ts.)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLE_FORMAT_VERSION, BUNDLE_INFO_NAME, createChrootDeployer, migrate, planMigration, ResourceProfileSchema, type MigrationPhase, type ResourceProfileInput } from '../../src/index.js';
import { locateReceiver, newStagingDir } from '../../src/destination/index.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import type { Transport } from '../../src/spec/transport.js';
import { flipByteTransport } from '../helpers/fault-transport.js';
import { skipUnless } from '../helpers/requirements.js';
import { startNotesd, talkToNotesd, type NotesdSource } from '../helpers/notesd.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const MiB = 1024 * 1024;

/** notesd's profile plus one random data file of `bytes` (random: no compression helps). */
function withDataFile(source: NotesdSource, name: string, bytes: number): ResourceProfileInput {
  const path = join(source.dataDir, name);
  writeFileSync(path, randomBytes(bytes));
  return { ...source.profile, files: [...(source.profile.files ?? []), { path, kind: 'regular', access: ['read'], size: statSync(path).size }] };
}

/** Staging directories left under a destination root. */
function stagingLeft(root: string): string[] {
  const work = join(root, '.ap-migrate');
  return existsSync(work) ? readdirSync(work).filter((n) => n.startsWith('staging-')) : [];
}

/** Every path under `dir` (relative), for before/after comparisons. */
function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const entry of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const path = posix.join(rel, entry.name);
      out.push(path);
      if (entry.isDirectory()) walk(path);
    }
  };
  walk('');
  return out.sort();
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare'))('faults: damaged data and a full disk at the destination', () => {
  let source: NotesdSource;
  const cleanups: Array<() => void> = [];

  beforeAll(() => {
    source = startNotesd('faults');
  });

  afterAll(() => {
    for (const cleanup of cleanups.reverse()) {
      try {
        cleanup();
      } catch {
        // best effort: the next cleanup still runs
      }
    }
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
  });

  it('a byte flipped in transit: BUNDLE_HASH_MISMATCH, nothing activated, staging removed, source running', async () => {
    const profile = withDataFile(source, 'flip.bin', 4 * MiB);
    const dst = mkdtempSync(join(tmpdir(), 'apm-flip-dst-'));
    cleanups.push(() => rmSync(dst, { recursive: true, force: true }));
    // 3 MiB in: past bundle.json and the small files, inside the 4 MiB file's data.
    const { transport, record } = flipByteTransport(createLocalTransport({ root: dst }), () => 3 * MiB);
    const phases: MigrationPhase[] = [];
    const result = await migrate({
  allowRoot: true, // the fixture runs as root here

      target: { profile, pid: source.process.pid! },
      destination: transport,
      name: 'notesd-flip',
      onProgress: (p) => void (phases.includes(p.phase) || phases.push(p.phase)),
    });
    expect(record.flippedAt).toBe(3 * MiB);
    expect(record.after).not.toBe(record.before);
    const error = result._unsafeUnwrapErr();
    expect(error.code, error.message).toBe('BUNDLE_HASH_MISMATCH');
    expect(error.message).toContain('flip.bin');
    expect(error.isRetryable).toBe(false);
    expect(phases).toEqual(['profile', 'plan', 'preflight', 'transfer']);
    expect(existsSync(join(dst, 'notesd-flip'))).toBe(false);
    expect(stagingLeft(dst)).toEqual([]);
    expect(() => process.kill(source.process.pid!, 0)).not.toThrow();
  });

  it('the destination disk fills up mid-transfer (tmpfs): NO_SPACE, staging removed, nothing started', async () => {
    const profile = withDataFile(source, 'fill.bin', 8 * MiB);
    const mountPoint = mkdtempSync(join(tmpdir(), 'apm-tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m,mode=0755', 'tmpfs', mountPoint]);
    cleanups.push(() => rmSync(mountPoint, { recursive: true, force: true }));
    cleanups.push(() => execFileSync('umount', [mountPoint]));
    const filler = join(mountPoint, 'filler');
    const transport = createLocalTransport({ root: mountPoint });
    const phases: MigrationPhase[] = [];
    let freeWhenFilled: number | undefined;
    const result = await migrate({
  allowRoot: true, // the fixture runs as root here

      target: { profile, pid: source.process.pid! },
      destination: transport,
      name: 'notesd-full',
      onProgress: (p) => {
        if (!phases.includes(p.phase)) phases.push(p.phase);
        // Pre-flight saw room; now (receiver uploaded, bytes flowing) leave only 1 MiB free.
        if (p.phase === 'transfer' && p.bytesSent !== undefined && freeWhenFilled === undefined) {
          const fs = statfsSync(mountPoint);
          execFileSync('fallocate', ['-l', String(fs.bavail * fs.bsize - MiB), filler]);
          const after = statfsSync(mountPoint);
          freeWhenFilled = after.bavail * after.bsize;
        }
      },
    });
    expect(freeWhenFilled).toBeDefined();
    expect(freeWhenFilled!).toBeLessThan(2 * MiB);
    const error = result._unsafeUnwrapErr();
    expect(error.code, error.message).toBe('NO_SPACE');
    expect(phases).toEqual(['profile', 'plan', 'preflight', 'transfer']);
    expect(existsSync(join(mountPoint, 'notesd-full'))).toBe(false);
    expect(stagingLeft(mountPoint)).toEqual([]);
    // What is left on the tmpfs: our filler and the receiver, nothing of the bundle.
    expect(listTree(mountPoint).filter((p) => !/^\.ap-migrate\/receiver-[0-9a-f]+\.cjs$/.test(p))).toEqual(['.ap-migrate', 'filler']);
    expect(() => process.kill(source.process.pid!, 0)).not.toThrow();
    // With the room back, the same migration goes through (the failure left nothing in the way).
    rmSync(filler);
    const retried = await migrate({ allowRoot: true, target: { profile, pid: source.process.pid! }, destination: transport, name: 'notesd-full' });
    if (retried.isErr()) throw retried.error;
    const report = retried.value;
    const root = join(mountPoint, 'notesd-full', 'root');
    try {
      expect(statSync(join(root, source.dataDir, 'fill.bin')).size).toBe(8 * MiB);
      expect(await talkToNotesd(root, source.dataDir, 'on the tmpfs', 2)).toContain('notes=2');
    } finally {
      // Stop it before the tmpfs is unmounted.
      await createChrootDeployer().rollback(
        { transport, profile: report.profile, plan: report.plan, name: report.name },
        { activated: { installDir: report.destination!.installDir, rootDir: root, undo: [] }, started: { pid: report.destination!.pid, logPath: '', endpoints: [] } },
      );
    }
  });
});

/** A profile with nothing in it but a (made-up) executable. */
function minimalProfile(): ResourceProfileInput {
  return {
    executable: '/app/bin/x',
    executableSize: 1,
    argv: ['/app/bin/x'],
    cwd: '/',
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1.0', arch: process.arch === 'arm64' ? 'aarch64' : 'x86_64' },
    files: [],
  };
}

/** A valid `bundle.json`, so the receiver reads on to the crafted entries after it. */
function bundleInfo(): string {
  const profile = ResourceProfileSchema.parse(minimalProfile());
  return JSON.stringify({ kind: 'ap-migrate-bundle', formatVersion: BUNDLE_FORMAT_VERSION, createdAt: new Date().toISOString(), estimatedEntries: 1, estimatedBytes: 1024, profile });
}

/** A bundle whose `bundle.json` is followed by `entries` (tar-stream, as an attacker could craft it). */
function craftedTar(entries: Array<{ header: Partial<tar.Header> & { name: string }; body?: string }>): Readable {
  const pack = tar.pack();
  void (async () => {
    for (const { header, body } of [{ header: { name: BUNDLE_INFO_NAME, type: 'file' as const, mode: 0o644 }, body: bundleInfo() }, ...entries]) {
      await new Promise<void>((resolve, reject) => pack.entry(header, body ?? '', (e) => (e ? reject(e) : resolve())));
    }
    pack.finalize();
  })().catch((e: unknown) => pack.destroy(e as Error));
  return pack as unknown as Readable;
}

describe.skipIf(skipUnless('root', 'tool:node'))('faults: crafted bundles fed to the real receiver', () => {
  const receiver = locateReceiver();
  const passwdHash = sha256('/etc/passwd');
  const passwdLinks = statSync('/etc/passwd').nlink;
  // Made at collection time: the cases below name the outside directory in their entries.
  const outside = join(tmpdir(), `apm-crafted-outside-${randomBytes(6).toString('hex')}`);
  let dst: string;
  let transport: Transport;

  beforeAll(() => {
    mkdirSync(outside, { mode: 0o700 });
    dst = mkdtempSync(join(tmpdir(), 'apm-crafted-dst-'));
    transport = createLocalTransport({ root: dst });
  });

  afterAll(() => {
    if (dst) rmSync(dst, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  const cases: Array<{ what: string; entries: Array<{ header: Partial<tar.Header> & { name: string }; body?: string }>; untouched: string[]; reason: RegExp }> = [
    {
      what: 'a "root/../../x" path traversal',
      entries: [{ header: { name: 'root/../../x', type: 'file', mode: 0o644 }, body: 'escaped\n' }],
      untouched: ['x'],
      reason: /'\.\.' component/,
    },
    {
      what: 'a bare "../x" traversal',
      entries: [{ header: { name: '../x', type: 'file', mode: 0o644 }, body: 'escaped\n' }],
      untouched: ['x'],
      reason: /'\.\.' component/,
    },
    {
      what: 'a relative symlink escaping the root, then a file through it',
      entries: [
        { header: { name: 'root/up', type: 'symlink', linkname: `../../../../../../../../..${outside}` } },
        { header: { name: 'root/up/pwned', type: 'file', mode: 0o644 }, body: 'through the link\n' },
      ],
      untouched: [],
      reason: /symlink target .* leads outside the root/,
    },
    {
      what: 'an absolute symlink (kept inside the root), then a file written through it',
      entries: [
        { header: { name: 'root/abs', type: 'symlink', linkname: outside } },
        { header: { name: 'root/abs/pwned', type: 'file', mode: 0o644 }, body: 'through the link\n' },
      ],
      untouched: [],
      reason: /written through the symlink \/abs/,
    },
    {
      what: 'a hard link to /etc/passwd, then data for it',
      entries: [
        { header: { name: 'root/pw', type: 'link', linkname: '/etc/passwd' } },
        { header: { name: 'root/pw', type: 'file', mode: 0o644 }, body: 'toor::0:0::/:/bin/sh\n' },
      ],
      untouched: [],
      reason: /hard-link target is an absolute name/,
    },
    {
      what: 'a hard link to ../../etc/passwd',
      entries: [{ header: { name: 'root/pw2', type: 'link', linkname: '../../../../../../../../etc/passwd' } }],
      untouched: [],
      reason: /hard-link target has a '\.\.' component/,
    },
  ];

  for (const { what, entries, untouched, reason } of cases) {
    it(`rejects ${what}: BUNDLE_UNSAFE_ENTRY, nothing written outside staging, staging removed`, async () => {
      expect(receiver, 'dist/receiver.cjs (built by the global setup)').toBeDefined();
      const stagingDir = join(dst, '.ap-migrate', `staging-crafted-${randomBytes(6).toString('hex')}`);
      const stagingRoot = join(stagingDir, 'root');
      mkdirSync(join(dst, '.ap-migrate'), { recursive: true });
      const before = listTree(dst);
      const result = await transport.exec(['node', receiver!, 'unpack', stagingRoot], { stdin: craftedTar(entries), allowNonZeroExit: true });
      const run = result._unsafeUnwrap();
      const reply = JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; error?: { code: string; message: string } };
      expect(reply.ok).toBe(false);
      expect(reply.error?.code, reply.error?.message).toBe('BUNDLE_UNSAFE_ENTRY');
      expect(reply.error?.message).toMatch(reason);
      expect(run.code).not.toBe(0);
      // The receiver removed what it wrote; only the (empty) parent it made may remain.
      expect(existsSync(stagingRoot)).toBe(false);
      expect(existsSync(stagingDir) ? readdirSync(stagingDir) : []).toEqual([]);
      rmSync(stagingDir, { recursive: true, force: true });
      // Nothing appeared anywhere else: not next to staging, not in the destination, not outside.
      expect(listTree(dst)).toEqual(before);
      for (const name of untouched) expect(existsSync(join(dst, '.ap-migrate', name))).toBe(false);
      expect(readdirSync(outside)).toEqual([]);
      expect(sha256('/etc/passwd')).toBe(passwdHash);
      expect(statSync('/etc/passwd').nlink).toBe(passwdLinks);
    });
  }
});

describe.skipIf(skipUnless('root', 'tool:node', 'tool:pkill'))('faults: a receiver orphaned by a cut connection', () => {
  const receiver = locateReceiver();
  let dst: string;
  let transport: Transport;
  let orphan: ChildProcess | undefined;
  beforeAll(() => {
    dst = mkdtempSync(join(tmpdir(), 'apm-orphan-dst-'));
    transport = createLocalTransport({ root: dst });
  });
  afterAll(() => {
    if (orphan?.exitCode === null && orphan.signalCode === null) orphan.kill('SIGKILL');
    if (dst) rmSync(dst, { recursive: true, force: true });
  });

  it('is stopped by the rollback, so it cannot create its staging directory after the rollback removed it', async () => {
    expect(receiver).toBeDefined();
    // A cut connection leaves the remote shell of the receiver command running on its own (seen
    // with sshd: reparented to init, still in the login's bashrc). Started after the rollback,
    // a receiver with a closed stdin creates <staging>/root and exits, leaving it behind.
    const profile = ResourceProfileSchema.parse(minimalProfile());
    const plan = planMigration(profile)._unsafeUnwrap();
    const context = { transport, profile, plan, name: 'orphaned' };
    // This migration's receiver, as the receive phase names it (a local transport's paths are host paths).
    const stagingDir = newStagingDir(transport, context.name);
    const stagingRoot = join(stagingDir, 'root');
    orphan = spawn('sh', ['-c', 'sleep 1; exec "$@"', 'orphan', 'node', receiver!, 'unpack', stagingRoot], { stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => orphan!.once('exit', (_code, signal) => resolve(signal)));
    (await createChrootDeployer().rollback(context, { preflight: { platform: { os: 'linux', release: '', arch: '' }, freeBytes: 0, tools: {}, installDir: '', stagingDir, facts: undefined } }))._unsafeUnwrap();
    // Unstopped, it would exit on its own about a second later, having made the directory.
    const signal = await exited;
    expect(stagingLeft(dst)).toEqual([]);
    expect(signal).toBe('SIGKILL');
  });
});

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:ssh-keygen', 'tool:gcc'))('faults: a wrong host key at the migrate level', () => {
  let sshd: TestSshd;
  let source: NotesdSource;
  let dir: string;

  beforeAll(async () => {
    sshd = await startSshd();
    source = startNotesd('hostkey');
    dir = mkdtempSync(join(tmpdir(), 'apm-hostkey-'));
  });

  afterAll(async () => {
    await sshd?.stop();
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a known_hosts listing another key before any byte is sent; migrate() never starts', async () => {
    const otherKey = join(dir, 'other_host_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey], { stdio: 'ignore' });
    const otherPublic = readFileSync(`${otherKey}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
    const wrongKnownHosts = join(dir, 'known_hosts');
    writeFileSync(wrongKnownHosts, `[${sshd.host}]:${sshd.port} ${otherPublic}\n`);
    const dst = join(dir, 'dst');
    const logBefore = sshd.log().length;
    let migrateStarted = false;
    const phases: MigrationPhase[] = [];

    const result = await createOpenSshTransport({
      host: sshd.host,
      port: sshd.port,
      username: 'root',
      identityFile: sshd.clientKeyPath,
      knownHostsPath: wrongKnownHosts,
      root: dst,
    }).andThen((transport) => {
      migrateStarted = true;
      return migrate({ allowRoot: true, target: { profile: source.profile, pid: source.process.pid! }, destination: transport, name: 'notesd', onProgress: (p) => void phases.push(p.phase) });
    });

    const error = result._unsafeUnwrapErr();
    expect(error.code, error.message).toBe('HOST_KEY_MISMATCH');
    expect(error.isRetryable).toBe(false);
    expect(migrateStarted).toBe(false);
    expect(phases).toEqual([]);
    // The server saw a connection that never authenticated: no session, no command, no data.
    const log = sshd.log().slice(logBefore);
    expect(log).toMatch(/Connection (closed|reset) by .*\[preauth\]|Connection from/);
    expect(log).not.toMatch(/Accepted publickey|session opened|Starting session/i);
    expect(sshd.sessionPids()).toEqual([]);
    expect(existsSync(dst)).toBe(false);
    expect(() => process.kill(source.process.pid!, 0)).not.toThrow();
  });
});
