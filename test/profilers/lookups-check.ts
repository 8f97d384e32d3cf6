/**
 * The `lookups` fixture (test/fixtures/programs/lookups.c) run by a tracing profiler: relative
 * names after chdir, fchdir and fork, `*at` calls on directory descriptors whose numbers are
 * reused, and failed lookups. Shared by the strace and eBPF suites.
 */
import { lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import type { ResourceProfile } from '../../src/policy/profile.js';
import { fixtureBinary } from '../helpers/fixtures.js';

/** The directory the fixture works in, and another one it is started in. */
export function lookupsSite(): { dir: string; elsewhere: string; command: string[]; cleanup: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-lookups-'));
  const elsewhere = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-lookups-cwd-'));
  mkdirSync(path.join(dir, 'sub'));
  for (const f of ['rel.txt', 'sub/inner.txt', 'sub/child.txt']) writeFileSync(path.join(dir, f), `${f}\n`);
  return {
    dir,
    elsewhere,
    command: [fixtureBinary('lookups'), dir, '0'],
    cleanup: () => {
      rmSync(dir, { recursive: true, force: true });
      rmSync(elsewhere, { recursive: true, force: true });
    },
  };
}

/** What the profile of one run must say. `lookups`: stat and access failures are traced too. */
export function expectLookupsProfile(profile: ResourceProfile, site: { dir: string; elsewhere: string }, options: { lookups: boolean }): void {
  const { dir, elsewhere } = site;
  const byPath = new Map(profile.files.map((f) => [f.path, f]));
  for (const f of ['rel.txt', 'sub/inner.txt', 'sub/child.txt']) {
    const use = byPath.get(path.join(dir, f));
    expect(use, `${f} in ${[...byPath.keys()].join(' ')}`).toBeDefined();
    expect(use!.access).toEqual(['read']);
    expect(use!.reasons).toEqual(['traced']);
  }
  // Nothing joined to the directory the program was started in, or to a stale descriptor name.
  const all = [...byPath.keys(), ...profile.probes];
  expect(all.filter((p) => p.startsWith(elsewhere) || p.includes('inner.txt/') || p.includes('/sub/sub'))).toEqual([]);
  for (const name of ['rel.txt', 'inner.txt', 'child.txt', 'missing.txt', 'absent.txt', 'nope']) {
    expect(all.filter((p) => path.posix.basename(p) === name && !p.startsWith(`${dir}/`)), name).toEqual([]);
  }
  // Failed lookups are probes, never uses.
  const probes = [path.join(dir, 'missing.txt'), path.join(dir, 'sub/absent.txt'), '/nonexistent-ap-lookups/prog', ...(options.lookups ? [path.join(dir, 'nope'), '/nonexistent-ap-lookups/x'] : [])];
  expect(profile.probes).toEqual(expect.arrayContaining(probes));
  for (const p of probes) expect(byPath.has(p), p).toBe(false);
  for (const f of profile.files) {
    if (!f.created) expect(lstatSync(f.path, { throwIfNoEntry: false }), f.path).toBeDefined();
  }
  const root = profile.processes.find((p) => p.executable?.endsWith(path.basename(profile.executable)));
  expect(profile.processes.filter((p) => p.ppid === root?.pid)).toHaveLength(1);
  for (const p of profile.processes) expect(p.uid, `uid of ${p.pid}`).toBe(process.getuid?.());
  expect(profile.start?.groups).toBeInstanceOf(Array);
  expect(profile.completeness.complete).toBe(true);
}
