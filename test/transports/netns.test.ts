/**
 * Source and destination as two hosts (network namespaces joined by a veth): the SSH
 * transports reach an sshd on the destination's own address, and pulling the link
 * mid-transfer gives a retryable CONNECTION_LOST after which a retry succeeds.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Transport } from '../../src/spec/transport.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { createSshTransport } from '../../src/transports/ssh.js';
import { endlessStream, randomStream } from '../conformance/transport-suite.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

describe.skipIf(skipUnless('root', 'tool:ip', 'tool:ss', 'tool:/usr/sbin/sshd', 'tool:ssh'))('two hosts in network namespaces', () => {
  let pair: NetnsPair;
  let sshd: TestSshd;

  beforeAll(async () => {
    pair = createNetnsPair();
    sshd = await startSshd({ host: pair.destinationAddress, port: 2222, wrap: pair.wrap(pair.destination) });
  });
  afterAll(async () => {
    await sshd?.stop();
    pair?.teardown();
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    if (pair) expect(left).not.toContain(pair.source);
  });

  const factories: Array<[string, () => Promise<Transport>]> = [
    [
      'ssh2',
      async () =>
        (
          await createSshTransport({
            host: sshd.host,
            port: sshd.port,
            username: 'root',
            privateKeyPath: sshd.clientKeyPath,
            knownHostsPath: sshd.knownHostsPath,
            keepaliveIntervalMs: 500,
            keepaliveCountMax: 3,
            connectVia: () => pair.connectFromSource(sshd.host, sshd.port),
          })
        )._unsafeUnwrap(),
    ],
    [
      'openssh',
      async () =>
        (
          await createOpenSshTransport({
            host: sshd.host,
            port: sshd.port,
            username: 'root',
            identityFile: sshd.clientKeyPath,
            knownHostsPath: sshd.knownHostsPath,
            keepaliveIntervalMs: 1000,
            keepaliveCountMax: 3,
            proxyCommand: pair.proxyCommand,
          })
        )._unsafeUnwrap(),
    ],
  ];

  for (const [name, factory] of factories) {
    describe(name, () => {
      it('reaches the destination host from the source host', async () => {
        const transport = await factory();
        const seen = (await transport.exec(['sh', '-c', 'echo "$SSH_CONNECTION"']))._unsafeUnwrap().stdout.trim().split(' ');
        // SSH_CONNECTION = client-ip client-port server-ip server-port
        expect(seen[0]).toBe(pair.sourceAddress);
        expect(seen[2]).toBe(pair.destinationAddress);
        (await transport.close())._unsafeUnwrap();
      });

      it('survives a pulled link: CONNECTION_LOST (retryable), then a retry moves the data intact', async () => {
        const transport = await factory();
        let cut = false;
        try {
          const result = await transport.exec(['sh', '-c', 'cat >/dev/null'], {
            stdin: endlessStream(),
            onProgress: (p) => {
              if (!cut && p.bytes > 8 * 1024 * 1024) {
                cut = true;
                pair.cutLink();
              }
            },
          });
          const error = result._unsafeUnwrapErr();
          expect(error.code).toBe('CONNECTION_LOST');
          expect(error.isRetryable).toBe(true);
        } finally {
          pair.restoreLink();
        }
        const { stream, sha256 } = randomStream(10 * 1024 * 1024);
        const retried = await transport.exec(['sha256sum'], { stdin: stream });
        expect(retried._unsafeUnwrap().stdout.split(' ')[0]).toBe(sha256());
        (await transport.close())._unsafeUnwrap();
      });
    });
  }
});
