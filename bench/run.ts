/**
 * `npm run bench`: every benchmark, printed as ratios against a baseline run in the same process
 * or script. Pass names to run a subset: `npm run bench -- planner transport`.
 */
import { benchPack } from './bundle.js';
import { benchEsxiCopy } from './esxi.js';
import { benchJailBundles } from './jail-bundles.js';
import { benchMigrate } from './migrate.js';
import { benchPlanner } from './planner.js';
import { benchEbpf } from './profilers-ebpf.js';
import { benchStrace } from './profilers-strace.js';
import { benchTransport } from './transport.js';
import { printRatios } from './report.js';
import { benchTable2 } from './table2.js';
import { benchUnpack } from './unpack.js';
import { benchBwlimit, benchWan } from './wan.js';

const benches: Record<string, () => Promise<void>> = {
  planner: async () => {
    const { rows, growthExponent } = benchPlanner();
    console.log('  files  plans/s  us/plan');
    for (const r of rows) console.log(`  ${String(r.files).padStart(7)}  ${r.plansPerSecond.toFixed(0).padStart(7)}  ${r.microsPerPlan.toFixed(1)}`);
    console.log(`  growth exponent (log-log, >=1000 files): ${growthExponent.toFixed(2)} (1.00 = linear)`);
  },
  'profilers-ebpf': async () => printRatios(await benchEbpf()),
  'profilers-strace': async () => printRatios(await benchStrace()),
  bundle: async () => printRatios(await benchPack()),
  unpack: async () => printRatios(await benchUnpack()),
  transport: async () => printRatios(await benchTransport()),
  esxi: async () => printRatios(await benchEsxiCopy()),
  'jail-bundles': async () => printRatios(await benchJailBundles()),
  migrate: async () => printRatios(await benchMigrate()),
  // Prints its own table of wall times as it goes (minutes at BENCH_WAN_MIB=2048).
  wan: async () => void (await benchWan()),
  bwlimit: async () => printRatios(await benchBwlimit()),
  // The paper's Table 2 with times on two emulated links; prints its own table (~5 min; BENCH_TABLE2_VM_MIB, default 128).
  table2: async () => void (await benchTable2()),
};

console.log(`load average: ${(await import('node:os')).loadavg().map((l) => l.toFixed(2)).join(' ')} (ratios are noisy above ~1 per core)`);
const wanted = process.argv.slice(2);
for (const [name, run] of Object.entries(benches)) {
  if (wanted.length && !wanted.includes(name)) continue;
  console.log(`\n== ${name}`);
  await run();
}
