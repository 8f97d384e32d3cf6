/**
 * Planner benchmark: plans per second for profiles of 10 to 100,000 files, and how time grows
 * with profile size (the exponent of a log-log fit; 1.0 = linear).
 */
import { planMigration, type ResourceProfileInput } from '../src/index.js';

function makeProfile(fileCount: number): ResourceProfileInput {
  const files = Array.from({ length: fileCount }, (_, i) => ({
    path: `/srv/data/d${i % 100}/f${i}.dat`,
    kind: 'regular' as const,
    access: ['read' as const],
    size: 4096 + (i % 7) * 1000,
    sharedLibrary: i % 50 === 0,
  }));
  return {
    executable: '/usr/bin/app',
    executableSize: 1_000_000,
    argv: ['app'],
    cwd: '/srv',
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1.0', arch: 'x86_64' },
    files,
    sockets: [{ family: 'inet', protocol: 'tcp', localPort: 80, listening: true }],
    ipc: [{ kind: 'sysv-shm', key: 1 }],
  };
}

export interface PlannerBenchRow {
  files: number;
  plansPerSecond: number;
  microsPerPlan: number;
}

export function benchPlanner(sizes = [10, 100, 1_000, 10_000, 100_000]): { rows: PlannerBenchRow[]; growthExponent: number } {
  const rows: PlannerBenchRow[] = [];
  for (const files of sizes) {
    const profile = makeProfile(files);
    // Warm up, then run for at least ~300 ms.
    for (let i = 0; i < 3; i++) planMigration(profile);
    let runs = 0;
    const start = performance.now();
    // CPU time of this process, not wall time: other processes on a busy machine do not count.
    const cpuStart = process.cpuUsage();
    while (performance.now() - start < 300 || runs < 3) {
      const plan = planMigration(profile);
      if (plan.isErr()) throw plan.error;
      runs += 1;
    }
    const cpu = process.cpuUsage(cpuStart);
    const elapsed = (cpu.user + cpu.system) / 1000;
    rows.push({ files, plansPerSecond: (runs / elapsed) * 1000, microsPerPlan: (elapsed / runs) * 1000 });
  }
  // Slope of log(time) against log(files) over the upper sizes, where per-plan overhead no longer dominates.
  const upper = rows.filter((r) => r.files >= 1_000);
  const xs = upper.map((r) => Math.log(r.files));
  const ys = upper.map((r) => Math.log(r.microsPerPlan));
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const slope = xs.reduce((s, x, i) => s + (x - mx) * (ys[i]! - my), 0) / xs.reduce((s, x) => s + (x - mx) ** 2, 0);
  return { rows, growthExponent: slope };
}
