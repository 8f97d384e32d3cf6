/**
 * Pack throughput: packBundle of a generated tree into /dev/null vs `tar -cf - DIR | cat >/dev/null`
 * (GNU tar) on the same tree in the same run: the whole tree, its large files, its small files, and
 * the small files as a thick bundle (`extraTrees`). Both read from a warm page cache; each side runs
 * three times, alternating, and the median counts (the load average is printed: the machine may be
 * busy). packBundle also hashes every byte (SHA-256), which GNU tar does not.
 */
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { measureTrees } from '../src/bundle/measure.js';
import { packBundle, type PackOptions } from '../src/bundle/pack.js';
import type { ResourceProfileInput } from '../src/policy/profile.js';
import { runWhenCalledDirectly } from './report.js';

const execFileAsync = promisify(execFile);

/** One benchmark line: `ratio` is ours over the reference (higher is better). */
export interface BenchResult {
  name: string;
  ratio: number;
  detail: string;
}

const LARGE_FILES = 140;
const LARGE_BYTES = 2 * 1024 * 1024;
const SMALL_FILES = 2000;
const SMALL_BYTES = 4096;

/** Write the tree; returns the profile listing every file. */
async function generateTree(dir: string): Promise<ResourceProfileInput> {
  const pool = randomBytes(LARGE_BYTES + 64 * 1024);
  const files: NonNullable<ResourceProfileInput['files']> = [];
  await mkdir(join(dir, 'large'), { recursive: true });
  for (let i = 0; i < LARGE_FILES; i++) {
    const path = join(dir, 'large', `blob-${i}.bin`);
    // Different offsets so files differ; random content so nothing is trivially compressible.
    await writeFile(path, pool.subarray(i * 397, i * 397 + LARGE_BYTES));
    files.push({ path, kind: 'regular', access: ['read'], size: LARGE_BYTES });
  }
  for (let d = 0; d < SMALL_FILES / 100; d++) {
    await mkdir(join(dir, 'small', `d${d}`), { recursive: true });
    for (let i = 0; i < 100; i++) {
      const path = join(dir, 'small', `d${d}`, `f${i}.txt`);
      await writeFile(path, pool.subarray(d * 100 + i, d * 100 + i + SMALL_BYTES));
      files.push({ path, kind: 'regular', access: ['read'], size: SMALL_BYTES });
    }
  }
  return benchProfile(dir, files, LARGE_BYTES);
}

/** The profile of a generated bench tree: its files, the first one standing in as the executable. */
export function benchProfile(dir: string, files: NonNullable<ResourceProfileInput['files']>, executableSize: number): ResourceProfileInput {
  return {
    executable: files[0]?.path ?? dir,
    executableSize,
    argv: ['bench'],
    cwd: dir,
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: 'bench', arch: process.arch },
    files,
  };
}

async function timeGnuTar(dir: string): Promise<number> {
  const start = performance.now();
  await execFileAsync('sh', ['-c', 'tar -cf - "$1" | cat >/dev/null', 'sh', dir]);
  return (performance.now() - start) / 1000;
}

interface Packed {
  seconds: number;
  bytes: number;
  estimate: number;
  withoutManifest: number;
}

async function timePack(profile: ResourceProfileInput, options: PackOptions = {}): Promise<Packed> {
  const start = performance.now();
  const result = await packBundle(profile, createWriteStream('/dev/null'), options);
  const seconds = (performance.now() - start) / 1000;
  if (result.isErr()) throw result.error;
  return { seconds, bytes: result.value.totalBytes, estimate: result.value.estimate.bytes, withoutManifest: result.value.bytesWithoutManifest };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

const ROUNDS = 3;

/** Pack throughput vs GNU tar (whole tree, large files, small files, thick bundle), and how close the size estimates were. */
export async function benchPack(): Promise<BenchResult[]> {
  const work = await mkdtemp(join(tmpdir(), 'ap-bench-pack-'));
  try {
    const tree = join(work, 'tree');
    const profile = await generateTree(tree);
    const files = profile.files ?? [];
    const large = { ...profile, files: files.filter((f) => f.path.includes('/large/')) };
    const small = { ...profile, executable: files.find((f) => f.path.includes('/small/'))?.path ?? profile.executable, executableSize: SMALL_BYTES, files: files.filter((f) => f.path.includes('/small/')) };
    const thick = { ...profile, executable: small.executable, executableSize: SMALL_BYTES, files: [] };
    const smallTree = join(tree, 'small');
    const measured = await measureTrees([smallTree]);
    if (measured.isErr()) throw measured.error;
    const thickOptions: PackOptions = { extraTrees: [smallTree], extraTreeBytes: measured.value.bytes };
    const cases = [
      { name: 'pack throughput vs GNU tar | cat', dir: tree, profile, options: {}, what: `${LARGE_FILES + SMALL_FILES} files` },
      { name: 'pack large files vs GNU tar | cat', dir: join(tree, 'large'), profile: large, options: {}, what: `${LARGE_FILES} files of 2 MiB` },
      { name: 'pack small files vs GNU tar | cat', dir: smallTree, profile: small, options: {}, what: `${SMALL_FILES} files of 4 KiB` },
      { name: 'thick bundle (extraTrees) vs GNU tar | cat', dir: smallTree, profile: thick, options: thickOptions, what: `a tree of ${SMALL_FILES} files of 4 KiB` },
    ];
    await timeGnuTar(tree); // warm the page cache
    await timePack(profile);
    const results: BenchResult[] = [];
    const sizes: { name: string; packed: Packed }[] = [];
    for (const c of cases) {
      const tarTimes: number[] = [];
      const packTimes: number[] = [];
      let packed: Packed | undefined;
      for (let round = 0; round < ROUNDS; round++) {
        tarTimes.push(await timeGnuTar(c.dir));
        packed = await timePack(c.profile, c.options);
        packTimes.push(packed.seconds);
      }
      if (!packed) continue;
      const mib = packed.bytes / 1024 / 1024;
      const [tarSeconds, packSeconds] = [median(tarTimes), median(packTimes)];
      results.push({
        name: c.name,
        ratio: tarSeconds / packSeconds,
        detail:
          `${mib.toFixed(0)} MiB, ${c.what}: packBundle ${(mib / packSeconds).toFixed(0)} MiB/s (with SHA-256), GNU tar ${(mib / tarSeconds).toFixed(0)} MiB/s, ` +
          `medians of ${ROUNDS}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`,
      });
      sizes.push({ name: c.name, packed });
    }
    for (const { name, packed } of [sizes[0], sizes[3]].filter((s) => s !== undefined)) {
      const estimateError = (packed.withoutManifest - packed.estimate) / packed.estimate;
      results.push({
        name: name === cases[3]?.name ? 'thick bundle size vs estimate with measureTrees' : 'bundle size vs estimateBundleBytes',
        ratio: packed.withoutManifest / packed.estimate,
        detail: `sent ${packed.withoutManifest} B without manifest, estimated ${packed.estimate} B (${(estimateError * 100).toFixed(3)}%), manifest ${packed.bytes - packed.withoutManifest} B`,
      });
    }
    return results;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

runWhenCalledDirectly(import.meta.url, benchPack);
