/**
 * The packer's own header encoder writes exactly the bytes tar-stream writes for the same entry.
 */
import fc from 'fast-check';
import * as tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { tarHeaderBytes } from '../../src/bundle/estimate.js';
import { encodeTarHeader, type TarEntryType, type TarHeaderFields } from '../../src/bundle/tar-header.js';

/** The bytes tar-stream writes for one entry, without data and end blocks. */
async function tarStreamHeader(fields: TarHeaderFields): Promise<Buffer> {
  const pack = tar.pack();
  const header: Partial<tar.Header> & { name: string } = {
    name: fields.name,
    type: fields.type,
    // The packer passes lstat modes, which always carry file-type bits (tar-stream turns a mode of 0 into 0644).
    mode: fields.mode | 0o100000,
    uid: fields.uid,
    gid: fields.gid,
    mtime: new Date(fields.mtime * 1000),
    ...(fields.linkname !== undefined ? { linkname: fields.linkname } : {}),
    ...(fields.devmajor !== undefined ? { devmajor: fields.devmajor, devminor: fields.devminor ?? 0 } : {}),
    ...(fields.pax ? { pax: fields.pax } : {}),
  };
  if (fields.type === 'file') pack.entry(header, Buffer.alloc(fields.size));
  else pack.entry(header);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk);
  const all = Buffer.concat(chunks);
  return all.subarray(0, all.length - 1024 - Math.ceil(fields.size / 512) * 512);
}

const component = fc.oneof(
  fc.stringMatching(/^[a-z0-9._-]{1,20}$/),
  fc.stringMatching(/^[a-z]{90,130}$/),
  fc.constantFrom('ünï', '文件', '😀x'),
);
const fieldsArb: fc.Arbitrary<TarHeaderFields> = fc
  .record({
    parts: fc.array(component, { minLength: 1, maxLength: 4 }),
    type: fc.constantFrom<TarEntryType>('file', 'link', 'symlink', 'directory', 'fifo', 'character-device'),
    mode: fc.integer({ min: 0, max: 0o7777 }),
    uid: fc.oneof(fc.integer({ min: 0, max: 0o777777 }), fc.integer({ min: 0o1000000, max: 2 ** 31 })),
    gid: fc.integer({ min: 0, max: 70000 }),
    mtime: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    size: fc.integer({ min: 0, max: 3000 }),
    link: fc.array(component, { minLength: 1, maxLength: 3 }),
    dev: fc.tuple(fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 0, max: 1 << 20 })),
  })
  .map(({ parts, type, mode, uid, gid, mtime, size, link, dev }) => {
    const name = 'root/' + parts.join('/') + (type === 'directory' ? '/' : '');
    const big = uid > 0o777777 || gid > 0o777777;
    return {
      name,
      type,
      mode,
      uid,
      gid,
      mtime,
      size: type === 'file' ? size : 0,
      ...(type === 'link' || type === 'symlink' ? { linkname: link.join('/') } : {}),
      ...(type === 'character-device' ? { devmajor: dev[0], devminor: dev[1] } : {}),
      ...(big ? { pax: { uid: String(uid), gid: String(gid) } } : {}),
    };
  });

describe('encodeTarHeader', () => {
  it('matches tar-stream byte for byte (ustar and PAX), and tarHeaderBytes', async () => {
    await fc.assert(
      fc.asyncProperty(fieldsArb, async (fields) => {
        const ours = encodeTarHeader(fields);
        expect(ours.equals(await tarStreamHeader(fields))).toBe(true);
        expect(ours.length).toBe(tarHeaderBytes({ name: fields.name, linkname: fields.linkname, pax: fields.pax }));
      }),
      { numRuns: 400 },
    );
  });

  it('writes base-256 sizes of 8 GiB and more like tar-stream', () => {
    const header = encodeTarHeader({ name: 'root/big', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1, size: 2 ** 34 + 5 });
    expect(header[124]).toBe(0x80);
    expect(header.readUIntBE(131, 5)).toBe(2 ** 34 + 5);
  });
});
