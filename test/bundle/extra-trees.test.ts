/**
 * Thick bundles: whole directory trees (`extraTrees`) packed next to the profile's files, unpacked
 * with unpackBundle and GNU tar, estimated with measureTrees, and walked in bounded memory.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { chmod, chown, copyFile, link, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { estimateBundleBytes } from '../../src/bundle/estimate.js';
import { measureTrees } from '../../src/bundle/measure.js';
import { BundleManifestSchema } from '../../src/bundle/manifest.js';
import { createBundleStream, packBundle, type PackOptions } from '../../src/bundle/pack.js';
import { comparePaths } from '../../src/bundle/select.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { ResourceProfileSchema, type ResourceProfile } from '../../src/policy/profile.js';

const execFileAsync = promisify(execFile);

/** Type, mode, owner, size, content hash, link target and hard-link group of everything below `dir`. */
async function describeTree(dir: string, options: { stripSetuid?: boolean } = {}): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const inodes = new Map<number, string>();
  const walk = async (path: string): Promise<void> => {
    const stats = await lstat(path);
    const rel = relative(dir, path) || '.';
    let mode = stats.mode & 0o7777;
    if (options.stripSetuid && stats.isFile()) mode &= ~0o6000;
    const owner = `${stats.uid}:${stats.gid} t=${Math.floor(stats.mtimeMs / 1000)}`;
    if (stats.isDirectory()) {
      out[rel] = `dir ${mode.toString(8)} ${owner}`;
      for (const name of (await readdir(path)).sort()) await walk(join(path, name));
    } else if (stats.isSymbolicLink()) {
      // Symlink times are not restored by every extractor.
      out[rel] = `symlink -> ${await readlink(path)} ${stats.uid}:${stats.gid}`;
    } else if (stats.isFile()) {
      const first = inodes.get(stats.ino);
      if (first === undefined) inodes.set(stats.ino, rel);
      const sha = createHash('sha256').update(await readFile(path)).digest('hex').slice(0, 16);
      out[rel] = `file ${mode.toString(8)} ${owner} ${stats.size} ${sha} group=${first ?? rel}`;
    } else if (stats.isFIFO()) {
      out[rel] = `fifo ${mode.toString(8)} ${owner}`;
    } else {
      out[rel] = 'other';
    }
  };
  await walk(dir);
  return out;
}

/** Tar member names of a bundle file, in order. */
async function listMembers(path: string): Promise<string[]> {
  const { stdout } = await execFileAsync('tar', ['-tf', path], { maxBuffer: 64 << 20 });
  return stdout.split('\n').filter(Boolean);
}

describe('thick bundles (extraTrees)', () => {
  let work: string;
  let base: string;
  let profile: ResourceProfile;
  let server: Server;
  let trees: string[];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-bundle-trees-'));
    base = join(work, 'base');
    await mkdir(join(base, 'etc'), { recursive: true });
    await mkdir(join(base, 'usr', 'lib', 'deep', 'er'), { recursive: true });
    await mkdir(join(base, 'usr', 'bin'), { recursive: true });
    await mkdir(join(base, 'run'), { recursive: true });
    await copyFile('/usr/lib/os-release', join(base, 'etc', 'os-release'));
    // Enough data that a few headers more or less stay well inside the 2% the estimate may miss by.
    for (let i = 0; i < 150; i++) {
      await writeFile(join(base, 'usr', 'lib', `lib${String(i).padStart(3, '0')}.so`), Buffer.alloc(3000 + i * 37, i));
    }
    await writeFile(join(base, 'usr', 'lib', 'deep', 'er', 'data.bin'), Buffer.alloc(2 * 1024 * 1024 + 5, 7));
    await writeFile(join(base, 'usr', 'bin', 'tool'), '#!/bin/sh\necho tool\n');
    await link(join(base, 'usr', 'bin', 'tool'), join(base, 'usr', 'bin', 'tool-alias'));
    await link(join(base, 'usr', 'bin', 'tool'), join(base, 'usr', 'lib', 'tool-hardlink'));
    await writeFile(join(base, 'usr', 'bin', 'su'), 'setuid program');
    await chmod(join(base, 'usr', 'bin', 'su'), 0o4755);
    await writeFile(join(base, 'usr', 'lib', 'big-owner'), 'owned by a large uid');
    await chown(join(base, 'usr', 'lib', 'big-owner'), 300000, 300001);
    await writeFile(join(base, 'usr', 'lib', `${'n'.repeat(120)}-ünï.txt`), 'long unicode name');
    await symlink('lib000.so', join(base, 'usr', 'lib', 'libcurrent.so'));
    await symlink('/usr/bin/tool', join(base, 'usr', 'lib', 'absolute-link'));
    await symlink('missing-target', join(base, 'usr', 'lib', 'dangling'));
    await symlink('usr/lib', join(base, 'lib'));
    await chmod(join(base, 'usr', 'lib', 'deep'), 0o700);
    await execFileAsync('mkfifo', [join(base, 'usr', 'lib', 'pipe')]);
    server = createServer();
    await new Promise<void>((done) => server.listen(join(base, 'run', 'app.sock'), done));
    await writeFile(join(base, 'app'), 'the program');
    const profileInput = {
      executable: join(base, 'app'),
      executableSize: 11,
      argv: ['app'],
      cwd: base,
      uid: 0,
      gid: 0,
      platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
      // A file the profile carries that is also inside a tree: it must appear once.
      files: [{ path: join(base, 'usr', 'lib', 'lib001.so'), kind: 'regular', access: ['read'], size: 3037 }],
    };
    profile = ResourceProfileSchema.parse(profileInput);
    trees = [join(base, 'usr'), join(base, 'etc'), join(base, 'lib'), join(base, 'run'), join(base, 'usr', 'lib')];
  });

  afterAll(async () => {
    await new Promise<void>((done) => server.close(() => done()));
    await rm(work, { recursive: true, force: true });
  });

  async function packToFile(name: string, options: PackOptions) {
    const path = join(work, name);
    const result = await packBundle(profile, createWriteStream(path), options);
    return { path, report: result._unsafeUnwrap() };
  }

  it('round-trips through unpackBundle (setuid stripped), sockets skipped, each path once', async () => {
    const { path, report } = await packToFile('thick.tar', { extraTrees: trees });
    expect(report.counts.skipped.socket).toBe(1);
    expect(report.counts.entries.link).toBe(2);
    const members = await listMembers(path);
    expect(new Set(members).size).toBe(members.length);
    expect(members).toContain(`root${base}/lib`);
    expect(members.some((m) => m.startsWith(`root${base}/lib/`))).toBe(false);
    expect(members.some((m) => m.includes('app.sock'))).toBe(false);

    const staging = join(work, 'staging');
    const unpacked = await unpackBundle(createReadStream(path), staging, { setuid: 'strip' });
    expect(unpacked.isOk(), unpacked.isErr() ? unpacked.error.message : '').toBe(true);
    expect(unpacked._unsafeUnwrap().strippedSetuid).toEqual([`root${base}/usr/bin/su`]);
    const source = await describeTree(base, { stripSetuid: true });
    delete source['run/app.sock'];
    expect(await describeTree(join(staging, base))).toEqual(source);
    const copied = join(staging, base);
    expect((await stat(join(copied, 'usr', 'bin', 'tool'))).ino).toBe((await stat(join(copied, 'usr', 'lib', 'tool-hardlink'))).ino);
  });

  it('GNU tar lists and extracts the thick bundle identically', async () => {
    const { path } = await packToFile('thick-gnu.tar', { extraTrees: trees });
    const target = join(work, 'gnu');
    await mkdir(target);
    await execFileAsync('tar', ['-xpf', path, '-C', target, '--numeric-owner']);
    const source = await describeTree(base);
    delete source['run/app.sock'];
    expect(await describeTree(join(target, 'root', base))).toEqual(source);
  });

  it('walks in sorted depth-first order and gives the same bytes twice', async () => {
    const first = await packToFile('order-1.tar', { extraTrees: [join(base, 'usr')] });
    // The profile's own file (lib001.so) is merged into the walk's order, not sent ahead of it.
    const members = (await listMembers(first.path)).filter((m) => m.startsWith(`root${base}/usr`)).map((m) => m.replace(/\/$/, ''));
    expect(members.length).toBeGreaterThan(150);
    expect(members).toEqual([...members].sort(comparePaths));
    const second = await packToFile('order-2.tar', { extraTrees: [join(base, 'usr')] });
    const names = async (p: string) => {
      const manifest = BundleManifestSchema.parse(JSON.parse((await execFileAsync('tar', ['-xOf', p, 'manifest.json'], { maxBuffer: 64 << 20 })).stdout));
      return manifest.entries.map((e) => `${e.path} ${e.type} ${e.sha256 ?? e.linkTarget ?? ''}`);
    };
    expect(await names(second.path)).toEqual(await names(first.path));
  });

  it('estimateBundleBytes with measureTrees matches the bytes sent within 2%', async () => {
    const measured = (await measureTrees(trees))._unsafeUnwrap();
    expect(measured.skipped).toBe(1);
    expect(measured.files).toBeGreaterThan(150);
    const estimate = estimateBundleBytes(profile, { extraTreeBytes: measured.bytes });
    const { report } = await packToFile('measured.tar', { extraTrees: trees, extraTreeBytes: measured.bytes });
    expect(report.estimate.bytes).toBe(estimate.bytes);
    const error = Math.abs(report.bytesWithoutManifest - estimate.bytes) / report.bytesWithoutManifest;
    console.log(`generated tree: sent ${report.bytesWithoutManifest} B, estimated ${estimate.bytes} B (${(error * 100).toFixed(3)}%)`);
    expect(error).toBeLessThan(0.02);
  });

  it('estimates a real system tree (/usr/share/zoneinfo) within 2%', async () => {
    const tree = '/usr/share/zoneinfo';
    const measured = (await measureTrees([tree]))._unsafeUnwrap();
    const counted = { bytes: 0 };
    const sink = new Writable({ write: (chunk: Buffer, _e, cb) => ((counted.bytes += chunk.length), cb()) });
    const progress: number[] = [];
    const result = await packBundle(profile, sink, { extraTrees: [tree], extraTreeBytes: measured.bytes, onProgress: (p) => progress.push(p.bytes) });
    const report = result._unsafeUnwrap();
    expect(progress.length).toBeGreaterThan(0);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    const estimate = estimateBundleBytes(profile, { extraTreeBytes: measured.bytes }).bytes;
    const error = Math.abs(report.bytesWithoutManifest - estimate) / report.bytesWithoutManifest;
    console.log(`${tree}: ${measured.files} files, ${measured.dirs} dirs, sent ${report.bytesWithoutManifest} B, estimated ${estimate} B (${(error * 100).toFixed(3)}%)`);
    expect(counted.bytes).toBe(report.totalBytes);
    expect(error).toBeLessThan(0.02);
  });

  it('a missing tree is BUNDLE_SOURCE_MISSING, or a warning with onMissing: warn; bad trees are INVALID_INPUT', async () => {
    const missing = join(base, 'nope');
    const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
    const failed = await packBundle(profile, sink(), { extraTrees: [missing] });
    expect(failed._unsafeUnwrapErr().code).toBe('BUNDLE_SOURCE_MISSING');
    expect(failed._unsafeUnwrapErr().message).toContain(missing);
    const warned = await packBundle(profile, sink(), { extraTrees: [missing], onMissing: 'warn' });
    expect(warned._unsafeUnwrap().warnings.join('\n')).toContain(missing);
    expect(createBundleStream(profile, { extraTrees: ['relative/dir'] })._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect((await measureTrees(['relative']))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
  });

  it('comparePaths orders like a component-by-component comparison', () => {
    const component = fc.constantFrom('a', 'b', 'a-b', 'a.b', 'ab', 'A', 'é', '0');
    const path = fc.array(component, { minLength: 1, maxLength: 4 }).map((parts) => '/' + parts.join('/'));
    const bySplit = (a: string, b: string) => {
      const [left, right] = [a.split('/'), b.split('/')];
      for (let i = 0; i < Math.min(left.length, right.length); i++) {
        if (left[i] !== right[i]) return (left[i] as string) < (right[i] as string) ? -1 : 1;
      }
      return left.length - right.length;
    };
    fc.assert(
      fc.property(path, path, (a, b) => {
        expect(Math.sign(comparePaths(a, b))).toBe(Math.sign(bySplit(a, b)));
      }),
    );
  });
});

describe('thick bundle memory', () => {
  let work: string;

  beforeAll(async () => {
    // tmpfs: 100k files are created and read without touching a disk.
    work = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'ap-bundle-rss-'));
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('walks a tree of 100k small files with bounded RSS (measured in a child process)', async () => {
    // /dev/shm is a pseudo path to the packer: read the tmpfs through sourceRoot, as a snapshot would be.
    const tree = '/tree';
    const script = join(work, 'measure.mts');
    const packModule = resolve('src/bundle/pack.ts');
    const measureModule = resolve('src/bundle/measure.ts');
    await writeFile(
      script,
      `
import { mkdirSync, writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { packBundle } from ${JSON.stringify(packModule)};
import { measureTrees } from ${JSON.stringify(measureModule)};
const tree = ${JSON.stringify(tree)};
const sourceRoot = ${JSON.stringify(work)};
for (let d = 0; d < 100; d++) {
  mkdirSync(sourceRoot + tree + '/d' + d, { recursive: true });
  for (let f = 0; f < 1000; f++) writeFileSync(sourceRoot + tree + '/d' + d + '/file-' + f + '.txt', 'x'.repeat(100 + (f % 50)));
}
const profile = { executable: tree + '/d0/file-0.txt', executableSize: 100, argv: ['x'], cwd: '/', uid: 0, gid: 0,
  platform: { os: 'linux', release: '6', arch: 'x86_64' } };
const watch = async (work) => {
  globalThis.gc?.();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 10);
  const value = await work();
  clearInterval(timer);
  peak = Math.max(peak, process.memoryUsage().rss);
  return { value, growth: (peak - baseline) / 1e6 };
};
const measured = await watch(async () => (await measureTrees([tree], { sourceRoot }))._unsafeUnwrap());
const packed = await watch(async () => {
  const sink = new Writable({ highWaterMark: 1 << 20, write: (_c, _e, cb) => setImmediate(cb) });
  return (await packBundle(profile, sink, { sourceRoot, extraTrees: [tree], extraTreeBytes: measured.value.bytes }))._unsafeUnwrap();
});
console.log(JSON.stringify({ files: measured.value.files, measureGrowth: measured.growth, packGrowth: packed.growth,
  entries: packed.value.entryCount, manifestBytes: packed.value.manifestBytes, sent: packed.value.bytesWithoutManifest, estimated: packed.value.estimate.bytes }));
`,
    );
    // A 96 MB old-space cap: memory that grew with the tree would crash the child. Without it,
    // Node 24's V8 collects lazily and RSS peaks at 107-126 MB here (Node 20: ~67 MB).
    const { stdout } = await execFileAsync(process.execPath, ['--expose-gc', '--max-old-space-size=96', '--import', 'tsx', script], { cwd: process.cwd(), maxBuffer: 1 << 20 });
    const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as {
      files: number;
      measureGrowth: number;
      packGrowth: number;
      entries: number;
      manifestBytes: number;
      sent: number;
      estimated: number;
    };
    console.log(
      `100k files: measureTrees RSS growth ${result.measureGrowth.toFixed(1)} MB; pack RSS growth ${result.packGrowth.toFixed(1)} MB ` +
        `(manifest ${(result.manifestBytes / 1e6).toFixed(1)} MB); sent ${result.sent} B, estimated ${result.estimated} B`,
    );
    expect(result.files).toBe(100_000);
    expect(result.entries).toBeGreaterThan(100_000);
    // The walk holds one directory listing at a time.
    expect(result.measureGrowth).toBeLessThan(40);
    // The packer keeps one manifest line per entry (the manifest is written last), nothing per byte.
    expect(result.packGrowth).toBeLessThan(50 + (3 * result.manifestBytes) / 1e6);
    expect(Math.abs(result.sent - result.estimated) / result.sent).toBeLessThan(0.02);
  }, 300_000);
});
