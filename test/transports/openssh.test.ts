import { afterAll, beforeAll, describe } from 'vitest';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { runTransportConformance } from '../conformance/transport-suite.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:ssh-keygen'))('OpenSSH transport against a real sshd', () => {
  let sshd: TestSshd;
  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  runTransportConformance('openssh', async () =>
    (
      await createOpenSshTransport({
        host: sshd.host,
        port: sshd.port,
        username: 'root',
        identityFile: sshd.clientKeyPath,
        knownHostsPath: sshd.knownHostsPath,
      })
    )._unsafeUnwrap(),
  );
});
