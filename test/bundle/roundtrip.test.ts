/**
 * Pack a real tree, unpack it (with unpackBundle, GNU tar and bsdtar) and compare every attribute.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync, statSync } from 'node:fs';
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/bundle/pack.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { estimateBundleBytes } from '../../src/bundle/estimate.js';
import { BundleManifestSchema } from '../../src/bundle/manifest.js';
import { ResourceProfileSchema, type FileUse, type ResourceProfile } from '../../src/policy/profile.js';
import { skipUnless } from '../helpers/requirements.js';

interface Snapshot {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: number;
  size?: number;
  sha256?: string;
  target?: string;
  /** Names sharing this inode (hard links), sorted. */
  links?: string[];
}

/** Every attribute of every object under `dir`, keyed by relative path. */
async function snapshot(dir: string, options: { symlinkTimes?: boolean } = {}): Promise<Record<string, Snapshot>> {
  const result: Record<string, Snapshot> = {};
  const inodes = new Map<number, string[]>();
  const walk = async (path: string): Promise<void> => {
    const stats = await lstat(path);
    const rel = relative(dir, path) || '.';
    const entry: Snapshot = { type: 'other', mode: stats.mode & 0o7777, uid: stats.uid, gid: stats.gid, mtime: Math.floor(stats.mtimeMs / 1000) };
    if (stats.isDirectory()) {
      entry.type = 'directory';
      for (const name of await readdir(path)) await walk(join(path, name));
    } else if (stats.isSymbolicLink()) {
      entry.type = 'symlink';
      entry.target = await readlink(path);
      if (!options.symlinkTimes) delete entry.mtime;
      // Symlink permission bits are always 0777 on Linux.
    } else if (stats.isFile()) {
      entry.type = 'file';
      entry.size = stats.size;
      entry.sha256 = createHash('sha256').update(await readFile(path)).digest('hex');
      inodes.set(stats.ino, [...(inodes.get(stats.ino) ?? []), rel]);
    } else if (stats.isFIFO()) {
      entry.type = 'fifo';
    }
    result[rel] = entry;
  };
  await walk(dir);
  for (const names of inodes.values()) {
    const sorted = [...names].sort();
    for (const name of sorted) {
      const entry = result[name];
      if (entry) entry.links = sorted;
    }
  }
  return result;
}

const LONG_COMPONENT = 'l'.repeat(120);
const UNICODE_NAME = 'ünïcødé-文件-😀.txt';

/** Build the test tree; returns the files a profile should list (absolute paths). */
async function buildTree(tree: string, asRoot: boolean): Promise<string[]> {
  const listed: string[] = [];
  const file = async (rel: string, content: string | Buffer, mode = 0o644) => {
    const path = join(tree, rel);
    await writeFile(path, content);
    await chmod(path, mode);
    listed.push(path);
    return path;
  };
  await mkdir(join(tree, 'bin'), { recursive: true });
  await mkdir(join(tree, 'data', 'sub'), { recursive: true });
  await mkdir(join(tree, 'data', 'private'), { mode: 0o700 });
  await chmod(join(tree, 'data', 'private'), 0o700);
  const program = await file('bin/program', '#!/bin/sh\necho hi\n', 0o755);
  await file('data/empty', '');
  await file('data/zero-mode', 'nobody may read me', 0o000);
  await file('data/sub/big.bin', Buffer.alloc(3 * 1024 * 1024 + 17, 7));
  await file('data/private/secret', 'secret', 0o600);
  await file(`data/${UNICODE_NAME}`, 'unicode content ✓');
  await file('bin/setuid-helper', 'suid', 0o4755);
  // A path over 200 characters with a component over 100: needs PAX.
  const deep = join(tree, 'data', 'deep'.repeat(10), 'nested'.repeat(5), LONG_COMPONENT);
  await mkdir(deep, { recursive: true });
  const longFile = await file(relative(tree, join(deep, 'file-with-a-long-path.txt')), 'long path content');
  expect(relative(tree, longFile).length).toBeGreaterThan(200);
  // Hard links (same inode twice).
  await link(program, join(tree, 'bin', 'program-hardlink'));
  listed.push(join(tree, 'bin', 'program-hardlink'));
  // Symlinks: relative, absolute (inside the tree), a symlinked directory, a long target.
  await symlink('program', join(tree, 'bin', 'program-link'));
  listed.push(join(tree, 'bin', 'program-link'));
  await symlink(join(tree, 'data', 'empty'), join(tree, 'data', 'absolute-link'));
  listed.push(join(tree, 'data', 'absolute-link'));
  await symlink('sub', join(tree, 'data', 'sub-link'));
  listed.push(join(tree, 'data', 'sub-link', 'big.bin'));
  await symlink(relative(join(tree, 'data'), longFile), join(tree, 'data', 'long-target-link'));
  listed.push(join(tree, 'data', 'long-target-link'));
  execFileSync('mkfifo', [join(tree, 'data', 'fifo')]);
  listed.push(join(tree, 'data', 'fifo'));
  if (asRoot) {
    await chown(join(tree, 'data', 'private', 'secret'), 1234, 2345);
    await chown(join(tree, 'data', 'private'), 1234, 2345);
    await lchown(join(tree, 'bin', 'program-link'), 1234, 2345);
    // Large ids need PAX records.
    await chown(join(tree, 'data', 'empty'), 300_000, 300_001);
    await chmod(join(tree, 'bin', 'setuid-helper'), 0o4755);
  }
  // Distinct past mtimes, directories last (creating children changes them).
  let time = Date.UTC(2001, 1, 3) / 1000;
  const stamp = async (path: string) => {
    const stats = await lstat(path);
    time += 3600;
    if (stats.isSymbolicLink()) await lutimes(path, time, time);
    else if (!stats.isDirectory()) await utimes(path, time, time);
    if (stats.isDirectory()) for (const name of await readdir(path)) await stamp(join(path, name));
    if (stats.isDirectory()) await utimes(path, time, time);
  };
  await stamp(tree);
  return listed;
}

function profileFor(tree: string, listed: string[], executable = join(tree, 'bin', 'program'), cwd = join(tree, 'data')): ResourceProfile {
  const files: FileUse[] = listed.map((path) => ({
    path,
    kind: 'regular',
    access: ['read'],
    size: 0,
    sharedLibrary: false,
    created: false,
  }));
  // Sizes as a profiler would see them (following symlinks).
  for (const file of files) {
    const stats = statSync(file.path);
    file.size = stats.isFile() ? stats.size : 0;
    if (stats.isFIFO()) file.kind = 'fifo';
  }
  return ResourceProfileSchema.parse({
    executable,
    executableSize: statSync(executable).size,
    argv: ['program'],
    cwd,
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
    files,
  });
}

describe.skipIf(skipUnless('root', 'tool:tar', 'tool:bsdtar', 'tool:mkfifo'))('bundle round trip', () => {
  let work: string;
  let tree: string;
  let bundlePath: string;
  let profile: ResourceProfile;
  let source: Record<string, Snapshot>;
  let report: Awaited<ReturnType<typeof packBundle>>;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-bundle-rt-'));
    tree = join(work, 'tree');
    await mkdir(tree);
    const listed = await buildTree(tree, true);
    profile = profileFor(tree, listed);
    source = await snapshot(tree, { symlinkTimes: true });
    bundlePath = join(work, 'bundle.tar');
    report = await packBundle(profile, createWriteStream(bundlePath), { plan: { method: 'chroot', note: 'opaque' } });
  });

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('packs every kind of entry and reports counts and sizes', () => {
    expect(report.isOk(), report.isErr() ? report.error.message : '').toBe(true);
    const value = report._unsafeUnwrap();
    expect(value.counts.entries).toMatchObject({ file: 8, link: 1, fifo: 1 });
    expect(value.counts.entries.symlink).toBe(4);
    expect(value.totalBytes).toBe(readFileSync(bundlePath).length);
    expect(value.totalBytes - value.manifestBytes).toBe(value.bytesWithoutManifest);
    // The profile names big.bin twice (directly and through the symlinked data/sub-link) and the
    // hard link's data: the estimate, made from names only, counts both; the bundle carries them once.
    const countedTwice = 3 * 1024 * 1024 + 512 + 512 + 512;
    expect(Math.abs(value.bytesWithoutManifest - value.estimate.bytes + countedTwice)).toBeLessThanOrEqual(value.estimate.bytes * 0.02);
  });

  it('writes a manifest last that lists every entry with its hash', async () => {
    const listing = execFileSync('tar', ['-tf', bundlePath]).toString().trim().split('\n');
    expect(listing[0]).toBe('bundle.json');
    expect(listing.at(-1)).toBe('manifest.json');
    const manifest = BundleManifestSchema.parse(JSON.parse(execFileSync('tar', ['-xOf', bundlePath, 'manifest.json']).toString()));
    expect(manifest.plan).toEqual({ method: 'chroot', note: 'opaque' });
    const big = manifest.entries.find((e) => e.path === join(tree, 'data', 'sub', 'big.bin'));
    expect(big?.sha256).toBe(createHash('sha256').update(await readFile(join(tree, 'data', 'sub', 'big.bin'))).digest('hex'));
    expect(listing.length).toBe(manifest.entries.length + 2);
  });

  it('unpackBundle reproduces the tree exactly', async () => {
    const staging = join(work, 'staging-sdk');
    const result = await unpackBundle(createReadStream(bundlePath), staging, { setuid: 'allow' });
    expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
    expect(result._unsafeUnwrap().verified).toBe(true);
    expect(await snapshot(join(staging, tree), { symlinkTimes: true })).toEqual(source);
  });

  it('GNU tar lists and extracts the bundle identically', async () => {
    const listing = execFileSync('tar', ['-tvf', bundlePath]).toString();
    expect(listing).toContain(LONG_COMPONENT);
    expect(listing).toContain(UNICODE_NAME);
    const out = join(work, 'gnu-out');
    await mkdir(out);
    execFileSync('tar', ['-xpf', bundlePath, '-C', out]);
    expect(await snapshot(join(out, 'root', tree))).toEqual(stripSymlinkTimes(source));
  });

  it('bsdtar lists and extracts the bundle identically', async () => {
    const listing = execFileSync('bsdtar', ['-tvf', bundlePath]).toString();
    expect(listing).toContain(LONG_COMPONENT);
    const out = join(work, 'bsd-out');
    await mkdir(out);
    execFileSync('bsdtar', ['-xpf', bundlePath, '-C', out]);
    expect(await snapshot(join(out, 'root', tree))).toEqual(stripSymlinkTimes(source));
  });

  for (const format of ['gnu', 'pax'] as const) {
    it(`unpackBundle reads a tar GNU tar wrote (--format=${format})`, async () => {
      const archive = join(work, `gnu-${format}.tar`);
      execFileSync('tar', ['-cf', archive, `--format=${format}`, '-C', tree, '.']);
      const staging = join(work, `staging-gnu-${format}`);
      const result = await unpackBundle(createReadStream(archive), staging, { requireManifest: false, setuid: 'allow' });
      expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
      expect(result._unsafeUnwrap().verified).toBe(false);
      expect(await snapshot(staging)).toEqual(stripSymlinkTimes(source));
    });
  }

  it('a plain tar is refused unless requireManifest is false', async () => {
    const archive = join(work, 'gnu-gnu.tar');
    const staging = join(work, 'staging-refused');
    const result = await unpackBundle(createReadStream(archive), staging);
    expect(result._unsafeUnwrapErr().code).toBe('BUNDLE_MANIFEST_INVALID');
    await expect(lstat(staging)).rejects.toThrow();
  });

  it('estimate matches the bytes of a tree of regular files within 2%', async () => {
    const dir = join(work, 'estimate');
    await mkdir(dir);
    const files: string[] = [];
    for (let i = 0; i < 40; i++) {
      const path = join(dir, `file-${i}.bin`);
      await writeFile(path, Buffer.alloc(1000 + i * 997, i));
      files.push(path);
    }
    const estimateProfile = profileFor(dir, files.slice(1), files[0], dir);
    const estimate = estimateBundleBytes(estimateProfile);
    const result = await packBundle(estimateProfile, createWriteStream('/dev/null'));
    expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
    const value = result._unsafeUnwrap();
    expect(value.estimate.bytes).toBe(estimate.bytes);
    expect(Math.abs(value.bytesWithoutManifest - estimate.bytes) / estimate.bytes).toBeLessThan(0.02);
  });
});

function stripSymlinkTimes(snap: Record<string, Snapshot>): Record<string, Snapshot> {
  const copy: Record<string, Snapshot> = {};
  for (const [key, value] of Object.entries(snap)) {
    const entry = { ...value };
    if (entry.type === 'symlink') delete entry.mtime;
    copy[key] = entry;
  }
  return copy;
}
