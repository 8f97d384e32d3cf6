/**
 * The health check against a real PostgreSQL cluster that replays its WAL at start (decision
 * 0015): a private cluster (initdb in /tmp/aphealth-*, its own port, as user postgres) is written
 * to, profiled by pid with the procfs profiler, frozen and copied as a stop-and-copy would copy it,
 * killed, and the copy started: it listens at once but refuses queries until crash recovery ends.
 * The check must not say healthy before `select 1` works (by more than ~100 ms); the rule before
 * (port only) said so more than a second early.
 */
import { execFile, spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProcfsProfiler } from '../../src/index.js';
import { healthCheckCommon, readinessRoles } from '../../src/destination/health.js';
import type { MigrationPlan } from '../../src/policy/plan.js';
import type { ResourceProfile } from '../../src/policy/profile.js';
import type { StartedProgram } from '../../src/spec/deployer.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { skipUnless } from '../helpers/requirements.js';
import { freePort } from '../fixtures/health-free-port.js';

const BIN = '/usr/lib/postgresql/15/bin';
const AS_POSTGRES = ['--reuid=postgres', '--regid=postgres', '--init-groups', '--'];
const ROWS = Number(process.env.APHEALTH_ROWS ?? 1_000_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hasPostgres = existsSync(join(BIN, 'postgres')) && spawnSync('id', ['postgres']).status === 0;

function must(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}
const asPostgres = (argv: string[]) => must(spawnSync('setpriv', [...AS_POSTGRES, ...argv], { encoding: 'utf8' }), argv.join(' '));
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const childrenOf = (pid: number) =>
  readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        return /^PPid:\s*(\d+)$/m.exec(readFileSync(`/proc/${n}/status`, 'utf8'))?.[1] === String(pid);
      } catch {
        return false;
      }
    })
    .map(Number);
async function killAndWait(pids: number[], signal: NodeJS.Signals): Promise<void> {
  for (const p of pids) if (alive(p)) process.kill(p, signal);
  for (let i = 0; i < 200 && pids.some(alive); i++) await sleep(50);
}

describe.skipIf(skipUnless('root', 'tool:setpriv', 'tool:psql', 'tool:cp') || !hasPostgres)('health check: PostgreSQL in crash recovery', () => {
  const base = mkdtempSync('/tmp/aphealth-pg-');
  const transport = createLocalTransport({ root: base });
  let port = 0;
  let profile: ResourceProfile;
  const started: number[] = [];
  const results: Record<string, { healthyMs: number; queryMs: number }> = {};

  const psqlOnce = () =>
    new Promise<boolean>((resolve) => {
      execFile('psql', ['-h', base, '-p', String(port), '-U', 'postgres', '-tAqc', 'select 1'], { timeout: 5000 }, (error, stdout) => resolve(!error && stdout.trim() === '1'));
    });

  /**
   * `select 1` over the wire protocol, without a process to start (psql takes 50-150 ms to run
   * here, too coarse to time against): startup message, then a simple query once the server says
   * ReadyForQuery; true when a DataRow comes back, false on an error, a refusal or after 2 s.
   */
  const wireQuery = () =>
    new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let buffer = Buffer.alloc(0);
      let queried = false;
      const done = (ok: boolean) => {
        socket.destroy();
        resolve(ok);
      };
      socket.setTimeout(2000, () => done(false));
      socket.on('error', () => done(false));
      socket.on('connect', () => {
        const params = Buffer.from('user\0postgres\0database\0postgres\0\0');
        const head = Buffer.alloc(8);
        head.writeInt32BE(8 + params.length, 0);
        head.writeInt32BE(196608, 4); // protocol 3.0
        socket.write(Buffer.concat([head, params]));
      });
      socket.on('data', (chunk) => {
        buffer = Buffer.concat([buffer, chunk]);
        while (buffer.length >= 5 && buffer.length >= 1 + buffer.readInt32BE(1)) {
          const type = String.fromCharCode(buffer[0]!);
          buffer = buffer.subarray(1 + buffer.readInt32BE(1));
          if (type === 'E') return done(false);
          if (type === 'D') return done(true);
          if (type === 'Z' && !queried) {
            queried = true;
            const sql = Buffer.from('select 1\0');
            const q = Buffer.alloc(5);
            q.write('Q', 0);
            q.writeInt32BE(4 + sql.length, 1);
            socket.write(Buffer.concat([q, sql]));
          }
        }
      });
    });

  /** Starts the copy `dir` (as postgres, detached) and races the health check against `select 1`. */
  async function startAndMeasure(dir: string, p: ResourceProfile) {
    const log = openSync(join(base, `${dir}.log`), 'a');
    const t0 = performance.now();
    const child = spawn('setpriv', [...AS_POSTGRES, join(BIN, 'postgres'), '-D', join(base, dir)], { detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    started.push(child.pid!);
    const program: StartedProgram = { pid: child.pid!, logPath: join(base, `${dir}.log`), endpoints: [] };
    const health = (async () => {
      const r = await healthCheckCommon({ transport, profile: p, plan: {} as MigrationPlan, name: 'pg' }, program, { timeoutMs: 60_000 });
      const ms = performance.now() - t0;
      // What a user does once the migration says healthy: psql -c 'select 1'.
      return { r, ms, psqlWorks: await psqlOnce() };
    })();
    let queryMs = -1;
    while (performance.now() - t0 < 60_000) {
      if (await wireQuery()) {
        queryMs = performance.now() - t0;
        break;
      }
      await sleep(5);
    }
    const h = await health;
    if (h.r.isErr()) throw h.r.error;
    await killAndWait([child.pid!], 'SIGINT'); // fast shutdown
    return { healthyMs: h.ms, queryMs, psqlWorks: h.psqlWorks, outcome: h.r.value };
  }

  beforeAll(async () => {
    chownSync(base, Number(must(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }), 'id')), Number(must(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }), 'id')));
    port = await freePort();
    const src = join(base, 'src');
    asPostgres([join(BIN, 'initdb'), '-D', src, '-A', 'trust', '-U', 'postgres', '--no-sync']);
    const conf = [
      `port = ${port}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${base}'`,
      // Everything written stays in the WAL since the last checkpoint: the copy replays it all.
      'max_wal_size = 4GB',
      'checkpoint_timeout = 1h',
      'fsync = off',
      // No autovacuum worker in the profile's sample (it would be a transient role).
      'autovacuum_naptime = 1h',
    ];
    spawnSync('sh', ['-c', `printf '%s\\n' "$@" >> ${src}/postgresql.conf`, 'sh', ...conf]);
    asPostgres([join(BIN, 'pg_ctl'), '-D', src, '-l', join(base, 'src.log'), '-w', 'start']);
    const psql = (sql: string) => must(spawnSync('psql', ['-h', base, '-p', String(port), '-U', 'postgres', '-tAqc', sql], { encoding: 'utf8' }), sql);
    psql('create table t(a int, b text)');
    psql(`insert into t select g, md5(g::text) from generate_series(1, ${ROWS}) g`);
    const master = Number(readFileSync(join(src, 'postmaster.pid'), 'utf8').split('\n')[0]);
    const profiled = await createProcfsProfiler().profile({ pid: master }, { durationMs: 1000 });
    if (profiled.isErr()) throw profiled.error;
    profile = profiled.value;
    // Stop-and-copy: freeze the running cluster, copy its data directory (twice: one copy per rule), kill it.
    const tree = [master, ...childrenOf(master)];
    for (const p of tree) process.kill(p, 'SIGSTOP');
    for (const dir of ['before', 'after']) must(spawnSync('cp', ['-a', src, join(base, dir)], { encoding: 'utf8' }), 'cp');
    await killAndWait(tree, 'SIGKILL');
  }, 180_000);

  afterAll(async () => {
    await killAndWait(started, 'SIGKILL');
    rmSync(base, { recursive: true, force: true });
  }, 30_000);

  it('the profile has the server\'s background roles', () => {
    expect(readinessRoles(profile).length).toBeGreaterThanOrEqual(3);
  });

  it('before (port only): healthy while the server still refuses queries', async () => {
    const m = await startAndMeasure('before', { ...profile, processes: [] });
    results.before = m;
    console.log(`port-only rule: healthy at ${Math.round(m.healthyMs)} ms, first query at ${Math.round(m.queryMs)} ms; psql at healthy: ${m.psqlWorks}`);
    expect(m.queryMs).toBeGreaterThan(0);
    expect(m.healthyMs).toBeLessThan(m.queryMs - 500);
    expect(m.psqlWorks).toBe(false);
  }, 90_000);

  it('after (roles): not healthy before select 1 works (by more than 100 ms)', async () => {
    const m = await startAndMeasure('after', profile);
    results.after = m;
    console.log(`readiness rule: healthy at ${Math.round(m.healthyMs)} ms, first query at ${Math.round(m.queryMs)} ms (${m.outcome?.readiness}); psql at healthy: ${m.psqlWorks}`);
    expect(m.queryMs).toBeGreaterThan(0);
    expect(m.healthyMs).toBeGreaterThanOrEqual(m.queryMs - 100);
    expect(m.psqlWorks).toBe(true);
    expect(m.healthyMs).toBeLessThan(m.queryMs + 500);
    expect(m.outcome?.readiness).toBe('roles');
  }, 90_000);
});
