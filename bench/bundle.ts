/**
 * Pack throughput: packBundle of a generated tree into /dev/null vs `tar -cf - DIR | cat >/dev/null`
 * (GNU tar) on the same tree in the same run. Both read from a warm page cache; each side runs
 * three times, alternating, and the best time counts. packBundle also hashes every byte (SHA-256),
 * which GNU tar does not.
 */
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { packBundle } from '../src/bundle/pack.js';
import type { ResourceProfileInput } from '../src/policy/profile.js';

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
  const executable = files[0]?.path ?? dir;
  return {
    executable,
    executableSize: LARGE_BYTES,
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

async function timePack(profile: ResourceProfileInput): Promise<{ seconds: number; bytes: number; estimate: number; withoutManifest: number }> {
  const start = performance.now();
  const result = await packBundle(profile, createWriteStream('/dev/null'));
  const seconds = (performance.now() - start) / 1000;
  if (result.isErr()) throw result.error;
  return { seconds, bytes: result.value.totalBytes, estimate: result.value.estimate.bytes, withoutManifest: result.value.bytesWithoutManifest };
}

/** Pack throughput vs GNU tar, and how close the size estimate was. */
export async function benchPack(): Promise<BenchResult[]> {
  const work = await mkdtemp(join(tmpdir(), 'ap-bench-pack-'));
  try {
    const tree = join(work, 'tree');
    const profile = await generateTree(tree);
    await timeGnuTar(tree); // warm the page cache
    let tarBest = Infinity;
    let packBest = Infinity;
    let packed = { seconds: 0, bytes: 0, estimate: 0, withoutManifest: 0 };
    for (let round = 0; round < 3; round++) {
      tarBest = Math.min(tarBest, await timeGnuTar(tree));
      packed = await timePack(profile);
      packBest = Math.min(packBest, packed.seconds);
    }
    const mib = packed.bytes / 1024 / 1024;
    const estimateError = (packed.withoutManifest - packed.estimate) / packed.estimate;
    return [
      {
        name: 'pack throughput vs GNU tar | cat',
        ratio: tarBest / packBest,
        detail: `${mib.toFixed(0)} MiB, ${LARGE_FILES + SMALL_FILES} files: packBundle ${(mib / packBest).toFixed(0)} MiB/s (with SHA-256), GNU tar ${(mib / tarBest).toFixed(0)} MiB/s`,
      },
      {
        name: 'bundle size vs estimateBundleBytes',
        ratio: packed.withoutManifest / packed.estimate,
        detail: `sent ${packed.withoutManifest} B without manifest, estimated ${packed.estimate} B (${(estimateError * 100).toFixed(3)}%), manifest ${packed.bytes - packed.withoutManifest} B`,
      },
    ];
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

// Run directly: `npx tsx bench/bundle.ts`.
if (import.meta.url === `file://${process.argv[1]}`) {
  for (const line of await benchPack()) console.log(`${line.name}: ${line.ratio.toFixed(3)} (${line.detail})`);
}
