/**
 * The unpacker's two write paths (small files written with synchronous calls, larger ones through
 * a WriteBehind): byte-exact whatever the chunking of the input, tar's overwrite rules kept when
 * the optimistic create meets an existing name, NO_SPACE on a full tmpfs from either path, and
 * flat memory while unpacking a large file.
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import * as tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/bundle/pack.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import type { ResourceProfileInput } from '../../src/policy/profile.js';
import { skipUnless } from '../helpers/requirements.js';

const execFileAsync = promisify(execFile);

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ap-unpack-paths-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function profileOf(files: string[], cwd: string): ResourceProfileInput {
  const sizeOf = (path: string) => statSync(path).size;
  return {
    executable: files[0] as string,
    argv: ['x'],
    cwd,
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
    executableSize: sizeOf(files[0] as string),
    files: files.map((path) => ({ path, kind: 'regular', access: ['read'], size: sizeOf(path) })),
  };
}

/** Deterministic, distinct content. */
function contentOf(index: number, size: number): Buffer {
  const data = Buffer.alloc(size + 4);
  let x = index * 2654435761 + 1;
  for (let i = 0; i < size; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    data.writeUInt32LE(x, i & ~3);
  }
  return data.subarray(0, size);
}

/** `data` cut into chunks of the given sizes, cycling. */
function* slices(data: Buffer, sizes: number[]): Generator<Buffer> {
  for (let at = 0, i = 0; at < data.length; i++) {
    const size = sizes[i % sizes.length] as number;
    yield data.subarray(at, at + size);
    at += size;
  }
}

async function plainTar(entries: { header: Partial<tar.Header> & { name: string }; data?: Buffer | string }[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk);
  })();
  for (const entry of entries) {
    await new Promise<void>((done, fail) => pack.entry({ mode: 0o644, mtime: new Date(), ...entry.header }, entry.data ?? '', (e) => (e ? fail(e) : done())));
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

describe('unpackBundle write paths', () => {
  let tree: string;
  let bundle: Buffer;
  const sizes = [0, 1, 511, 512, 4096, 65_537, 256 * 1024, 256 * 1024 + 1, 1024 * 1024 + 3, 3 * 1024 * 1024];
  const files: { path: string; sha: string }[] = [];

  beforeAll(async () => {
    tree = join(work, 'tree');
    await mkdir(tree);
    for (const [i, size] of sizes.entries()) {
      const path = join(tree, `f${i}-${size}.bin`);
      const data = contentOf(i, size);
      await writeFile(path, data);
      files.push({ path, sha: createHash('sha256').update(data).digest('hex') });
    }
    const out = join(work, 'paths.bundle');
    const packed = await packBundle(profileOf(files.map((f) => f.path), tree), createWriteStream(out));
    expect(packed.isOk()).toBe(true);
    bundle = await readFile(out);
  });

  it.each([
    ['one buffer', [Number.MAX_SAFE_INTEGER]],
    ['1-byte and odd chunks', [1, 3, 700, 1, 13, 4095]],
    ['chunks that straddle headers and files', [511, 513, 65_536, 100_003]],
  ])('unpacks files of every size byte-exact from %s', async (label, chunkSizes) => {
    // 1-byte chunks of a 5 MiB bundle would take minutes through tar-stream: only the head of the
    // stream is cut that fine, the rest comes in larger pieces.
    const stream =
      chunkSizes[0] === 1
        ? Readable.from(
            (function* () {
              yield* slices(bundle.subarray(0, 300_000), chunkSizes);
              yield* slices(bundle.subarray(300_000), [7, 9000, 1, 70_000]);
            })(),
          )
        : Readable.from(slices(bundle, chunkSizes));
    const staging = join(work, `staging-${label.replace(/\W+/g, '-')}`);
    const result = await unpackBundle(stream, staging);
    expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
    expect(result._unsafeUnwrap().verified).toBe(true);
    for (const file of files) {
      const data = await readFile(join(staging, file.path));
      expect(createHash('sha256').update(data).digest('hex'), file.path).toBe(file.sha);
    }
    await rm(staging, { recursive: true, force: true });
  });

  it.each([
    ['small', 100],
    ['large', 600 * 1024],
  ])('keeps tar overwrite rules for a %s file: a later entry replaces a file or symlink, never writes through it; a directory is refused', async (_label, size) => {
    const staging = join(work, `staging-overwrite-${size}`);
    const outside = join(work, `outside-${size}`);
    await writeFile(outside, 'untouched');
    const first = contentOf(1, size);
    const second = contentOf(2, size);
    const archive = await plainTar([
      { header: { name: 'twice' }, data: first },
      { header: { name: 'twice' }, data: second },
      { header: { name: 'link', type: 'symlink', linkname: '/target' } },
      { header: { name: 'link' }, data: second },
      { header: { name: 'dangling', type: 'symlink', linkname: 'nowhere' } },
      { header: { name: 'dangling' }, data: first },
    ]);
    const result = await unpackBundle(Readable.from([archive]), staging, { requireManifest: false });
    expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
    expect((await readFile(join(staging, 'twice'))).equals(second)).toBe(true);
    expect((await lstat(join(staging, 'link'))).isFile()).toBe(true);
    expect((await readFile(join(staging, 'link'))).equals(second)).toBe(true);
    expect((await lstat(join(staging, 'dangling'))).isFile()).toBe(true);
    await expect(lstat(join(staging, 'nowhere'))).rejects.toThrow();
    await expect(lstat(join(staging, 'target'))).rejects.toThrow();
    expect(await readFile(outside, 'utf8')).toBe('untouched');

    const onDirectory = await plainTar([
      { header: { name: 'dir', type: 'directory', mode: 0o755 } },
      { header: { name: 'dir' }, data: first },
    ]);
    const refused = await unpackBundle(Readable.from([onDirectory]), join(work, `staging-dir-${size}`), { requireManifest: false });
    expect(refused._unsafeUnwrapErr().code).toBe('BUNDLE_UNSAFE_ENTRY');
    expect(refused._unsafeUnwrapErr().message).toContain('a directory of the same name');
    await expect(lstat(join(work, `staging-dir-${size}`))).rejects.toThrow();
  });

  it('a large file finished behind the next entries gets its mode and time, and a hard link to it sees the whole file', async () => {
    const staging = join(work, 'staging-tail');
    const mtime = new Date('2020-02-02T02:02:02Z');
    const big = contentOf(9, 5 * 1024 * 1024 + 77);
    const archive = await plainTar([
      { header: { name: 'big', mode: 0o640, mtime }, data: big },
      { header: { name: 'big-link', type: 'link', linkname: 'big' } },
      { header: { name: 'next', mode: 0o600, mtime }, data: 'small' },
      { header: { name: 'big2', mode: 0o604, mtime }, data: big.subarray(0, 700 * 1024) },
    ]);
    const result = await unpackBundle(Readable.from(slices(archive, [65_536])), staging, { requireManifest: false });
    expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
    const stats = await lstat(join(staging, 'big'));
    expect(stats.mode & 0o7777).toBe(0o640);
    expect(stats.mtime.getTime()).toBe(mtime.getTime());
    expect(stats.nlink).toBe(2);
    expect((await readFile(join(staging, 'big-link'))).equals(big)).toBe(true);
    expect(((await lstat(join(staging, 'big2'))).mode & 0o7777)).toBe(0o604);
    expect((await readFile(join(staging, 'big2'))).equals(big.subarray(0, 700 * 1024))).toBe(true);
  });

  it('a symlink planted where a later file goes is replaced, not followed, even under a remembered directory', async () => {
    const staging = join(work, 'staging-planted');
    const archive = await plainTar([
      { header: { name: 'd', type: 'directory', mode: 0o755 } },
      { header: { name: 'd/a' }, data: 'one' },
      { header: { name: 'd/b', type: 'symlink', linkname: '../../../../../../../../etc/passwd-not-here' } },
      { header: { name: 'd/b' }, data: 'two' },
    ]);
    // The symlink escapes, so the whole archive is refused by name before anything is followed.
    const result = await unpackBundle(Readable.from([archive]), staging, { requireManifest: false });
    expect(result._unsafeUnwrapErr().code).toBe('BUNDLE_UNSAFE_ENTRY');
    const inside = await plainTar([
      { header: { name: 'd', type: 'directory', mode: 0o755 } },
      { header: { name: 'd/a' }, data: 'one' },
      { header: { name: 'd/b', type: 'symlink', linkname: 'a' } },
      { header: { name: 'd/b' }, data: 'two' },
    ]);
    const ok = await unpackBundle(Readable.from([inside]), staging, { requireManifest: false });
    expect(ok.isOk()).toBe(true);
    expect(await readFile(join(staging, 'd/a'), 'utf8')).toBe('one');
    expect(await readFile(join(staging, 'd/b'), 'utf8')).toBe('two');
    expect((await lstat(join(staging, 'd/b'))).isSymbolicLink()).toBe(false);
    await expect(readlink(join(staging, 'd/b'))).rejects.toThrow();
  });
});

describe.skipIf(skipUnless('root', 'tool:mount', 'tool:umount'))('unpackBundle on a full tmpfs, from either write path', () => {
  let mountPoint: string;
  let bundles: { small: string; large: string; tail: string };

  beforeAll(async () => {
    mountPoint = join(work, 'small-disk');
    await mkdir(mountPoint);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'ap-migrate-test', mountPoint]);
    const smallTree = join(work, 'many-small');
    await mkdir(smallTree);
    const smallFiles: string[] = [];
    for (let i = 0; i < 40; i++) {
      const path = join(smallTree, `s${i}.bin`);
      await writeFile(path, contentOf(i, 100 * 1024));
      smallFiles.push(path);
    }
    const largeTree = join(work, 'one-large');
    await mkdir(largeTree);
    await writeFile(join(largeTree, 'big.bin'), contentOf(7, 6 * 1024 * 1024 + 5));
    // The second file does not fit; it is under the WriteBehind's limit, so (given in one piece)
    // its failing write is only seen by its tail, finishing behind the next entry.
    const tailTree = join(work, 'tail-large');
    await mkdir(tailTree);
    await writeFile(join(tailTree, 'a-filler.bin'), contentOf(8, 1536 * 1024));
    await writeFile(join(tailTree, 'b-big.bin'), contentOf(9, 900 * 1024));
    await writeFile(join(tailTree, 'c-small.bin'), 'after');
    bundles = { small: join(work, 'small.bundle'), large: join(work, 'large.bundle'), tail: join(work, 'tail.bundle') };
    expect((await packBundle(profileOf(smallFiles, smallTree), createWriteStream(bundles.small))).isOk()).toBe(true);
    expect((await packBundle(profileOf([join(largeTree, 'big.bin')], largeTree), createWriteStream(bundles.large))).isOk()).toBe(true);
    expect((await packBundle(profileOf(['a-filler.bin', 'b-big.bin', 'c-small.bin'].map((name) => join(tailTree, name)), tailTree), createWriteStream(bundles.tail))).isOk()).toBe(true);
  });

  afterAll(() => {
    if (mountPoint) execFileSync('umount', [mountPoint], { stdio: 'ignore' });
  });

  it.each(['small', 'large', 'tail'] as const)('%s files: NO_SPACE, staging removed', async (kind) => {
    // Fed in 64 KiB chunks, as a pipe delivers them; the tail case in one buffer, so the big file's
    // data is all handed over before its first write fails, and the failure surfaces in its tail.
    const input = kind === 'tail' ? Readable.from([await readFile(bundles.tail)]) : createReadStream(bundles[kind], { highWaterMark: 64 * 1024 });
    const result = await unpackBundle(input, join(mountPoint, 'staging'));
    const error = result._unsafeUnwrapErr();
    expect(error.code, error.message).toBe('NO_SPACE');
    expect(await readdir(mountPoint)).toEqual([]);
  });
});

describe('unpackBundle memory', () => {
  it('unpacks a 512 MiB file with RSS growth under 100 MB (measured in a child process)', async () => {
    const source = join(work, 'sparse.bin');
    const handle = await open(source, 'w');
    await handle.truncate(512 * 1024 * 1024);
    for (let offset = 0; offset < 512 * 1024 * 1024; offset += 32 * 1024 * 1024) {
      await handle.write(contentOf(offset, 1024 * 1024), 0, 1024 * 1024, offset);
    }
    await handle.close();
    const bundlePath = join(work, 'memory.bundle');
    const packed = await packBundle(profileOf([source], work), createWriteStream(bundlePath));
    expect(packed.isOk(), packed.isErr() ? packed.error.message : '').toBe(true);
    await rm(source);
    const script = join(work, 'measure.mts');
    await writeFile(
      script,
      `
import { createReadStream } from 'node:fs';
import { unpackBundle } from ${JSON.stringify(resolve('src/bundle/unpack.ts'))};
globalThis.gc?.();
const baseline = process.memoryUsage().rss;
let peak = baseline;
const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 10);
const result = await unpackBundle(createReadStream(${JSON.stringify(bundlePath)}), ${JSON.stringify(join(work, 'memory-staging'))});
clearInterval(timer);
peak = Math.max(peak, process.memoryUsage().rss);
console.log(JSON.stringify({ ok: result.isOk(), dataBytes: result.isOk() ? result.value.dataBytes : 0, baseline, peak }));
`,
    );
    try {
      const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', script], { cwd: process.cwd(), maxBuffer: 1 << 20 });
      const measured = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { ok: boolean; dataBytes: number; baseline: number; peak: number };
      expect(measured.ok).toBe(true);
      expect(measured.dataBytes).toBe(512 * 1024 * 1024);
      const growthMb = (measured.peak - measured.baseline) / 1e6;
      console.log(`unpack of 512 MiB: RSS growth ${growthMb.toFixed(1)} MB`);
      expect(growthMb).toBeLessThan(100);
    } finally {
      await rm(join(work, 'memory-staging'), { recursive: true, force: true });
      await rm(bundlePath, { force: true });
    }
  }, 120_000);
});
