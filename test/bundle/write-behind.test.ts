/**
 * WriteBehind: files arrive byte-exact whatever the chunking, memory held stays under the limit
 * when the destination is slower than the producer (a FIFO read slowly), and a write error
 * surfaces from the next push or from flush.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WriteBehind } from '../../src/bundle/write-behind.js';
import { skipUnless } from '../helpers/requirements.js';

let work: string;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'ap-write-behind-'));
});

afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Split `data` into chunks of the given sizes, cycling through them. */
function split(data: Buffer, sizes: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  for (let at = 0, i = 0; at < data.length; i++) {
    const size = sizes[i % sizes.length] as number;
    chunks.push(data.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

describe('WriteBehind', () => {
  it.each([
    ['1-byte chunks', [1]],
    ['odd small chunks', [1, 7, 511, 4096, 100, 16383]],
    ['mixed small and large chunks', [3, 65536, 17, 300_000, 16384, 1]],
    ['large chunks', [1 << 20, 3 << 20]],
  ])('writes a file byte-exact from %s', async (_label, sizes) => {
    const data = randomBytes(sizes[0] === 1 ? 200_000 : 9 * 1024 * 1024 + 123);
    const path = join(work, 'out.bin');
    const handle = await open(path, 'wx');
    const writer = new WriteBehind(handle, { batchBytes: 256 * 1024, limitBytes: 1024 * 1024 });
    let maxHeld = 0;
    try {
      for (const chunk of split(data, sizes)) {
        const wait = writer.push(chunk);
        maxHeld = Math.max(maxHeld, writer.heldBytes);
        if (wait) await wait;
      }
      await writer.flush();
    } finally {
      await writer.settle();
      await handle.close();
    }
    const written = await readFile(path);
    expect(written.length).toBe(data.length);
    expect(createHash('sha256').update(written).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    // The limit plus at most one chunk pushed before the caller was asked to wait.
    expect(maxHeld).toBeLessThanOrEqual(1024 * 1024 + Math.max(...sizes));
  });

  it.skipIf(skipUnless('tool:mkfifo'))('keeps memory under its limit when the destination is slow (a FIFO read slowly)', async () => {
    const fifo = join(work, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const total = 48 * 1024 * 1024;
    const limit = 2 * 1024 * 1024;
    const chunk = 64 * 1024;
    // The reader takes 256 KiB, then pauses, so the writer outruns it.
    const reader = createReadStream(fifo, { highWaterMark: 256 * 1024 });
    let received = 0;
    const readHash = createHash('sha256');
    const done = new Promise<void>((resolve, reject) => {
      reader.on('data', (data: string | Buffer) => {
        received += data.length;
        readHash.update(data);
        reader.pause();
        setTimeout(() => reader.resume(), 1);
      });
      reader.on('end', resolve);
      reader.on('error', reject);
    });
    const handle = await open(fifo, 'w');
    const writer = new WriteBehind(handle, { batchBytes: 512 * 1024, limitBytes: limit });
    const sentHash = createHash('sha256');
    let maxHeld = 0;
    let waits = 0;
    try {
      for (let sent = 0; sent < total; sent += chunk) {
        const data = Buffer.alloc(chunk, sent / chunk);
        sentHash.update(data);
        const wait = writer.push(data);
        maxHeld = Math.max(maxHeld, writer.heldBytes);
        if (wait) {
          waits++;
          await wait;
        }
      }
      await writer.flush();
    } finally {
      await writer.settle();
      await handle.close();
    }
    await done;
    expect(received).toBe(total);
    expect(readHash.digest('hex')).toBe(sentHash.digest('hex'));
    expect(waits).toBeGreaterThan(0);
    expect(maxHeld).toBeLessThanOrEqual(limit + chunk);
  }, 60_000);

  it('reports a write error from push or flush, and settles', async () => {
    const path = join(work, 'read-only.bin');
    await writeFile(path, '');
    const handle = await open(path, 'r'); // writes fail with EBADF
    const writer = new WriteBehind(handle, { batchBytes: 1024, limitBytes: 4096 });
    let error: unknown;
    try {
      for (let i = 0; i < 100; i++) {
        const wait = writer.push(Buffer.alloc(1024, i));
        if (wait) await wait;
      }
      await writer.flush();
    } catch (e) {
      error = e;
    } finally {
      await writer.settle();
      await handle.close();
    }
    expect((error as NodeJS.ErrnoException | undefined)?.code).toBe('EBADF');
    expect(() => writer.push(Buffer.alloc(1))).toThrow();
  });
});
