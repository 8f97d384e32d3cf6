/**
 * The packager conformance suite: every Packager whose payload is a bundle stream passes the same
 * tests. It packs a real tree through the packager, then checks that the estimate is within 2%
 * of what was sent, that the bundle round-trips through `unpackBundle` with every file's content,
 * that GNU tar and bsdtar read it, and that aborts and missing files are typed errors.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { planMigration } from '../../src/policy/plan.js';
import { ResourceProfileSchema, type ResourceProfile, type ResourceProfileInput } from '../../src/policy/profile.js';
import type { Packager, PackRequest } from '../../src/spec/packager.js';
import type { Source } from '../../src/spec/source.js';

/** One implementation under test. */
export interface PackagerFactory {
  name: string;
  packager: () => Packager<Readable>;
  /** The source the packager reads (local, or a host reached over SSH that sees the same files). */
  source: () => Source;
  /** Whether `profile.trees` travel (every bundle packager should say yes). */
  carriesTrees?: boolean;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A small tree: a program, config, a data directory with many small and one large file. */
function buildTree(root: string): { files: string[]; dataDir: string } {
  const files: string[] = [];
  const file = (rel: string, content: string | Buffer, mode = 0o644) => {
    const path = join(root, rel);
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, content);
    chmodSync(path, mode);
    files.push(path);
  };
  file('bin/prog', '#!/bin/sh\necho hi\n', 0o755);
  file('etc/prog.conf', 'port = 8080\n');
  const dataDir = join(root, 'data');
  mkdirSync(dataDir, { recursive: true });
  for (let i = 0; i < 40; i++) writeFileSync(join(dataDir, `row-${i}`), `row ${i}\n`.repeat(i + 1));
  writeFileSync(join(dataDir, 'big.bin'), Buffer.alloc(3 * 1024 * 1024 + 17, 7));
  return { files, dataDir };
}

function profileOf(root: string, files: string[], trees: string[]): ResourceProfile {
  const input: ResourceProfileInput = {
    executable: join(root, 'bin/prog'),
    executableSize: readFileSync(join(root, 'bin/prog')).length,
    argv: [join(root, 'bin/prog')],
    cwd: '/',
    uid: 65534,
    gid: 65534,
    platform: { os: 'linux', release: '6.1.0', arch: process.arch === 'arm64' ? 'aarch64' : 'x86_64' },
    files: files.map((path) => ({ path, kind: 'regular', access: ['read'], size: readFileSync(path).length })),
    trees: trees.map((path) => ({ path, reason: 'data-root' })),
  };
  return ResourceProfileSchema.parse(input);
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Define the suite for `factory`. */
export function packagerConformance(factory: PackagerFactory): void {
  describe(`packager conformance: ${factory.name}`, () => {
    let root: string;
    let work: string;
    let request: PackRequest;
    let expected: Map<string, string>;

    beforeAll(() => {
      work = mkdtempSync(join(tmpdir(), 'apm-packager-'));
      chmodSync(work, 0o755);
      root = join(work, 'src');
      const { files, dataDir } = buildTree(root);
      const profile = profileOf(root, files, factory.carriesTrees === false ? [] : [dataDir]);
      const plan = planMigration(profile)._unsafeUnwrap();
      request = { profile, plan, source: factory.source() };
      expected = new Map();
      for (const path of files) expected.set(path, sha256(readFileSync(path)));
      if (factory.carriesTrees !== false) {
        for (const name of ['row-0', 'row-39', 'big.bin']) expected.set(join(dataDir, name), sha256(readFileSync(join(dataDir, name))));
      }
    });
    afterAll(() => rmSync(work, { recursive: true, force: true }));

    it('estimates within 2% of the bytes it sends, and measures whole trees', async () => {
      const packager = factory.packager();
      const estimate = (await packager.estimate(request))._unsafeUnwrap();
      if (factory.carriesTrees !== false) expect(estimate.measuredTreeBytes).toBeGreaterThan(3 * 1024 * 1024);
      const packed = (await packager.pack(request, estimate))._unsafeUnwrap();
      const [bytes, done] = await Promise.all([collect(packed.payload), packed.done]);
      const summary = done._unsafeUnwrap();
      expect(summary.totalBytes).toBe(bytes.length);
      const withoutManifest = summary.totalBytes - summary.manifestBytes;
      expect(Math.abs(withoutManifest - estimate.bytes) / estimate.bytes).toBeLessThan(0.02);
    });

    it('round-trips through unpackBundle with every file verified', async () => {
      const packager = factory.packager();
      const estimate = (await packager.estimate(request))._unsafeUnwrap();
      const packed = (await packager.pack(request, estimate))._unsafeUnwrap();
      const staging = join(work, `staging-${Date.now()}`);
      const [unpacked, done] = await Promise.all([unpackBundle(packed.payload, staging), packed.done]);
      expect(done.isOk()).toBe(true);
      expect(unpacked.isOk(), unpacked.isErr() ? unpacked.error.message : '').toBe(true);
      expect(unpacked._unsafeUnwrap().verified).toBe(true);
      for (const [path, hash] of expected) expect(sha256(readFileSync(join(staging, path))), path).toBe(hash);
    });

    it('is read by GNU tar and by bsdtar, with the same contents', async () => {
      const packager = factory.packager();
      const estimate = (await packager.estimate(request))._unsafeUnwrap();
      const packed = (await packager.pack(request, estimate))._unsafeUnwrap();
      const bundle = await collect(packed.payload);
      expect((await packed.done).isOk()).toBe(true);
      for (const tool of ['tar', 'bsdtar']) {
        const out = join(work, `${tool}-${Date.now()}`);
        mkdirSync(out);
        const run = spawnSync(tool, ['-x', '-f', '-', '-C', out], { input: bundle });
        expect(run.status, `${tool}: ${run.stderr}`).toBe(0);
        for (const [path, hash] of expected) expect(sha256(readFileSync(join(out, 'root', path))), `${tool} ${path}`).toBe(hash);
        const listed = execFileSync(tool, ['-t', '-f', '-'], { input: bundle }).toString().split('\n');
        expect(listed).toContain('manifest.json');
      }
    });

    it('stops with ABORTED when the signal fires, without hanging', async () => {
      const packager = factory.packager();
      const estimate = (await packager.estimate(request))._unsafeUnwrap();
      const controller = new AbortController();
      const packed = (await packager.pack({ ...request, signal: controller.signal }, estimate))._unsafeUnwrap();
      controller.abort();
      packed.payload.resume();
      const done = await packed.done;
      expect(done.isErr()).toBe(true);
      expect(done._unsafeUnwrapErr().code).toBe('ABORTED');
    });

    it('a file missing at pack time is BUNDLE_SOURCE_MISSING', async () => {
      const gone = join(root, 'etc', 'gone.conf');
      const profile = ResourceProfileSchema.parse({ ...request.profile, files: [...request.profile.files, { path: gone, kind: 'regular', access: ['read'], size: 3 }] });
      const packager = factory.packager();
      const missingRequest = { ...request, profile };
      const estimate = (await packager.estimate(missingRequest))._unsafeUnwrap();
      const packed = await packager.pack(missingRequest, estimate);
      if (packed.isErr()) {
        expect(packed.error.code).toBe('BUNDLE_SOURCE_MISSING');
        return;
      }
      packed.value.payload.resume();
      const done = await packed.value.done;
      expect(done._unsafeUnwrapErr().code).toBe('BUNDLE_SOURCE_MISSING');
      expect(done._unsafeUnwrapErr().message).toContain(gone);
    });
  });
}
