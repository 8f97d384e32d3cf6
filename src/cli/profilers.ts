/**
 * Choosing a profiler by name, or the best one available here.
 *
 * @module
 */
import { createEbpfProfiler } from '../profilers/ebpf.js';
import { createProcfsProfiler } from '../profilers/procfs.js';
import { createStraceProfiler } from '../profilers/strace.js';
import { detectProfilers } from '../profilers/detect.js';
import type { Profiler } from '../spec/profiler.js';

const FACTORIES: Record<string, () => Profiler> = {
  ebpf: () => createEbpfProfiler(),
  strace: () => createStraceProfiler(),
  procfs: () => createProcfsProfiler(),
};

/** The named profiler, or the first available of ebpf, strace, procfs (procfs only for a pid). */
export async function chooseProfiler(name: string | undefined, attaching: boolean): Promise<{ profiler?: Profiler; reason?: string }> {
  if (name) {
    const make = FACTORIES[name];
    return make ? { profiler: make() } : { reason: `unknown profiler "${name}" (ebpf, strace, procfs)` };
  }
  const found = await detectProfilers();
  for (const candidate of ['ebpf', 'strace', ...(attaching ? ['procfs'] : [])]) {
    if (found.find((f) => f.name === candidate)?.available) return { profiler: FACTORIES[candidate]!() };
  }
  return { reason: `no profiler works here: ${found.map((f) => `${f.name}: ${f.reason ?? 'unavailable'}`).join('; ')}` };
}
