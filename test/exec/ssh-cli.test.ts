/**
 * The ssh CLI executor: the argv it builds (the OpenSSH transport's command line), and for real
 * against a throwaway sshd on loopback. Its quoting, shellQuoteArgv, is checked against real
 * shells in test/transports/quote.test.ts.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { okAsync } from 'neverthrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSshCliExecutor, sshArgv } from '../../src/exec/ssh-cli.js';
import { buildRemoteCommand } from '../../src/transports/remote-command.js';
import type { ExecOptions, Executor } from '../../src/spec/executor.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

/** A local executor stand-in that records the ssh argv instead of running it. */
function recorder(): Executor & { calls: string[][]; options: ExecOptions[] } {
  const calls: string[][] = [];
  const options: ExecOptions[] = [];
  return {
    description: 'recorder',
    calls,
    options,
    exec(argv, opts = {}) {
      calls.push([...argv]);
      options.push(opts);
      return okAsync({ code: 0, signal: null, stdout: '', stderr: '' });
    },
  };
}

describe('createSshCliExecutor (argv it builds)', () => {
  it('runs ssh in batch mode with -- before the host and one command line wrapped for /bin/sh', async () => {
    const local = recorder();
    const ex = createSshCliExecutor({ host: 'admin@bsd1', port: 2222, identityFile: '/k/id', knownHostsFile: '/k/known', local });
    expect(ex.description).toBe('ssh://admin@bsd1:2222');
    await ex.exec(['procstat', '-f', '42'], { cwd: '/var/db/my app', env: { LANG: 'C.UTF-8' }, timeoutMs: 5000 });
    const line = buildRemoteCommand(['procstat', '-f', '42'], { cwd: '/var/db/my app', env: { LANG: 'C.UTF-8' } })._unsafeUnwrap();
    expect(line.startsWith("exec /bin/sh -c 'eval ")).toBe(true);
    expect(local.calls).toEqual([
      [
        'ssh', '-o', 'BatchMode=yes', '-p', '2222', '-i', '/k/id', '-o', 'IdentitiesOnly=yes',
        '-o', 'UserKnownHostsFile=/k/known', '-o', 'StrictHostKeyChecking=yes', '-o', 'GlobalKnownHostsFile=/dev/null',
        '--', 'admin@bsd1', line,
      ],
    ]);
    // cwd and env belong to the remote command, never to the local ssh process.
    expect(local.options[0]).toEqual({ timeoutMs: 5000 });
  });

  it('refuses a host that would be read as an option, and bad env names, without running ssh', async () => {
    const local = recorder();
    const bad = await createSshCliExecutor({ host: '-oProxyCommand=evil', local }).exec(['true']);
    expect(bad._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    const badEnv = await createSshCliExecutor({ host: 'bsd1', local }).exec(['true'], { env: { 'A;B': 'x' } });
    expect(badEnv._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    const nul = await createSshCliExecutor({ host: 'bsd1', local }).exec(['echo', 'a\0b']);
    expect(nul._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    const huge = await createSshCliExecutor({ host: 'bsd1', local }).exec(['echo', "'".repeat(30_000)]);
    expect(huge._unsafeUnwrapErr().message).toMatch(/bytes once encoded/);
    for (const port of [0, -1, 1.5, Number.NaN, 1e9]) {
      const badPort = await createSshCliExecutor({ host: 'bsd1', port, local }).exec(['true']);
      expect(badPort._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
      expect(badPort._unsafeUnwrapErr().message).toMatch(/port/);
    }
    expect(local.calls).toEqual([]);
  });

  it('sshArgv without options is the minimal batch-mode command, host keys still checked strictly', () => {
    const line = buildRemoteCommand(['uname', '-srm'], {})._unsafeUnwrap();
    // Strict whatever the user's ssh_config says: an unknown or changed key is never accepted.
    expect(sshArgv({ host: 'bsd1' }, ['uname', '-srm'])._unsafeUnwrap()).toEqual(['ssh', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '--', 'bsd1', line]);
    // What the remote /bin/sh runs, decoded back from the wrapper.
    const decoded = execFileSync('/bin/sh', ['-c', `printf %b "$1"`, 'sh', /printf %b "(.*)"\)"'$/.exec(line)![1]!], { encoding: 'utf8' });
    expect(decoded).toBe("exec 'uname' -srm");
  });
});

describe.skipIf(skipUnless('root', 'tool:sshd', 'tool:ssh', 'tool:ssh-keygen'))('createSshCliExecutor against a real sshd', () => {
  let sshd: TestSshd;
  let ex: Executor;
  beforeAll(async () => {
    sshd = await startSshd();
    ex = createSshCliExecutor({
      host: `root@${sshd.host}`,
      port: sshd.port,
      identityFile: sshd.clientKeyPath,
      knownHostsFile: sshd.knownHostsPath,
      sshOptions: { ConnectTimeout: '10' },
    });
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  it('the remote side receives exactly the argv, however hostile', async () => {
    const argv = ['a b', "it's", '$(id -u)', '`id`', 'x;y', 'line1\nline2', 'héllo 😀', '', '*'];
    const r = (await ex.exec(['printf', '%s\\0', ...argv]))._unsafeUnwrap();
    const words = r.stdout.split('\0');
    words.pop();
    expect(words).toEqual(argv);
  });

  it('applies cwd and env on the remote side', async () => {
    const r = (await ex.exec(['sh', '-c', 'printf "%s|%s" "$PWD" "$GREETING"'], { cwd: '/tmp', env: { GREETING: 'hi there; $(x)' } }))._unsafeUnwrap();
    expect(r.stdout).toBe('/tmp|hi there; $(x)');
  });

  it('a failing remote command is EXEC_NONZERO with its exit code; allowNonZeroExit returns it', async () => {
    const e = (await ex.exec(['sh', '-c', 'echo oops >&2; exit 3']))._unsafeUnwrapErr();
    expect(e.code).toBe('EXEC_NONZERO');
    expect(e.message).toContain('oops');
    const r = (await ex.exec(['sh', '-c', 'exit 3'], { allowNonZeroExit: true }))._unsafeUnwrap();
    expect(r.code).toBe(3);
  });

  it('trusts a known_hosts file whose path has a blank (quoted as the OpenSSH transport quotes it)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'apm known hosts '));
    try {
      copyFileSync(sshd.knownHostsPath, join(dir, 'known hosts'));
      const spaced = createSshCliExecutor({
        host: `root@${sshd.host}`,
        port: sshd.port,
        identityFile: sshd.clientKeyPath,
        knownHostsFile: join(dir, 'known hosts'),
        sshOptions: { ConnectTimeout: '10' },
      });
      expect((await spaced.exec(['echo', 'ok']))._unsafeUnwrap().stdout).toBe('ok\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an unknown host key fails instead of prompting (BatchMode, strict checking)', async () => {
    const strict = createSshCliExecutor({
      host: `root@${sshd.host}`,
      port: sshd.port,
      identityFile: sshd.clientKeyPath,
      knownHostsFile: '/dev/null',
      sshOptions: { ConnectTimeout: '10' },
    });
    const e = (await strict.exec(['true'], { timeoutMs: 20_000 }))._unsafeUnwrapErr();
    expect(e.code).toBe('EXEC_NONZERO');
    expect(e.message).toMatch(/Host key verification failed|No .* host key is known/);
  });
});
