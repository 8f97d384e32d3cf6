/**
 * Real Debian daemons, started the way the distribution starts them, attached by pid and moved
 * by `migrate()` OVER SSH to another "host": a network namespace running a real OpenSSH server
 * (createNetnsPair + startSshd; the host key is pinned in a known_hosts file, as the other SSH
 * tests do, and a known_hosts naming another key is refused). There, each one runs in namespaces of its own and answers a client run AT THE
 * DESTINATION HOST (through the transport, or `ip netns exec` into the destination namespace):
 *
 * - PostgreSQL 15 (`pg_ctlcluster 15 main start`), cutover `stop-and-copy`: the report's downtime
 *   is positive and less than the total time, the source is stopped, and psql at the destination
 *   reads back the row inserted before the migration.
 * - nginx (`nginx`: daemonizes, root master + www-data workers), cutover `copy`: curl from the
 *   destination host gets the same bytes as from the source; the workers there run as www-data.
 * - memcached (`memcached -d -u memcache`), cutover `copy`: a set/get answered inside the copy's
 *   network namespace at the destination host.
 *
 * afterAll rolls every migration back over SSH (as real-daemons.test.ts does), checks nothing is
 * left at the destination, stops the sshd and the two namespace hosts, and puts the source
 * daemons back as they were before this file (running or not; the test's table dropped).
 *
 * Timing note: every remote command on this machine pays ~1-1.5 s for root's login shell
 * (~/.bashrc runs `pyenv init`), so the stop-and-copy downtime over SSH here is several times the
 * local one (real-daemons.test.ts); the test asserts its bounds, not a number.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNamespacesDeployer, createProcfsProfiler, migrate, namespaceNames, type MigrateOptions, type MigrationReport } from '../../src/index.js';
import { summarizeReasons } from '../../src/capture/index.js';
import { resolveInRoot } from '../../src/destination/root-builder.js';
import type { Transport } from '../../src/spec/transport.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import { cacheArgvInNetns, cacheScript } from '../helpers/cache-client.js';
import { processesIn, sourcePid } from '../helpers/processes.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

/** Run a shell command here (the source host); a failure says what it printed. */
const sh = (cmd: string): string => {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
};
const pgOnline = () => /\bonline\b/.test(sh('pg_lsclusters -h 15 main'));
const PG_MASTER = '^/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main';
const NGINX_MASTER = '^nginx: master process';
const MEMCACHED = '^/usr/bin/memcached -d -u memcache';
const sourcePsql = (sql: string) => sh(`runuser -u postgres -- psql -X -h /var/run/postgresql -d postgres -tAc "${sql}"`);

describe.skipIf(
  skipUnless('root', 'tool:pg_ctlcluster', 'tool:psql', 'tool:runuser', 'tool:nginx', 'tool:memcached', 'tool:curl', 'tool:ip', 'tool:bash', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:ssh-keygen'),
)('real daemons move over SSH to a network-namespace host and answer there', () => {
  const id = randomBytes(2).toString('hex');
  const TABLE = `apmd_ssh_rows_${id}`;
  const names = { pg: `pgssh-${id}`, pgPre: `pgpre-${id}`, nginx: `ngxssh-${id}`, mc: `mcssh-${id}` };
  let work = '';
  let dstRoot = '';
  let pair: NetnsPair | undefined;
  let sshd: TestSshd | undefined;
  let transport: Transport | undefined;
  const reports = new Map<string, MigrationReport>();
  /** How the source daemons were before this file. */
  const before = { pg: false, nginx: 0, mc: 0 };
  /** Source daemons this file started (stopped again by pid in afterAll). */
  const startedHere: number[] = [];
  let leftovers = '';

  /** Run at the destination host (over SSH); a failure says what it printed. */
  async function there(argv: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const r = await transport!.exec(argv, { allowNonZeroExit: true, timeoutMs });
    if (r.isErr()) throw r.error;
    return r.value;
  }

  beforeAll(async () => {
    before.pg = pgOnline();
    before.nginx = sourcePid(NGINX_MASTER);
    before.mc = sourcePid(MEMCACHED);
    // On disk (the PostgreSQL bundle is ~190 MB), and traversable: psql runs as postgres at the
    // destination host and reaches the server's socket inside the migrated root.
    work = mkdtempSync('/var/tmp/apmd-ssh-');
    chmodSync(work, 0o755);
    dstRoot = join(work, 'dst-host/srv');
    mkdirSync(dstRoot, { recursive: true, mode: 0o755 });
    pair = createNetnsPair();
    sshd = await startSshd({ host: pair.destinationAddress, port: 22, wrap: pair.wrap(pair.destination) });
    const opened = await createOpenSshTransport({
      host: pair.destinationAddress,
      port: sshd.port,
      username: 'root',
      identityFile: sshd.clientKeyPath,
      knownHostsPath: sshd.knownHostsPath,
      root: dstRoot,
      proxyCommand: pair.proxyCommand,
    });
    if (opened.isErr()) throw opened.error;
    transport = opened.value;
  });

  afterAll(async () => {
    // Roll back every migration over SSH, as migrate() would on failure.
    for (const r of reports.values()) {
      if (!transport || !r.destination) continue;
      const { netns, hostVeth } = namespaceNames(r.name);
      await createNamespacesDeployer().rollback(
        { transport, profile: r.profile, plan: r.plan, name: r.name },
        {
          activated: { installDir: r.destination.installDir, rootDir: join(r.destination.installDir, 'root'), undo: [['ip', 'netns', 'del', netns], ['ip', 'link', 'del', hostVeth]] },
          started: { pid: r.destination.pid, logPath: '', endpoints: [] },
        },
      );
    }
    if (transport && reports.size) {
      const look = await transport.exec(['sh', '-c', 'ip netns list; ip -o link; ls -A "$1"', 'sh', dstRoot], { allowNonZeroExit: true });
      leftovers = look.isOk() ? look.value.stdout : '';
    }
    await transport?.close();
    await sshd?.stop();
    pair?.teardown();
    rmSync(work, { recursive: true, force: true });
    // The source daemons as they were: the ones started here stopped, PostgreSQL running again
    // if it ran before (stop-and-copy stopped it), the test's table dropped.
    for (const pid of startedHere) spawnSync('kill', ['-TERM', String(pid)]);
    if (pgOnline() || spawnSync('pg_ctlcluster', ['15', 'main', 'start']).status === 0) {
      spawnSync('runuser', ['-u', 'postgres', '--', 'psql', '-X', '-h', '/var/run/postgresql', '-d', 'postgres', '-qc', `drop table if exists ${TABLE}, ${TABLE}_pre`]);
      if (!before.pg) spawnSync('pg_ctlcluster', ['15', 'main', 'stop']);
    }
    if (leftovers) for (const n of Object.values(names)) expect(leftovers).not.toContain(n);
  });

  async function move(pid: number, name: string, extra: Pick<MigrateOptions, 'cutover' | 'allowRoot' | 'onProgress'> = {}): Promise<MigrationReport> {
    const result = await migrate({ target: { pid }, profiler: createProcfsProfiler(), profileDurationMs: 1000, destination: transport!, name, ...extra });
    if (result.isErr()) throw result.error;
    const r = result.value;
    reports.set(name, r);
    console.log(
      `${name}: ${r.method}, ${r.bytesSent} bytes sent, total ${Math.round(r.totalMs)} ms` +
        (r.cutover.downtimeMs !== undefined ? `, downtime ${Math.round(r.cutover.downtimeMs)} ms (${r.cutover.frozenProcesses} processes frozen)` : '') +
        `; ${r.phases.map((p) => `${p.phase}:${Math.round(p.ms)}`).join(' ')}; ${JSON.stringify(summarizeReasons(r.profile))}`,
    );
    expect(r.method).toBe('linux-namespaces');
    expect(r.destination!.installDir).toBe(join(dstRoot, name));
    expect(r.bytesSent).toBeGreaterThan(r.manifestBytes);
    return r;
  }

  /** Processes of the copy: those whose root is the migrated root (the host sees into its PID namespace). */
  function copyProcesses(r: MigrationReport, pattern: string): number[] {
    const root = join(r.destination!.installDir, 'root');
    return processesIn(root, pattern);
  }

  it('the destination host is reached only under its pinned host key', async () => {
    // A known_hosts that names another key for that address: refused before authenticating.
    const otherKey = join(work, 'other_host_key');
    sh(`ssh-keygen -q -t ed25519 -N '' -C apmd-other -f ${otherKey}`);
    const wrong = join(work, 'wrong_known_hosts');
    writeFileSync(wrong, `${pair!.destinationAddress} ${readFileSync(`${otherKey}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ')}\n`);
    const refused = await createOpenSshTransport({
      host: pair!.destinationAddress,
      port: sshd!.port,
      username: 'root',
      identityFile: sshd!.clientKeyPath,
      knownHostsPath: wrong,
      root: dstRoot,
      proxyCommand: pair!.proxyCommand,
    });
    expect(refused._unsafeUnwrapErr().code).toBe('HOST_KEY_MISMATCH');
    // The transport the migrations use is the one whose key matched; it runs there, not here.
    const where = await there(['sh', '-c', 'readlink /proc/self/ns/net']);
    expect(where.stdout.trim()).not.toBe(readlinkSync('/proc/self/ns/net'));
  });

  it('PostgreSQL 15 (pg_ctlcluster), stop-and-copy: downtime measured, source stopped, the row read back by psql at the destination host', { timeout: 240_000 }, async () => {
    if (!pgOnline()) sh('pg_ctlcluster 15 main start');
    const pgPid = sourcePid(PG_MASTER);
    expect(pgPid).toBeGreaterThan(0);
    const row = `before-${id}-${Date.now()}`;
    sourcePsql(`create table ${TABLE}(x text); insert into ${TABLE} values ('${row}')`);

    const r = await move(pgPid, names.pg, { cutover: 'stop-and-copy' });
    expect(r.cutover.mode).toBe('stop-and-copy');
    expect(r.cutover.frozenProcesses).toBeGreaterThanOrEqual(5); // postmaster + its auxiliary processes
    expect(r.cutover.downtimeMs).toBeGreaterThan(0);
    expect(r.cutover.downtimeMs).toBeLessThan(r.totalMs);
    expect(r.source).toEqual({ pid: pgPid, action: 'stopped' });
    expect(r.profile.uid).toBe(Number(sh('id -u postgres')));
    expect(r.profile.trees.map((t) => t.path)).toContain('/var/lib/postgresql/15/main');
    // Stopped on its host: the postmaster is gone (a zombie at most) and the cluster is down.
    for (let i = 0; i < 50 && existsSync(`/proc/${pgPid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pgPid}/status`, 'utf8')); i++) await new Promise((res) => setTimeout(res, 100));
    expect(sourcePid(PG_MASTER)).toBe(0);

    // psql AT THE DESTINATION HOST (over SSH), through the server's socket inside the migrated
    // root, resolved as the program sees it (/var/run -> /run inside that root).
    const socketDir = resolveInRoot(join(r.destination!.installDir, 'root'), '/var/run/postgresql', { followLast: true });
    const query = (sql: string) => there(['runuser', '-u', 'postgres', '--', 'psql', '-X', '-h', socketDir, '-d', 'postgres', '-tAc', sql]);
    // The frozen copy is crash-consistent: the server replays WAL before it accepts queries,
    // although it already listens (which is all the health check looks at).
    const since = performance.now();
    let answer = await query(`select x from ${TABLE}`);
    while (answer.code !== 0 && /starting up|recovery/i.test(answer.stderr) && performance.now() - since < 60_000) {
      await new Promise((res) => setTimeout(res, 200));
      answer = await query(`select x from ${TABLE}`);
    }
    console.log(`pg over ssh: first query answered ${Math.round(performance.now() - since)} ms after migrate() returned`);
    expect(answer.stderr).toBe('');
    expect(answer.stdout.trim()).toBe(row);
    // It is the copy that answered: its postmaster runs inside the migrated root, as postgres.
    const copyMaster = copyProcesses(r, '^/usr/lib/postgresql/15/bin/postgres -D');
    expect(copyMaster.length).toBeGreaterThan(0);
    expect(readFileSync(`/proc/${copyMaster[0]}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${r.profile.uid}\\s`, 'm'));
    // And it takes writes there.
    expect((await query(`insert into ${TABLE} values ('at-destination')`)).code).toBe(0);
    expect((await query(`select count(*) from ${TABLE}`)).stdout.trim()).toBe('2');
  });

  it('PostgreSQL 15 (pg_ctlcluster), pre-copy: a row written during the first round travels in the second; downtime is the frozen part only', { timeout: 240_000 }, async () => {
    // The stop-and-copy case stopped the source: start it again (it replays its WAL first).
    if (!pgOnline()) sh('pg_ctlcluster 15 main start');
    const pgPid = sourcePid(PG_MASTER);
    expect(pgPid).toBeGreaterThan(0);
    const table = `${TABLE}_pre`;
    sourcePsql(`create table ${table}(x text); insert into ${table} values ('before')`);
    let wroteDuring = false;
    const r = await move(pgPid, names.pgPre, {
      cutover: 'pre-copy',
      onProgress: (p) => {
        // The source keeps working while the first round runs: this row must come with the second.
        if (p.phase === 'precopy' && p.bytesSent !== undefined && !wroteDuring) {
          wroteDuring = true;
          sourcePsql(`insert into ${table} values ('during')`);
        }
      },
    });
    expect(wroteDuring).toBe(true);
    expect(r.cutover.mode).toBe('pre-copy');
    expect(r.rounds.map((round) => round.round)).toEqual(['full', 'delta']);
    const [full, delta] = r.rounds;
    // The second round sends what changed (WAL, the touched relations), far less than the first
    // round's whole bundle, and takes the rest from what the first staged. Files travel whole: when
    // round 1 read the WAL segment before the 'during' row was written, its 16 MiB go again (the
    // first round's own bytes on the wire, 49 MB here with dedup, are no measure of that).
    const firstBundle = full!.bytesSent + full!.seededBytes;
    expect(delta!.bytesSent).toBeLessThan(firstBundle / 4);
    expect(delta!.seededBytes).toBeGreaterThan(delta!.bytesSent);
    expect(r.cutover.downtimeMs).toBeGreaterThan(0);
    expect(r.cutover.downtimeMs).toBeLessThan(r.totalMs);
    expect(r.source).toEqual({ pid: pgPid, action: 'stopped' });
    console.log(`pg pre-copy over ssh: full ${full!.bytesSent} B (${full!.seededBytes} seeded), delta ${delta!.bytesSent} B, downtime ${Math.round(r.cutover.downtimeMs!)} of ${Math.round(r.totalMs)} ms`);

    const socketDir = resolveInRoot(join(r.destination!.installDir, 'root'), '/var/run/postgresql', { followLast: true });
    const query = (sql: string) => there(['runuser', '-u', 'postgres', '--', 'psql', '-X', '-h', socketDir, '-d', 'postgres', '-tAc', sql]);
    const since = performance.now();
    let answer = await query(`select x from ${table} order by x`);
    while (answer.code !== 0 && /starting up|recovery/i.test(answer.stderr) && performance.now() - since < 60_000) {
      await new Promise((res) => setTimeout(res, 200));
      answer = await query(`select x from ${table} order by x`);
    }
    expect(answer.stderr).toBe('');
    expect(answer.stdout.trim().split('\n')).toEqual(['before', 'during']);
  });

  it('nginx (daemonized: root master + www-data workers), copy: curl at the destination host gets the same bytes', { timeout: 120_000 }, async () => {
    if (!sourcePid(NGINX_MASTER)) {
      sh('nginx');
      startedHere.push(sourcePid(NGINX_MASTER));
    }
    const master = sourcePid(NGINX_MASTER);
    expect(master).toBeGreaterThan(0);
    const r = await move(master, names.nginx, { allowRoot: true });
    expect(r.cutover.mode).toBe('copy');
    expect(r.source).toEqual({ pid: master, action: 'kept-running' });
    expect(r.profile.sockets).toContainEqual(expect.objectContaining({ protocol: 'tcp', localPort: 80, listening: true }));
    const endpoint = r.destination!.endpoints.find((e) => e.endsWith(':80'))!;
    expect(endpoint).toBeDefined();

    const here = spawnSync('curl', ['-sS', '-m', '5', 'http://127.0.0.1/']);
    expect(here.status).toBe(0);
    // curl run on the destination host: inside its network namespace.
    const atDestination = spawnSync('ip', ['netns', 'exec', pair!.destination, 'curl', '-sS', '-m', '5', `http://${endpoint}/`]);
    expect(atDestination.stderr.toString()).toBe('');
    expect(atDestination.stdout.length).toBeGreaterThan(100);
    expect(Buffer.compare(atDestination.stdout, here.stdout)).toBe(0);
    // The same through the SSH transport, and the source host's nginx is not what answered:
    // from the destination host only the copy's address is reachable on port 80.
    const viaSsh = await there(['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `http://${endpoint}/`]);
    expect(viaSsh.stdout).toBe(`200 ${here.stdout.length}`);
    const sourceFromThere = await there(['curl', '-sS', '-m', '3', `http://${pair!.sourceAddress}/`]);
    expect(sourceFromThere.code).not.toBe(0);
    // Master (root) and workers (www-data) run in the migrated root.
    const masters = copyProcesses(r, '^nginx: master');
    const workers = copyProcesses(r, '^nginx: worker');
    expect(masters).toHaveLength(1);
    expect(workers.length).toBeGreaterThanOrEqual(1);
    const wwwData = sh('id -u www-data');
    for (const w of workers) expect(readFileSync(`/proc/${w}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${wwwData}\\s`, 'm'));
    // The source still serves (cutover copy).
    expect(spawnSync('curl', ['-s', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1/'], { encoding: 'utf8' }).stdout).toBe('200');
  });

  it('memcached (-d -u memcache), copy: a set/get answered inside its namespace at the destination host', { timeout: 120_000 }, async () => {
    if (!sourcePid(MEMCACHED)) {
      sh('/usr/bin/memcached -d -u memcache -m 64 -p 11211 -l 127.0.0.1');
      for (let i = 0; i < 50 && !sourcePid(MEMCACHED); i++) await new Promise((res) => setTimeout(res, 50));
      startedHere.push(sourcePid(MEMCACHED));
    }
    const mc = sourcePid(MEMCACHED);
    expect(mc).toBeGreaterThan(0);
    const r = await move(mc, names.mc);
    expect(r.profile.users.map((u) => u.name)).toContain('memcache');
    expect(r.profile.uid).toBe(Number(sh('id -u memcache')));
    // memcached listens on 127.0.0.1 only: the client runs at the destination host, in the
    // copy's network namespace (bash's /dev/tcp: no client tool needed).
    const key = `apmd${id}`;
    const reply = await there(cacheArgvInNetns(namespaceNames(names.mc).netns, key, 11211));
    expect(reply.stdout).toBe(`STORED\r\nVALUE ${key} 0 5\r\nhello\r\nEND\r\n`);
    // The source never saw that key: the copy answered.
    const atSource = sh(`timeout 5 bash -c '${cacheScript(key, 11211, { set: false })}'`);
    expect(atSource).toBe('END');
    const copies = copyProcesses(r, '^/usr/bin/memcached');
    expect(copies).toHaveLength(1);
    expect(readFileSync(`/proc/${copies[0]}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${r.profile.uid}\\s`, 'm'));
    // No shadow file travels (the destination root gets passwd entries only).
    expect((await there(['test', '-e', join(r.destination!.installDir, 'root/etc/shadow')])).code).toBe(1);
  });

  it('the destination host has what the three migrations made, and only there', async () => {
    expect([...reports.keys()].sort()).toEqual(Object.values(names).sort());
    const atDestination = (await there(['ip', 'netns', 'list'])).stdout;
    const onSource = sh('ip -o link');
    for (const r of reports.values()) {
      const { netns, hostVeth } = namespaceNames(r.name);
      expect(atDestination).toContain(netns);
      // The copy's veth lives at the destination host, not on the source host.
      expect((await there(['ip', '-o', 'link', 'show', 'dev', hostVeth])).code).toBe(0);
      expect(onSource).not.toContain(hostVeth);
    }
  });
});
