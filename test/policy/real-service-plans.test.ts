/**
 * The planner (`planMigration`) on a REAL PostgreSQL 15 profile: Debian's cluster, started with
 * `pg_ctlcluster 15 main start`, profiled by pid with the procfs profiler.
 *
 * What PostgreSQL 15 really uses here (checked against /proc/sysvipc/shm and the postmaster's
 * maps while it runs): a small SysV segment (its 56-byte "interlock" header; `shared_memory_type`
 * is `mmap`), the main shared memory as an anonymous shared mapping (`/dev/zero (deleted)`, no
 * IPC object), and POSIX shared memory for dynamic segments (`dynamic_shared_memory_type = posix`:
 * /dev/shm/PostgreSQL.*, which is a file on Linux). Then:
 *
 * - a Linux destination: linux-namespaces (chroot is refused for its SysV segment and its socket);
 * - a FreeBSD 9.2 destination, whose jail has no IPC isolation: esxi-vm. As profiled (a Linux
 *   program) the jail is refused as another OS; with the same resource use on a FreeBSD 9.2 host,
 *   for its SysV segment, and the jail deployer's pre-flight refuses it before anything is sent;
 * - a FreeBSD 13.x destination: freebsd-jail, both as profiled (its POSIX segments: a jail from
 *   12.0 has its own shm_open() names, docs/decisions/0016-jail-posix-shm.md) and for the same
 *   server started with `dynamic_shared_memory_type = sysv` (SysV only), with `sysvshm = "new"`
 *   in the jail.conf the jail deployer writes (against a scripted FreeBSD 13.2 host, as
 *   test/deploy/jail.test.ts does).
 *
 * There is no FreeBSD host here: "on a FreeBSD host" means the real profile with its platform set
 * to that FreeBSD release (the resources a FreeBSD build of PostgreSQL would use are the same
 * kinds: the server code choosing them is the same).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProcfsProfiler, formatPlan, planMigration, type MigrationPlan, type ResourceProfile } from '../../src/index.js';
import { createJailDeployer } from '../../src/methods/freebsd-jail/deployer.js';
import type { DeployContext, StagedBundle } from '../../src/spec/deployer.js';
import { JAIL_FIXTURES, freebsdHost } from '../fixtures/jail/freebsd-host.js';
import { createScriptedTransport } from '../helpers/scripted-transport.js';
import { skipUnless } from '../helpers/requirements.js';

// The scripted FreeBSD host never runs the receiver: a fixed stand-in keeps its remote name stable.
process.env.AP_MIGRATE_RECEIVER = join(JAIL_FIXTURES, 'receiver-stand-in.cjs');

const LINUX = { os: 'linux', release: '6.1.0-18-amd64', arch: 'x86_64' };
const FREEBSD_92 = { os: 'freebsd', release: '9.2-RELEASE', arch: 'amd64' };
const FREEBSD_114 = { os: 'freebsd', release: '11.4-RELEASE', arch: 'amd64' };
const FREEBSD_132 = { os: 'freebsd', release: '13.2-RELEASE', arch: 'amd64' };
const PG_MASTER = '^/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main';

const sh = (cmd: string): string => {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
};
const pgOnline = () => /\bonline\b/.test(sh('pg_lsclusters -h 15 main'));
const show = (setting: string) => sh(`runuser -u postgres -- psql -X -h /var/run/postgresql -d postgres -tAc "show ${setting}"`);
/** The Debian cluster's postmaster (root `/`: not a migrated copy). */
function postmaster(): number {
  const pids = spawnSync('pgrep', ['-f', PG_MASTER], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  return pids.find((p) => readlinkSync(`/proc/${p}/root`) === '/') ?? 0;
}
/**
 * The SysV segments `pids` have attached (`/SYSV<key> (deleted)` in their maps, the inode is the
 * shmid), with their size from /proc/sysvipc/shm.
 */
function sysvSegmentsOf(pids: number[]): Array<{ key: number; id: number; size: number }> {
  const ids = new Set<number>();
  for (const pid of pids) {
    const maps = spawnSync('cat', [`/proc/${pid}/maps`], { encoding: 'utf8' }).stdout;
    for (const m of maps.matchAll(/ (\d+)\s+\/SYSV[0-9a-f]{8} \(deleted\)$/gm)) ids.add(Number(m[1]));
  }
  const [header, ...rows] = readFileSync('/proc/sysvipc/shm', 'utf8').trim().split('\n');
  const cols = header!.trim().split(/\s+/);
  return rows
    .map((r) => r.trim().split(/\s+/))
    .filter((f) => ids.has(Number(f[cols.indexOf('shmid')])))
    .map((f) => ({ key: Number(f[cols.indexOf('key')]), id: Number(f[cols.indexOf('shmid')]), size: Number(f[cols.indexOf('size')]) }))
    .sort((a, b) => a.id - b.id);
}
async function profilePostgres(): Promise<ResourceProfile> {
  const result = await createProcfsProfiler().profile({ pid: postmaster() }, { durationMs: 1000 });
  if (result.isErr()) throw result.error;
  return result.value;
}
const onPlatform = (profile: ResourceProfile, platform: typeof FREEBSD_92): ResourceProfile => ({ ...profile, platform });
const plan = (profile: ResourceProfile, destination: typeof LINUX): MigrationPlan => {
  const planned = planMigration(profile, { destination: { platform: destination } });
  if (planned.isErr()) throw planned.error;
  return planned.value;
};
const candidate = (p: MigrationPlan, method: string) => p.candidates.find((c) => c.method === method)!;
const blockers = (p: MigrationPlan, method: string) => candidate(p, method).concerns.filter((c) => c.severity === 'blocker').map((c) => c.id);

describe.skipIf(skipUnless('root', 'tool:pg_ctlcluster', 'tool:psql', 'tool:runuser', 'tool:pgrep'))('the planner on a real PostgreSQL 15 profile (procfs, by pid)', () => {
  let wasOnline = false;
  let profile: ResourceProfile;
  /** What /proc says while it runs. */
  let segments: Array<{ key: number; id: number; size: number }> = [];
  let sysvProfile: ResourceProfile | undefined;

  beforeAll(async () => {
    wasOnline = pgOnline();
    if (!wasOnline) sh('pg_ctlcluster 15 main start');
    profile = await profilePostgres();
    segments = sysvSegmentsOf(profile.processes.map((p) => p.pid));
  });

  afterAll(() => {
    // As Debian starts it again (a restart with other settings may have run), or stopped as before.
    if (wasOnline) {
      if (!pgOnline() || show('dynamic_shared_memory_type') !== 'posix') sh('pg_ctlcluster 15 main restart');
    } else if (pgOnline()) sh('pg_ctlcluster 15 main stop');
  });

  it('PostgreSQL 15 holds one small SysV segment, its main memory in an anonymous mapping, POSIX segments for the rest; the profile shows exactly that', () => {
    expect(show('shared_memory_type')).toBe('mmap');
    expect(show('dynamic_shared_memory_type')).toBe('posix');
    // /proc/sysvipc/shm: one segment, created by the postmaster, tiny (the data lives elsewhere).
    expect(segments).toHaveLength(1);
    expect(segments[0]!.size).toBeLessThan(1024);
    const sysv = profile.ipc.filter((i) => i.kind === 'sysv-shm');
    expect(sysv).toEqual([{ kind: 'sysv-shm', key: segments[0]!.key, id: segments[0]!.id, size: segments[0]!.size }]);
    // The main shared memory (shared_buffers, 128 MB): an anonymous shared mapping, no IPC object.
    const maps = readFileSync(`/proc/${postmaster()}/maps`, 'utf8').split('\n');
    const anonymous = maps.filter((l) => / rw-s .*\/dev\/zero \(deleted\)$/.test(l)).map((l) => l.split(' ')[0]!.split('-').map((h) => Number.parseInt(h, 16)));
    expect(anonymous.some(([from, to]) => to! - from! >= 128 * 1024 * 1024)).toBe(true);
    // Dynamic segments: POSIX shared memory, the same names as in /dev/shm.
    const posix = profile.ipc.filter((i) => i.kind === 'posix-shm').map((i) => i.name);
    const inDevShm = readdirSync('/dev/shm').filter((n) => n.startsWith('PostgreSQL.')).map((n) => `/${n}`);
    expect(posix.length).toBeGreaterThan(0);
    for (const name of posix) expect(inDevShm).toContain(name);
    expect(profile.sockets).toContainEqual(expect.objectContaining({ family: 'inet', protocol: 'tcp', localPort: 5432, listening: true }));
  });

  it('Linux destination: linux-namespaces; chroot refused for the SysV segment and the socket', () => {
    const p = plan(profile, LINUX);
    console.log(formatPlan(p));
    expect(p.chosen).toBe('linux-namespaces');
    expect(p.classes).toEqual(['file', 'network', 'ipc']);
    // On Linux, POSIX shm is a file (it lives in /dev/shm): only the SysV segment is IPC.
    expect(p.kinds).toEqual(['file', 'network', 'sysv-shm']);
    expect(p.evidence.find((e) => e.kind === 'sysv-shm')!.example).toBe(`SysV shared memory key 0x${segments[0]!.key.toString(16).padStart(8, '0')}`);
    expect(blockers(p, 'chroot')).toEqual(['not-isolated:network', 'not-isolated:sysv-shm']);
    expect(blockers(p, 'linux-namespaces')).toEqual([]);
    expect(candidate(p, 'linux-namespaces').estimate.totalBytes).toBeLessThan(candidate(p, 'esxi-vm').estimate.totalBytes);
    expect(blockers(p, 'freebsd-jail')).toEqual(['platform-unsupported']);
  });

  it('FreeBSD 9.2 destination (a jail without IPC isolation): esxi-vm, and the jail pre-flight refuses it before anything is sent', async () => {
    // As profiled, a Linux program: only a VM carries its own OS.
    const asProfiled = plan(profile, FREEBSD_92);
    expect(asProfiled.chosen).toBe('esxi-vm');
    expect(blockers(asProfiled, 'freebsd-jail')).toContain('os-mismatch');
    // The same resource use on a FreeBSD 9.2 host: the jail runs there but shares the host's SysV keys.
    const onBsd = plan(onPlatform(profile, FREEBSD_92), FREEBSD_92);
    console.log(formatPlan(onBsd));
    expect(onBsd.chosen).toBe('esxi-vm');
    const jail = candidate(onBsd, 'freebsd-jail');
    expect(jail.isolates).toEqual(['file', 'network']);
    expect(blockers(onBsd, 'freebsd-jail')).toContain('not-isolated:sysv-shm');
    expect(blockers(onBsd, 'freebsd-jail')).not.toContain('os-mismatch');
    expect(jail.concerns.find((c) => c.id === 'not-isolated:sysv-shm')!.fix).toContain('freebsd-jail 12.0+ with jail param sysvshm=new');
    // POSIX shm on 9.2 is shared between jails too (shm_open names are global there).
    expect(blockers(onBsd, 'freebsd-jail')).toContain('not-isolated:posix-shm');
    expect(blockers(onBsd, 'chroot')).toContain('not-isolated:sysv-shm');
    // The jail deployer at a FreeBSD 9.2 host (scripted, answers written from the tools' manuals).
    const transport = createScriptedTransport({ root: '/var/ap-migrate', rules: freebsdHost('9.2') });
    const context: DeployContext = { transport, profile: onPlatform(profile, FREEBSD_92), plan: onBsd, name: 'postgres' };
    const pre = await createJailDeployer({ network: { mode: 'ip4', interface: 'em0', addresses: ['192.0.2.10/32'] } }).preflight(context, 64 * 1024 * 1024);
    expect(pre._unsafeUnwrapErr().code).toBe('CAPABILITY_MISSING');
    expect(pre._unsafeUnwrapErr().message).toMatch(/FreeBSD 9\.2-RELEASE.*cannot isolate the program's SysV shared memory/);
    expect(transport.calls.filter((c) => c.op === 'upload' || (c.op === 'exec' && c.argv.includes('unpack')))).toEqual([]);
  });

  // Was a declared bug (it.fails): the jail's capability row said "POSIX mq and shm stay shared".
  // FreeBSD's kern_shm_open() (sys/kern/uipc_shm.c, releng/12.0 and later) prefixes every name
  // with the jail's path ("Construct a full pathname for jailed callers"), so a jail with its own
  // root, as the jail deployer makes, has its own shm_open() names. The 12.0+ row now lists
  // posix-shm (docs/decisions/0016-jail-posix-shm.md: the sources, and what was not verified).
  it('FreeBSD 13.2 destination, PostgreSQL as profiled (POSIX dynamic segments): freebsd-jail, and the jail pre-flight accepts it', async () => {
    const onBsd = onPlatform(profile, FREEBSD_132);
    const p = plan(onBsd, FREEBSD_132);
    console.log(formatPlan(p));
    expect(p.kinds).toContain('posix-shm');
    expect(blockers(p, 'freebsd-jail')).toEqual([]);
    expect(p.chosen).toBe('freebsd-jail');
    expect(candidate(p, 'freebsd-jail').isolates).toContain('posix-shm');
    expect(candidate(p, 'freebsd-jail').capability!.minRelease).toBe('12.0');
    // The same profile on 11.4: POSIX shm there is not counted as isolated (no 11.x source read).
    const on114 = plan(onPlatform(profile, FREEBSD_114), FREEBSD_114);
    expect(on114.chosen).toBe('esxi-vm');
    expect(blockers(on114, 'freebsd-jail')).toEqual(['not-isolated:posix-shm']);
    // The jail deployer at a scripted FreeBSD 13.2 host: pre-flight checks the same rows.
    const transport = createScriptedTransport({ root: '/var/ap-migrate', rules: freebsdHost('13.2') });
    const context: DeployContext = { transport, profile: onBsd, plan: p, name: 'postgres' };
    const pre = await createJailDeployer({ network: { mode: 'ip4', interface: 'em0', addresses: ['192.0.2.10/32'] } }).preflight(context, 64 * 1024 * 1024);
    if (pre.isErr()) throw pre.error;
    expect(pre.value.facts?.sysvIpc).toBe(true); // its SysV interlock header still needs sysvshm = "new"
  });

  it('FreeBSD 13.2 destination, the Linux profile as it is: the jail is refused as another OS', () => {
    const p = plan(profile, FREEBSD_132);
    expect(p.chosen).toBe('esxi-vm');
    expect(blockers(p, 'freebsd-jail')).toEqual(['os-mismatch']);
  });

  it('FreeBSD 13.2 destination, PostgreSQL with dynamic_shared_memory_type = sysv: freebsd-jail, and the jail.conf says sysvshm = "new"', async () => {
    sh('pg_ctlcluster 15 main restart -- -o "-c dynamic_shared_memory_type=sysv"');
    expect(show('dynamic_shared_memory_type')).toBe('sysv');
    sysvProfile = await profilePostgres();
    const attached = sysvSegmentsOf(sysvProfile.processes.map((p) => p.pid));
    // Now every segment is SysV: the interlock header and the dynamic ones, as /proc says. Each
    // with its key, id and size, also one whose creator has exited and whose last user is a
    // finished backend (the profiler ties it to the server by the mapping's inode, the shmid).
    expect(attached.length).toBeGreaterThanOrEqual(2);
    expect(sysvProfile.ipc.filter((i) => i.kind === 'posix-shm')).toEqual([]);
    const segmentsOf = (list: Array<{ key?: number; id?: number; size?: number }>) =>
      list.map((i) => ({ key: i.key, id: i.id, size: i.size })).sort((a, b) => a.id! - b.id!);
    expect(segmentsOf(sysvProfile.ipc.filter((i) => i.kind === 'sysv-shm'))).toEqual(segmentsOf(attached));

    const onBsd = onPlatform(sysvProfile, FREEBSD_132);
    const p = plan(onBsd, FREEBSD_132);
    console.log(formatPlan(p));
    expect(p.kinds).toEqual(['file', 'network', 'sysv-shm']);
    expect(p.chosen).toBe('freebsd-jail');
    expect(candidate(p, 'freebsd-jail').capability!.minRelease).toBe('12.0');
    expect(candidate(p, 'freebsd-jail').concerns.find((c) => c.id === 'requires-host-config')!.message).toContain('jail param sysvshm=new');

    // The jail deployer against a FreeBSD 13.2 host (scripted): pre-flight, bundle, activation.
    const transport = createScriptedTransport({ root: '/var/ap-migrate', rules: freebsdHost('13.2') });
    const deployer = createJailDeployer({ network: { mode: 'ip4', interface: 'em0', addresses: ['192.0.2.10/32'] } });
    const context: DeployContext = { transport, profile: onBsd, plan: p, name: 'postgres' };
    const ok = <T,>(r: { isErr(): boolean; _unsafeUnwrap(): T; _unsafeUnwrapErr(): unknown }): T => {
      if (r.isErr()) throw r._unsafeUnwrapErr();
      return r._unsafeUnwrap();
    };
    const pre = ok(await deployer.preflight(context, 64 * 1024 * 1024));
    expect(pre.facts?.sysvIpc).toBe(true);
    // The bundle itself is not this test's subject (test/deploy/jail.test.ts receives one): the
    // activation is what writes jail.conf, from pre-flight's facts, into the staging directory.
    const staged: StagedBundle = { stagingDir: pre.stagingDir, bytesReceived: 0, entriesVerified: 0 };
    ok(await deployer.activate(context, pre, staged));
    expect(transport.unmatched).toEqual([]);
    const upload = transport.calls.find((c) => c.op === 'upload' && c.path.endsWith('/run/jail.conf'));
    expect(upload?.op).toBe('upload');
    const conf = upload!.op === 'upload' ? upload!.text : '';
    console.log(conf);
    for (const param of ['sysvshm', 'sysvsem', 'sysvmsg']) expect(conf).toContain(`\t${param} = "new";`);
    expect(conf).toContain('ip4.addr = "em0|192.0.2.10/32";');
    // The server as it was started, in its data directory (its cwd), as the jail's user.
    expect(conf).toContain(`exec.start = "cd /var/lib/postgresql/15/main && exec /usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c 'dynamic_shared_memory_type=sysv' `);
    expect(conf).toContain('exec.jail_user = "www";'); // the scripted host's user with the profile's uid
  });
});
