/**
 * ExportVm + HttpNfcLease, and task waiting limits, against the local stand-in server
 * (test/esxi/vim-standin.ts) that follows the documented lease protocol: vcsim has no ExportVm.
 */
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { VimClient } from '../../src/esxi/client.js';
import { EsxiAbortedError, EsxiTimeoutError, FileNotFoundError, InvalidLoginError, ProtocolError, UnsafeDatastorePathError } from '../../src/esxi/errors.js';
import { downloadLeaseUrl, uploadToLeaseUrl } from '../../src/esxi/nfc-lease.js';
import { exportVm } from '../../src/esxi/index.js';
import { rewriteLeaseUrl } from '../../src/esxi/nfc-export.js';
import { runTask } from '../../src/esxi/tasks.js';
import { diskByte, startStandin, type Standin } from './vim-standin.js';

const VM = { type: 'VirtualMachine', value: 'vm-1' };
let standin: Standin | undefined;
let client: VimClient | undefined;

afterEach(async () => {
  await client?.logout();
  client = undefined;
  await standin?.close();
  standin = undefined;
});

async function connect(s: Standin): Promise<VimClient> {
  return (await VimClient.connect({ url: s.url, username: 'root', password: 'pw', insecureHttp: true }))._unsafeUnwrap();
}

function expectedSha(size: number): string {
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) buf[i] = diskByte(i);
  return createHash('sha256').update(buf).digest('hex');
}

describe('ExportVm through an HttpNfcLease (local stand-in server)', () => {
  it('refuses a lease targetId that is not one plain file name: no download, sink never called, lease aborted', async () => {
    for (const targetId of ['../../etc/passwd', 'a/b.vmdk', '..', 'disk\0.vmdk']) {
      standin = await startStandin({ diskBytes: 1024, initializingPolls: 0, targetId });
      client = await connect(standin);
      let sinkCalls = 0;
      const e = (await exportVm(client, VM, async () => {
        sinkCalls++;
      }))._unsafeUnwrapErr();
      expect(e, targetId).toBeInstanceOf(UnsafeDatastorePathError);
      expect(e.code).toBe('ESXI_UNSAFE_PATH');
      expect(sinkCalls).toBe(0);
      expect(standin.downloads).toBe(0);
      expect(standin.aborted).toBe(true);
      await client.logout();
      client = undefined;
      await standin.close();
      standin = undefined;
    }
  });

  it('waits for ready, rewrites the * host, streams the disk with the cookie, reports progress, completes', async () => {
    const size = 3 * 1024 * 1024 + 5;
    standin = await startStandin({ diskBytes: size, initializingPolls: 2, chunkDelayMs: 2 });
    client = await connect(standin);
    const hash = createHash('sha256');
    let maxBuffered = 0;
    const result = await exportVm(client, VM, async (device, body) => {
      expect(device.url.host).toBe(`127.0.0.1:${standin!.port}`);
      expect(device.disk).toBe(true);
      await pipeline(body, new Writable({
        write(chunk: Buffer, _e, done) {
          maxBuffered = Math.max(maxBuffered, chunk.length);
          hash.update(chunk);
          done();
        },
      }));
    }, { progressIntervalMs: 20 });
    expect(result.isOk()).toBe(true);
    expect(result._unsafeUnwrap().bytes).toBe(size);
    expect(hash.digest('hex')).toBe(expectedSha(size));
    expect(standin.completed).toBe(true);
    expect(standin.aborted).toBe(false);
    expect(standin.downloadsWithoutCookie).toBe(0);
    expect(standin.progress.length).toBeGreaterThan(0);
    expect(standin.progress.every((p) => p >= 0 && p <= 99)).toBe(true);
    // Streamed, never gathered: no chunk near the file size reached the sink.
    expect(maxBuffered).toBeLessThan(1024 * 1024);
  });

  it('aborts the lease when the sink fails and returns the sink error', async () => {
    standin = await startStandin({ diskBytes: 1024 * 1024, initializingPolls: 0 });
    client = await connect(standin);
    const result = await exportVm(client, VM, async (_d, body) => {
      body.destroy();
      throw new Error('disk full at the destination');
    });
    expect(result._unsafeUnwrapErr().message).toContain('disk full');
    expect(standin.aborted).toBe(true);
    expect(standin.completed).toBe(false);
  });

  it('turns a lease in the error state into the typed fault with the server message', async () => {
    standin = await startStandin({ diskBytes: 10, leaseError: true });
    client = await connect(standin);
    const e = (await exportVm(client, VM, async () => undefined))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(FileNotFoundError);
    expect(e.message).toContain('File disk-0.vmdk was not found');
    expect(standin.aborted).toBe(true);
  });

  it('honours the AbortSignal while the lease initializes', async () => {
    standin = await startStandin({ diskBytes: 10, initializingPolls: 1_000_000 });
    client = await connect(standin);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 150);
    const e = (await exportVm(client, VM, async () => undefined, { signal: controller.signal }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(EsxiAbortedError);
    expect(standin.aborted).toBe(true);
  });

  it('rewrites only a * host', () => {
    expect(rewriteLeaseUrl('https://*/nfc/x/disk-0.vmdk', 'esx1.lan').href).toBe('https://esx1.lan/nfc/x/disk-0.vmdk');
    expect(rewriteLeaseUrl('https://*:902/nfc/x', '::1').host).toBe('[::1]:902');
    expect(rewriteLeaseUrl('https://10.0.0.5/nfc/x', 'esx1.lan').host).toBe('10.0.0.5');
  });
});

describe('task waiting limits (stand-in task that never finishes)', () => {
  it('times out with a retryable EsxiTimeoutError and reports progress', async () => {
    standin = await startStandin({ diskBytes: 1 });
    client = await connect(standin);
    const seen: number[] = [];
    const e = await runTask(client, 'PowerOffVM_Task', VM, [], { timeoutMs: 300, onProgress: (p) => seen.push(p) }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(EsxiTimeoutError);
    expect((e as EsxiTimeoutError).isRetryable).toBe(true);
    expect(seen).toContain(10);
  });

  it('stops waiting when the signal aborts', async () => {
    standin = await startStandin({ diskBytes: 1 });
    client = await connect(standin);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    await expect(runTask(client, 'PowerOffVM_Task', VM, [], { signal: controller.signal })).rejects.toBeInstanceOf(EsxiAbortedError);
  });

  it('reports the stand-in InvalidLogin fault with the server message', async () => {
    standin = await startStandin({ diskBytes: 1 });
    const e = (await VimClient.connect({ url: standin.url, username: 'root', password: 'no', insecureHttp: true }))._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(InvalidLoginError);
    expect(e.message).toContain('incorrect user name or password');
  });
});

describe('lease URLs on another host', () => {
  it('refuse to carry the session cookie there: typed error, no request sent', async () => {
    standin = await startStandin({ diskBytes: 1024 });
    client = await connect(standin);
    const elsewhere = new URL('http://192.0.2.1:9/nfc/lease/disk-0.vmdk'); // TEST-NET-1: nothing answers
    await expect(downloadLeaseUrl(client, elsewhere)).rejects.toThrow(/refusing to send the session cookie/);
    await expect(uploadToLeaseUrl(client, elsewhere, Readable.from([Buffer.alloc(4)]), { create: false, size: 4 })).rejects.toBeInstanceOf(ProtocolError);
  });
});
