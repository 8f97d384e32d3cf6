/**
 * What the receiver is handed: an empty stream, a stream cut anywhere (also right after a large
 * file's header), a stream closed without ending, and arguments that are not a stream or a
 * directory. Each is a typed error (never ok, never a raw TypeError), and nothing is left behind.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/bundle/pack.js';
import { unpackBundle, type UnpackOptions } from '../../src/bundle/unpack.js';
import { ResourceProfileSchema } from '../../src/policy/profile.js';

const RECEIVER = resolve('dist/receiver.cjs');
const LARGE = 3 * 1024 * 1024; // above the 256 KiB small-file limit: written through the write-behind

let work: string;
let bundle: Buffer;
/** Offset of the large file's tar header in `bundle`. */
let largeHeader: number;
let parent: string;
let staging: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ap-receiver-input-'));
  const tree = join(work, 'tree');
  await mkdir(tree);
  await writeFile(join(tree, 'small.txt'), 'small file\n');
  await writeFile(join(tree, 'large.bin'), Buffer.alloc(LARGE, 7));
  const profile = ResourceProfileSchema.parse({
    executable: join(tree, 'small.txt'),
    argv: ['small'],
    cwd: tree,
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
    files: [{ path: join(tree, 'large.bin'), kind: 'regular', access: ['read'], size: LARGE }],
  });
  const path = join(work, 'bundle.tar');
  const packed = await packBundle(profile, createWriteStream(path));
  expect(packed.isOk(), packed.isErr() ? packed.error.message : '').toBe(true);
  bundle = await readFile(path);
  largeHeader = bundle.indexOf(Buffer.from(`root${tree}/large.bin\0`));
  expect(largeHeader).toBeGreaterThan(0);
  expect(largeHeader % 512).toBe(0);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

beforeEach(async () => {
  parent = join(work, `case-${Math.random().toString(36).slice(2)}`);
  await mkdir(parent);
  staging = join(parent, 'staging');
});

/** `buffer` in chunks of `size` bytes, as a pipe delivers it. */
function chunked(buffer: Buffer, size = 64 * 1024): Readable {
  return Readable.from((function* () {
    for (let at = 0; at < buffer.length; at += size) yield buffer.subarray(at, Math.min(buffer.length, at + size));
  })());
}

async function expectCode(input: Readable, code: string, options: UnpackOptions = {}): Promise<string> {
  const result = await unpackBundle(input, staging, options);
  expect(result.isErr(), result.isOk() ? 'unpacked' : '').toBe(true);
  const error = result._unsafeUnwrapErr();
  expect(error.code, error.message).toBe(code);
  expect(await readdir(parent)).toEqual([]); // staging removed
  return error.message;
}

describe('an empty or cut stream is BUNDLE_TRUNCATED', () => {
  it('an empty stream, with requireManifest true or by default', async () => {
    const message = await expectCode(Readable.from([]), 'BUNDLE_TRUNCATED', { requireManifest: true });
    expect(message).toContain('bundle.json');
    await expectCode(Readable.from([]), 'BUNDLE_TRUNCATED');
  });

  it('a tar with only its end-of-archive blocks', async () => {
    await expectCode(Readable.from([Buffer.alloc(1024)]), 'BUNDLE_TRUNCATED');
  });

  it('an empty plain tar with requireManifest: false is an empty tree', async () => {
    const result = await unpackBundle(Readable.from([]), staging, { requireManifest: false });
    expect(result._unsafeUnwrap()).toMatchObject({ isBundle: false, verified: false, bytesRead: 0, counts: {} });
  });

  it('cut right after a large file header, and anywhere in its data, in one chunk or many', async () => {
    const cuts = [largeHeader + 1, largeHeader + 512, largeHeader + 512 + 1, largeHeader + 512 + 1000, largeHeader + 512 + 65_536, largeHeader + 512 + LARGE - 1];
    for (const cut of cuts) {
      const part = bundle.subarray(0, cut);
      const one = await expectCode(Readable.from([part]), 'BUNDLE_TRUNCATED');
      expect(one, `cut at ${cut}`).not.toContain('Stream was destroyed');
      await expectCode(chunked(part), 'BUNDLE_TRUNCATED');
      await expectCode(chunked(part, 511), 'BUNDLE_TRUNCATED');
    }
  });

  it('cut cleanly before the manifest', async () => {
    const manifest = bundle.indexOf(Buffer.from('manifest.json\0'));
    expect(manifest % 512).toBe(0);
    await expectCode(chunked(bundle.subarray(0, manifest)), 'BUNDLE_TRUNCATED');
  });

  it('a stream closed without an error before its end (in a large file) does not hang', async () => {
    const input = new Readable({ read() {} });
    input.push(bundle.subarray(0, largeHeader + 512 + 100_000));
    setTimeout(() => input.destroy(), 50);
    await expectCode(input, 'BUNDLE_TRUNCATED');
  });

  it('an input that fails with an error is BUNDLE_IO carrying it', async () => {
    const input = new Readable({ read() {} });
    input.push(bundle.subarray(0, largeHeader + 512 + 100_000));
    setTimeout(() => input.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })), 50);
    expect(await expectCode(input, 'BUNDLE_IO')).toContain('ECONNRESET');
  });

  it('the whole bundle still unpacks and verifies, in one chunk and in small ones', async () => {
    const one = await unpackBundle(Readable.from([bundle]), staging);
    expect(one._unsafeUnwrap()).toMatchObject({ isBundle: true, verified: true, bytesRead: bundle.length });
    const again = await unpackBundle(chunked(bundle, 511), join(parent, 'again'));
    expect(again._unsafeUnwrap().dataBytes).toBe(one._unsafeUnwrap().dataBytes);
  });
});

describe('the receiver program', () => {
  function receive(stdin: Buffer, dir: string): { status: number | null; line: { ok: boolean; error?: { code: string }; report?: { verified: boolean } } } {
    const run = spawnSync(process.execPath, [RECEIVER, 'unpack', dir], { input: stdin, encoding: 'utf8', timeout: 60_000 });
    return { status: run.status, line: JSON.parse(run.stdout.trim()) as never };
  }

  it('prints ok:false BUNDLE_TRUNCATED for an empty stdin, exit 1, nothing left', () => {
    expect(existsSync(RECEIVER), 'dist/receiver.cjs (built by the global setup)').toBe(true);
    const empty = receive(Buffer.alloc(0), staging);
    expect(empty.line).toMatchObject({ ok: false, error: { code: 'BUNDLE_TRUNCATED' } });
    expect(empty.status).toBe(1);
    expect(existsSync(staging)).toBe(false);
  });

  it('prints ok:false BUNDLE_TRUNCATED for a stream cut after a large file header; ok:true for the whole bundle', () => {
    const cut = receive(bundle.subarray(0, largeHeader + 512 + 1000), staging);
    expect(cut.line).toMatchObject({ ok: false, error: { code: 'BUNDLE_TRUNCATED' } });
    expect(cut.status).toBe(1);
    const whole = receive(bundle, staging);
    expect(whole.line).toMatchObject({ ok: true, report: { verified: true } });
    expect(whole.status).toBe(0);
  });
});

describe('arguments that are not a stream, a directory or options are INVALID_INPUT naming them', () => {
  const notStreams: Array<[string, unknown]> = [
    ['null', null],
    ['undefined', undefined],
    ['a string', 'bundle.tar'],
    ['a number', 42],
    ['an object', {}],
    ['an array', [Buffer.alloc(512)]],
    ['a destroyed stream', (() => {
      const r = Readable.from([]);
      r.destroy();
      return r;
    })()],
  ];
  it.each(notStreams)('input: %s', async (_name, input) => {
    const result = await unpackBundle(input as Readable, staging);
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('INVALID_INPUT');
    expect('issues' in error && error.issues[0]?.path).toBe('input');
    expect(existsSync(staging)).toBe(false);
  });

  const notDirs: Array<[string, unknown]> = [
    ['null', null],
    ['undefined', undefined],
    ['an empty string', ''],
    ['a number', 7],
    ['an object', { path: '/tmp' }],
    ['a path with NUL', '/tmp/a\0b'],
  ];
  it.each(notDirs)('stagingDir: %s (and the input is destroyed)', async (_name, dir) => {
    const input = Readable.from([bundle]);
    const result = await unpackBundle(input, dir as string);
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('INVALID_INPUT');
    expect('issues' in error && error.issues[0]?.path).toBe('stagingDir');
    expect(input.destroyed).toBe(true);
  });

  const badOptions: Array<[string, unknown, string]> = [
    ['null', null, ''],
    ['an array', [], ''],
    ['a string', 'strict', ''],
    ['requireManifest "yes"', { requireManifest: 'yes' }, 'requireManifest'],
    ['allowDevices 1', { allowDevices: 1 }, 'allowDevices'],
    ['setuid "keep"', { setuid: 'keep' }, 'setuid'],
    ['maxMetadataBytes NaN', { maxMetadataBytes: Number.NaN }, 'maxMetadataBytes'],
    ['maxMetadataBytes -1', { maxMetadataBytes: -1 }, 'maxMetadataBytes'],
    ['signal {}', { signal: { aborted: false } }, 'signal'],
    ['onProgress 1', { onProgress: 1 }, 'onProgress'],
  ];
  it.each(badOptions)('options: %s', async (_name, options, path) => {
    const result = await unpackBundle(Readable.from([bundle]), staging, options as UnpackOptions);
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('INVALID_INPUT');
    expect('issues' in error && error.issues[0]?.path).toBe(path);
    expect(existsSync(staging)).toBe(false);
  });
});
