/**
 * What a migration of each real Debian daemon would carry, by reason: PostgreSQL 15
 * (`pg_ctlcluster 15 main start`), nginx (`nginx`, daemonized) and memcached
 * (`memcached -d -u memcache`) are attached by pid with every profiler available here (eBPF,
 * strace, procfs), their profiles completed by the capture (package files, config, data roots,
 * accounts), and the files and bytes per reason (`summarizeReasons`) printed as markdown tables.
 *
 * Run as root: `npx tsx scripts/reasons-tables.ts [--duration-ms N]`. Daemons that were not
 * running are started for the run and stopped again; running ones are only watched.
 */
import { sourcePid } from '../test/helpers/processes.js';
import { spawnSync } from 'node:child_process';
import {
  captureProgram,
  createEbpfProfiler,
  createLocalExecutor,
  createProcfsProfiler,
  createStraceProfiler,
  detectProfilers,
  FILE_REASONS,
  summarizeReasons,
  type Profiler,
  type ReasonSummary,
  type ResourceProfile,
} from '../src/index.js';

const durationArg = process.argv.indexOf('--duration-ms');
const DURATION_MS = durationArg > 0 ? Number(process.argv[durationArg + 1]) : 1500;

/** Run a shell command; a failure says what it printed. */
function sh(cmd: string): string {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}



const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A daemon as Debian starts it: how to find its main process, start it and stop it again. */
interface Daemon {
  name: string;
  pattern: string;
  start(): void;
  /** Stop what `start` started (given the pid it found). */
  stop(pid: number): void;
}

const DAEMONS: Daemon[] = [
  {
    name: 'PostgreSQL 15 (pg_ctlcluster 15 main start)',
    pattern: '^/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main',
    start: () => sh('pg_ctlcluster 15 main start'),
    stop: () => sh('pg_ctlcluster 15 main stop'),
  },
  {
    name: 'nginx (nginx: daemonized master + workers)',
    pattern: '^nginx: master process',
    start: () => sh('nginx'),
    stop: (pid) => sh(`kill -TERM ${pid}`),
  },
  {
    name: 'memcached (memcached -d -u memcache)',
    pattern: '^/usr/bin/memcached -d -u memcache',
    start: () => sh('/usr/bin/memcached -d -u memcache -m 64 -p 11211 -l 127.0.0.1'),
    stop: (pid) => sh(`kill -TERM ${pid}`),
  },
];

const FACTORIES: Record<string, () => Profiler> = {
  ebpf: () => createEbpfProfiler(),
  strace: () => createStraceProfiler(),
  procfs: () => createProcfsProfiler(),
};

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** One markdown table: a row per reason that carries something (every reason when `all`), and the total. */
function reasonsTable(summary: ReasonSummary, all = false): string {
  const rows = [...FILE_REASONS, 'unspecified' as const].filter((r) => all || summary[r].files > 0 || summary[r].bytes > 0);
  const total = rows.reduce((t, r) => ({ files: t.files + summary[r].files, bytes: t.bytes + summary[r].bytes }), { files: 0, bytes: 0 });
  return [
    '| reason | files | bytes | |',
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r} | ${summary[r].files} | ${summary[r].bytes} | ${formatBytes(summary[r].bytes)} |`),
    `| **total** | **${total.files}** | **${total.bytes}** | **${formatBytes(total.bytes)}** |`,
  ].join('\n');
}

/** Profile `pid` with `profiler` and complete the profile with the capture. */
async function profileAndCapture(profiler: Profiler, pid: number): Promise<{ profile: ResourceProfile; profileMs: number; captureMs: number }> {
  const t0 = performance.now();
  const profiled = await profiler.profile({ pid }, { durationMs: DURATION_MS });
  if (profiled.isErr()) throw profiled.error;
  const t1 = performance.now();
  const captured = await captureProgram(profiled.value, createLocalExecutor());
  if (captured.isErr()) throw captured.error;
  return { profile: captured.value, profileMs: t1 - t0, captureMs: performance.now() - t1 };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root: the daemons are started as Debian starts them and attached by pid');
  const detected = await detectProfilers();
  const available = detected.filter((p) => p.available && FACTORIES[p.name]);
  const skipped = detected.filter((p) => !p.available);
  console.log(`# Files and bytes per reason (attach by pid, ${DURATION_MS} ms of watching, then the capture)\n`);
  console.log(`Profilers: ${available.map((p) => p.name).join(', ')}${skipped.length ? `; unavailable: ${skipped.map((p) => `${p.name} (${p.reason})`).join(', ')}` : ''}.\n`);
  const startedHere: Array<() => void> = [];
  try {
    for (const daemon of DAEMONS) {
      let pid = sourcePid(daemon.pattern);
      if (!pid) {
        daemon.start();
        for (let i = 0; i < 100 && !(pid = sourcePid(daemon.pattern)); i++) await sleep(50);
        if (!pid) throw new Error(`${daemon.name} did not start`);
        const started = pid;
        startedHere.push(() => daemon.stop(started));
        await sleep(300); // past its start-up: the profilers see it settled, as a running service
      }
      for (const p of available) {
        const { profile, profileMs, captureMs } = await profileAndCapture(FACTORIES[p.name]!(), pid);
        const summary = summarizeReasons(profile);
        console.log(`## ${daemon.name}: ${p.name}\n`);
        console.log(
          `pid ${pid}, ${profile.processes.length} processes, uid ${profile.uid}; ${profile.files.length} files and ${profile.trees.length} whole trees ` +
            `(${profile.trees.map((t) => t.path).join(', ') || 'none'}); profile ${Math.round(profileMs)} ms, capture ${Math.round(captureMs)} ms\n`,
        );
        console.log(reasonsTable(summary));
        console.log('');
      }
    }
  } finally {
    for (const stop of startedHere.reverse()) {
      try {
        stop();
      } catch (e) {
        console.error(`could not stop a daemon started here: ${(e as Error).message}`);
      }
    }
  }
}

await main();
