/**
 * Overhead of the eBPF profiler: each workload runs un-profiled and profiled, alternating, five
 * times each; the ratio is the median profiled wall time over the median un-profiled one.
 *
 * The wall time is the workload's own (a bash wrapper reads EPOCHREALTIME before and after it,
 * without forking), so bpftrace's compile and attach time, paid before the program is released,
 * is not counted: it is a fixed start-up cost of the profiler, reported separately.
 *
 * Run alone with `npx tsx bench/profilers-ebpf.ts` (root, bpftrace).
 *
 * @module
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createEbpfProfiler } from '../src/profilers/ebpf.js';
import { runWhenCalledDirectly } from './report.js';

const RUNS = 5;
const PYTHON = '/usr/bin/python3';
/** Times the command given as arguments into the file named by $1 (start and end, in seconds). */
const TIMER = 'out=$1; shift; s=$EPOCHREALTIME; "$@"; e=$EPOCHREALTIME; echo "$s $e" > "$out"';

interface Workload {
  name: string;
  command: string[];
}

function workloads(dir: string): Workload[] {
  const opens = `import os\nd=${JSON.stringify(dir)}\nfor i in range(10000):\n    os.close(os.open(f"{d}/f{i % 100}", os.O_RDONLY))`;
  return [
    { name: 'file-heavy start-up (python3 imports)', command: [PYTHON, '-c', 'import json,http.server,email.parser,asyncio,sqlite3,decimal'] },
    { name: 'CPU-bound loop', command: [PYTHON, '-S', '-c', 'sum(i * i for i in range(3_000_000))'] },
    { name: '10,000 small file opens', command: [PYTHON, '-S', '-c', opens] },
  ];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

function elapsedFrom(file: string): number {
  const [start = NaN, end = NaN] = readFileSync(file, 'utf8').trim().split(' ').map(Number);
  return end - start;
}

/** Measure every workload; returns the overhead ratios (1.0 = no overhead). */
export async function benchEbpf(): Promise<{ name: string; ratio: number }[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-bench-ebpf-'));
  try {
    for (let i = 0; i < 100; i++) writeFileSync(path.join(dir, `f${i}`), 'x');
    const timing = path.join(dir, 'timing');
    const profiler = createEbpfProfiler();
    const availability = await profiler.availability();
    if (!availability.available) throw new Error(`eBPF profiler unavailable: ${availability.reason ?? ''}`);
    const results: { name: string; ratio: number }[] = [];
    const startupMs: number[] = [];
    for (const workload of workloads(dir)) {
      const argv = ['bash', '-c', TIMER, 'timer', timing, ...workload.command];
      // One warm-up run fills the page cache for both sides.
      spawnSync(argv[0]!, argv.slice(1), { stdio: 'ignore' });
      const plain: number[] = [];
      const profiled: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        spawnSync(argv[0]!, argv.slice(1), { stdio: 'ignore' });
        plain.push(elapsedFrom(timing));
        const before = Date.now();
        const result = await profiler.profile({ command: argv }, { durationMs: 120_000 });
        if (result.isErr()) throw result.error;
        const program = elapsedFrom(timing);
        profiled.push(program);
        startupMs.push(Date.now() - before - program * 1000);
      }
      const ratio = median(profiled) / median(plain);
      results.push({ name: workload.name, ratio });
      // The ratio of the fastest runs is printed too: on a busy machine it is the less noisy one.
      const best = Math.min(...profiled) / Math.min(...plain);
      console.log(
        `ebpf  ${workload.name.padEnd(40)} plain ${(median(plain) * 1000).toFixed(1)} ms  profiled ${(median(profiled) * 1000).toFixed(1)} ms  ratio ${ratio.toFixed(3)} (fastest runs: ${best.toFixed(3)})`,
      );
    }
    console.log(`ebpf  fixed cost per profile (bpftrace compile, attach, detach): median ${median(startupMs).toFixed(0)} ms`);
    return results;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

runWhenCalledDirectly(import.meta.url, benchEbpf);
