/**
 * Host key verification, authentication and connection cuts against a real sshd, for both
 * SSH transports. "Before any data is sent" is checked in the server's own log: a refused
 * host never gets as far as a publickey attempt or a session.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Transport } from '../../src/spec/transport.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { createSshTransport } from '../../src/transports/ssh.js';
import { createTransport, hasExecutable, resolveSshImplementation } from '../../src/transports/select.js';
import { endlessStream } from '../conformance/transport-suite.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

interface Variant {
  name: string;
  connect(sshd: TestSshd, extra: { knownHostsPath?: string; trustHostKeyFingerprint?: string; keyPath?: string }): ReturnType<typeof createSshTransport>;
}

const variants: Variant[] = [
  {
    name: 'ssh2',
    connect: (sshd, extra) =>
      createSshTransport({
        host: sshd.host,
        port: sshd.port,
        username: 'root',
        privateKeyPath: extra.keyPath ?? sshd.clientKeyPath,
        knownHostsPath: extra.knownHostsPath ?? sshd.knownHostsPath,
        keepaliveIntervalMs: 500,
        ...(extra.trustHostKeyFingerprint ? { trustHostKeyFingerprint: extra.trustHostKeyFingerprint } : {}),
      }),
  },
  {
    name: 'openssh',
    connect: (sshd, extra) =>
      createOpenSshTransport({
        host: sshd.host,
        port: sshd.port,
        username: 'root',
        identityFile: extra.keyPath ?? sshd.clientKeyPath,
        knownHostsPath: extra.knownHostsPath ?? sshd.knownHostsPath,
        keepaliveIntervalMs: 1000,
        ...(extra.trustHostKeyFingerprint ? { trustHostKeyFingerprint: extra.trustHostKeyFingerprint } : {}),
      }),
  },
];

/** Lines of the sshd log that show authentication or a session was reached. */
function authOrSessionLines(log: string): string[] {
  return log.split('\n').filter((l) => /publickey|Starting session|session opened/i.test(l));
}

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:ssh-keygen', 'tool:ssh-keyscan'))('SSH host keys, auth and cuts', () => {
  let sshd: TestSshd;
  let other: TestSshd;
  let dir: string;
  beforeAll(async () => {
    sshd = await startSshd();
    other = await startSshd(); // only for its different host key
    dir = mkdtempSync(join(tmpdir(), 'apm-kh-'));
  });
  afterAll(async () => {
    await sshd?.stop();
    await other?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const variant of variants) {
    describe(variant.name, () => {
      it('refuses a changed host key with HOST_KEY_MISMATCH before authenticating', async () => {
        const wrong = join(dir, `wrong-${variant.name}`);
        writeFileSync(wrong, `[${sshd.host}]:${sshd.port} ${other.hostPublicKey}\n`);
        const before = authOrSessionLines(sshd.log()).length;
        const result = await variant.connect(sshd, { knownHostsPath: wrong });
        const error = result._unsafeUnwrapErr();
        expect(error.code).toBe('HOST_KEY_MISMATCH');
        expect(error.isRetryable).toBe(false);
        expect(authOrSessionLines(sshd.log()).length).toBe(before);
      });

      it('refuses an unknown host with HOST_KEY_UNKNOWN before authenticating', async () => {
        const empty = join(dir, `empty-${variant.name}`);
        writeFileSync(empty, '');
        const before = authOrSessionLines(sshd.log()).length;
        const error = (await variant.connect(sshd, { knownHostsPath: empty }))._unsafeUnwrapErr();
        expect(error.code).toBe('HOST_KEY_UNKNOWN');
        expect(error.message).toContain(String(sshd.port));
        expect(authOrSessionLines(sshd.log()).length).toBe(before);
      });

      it('accepts an unknown host whose fingerprint is explicitly trusted', async () => {
        const empty = join(dir, `empty-trust-${variant.name}`);
        writeFileSync(empty, '');
        const transport = (await variant.connect(sshd, { knownHostsPath: empty, trustHostKeyFingerprint: sshd.hostKeyFingerprint }))._unsafeUnwrap();
        expect((await transport.exec(['echo', 'trusted']))._unsafeUnwrap().stdout).toBe('trusted\n');
        (await transport.close())._unsafeUnwrap();
      });

      it('refuses when the trusted fingerprint is not the server key: HOST_KEY_MISMATCH naming both fingerprints', async () => {
        const empty = join(dir, `empty-wrongtrust-${variant.name}`);
        writeFileSync(empty, '');
        const before = authOrSessionLines(sshd.log()).length;
        const error = (await variant.connect(sshd, { knownHostsPath: empty, trustHostKeyFingerprint: other.hostKeyFingerprint }))._unsafeUnwrapErr();
        expect(error.code).toBe('HOST_KEY_MISMATCH');
        expect(error.message).toContain(`expects ${other.hostKeyFingerprint}`);
        expect(error.message).toContain(`presented ${sshd.hostKeyFingerprint}`);
        expect(error.isRetryable).toBe(false);
        expect(authOrSessionLines(sshd.log()).length).toBe(before);
      });

      it('the pin restricts: a server key that known_hosts lists is still refused when it is not the pinned one', async () => {
        const before = authOrSessionLines(sshd.log()).length;
        // sshd.knownHostsPath lists exactly this server's key.
        const error = (await variant.connect(sshd, { trustHostKeyFingerprint: other.hostKeyFingerprint }))._unsafeUnwrapErr();
        expect(error.code).toBe('HOST_KEY_MISMATCH');
        expect(error.message).not.toMatch(/pass trustHostKeyFingerprint/);
        expect(authOrSessionLines(sshd.log()).length).toBe(before);
      });

      it('a pinned key marked @revoked in known_hosts is refused with HOST_KEY_REVOKED', async () => {
        const revoked = join(dir, `revoked-pin-${variant.name}`);
        writeFileSync(revoked, `@revoked * ${sshd.hostPublicKey}\n`);
        const error = (await variant.connect(sshd, { knownHostsPath: revoked, trustHostKeyFingerprint: sshd.hostKeyFingerprint }))._unsafeUnwrapErr();
        expect(error.code).toBe('HOST_KEY_REVOKED');
      });

      it('reads a hashed known_hosts file (ssh-keygen -H)', async () => {
        const hashed = join(dir, `hashed-${variant.name}`);
        copyFileSync(sshd.knownHostsPath, hashed);
        execFileSync('ssh-keygen', ['-q', '-H', '-f', hashed], { stdio: 'ignore' });
        const transport = (await variant.connect(sshd, { knownHostsPath: hashed }))._unsafeUnwrap();
        expect((await transport.exec(['true']))._unsafeUnwrap().code).toBe(0);
        (await transport.close())._unsafeUnwrap();
      });

      it('reports a key the server does not accept as AUTH_FAILED', async () => {
        const stranger = join(dir, `stranger-${variant.name}`);
        execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', stranger], { stdio: 'ignore' });
        const error = (await variant.connect(sshd, { keyPath: stranger }))._unsafeUnwrapErr();
        expect(error.code).toBe('AUTH_FAILED');
      });

      it('turns a connection cut mid-transfer into a retryable CONNECTION_LOST, and a retry succeeds', async () => {
        const transport: Transport = (await variant.connect(sshd, {}))._unsafeUnwrap();
        let cut = false;
        const result = await transport.exec(['sh', '-c', 'cat >/dev/null'], {
          stdin: endlessStream(),
          onProgress: (p) => {
            if (!cut && p.bytes > 16 * 1024 * 1024) {
              cut = true;
              // Kill the server processes serving our connection: the TCP connection dies.
              for (const pid of sshd.sessionPids()) process.kill(pid, 'SIGKILL');
            }
          },
        });
        const error = result._unsafeUnwrapErr();
        expect(error.code).toBe('CONNECTION_LOST');
        expect(error.isRetryable).toBe(true);
        const retried = await transport.exec(['echo', 'again']);
        expect(retried._unsafeUnwrap().stdout).toBe('again\n');
        (await transport.close())._unsafeUnwrap();
      });
    });
  }

  it('ssh2: refuses a host key marked @revoked', async () => {
    const revoked = join(dir, 'revoked');
    writeFileSync(revoked, `@revoked * ${sshd.hostPublicKey}\n[${sshd.host}]:${sshd.port} ${sshd.hostPublicKey}\n`);
    const error = (await variants[0]!.connect(sshd, { knownHostsPath: revoked }))._unsafeUnwrapErr();
    expect(error.code).toBe('HOST_KEY_REVOKED');
  });
});

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh'))('createTransport from a URL', () => {
  let sshd: TestSshd;
  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  it('picks OpenSSH when ssh is on PATH, ssh2 when asked, local for a path; root comes from the URL', async () => {
    expect(resolveSshImplementation()).toBe('openssh');
    expect(hasExecutable('definitely-not-a-tool-apm')).toBe(false);
    for (const implementation of ['auto', 'ssh2'] as const) {
      const transport = (
        await createTransport(`ssh://root@${sshd.host}:${sshd.port}/tmp`, {
          implementation,
          privateKeyPath: sshd.clientKeyPath,
          knownHostsPath: sshd.knownHostsPath,
        })
      )._unsafeUnwrap();
      expect(transport.kind).toBe(implementation === 'auto' ? 'openssh' : 'ssh2');
      expect((await transport.exec(['pwd']))._unsafeUnwrap().stdout).toBe('/tmp\n');
      (await transport.close())._unsafeUnwrap();
    }
    const local = (await createTransport('/tmp'))._unsafeUnwrap();
    expect(local.kind).toBe('local');
    expect((await createTransport('ftp://x@y/z'))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
  });
});
