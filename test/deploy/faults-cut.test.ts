/**
 * Faults, part 1: the connection is cut at 20 points of a real transfer over a real OpenSSH
 * server (loopback), with the OpenSSH transport. notesd's profile gets a 24 MiB data file so the
 * bundle takes a while; attempt i kills the sshd processes serving our connection (the TCP
 * connection dies with them) when the packer has handed i/21 of the bundle to the transport and
 * the remote receiver's session is open.
 * Each time: a typed, retryable CONNECTION_LOST, the source still running, the destination clean
 * (no install dir, no staging, no receiver left running); finally a retry migrates for real.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChrootDeployer, migrate, type MigrationPhase, type MigrationReport, type ResourceProfileInput } from '../../src/index.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import type { Transport } from '../../src/spec/transport.js';
import { skipUnless } from '../helpers/requirements.js';
import { startNotesd, talkToNotesd, type NotesdSource } from '../helpers/notesd.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const CUTS = 20;
const DATA_BYTES = 24 * 1024 * 1024;
const NAME = 'notesd-cut';

/** Receiver processes (or the remote shells about to start one) still working for `dst`. */
function receiversFor(dst: string): string[] {
  try {
    return execFileSync('pgrep', ['-af', `unpack.*${dst}/`], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/** Staging directories left under the destination's work dir. */
function stagingLeft(dst: string): string[] {
  const work = join(dst, '.ap-migrate');
  return existsSync(work) ? readdirSync(work).filter((n) => n.startsWith('staging-')) : [];
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:pgrep'))(
  'faults: the connection is cut during a transfer over OpenSSH',
  () => {
    let source: NotesdSource;
    let profile: ResourceProfileInput;
    let sshd: TestSshd;
    let transport: Transport;
    let dst: string;
    let report: MigrationReport | undefined;

    beforeAll(async () => {
      source = startNotesd('cut');
      const big = join(source.dataDir, 'big.bin');
      // Random bytes: nothing on the way can compress them away.
      writeFileSync(big, randomBytes(DATA_BYTES));
      profile = { ...source.profile, files: [...(source.profile.files ?? []), { path: big, kind: 'regular', access: ['read'], size: statSync(big).size }] };
      sshd = await startSshd();
      dst = mkdtempSync(join(tmpdir(), 'apm-cut-dst-'));
      const opened = await createOpenSshTransport({
        host: sshd.host,
        port: sshd.port,
        username: 'root',
        identityFile: sshd.clientKeyPath,
        knownHostsPath: sshd.knownHostsPath,
        root: dst,
      });
      transport = opened._unsafeUnwrap();
    });

    afterAll(async () => {
      // Whatever was started under NAME (the retry, or a cut attempt that wrongly succeeded) is
      // stopped through its launcher pid file, and its directory removed.
      if (transport && report) {
        const installDir = join(dst, NAME);
        await createChrootDeployer().rollback(
          { transport, profile: report.profile, plan: report.plan, name: NAME },
          { activated: { installDir, rootDir: join(installDir, 'root'), undo: [] }, started: { pid: report.destination?.pid ?? 0, logPath: '', endpoints: [] } },
        );
      }
      await transport?.close();
      await sshd?.stop();
      source?.stop();
      if (source) rmSync(source.base, { recursive: true, force: true });
      if (dst) rmSync(dst, { recursive: true, force: true });
    });

    for (let i = 1; i <= CUTS; i++) {
      it(`cut at ${i}/${CUTS + 1} of the bundle, mid-transfer: CONNECTION_LOST, source running, destination clean`, async () => {
        const phases: MigrationPhase[] = [];
        let cut: { at: number; total: number; phase: MigrationPhase; killed: number[] } | undefined;
        const result = await migrate({
  allowRoot: true, // the fixture runs as root here

          target: { profile, pid: source.process.pid! },
          destination: transport,
          name: NAME,
          onProgress: (p) => {
            if (!phases.includes(p.phase)) phases.push(p.phase);
            if (cut || p.phase !== 'transfer' || p.bytesSent === undefined || !p.bytesTotal) return;
            // Cut only once the remote side of the transfer exists: bytes handed over before that
            // sit in local buffers, and ssh would simply open a new connection for them.
            if (p.bytesSent >= (i * p.bytesTotal) / (CUTS + 1) && receiversFor(dst).length > 0) {
              const killed = sshd.sessionPids();
              for (const pid of killed) process.kill(pid, 'SIGKILL');
              cut = { at: p.bytesSent, total: p.bytesTotal, phase: p.phase, killed };
            }
          },
        });
        if (result.isOk()) report = result.value; // unexpected: afterAll must still stop it
        // The cut really happened, during the transfer, with bytes of the bundle still unsent.
        expect(cut).toBeDefined();
        expect(cut!.killed.length).toBeGreaterThan(0);
        expect(cut!.at).toBeLessThan(cut!.total);
        const error = result._unsafeUnwrapErr();
        expect(error.code, error.message).toBe('CONNECTION_LOST');
        expect(error.isRetryable).toBe(true);
        // It failed in the transfer: nothing after it was attempted.
        expect(phases).toEqual(['profile', 'plan', 'preflight', 'transfer']);
        // Nothing lost: the source still runs ...
        expect(() => process.kill(source.process.pid!, 0)).not.toThrow();
        // ... and the destination is clean, also once any orphaned remote command had time to act.
        expect(existsSync(join(dst, NAME))).toBe(false);
        expect(stagingLeft(dst)).toEqual([]);
        expect(receiversFor(dst)).toEqual([]);
        await new Promise((r) => setTimeout(r, 300));
        expect(stagingLeft(dst)).toEqual([]);
      });
    }

    it('after the cuts, a retry over the same transport migrates notesd and it answers', async () => {
      const result = await migrate({ allowRoot: true, target: { profile, pid: source.process.pid! }, destination: transport, name: NAME });
      if (result.isErr()) throw result.error;
      report = result.value;
      const root = join(dst, NAME, 'root');
      expect(statSync(join(root, source.dataDir, 'big.bin')).size).toBe(DATA_BYTES);
      expect(await talkToNotesd(root, source.dataDir, 'after the cuts', 2)).toContain('notes=2');
      expect(stagingLeft(dst)).toEqual([]);
      // The source answers too: it was never touched.
      expect(await talkToNotesd('/', source.dataDir, 'source still here', 2)).toContain('notes=2');
    });
  },
);
