/**
 * Faithful start: a program's supplementary groups, umask and resource limits travel in the
 * profile and are re-applied at the destination, with no capability left to a program that did
 * not run as root. A real process (another user, two extra groups, umask 027, a lowered
 * RLIMIT_NOFILE) is profiled by pid and migrated with chroot and with Linux namespaces on this
 * machine; its copy's /proc says the same. Hostile start facts are refused with typed errors.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createChrootDeployer, createNamespacesDeployer, createProcfsProfiler, migrate, namespaceNames, type MigrationReport, type ResourceProfile } from '../../src/index.js';
import { checkStartFacts, privilegeDropArgv, programArgvFile, START_FACTS_SCRIPT, startDetached, startFactsArgv } from '../../src/destination/index.js';
import { processTree } from '../../src/profilers/common.js';
import type { DeployContext } from '../../src/spec/deployer.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { fixtureBinary } from '../helpers/fixtures.js';
import { skipUnless } from '../helpers/requirements.js';
import { createScriptedTransport } from '../helpers/scripted-transport.js';

/** The /proc rows a faithful start must reproduce. */
const LIMIT_ROWS = ['Max open files', 'Max processes', 'Max core file size', 'Max locked memory', 'Max stack size'];

function statusRow(pid: number, name: string): string {
  return new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]?.trim() ?? '';
}

function limitRow(pid: number, row: string): string {
  return (readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith(row)) ?? '').replace(/\s+/g, ' ').trim();
}

/** A profile with only what the launch code reads; `start` as given (not validated: the deployer's own check is under test). */
function contextWith(start: unknown, root = '/tmp/apmg-never-created'): DeployContext {
  const profile = { executable: '/bin/prog', executableSize: 0, argv: ['/bin/prog', '-x'], cwd: '/srv', uid: 1000, gid: 1001, platform: { os: 'linux', release: '6.1.0', arch: 'x86_64' }, files: [], sockets: [], ipc: [], processes: [], trees: [], users: [], groups: [], probes: [], completeness: { complete: true, notes: [] }, start } as unknown as ResourceProfile;
  return { transport: createLocalTransport({ root }), profile, plan: { destination: { os: 'linux' } } as DeployContext['plan'], name: 'prog' };
}

const HOSTILE_START: [string, unknown, string][] = [
  ['umask 0o7777', { umask: 0o7777 }, 'start.umask'],
  ['a umask that is not an integer', { umask: '027; reboot' }, 'start.umask'],
  ['a group that is a string', { groups: [100, '0,0'] }, 'start.groups.1'],
  ['a negative group', { groups: [-1] }, 'start.groups.0'],
  ['65537 groups', { groups: Array.from({ length: 65537 }, (_, i) => i) }, 'start.groups'],
  ['a huge rlimit name', { rlimits: { [`nofile=1:1 --core${'x'.repeat(100_000)}`]: { soft: 1, hard: 1 } } }, 'start.rlimits'],
  ['an rlimit value that is a string', { rlimits: { nofile: { soft: '1;id', hard: 2 } } }, 'start.rlimits.nofile'],
  ['a soft limit above the hard one', { rlimits: { nofile: { soft: 10, hard: 5 } } }, 'start.rlimits.nofile'],
  ['a fractional limit', { rlimits: { core: { soft: 0.5, hard: 1 } } }, 'start.rlimits.core'],
];

describe('start facts: the launch command and the destination-side checks', () => {
  it('builds the privilege drop from numbers only: groups by setpriv, uid by unshare, umask and limits in a host sh', () => {
    const context = contextWith({ groups: [27, 100, 27], umask: 0o027, rlimits: { nofile: { soft: 256, hard: 4096 }, core: { soft: 0, hard: 'unlimited' } } });
    expect(startFactsArgv(context)).toEqual(['sh', '-c', START_FACTS_SCRIPT, 'apm-start', '0027', 'nofile', '256', '4096', 'core', '0', 'unlimited', '--']);
    expect(privilegeDropArgv(context, '/r')).toEqual(['setpriv', '--regid=1001', '--groups=27,100', '--', 'unshare', '--root=/r', '--wd=/srv', '--setuid', '1000', '--']);
    const file = programArgvFile(context, '/r').split('\0');
    expect(file.slice(0, 12)).toEqual(startFactsArgv(context));
    expect(file).toContain('/.ap-migrate/env');
  });

  it('an older profile (no start facts) starts as before: no groups, the launcher umask and limits', () => {
    const context = contextWith(undefined);
    expect(startFactsArgv(context)).toEqual([]);
    expect(privilegeDropArgv(context, '/r').slice(0, 4)).toEqual(['setpriv', '--regid=1001', '--clear-groups', '--']);
    expect(startFactsArgv(contextWith({ groups: [] }))).toEqual([]);
  });

  it("the start script sets the umask and limits, and lowers a hard limit above the destination's own", () => {
    const run = (...args: string[]) => {
      const r = spawnSync('sh', ['-c', START_FACTS_SCRIPT, 'apm-start', ...args, '--', 'sh', '-c', 'umask; ulimit -Sn; ulimit -Hn; echo "$1"', 'sh', 'arg with spaces'], { encoding: 'utf8' });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const ours = execFileSync('sh', ['-c', 'umask; ulimit -Sn; ulimit -Hn'], { encoding: 'utf8' }).split('\n');
    const hard = ours[2]!;
    expect(run('0027', 'nofile', '100', '200')).toEqual({ code: 0, stdout: '0027\n100\n200\narg with spaces\n', stderr: '' });
    expect(run('-').stdout).toBe(`${ours.slice(0, 3).join('\n')}\narg with spaces\n`);
    if (hard !== 'unlimited') {
      const lowered = run('0077', 'nofile', 'unlimited', 'unlimited');
      expect(lowered.stdout).toBe(`0077\n${hard}\n${hard}\narg with spaces\n`);
      expect(lowered.stderr).toContain(`the nofile hard limit unlimited is above the destination's ${hard}: lowered to it`);
    }
    // A malformed list (what checkStartFacts keeps from ever reaching it) runs nothing.
    expect(run('0027', 'nofile', '1').code).toBe(126);
  });

  it.skipIf(skipUnless('root', 'tool:setpriv', 'tool:unshare'))('the privilege drop run for real: a non-root program has the groups and no capability; root (allowRoot) keeps its own', () => {
    const status = (start: unknown, uid: number, gid: number) => {
      const context = contextWith(start);
      Object.assign(context.profile, { uid, gid, cwd: '/' });
      const argv = [...startFactsArgv(context), ...privilegeDropArgv(context, '/'), 'cat', '/proc/self/status'];
      return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
    };
    const row = (text: string, name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1]?.trim();
    const nobody = status({ groups: [100, 27], umask: 0o077 }, 65534, 65534);
    expect([row(nobody, 'Uid'), row(nobody, 'Gid'), row(nobody, 'Groups'), row(nobody, 'Umask')]).toEqual(['65534\t65534\t65534\t65534', '65534\t65534\t65534\t65534', '27 100', '0077']);
    for (const caps of ['CapEff', 'CapPrm', 'CapInh', 'CapAmb']) expect(row(nobody, caps), caps).toBe('0000000000000000');
    const root = status(undefined, 0, 0);
    expect(row(root, 'Groups')).toBe(''); // as unshare --setgid did: no supplementary groups
    expect(row(root, 'CapEff')).not.toBe('0000000000000000');
  });

  it.each(HOSTILE_START)('refuses %s: UNSAFE_PROFILE at pre-flight and at start, nothing run', async (_what, start, field) => {
    const context = contextWith(start);
    const checked = checkStartFacts(start as ResourceProfile['start']);
    expect(checked._unsafeUnwrapErr().code).toBe('UNSAFE_PROFILE');
    expect(checked._unsafeUnwrapErr().details.field).toBe(field);
    expect(checked._unsafeUnwrapErr().message.length).toBeLessThan(300);
    const scripted = createScriptedTransport({ root: '/tmp/apmg-never-created', rules: [] });
    const preflight = await createChrootDeployer().preflight({ ...context, transport: scripted }, 0);
    expect(preflight._unsafeUnwrapErr().code).toBe('UNSAFE_PROFILE');
    const started = await startDetached({ ...context, transport: scripted }, { installDir: '/x', rootDir: '/x/root', undo: [] }, ['true']);
    expect(started._unsafeUnwrapErr().code).toBe('UNSAFE_PROFILE');
    expect(scripted.calls).toEqual([]);
  });

  it.each([
    ['umask 0o7777', { umask: 0o7777 }, 'start.umask'],
    ['a group that is a string', { groups: [100, '0'] }, 'start.groups.1'],
    ['a huge rlimit name', { rlimits: { ['x'.repeat(100_000)]: { soft: 1, hard: 1 } } }, 'start.rlimits'],
    ['an unlimited soft limit under a finite hard one', { rlimits: { nofile: { soft: 'unlimited', hard: 5 } } }, 'start.rlimits.nofile'],
  ])('the profile schema refuses %s: INVALID_INPUT naming the field, in a short message', async (_what, start, path) => {
    const result = await migrate({ target: { profile: { ...contextWith(undefined).profile, start } as never }, destination: createLocalTransport({ root: '/tmp/apmg-never-created' }), dryRun: true });
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('INVALID_INPUT');
    expect((error as unknown as { issues: { path: string }[] }).issues.map((i) => i.path)).toContain(path);
    expect(error.message.length).toBeLessThan(1000);
  });
});

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:setpriv', 'tool:prlimit', 'tool:ip'))('faithful start at the destination (local transport)', () => {
  const work = mkdtempSync('/tmp/apmg-start-');
  chmodSync(work, 0o755);
  const data = join(work, 'data');
  mkdirSync(data);
  chmodSync(data, 0o777);
  writeFileSync(join(data, 'input.txt'), 'in\n');
  const dst = join(work, 'dst');
  mkdirSync(dst);
  const transport = createLocalTransport({ root: dst });
  const children: ChildProcess[] = [];
  const reports: MigrationReport[] = [];

  afterAll(async () => {
    for (const r of reports) {
      const deployer = r.method === 'chroot' ? createChrootDeployer() : createNamespacesDeployer();
      const undo = r.method === 'chroot' ? [] : [['ip', 'netns', 'del', namespaceNames(r.name).netns], ['ip', 'link', 'del', namespaceNames(r.name).hostVeth]];
      await deployer.rollback({ transport, profile: r.profile, plan: r.plan, name: r.name }, { activated: { installDir: r.destination!.installDir, rootDir: join(r.destination!.installDir, 'root'), undo }, started: { pid: r.destination!.pid, logPath: '', endpoints: [] } });
    }
    for (const c of children) c.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
  });

  /** files_only as nobody with groups 100 and 65534, umask 027 and RLIMIT_NOFILE 256 (soft) / 4096 (hard). */
  async function startSource(): Promise<number> {
    const child = spawn('prlimit', ['--nofile=256:4096', '--', 'setpriv', '--reuid=65534', '--regid=65534', '--groups=100,65534', '--', 'sh', '-c', 'umask 027 && exec "$@"', 'sh', fixtureBinary('files_only'), data, '120000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
    return child.pid!;
  }

  /** The program's process at the destination: the launcher's descendant running as nobody. */
  async function destinationProgram(launcher: number): Promise<number> {
    for (let i = 0; i < 50; i++) {
      const found = (await processTree(launcher)).find((p) => statusRow(p, 'Uid').startsWith('65534'));
      if (found) return found;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no process of uid 65534 under launcher ${launcher}`);
  }

  it.each(['chroot', 'linux-namespaces'])('%s: the copy has the same Groups, Umask and limits, and no capabilities', async (method) => {
    const source = await startSource();
    const result = await migrate({ target: { pid: source }, profiler: createProcfsProfiler(), profileDurationMs: 300, destination: transport, name: `apmg-start-${method}`, method });
    if (result.isErr()) throw result.error;
    const report = result.value;
    reports.push(report);
    expect(report.method).toBe(method);
    expect(report.profile.start).toMatchObject({ groups: [100, 65534], umask: 0o027, rlimits: { nofile: { soft: 256, hard: 4096 } } });
    expect(Object.keys(report.profile.start!.rlimits!).sort()).toEqual(['core', 'memlock', 'nofile', 'nproc', 'stack']);
    const copy = await destinationProgram(report.destination!.pid);
    expect(copy).not.toBe(source);
    for (const row of ['Groups', 'Umask', 'Uid', 'Gid']) expect(statusRow(copy, row), row).toBe(statusRow(source, row));
    expect(statusRow(copy, 'Gid')).toBe('65534\t65534\t65534\t65534'); // real, effective, saved and fs: no way back to gid 0
    for (const row of LIMIT_ROWS) expect(limitRow(copy, row), row).toBe(limitRow(source, row));
    expect(limitRow(copy, 'Max open files')).toBe('Max open files 256 4096 files');
    for (const caps of ['CapEff', 'CapPrm', 'CapInh', 'CapAmb']) expect(statusRow(copy, caps), caps).toBe('0000000000000000');
  });
});
