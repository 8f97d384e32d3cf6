/**
 * Finding a real daemon's processes on this machine: by command line (pgrep, run without a shell,
 * so it never matches itself), oldest first, and told apart from a migrated copy by the root
 * directory each process sees.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';

/** Start time of a process in clock ticks since boot (Infinity when it is gone). */
export function startTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/** The root directory a process sees ('' when it is gone). */
export function rootOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/root`);
  } catch {
    return '';
  }
}

/** Processes matching `pattern` whose root is `root`, oldest first. */
export function processesIn(root: string, pattern: string): number[] {
  return spawnSync('pgrep', ['-f', pattern], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((p) => rootOf(p) === root)
    .sort((a, b) => startTicks(a) - startTicks(b));
}

/** The oldest process of this host (root `/`, not a migrated copy in a root of its own) matching `pattern`, 0 if none. */
export function sourcePid(pattern: string): number {
  return processesIn('/', pattern)[0] ?? 0;
}
