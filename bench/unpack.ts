/**
 * Unpack throughput: unpackBundle of a packed bundle file into a fresh directory vs GNU
 * `tar -xf FILE -C DIR` of the same file into a fresh directory, on the same file system (under
 * /var/tmp, not a size-limited tmpfs). Two trees: large files and small files. Each side runs
 * several times, alternating, after a `sync` so neither pays for the other's dirty pages; the
 * median counts and the load average is printed (the machine may be busy). unpackBundle also
 * hashes every byte (SHA-256) and checks the manifest, which GNU tar does not.
 */
import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { packBundle } from '../src/bundle/pack.js';
import { unpackBundle } from '../src/bundle/unpack.js';
import type { ResourceProfileInput } from '../src/policy/profile.js';
import { benchProfile, type BenchResult } from './bundle.js';
import { runWhenCalledDirectly } from './report.js';

const execFileAsync = promisify(execFile);

const LARGE_FILES = 100;
const LARGE_BYTES = 4 * 1024 * 1024;
const SMALL_FILES = 5000;
const SMALL_BYTES = 4096;
const ROUNDS = Number(process.env.BENCH_UNPACK_ROUNDS ?? 3);
/** Not tmpfs (the bench writes ~1 GiB per round) and the same file system for both sides. */
const WORK_PARENT = process.env.BENCH_UNPACK_DIR ?? '/var/tmp';

/** Write `count` files of `bytes` each (random, distinct) under `dir`, 100 per subdirectory; returns a profile listing them. */
async function generateTree(dir: string, count: number, bytes: number): Promise<ResourceProfileInput> {
  const pool = randomBytes(bytes + 64 * 1024);
  const files: NonNullable<ResourceProfileInput['files']> = [];
  for (let d = 0; d < Math.ceil(count / 100); d++) {
    await mkdir(join(dir, `d${d}`), { recursive: true });
    for (let i = 0; i < 100 && d * 100 + i < count; i++) {
      const path = join(dir, `d${d}`, `f${i}.bin`);
      const at = ((d * 100 + i) * 397) % (64 * 1024);
      await writeFile(path, pool.subarray(at, at + bytes));
      files.push({ path, kind: 'regular', access: ['read'], size: bytes });
    }
  }
  return benchProfile(dir, files, bytes);
}

async function sync(): Promise<void> {
  await execFileAsync('sync');
}

async function timeGnuTar(bundle: string, dir: string): Promise<number> {
  await mkdir(dir);
  await sync();
  const start = performance.now();
  await execFileAsync('tar', ['-xf', bundle, '-C', dir]);
  const seconds = (performance.now() - start) / 1000;
  await rm(dir, { recursive: true, force: true });
  return seconds;
}

async function timeUnpack(bundle: string, dir: string): Promise<number> {
  await sync();
  const start = performance.now();
  const result = await unpackBundle(createReadStream(bundle), dir);
  const seconds = (performance.now() - start) / 1000;
  if (result.isErr()) throw result.error;
  if (!result.value.verified) throw new Error('bench: the bundle was not verified');
  await rm(dir, { recursive: true, force: true });
  return seconds;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** Unpack throughput vs GNU `tar -xf` (large files, small files); ratio = tar time / unpackBundle time. */
export async function benchUnpack(): Promise<BenchResult[]> {
  const work = await mkdtemp(join(WORK_PARENT, 'ap-bench-unpack-'));
  try {
    const cases = [
      { name: 'unpack large files vs GNU tar -x', key: 'large', count: LARGE_FILES, bytes: LARGE_BYTES, what: `${LARGE_FILES} files of ${LARGE_BYTES / 1024 / 1024} MiB` },
      { name: 'unpack small files vs GNU tar -x', key: 'small', count: SMALL_FILES, bytes: SMALL_BYTES, what: `${SMALL_FILES} files of ${SMALL_BYTES / 1024} KiB` },
    ];
    const results: BenchResult[] = [];
    for (const c of cases) {
      const profile = await generateTree(join(work, `tree-${c.key}`), c.count, c.bytes);
      const bundle = join(work, `${c.key}.bundle`);
      const packed = await packBundle(profile, createWriteStream(bundle));
      if (packed.isErr()) throw packed.error;
      await rm(join(work, `tree-${c.key}`), { recursive: true, force: true });
      const bytes = (await stat(bundle)).size;
      // Warm the page cache with the bundle and both code paths.
      await timeGnuTar(bundle, join(work, 'warm-tar'));
      await timeUnpack(bundle, join(work, 'warm-ours'));
      const tarTimes: number[] = [];
      const ourTimes: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        tarTimes.push(await timeGnuTar(bundle, join(work, `tar-${round}`)));
        ourTimes.push(await timeUnpack(bundle, join(work, `ours-${round}`)));
      }
      const mib = bytes / 1024 / 1024;
      const [tarSeconds, ourSeconds] = [median(tarTimes), median(ourTimes)];
      results.push({
        name: c.name,
        ratio: tarSeconds / ourSeconds,
        detail:
          `${mib.toFixed(0)} MiB, ${c.what}: unpackBundle ${(mib / ourSeconds).toFixed(0)} MiB/s (with SHA-256), GNU tar ${(mib / tarSeconds).toFixed(0)} MiB/s, ` +
          `medians of ${ROUNDS} (ours ${ourTimes.map((t) => t.toFixed(2)).join('/')} s, tar ${tarTimes.map((t) => t.toFixed(2)).join('/')} s), ` +
          `load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`,
      });
      await rm(bundle, { force: true });
    }
    return results;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

runWhenCalledDirectly(import.meta.url, benchUnpack);
