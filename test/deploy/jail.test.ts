/**
 * The FreeBSD jail deployer, tested on the exact commands and jail.conf it would send. No FreeBSD
 * host exists here: a scripted transport records every call and answers with outputs written from
 * the tools' documented formats (test/fixtures/freebsd, test/fixtures/jail; each file says so).
 * Golden files live in test/fixtures/jail; regenerate them with UPDATE_GOLDEN=1 and review the diff.
 *
 * What runs for real: the jail.conf string quoting is decoded by a decoder written from the
 * jail(8) lexer's rules and the resulting exec.start command is run by this machine's /bin/sh,
 * which must give the program its exact argv, environment and working directory; every remote
 * script passes `sh -n`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname as posixDirname, join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrate.js';
import { planMigration } from '../../src/policy/plan.js';
import { ResourceProfileSchema, type ResourceProfile, type ResourceProfileInput } from '../../src/policy/profile.js';
import { PAPER_JAIL_BASE_BYTES } from '../../src/policy/methods.js';
import type { ApMigrateError } from '../../src/errors.js';
import { DeployError } from '../../src/destination/deploy-error.js';
import { FIND_RECEIVER_SCRIPT, UNPACK_THEN_SETTLE_SCRIPT } from '../../src/destination/receiver.js';
import type { DeployContext, Deployer, DeploymentState, StartedProgram } from '../../src/spec/deployer.js';
import {
  checkJailCapabilities,
  checkJailProfile,
  createJailDeployer,
  JailCapabilityError,
  FREEBSD_BASE_DIRS,
  JAIL_ACTIVATE_SCRIPT,
  JAIL_MOVE_SCRIPT,
  JAIL_PREFLIGHT_SCRIPT,
  JAIL_ROLLBACK_SCRIPT,
  JAIL_VNET_IFCONFIG,
  RESCUE_IFCONFIG,
  jailBundleContents,
  measureFreeBsdBase,
  parseDuSk,
  type JailDeployerOptions,
} from '../../src/methods/freebsd-jail/deployer.js';
import { execStartCommand, quoteJailConfString, renderJailConf, type JailConfSpec } from '../../src/methods/freebsd-jail/conf.js';
import { createScriptedTransport, renderCalls, type ScriptedRule, type ScriptedTransport } from '../helpers/scripted-transport.js';
import { createSimulatedFreeBsdHost, fixture, freebsdHost, JAIL_FIXTURES } from '../fixtures/jail/freebsd-host.js';

const UPDATE = process.env.UPDATE_GOLDEN === '1';
// The receiver is never run by the scripted host; a fixed stand-in keeps its remote name stable.
process.env.AP_MIGRATE_RECEIVER = join(JAIL_FIXTURES, 'receiver-stand-in.cjs');

/** Compare with a golden file (or write it under UPDATE_GOLDEN=1). */
function expectGolden(name: string, actual: string): void {
  const path = join(JAIL_FIXTURES, name);
  if (UPDATE) writeFileSync(path, actual);
  expect(existsSync(path), `golden file ${name} is missing: run with UPDATE_GOLDEN=1`).toBe(true);
  expect(actual).toBe(readFileSync(path, 'utf8'));
}

const SCRIPT_NAMES = {
  FIND_RECEIVER_SCRIPT,
  UNPACK_THEN_SETTLE_SCRIPT,
  JAIL_PREFLIGHT_SCRIPT,
  JAIL_ACTIVATE_SCRIPT,
  JAIL_MOVE_SCRIPT,
  JAIL_ROLLBACK_SCRIPT,
};

const ROOT = '/var/ap-migrate';
/** What every rollback also removes: the files a cut transfer kept for a retry, and their journal. */
const KEPT = `${ROOT}/.ap-migrate/resume-apserver ${ROOT}/.ap-migrate/resume-apserver.journal.json`;

const BASE_PROFILE: ResourceProfileInput = {
  executable: '/usr/local/bin/apserver',
  executableSize: 48_128,
  argv: ['apserver', '--data', '/var/db/apserver', '--motd', `it's "$HOME"\\n`],
  cwd: '/var/db/apserver',
  uid: 1001,
  gid: 1001,
  platform: { os: 'freebsd', release: '13.2-RELEASE-p4', arch: 'amd64' },
  files: [
    { path: '/var/db/apserver/notes.db', kind: 'regular', access: ['read', 'write'], size: 1200 },
    { path: '/lib/libc.so.7', kind: 'regular', access: ['read', 'exec'], size: 1_912_536, sharedLibrary: true },
    { path: '/libexec/ld-elf.so.1', kind: 'regular', access: ['read', 'exec'], size: 123_456, sharedLibrary: true },
    { path: '/var/log/apserver/apserver.log', kind: 'regular', access: ['write'], size: 0, created: true },
  ],
};

const NETWORK_PROFILE: ResourceProfileInput = {
  ...BASE_PROFILE,
  sockets: [{ family: 'inet', protocol: 'tcp', localPort: 8080, listening: true }],
};

const SYSV_PROFILE: ResourceProfileInput = {
  ...BASE_PROFILE,
  ipc: [
    { kind: 'sysv-shm', key: 0x5eed, id: 65536, size: 4096 },
    { kind: 'sysv-sem', key: 0x5eed, id: 65537 },
  ],
};

function profileOf(input: ResourceProfileInput): ResourceProfile {
  return ResourceProfileSchema.parse(input);
}

/** Context for a jail deployment planned for a FreeBSD 13.2 destination. */
function contextFor(input: ResourceProfileInput, transport: ScriptedTransport): DeployContext {
  const profile = profileOf(input);
  const plan = planMigration(profile, {
    destination: { platform: { os: 'freebsd', release: '13.2-RELEASE', arch: 'amd64' }, provides: ['freebsd-base-userland'] },
    allowedMethods: ['freebsd-jail'],
  })._unsafeUnwrap();
  expect(plan.chosen).toBe('freebsd-jail');
  return { transport, profile, plan, name: 'apserver' };
}

/** Drive a deployer through migrate()'s phases and roll back on failure, as migrate() does. */
async function deploy<Facts>(deployer: Deployer<Readable, Facts>, context: DeployContext): Promise<{ error?: ApMigrateError; started?: StartedProgram; rolledBack: boolean; state: DeploymentState<Facts> }> {
  const state: DeploymentState<Facts> = {};
  const pre = await deployer.preflight(context, 4 * 1024 * 1024);
  if (pre.isErr()) return { error: pre.error, rolledBack: false, state };
  state.preflight = pre.value;
  const fail = async (error: ApMigrateError) => {
    (await deployer.rollback(context, state))._unsafeUnwrap();
    return { error, rolledBack: true, state };
  };
  const staged = await deployer.receive(context, pre.value, Readable.from([Buffer.alloc(10_240, 7)]));
  if (staged.isErr()) return fail(staged.error);
  state.staged = staged.value;
  const activated = await deployer.activate(context, pre.value, staged.value);
  if (activated.isErr()) return fail(activated.error);
  delete state.staged;
  state.activated = activated.value;
  const started = await deployer.start(context, activated.value);
  if (started.isErr()) return fail(started.error);
  state.started = started.value;
  const healthy = await deployer.healthCheck(context, started.value);
  if (healthy.isErr()) return fail(healthy.error);
  return { started: started.value, rolledBack: false, state };
}

const normalise = (text: string) => text.replace(/staging-apserver-[0-9a-f]{12}/g, 'staging-apserver-RANDOM');

function uploadedConf(transport: ScriptedTransport): string {
  const upload = transport.calls.find((c) => c.op === 'upload');
  if (!upload || upload.op !== 'upload') throw new Error('no jail.conf was uploaded');
  return upload.text;
}

const FAST: JailDeployerOptions = { settleMs: 0, healthPollMs: 10, healthTimeoutMs: 2000 };

describe('jail deployer: golden command sequences', () => {
  it('files only: no network, devfs ruleset 4, the program as its user, everything under <root>/apserver', async () => {
    const transport = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    const result = await deploy(createJailDeployer(FAST), contextFor(BASE_PROFILE, transport));
    expect(result.error).toBeUndefined();
    expect(transport.unmatched).toEqual([]);
    expect(result.started).toEqual({ pid: 4242, logPath: `${ROOT}/apserver/run/console.log`, endpoints: [] });
    const conf = uploadedConf(transport);
    expect(conf).toContain('ip4 = "disable";');
    expect(conf).not.toContain('sysvshm');
    expectGolden('files-only.conf', conf);
    expectGolden('files-only.commands.txt', normalise(renderCalls(transport.calls, SCRIPT_NAMES)));
  });

  it('network: ip4.addr on the host interface, health waits for port 8080 in sockstat -j', async () => {
    const transport = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    const deployer = createJailDeployer({ ...FAST, network: { mode: 'ip4', interface: 'em0', addresses: ['192.0.2.10/32'] } });
    const result = await deploy(deployer, contextFor(NETWORK_PROFILE, transport));
    expect(result.error).toBeUndefined();
    expect(transport.unmatched).toEqual([]);
    expect(result.started?.endpoints).toEqual(['192.0.2.10:8080']);
    const conf = uploadedConf(transport);
    expect(conf).toContain('ip4.addr = "em0|192.0.2.10/32";');
    expectGolden('network.conf', conf);
    expectGolden('network.commands.txt', normalise(renderCalls(transport.calls, SCRIPT_NAMES)));
  });

  it('SysV IPC on 13.2: sysvshm/sysvsem/sysvmsg = new', async () => {
    const transport = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    const result = await deploy(createJailDeployer(FAST), contextFor(SYSV_PROFILE, transport));
    expect(result.error).toBeUndefined();
    expect(transport.unmatched).toEqual([]);
    const conf = uploadedConf(transport);
    for (const p of ['sysvshm', 'sysvsem', 'sysvmsg']) expect(conf).toContain(`\t${p} = "new";`);
    expectGolden('sysv-ipc.conf', conf);
    expectGolden('sysv-ipc.commands.txt', normalise(renderCalls(transport.calls, SCRIPT_NAMES)));
  });

  it('VNET: an epair, its jail end configured from exec.created, destroyed on rollback', async () => {
    const transport = createScriptedTransport({
      root: ROOT,
      rules: freebsdHost('13.2', [{ match: ['sockstat'], reply: { stdout: fixture('jail', 'sockstat-l-j.txt').replace('192.0.2.10', '10.231.9.2') } }]),
    });
    const deployer = createJailDeployer({ ...FAST, network: { mode: 'vnet', addresses: { host: '10.231.9.1/30', program: '10.231.9.2/30' } } });
    const context = contextFor(NETWORK_PROFILE, transport);
    const result = await deploy(deployer, context);
    expect(result.error).toBeUndefined();
    expect(result.started?.endpoints).toEqual(['10.231.9.2:8080']);
    const conf = uploadedConf(transport);
    expect(conf).toContain('vnet.interface = "epair0b";');
    // exec.created runs as root inside the jail: the host's static ifconfig, never the bundle's /sbin/ifconfig.
    expect(conf).toContain(`exec.created = "/usr/sbin/jexec apserver ${JAIL_VNET_IFCONFIG} lo0 inet 127.0.0.1/8 up";`);
    expect(conf).not.toContain('/sbin/ifconfig');
    const activation = transport.calls.find((c) => c.op === 'exec' && c.argv[2] === JAIL_ACTIVATE_SCRIPT);
    expect(activation?.op === 'exec' && activation.argv.slice(3, 8)).toEqual(['ap-migrate', expect.stringMatching(/staging-apserver-/), '/usr/local/bin/apserver', '/var/db/apserver', RESCUE_IFCONFIG]);
    expect(activation?.op === 'exec' && activation.argv.includes('/sbin/ifconfig')).toBe(false);
    expectGolden('vnet.conf', conf);
    // Rolling back the running jail removes it, then destroys the epair.
    const before = transport.calls.length;
    (await deployer.rollback(context, { activated: { installDir: `${ROOT}/apserver`, rootDir: `${ROOT}/apserver/root`, undo: [['ifconfig', 'epair0a', 'destroy']] } }))._unsafeUnwrap();
    expect(renderCalls(transport.calls.slice(before), SCRIPT_NAMES)).toBe(
      `sh -c <JAIL_ROLLBACK_SCRIPT> ap-migrate apserver ${ROOT}/apserver/run/jail.conf ${ROOT}/apserver ${KEPT}\nifconfig epair0a destroy\n`,
    );
  });

  it('a failed start is rolled back: jail -r with its config, devfs unmounted, directories removed', async () => {
    // The jail is created but its only process exits at once (pgrep finds nothing).
    const transport = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2', [{ match: ['pgrep', '-j', '7'], reply: { code: 1 } }]) });
    const result = await deploy(createJailDeployer(FAST), contextFor(BASE_PROFILE, transport));
    expect(result.error?.code).toBe('START_FAILED');
    expect(result.error?.message).toContain('no process runs in the jail');
    expect(result.error?.message).toContain('Permission denied');
    expect(result.rolledBack).toBe(true);
    const commands = normalise(renderCalls(transport.calls, SCRIPT_NAMES));
    expect(commands.trimEnd().split('\n').pop()).toBe(`sh -c <JAIL_ROLLBACK_SCRIPT> ap-migrate apserver ${ROOT}/apserver/run/jail.conf ${ROOT}/apserver ${KEPT}`);
    expectGolden('failed-start.commands.txt', commands);
  });

  it('health polls until the port listens, and fails naming the port or the exit otherwise', async () => {
    const header = fixture('jail', 'sockstat-l-j.txt').split('\n')[0]!;
    const started: StartedProgram = { pid: 4242, logPath: `${ROOT}/apserver/run/console.log`, endpoints: [] };
    const options = { ...FAST, network: { mode: 'ip4' as const, interface: 'em0', addresses: ['192.0.2.10/32'] } };
    // Not listening for the first two probes, then listening.
    const slow = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2', [{ match: ['sockstat'], reply: { stdout: `${header}\n` }, times: 2 }]) });
    (await createJailDeployer(options).healthCheck(contextFor(NETWORK_PROFILE, slow), started))._unsafeUnwrap();
    expect(slow.calls.filter((c) => c.op === 'exec' && c.argv[0] === 'sockstat')).toHaveLength(3);
    const never = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2', [{ match: ['sockstat'], reply: { stdout: `${header}\n` } }]) });
    const notListening = (await createJailDeployer({ ...options, healthTimeoutMs: 50 }).healthCheck(contextFor(NETWORK_PROFILE, never), started))._unsafeUnwrapErr();
    expect(notListening.code).toBe('HEALTH_CHECK_FAILED');
    expect(notListening.message).toContain('not listening on port(s) 8080');
    const exited = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2', [{ match: ['pgrep'], reply: { code: 1 } }]) });
    const gone = (await createJailDeployer(options).healthCheck(contextFor(NETWORK_PROFILE, exited), started))._unsafeUnwrapErr();
    expect(gone.message).toContain('the program exited in the jail');
    expect(gone.message).toContain('Permission denied');
  });

  it('the remote scripts are golden and valid POSIX sh', () => {
    const text = Object.entries(SCRIPT_NAMES)
      .map(([name, script]) => `### ${name}${script}`)
      .join('\n');
    expectGolden('scripts.txt', text);
    for (const script of Object.values(SCRIPT_NAMES)) execFileSync('sh', ['-n', '-c', script]);
  });
});

describe('the activation script on this machine\'s /bin/sh (its POSIX parts; ldd -f is FreeBSD-only and is skipped quietly)', () => {
  const base = mkdtempSync(join(tmpdir(), 'apm-jail-activate-'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  function stagingWith(name: string): string {
    const staging = join(base, name);
    mkdirSync(join(staging, 'root', 'usr', 'local', 'bin'), { recursive: true });
    writeFileSync(join(staging, 'root', 'usr', 'local', 'bin', 'apserver'), '#!/bin/sh\n');
    return staging;
  }

  it('creates /dev, /tmp (1777), the cwd and created-file dirs, copies the host shell, then moves into place', () => {
    const staging = stagingWith('ok');
    execFileSync('sh', ['-c', JAIL_ACTIVATE_SCRIPT, 'ap-migrate', staging, '/usr/local/bin/apserver', '/var/db/apserver', '', '/bin/sh', '--', '/var/log/apserver']);
    const root = join(staging, 'root');
    for (const dir of ['dev', 'tmp', 'var/db/apserver', 'var/log/apserver']) expect(statSync(join(root, dir)).isDirectory()).toBe(true);
    expect(statSync(join(root, 'tmp')).mode & 0o7777).toBe(0o1777);
    expect(readFileSync(join(root, 'bin', 'sh'))).toEqual(readFileSync('/bin/sh'));
    const install = join(base, 'installed');
    execFileSync('sh', ['-c', JAIL_MOVE_SCRIPT, 'ap-migrate', staging, install]);
    expect(existsSync(staging)).toBe(false);
    expect(statSync(join(install, 'run')).isDirectory()).toBe(true);
    // A second move onto an existing install directory is refused.
    const again = stagingWith('again');
    expect(() => execFileSync('sh', ['-c', JAIL_MOVE_SCRIPT, 'ap-migrate', again, install], { stdio: 'pipe' })).toThrow(/exists/);
  });

  it('refuses to write through a symbolic link the bundle put in the root', () => {
    const staging = stagingWith('evil');
    const outside = join(base, 'outside');
    mkdirSync(outside);
    symlinkSync(outside, join(staging, 'root', 'var'));
    expect(() =>
      execFileSync('sh', ['-c', JAIL_ACTIVATE_SCRIPT, 'ap-migrate', staging, '/usr/local/bin/apserver', '/var/db/apserver', '', '--'], { stdio: 'pipe' }),
    ).toThrow(/symbolic link/);
    expect(readdirSync(outside)).toEqual([]);
  });

  /** Run the activation script on a staging dir; returns its exit status and stderr. */
  function activate(staging: string, args: { exe?: string; cwd?: string; helper?: string; hostFiles?: string[]; dirs?: string[] } = {}) {
    const argv = [staging, args.exe ?? '/usr/local/bin/apserver', args.cwd ?? '/var/db/apserver', args.helper ?? '', ...(args.hostFiles ?? []), '--', ...(args.dirs ?? [])];
    const r = spawnSync('sh', ['-c', JAIL_ACTIVATE_SCRIPT, 'ap-migrate', ...argv], { encoding: 'utf8' });
    return { status: r.status, stderr: r.stderr };
  }

  /** A host directory standing in for /etc or /var/tmp/x: nothing may be written to it, nor its mode changed. */
  function hostDir(name: string): string {
    const dir = join(base, name);
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    return dir;
  }

  const untouched = (dir: string) => {
    expect(readdirSync(dir)).toEqual([]);
    expect(statSync(dir).mode & 0o7777).toBe(0o755);
  };

  // Each skeleton directory, each link in the cwd chain, each created-file directory and each
  // directory a host file is copied into: a symlink there is refused before anything is written.
  const linkCases: Array<[string, string, Parameters<typeof activate>[1]]> = [
    ['root/tmp -> /etc (chmod 1777 would hit the host directory)', 'tmp', {}],
    ['root/dev -> /var/tmp/x (where jail(8) mounts devfs)', 'dev', {}],
    ['a link in the cwd chain (root/var/db -> host)', 'var/db', {}],
    ['the cwd itself (root/var/db/apserver -> host)', 'var/db/apserver', {}],
    ['a created-file directory (root/var/log -> host)', 'var/log', { dirs: ['/var/log/apserver'] }],
    ['the directory a host file is copied into (root/bin -> host)', 'bin', { hostFiles: ['/bin/sh'] }],
  ];
  for (const [what, link, args] of linkCases) {
    it(`refuses ${what}`, () => {
      const staging = stagingWith(`link-${link.replace(/\//g, '-')}`);
      const outside = hostDir(`outside-${link.replace(/\//g, '-')}`);
      mkdirSync(join(staging, 'root', posixDirname(link)), { recursive: true });
      symlinkSync(outside, join(staging, 'root', link));
      const r = activate(staging, args);
      expect(r.status, r.stderr).toBe(4);
      expect(r.stderr).toContain('symbolic link');
      untouched(outside);
    });
  }

  it('refuses "." and ".." in the cwd, the executable and created-file directories, even when passed straight to the script', () => {
    const cases: Array<Parameters<typeof activate>[1]> = [
      { cwd: '/../../escaped-cwd' },
      { cwd: '/var/./db' },
      { exe: '/usr/local/bin/../../../../bin/sh' },
      { dirs: ['/var/log/../../../escaped-dir'] },
      { cwd: 'relative' },
    ];
    for (const [i, args] of cases.entries()) {
      const staging = stagingWith(`dots-${i}`);
      const r = activate(staging, args);
      expect(r.status, `${JSON.stringify(args)}: ${r.stderr}`).toBe(4);
      expect(r.stderr).toMatch(/\. or \.\. component|relative path/);
    }
    expect(existsSync(join(base, 'escaped-cwd'))).toBe(false);
    expect(existsSync(join(base, 'escaped-dir'))).toBe(false);
  });

  it('VNET: copies the static helper to /.ap-migrate/ifconfig (root only), and refuses a bundle that brought /.ap-migrate', () => {
    const staging = stagingWith('vnet');
    // /bin/sh stands in for /rescue/ifconfig: any host file.
    const ok = activate(staging, { helper: '/bin/sh' });
    expect(ok.status, ok.stderr).toBe(0);
    const copy = join(staging, 'root', JAIL_VNET_IFCONFIG);
    expect(readFileSync(copy)).toEqual(readFileSync('/bin/sh'));
    expect(statSync(copy).mode & 0o7777).toBe(0o500);
    expect(statSync(join(staging, 'root', '.ap-migrate')).mode & 0o7777).toBe(0o700);
    const evil = stagingWith('vnet-evil');
    const outside = hostDir('outside-vnet');
    symlinkSync(outside, join(evil, 'root', '.ap-migrate'));
    const refused = activate(evil, { helper: '/bin/sh' });
    expect(refused.status).toBe(4);
    untouched(outside);
    expect(activate(stagingWith('vnet-missing'), { helper: join(base, 'no-such-ifconfig') }).status).toBe(5);
  });
});

describe('the rollback script on this machine\'s /bin/sh, with stand-ins for jls, jail, mount, umount and chflags', () => {
  const base = mkdtempSync(join(tmpdir(), 'apm-jail-rollback-'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  /** Stand-in tools: jls finds no jail, `mount -p` prints the table file, umount logs its argv and empties the table, chflags logs. */
  function tools(): string {
    const bin = join(base, 'bin');
    if (existsSync(bin)) return bin;
    mkdirSync(bin);
    const log = join(base, 'tools.log');
    const script = (body: string) => `#!/bin/sh\n${body}\n`;
    // jls finds a jail only when JLS_PATH is set, and prints it as the jail's path.
    writeFileSync(join(bin, 'jls'), script(`echo "jls $*" >>${log}; [ -n "$JLS_PATH" ] || exit 1; echo "$JLS_PATH"`), { mode: 0o755 });
    writeFileSync(join(bin, 'jail'), script(`echo "jail $*" >>${log}`), { mode: 0o755 });
    writeFileSync(join(bin, 'mount'), script('[ "$1" = -p ] && cat "$MOUNTS_FILE"'), { mode: 0o755 });
    writeFileSync(join(bin, 'umount'), script(`echo "umount $*" >>${log}; : >"$MOUNTS_FILE"`), { mode: 0o755 });
    writeFileSync(join(bin, 'chflags'), script(`echo "chflags $*" >>${log}`), { mode: 0o755 });
    return bin;
  }

  function rollback(dir: string, mounts: string, jail: { conf?: string; jlsPath?: string } = {}) {
    const log = join(base, 'tools.log');
    rmSync(log, { force: true });
    const table = join(base, 'mounts.txt');
    writeFileSync(table, mounts);
    const r = spawnSync('sh', ['-c', JAIL_ROLLBACK_SCRIPT, 'ap-migrate', 'apserver', jail.conf ?? '', dir], {
      encoding: 'utf8',
      env: { PATH: `${tools()}:/usr/bin:/bin`, MOUNTS_FILE: table, JLS_PATH: jail.jlsPath ?? '' },
    });
    return { status: r.status, stderr: r.stderr, log: existsSync(log) ? readFileSync(log, 'utf8') : '' };
  }

  function bundleWithDevLink(name: string): { dir: string; outside: string } {
    const dir = join(base, name);
    const outside = join(base, `${name}-outside`);
    mkdirSync(join(dir, 'root'), { recursive: true });
    mkdirSync(outside);
    writeFileSync(join(outside, 'keep'), 'host data');
    symlinkSync(outside, join(dir, 'root', 'dev'));
    return { dir, outside };
  }

  it('root/dev -> a host directory: nothing is mounted there, so no umount; rm -rf removes the link, not its target', () => {
    const { dir, outside } = bundleWithDevLink('refused-staging');
    const r = rollback(dir, '');
    expect(r.status, r.stderr).toBe(0);
    expect(r.log).not.toContain('umount');
    expect(existsSync(dir)).toBe(false);
    expect(readFileSync(join(outside, 'keep'), 'utf8')).toBe('host data');
  });

  it('removes only its own jail: one rooted next to its config, and none before activation', () => {
    const install = join(base, 'own-jail');
    mkdirSync(join(install, 'run'), { recursive: true });
    const conf = join(install, 'run', 'jail.conf');
    writeFileSync(conf, '');
    const ours = rollback(install, '', { conf, jlsPath: join(install, 'root') });
    expect(ours.status, ours.stderr).toBe(0);
    expect(ours.log).toContain(`jail -f ${conf} -r apserver\n`);
    // A jail of the same name rooted elsewhere is someone else's.
    mkdirSync(join(install, 'run'), { recursive: true });
    writeFileSync(conf, '');
    const theirs = rollback(install, '', { conf, jlsPath: '/usr/jails/apserver' });
    expect(theirs.status, theirs.stderr).toBe(0);
    expect(theirs.log).toContain('jls -j apserver path');
    expect(theirs.log).not.toMatch(/^jail /m);
    expect(existsSync(install)).toBe(false);
    // Before activation there is no config and no jail of ours: jls is not even asked.
    const staging = join(base, 'staging-only');
    mkdirSync(staging);
    const early = rollback(staging, '', { jlsPath: join(staging, 'root') });
    expect(early.status, early.stderr).toBe(0);
    expect(early.log).not.toMatch(/^(jls|jail) /m);
    expect(existsSync(staging)).toBe(false);
  });

  it('umounts only the exact mount point the mount table lists, and never removes a tree with a mount left under it', () => {
    const { dir } = bundleWithDevLink('mounted');
    const devfs = rollback(dir, `devfs\t${dir}/root/dev\tdevfs\trw\t0 0\n`);
    expect(devfs.status, devfs.stderr).toBe(0);
    expect(devfs.log).toContain(`umount -f ${dir}/root/dev\n`);
    const { dir: other, outside } = bundleWithDevLink('still-mounted');
    const busy = rollback(other, `/dev/md0\t${other}/root/mnt\tufs\trw\t0 0\n`);
    expect(busy.status).toBe(6);
    expect(existsSync(other)).toBe(true);
    expect(readFileSync(join(outside, 'keep'), 'utf8')).toBe('host data');
    expect(lstatSync(join(other, 'root', 'dev')).isSymbolicLink()).toBe(true);
  });
});

describe('jail deployer: no state of its own between migrations', () => {
  /** Calls made since `from`, rendered. */
  const callsSince = (transport: ScriptedTransport, from: number) => renderCalls(transport.calls.slice(from), SCRIPT_NAMES);
  const confOn = (transport: ScriptedTransport) => uploadedConf(transport);

  it('two same-name migrations on one instance, phases interleaved: each gets its own facts and epair, and each rollback touches only its own', async () => {
    const deployer = createJailDeployer({ ...FAST, network: { mode: 'vnet', addresses: { host: '10.231.9.1/30', program: '10.231.9.2/30' } } });
    // Two destinations whose users and epair units differ, so a mix-up shows in the commands.
    const hostA = createSimulatedFreeBsdHost({ root: ROOT, description: 'ssh://root@a.test:22', user: { name: 'www', uid: 1001 }, firstEpair: 0, firstJid: 7, listening: [8080] });
    const hostB = createSimulatedFreeBsdHost({ root: ROOT, description: 'ssh://root@b.test:22', user: { name: 'apserver', uid: 1001 }, firstEpair: 3, firstJid: 12, listening: [8080] });
    const a = contextFor(NETWORK_PROFILE, hostA.transport);
    const b = contextFor(NETWORK_PROFILE, hostB.transport);
    expect(a.name).toBe(b.name);
    const preA = (await deployer.preflight(a, 1))._unsafeUnwrap();
    const preB = (await deployer.preflight(b, 1))._unsafeUnwrap();
    expect([preA.facts.jailUser, preB.facts.jailUser]).toEqual(['www', 'apserver']);
    expect(preA.stagingDir).not.toBe(preB.stagingDir);
    const stagedA = (await deployer.receive(a, preA, Readable.from([Buffer.alloc(100, 1)])))._unsafeUnwrap();
    const stagedB = (await deployer.receive(b, preB, Readable.from([Buffer.alloc(200, 2)])))._unsafeUnwrap();
    expect([stagedA.stagingDir, stagedB.stagingDir]).toEqual([preA.stagingDir, preB.stagingDir]);
    // B activates first: A's later activation must not take B's facts or epair.
    const activatedB = (await deployer.activate(b, preB, stagedB))._unsafeUnwrap();
    const activatedA = (await deployer.activate(a, preA, stagedA))._unsafeUnwrap();
    expect(activatedA.undo).toEqual([['ifconfig', 'epair0a', 'destroy']]);
    expect(activatedB.undo).toEqual([['ifconfig', 'epair3a', 'destroy']]);
    expect(confOn(hostA.transport)).toContain('exec.jail_user = "www";');
    expect(confOn(hostA.transport)).toContain('vnet.interface = "epair0b";');
    expect(confOn(hostB.transport)).toContain('exec.jail_user = "apserver";');
    expect(confOn(hostB.transport)).toContain('vnet.interface = "epair3b";');
    const startedA = (await deployer.start(a, activatedA))._unsafeUnwrap();

    // A is rolled back while B is half-way: nothing reaches B, and A's rollback names only A's things.
    const [fromA, fromB] = [hostA.transport.calls.length, hostB.transport.calls.length];
    (await deployer.rollback(a, { preflight: preA, activated: activatedA, started: startedA }))._unsafeUnwrap();
    expect(hostB.transport.calls.length).toBe(fromB);
    expect(callsSince(hostA.transport, fromA)).toBe(`sh -c <JAIL_ROLLBACK_SCRIPT> ap-migrate apserver ${ROOT}/apserver/run/jail.conf ${ROOT}/apserver ${KEPT}\nifconfig epair0a destroy\n`);
    expect(hostA.state.jails.size + hostA.state.epairs.size).toBe(0);
    expect([...hostA.state.dirs]).toEqual([`${ROOT}/.ap-migrate`]);

    // B carries on as if A had never been.
    const startedB = (await deployer.start(b, activatedB))._unsafeUnwrap();
    expect(startedB).toEqual({ pid: 4235 + 12, logPath: `${ROOT}/apserver/run/console.log`, endpoints: ['10.231.9.2:8080'] });
    (await deployer.healthCheck(b, startedB))._unsafeUnwrap();
    const fromB2 = hostB.transport.calls.length;
    (await deployer.rollback(b, { preflight: preB, activated: activatedB, started: startedB }))._unsafeUnwrap();
    expect(callsSince(hostB.transport, fromB2)).toBe(`sh -c <JAIL_ROLLBACK_SCRIPT> ap-migrate apserver ${ROOT}/apserver/run/jail.conf ${ROOT}/apserver ${KEPT}\nifconfig epair3a destroy\n`);
    expect(hostB.state.jails.size + hostB.state.epairs.size).toBe(0);
    expect([...hostB.state.dirs]).toEqual([`${ROOT}/.ap-migrate`]);
    expect([hostA.transport.unmatched, hostB.transport.unmatched]).toEqual([[], []]);
  });

  it('a rollback before activation removes only that migration\'s staging directory', async () => {
    const host = createSimulatedFreeBsdHost({ root: ROOT });
    const deployer = createJailDeployer(FAST);
    const context = contextFor(BASE_PROFILE, host.transport);
    const first = (await deployer.preflight(context, 1))._unsafeUnwrap();
    const second = (await deployer.preflight(context, 1))._unsafeUnwrap();
    (await deployer.receive(context, first, Readable.from(['one'])))._unsafeUnwrap();
    (await deployer.receive(context, second, Readable.from(['two'])))._unsafeUnwrap();
    const from = host.transport.calls.length;
    (await deployer.rollback(context, { preflight: first }))._unsafeUnwrap();
    expect(callsSince(host.transport, from)).toBe(`sh -c <JAIL_ROLLBACK_SCRIPT> ap-migrate apserver '' ${first.stagingDir} ${KEPT}\n`);
    expect([...host.state.dirs].sort()).toEqual([`${ROOT}/.ap-migrate`, second.stagingDir]);
  });

  it('JailCapabilityError is recognised across copies of the package by its own marker', () => {
    const error = checkJailCapabilities(['file', 'posix-mq'], { release: '14.0-RELEASE', major: 14, minor: 0, sysvIpcJailParams: true, vnet: true }, { mode: 'none' }, 'h');
    expect(JailCapabilityError.isInstance(error)).toBe(true);
    expect(DeployError.isInstance(error)).toBe(true);
    // Another copy's instance: only the Symbol.for markers say what it is.
    const foreign = Object.create(Object.create(Error.prototype, { [Symbol.for('ap-migrate.error.JailCapabilityError')]: { value: true } }));
    expect(JailCapabilityError.isInstance(foreign)).toBe(true);
    expect(JailCapabilityError.isInstance(new DeployError('CAPABILITY_MISSING', 'not a jail one'))).toBe(false);
  });
});

describe('jail deployer: pre-flight refusals', () => {
  for (const release of ['9.2', '10.3'] as const) {
    it(`refuses SysV IPC isolation on FreeBSD ${release} before sending anything`, async () => {
      const transport = createScriptedTransport({ root: ROOT, rules: freebsdHost(release) });
      const result = await deploy(createJailDeployer(FAST), contextFor(SYSV_PROFILE, transport));
      expect(result.error?.code).toBe('CAPABILITY_MISSING');
      expect(result.error?.message).toContain(`FreeBSD ${release}-RELEASE`);
      expect(result.error?.message).toContain('SysV shared memory, SysV semaphores');
      expect(result.error?.message).toContain('11.0 or later');
      expect(result.error?.details).toMatchObject({ missing: ['sysv-shm', 'sysv-sem'] });
      expect(result.rolledBack).toBe(false);
      expect(transport.calls.some((c) => c.op === 'upload' || (c.op === 'exec' && c.argv[0] === 'node'))).toBe(false);
      expectGolden(`refuse-sysv-${release}.commands.txt`, renderCalls(transport.calls, SCRIPT_NAMES));
    });
  }

  it('migrate() with the jail deployer stops at pre-flight with CAPABILITY_MISSING on 10.3', async () => {
    const transport = createScriptedTransport({ root: ROOT, rules: freebsdHost('10.3') });
    const result = await migrate({
      target: { profile: SYSV_PROFILE },
      destination: transport,
      name: 'apserver',
      method: 'freebsd-jail',
      planOptions: { destination: { platform: { os: 'freebsd', release: '13.2-RELEASE', arch: 'amd64' } } },
      deployers: { 'freebsd-jail': createJailDeployer(FAST) },
    });
    expect(result._unsafeUnwrapErr().code).toBe('CAPABILITY_MISSING');
    expect(transport.calls.some((c) => c.op === 'exec' && c.argv[0] === 'node')).toBe(false);
  });

  it('refuses a name an existing jail already has, and a uid with no user', async () => {
    const taken = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2', [{ match: ['sh', '-c', JAIL_PREFLIGHT_SCRIPT], reply: { stdout: 'jail_exists=1\nuser=www\nuser_uid=1001\n' } }]) });
    expect((await createJailDeployer().preflight(contextFor(BASE_PROFILE, taken), 1))._unsafeUnwrapErr().code).toBe('DESTINATION_EXISTS');
    const nobody = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2', [{ match: ['sh', '-c', JAIL_PREFLIGHT_SCRIPT], reply: { stdout: 'jail_exists=0\n' } }]) });
    const error = (await createJailDeployer().preflight(contextFor(BASE_PROFILE, nobody), 1))._unsafeUnwrapErr();
    expect(error.code).toBe('PREFLIGHT_FAILED');
    expect(error.message).toContain('uid 1001');
  });

  it('refuses a dotted jail name before running anything, and a bad address before sending anything', async () => {
    const t1 = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    const e1 = (await createJailDeployer().preflight({ ...contextFor(BASE_PROFILE, t1), name: 'ap.server' }, 1))._unsafeUnwrapErr();
    expect(e1.code).toBe('PREFLIGHT_FAILED');
    expect(t1.calls).toEqual([]);
    const t2 = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    const deployer = createJailDeployer({ network: { mode: 'ip4', interface: 'em0', addresses: ['192.0.2.10/33'] } });
    const e2 = (await deployer.preflight(contextFor(NETWORK_PROFILE, t2), 1))._unsafeUnwrapErr();
    expect(e2.code).toBe('INVALID_INPUT');
    expect(e2.message).toContain('network.addresses.0');
  });

  // Profiles that did not go through ResourceProfileSchema (DeployContext takes any ResourceProfile):
  // the deployer itself refuses them, before running anything at the destination.
  const hostile: Array<[string, (p: ResourceProfile) => ResourceProfile, string]> = [
    ['a cwd climbing out of the root', (p) => ({ ...p, cwd: '/var/db/../../../etc' }), 'cwd'],
    ['a relative cwd', (p) => ({ ...p, cwd: 'var/db' }), 'cwd'],
    ['an executable with ..', (p) => ({ ...p, executable: '/usr/local/bin/../../../../bin/sh' }), 'executable'],
    ['a created file under ..', (p) => ({ ...p, files: [...p.files, { path: '/var/log/../../../etc/cron.d/x', kind: 'regular', access: ['write'], size: 0, sharedLibrary: false, created: true }] }), 'files.4.path'],
    ['an env name that is shell syntax', (p) => ({ ...p, env: { 'A=1; touch /tmp/PWN; B': 'v' } }), 'env.A=1; touch /tmp/PWN; B'],
    ['an env value with NUL', (p) => ({ ...p, env: { A: 'x\0y' } }), 'env.A'],
    ['an argument with NUL', (p) => ({ ...p, argv: ['apserver', 'a\0b'] }), 'argv.1'],
    ['uid 0 (the program ran as root)', (p) => ({ ...p, uid: 0 }), 'uid'],
  ];
  for (const [what, change, path] of hostile) {
    it(`refuses ${what} with UNSAFE_PROFILE before running anything`, async () => {
      const transport = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
      const context = contextFor(BASE_PROFILE, transport);
      const error = (await createJailDeployer(FAST).preflight({ ...context, profile: change(context.profile) }, 1))._unsafeUnwrapErr();
      expect(error.code).toBe('UNSAFE_PROFILE');
      expect((error.details.issues as Array<{ path: string }>).map((i) => i.path)).toContain(path);
      expect(error.details.field).toBe(path);
      expect(transport.calls).toEqual([]);
    });
  }

  it('activation checks the profile again: a cwd with .. reaches no command', async () => {
    const transport = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    const context = contextFor(BASE_PROFILE, transport);
    const deployer = createJailDeployer(FAST);
    const pre = (await deployer.preflight(context, 1))._unsafeUnwrap();
    const before = transport.calls.length;
    const staged = { stagingDir: pre.stagingDir, bytesReceived: 1, entriesVerified: 1 };
    const error = (await deployer.activate({ ...context, profile: { ...context.profile, cwd: '/../../etc' } }, pre, staged))._unsafeUnwrapErr();
    expect(error.code).toBe('UNSAFE_PROFILE');
    expect(transport.calls.slice(before)).toEqual([]);
  });

  it('runs a uid-0 program only as the user the caller names or with allowRoot, and refuses a host user that resolves to uid 0', async () => {
    const named = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    const root = { ...BASE_PROFILE, uid: 0, gid: 0 };
    (await createJailDeployer({ ...FAST, jailUser: 'www' }).preflight(contextFor(root, named), 1))._unsafeUnwrap();
    expect(named.calls.some((c) => c.op === 'exec' && c.argv[2] === JAIL_PREFLIGHT_SCRIPT && c.argv.at(-1) === 'www')).toBe(true);
    const rootUser = (): ScriptedRule[] => [{ match: ['sh', '-c', JAIL_PREFLIGHT_SCRIPT], reply: { stdout: 'jail_exists=0\nuser=root\nuser_uid=0\n' } }];
    (await createJailDeployer({ ...FAST, allowRoot: true }).preflight(contextFor(root, createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2', rootUser()) })), 1))._unsafeUnwrap();
    const toor = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2', [{ match: ['sh', '-c', JAIL_PREFLIGHT_SCRIPT], reply: { stdout: 'jail_exists=0\nuser=toor\nuser_uid=0\n' } }]) });
    const error = (await createJailDeployer(FAST).preflight(contextFor(BASE_PROFILE, toor), 1))._unsafeUnwrapErr();
    expect(error.code).toBe('UNSAFE_PROFILE');
    expect(error.message).toContain('uid 0');
    // A jailUser that could read as an option never reaches `id`.
    const dash = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    expect((await createJailDeployer({ jailUser: '-x' }).preflight(contextFor(BASE_PROFILE, dash), 1))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect(dash.calls).toEqual([]);
  });

  it('checkJailProfile normalises the paths it returns', () => {
    const checked = checkJailProfile({ ...profileOf(BASE_PROFILE), cwd: '/var//db/./apserver/' });
    expect(checked).toEqual({ executable: '/usr/local/bin/apserver', cwd: '/var/db/apserver', createdDirs: ['/var/log/apserver'] });
  });

  it('refuses a network program without a network option, and too little space', async () => {
    const t1 = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    const e1 = (await createJailDeployer().preflight(contextFor(NETWORK_PROFILE, t1), 1))._unsafeUnwrapErr();
    expect(e1.code).toBe('CAPABILITY_MISSING');
    expect(e1.message).toContain('mode: "ip4"');
    const t2 = createScriptedTransport({ root: ROOT, rules: freebsdHost('13.2') });
    expect((await createJailDeployer().preflight(contextFor(BASE_PROFILE, t2), 64 * 1024 ** 3))._unsafeUnwrapErr().code).toBe('INSUFFICIENT_SPACE');
  });
});

describe('checkJailCapabilities', () => {
  const facts = (release: string, major: number, sysv: boolean, vnet: boolean) => ({ release, major, minor: 0, sysvIpcJailParams: sysv, vnet });

  it('allows files and network everywhere, SysV IPC from 11.0 with the parameters', () => {
    expect(checkJailCapabilities(['file', 'network'], facts('9.2-RELEASE', 9, false, false), { mode: 'ip4', interface: 'em0', addresses: ['192.0.2.1'] }, 'h')).toEqual({ sysvIpc: false });
    expect(checkJailCapabilities(['file', 'sysv-msg'], facts('11.0-RELEASE', 11, true, false), { mode: 'none' }, 'h')).toEqual({ sysvIpc: true });
  });

  it('refuses 11+ without the sysv jail parameters, POSIX IPC anywhere, VNET without VIMAGE or before 12', () => {
    const noParams = checkJailCapabilities(['file', 'sysv-shm'], facts('12.4-RELEASE', 12, false, true), { mode: 'none' }, 'h');
    expect(noParams).toMatchObject({ code: 'CAPABILITY_MISSING' });
    expect(String((noParams as Error).message)).toContain('security.jail.param.sysv');
    expect(checkJailCapabilities(['file', 'posix-mq'], facts('14.0-RELEASE', 14, true, true), { mode: 'none' }, 'h')).toMatchObject({ code: 'CAPABILITY_MISSING' });
    expect(checkJailCapabilities(['file'], facts('13.2-RELEASE', 13, true, false), { mode: 'vnet' }, 'h')).toMatchObject({ code: 'CAPABILITY_MISSING' });
    expect(checkJailCapabilities(['file'], facts('11.4-RELEASE', 11, true, true), { mode: 'vnet' }, 'h')).toMatchObject({ code: 'CAPABILITY_MISSING' });
  });
});

/** Decode one double-quoted jail.conf string, following jaillex.l: C escapes, octal, `\x`, `$` starts a variable. */
function decodeJailConfString(quoted: string): string {
  expect(quoted.startsWith('"') && quoted.endsWith('"')).toBe(true);
  const body = quoted.slice(1, -1);
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const ch = body[i]!;
    if (ch === '"') throw new Error(`unescaped quote at ${i}`);
    if (ch === '$') throw new Error(`unescaped $ at ${i} would start a variable`);
    if (ch !== '\\') {
      out += ch;
      continue;
    }
    const next = body[++i]!;
    if (/[0-7]/.test(next)) {
      let digits = next;
      while (digits.length < 3 && /[0-7]/.test(body[i + 1] ?? '')) digits += body[++i];
      out += String.fromCharCode(parseInt(digits, 8));
      continue;
    }
    const simple: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };
    if (next === '\n') continue;
    out += simple[next] ?? next;
  }
  return out;
}

describe('jail.conf quoting', () => {
  it('escapes quotes, backslashes, $, newlines and control characters', () => {
    expect(quoteJailConfString('plain')).toBe('"plain"');
    expect(quoteJailConfString('a "b"')).toBe('"a \\"b\\""');
    expect(quoteJailConfString('c:\\dir')).toBe('"c:\\\\dir"');
    expect(quoteJailConfString('$HOME ${x}')).toBe('"\\$HOME \\${x}"');
    expect(quoteJailConfString('two\nlines\ttab')).toBe('"two\\nlines\\ttab"');
    expect(quoteJailConfString('bell\x07 del\x7f1')).toBe('"bell\\007 del\\1771"');
  });

  it('round-trips any string without NUL through the jail(8) lexer rules', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }).filter((s) => !s.includes('\0')), (s) => {
        expect(decodeJailConfString(quoteJailConfString(s))).toBe(s);
      }),
      { numRuns: 500 },
    );
  });

  describe('exec.start runs the exact argv, env and cwd under a real /bin/sh', () => {
    const dir = mkdtempSync(join(tmpdir(), 'apm jail cwd '));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('survives quotes, backslashes, $, spaces and newlines', () => {
      const out = join(dir, 'argv.json');
      const args = ['a b', "it's", '"dq"', '$HOME', '`id`', 'back\\slash', 'new\nline', '', '*', '; rm -rf /'];
      const argv = [process.execPath, '-e', `require('fs').writeFileSync(process.argv[1], JSON.stringify({ argv: process.argv.slice(2), cwd: process.cwd(), motd: process.env.MOTD }))`, out, ...args];
      const spec: JailConfSpec = { name: 'apserver', path: '/j/apserver/root', network: { mode: 'none' }, argv, cwd: dir, env: { MOTD: `hi "$USER"\n` }, jailUser: 'www', consoleLog: '/j/apserver/run/console.log' };
      const conf = renderJailConf(spec)._unsafeUnwrap();
      const line = conf.split('\n').find((l) => l.startsWith('\texec.start = '))!;
      const command = decodeJailConfString(line.slice('\texec.start = '.length, -1));
      expect(command).toBe(execStartCommand(argv, dir, spec.env)._unsafeUnwrap());
      execFileSync('sh', ['-c', `${command}\nwait`], { stdio: 'ignore' });
      // The program was started in the background; wait for its file.
      for (let i = 0; i < 100 && !existsSync(out); i++) execFileSync('sleep', ['0.05']);
      expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual({ argv: args, cwd: dir, motd: `hi "$USER"\n` });
    });
  });

  it('execStartCommand refuses an env name that is not portable, so it never becomes shell text', () => {
    const refused = execStartCommand(['/bin/x'], '/', { 'A=1; touch /tmp/PWN; B': 'v' });
    expect(refused._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    expect(refused._unsafeUnwrapErr().issues.map((i) => i.path)).toEqual(['env.A=1; touch /tmp/PWN; B']);
    for (const name of ['1A', 'A-B', 'A B', '', 'A\nB', '$(id)']) expect(execStartCommand(['/bin/x'], '/', { [name]: 'v' }).isErr(), name).toBe(true);
    expect(execStartCommand(['/bin/x'], '/../etc').isErr()).toBe(true);
    // Values are single-quoted: shell syntax in them is only text.
    expect(execStartCommand(['/bin/x'], '/', { A: "'; touch /tmp/PWN; '" })._unsafeUnwrap()).toBe(`export A=''\\''; touch /tmp/PWN; '\\'''; cd / && exec /bin/x </dev/null &`);
  });

  it('exec.start gives hostile env values to the program verbatim and runs nothing else', () => {
    const dir = mkdtempSync(join(tmpdir(), 'apm-jail-env-'));
    try {
      const out = join(dir, 'env.json');
      const pwn = join(dir, 'PWN');
      const value = `'; touch ${pwn}; ' $(touch ${pwn}) \`touch ${pwn}\` "\n\\`;
      const argv = [process.execPath, '-e', `require('fs').writeFileSync(process.argv[1], JSON.stringify(process.env.EVIL))`, out];
      const command = execStartCommand(argv, dir, { EVIL: value })._unsafeUnwrap();
      execFileSync('sh', ['-c', `${command}\nwait`], { stdio: 'ignore' });
      for (let i = 0; i < 100 && !existsSync(out); i++) execFileSync('sleep', ['0.05']);
      expect(JSON.parse(readFileSync(out, 'utf8'))).toBe(value);
      expect(existsSync(pwn)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses unsafe specs: devfs ruleset 0, a numeric or dotted name, NUL, a relative cwd', () => {
    const good: JailConfSpec = { name: 'apserver', path: '/j/r', network: { mode: 'none' }, argv: ['/bin/x'], cwd: '/', jailUser: 'www', consoleLog: '/j/log' };
    expect(renderJailConf(good).isOk()).toBe(true);
    const bad: Array<[Partial<JailConfSpec>, string]> = [
      [{ devfsRuleset: 0 }, 'devfsRuleset'],
      [{ name: '42' }, 'name'],
      [{ name: 'a.b' }, 'name'],
      [{ argv: ['/bin/x', 'a\0b'] }, 'argv.1'],
      [{ cwd: 'relative' }, 'cwd'],
      [{ path: '/' }, 'path'],
      [{ network: { mode: 'ip4', interface: 'em0', addresses: ['192.0.2.300'] } }, 'network.addresses.0'],
      [{ env: { 'BAD-NAME': 'x' } }, 'env.BAD-NAME'],
    ];
    for (const [change, path] of bad) {
      const error = renderJailConf({ ...good, ...change })._unsafeUnwrapErr();
      expect(error.code).toBe('INVALID_INPUT');
      expect(error.issues.map((i) => i.path)).toContain(path);
    }
    // Values of the wrong type are refused too, never thrown on.
    const loose = (v: unknown) => v as never;
    expect(renderJailConf(loose(null))._unsafeUnwrapErr().issues.map((i) => i.path)).toEqual(['']);
    expect(renderJailConf(loose({}))._unsafeUnwrapErr().issues.map((i) => i.path)).toEqual(expect.arrayContaining(['name', 'path', 'argv', 'cwd', 'jailUser', 'network']));
    expect(renderJailConf({ ...good, network: loose({ mode: 'ip4', interface: 'em0', addresses: 'x' }) })._unsafeUnwrapErr().issues.map((i) => i.path)).toContain('network.addresses');
    expect(execStartCommand(loose(null), '/')._unsafeUnwrapErr().issues.map((i) => i.path)).toContain('argv');
    expect(execStartCommand(['/bin/x'], '/', loose([]))._unsafeUnwrapErr().issues.map((i) => i.path)).toContain('env');
  });
});

describe('thin and thick jail bundles', () => {
  const profile = profileOf(BASE_PROFILE);

  it('thin: program, files and libraries; the base is not sent', () => {
    const thin = jailBundleContents(profile);
    expect(thin.kind).toBe('thin');
    expect(thin.selection).toEqual({ includeSharedLibraries: true });
    expect(thin.extraTrees).toEqual([]);
    expect(thin.estimate.baseSource).toBe('not-sent');
    // The libraries (about 2 MB) are in it.
    expect(thin.estimate.totalBytes).toBeGreaterThan(1_912_536 + 123_456);
    expect(thin.planOptions.destination.provides).toEqual(['freebsd-base-userland']);
  });

  it('thick: the base trees, at the paper default unless measured, and says which', () => {
    const byDefault = jailBundleContents(profile, { thick: true });
    expect(byDefault.extraTrees).toEqual([...FREEBSD_BASE_DIRS]);
    expect(byDefault.estimate).toMatchObject({ baseBytes: PAPER_JAIL_BASE_BYTES, baseSource: 'paper-default' });
    expect(byDefault.estimate.note).toContain('1108 MB');
    const measured = parseDuSk(fixture('jail', 'du-sk-base.txt'), '', FREEBSD_BASE_DIRS);
    if (measured instanceof Error) throw measured;
    const thick = jailBundleContents(profile, { thick: true, measuredBaseBytes: measured.bytes });
    expect(thick.estimate).toMatchObject({ baseBytes: 791_580 * 1024, baseSource: 'measured' });
    expect(thick.estimate.note).toContain('measured at 773 MB');
    expect(thick.planOptions.sizes).toEqual({ 'jail-base-userland': 791_580 * 1024 });
    // Libraries travel inside /lib and /usr/lib, not twice.
    expect(thick.selection).toEqual({ includeSharedLibraries: false });
  });

  it('measureFreeBsdBase runs du -sk over the base dirs and tolerates a missing one', async () => {
    const lines = fixture('jail', 'du-sk-base.txt').split('\n').filter((l) => !l.endsWith('/usr/share/misc')).join('\n');
    const source = createScriptedTransport({ root: '/', rules: [{ match: ['du', '-sk'], reply: { code: 1, stdout: lines, stderr: 'du: /usr/share/misc: No such file or directory\n' } }] });
    const result = (await measureFreeBsdBase(source))._unsafeUnwrap();
    expect(source.calls[0]).toEqual({ op: 'exec', argv: ['du', '-sk', '--', ...FREEBSD_BASE_DIRS] });
    expect(result.missing).toEqual(['/usr/share/misc']);
    expect(result.bytes).toBe((791_580 - 3164) * 1024);
    expect(parseDuSk('garbage\n', '', ['/bin'])).toMatchObject({ code: 'PARSE_FAILED' });
  });
});
