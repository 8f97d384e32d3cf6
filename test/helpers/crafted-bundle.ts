/**
 * Hand-made tars for the crafted-bundle tests (unpackBundle's and the POSIX receiver's): entries
 * written with tar-stream exactly as given, after a valid bundle.json unless told otherwise.
 */
import * as tar from 'tar-stream';
import { makeBundleInfo } from '../../src/bundle/estimate.js';
import { ResourceProfileSchema } from '../../src/policy/profile.js';

/** One entry: its header as tar-stream takes it (PAX records included) and its data. */
export type CraftedEntry = { header: Partial<tar.Header> & { name: string; pax?: Record<string, string> }; data?: string | Buffer };

/** The smallest valid profile, for bundle.json and manifests. */
export const CRAFT_PROFILE = ResourceProfileSchema.parse({
  executable: '/bin/true',
  argv: ['true'],
  cwd: '/',
  uid: 0,
  gid: 0,
  platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
});

/** A tar made with tar-stream; with `bundle`, a valid bundle.json comes first. */
export async function craftBundle(entries: CraftedEntry[], bundle = true): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk);
  })();
  const all = bundle ? [{ header: { name: 'bundle.json' }, data: JSON.stringify(makeBundleInfo(CRAFT_PROFILE, new Date(), 1, 1)) }, ...entries] : entries;
  for (const entry of all) {
    await new Promise<void>((resolve, reject) => pack.entry({ mode: 0o644, mtime: new Date(), ...entry.header }, entry.data ?? '', (e) => (e ? reject(e) : resolve())));
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}
