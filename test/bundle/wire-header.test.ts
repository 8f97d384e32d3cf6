/**
 * The receiver's `unpack --wire-header` (decision 0203, fifth amendment): the built receiver, run
 * as the destination runs it, reads the line naming the codec and decodes the rest itself. Each
 * codec round-trips a real bundle; a missing or unknown header, and a corrupt or cut compressed
 * stream, are typed failures that leave no staging directory (a cut or corrupt stream fails as the
 * shell wrapper's decompressor failure does, which the SDK reads the same way).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/bundle/pack.js';
import { ResourceProfileSchema } from '../../src/policy/profile.js';
import { decompressorFailure } from '../../src/transfer/compression.js';
import { DECOMPRESSOR_FAILED_LINE, DECOMPRESSOR_FAILED_STATUS, wireHeader } from '../../src/transfer/wire-header.js';
import { skipUnless } from '../helpers/requirements.js';

const RECEIVER = resolve('dist/receiver.cjs');
let work: string;
let bundle: Buffer;
let tree: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ap-wire-header-'));
  tree = join(work, 'tree');
  await mkdir(tree);
  await writeFile(join(tree, 'small.txt'), 'small file\n');
  // Compressible, and over one zstd block: a cut stream is cut inside a frame.
  await writeFile(join(tree, 'large.txt'), Buffer.from('a line of text that repeats, as logs do\n'.repeat(60_000)));
  const profile = ResourceProfileSchema.parse({
    executable: join(tree, 'small.txt'),
    argv: ['small'],
    cwd: tree,
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
    files: [{ path: join(tree, 'large.txt'), kind: 'regular', access: ['read'], size: 40 * 60_000 }],
  });
  const path = join(work, 'bundle.tar');
  const packed = await packBundle(profile, createWriteStream(path));
  expect(packed.isOk(), packed.isErr() ? packed.error.message : '').toBe(true);
  bundle = await readFile(path);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const zstd = (data: Buffer) => spawnSync('zstd', ['-q', '-3', '-c'], { input: data, maxBuffer: 64 * 1024 * 1024 }).stdout as Buffer;

/** Run the built receiver's unpack with `--wire-header`, writing `chunks` one by one (a split header too). */
function unpackWith(chunks: Buffer[], staging: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [RECEIVER, 'unpack', staging, '--wire-header'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => void (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => void (stderr += c.toString()));
    child.stdin.on('error', () => undefined);
    child.on('close', (code) => done({ code, stdout, stderr }));
    (async () => {
      for (const chunk of chunks) {
        child.stdin.write(chunk);
        await new Promise((r) => setTimeout(r, 5));
      }
      child.stdin.end();
    })();
  });
}

const reply = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!) as { ok: boolean; report?: { verified: boolean }; error?: { code: string; message: string } };
const staging = (name: string) => join(work, name, 'staging');

describe.skipIf(skipUnless('tool:zstd'))('unpack --wire-header', () => {
  it('the receiver was built', () => {
    expect(existsSync(RECEIVER), 'dist/receiver.cjs (built by the global setup)').toBe(true);
  });

  const codecs: Array<['none' | 'zstd' | 'gzip', (b: Buffer) => Buffer]> = [
    ['none', (b) => b],
    ['zstd', zstd],
    // Several gzip members, as the SDK's gzip stream sends them.
    ['gzip', (b) => Buffer.concat([gzipSync(b.subarray(0, 100_000)), gzipSync(b.subarray(100_000))])],
  ];
  it.each(codecs)('%s: the bundle is verified and its files are the source\'s', async (codec, encode) => {
    const dir = staging(`ok-${codec}`);
    const run = await unpackWith([wireHeader(codec), encode(bundle)], dir);
    expect(run.code, run.stderr).toBe(0);
    expect(reply(run.stdout).report?.verified).toBe(true);
    expect(await readFile(join(dir, tree, 'large.txt'))).toEqual(await readFile(join(tree, 'large.txt')));
  });

  it('a header written byte by byte, with the stream in the same chunk as its last byte', async () => {
    const header = wireHeader('zstd');
    const chunks = [...header.subarray(0, -1)].map((b) => Buffer.from([b]));
    chunks.push(Buffer.concat([header.subarray(-1), zstd(bundle)]));
    const run = await unpackWith(chunks, staging('split'));
    expect(run.code, run.stderr).toBe(0);
    expect(reply(run.stdout).report?.verified).toBe(true);
  });

  it('no input at all (a receive cancelled before its header): BUNDLE_TRUNCATED, nothing written', async () => {
    const dir = staging('empty');
    const run = await unpackWith([], dir);
    expect(run.code).toBe(1);
    expect(reply(run.stdout).error?.code).toBe('BUNDLE_TRUNCATED');
    expect(existsSync(dir)).toBe(false);
  });

  it.each([
    ['a bundle without its header', () => bundle],
    ['an unknown codec', () => Buffer.concat([Buffer.from('ap-migrate-wire xz\n'), bundle])],
  ])('%s: INVALID_INPUT, nothing written', async (_name, input) => {
    const dir = staging(`bad-${_name.length}`);
    const run = await unpackWith([input()], dir);
    expect(run.code).toBe(2);
    expect(reply(run.stdout).error?.code).toBe('INVALID_INPUT');
    expect(existsSync(dir)).toBe(false);
  });

  it.each([
    ['cut in the middle', (z: Buffer) => z.subarray(0, Math.floor(z.length / 2))],
    ['corrupt', (z: Buffer) => Buffer.concat([z.subarray(0, 8), Buffer.alloc(z.length - 8, 0x55)])],
  ])('a zstd stream %s: the decompressor failure status and line, read by decompressorFailure()', async (_name, damage) => {
    const run = await unpackWith([wireHeader('zstd'), damage(zstd(bundle))], staging(`z-${_name.length}`));
    expect(run.code).toBe(DECOMPRESSOR_FAILED_STATUS);
    expect(run.stderr).toContain(`${DECOMPRESSOR_FAILED_LINE} (zstd -dcq)`);
    const error = decompressorFailure('zstd', { code: run.code, signal: null, stdout: run.stdout, stderr: run.stderr }, 'here');
    expect(error?.code).toBe('RECEIVE_FAILED');
    expect(error?.message).toContain('zstd -dcq');
  });
});
