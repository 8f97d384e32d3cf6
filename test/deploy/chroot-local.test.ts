/**
 * chroot migration end to end on this machine with the local transport: a real program is
 * packed, received by the real receiver, verified, put under a private root and started with
 * unshare --root; then we talk to it. Failures leave nothing at the destination.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate, createChrootDeployer, type MigrationReport } from '../../src/index.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { skipUnless } from '../helpers/requirements.js';
import { startNotesd, talkToNotesd } from '../helpers/notesd.js';

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare'))('chroot migration (local transport)', () => {
  const source = startNotesd('hi');
  const dst = mkdtempSync(join(tmpdir(), 'apm-dst-'));
  const transport = createLocalTransport({ root: dst });
  let report: MigrationReport | undefined;

  afterAll(async () => {
    if (report) {
      await createChrootDeployer().rollback(
        { transport, profile: report.profile, plan: report.plan, name: report.name },
        { activated: { installDir: report.destination!.installDir, rootDir: join(report.destination!.installDir, 'root'), undo: [] }, started: { pid: report.destination!.pid, logPath: '', endpoints: [] } },
      );
    }
    source.stop();
    rmSync(source.base, { recursive: true, force: true });
    rmSync(dst, { recursive: true, force: true });
  });

  it('migrates notesd with chroot; it answers at the destination and the source keeps running', async () => {
    const phases: string[] = [];
    const result = await migrate({
  allowRoot: true, // the fixture runs as root here

      target: { profile: source.profile, pid: source.process.pid! },
      destination: transport,
      name: 'notesd',
      onProgress: (p) => {
        if (!phases.includes(p.phase)) phases.push(p.phase);
      },
    });
    if (result.isErr()) throw result.error;
    report = result.value;
    expect(report.method).toBe('chroot');
    expect(phases).toEqual(['profile', 'plan', 'preflight', 'transfer', 'activate', 'start', 'health', 'source']);
    const root = join(dst, 'notesd', 'root');
    // The program's own files arrived; libc came from the destination, not the bundle.
    expect(readFileSync(join(root, source.dataDir, 'notes.db'), 'utf8')).toBe('note: first\n');
    const status = await talkToNotesd(root, source.dataDir, 'from the test', 2);
    expect(status).toContain('notes=2');
    expect(readFileSync(join(root, source.dataDir, 'notes.db'), 'utf8')).toBe('note: first\nhi: from the test\n');
    // Sizes: bytes sent match the bundle estimate within 2% (plus the manifest).
    expect(Math.abs(report.bytesSent - report.manifestBytes - report.bundleEstimatedBytes) / report.bundleEstimatedBytes).toBeLessThan(0.02);
    // The source still runs, untouched.
    expect(() => process.kill(source.process.pid!, 0)).not.toThrow();
    expect(report.source.action).toBe('kept-running');
    // No staging directories are left behind.
    expect(readdirSync(join(dst, '.ap-migrate')).filter((n) => n.startsWith('staging-'))).toEqual([]);
  });

  it('refuses a second migration under the same name before sending anything', async () => {
    const result = await migrate({ allowRoot: true, target: { profile: source.profile }, destination: transport, name: 'notesd' });
    expect(result._unsafeUnwrapErr().code).toBe('DESTINATION_EXISTS');
  });

  it('a dry run changes nothing', async () => {
    const fresh = createLocalTransport({ root: join(dst, 'not-yet') });
    const result = await migrate({ allowRoot: true, target: { profile: source.profile }, destination: fresh, name: 'notesd-dry', dryRun: true });
    expect(result._unsafeUnwrap().dryRun).toBe(true);
    expect(existsSync(join(dst, 'not-yet'))).toBe(false); // not even the root is created
  });

  it('a program that dies at start is rolled back: nothing half-installed remains', async () => {
    const broken = { ...source.profile, argv: [source.exe] }; // no DIR argument: notesd exits with usage
    const result = await migrate({ allowRoot: true, target: { profile: broken }, destination: transport, name: 'notesd-broken' });
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('HEALTH_CHECK_FAILED');
    expect(error.message).toContain('usage: notesd DIR');
    expect(existsSync(join(dst, 'notesd-broken'))).toBe(false);
    expect(readdirSync(join(dst, '.ap-migrate')).filter((n) => n.startsWith('staging-'))).toEqual([]);
  });

  it('a failed transfer removes its own staging only: a concurrent same-name migration is left alone', async () => {
    // Another migration of a program with the same name, mid-transfer: its staging directory and its receiver.
    const work = join(dst, '.ap-migrate');
    const other = join(work, 'staging-notesd-twin-000000000000');
    mkdirSync(join(other, 'root'), { recursive: true });
    writeFileSync(join(other, 'root', 'partial'), 'bytes of the other migration');
    const otherReceiver = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)', 'unpack', join(other, 'root')], { stdio: 'ignore' });
    try {
      const controller = new AbortController();
      const result = await migrate({
  allowRoot: true, // the fixture runs as root here

        target: { profile: source.profile },
        destination: transport,
        name: 'notesd-twin',
        signal: controller.signal,
        onProgress: (p) => {
          if (p.phase === 'transfer') controller.abort();
        },
      });
      expect(result._unsafeUnwrapErr().code).toBe('ABORTED');
      expect(existsSync(join(dst, 'notesd-twin'))).toBe(false);
      // Ours is gone; the other migration's directory and receiver are untouched.
      expect(readdirSync(work).filter((n) => n.startsWith('staging-'))).toEqual(['staging-notesd-twin-000000000000']);
      expect(readFileSync(join(other, 'root', 'partial'), 'utf8')).toBe('bytes of the other migration');
      expect(otherReceiver.exitCode).toBeNull();
      expect(otherReceiver.signalCode).toBeNull();
    } finally {
      otherReceiver.kill('SIGKILL');
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('an aborted migration leaves nothing behind', async () => {
    const controller = new AbortController();
    const result = await migrate({
  allowRoot: true, // the fixture runs as root here

      target: { profile: source.profile },
      destination: transport,
      name: 'notesd-aborted',
      signal: controller.signal,
      onProgress: (p) => {
        if (p.phase === 'activate') controller.abort();
      },
    });
    expect(result._unsafeUnwrapErr().code).toBe('ABORTED');
    expect(existsSync(join(dst, 'notesd-aborted'))).toBe(false);
    expect(readdirSync(join(dst, '.ap-migrate')).filter((n) => n.startsWith('staging-'))).toEqual([]);
  });
});
