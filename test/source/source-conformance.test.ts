/**
 * The Source conformance suite against the local source and against SSH sources (OpenSSH and
 * ssh2 transports) into a network-namespace host: the processes it freezes, thaws and stops are
 * started and checked on that host.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { createExecutorSource } from '../../src/source/executor-source.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { createSshTransport } from '../../src/transports/ssh.js';
import { sourceConformance } from '../conformance/source-suite.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

describe('local source', () => {
  sourceConformance('local', async () => ({ source: createExecutorSource() }));
});

describe.skipIf(skipUnless('root', 'tool:ip', 'tool:ss', 'tool:/usr/sbin/sshd', 'tool:ssh'))('SSH sources into a network-namespace host', () => {
  let pair: NetnsPair | undefined;
  let sshd: TestSshd | undefined;
  beforeAll(async () => {
    pair = createNetnsPair();
    sshd = await startSshd({ host: pair.destinationAddress, port: 22, wrap: pair.wrap(pair.destination) });
  });
  afterAll(async () => {
    await sshd?.stop();
    pair?.teardown();
  });

  describe('openssh', () => {
    sourceConformance('openssh', async () => {
      const transport = (
        await createOpenSshTransport({ host: sshd!.host, port: sshd!.port, username: 'root', identityFile: sshd!.clientKeyPath, knownHostsPath: sshd!.knownHostsPath, proxyCommand: pair!.proxyCommand })
      )._unsafeUnwrap();
      return { source: createExecutorSource(transport), close: async () => void (await transport.close()) };
    });
  });

  describe('ssh2', () => {
    sourceConformance('ssh2', async () => {
      const transport = (
        await createSshTransport({
          host: sshd!.host,
          port: sshd!.port,
          username: 'root',
          privateKeyPath: sshd!.clientKeyPath,
          knownHostsPath: sshd!.knownHostsPath,
          connectVia: () => pair!.connectFromSource(sshd!.host, sshd!.port),
        })
      )._unsafeUnwrap();
      return { source: createExecutorSource(transport), close: async () => void (await transport.close()) };
    });
  });
});
