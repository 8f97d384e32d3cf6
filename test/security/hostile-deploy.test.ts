/**
 * The hostile-input corpus: a compromised program on the source, or a tampered profile or bundle,
 * fed to the real chroot and linux-namespaces deployers as root, locally and over SSH. Each case
 * is a real bundle (packed by the real packer from a crafted source tree) and a profile; each must
 * end in its typed error or a harmless result, and afterwards nothing on the host outside the
 * install directory has changed (modes, owners, contents and mounts of sentinel paths), nothing
 * of the case is mounted or running, and the destination holds nothing of it. Locally the root is
 * built by the receive (as `migrate()` asks for its last round), over SSH by activate.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBundleStream } from '../../src/bundle/pack.js';
import { createChrootDeployer } from '../../src/methods/chroot/deployer.js';
import { createNamespacesDeployer } from '../../src/methods/linux-namespaces/deployer.js';
import { planMigration } from '../../src/policy/plan.js';
import { ResourceProfileSchema, type ResourceProfile, type ResourceProfileInput } from '../../src/policy/profile.js';
import type { Deployer, DeploymentState, DeployContext } from '../../src/spec/deployer.js';
import type { Transport } from '../../src/spec/transport.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const run = randomBytes(3).toString('hex');
/** The probe's name inside every root: unique to this run, so the leak check sees only ours. */
const PROBE = `/app/apmprobe${run}`;

/** Host paths a hostile bundle aims at. */
interface Victims {
  dir: string;
  mnt: string;
}

/** What one hostile case is, and how it must end. */
interface HostileCase {
  name: string;
  /** Change the source tree the bundle is packed from (`src` stands for the source's `/`). */
  tree?: (src: string, v: Victims) => void;
  /** Change the profile. */
  profile?: (p: ResourceProfileInput, v: Victims) => ResourceProfileInput;
  /** The schema refuses this profile; the deployer is then fed it raw, as a caller bypassing planMigration would. */
  schemaRefuses?: boolean;
  allowRoot?: boolean;
  /** The typed error expected (from pre-flight, receive or activate), or a check of the program's own report. */
  expect: { code: string; message?: RegExp } | { runs: (report: string, root: string, v: Victims) => void };
  /** Also run over SSH. */
  ssh?: boolean;
  /**
   * Rename entries in the packed bundle (and its manifest), e.g. `QQproc` -> `proc`: the packer
   * never carries pseudo file systems, but a tampered bundle can, so the case packs a stand-in.
   */
  renames?: Record<string, string>;
}

const link = (src: string, path: string, target: string) => {
  mkdirSync(join(src, path, '..'), { recursive: true });
  symlinkSync(target, join(src, path));
};
const use = (path: string, kind: 'regular' | 'symlink' | 'directory' = 'symlink') => ({ path, kind, access: ['read' as const], size: 0 });
const withFiles = (...files: ReturnType<typeof use>[]) => (p: ResourceProfileInput): ResourceProfileInput => ({ ...p, files: [...(p.files ?? []), ...files] });
const withEnv = (env: Record<string, string>) => (p: ResourceProfileInput): ResourceProfileInput => ({ ...p, env: { PATH: '/bin', ...env } });
const refused = (code: string, message?: RegExp) => ({ code, ...(message ? { message } : {}) });

const CASES: HostileCase[] = [
  // The six of the issue.
  { name: 'root/tmp -> host dir (chmod 1777 would follow it)', ssh: true, tree: (s, v) => link(s, 'tmp', v.dir), profile: withFiles(use('/tmp')), expect: refused('UNSAFE_BUNDLE', /\/tmp/) },
  {
    name: 'root/usr -> host dir (library copies would write through it)',
    tree: (s, v) => link(s, 'usr', v.dir),
    profile: withFiles(use('/usr')),
    expect: { runs: (r) => expect(r).toContain('uid=65534') },
  },
  {
    name: 'root/proc -> host tmpfs mount (mount would follow it)',
    ssh: true,
    tree: (s, v) => link(s, 'QQproc', v.mnt),
    profile: withFiles(use('/QQproc'), use('/proc/self/status', 'regular')),
    renames: { QQproc: 'proc' },
    expect: refused('UNSAFE_BUNDLE', /\/proc/),
  },
  {
    name: 'root/proc -> host mount and a program that exits at once (rollback would unmount the host mount)',
    tree: (s, v) => link(s, 'QQproc', v.mnt),
    profile: (p) => ({ ...withFiles(use('/QQproc'), use('/proc/self/status', 'regular'))(p), argv: ['/app/false'], executable: '/app/false' }),
    renames: { QQproc: 'proc' },
    expect: refused('UNSAFE_BUNDLE'),
  },
  { name: 'env key "--split-string" with a shell command', ssh: true, schemaRefuses: true, profile: withEnv({ '--split-string': "sh -c 'id > /var/tmp/apm-pwned' sh" }), expect: refused('UNSAFE_PROFILE', /env/) },
  {
    name: 'PATH into the root plus a bundled root/bin/unshare',
    ssh: true,
    tree: (s, v) => {
      mkdirSync(join(s, 'bin'), { recursive: true });
      writeFileSync(join(s, 'bin/unshare'), `#!/bin/sh\nid > ${v.dir}/pwned-unshare\n`, { mode: 0o755 });
    },
    profile: (p) => ({ ...withFiles(use('/bin/unshare', 'regular'))(p), env: { PATH: '/bin' } }),
    expect: { runs: (r, _root, v) => (expect(r).toContain('env:PATH=/bin'), expect(existsSync(join(v.dir, 'pwned-unshare'))).toBe(false)) },
  },
  { name: 'cwd /../../../ escapes the root', schemaRefuses: true, profile: (p) => ({ ...p, cwd: '/../../../var/tmp/apm-escape' }), expect: refused('UNSAFE_PROFILE', /cwd/) },
  {
    name: 'files[].created /../../../ escapes the root',
    schemaRefuses: true,
    profile: (p) => ({ ...p, files: [...(p.files ?? []), { path: '/../../../var/tmp/apm-escape/x', kind: 'regular', access: ['write'], size: 0, created: true }] }),
    expect: refused('UNSAFE_PROFILE', /files/),
  },
  {
    name: 'a crafted ELF whose interpreter is /etc/shadow (ldd would have run or followed it)',
    tree: (s) => execFileSync('gcc', ['-O1', '-o', join(s, 'app/shadowinterp'), 'test/security/hostile-probe.c', '-Wl,--dynamic-linker=/etc/shadow']),
    profile: (p) => ({ ...p, executable: '/app/shadowinterp', argv: ['/app/shadowinterp'], files: [...(p.files ?? []), use('/app/shadowinterp', 'regular')] }),
    expect: refused('HEALTH_CHECK_FAILED'),
  },
  // More of our own.
  { name: 'profile names /etc/shadow as a shared library', profile: (p) => ({ ...p, files: [...(p.files ?? []), { path: '/etc/shadow', kind: 'regular', access: ['read'], size: 0, sharedLibrary: true }] }), expect: { runs: (_r, root) => expect(existsSync(join(root, 'etc/shadow'))).toBe(false) } },
  { name: 'root/dev -> host dir (mknod would follow it)', tree: (s, v) => link(s, 'QQdev', v.dir), profile: withFiles(use('/QQdev')), renames: { QQdev: 'dev' }, expect: refused('UNSAFE_BUNDLE', /\/dev/) },
  {
    name: 'root/dev/shm -> host dir',
    tree: (s, v) => link(s, 'QQdev/QQshm', v.dir),
    profile: withFiles(use('/QQdev/QQshm')),
    renames: { QQdev: 'dev', QQshm: 'shm' },
    expect: refused('UNSAFE_BUNDLE', /\/dev\/shm/),
  },
  { name: 'root/.ap-migrate (the wrapper directory) in the bundle', tree: (s) => (mkdirSync(join(s, '.ap-migrate')), writeFileSync(join(s, '.ap-migrate/env'), 'x')), profile: withFiles(use('/.ap-migrate/env', 'regular')), expect: refused('UNSAFE_BUNDLE', /\.ap-migrate/) },
  {
    name: 'root/dev/null -> a host file',
    tree: (s, v) => link(s, 'QQdev/null', join(v.dir, 'sentinel')),
    profile: withFiles(use('/QQdev/null')),
    renames: { QQdev: 'dev' },
    expect: { runs: (_r, root) => expect(lstatSync(join(root, 'dev/null')).isCharacterDevice()).toBe(true) },
  },
  {
    name: 'a link in the cwd chain (root/srv -> host dir, cwd /srv/work)',
    ssh: true,
    tree: (s, v) => link(s, 'srv', v.dir),
    profile: (p) => ({ ...withFiles(use('/srv'))(p), cwd: '/srv/work' }),
    // The link is followed inside the root, as the kernel does for the chrooted program.
    expect: { runs: (r, root, v) => (expect(r).toContain(`cwd=${v.dir}/work`), expect(existsSync(join(root, v.dir, 'work'))).toBe(true)) },
  },
  {
    name: 'a link in a created file\'s directory chain (root/data -> host dir)',
    tree: (s, v) => link(s, 'data', v.dir),
    profile: (p) => ({ ...p, files: [...(p.files ?? []), use('/data'), { path: '/data/logs/out.log', kind: 'regular', access: ['write'], size: 0, created: true }] }),
    expect: { runs: (_r, root, v) => expect(existsSync(join(root, v.dir, 'logs'))).toBe(true) },
  },
  {
    name: 'a relative link that climbs above the root (root/srv -> ../../../../..<host dir>)',
    tree: (s, v) => link(s, 'srv', `../../../../../../..${v.dir}`),
    profile: (p) => ({ ...withFiles(use('/srv'))(p), cwd: '/srv/deeper' }),
    expect: refused('BUNDLE_UNSAFE_ENTRY', /outside the root/),
  },
  { name: 'a link loop in the cwd chain', tree: (s) => (link(s, 'a', 'b'), link(s, 'b', 'a')), profile: (p) => ({ ...withFiles(use('/a'), use('/b'))(p), cwd: '/a/x' }), expect: refused('BUNDLE_UNSAFE_ENTRY') },
  {
    name: 'root/lib64 -> /etc (the loader copy would write into /etc)',
    tree: (s) => link(s, 'lib64', '/etc'),
    profile: withFiles(use('/lib64')),
    expect: { runs: (r, root) => (expect(r).toContain('uid=65534'), expect(existsSync(join(root, 'etc/ld-linux-x86-64.so.2'))).toBe(true)) },
  },
  { name: 'env name with "="', schemaRefuses: true, profile: withEnv({ 'A=B': 'x' }), expect: refused('UNSAFE_PROFILE') },
  { name: 'env name starting with "-"', schemaRefuses: true, profile: withEnv({ '-i': 'x' }), expect: refused('UNSAFE_PROFILE') },
  { name: 'env name with a newline', schemaRefuses: true, profile: withEnv({ 'A\nB': 'x' }), expect: refused('UNSAFE_PROFILE') },
  { name: 'env name with NUL', schemaRefuses: true, profile: withEnv({ 'A\0B': 'x' }), expect: refused('UNSAFE_PROFILE') },
  { name: 'env name starting with a digit', schemaRefuses: true, profile: withEnv({ '1A': 'x' }), expect: refused('UNSAFE_PROFILE') },
  { name: 'env value with NUL', schemaRefuses: true, profile: withEnv({ A: 'x\0y' }), expect: refused('UNSAFE_PROFILE') },
  { name: 'env value of 200 KiB', schemaRefuses: true, profile: withEnv({ A: 'x'.repeat(200 * 1024) }), expect: refused('UNSAFE_PROFILE') },
  { name: '1100 env values of 1 KiB (over 1 MiB in all)', schemaRefuses: true, profile: withEnv(Object.fromEntries(Array.from({ length: 1100 }, (_, i) => [`V${i}`, 'x'.repeat(1024)]))), expect: refused('UNSAFE_PROFILE') },
  {
    name: 'LD_PRELOAD of a host library outside the root',
    ssh: true,
    profile: (p, v) => withEnv({ LD_PRELOAD: join(v.dir, 'evil.so'), APM_EVIL_MARK: join(v.dir, 'pwned-preload') })(p),
    expect: { runs: (r, _root, v) => (expect(r).toContain('uid=65534'), expect(existsSync(join(v.dir, 'pwned-preload'))).toBe(false)) },
  },
  {
    name: 'LD_PRELOAD of a library inside the bundle runs only as the program, inside its root',
    tree: (s) => execFileSync('gcc', ['-shared', '-fPIC', '-o', join(s, 'app/evil.so'), 'test/security/evil-preload.c']),
    profile: (p) => ({ ...withEnv({ LD_PRELOAD: '/app/evil.so', APM_EVIL_MARK: '/tmp/mark' })(p), files: [...(p.files ?? []), use('/app/evil.so', 'regular')] }),
    expect: { runs: (_r, root) => expect(readFileSync(join(root, 'tmp/mark'), 'utf8')).toBe('uid=65534\n') },
  },
  {
    name: 'LD_LIBRARY_PATH pointing at a host directory',
    profile: (p, v) => withEnv({ LD_LIBRARY_PATH: v.dir })(p),
    expect: { runs: (r, _root, v) => (expect(r).toContain(`env:LD_LIBRARY_PATH=${v.dir}`), expect(r).toContain('uid=65534')) },
  },
  {
    name: 'the program cannot see host paths from its root',
    profile: (p, v) => ({ ...p, argv: [PROBE, join(v.dir, 'sentinel')] }),
    expect: { runs: (r, _root, v) => expect(r).toContain(`visible=${join(v.dir, 'sentinel')}:0`) },
  },
  { name: 'uid 0 in the profile without allowRoot', ssh: true, profile: (p) => ({ ...p, uid: 0 }), expect: refused('UNSAFE_PROFILE', /uid is 0/) },
  { name: 'gid 0 in the profile without allowRoot', profile: (p) => ({ ...p, gid: 0 }), expect: refused('UNSAFE_PROFILE', /gid is 0/) },
  { name: 'uid 0 with allowRoot runs as root (the caller said so)', allowRoot: true, profile: (p) => ({ ...p, uid: 0, gid: 0 }), expect: { runs: (r) => expect(r).toContain('uid=0') } },
  { name: 'uid -1', schemaRefuses: true, profile: (p) => ({ ...p, uid: -1 }), expect: refused('UNSAFE_PROFILE', /uid/) },
  { name: 'gid 2^32', schemaRefuses: true,  profile: (p) => ({ ...p, gid: 2 ** 32 }), expect: refused('UNSAFE_PROFILE', /gid/) },
  { name: 'executable with ".."', schemaRefuses: true, profile: (p) => ({ ...p, executable: '/app/../../usr/bin/id' }), expect: refused('UNSAFE_PROFILE', /executable/) },
  { name: 'relative executable', schemaRefuses: true, profile: (p) => ({ ...p, executable: 'usr/bin/id' }), expect: refused('UNSAFE_PROFILE', /executable/) },
  { name: 'executable with "=" (the wrapper would read it as an assignment)', profile: (p) => ({ ...p, executable: '/app/X=1' }), expect: refused('UNSAFE_PROFILE', /=/) },
  { name: 'argv with NUL', profile: (p) => ({ ...p, argv: [PROBE, 'a\0b'] }), expect: refused('UNSAFE_PROFILE', /argv/) },
  { name: 'a library path with ".."', schemaRefuses: true, profile: (p) => ({ ...p, files: [...(p.files ?? []), { path: '/usr/lib/../../etc/shadow', kind: 'regular', access: ['read'], size: 0, sharedLibrary: true }] }), expect: refused('UNSAFE_PROFILE', /files/) },
  { name: 'a path with NUL', schemaRefuses: true, profile: (p) => ({ ...p, files: [...(p.files ?? []), { path: '/app/a\0b', kind: 'regular', access: ['read'], size: 0, created: true }] }), expect: refused('UNSAFE_PROFILE', /NUL/) },
];

/** Modes, owners, contents of the sentinel paths, and whether the victim mount is still there. */
function snapshot(v: Victims): string {
  const lines: string[] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    const body = st.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex') : st.isSymbolicLink() ? readlinkSync(p) : '';
    lines.push(`${p} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${body}`);
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) walk(join(p, n));
  };
  walk(v.dir);
  walk(v.mnt);
  for (const p of ['/etc', '/etc/passwd', '/etc/shadow', '/var/tmp', '/tmp']) {
    const st = lstatSync(p);
    lines.push(`${p} ${st.mode.toString(8)} ${st.uid}:${st.gid}`);
  }
  lines.push(`mounted ${mountLines(v.mnt).length}`);
  // Names only: a file written into a host directory through a link is what this catches. In
  // /var/tmp, other work on the machine makes temp directories (mkdtemp's NAME-XXXXXX) while this
  // runs; nothing a deployment writes has such a name, so they are not this test's business.
  const othersTemp = (dir: string, e: string) => dir === '/var/tmp' && /^[A-Za-z0-9._-]+-[A-Za-z0-9]{6}$/.test(e);
  for (const dir of ['/etc', '/var/tmp', '/usr/lib', '/lib64']) lines.push(`${dir}: ${readdirSync(dir).filter((e) => !e.startsWith('apm-hostile-') && !othersTemp(dir, e)).sort().join(' ')}`);
  return lines.join('\n');
}

function mountLines(under: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4]?.startsWith(under));
}

/** Probes of this run still alive (a zombie is dead: it waits for a reaper this sandbox's init may be slow to run). */
function runningProbes(): string {
  try {
    return execFileSync('ps', ['-eo', 'pid,stat,args']).toString().split('\n').filter((l) => l.includes(`apmprobe${run}`) && !/^\s*\d+\s+Z/.test(l)).join('\n');
  } catch {
    return '';
  }
}

/** The bundle with names rewritten in tar headers and in the manifest, as a tampering relay would. */
function renamed(input: Readable, renames: Record<string, string>): Readable {
  const rewrite = (text: string) => Object.entries(renames).reduce((t, [from, to]) => t.split(from).join(to), text);
  const extract = tar.extract();
  const pack = tar.pack();
  extract.on('entry', (header, body, next) => {
    const chunks: Buffer[] = [];
    body.on('data', (c: unknown) => void chunks.push(c as Buffer));
    body.on('end', () => {
      let data = Buffer.concat(chunks);
      if (header.name === 'manifest.json' || header.name === 'bundle.json') data = Buffer.from(rewrite(data.toString('utf8')));
      const out = { ...header, name: rewrite(header.name), size: data.length, ...(header.linkname ? { linkname: header.linkname } : {}) };
      pack.entry(out, data, next);
    });
  });
  extract.on('finish', () => pack.finalize());
  extract.on('error', (e) => pack.destroy(e));
  input.pipe(extract);
  return pack as unknown as Readable;
}

/** Drive one deployer through the phases `migrate()` runs, with rollback on failure (and after a run). */
async function deployCase(
  deployer: Deployer<Readable, unknown>,
  context: DeployContext,
  sourceRoot: string,
  renames: Record<string, string>,
  whileRunning: (report: string, root: string) => void,
  activateNext: boolean,
): Promise<{ code?: string; message?: string; report?: string }> {
  const state: DeploymentState = {};
  const outcome = await (async () => {
    const pre = await deployer.preflight(context, 1024 * 1024);
    if (pre.isErr()) return { code: pre.error.code, message: pre.error.message };
    state.preflight = pre.value;
    // Packed with a plain cwd: the packer resolves the cwd chain itself (and refuses a loop at the
    // source); the deployer gets the case's profile, as from a tampered relay.
    const bundle = createBundleStream({ ...context.profile, cwd: '/app' }, { includeSharedLibraries: false, sourceRoot, followSymlinks: false, plan: context.plan });
    if (bundle.isErr()) return { code: bundle.error.code, message: bundle.error.message };
    const stream = Object.keys(renames).length ? renamed(bundle.value.stream, renames) : bundle.value.stream;
    const [staged, packed] = await Promise.all([deployer.receive(context, pre.value, stream, undefined, activateNext ? { activateNext } : {}), bundle.value.report]);
    if (staged.isErr()) return { code: staged.error.code, message: staged.error.message };
    if (packed.isErr()) return { code: packed.error.code, message: packed.error.message };
    state.staged = staged.value;
    const activated = await deployer.activate(context, pre.value, staged.value);
    if (activated.isErr()) return { code: activated.error.code, message: activated.error.message };
    state.activated = activated.value;
    delete state.staged;
    const started = await deployer.start(context, activated.value);
    if (started.isErr()) return { code: started.error.code, message: started.error.message };
    state.started = started.value;
    const healthy = await deployer.healthCheck(context, started.value);
    if (healthy.isErr()) return { code: healthy.error.code, message: healthy.error.message };
    const reportPath = join(activated.value.rootDir, 'tmp/probe.out');
    for (let i = 0; i < 50 && !existsSync(reportPath); i++) await new Promise((r) => setTimeout(r, 100));
    const report = existsSync(reportPath) ? readFileSync(reportPath, 'utf8') : '(no report)';
    try {
      whileRunning(report, activated.value.rootDir);
    } catch (e) {
      return { report, failure: e };
    }
    return { report };
  })();
  (await deployer.rollback(context, state))._unsafeUnwrap();
  if ('failure' in outcome) throw outcome.failure;
  return outcome;
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:ip', 'tool:sshd'))('a hostile program cannot take over the destination host', () => {
  let work: string;
  let victims: Victims;
  let probeBinary: string;
  let before: string;
  let sshd: TestSshd | undefined;
  let sshTransport: Transport | undefined;
  let n = 0;

  beforeAll(async () => {
    work = mkdtempSync('/var/tmp/apm-hostile-');
    chmodSync(work, 0o755);
    victims = { dir: join(work, 'victim'), mnt: join(work, 'victim-mnt') };
    mkdirSync(victims.dir, { mode: 0o755 });
    chmodSync(victims.dir, 0o755);
    writeFileSync(join(victims.dir, 'sentinel'), 'untouched\n', { mode: 0o644 });
    execFileSync('gcc', ['-shared', '-fPIC', '-o', join(victims.dir, 'evil.so'), 'test/security/evil-preload.c']);
    mkdirSync(victims.mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0755', `apm-victim-${run}`, victims.mnt]);
    writeFileSync(join(victims.mnt, 'sentinel'), 'on the host tmpfs\n');
    probeBinary = join(work, 'probe');
    execFileSync('gcc', ['-O1', '-o', probeBinary, 'test/security/hostile-probe.c']);
    before = snapshot(victims);
    sshd = await startSshd();
    mkdirSync(join(work, 'dst-ssh'));
    sshTransport = (
      await createOpenSshTransport({ host: sshd.host, port: sshd.port, username: 'root', identityFile: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath, root: join(work, 'dst-ssh') })
    )._unsafeUnwrap();
  });

  afterAll(async () => {
    await sshTransport?.close();
    await sshd?.stop();
    try {
      execFileSync('umount', ['-l', victims.mnt]);
    } catch {
      // a failed case already unmounted it: the assertions said so
    }
    rmSync(work, { recursive: true, force: true });
  });

  /** A fresh source tree with the probe and a data file, and the profile a profiler would report for it. */
  function source(c: HostileCase): { src: string; profile: ResourceProfileInput } {
    const src = join(work, `src-${++n}`);
    mkdirSync(join(src, 'app'), { recursive: true });
    copyFileSync(probeBinary, join(src, PROBE));
    chmodSync(join(src, PROBE), 0o755);
    writeFileSync(join(src, 'app/data.txt'), 'data\n');
    copyFileSync('/bin/false', join(src, 'app/false'));
    c.tree?.(src, victims);
    const base: ResourceProfileInput = {
      executable: PROBE,
      argv: [PROBE],
      cwd: '/app',
      uid: 65534,
      gid: 65534,
      platform: { os: 'linux', release: execFileSync('uname', ['-r']).toString().trim(), arch: execFileSync('uname', ['-m']).toString().trim() },
      files: [use(PROBE, 'regular'), use('/app/data.txt', 'regular'), use('/app/false', 'regular')],
    };
    return { src, profile: c.profile ? c.profile(base, victims) : base };
  }

  /** `activateNext`: the root is built by the receive, as `migrate()` asks for its last round; else by activate. */
  async function attempt(c: HostileCase, method: 'chroot' | 'linux-namespaces', transport: Transport, activateNext: boolean): Promise<void> {
    const { src, profile: input } = source(c);
    const parsed = ResourceProfileSchema.safeParse(input);
    expect(parsed.success, `the schema ${c.schemaRefuses ? 'refuses' : 'accepts'} the profile`).toBe(!c.schemaRefuses);
    if (c.schemaRefuses) {
      const plan = planMigration(input);
      expect(plan._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    }
    // A profile the schema refuses still reaches the deployer raw, as from a caller that skipped it.
    const profile = (parsed.success ? parsed.data : { files: [], sockets: [], ipc: [], processes: [], ...input }) as ResourceProfile;
    const plan = planMigration(parsed.success ? parsed.data : { ...input, env: {}, cwd: '/', executable: PROBE, uid: 1, gid: 1, argv: [PROBE], files: [] }, { allowedMethods: [method] })._unsafeUnwrap();
    const deployer = method === 'chroot' ? createChrootDeployer({ allowRoot: !!c.allowRoot, healthTimeoutMs: 3000 }) : createNamespacesDeployer({ allowRoot: !!c.allowRoot, healthTimeoutMs: 3000 });
    const name = `h${run}${n}`;
    const expected = c.expect;
    const outcome = await deployCase(deployer, { transport, profile, plan, name }, src, c.renames ?? {}, (report, root) => {
      if ('runs' in expected) expected.runs(report, root, victims);
    }, activateNext);
    if ('code' in expected) {
      expect(outcome.code, `${outcome.message ?? ''} ${outcome.report ?? ''}`).toBe(expected.code);
      if (expected.message) expect(outcome.message).toMatch(expected.message);
    } else {
      expect(outcome.code, outcome.message).toBeUndefined();
    }
    // Nothing outside the install directory changed; nothing of the case is mounted, running or left.
    expect(snapshot(victims)).toBe(before);
    expect(mountLines(join(work, 'dst'))).toEqual([]);
    expect(mountLines(join(work, 'dst-ssh'))).toEqual([]);
    expect(runningProbes()).toBe('');
    expect(execFileSync('ip', ['netns', 'list']).toString()).not.toContain(`apm-${name}`);
    for (const dst of [join(work, 'dst'), join(work, 'dst-ssh')]) {
      if (!existsSync(dst)) continue;
      expect(readdirSync(dst).filter((e) => e !== '.ap-migrate')).toEqual([]);
      if (existsSync(join(dst, '.ap-migrate'))) expect(readdirSync(join(dst, '.ap-migrate')).filter((e) => e.startsWith('staging-'))).toEqual([]);
    }
    expect(existsSync('/var/tmp/apm-escape')).toBe(false);
    expect(existsSync('/var/tmp/apm-pwned')).toBe(false);
  }

  const local = () => createLocalTransport({ root: join(work, 'dst') });
  for (const method of ['chroot', 'linux-namespaces'] as const) {
    describe(`${method}, local destination, the root built while receiving`, () => {
      for (const c of CASES) it(c.name, () => attempt(c, method, local(), true));
    });
    describe(`${method}, over SSH, the root built by activate`, () => {
      for (const c of CASES.filter((x) => x.ssh)) it(c.name, () => attempt(c, method, sshTransport!, false));
    });
  }
});
