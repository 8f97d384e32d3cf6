/**
 * `npm run bench`: every benchmark, printed as ratios against a baseline run in the same process
 * or script. Pass names to run a subset: `npm run bench -- planner transport`.
 */
import { benchPlanner } from './planner.js';

type Bench = () => Promise<void>;

const benches: Record<string, Bench> = {
  planner: async () => {
    const { rows, growthExponent } = benchPlanner();
    console.log('planner: files  plans/s  us/plan');
    for (const r of rows) console.log(`  ${String(r.files).padStart(7)}  ${r.plansPerSecond.toFixed(0).padStart(7)}  ${r.microsPerPlan.toFixed(1)}`);
    console.log(`  growth exponent (log-log, >=1000 files): ${growthExponent.toFixed(2)} (1.00 = linear)`);
  },
};

const wanted = process.argv.slice(2);
for (const [name, run] of Object.entries(benches)) {
  if (wanted.length && !wanted.includes(name)) continue;
  console.log(`\n== ${name}`);
  await run();
}
