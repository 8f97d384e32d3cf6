/** Quoting, known_hosts parsing and URL parsing, checked against the real tools they mimic. */
import { execFileSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { checkHostKey, fingerprintSha256, parseKnownHosts } from '../../src/transports/known-hosts.js';
import { shellQuoteArgv } from '../../src/transports/quote.js';
import { buildRemoteCommand, MAX_REMOTE_COMMAND_BYTES } from '../../src/transports/remote-command.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { createTransport } from '../../src/transports/select.js';
import { createSshTransport } from '../../src/transports/ssh.js';
import { parseDestination } from '../../src/transports/url.js';
import { NASTY_NAMES } from '../conformance/transport-suite.js';
import { skipUnless } from '../helpers/requirements.js';

/** Run a quoted command string through a real POSIX shell and return the argv it saw. */
function throughShell(shell: string, argv: readonly string[]): string[] {
  const out = execFileSync(shell, ['-c', `printf '%s\\0' ${shellQuoteArgv(argv)}`], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

describe('shellQuoteArgv', () => {
  for (const shell of ['/bin/sh', '/bin/bash']) {
    it(`survives ${shell} for the nasty names`, () => {
      expect(throughShell(shell, NASTY_NAMES)).toEqual(NASTY_NAMES);
    });
  }

  it('survives /bin/sh for arbitrary strings (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'binary', minLength: 0, maxLength: 20 }).filter((s) => !s.includes('\0')), { minLength: 1, maxLength: 5 }), (args) => {
        expect(throughShell('/bin/sh', args)).toEqual(args);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses NUL bytes and bad env names', () => {
    expect(buildRemoteCommand(['echo', 'a\0b'], {})._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect(buildRemoteCommand(['env'], { env: { 'A B': 'x' } })._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect(buildRemoteCommand([], {})._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect(buildRemoteCommand(['pwd'], { cwd: '/a\0b' })._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
  });

  it('refuses a command too long for the remote execve with INVALID_INPUT, and takes one just under the bound', () => {
    const over = buildRemoteCommand(['printf', '%s', 'x'.repeat(MAX_REMOTE_COMMAND_BYTES)], {});
    expect(over._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect(over._unsafeUnwrapErr().message).toMatch(/bytes once encoded/);
    const under = buildRemoteCommand(['printf', '%s', 'x'.repeat(MAX_REMOTE_COMMAND_BYTES - 200)], {})._unsafeUnwrap();
    expect(under.length).toBeLessThanOrEqual(MAX_REMOTE_COMMAND_BYTES);
    for (const shell of ['/bin/sh', '/usr/bin/tcsh']) {
      expect(execFileSync(shell, ['-c', under], { encoding: 'utf8', maxBuffer: 1 << 20 })).toBe('x'.repeat(MAX_REMOTE_COMMAND_BYTES - 200));
    }
  });
});

describe('known_hosts', () => {
  const key1 = randomBytes(51);
  const key2 = randomBytes(51);
  const b = (k: Buffer) => k.toString('base64');

  it('matches plain names, [host]:port, wildcards and negation', () => {
    const entries = parseKnownHosts(
      [
        '# comment',
        `example.org,10.0.0.1 ssh-ed25519 ${b(key1)} c`,
        `[example.org]:2222 ssh-ed25519 ${b(key2)}`,
        `*.corp,!bad.corp ssh-ed25519 ${b(key1)}`,
        'garbage line',
      ].join('\n'),
    );
    expect(entries).toHaveLength(3);
    expect(checkHostKey(entries, 'example.org', 22, key1).status).toBe('trusted');
    expect(checkHostKey(entries, '10.0.0.1', 22, key1).status).toBe('trusted');
    expect(checkHostKey(entries, 'example.org', 2222, key2).status).toBe('trusted');
    expect(checkHostKey(entries, 'example.org', 2222, key1).status).toBe('mismatch');
    expect(checkHostKey(entries, 'a.corp', 22, key1).status).toBe('trusted');
    expect(checkHostKey(entries, 'bad.corp', 22, key1).status).toBe('unknown');
    expect(checkHostKey(entries, 'other.org', 22, key1).status).toBe('unknown');
  });

  it('matches hashed names the way OpenSSH writes them', () => {
    const salt = randomBytes(20);
    const hash = createHmac('sha1', salt).update('[h.example]:2200').digest();
    const entries = parseKnownHosts(`|1|${b(salt)}|${b(hash)} ssh-ed25519 ${b(key1)}\n`);
    expect(checkHostKey(entries, 'h.example', 2200, key1).status).toBe('trusted');
    expect(checkHostKey(entries, 'h.example', 22, key1).status).toBe('unknown');
  });

  it('honours @revoked and ignores @cert-authority', () => {
    const entries = parseKnownHosts(`@revoked * ssh-ed25519 ${b(key1)}\n@cert-authority * ssh-ed25519 ${b(key2)}\nh ssh-ed25519 ${b(key1)}\n`);
    expect(checkHostKey(entries, 'h', 22, key1).status).toBe('revoked');
    expect(checkHostKey(entries, 'x', 22, key2).status).toBe('unknown');
  });

  describe.skipIf(skipUnless('tool:ssh-keygen'))('against ssh-keygen', () => {
    const dir = mkdtempSync(join(tmpdir(), 'apm-kh-unit-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('finds hosts in a file hashed by ssh-keygen -H and prints the same fingerprint', () => {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'k')], { stdio: 'ignore' });
      const pub = readFileSync(join(dir, 'k.pub'), 'utf8').split(' ');
      const blob = Buffer.from(pub[1]!, 'base64');
      const known = join(dir, 'known_hosts');
      execFileSync('sh', ['-c', `printf '%s\\n' "[10.1.2.3]:2022 $1 $2" "plain.example $1 $2" > "$3"`, 'sh', pub[0]!, pub[1]!, known]);
      execFileSync('ssh-keygen', ['-q', '-H', '-f', known], { stdio: 'ignore' });
      const entries = parseKnownHosts(readFileSync(known, 'utf8'));
      expect(entries.every((e) => e.hosts.kind === 'hashed')).toBe(true);
      expect(checkHostKey(entries, '10.1.2.3', 2022, blob).status).toBe('trusted');
      expect(checkHostKey(entries, 'plain.example', 22, blob).status).toBe('trusted');
      const printed = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(dir, 'k.pub')], { encoding: 'utf8' });
      expect(printed).toContain(fingerprintSha256(blob));
    });
  });
});

describe('parseDestination', () => {
  it('parses ssh URLs with user, port, IPv6 and path', () => {
    expect(parseDestination('ssh://root@host.example:2222/srv/app')._unsafeUnwrap()).toEqual({
      kind: 'ssh',
      username: 'root',
      host: 'host.example',
      port: 2222,
      root: '/srv/app',
    });
    expect(parseDestination('ssh://deploy@[::1]/x/')._unsafeUnwrap()).toMatchObject({ host: '::1', port: 22, root: '/x' });
    expect(parseDestination('ssh://a@h')._unsafeUnwrap()).toMatchObject({ root: '.' });
    expect(parseDestination('/var/lib/dest')._unsafeUnwrap()).toEqual({ kind: 'local', root: '/var/lib/dest' });
    expect(parseDestination('local:///tmp/x')._unsafeUnwrap()).toEqual({ kind: 'local', root: '/tmp/x' });
  });

  it('rejects bad URLs naming the problem', () => {
    const cases: Array<[string, RegExp]> = [
      ['ssh://host/x', /user/],
      ['ssh://u:pw@host/x', /password/],
      ['http://u@h/x', /scheme/],
      ['ssh://u@h:99999/x', /port/],
      ['ssh://u@h:0/x', /port/],
      ['ssh://u@h:-1/x', /port/],
      ['ssh://u@h:1.5/x', /port/],
      ['ssh://u@h:ssh/x', /port/],
      ['ssh://u@[::1]:70000/x', /port/],
      ['ssh://-oProxyCommand=x@h', /user/],
      ['ssh://%zz@h/x', /%-escape/],
      ['not a url', /not a URL/],
      // A host part is not a path: `local://tmp/x` used to become /x, silently.
      ['local://tmp/x', /local:\/\/\/tmp\/x/],
      ['local://relative', /local:\/\/\//],
      ['local:/tmp/x', /local:\/\/\/tmp\/x/],
      ['local:', /absolute/],
      ['local:///tmp/x?y', /query/],
      ['file://host/tmp/x', /file:\/\/\/host\/tmp\/x/],
      ['/tmp/a\0b', /NUL/],
    ];
    for (const [input, message] of cases) {
      const error = parseDestination(input)._unsafeUnwrapErr();
      expect(error.code).toBe('INVALID_INPUT');
      expect(error.message).toMatch(message);
    }
  });

  it('accepts local:///abs, file:///abs and a bare absolute path', () => {
    expect(parseDestination('file:///srv/my%20app')._unsafeUnwrap()).toEqual({ kind: 'local', root: '/srv/my app' });
    expect(parseDestination('local:///')._unsafeUnwrap()).toEqual({ kind: 'local', root: '/' });
    expect(parseDestination('ssh://u@h:65535')._unsafeUnwrap()).toMatchObject({ port: 65535, root: '.' });
  });

  it('returns INVALID_INPUT for anything that is not a string, never throws', () => {
    for (const input of [undefined, null, 42, {}, ['ssh://u@h']]) {
      const result = parseDestination(input);
      expect(result._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    }
  });
});

describe('connection options are checked before any connection', () => {
  const badPorts: unknown[] = [-1, 0, 1e9, Number.NaN, 1.5, '22', Number.POSITIVE_INFINITY];

  it('createTransport refuses undefined, {}, a bad Destination object and bad URL ports with INVALID_INPUT', async () => {
    const inputs: unknown[] = [
      undefined,
      null,
      {},
      { kind: 'local', root: 'relative' },
      { kind: 'ssh', username: 'u', host: 'h', root: '.' },
      ...badPorts.map((port) => ({ kind: 'ssh', username: 'u', host: '127.0.0.1', port, root: '.' })),
      'ssh://u@127.0.0.1:0/x',
      'local://tmp/x',
    ];
    for (const input of inputs) {
      const result = await createTransport(input as never, { implementation: 'ssh2' });
      const error = result._unsafeUnwrapErr();
      expect(error.code, JSON.stringify(input)).toBe('INVALID_INPUT');
    }
    const port = (await createTransport({ kind: 'ssh', username: 'u', host: 'h', port: -1, root: '.' }))._unsafeUnwrapErr();
    expect(port.message).toMatch(/`port`/);
  });

  for (const [name, create] of [
    ['ssh2', (port: unknown) => createSshTransport({ host: '127.0.0.1', username: 'u', port: port as number, privateKey: 'x', knownHostsPath: '/dev/null' })],
    ['openssh', (port: unknown) => createOpenSshTransport({ host: '127.0.0.1', username: 'u', port: port as number, knownHostsPath: '/dev/null' })],
  ] as const) {
    it(`${name}: a port of -1, 0, 1e9, NaN, 1.5 or a string is INVALID_INPUT naming the port field`, async () => {
      for (const port of badPorts) {
        const error = (await create(port))._unsafeUnwrapErr();
        expect(error.code, String(port)).toBe('INVALID_INPUT');
        expect(error.message).toMatch(/`port`/);
        expect(error.details).toMatchObject({ field: 'port' });
      }
    });
  }

  it('both SSH transports refuse a missing options object and a malformed pin with INVALID_INPUT', async () => {
    expect((await createSshTransport(undefined as never))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect((await createOpenSshTransport(undefined as never))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    const pin = 'MD5:aa:bb';
    const e1 = (await createSshTransport({ host: 'h', username: 'u', trustHostKeyFingerprint: pin, privateKey: 'x' }))._unsafeUnwrapErr();
    const e2 = (await createOpenSshTransport({ host: 'h', username: 'u', trustHostKeyFingerprint: pin }))._unsafeUnwrapErr();
    for (const e of [e1, e2]) {
      expect(e.code).toBe('INVALID_INPUT');
      expect(e.message).toMatch(/trustHostKeyFingerprint/);
    }
  });
});
