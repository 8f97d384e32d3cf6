/**
 * strace profiler overhead: wall time of a profiled run over the same run un-profiled, in the
 * same process, median of a few runs each. The lead's bench/run.ts calls {@link benchStrace}.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createStraceProfiler } from '../src/profilers/strace.js';

/** The interpreter itself, not a version-manager shim that would add its own start-up to both sides. */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** The workloads measured: a file-heavy start-up, a CPU-bound loop, many small file opens. */
export const STRACE_WORKLOADS: ReadonlyArray<{ name: string; command: string[] }> = [
  { name: 'strace: python3 file-heavy start-up', command: [PYTHON, '-c', 'import json,http.server,email.parser,asyncio,sqlite3,decimal'] },
  { name: 'strace: CPU-bound loop', command: [PYTHON, '-c', 'sum(i * i for i in range(3_000_000))'] },
  { name: 'strace: 10,000 small file opens', command: [PYTHON, '-c', 'import os\nfor _ in range(10_000): os.close(os.open("/etc/hostname", os.O_RDONLY))'] },
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function runPlain(command: string[]): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${command.join(' ')} exited with ${code}`))));
  });
}

async function runProfiled(command: string[]): Promise<number> {
  const profiler = createStraceProfiler();
  const started = performance.now();
  const result = await profiler.profile({ command }, { durationMs: 120_000 });
  if (result.isErr()) throw result.error;
  return performance.now() - started;
}

/** Measure each workload `runs` times plain and under the strace profiler; ratio = median profiled / median plain. */
export async function benchStrace(runs = 5): Promise<{ name: string; ratio: number }[]> {
  const results: { name: string; ratio: number }[] = [];
  for (const workload of STRACE_WORKLOADS) {
    await runPlain(workload.command); // warm the page cache so the first run does not count disk reads
    const plain: number[] = [];
    const profiled: number[] = [];
    for (let i = 0; i < runs; i++) {
      plain.push(await runPlain(workload.command));
      profiled.push(await runProfiled(workload.command));
    }
    results.push({ name: workload.name, ratio: median(profiled) / median(plain) });
  }
  return results;
}
