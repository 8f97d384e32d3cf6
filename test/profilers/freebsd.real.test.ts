/**
 * Opt-in: the FreeBSD profiler and destination facts against a real FreeBSD host over SSH.
 *
 * Runs only when AP_MIGRATE_FREEBSD_HOST names the host (`user@host`, key login as that user,
 * root for ktrace of other users' programs). Optional: AP_MIGRATE_FREEBSD_PORT,
 * AP_MIGRATE_FREEBSD_IDENTITY (private key file), AP_MIGRATE_FREEBSD_KNOWN_HOSTS.
 * Without the variable the suite is skipped with a printed reason. It is opt-in, so unlike the
 * system tests it does not fail under AP_MIGRATE_STRICT=1: CI has no FreeBSD host.
 * It has NOT been run by the authors: no FreeBSD host was available.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSshCliExecutor, type SshCliExecutorOptions } from '../../src/exec/ssh-cli.js';
import { detectFreeBsdHostFacts } from '../../src/platforms/freebsd-facts.js';
import { createFreeBsdProfiler } from '../../src/profilers/freebsd.js';
import type { Executor } from '../../src/spec/executor.js';

const HOST = process.env.AP_MIGRATE_FREEBSD_HOST;
if (!HOST) console.warn('skipping FreeBSD real-host tests: set AP_MIGRATE_FREEBSD_HOST=user@host to run them (opt-in)');

function executorFromEnv(host: string): Executor {
  const options: SshCliExecutorOptions = { host, sshOptions: { ConnectTimeout: '15' } };
  if (process.env.AP_MIGRATE_FREEBSD_PORT) options.port = Number(process.env.AP_MIGRATE_FREEBSD_PORT);
  if (process.env.AP_MIGRATE_FREEBSD_IDENTITY) options.identityFile = process.env.AP_MIGRATE_FREEBSD_IDENTITY;
  if (process.env.AP_MIGRATE_FREEBSD_KNOWN_HOSTS) options.knownHostsFile = process.env.AP_MIGRATE_FREEBSD_KNOWN_HOSTS;
  return createSshCliExecutor(options);
}

describe.skipIf(!HOST)('FreeBSD profiler on a real host (opt-in)', () => {
  let ex: Executor;
  let sleeperPid: number | undefined;

  beforeAll(async () => {
    ex = executorFromEnv(HOST!);
    // A long-running process to attach to; its output goes nowhere so ssh returns at once.
    const started = (await ex.exec(['sh', '-c', 'sleep 300 </dev/null >/dev/null 2>&1 & echo $!']))._unsafeUnwrap();
    sleeperPid = Number(started.stdout.trim());
  });

  afterAll(async () => {
    if (sleeperPid && ex) await ex.exec(['kill', String(sleeperPid)], { allowNonZeroExit: true });
  });

  it('is available and reads the host facts', async () => {
    const availability = await createFreeBsdProfiler({ executor: ex }).availability();
    expect(availability).toMatchObject({ name: 'freebsd', available: true });
    const facts = (await detectFreeBsdHostFacts(ex))._unsafeUnwrap();
    expect(facts.major).toBeGreaterThanOrEqual(9);
    expect(facts.sysvIpcJailParams).toBe(facts.major >= 11);
  });

  it('attaches to a running sleep and names its executable and libc', async () => {
    const profile = (await createFreeBsdProfiler({ executor: ex }).profile({ pid: sleeperPid! }))._unsafeUnwrap();
    expect(profile.executable).toBe('/bin/sleep');
    expect(profile.platform.os).toBe('freebsd');
    expect(profile.files.some((f) => f.sharedLibrary && f.path.includes('libc.so'))).toBe(true);
    expect(profile.completeness.complete).toBe(false);
  });

  it('launches cat under ktrace and sees the file it read', async () => {
    const profile = (await createFreeBsdProfiler({ executor: ex }).profile({ command: ['cat', '/etc/hosts'] }))._unsafeUnwrap();
    expect(profile.executable).toBe('/bin/cat');
    expect(profile.files.find((f) => f.path === '/etc/hosts')).toMatchObject({ access: ['read'], kind: 'regular' });
  });

  it('launches a TCP listener and sees the listening port', async () => {
    const profile = (
      await createFreeBsdProfiler({ executor: ex }).profile({ command: ['nc', '-l', '127.0.0.1', '18089'] }, { durationMs: 2000 })
    )._unsafeUnwrap();
    expect(profile.sockets).toContainEqual(expect.objectContaining({ family: 'inet', protocol: 'tcp', localPort: 18089, listening: true }));
  });
});
