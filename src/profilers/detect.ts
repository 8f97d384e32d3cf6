/**
 * Which profilers work on this host, and why the others do not.
 *
 * @module
 */
import type { ProfilerAvailability } from '../spec/profiler.js';
import { ebpfAvailability } from './ebpf.js';
import { procfsAvailability } from './procfs.js';
import { straceAvailability } from './strace.js';

/**
 * Ask every Linux profiler whether it can run here (eBPF, strace, procfs: best first).
 * Never fails: a profiler that cannot say is reported unavailable with the reason.
 */
export async function detectProfilers(): Promise<ProfilerAvailability[]> {
  const checks: Array<[string, () => Promise<ProfilerAvailability>]> = [
    ['ebpf', () => ebpfAvailability()],
    ['strace', () => straceAvailability()],
    ['procfs', () => procfsAvailability()],
  ];
  return Promise.all(
    checks.map(([name, check]) =>
      check().catch((e: unknown) => ({ name, available: false, reason: `checking failed: ${e instanceof Error ? e.message : String(e)}` })),
    ),
  );
}
