/**
 * Real Debian daemons, started the way the distribution starts them, attached by pid and moved by
 * `migrate()` (capture on, method chosen by the planner) to a destination on this machine. Each
 * must come up there and answer with its data: PostgreSQL returns the row inserted before the
 * migration, nginx serves the same bytes, memcached (which drops to its own user) answers.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProcfsProfiler, createNamespacesDeployer, migrate, type MigrateOptions, type MigrationReport } from '../../src/index.js';
import { summarizeReasons } from '../../src/capture/index.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { namespaceNames } from '../../src/methods/linux-namespaces/deployer.js';
import { resolveInRoot } from '../../src/destination/root-builder.js';
import { cacheCommandInNetns } from '../helpers/cache-client.js';
import { skipUnless } from '../helpers/requirements.js';

/** Run a shell command; a failure says what the command printed. */
const sh = (cmd: string) => {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
};
/** The oldest process whose command line matches (pgrep itself, run without a shell, never matches). */
const oldest = (pattern: string) => Number(spawnSync('pgrep', ['-o', '-f', pattern], { encoding: 'utf8' }).stdout.trim() || 0);

describe.skipIf(skipUnless('root', 'tool:pg_ctlcluster', 'tool:nginx', 'tool:memcached', 'tool:psql', 'tool:curl', 'tool:ip'))('real daemons move and answer with their data', () => {
  let dst: string;
  const reports: MigrationReport[] = [];
  /** Source daemons this suite started (and stops again). */
  const started: string[] = [];

  beforeAll(() => {
    dst = mkdtempSync('/var/tmp/apm-daemons-');
    // Clients on the destination host (psql as postgres) reach the program's socket through it.
    chmodSync(dst, 0o755);
  });

  afterAll(async () => {
    const transport = createLocalTransport({ root: dst });
    for (const r of reports) {
      await createNamespacesDeployer().rollback(
        { transport, profile: r.profile, plan: r.plan, name: r.name },
        { activated: { installDir: r.destination!.installDir, rootDir: join(r.destination!.installDir, 'root'), undo: [['ip', 'netns', 'del', namespaceNames(r.name).netns], ['ip', 'link', 'del', namespaceNames(r.name).hostVeth]] }, started: { pid: r.destination!.pid, logPath: '', endpoints: [] } },
      );
    }
    rmSync(dst, { recursive: true, force: true });
    for (const stop of started) spawnSync('sh', ['-c', stop]);
  });

  /** The server's socket directory inside the migrated root, resolved inside that root. */
  function socketDirIn(r: MigrationReport): string {
    return resolveInRoot(join(r.destination!.installDir, 'root'), '/var/run/postgresql', { followLast: true });
  }

  function ensurePostgres(): void {
    if (oldest('bin/postgres -D')) return;
    sh('pg_ctlcluster 15 main start');
    if (!started.includes('pg_ctlcluster 15 main stop')) started.push('pg_ctlcluster 15 main stop');
    sh(`su postgres -c "psql -h /var/run/postgresql -tAc 'create table if not exists apm_rows(x text)'"`);
  }

  async function move(pid: number, name: string, allowRoot = false, extra: Partial<MigrateOptions> = {}): Promise<MigrationReport> {
    const result = await migrate({ target: { pid }, profiler: createProcfsProfiler(), profileDurationMs: 1000, destination: createLocalTransport({ root: dst }), name, allowRoot, ...extra });
    if (result.isErr()) throw result.error;
    reports.push(result.value);
    const r = result.value;
    console.log(name, r.method, `${r.bytesSent} bytes`, r.phases.map((p) => `${p.phase}:${Math.round(p.ms)}ms`).join(' '), JSON.stringify(summarizeReasons(r.profile)));
    expect(r.method).toBe('linux-namespaces');
    return r;
  }

  it('PostgreSQL 15 (pg_ctlcluster) returns the row inserted before the migration', async () => {
    ensurePostgres();
    const psql = (host: string, sql: string) => sh(`su postgres -c "psql -h ${host} -tAc \\"${sql}\\""`);
    psql('/var/run/postgresql', `create table if not exists apm_rows(x text); insert into apm_rows values ('before-${process.pid}')`);
    const r = await move(oldest('bin/postgres -D'), 'pg');
    expect(r.profile.uid).toBe(Number(sh('id -u postgres')));
    expect(r.profile.trees.map((t) => t.path)).toContain('/var/lib/postgresql/15/main');
    // From the destination host, through the server's socket inside its root (resolved as the
    // program sees it: /var/run is a link to /run there, which on the host would be the source's).
    const socketDir = socketDirIn(r);
    expect(psql(socketDir, 'select x from apm_rows')).toContain(`before-${process.pid}`);
    // The source still runs (cutover "copy"); a row it gets now is not at the destination: we talk to the copy.
    psql('/var/run/postgresql', `insert into apm_rows values ('after-${process.pid}')`);
    expect(psql(socketDir, 'select x from apm_rows')).not.toContain(`after-${process.pid}`);
  });

  it('nginx (daemonized, master + workers) serves the same bytes from the migrated copy', async () => {
    if (!oldest('nginx: master')) {
      sh('nginx');
      started.push('nginx -s stop');
    }
    const r = await move(oldest('nginx: master'), 'nginx', true);
    const endpoint = r.destination!.endpoints[0]!;
    const here = spawnSync('curl', ['-s', '-m', '5', 'http://127.0.0.1/']).stdout;
    const there = spawnSync('curl', ['-s', '-m', '5', `http://${endpoint}/`]).stdout;
    expect(there.length).toBeGreaterThan(100);
    expect(Buffer.compare(there, here)).toBe(0);
    // Master and workers both run at the destination, the workers as www-data.
    const workers = sh(`ps -eo user,args | grep 'nginx: worker' | grep -v grep | grep -c www-data`);
    expect(Number(workers)).toBeGreaterThanOrEqual(2);
  });

  it('memcached (daemonizes, drops to its own user with -u) answers at the destination', async () => {
    if (!oldest('bin/memcached')) {
      sh('/usr/share/memcached/scripts/start-memcached');
      started.push('pkill -f /usr/bin/memcached');
    }
    const r = await move(oldest('bin/memcached'), 'mc');
    expect(r.profile.users.map((u) => u.name)).toContain('memcache');
    const reply = sh(cacheCommandInNetns('apm-mc', 'k', 11211));
    expect(reply).toContain('STORED');
    expect(reply).toContain('hello');
    expect(existsSync(join(r.destination!.installDir, 'root/etc/shadow'))).toBe(false);
  });

  it('stop-and-copy: a destination that dies before it is healthy thaws the source, which answers again', async () => {
    ensurePostgres();
    const pgPid = oldest('bin/postgres -D');
    const psql = (sql: string) => sh(`su postgres -c "psql -h /var/run/postgresql -tAc \\"${sql}\\""`);
    // The real deployer, with the destination program killed right before its health check.
    const real = createNamespacesDeployer();
    let killed = false;
    const dying = {
      ...real,
      healthCheck: (context: Parameters<typeof real.healthCheck>[0], started: Parameters<typeof real.healthCheck>[1]) => {
        // Frozen now: every process of the source's tree is stopped (state T).
        const states = sh(`for p in $(pgrep -s $(ps -o sid= -p ${pgPid})); do awk '/^State:/ {print $2}' /proc/$p/status; done | sort -u`);
        expect(states).toBe('T');
        spawnSync('kill', ['-KILL', String(started.pid)]);
        killed = true;
        return real.healthCheck(context, started);
      },
    };
    const result = await migrate({
      target: { pid: pgPid }, profiler: createProcfsProfiler(), profileDurationMs: 1000,
      destination: createLocalTransport({ root: dst }), name: 'pgfail', cutover: 'stop-and-copy', deployers: { 'linux-namespaces': dying },
    });
    expect(killed).toBe(true);
    expect(result._unsafeUnwrapErr().code).toBe('HEALTH_CHECK_FAILED');
    expect(existsSync(join(dst, 'pgfail'))).toBe(false);
    // Thawed: running again (not stopped) and answering.
    expect(sh(`awk '/^State:/ {print $2}' /proc/${pgPid}/status`)).not.toBe('T');
    expect(psql('select 1')).toBe('1');
  });

  it('stop-and-copy: PostgreSQL moves with its rows, the downtime is measured, and the source is stopped', async () => {
    ensurePostgres();
    const pgPid = oldest('bin/postgres -D');
    const psql = (host: string, sql: string) => sh(`su postgres -c "psql -h ${host} -tAc \\"${sql}\\""`);
    psql('/var/run/postgresql', `insert into apm_rows values ('cutover-${process.pid}')`);
    const r = await move(pgPid, 'pgcut', false, { cutover: 'stop-and-copy' });
    console.log('stop-and-copy downtime', Math.round(r.cutover.downtimeMs!), 'ms of', Math.round(r.totalMs), 'ms;', r.cutover.frozenProcesses, 'processes frozen');
    expect(r.cutover.mode).toBe('stop-and-copy');
    expect(r.cutover.downtimeMs).toBeGreaterThan(0);
    expect(r.cutover.downtimeMs).toBeLessThan(r.totalMs);
    expect(r.source.action).toBe('stopped');
    expect(psql(socketDirIn(r), 'select x from apm_rows order by x')).toContain(`cutover-${process.pid}`);
    // The source is gone on its host.
    expect(existsSync(`/proc/${pgPid}`)).toBe(false);
  });
});
