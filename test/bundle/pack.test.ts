/**
 * What the packer carries and leaves out, its typed errors, and bounded memory on a 1 GiB file.
 */
import { execFile, spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import * as tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBundleStream, packBundle, type PackOptions } from '../../src/bundle/pack.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { BundleManifestSchema } from '../../src/bundle/manifest.js';
import { estimateBundleBytes } from '../../src/bundle/estimate.js';
import { ResourceProfileSchema, type FileUse, type ResourceProfileInput } from '../../src/policy/profile.js';
import { skipUnless } from '../helpers/requirements.js';

const execFileAsync = promisify(execFile);

/** A writable that throws everything away. */
function sink(): Writable {
  return new Writable({ write: (_chunk, _encoding, callback) => callback() });
}

/** Names and manifest of a bundle held in memory. */
async function listBundle(bundle: Buffer): Promise<{ names: string[]; manifest: ReturnType<typeof BundleManifestSchema.parse> }> {
  const names: string[] = [];
  let manifestText = '';
  const extract = tar.extract();
  Readable.from([bundle]).pipe(extract as unknown as NodeJS.WritableStream);
  for await (const entry of extract) {
    names.push(entry.header.name);
    const chunks: Buffer[] = [];
    for await (const chunk of entry as AsyncIterable<Buffer>) chunks.push(chunk);
    if (entry.header.name === 'manifest.json') manifestText = Buffer.concat(chunks).toString();
  }
  return { names, manifest: BundleManifestSchema.parse(JSON.parse(manifestText)) };
}

async function packToBuffer(profile: ResourceProfileInput, options: PackOptions = {}) {
  const chunks: Buffer[] = [];
  const collector = new Writable({
    write: (chunk: Buffer, _encoding, callback) => {
      chunks.push(chunk);
      callback();
    },
  });
  const result = await packBundle(profile, collector, options);
  return { result, bundle: Buffer.concat(chunks) };
}

describe('packBundle: what goes in', () => {
  let work: string;
  let tree: string;
  const use = (path: string, extra: Partial<FileUse> = {}): ResourceProfileInput['files'] extends (infer T)[] | undefined ? T : never => ({
    path,
    kind: 'regular',
    access: ['read'],
    size: 0,
    ...extra,
  });
  let base: ResourceProfileInput;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-bundle-pack-'));
    tree = join(work, 'tree');
    await mkdir(join(tree, 'usr', 'lib'), { recursive: true });
    await mkdir(join(tree, 'etc'), { recursive: true });
    await writeFile(join(tree, 'app'), 'program');
    await writeFile(join(tree, 'etc', 'app.conf'), 'conf');
    await writeFile(join(tree, 'usr', 'lib', 'libfoo.so.1'), 'library');
    await symlink('usr/lib', join(tree, 'lib'));
    base = {
      executable: join(tree, 'app'),
      executableSize: 7,
      argv: ['app'],
      cwd: tree,
      uid: 0,
      gid: 0,
      platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
    };
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('leaves out shared libraries, created files, pseudo files, sockets and devices by default', async () => {
    const profile: ResourceProfileInput = {
      ...base,
      files: [
        use(join(tree, 'etc', 'app.conf'), { size: 4 }),
        use(join(tree, 'lib', 'libfoo.so.1'), { sharedLibrary: true, size: 7 }),
        use(join(tree, 'created.log'), { created: true, access: ['write'] }),
        use('/proc/self/status'),
        use('/sys/kernel/mm'),
        use('/dev/pts/0', { kind: 'device' }),
        use('/dev/null', { kind: 'device' }),
        use('/run/app.sock', { kind: 'unix-socket' }),
      ],
    };
    const { result, bundle } = await packToBuffer(profile);
    expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
    const report = result._unsafeUnwrap();
    expect(report.counts.skipped).toEqual({ sharedLibrary: 1, created: 1, pseudo: 3, device: 1, socket: 1, missing: 0 });
    const { names, manifest } = await listBundle(bundle);
    expect(names).toContain(`root${tree}/etc/app.conf`);
    expect(names.some((n) => n.includes('libfoo'))).toBe(false);
    expect(names.some((n) => n.includes('created.log') || n.startsWith('root/proc') || n.startsWith('root/dev'))).toBe(false);
    expect(manifest.entries.map((e) => e.path)).toContain(join(tree, 'app'));
    expect(report.entryCount).toBe(names.length);
  });

  it('carries shared libraries on request, through a symlinked directory as link + real path', async () => {
    const profile: ResourceProfileInput = { ...base, files: [use(join(tree, 'lib', 'libfoo.so.1'), { sharedLibrary: true, size: 7 })] };
    const { result, bundle } = await packToBuffer(profile, { includeSharedLibraries: true });
    expect(result.isOk()).toBe(true);
    const { names, manifest } = await listBundle(bundle);
    expect(names).toContain(`root${tree}/lib`);
    expect(names).toContain(`root${tree}/usr/lib/libfoo.so.1`);
    // Nothing is stored below the symlink: extracting never writes through it.
    expect(names.some((n) => n.startsWith(`root${tree}/lib/`))).toBe(false);
    expect(manifest.entries.find((e) => e.path === join(tree, 'lib'))).toMatchObject({ type: 'symlink', linkTarget: 'usr/lib' });
    const staging = join(work, 'staging-lib');
    const unpacked = await unpackBundle(Readable.from([bundle]), staging);
    expect(unpacked.isOk(), unpacked.isErr() ? unpacked.error.message : '').toBe(true);
    expect(await readFile(join(staging, tree, 'lib', 'libfoo.so.1'), 'utf8')).toBe('library');
  });

  it.skipIf(skipUnless('root'))('carries device nodes with includeDevices', async () => {
    const profile: ResourceProfileInput = { ...base, files: [use('/dev/null', { kind: 'device' })] };
    const { result, bundle } = await packToBuffer(profile, { includeDevices: true });
    expect(result._unsafeUnwrap().counts.entries['character-device']).toBe(1);
    const { manifest } = await listBundle(bundle);
    expect(manifest.entries.find((e) => e.path === '/dev/null')).toMatchObject({ type: 'character-device', devmajor: 1, devminor: 3 });
  });

  it('a file missing at pack time is BUNDLE_SOURCE_MISSING, or a manifest warning with onMissing: warn', async () => {
    const missing = join(tree, 'etc', 'gone.conf');
    const profile: ResourceProfileInput = { ...base, files: [use(missing)] };
    const failed = await packBundle(profile, sink());
    expect(failed.isErr()).toBe(true);
    expect(failed._unsafeUnwrapErr().code).toBe('BUNDLE_SOURCE_MISSING');
    expect(failed._unsafeUnwrapErr().message).toContain(missing);

    const { result, bundle } = await packToBuffer(profile, { onMissing: 'warn' });
    expect(result._unsafeUnwrap().counts.skipped.missing).toBe(1);
    const { manifest } = await listBundle(bundle);
    expect(manifest.warnings.join('\n')).toContain(missing);
  });

  it('a missing file among many queued ones fails cleanly and leaves no file open', async () => {
    const dir = join(work, 'many');
    await mkdir(dir);
    const files: FileUse[] = [];
    for (let i = 0; i < 200; i++) {
      const path = join(dir, `f${String(i).padStart(3, '0')}`);
      if (i !== 150) await writeFile(path, Buffer.alloc(i * 100, i));
      files.push({ path, kind: 'regular', access: ['read'], size: i * 100, sharedLibrary: false, created: false });
    }
    const openFds = async () => (await readdir('/proc/self/fd')).length;
    const before = await openFds();
    const result = await packBundle({ ...base, files }, sink());
    expect(result._unsafeUnwrapErr().code).toBe('BUNDLE_SOURCE_MISSING');
    expect(result._unsafeUnwrapErr().message).toContain('f150');
    expect(await openFds()).toBe(before);
  });

  it('a small file the running program keeps rewriting (truncate, then write) is read again, never failed', async () => {
    // The way a daemon rewrites its status file: open(O_TRUNC), write; a read can land in between.
    const status = join(work, 'status');
    const text = 'counter 123456 of ipc pair';
    await writeFile(status, text);
    const writer = spawn('sh', ['-c', 'while :; do printf %s "$2" > "$1"; done', 'sh', status, text], { stdio: 'ignore' });
    try {
      const profile: ResourceProfileInput = { ...base, files: [use(status, { size: text.length })] };
      for (let i = 0; i < 300; i++) {
        const { result, bundle } = await packToBuffer(profile);
        expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
        const { manifest } = await listBundle(bundle);
        // Whatever instant it read: all of it, or the empty file right after the truncation.
        expect([0, text.length]).toContain(manifest.entries.find((e) => e.path === status)?.size);
      }
    } finally {
      writer.kill('SIGKILL');
    }
  });

  it('rejects an invalid profile with INVALID_INPUT', async () => {
    const result = await packBundle({ ...base, executable: 'relative/path' }, sink());
    expect(result._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
  });

  it('stops with ABORTED when the signal fires', async () => {
    const controller = new AbortController();
    controller.abort();
    const result = await packBundle(base, sink(), { signal: controller.signal });
    expect(result._unsafeUnwrapErr().code).toBe('ABORTED');
  });

  it('settles the report when the consumer stops reading early', async () => {
    const big = join(work, 'big.bin');
    await writeFile(big, Buffer.alloc(8 * 1024 * 1024, 1));
    const created = createBundleStream({ ...base, executable: big, executableSize: 8 * 1024 * 1024 });
    const { stream, report } = created._unsafeUnwrap();
    stream.once('data', () => stream.destroy());
    const result = await report;
    expect(result.isErr()).toBe(true);
    expect(result._unsafeUnwrapErr().code).toBe('BUNDLE_IO');
  });

  it('estimateBundleBytes matches a profile-only bundle exactly', async () => {
    const profile = ResourceProfileSchema.parse({ ...base, files: [use(join(tree, 'etc', 'app.conf'), { size: 4 })] });
    const { result } = await packToBuffer(profile);
    expect(result._unsafeUnwrap().bytesWithoutManifest).toBe(estimateBundleBytes(profile).bytes);
  });

  it('packs into a file that GNU tar can list', async () => {
    const path = join(work, 'listed.tar');
    const result = await packBundle(base, createWriteStream(path));
    expect(result.isOk()).toBe(true);
    const { stdout } = await execFileAsync('tar', ['-tf', path]);
    expect(stdout.split('\n')).toContain(`root${tree}/app`);
    expect((await unpackBundle(createReadStream(path), join(work, 'staging-listed'))).isOk()).toBe(true);
  });
});

describe('packBundle memory', () => {
  let work: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-bundle-mem-'));
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('packs a 1 GiB file with RSS growth under 100 MB (measured in a child process)', async () => {
    const file = join(work, 'sparse.bin');
    const handle = await open(file, 'w');
    await handle.truncate(1024 ** 3);
    // Sparse-ish: some real data every 64 MiB.
    for (let offset = 0; offset < 1024 ** 3; offset += 64 * 1024 * 1024) {
      await handle.write(Buffer.alloc(1024 * 1024, offset / (64 * 1024 * 1024) + 1), 0, 1024 * 1024, offset);
    }
    await handle.close();
    const script = join(work, 'measure.mts');
    const packModule = resolve('src/bundle/pack.ts');
    await writeFile(
      script,
      `
import { Writable } from 'node:stream';
import { packBundle } from ${JSON.stringify(packModule)};
const profile = { executable: ${JSON.stringify(file)}, executableSize: ${1024 ** 3}, argv: ['x'], cwd: '/', uid: 0, gid: 0,
  platform: { os: 'linux', release: '6', arch: 'x86_64' } };
globalThis.gc?.();
const baseline = process.memoryUsage().rss;
let peak = baseline;
const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
const sink = new Writable({ highWaterMark: 1 << 20, write: (_c, _e, cb) => setImmediate(cb) });
const result = await packBundle(profile, sink);
clearInterval(timer);
peak = Math.max(peak, process.memoryUsage().rss);
console.log(JSON.stringify({ ok: result.isOk(), totalBytes: result.isOk() ? result.value.totalBytes : 0, baseline, peak }));
`,
    );
    const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', script], { cwd: process.cwd(), maxBuffer: 1 << 20 });
    const measured = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { ok: boolean; totalBytes: number; baseline: number; peak: number };
    expect(measured.ok).toBe(true);
    expect(measured.totalBytes).toBeGreaterThan(1024 ** 3);
    const growthMb = (measured.peak - measured.baseline) / 1e6;
    console.log(`pack of 1 GiB: RSS growth ${growthMb.toFixed(1)} MB`);
    expect(growthMb).toBeLessThan(100);
  }, 120_000);
});
