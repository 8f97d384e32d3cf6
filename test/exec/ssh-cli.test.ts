/**
 * quoteForShell is checked against a real POSIX shell (/bin/sh): whatever argv goes in must come
 * back word for word. The ssh executor runs for real against a throwaway sshd on loopback.
 */
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { okAsync } from 'neverthrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSshCliExecutor, quoteForShell, sshArgv } from '../../src/exec/ssh-cli.js';
import { buildRemoteCommand } from '../../src/transports/remote-command.js';
import type { ExecOptions, Executor } from '../../src/spec/executor.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

/** What /bin/sh makes of the quoted line: each word printed NUL-terminated. */
function throughShell(argv: readonly string[]): string[] {
  const out = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${quoteForShell(argv)}`], { encoding: 'utf8' });
  const words = out.split('\0');
  words.pop();
  return words;
}

describe('quoteForShell', () => {
  const cases: Record<string, string[]> = {
    spaces: ['a b', '  leading and trailing  ', 'tab\there'],
    'single quotes': ["it's", "'", "''", "a'b'c"],
    'double quotes and backslashes': ['say "hi"', '\\', 'back\\slash\\n', '"\\"'],
    newlines: ['line1\nline2', '\n', 'end\n'],
    'command substitution': ['$(id)', '`id`', '$HOME', '${PATH}', '$((1+1))'],
    separators: [';', 'a;b', 'a && b', 'a | b', 'a > /tmp/x', '&', '#comment'],
    unicode: ['héllo wörld', '日本語', '😀 emoji', 'ß'],
    globs: ['*', '?', '[a-z]', '~', '~root'],
    'empty and dashes': ['', '-n', '--', '-e'],
  };
  for (const [name, argv] of Object.entries(cases)) {
    it(`round-trips ${name} through /bin/sh`, () => {
      expect(throughShell(argv)).toEqual(argv);
    });
  }

  it('always quotes the command word, leaves other plain words bare and quotes the rest', () => {
    expect(quoteForShell(['procstat', '-f', '4242', '/usr/local/bin/x'])).toBe("'procstat' -f 4242 /usr/local/bin/x");
    expect(quoteForShell(['a b'])).toBe("'a b'");
    expect(quoteForShell(["it's"])).toBe("'it'\\''s'");
    expect(quoteForShell([''])).toBe("''");
    // `=` is quoted: a leading NAME=value word would otherwise be an assignment.
    expect(quoteForShell(['env', 'X=1'])).toBe("'env' 'X=1'");
  });

  it('a command word that looks like an assignment or a reserved word is still run as a command', () => {
    const run = (shell: string, argv: string[]) =>
      execFileSync(shell, ['-c', `PATH=/nonexistent; ${quoteForShell(argv)} 2>/dev/null; echo "status=$?"`], { encoding: 'utf8' });
    // Unquoted, `X=1` would be an assignment (status 0), `if` a syntax error.
    for (const shell of ['/bin/sh', '/bin/bash']) {
      for (const word of ['X=1', 'if', '{', '!', 'while']) expect(run(shell, [word])).toBe('status=127\n');
    }
  });

  it('round-trips arbitrary argv (property, 100 runs)', () => {
    // NUL cannot be in an argv word at all; everything else can.
    const word = fc.string({ unit: 'grapheme', maxLength: 12 }).filter((s) => !s.includes('\0'));
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 5 }), (argv) => {
        expect(throughShell(argv)).toEqual(argv);
      }),
      { numRuns: 100 },
    );
  });
});

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
        '-o', 'UserKnownHostsFile=/k/known', '-o', 'StrictHostKeyChecking=yes',
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

  it('sshArgv without options is the minimal batch-mode command', () => {
    const line = buildRemoteCommand(['uname', '-srm'], {})._unsafeUnwrap();
    expect(sshArgv({ host: 'bsd1' }, ['uname', '-srm'])._unsafeUnwrap()).toEqual(['ssh', '-o', 'BatchMode=yes', '--', 'bsd1', line]);
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
