import { afterAll, beforeAll, describe } from 'vitest';
import { createSshTransport } from '../../src/transports/ssh.js';
import { runTransportConformance } from '../conformance/transport-suite.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh-keygen'))('ssh2 transport against a real sshd', () => {
  let sshd: TestSshd;
  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  runTransportConformance('ssh2', async () =>
    (
      await createSshTransport({
        host: sshd.host,
        port: sshd.port,
        username: 'root',
        privateKeyPath: sshd.clientKeyPath,
        knownHostsPath: sshd.knownHostsPath,
      })
    )._unsafeUnwrap(),
  );
});
