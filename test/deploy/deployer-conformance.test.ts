/**
 * Every deployer passes the deployer conformance suite (test/conformance/deployer-suite.ts):
 *
 * - chroot and linux-namespaces for real, on this machine with the local transport (as root): a
 *   fixture program is packed by the deployer's own packager, received by the real receiver and
 *   started; "nothing behind" means no install or staging directory, no process rooted in or
 *   naming the destination, no network namespace or veth of the migration.
 * - freebsd-jail on a simulated FreeBSD host (test/fixtures/jail/freebsd-host.ts): "nothing
 *   behind" means rollback ran exactly the rollback script with this migration's name, config and
 *   directory, then exactly the undo steps activation named (its epair), and the host's state
 *   holds no jail, epair, file or directory of it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, expect } from 'vitest';
import { planMigration } from '../../src/policy/plan.js';
import { ResourceProfileSchema, type ResourceProfile, type ResourceProfileInput } from '../../src/policy/profile.js';
import type { DeployContext, Deployer, DeploymentState } from '../../src/spec/deployer.js';
import { createExecutorSource } from '../../src/source/executor-source.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createChrootDeployer } from '../../src/methods/chroot/deployer.js';
import { createNamespacesDeployer, namespaceNames } from '../../src/methods/linux-namespaces/deployer.js';
import { createJailDeployer, JAIL_ROLLBACK_SCRIPT, jailPaths, type JailFacts } from '../../src/methods/freebsd-jail/deployer.js';
import { deployerConformance, type DestinationCall, type DestinationUnderTest, type PayloadSource } from '../conformance/deployer-suite.js';
import { createSimulatedFreeBsdHost } from '../fixtures/jail/freebsd-host.js';
import { demoBinary } from '../helpers/demo-programs.js';
import { fixtureBinary } from '../helpers/fixtures.js';

// ---------------------------------------------------------------------------------------------
// Payloads

/** Payloads from one bundle's bytes: whole, its first half, and its first half with no end. */
function bundlePayloads(bytes: Buffer): PayloadSource<Readable> {
  const half = bytes.subarray(0, Math.floor(bytes.length / 2));
  return {
    whole: () => Readable.from([bytes]),
    truncated: () => Readable.from([half]),
    stalled: () => {
      const stream = new Readable({ read() {} });
      stream.push(half);
      return stream;
    },
  };
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The bundle the deployer's own packager makes of the context's program on this machine (packed once per profile). */
const packed = new WeakMap<ResourceProfile, Promise<Buffer>>();
function packLocally(deployer: Deployer<Readable, unknown>, context: DeployContext): Promise<Buffer> {
  let bytes = packed.get(context.profile);
  if (!bytes) {
    bytes = (async () => {
      const request = { profile: context.profile, plan: context.plan, source: createExecutorSource() };
      const estimate = (await deployer.packager.estimate(request))._unsafeUnwrap();
      const bundle = (await deployer.packager.pack(request, estimate))._unsafeUnwrap();
      const [data, done] = await Promise.all([collect(bundle.payload), bundle.done]);
      done._unsafeUnwrap();
      return data;
    })();
    packed.set(context.profile, bytes);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Real programs on this machine

/** This machine's platform, as a profile says it. */
function linuxPlatform() {
  return { os: 'linux', release: execFileSync('uname', ['-r']).toString().trim(), arch: execFileSync('uname', ['-m']).toString().trim() };
}

/** The shared libraries `ldd` lists for `exe`, as profile entries. */
function librariesOf(exe: string): NonNullable<ResourceProfileInput['files']> {
  const paths = execFileSync('ldd', [exe]).toString().split('\n').map((l) => /(\/\S+) \(0x/.exec(l)?.[1]).filter((p): p is string => !!p);
  return [...new Set(paths)].map((path) => ({ path, kind: 'regular' as const, access: ['read', 'exec'] as ('read' | 'exec')[], size: statSync(path).size, sharedLibrary: true }));
}

/** The files_only fixture, holding its files for ten minutes: a program that uses files only (chroot). */
function filesOnlyProgram(work: string) {
  const exe = fixtureBinary('files_only');
  const data = join(work, 'data');
  mkdirSync(data, { recursive: true });
  writeFileSync(join(data, 'input.txt'), 'ground truth\n');
  const created = (name: string) => ({ path: join(data, name), kind: 'regular' as const, access: ['write'] as 'write'[], size: 0, created: true });
  const profile = ResourceProfileSchema.parse({
    executable: exe,
    executableSize: statSync(exe).size,
    argv: [exe, data, '600000'],
    cwd: '/',
    uid: 0,
    gid: 0,
    platform: linuxPlatform(),
    files: [{ path: join(data, 'input.txt'), kind: 'regular', access: ['read'], size: 13 }, created('output.txt'), created('relative.txt'), created('at.txt'), ...librariesOf(exe)],
  } satisfies ResourceProfileInput);
  const plan = planMigration(profile)._unsafeUnwrap();
  expect(plan.chosen).toBe('chroot');
  return { profile, plan };
}

/** The echod demo on port 7412: files and a listening socket (linux-namespaces). */
function tcpProgram(work: string) {
  const exe = demoBinary('echod');
  const greeting = join(work, 'greeting.txt');
  mkdirSync(work, { recursive: true });
  writeFileSync(greeting, 'hello from the conformance suite\n');
  const profile = ResourceProfileSchema.parse({
    executable: exe,
    executableSize: statSync(exe).size,
    argv: [exe, '7412', greeting],
    cwd: '/',
    uid: 0,
    gid: 0,
    platform: linuxPlatform(),
    files: [{ path: greeting, kind: 'regular', access: ['read'], size: statSync(greeting).size }, ...librariesOf(exe)],
    sockets: [{ family: 'inet', protocol: 'tcp', localAddress: '0.0.0.0', localPort: 7412, listening: true }],
  } satisfies ResourceProfileInput);
  const plan = planMigration(profile)._unsafeUnwrap();
  expect(plan.chosen).toBe('linux-namespaces');
  return { profile, plan };
}

/** Live processes (zombies excluded) rooted under `dir` or naming it in their command line. */
function processesUnder(dir: string): Array<{ pid: number; what: string }> {
  const found: Array<{ pid: number; what: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const root = readlinkSync(`/proc/${entry}/root`);
      if (cmdline.includes(dir) || root.startsWith(dir)) found.push({ pid: Number(entry), what: `${cmdline.slice(0, 200)} (root ${root})` });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/** Whether `pid` is alive (a zombie is not). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Network namespaces and links of the migration `name` that exist now (read where `ip` keeps them, not parsed from its output). */
function namespaceThings(name: string): string[] {
  const { netns, hostVeth } = namespaceNames(name);
  return [...(existsSync(`/run/netns/${netns}`) ? [`netns ${netns}`] : []), ...(existsSync(`/sys/class/net/${hostVeth}`) ? [`link ${hostVeth}`] : [])];
}

/** Every path under `dir` (sorted), for before/after comparisons. */
function treeOf(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true }) as string[]).map(String).sort();
}

/** A destination directory on this machine, reached with the local transport. */
function localDestination(options: { namespaces: boolean }): DestinationUnderTest<Readable, undefined> {
  const base = mkdtempSync(join(tmpdir(), 'apm-conformance-dst-'));
  // Not created yet: the dry run must not create it either.
  const root = join(base, 'dst');
  const machineWide = (name: string) => (options.namespaces ? namespaceThings(name) : []);
  return {
    transport: createLocalTransport({ root }),
    payloads: async (deployer, context) => bundlePayloads(await packLocally(deployer as Deployer<Readable, unknown>, context)),
    snapshot: async (name) => JSON.stringify({ files: treeOf(base), machine: machineWide(name), processes: processesUnder(root).length }),
    expectNothingBehind: async (context, state) => {
      expect(existsSync(join(root, context.name)), `${join(root, context.name)} is left`).toBe(false);
      const work = join(root, '.ap-migrate');
      const staging = existsSync(work) ? readdirSync(work).filter((n) => n.startsWith(`staging-${context.name}-`) || n.startsWith(`resume-${context.name}`)) : [];
      expect(staging, 'staging directories or kept files left').toEqual([]);
      if (state.started) expect(alive(state.started.pid), `pid ${state.started.pid} still runs`).toBe(false);
      expect(processesUnder(join(root, context.name)), 'processes left').toEqual([]);
      expect(machineWide(context.name), 'namespaces or links left').toEqual([]);
    },
    expectRunning: async (context, state) => {
      expect(existsSync(join(root, context.name, 'root'))).toBe(true);
      expect(alive(state.started!.pid), `pid ${state.started!.pid} of ${context.name}`).toBe(true);
      if (options.namespaces) expect(machineWide(context.name)).toHaveLength(2);
    },
    dispose: async (names) => {
      for (const { pid } of processesUnder(root)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      if (options.namespaces) {
        for (const name of names) {
          const { netns, hostVeth } = namespaceNames(name);
          execFileSync('sh', ['-c', 'ip netns del "$1" 2>/dev/null; ip link del "$2" 2>/dev/null; true', 'sh', netns, hostVeth]);
        }
      }
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/** Gaps of the shared Linux destination code the suite found (not the deployers' own files). */

// The programs' source files, for the whole file.
const sources = mkdtempSync(join(tmpdir(), 'apm-conformance-src-'));
afterAll(() => rmSync(sources, { recursive: true, force: true }));
const once = <T>(make: () => T) => {
  let value: T | undefined;
  return () => (value ??= make());
};

const chrootProgram = once(() => filesOnlyProgram(join(sources, 'chroot')));
deployerConformance({
  name: 'chroot (local transport, for real)',
  requirements: ['root', 'tool:gcc', 'tool:unshare'],
  makeDeployer: () => createChrootDeployer({ allowRoot: true }),
  makeDestination: async () => localDestination({ namespaces: false }),
  program: chrootProgram,
  canRunForReal: true,
});

const namespacesProgram = once(() => tcpProgram(join(sources, 'namespaces')));
deployerConformance({
  name: 'linux-namespaces (local transport, for real)',
  requirements: ['root', 'tool:gcc', 'tool:unshare', 'tool:ip'],
  makeDeployer: () => createNamespacesDeployer({ allowRoot: true }),
  makeDestination: async () => localDestination({ namespaces: true }),
  program: namespacesProgram,
  canRunForReal: true,
  namesAreMachineWide: true,
});

// ---------------------------------------------------------------------------------------------
// freebsd-jail on a simulated host

const JAIL_ROOT = '/var/ap-migrate';
/** The bundle's last bytes: the simulated receiver accepts a bundle only when it read them. */
const BUNDLE_END = '\nMANIFEST-END\n';

const jailProgram = once(() => {
  const profile = ResourceProfileSchema.parse({
    executable: '/usr/local/bin/apserver',
    executableSize: 48_128,
    argv: ['apserver', '--data', '/var/db/apserver'],
    cwd: '/var/db/apserver',
    uid: 1001,
    gid: 1001,
    platform: { os: 'freebsd', release: '13.2-RELEASE', arch: 'amd64' },
    files: [
      { path: '/var/db/apserver/notes.db', kind: 'regular', access: ['read', 'write'], size: 1200 },
      { path: '/lib/libc.so.7', kind: 'regular', access: ['read', 'exec'], size: 1_912_536, sharedLibrary: true },
      { path: '/var/log/apserver/apserver.log', kind: 'regular', access: ['write'], size: 0, created: true },
    ],
    sockets: [{ family: 'inet', protocol: 'tcp', localPort: 8080, listening: true }],
  } satisfies ResourceProfileInput);
  const plan = planMigration(profile, {
    destination: { platform: { os: 'freebsd', release: '13.2-RELEASE', arch: 'amd64' }, provides: ['freebsd-base-userland'] },
    allowedMethods: ['freebsd-jail'],
  })._unsafeUnwrap();
  return { profile, plan };
});

/** The rollback's exact commands for `state`: the script with name, config and directory, then activation's undo steps. */
function expectedJailRollback(context: DeployContext, state: DeploymentState<JailFacts>): DestinationCall[] {
  const install = state.activated?.installDir;
  const resume = `${JAIL_ROOT}/.ap-migrate/resume-${context.name}`;
  const kept = [resume, `${resume}.journal.json`];
  const args = install ? [context.name, jailPaths(install).conf, install, ...kept] : [context.name, '', state.staged?.stagingDir ?? state.preflight!.stagingDir, ...kept];
  return [{ op: 'exec', argv: ['sh', '-c', JAIL_ROLLBACK_SCRIPT, 'ap-migrate', ...args] }, ...(state.activated?.undo ?? []).map((argv): DestinationCall => ({ op: 'exec', argv }))];
}

let epairUnits = 0;
function simulatedJailDestination(): DestinationUnderTest<Readable, JailFacts> {
  // Each host hands out other epair units and jids, so a mix-up between two hosts shows.
  const first = (epairUnits += 10);
  const host = createSimulatedFreeBsdHost({ root: JAIL_ROOT, firstEpair: first, firstJid: first, listening: [8080], acceptsBundle: (stdin) => stdin.endsWith(BUNDLE_END) });
  const bundle = Buffer.from(`${'tar entries '.repeat(500)}${BUNDLE_END}`);
  const payloads = bundlePayloads(bundle);
  return {
    transport: host.transport,
    payloads: async () => payloads,
    snapshot: async () => host.snapshot(),
    expectNothingBehind: async (context, state, rollbackCalls) => {
      expect(rollbackCalls).toEqual(expectedJailRollback(context, state));
      expect(host.state.jails.has(context.name), `jail ${context.name} is left`).toBe(false);
      expect([...host.state.epairs], 'epairs left').toEqual([]);
      expect([...host.state.files.keys()], 'files left').toEqual([]);
      expect([...host.state.dirs], 'directories left').toEqual(host.state.dirs.size ? [`${JAIL_ROOT}/.ap-migrate`] : []);
      expect(host.transport.unmatched).toEqual([]);
    },
    expectRunning: async (context, state) => {
      expect(host.state.jails.get(context.name)?.pid).toBe(state.started!.pid);
      expect(host.state.dirs.has(state.activated!.installDir)).toBe(true);
      expect(state.activated!.undo.every(([, epair]) => host.state.epairs.has(epair!))).toBe(true);
    },
    dispose: async () => undefined,
  };
}

deployerConformance({
  name: 'freebsd-jail (VNET, simulated FreeBSD host)',
  makeDeployer: () => createJailDeployer({ network: { mode: 'vnet' }, settleMs: 0, healthPollMs: 10, healthTimeoutMs: 300 }),
  makeDestination: async () => simulatedJailDestination(),
  program: jailProgram,
  canRunForReal: false,
});
