/**
 * `Transport.stream` over the local, ssh2 and OpenSSH transports: 50 MiB of a remote command's
 * stdout arrive intact with memory bounded (backpressure reaches the command), a non-zero exit is
 * EXEC_NONZERO with its stderr, and an abort kills the remote command.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Transport } from '../../src/spec/transport.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { createSshTransport } from '../../src/transports/ssh.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const MiB = 1024 * 1024;
// Three times the peak bound below: a stream buffered whole could never stay under it.
const TOTAL = 200 * MiB;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:head'))('Transport.stream', () => {
  let sshd: TestSshd;
  const opened: Transport[] = [];

  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    for (const t of opened) await t.close();
    await sshd?.stop();
  });

  const factories: Array<[string, () => Promise<Transport>]> = [
    ['local', async () => createLocalTransport()],
    [
      'ssh2',
      async () =>
        (await createSshTransport({ host: sshd.host, port: sshd.port, username: 'root', privateKeyPath: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath }))._unsafeUnwrap(),
    ],
    [
      'openssh',
      async () =>
        (await createOpenSshTransport({ host: sshd.host, port: sshd.port, username: 'root', identityFile: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath }))._unsafeUnwrap(),
    ],
  ];

  for (const [name, factory] of factories) {
    describe(name, () => {
      let transport: Transport;
      beforeAll(async () => {
        transport = await factory();
        opened.push(transport);
      });

      it('streams 200 MiB with bounded memory; a stalled reader holds the command back', { timeout: 60_000 }, async () => {
        expect(typeof transport.stream).toBe('function');
        global.gc?.();
        const before = process.memoryUsage.rss();
        const command = (await transport.stream!(['head', '-c', String(TOTAL), '/dev/zero']))._unsafeUnwrap();
        // Nobody reads for a while: the command must be held back, not buffered here.
        await sleep(700);
        const whileStalled = process.memoryUsage.rss() - before;
        let bytes = 0;
        let peak = whileStalled;
        for await (const chunk of command.stdout) {
          bytes += (chunk as Buffer).length;
          if ((bytes & (4 * MiB - 1)) < (chunk as Buffer).length) peak = Math.max(peak, process.memoryUsage.rss() - before);
        }
        const exit = await command.exit;
        expect(exit.isOk(), exit.isErr() ? exit.error.message : '').toBe(true);
        expect(bytes).toBe(TOTAL);
        console.log(`${name}: ${bytes} bytes, RSS growth stalled ${(whileStalled / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB`);
        expect(whileStalled).toBeLessThan(16 * MiB);
        // Garbage chunks wait for the collector, so the peak is not the buffer size; it stays a fraction of the stream.
        expect(peak).toBeLessThan(64 * MiB);
      });

      it('feeds stdin, captures stderr, and reports a non-zero exit as EXEC_NONZERO with its stderr', async () => {
        const ok = (await transport.stream!(['sh', '-c', 'cat; echo note >&2'], { stdin: 'hello\n' }))._unsafeUnwrap();
        const chunks: Buffer[] = [];
        for await (const c of ok.stdout) chunks.push(c as Buffer);
        expect(Buffer.concat(chunks).toString()).toBe('hello\n');
        expect((await ok.exit)._unsafeUnwrap().stderr).toBe('note\n');

        const bad = (await transport.stream!(['sh', '-c', 'echo partial; echo "it broke" >&2; exit 3']))._unsafeUnwrap();
        bad.stdout.on('error', () => {});
        bad.stdout.resume();
        const error = (await bad.exit)._unsafeUnwrapErr();
        expect(error.code).toBe('EXEC_NONZERO');
        expect(error.details.stderr).toBe('it broke');
      });

      it('abort kills the remote command', { timeout: 30_000 }, async () => {
        // A sleep nothing else runs: its argument is unique to this test.
        const seconds = `299.${process.pid}${name.length}`;
        const look = `pgrep -f '^sleep ${seconds.replace('.', '\\.')}$' || true`;
        const controller = new AbortController();
        const command = (await transport.stream!(['sleep', seconds], { signal: controller.signal }))._unsafeUnwrap();
        command.stdout.on('error', () => {});
        command.stdout.resume();
        await sleep(500);
        const running = (await transport.exec(['sh', '-c', look]))._unsafeUnwrap().stdout.trim();
        expect(running).not.toBe('');
        controller.abort();
        expect((await command.exit)._unsafeUnwrapErr().code).toBe('ABORTED');
        let left = running;
        for (let i = 0; i < 20 && left; i++) {
          await sleep(100);
          left = (await transport.exec(['sh', '-c', look]))._unsafeUnwrap().stdout.trim();
        }
        expect(left).toBe('');
      });
    });
  }
});
