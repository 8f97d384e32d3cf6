/**
 * Test bytes for datastore files: a deterministic, non-repeating disk stream (so a misplaced block
 * changes the hash) and the SHA-256 of a file read back from a host over `/folder`.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { VimClient } from '../../src/esxi/client.js';
import { openDatastoreFile } from '../../src/esxi/datastore-http.js';

/** `size` bytes of a counter pattern; every byte pushed also goes into `hash`. */
export function diskStream(size: number, hash: ReturnType<typeof createHash>): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= size) {
        this.push(null);
        return;
      }
      const n = Math.min(1 << 20, size - sent);
      const buf = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i += 4) buf.writeUInt32LE(((sent + i) * 2654435761) >>> 0, i);
      sent += n;
      hash.update(buf);
      this.push(buf);
    },
  });
}

/** SHA-256 (hex) of a datastore file, streamed from the host. */
export async function remoteSha(client: VimClient, file: { datacenter: string; datastore: string; path: string }): Promise<string> {
  const d = await openDatastoreFile(client, file);
  const hash = createHash('sha256');
  for await (const chunk of d.body as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}
