/**
 * Opt-in: the jail deployer against a real FreeBSD host over SSH (as root there: jail(8) needs it).
 *
 * Runs only when AP_MIGRATE_FREEBSD_HOST names the host (`root@host`). Optional:
 * AP_MIGRATE_FREEBSD_PORT, AP_MIGRATE_FREEBSD_IDENTITY (private key file),
 * AP_MIGRATE_FREEBSD_KNOWN_HOSTS, AP_MIGRATE_FREEBSD_JAIL_IF (default `lo0`) and
 * AP_MIGRATE_FREEBSD_JAIL_ADDR (default `127.0.0.99/32`) for the network case. The host needs
 * `node` on PATH for the pre-flight tool check. Without the variable the suite is skipped with a
 * printed reason; it is opt-in, so it does not fail under AP_MIGRATE_STRICT=1 (CI has no FreeBSD).
 *
 * The bundle is staged on the host by copying the host's own binaries and their libraries (a
 * bundle packed here would hold Linux binaries), then activate -> start -> healthCheck -> rollback
 * run for real: jail(8) parses the generated jail.conf, mounts devfs, and removes everything.
 * It has NOT been run by the authors: no FreeBSD host was available.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJailDeployer, jailPaths, type JailFacts } from '../../src/methods/freebsd-jail/deployer.js';
import { runScript } from '../../src/destination/run-script.js';
import { detectFreeBsdHostFacts } from '../../src/platforms/freebsd-facts.js';
import { planMigration } from '../../src/policy/plan.js';
import { ResourceProfileSchema, type ResourceProfileInput } from '../../src/policy/profile.js';
import type { DeployContext, PreflightReport, StagedBundle } from '../../src/spec/deployer.js';
import type { Transport } from '../../src/spec/transport.js';
import { createOpenSshTransport, type OpenSshTransportOptions } from '../../src/transports/openssh.js';

const HOST = process.env.AP_MIGRATE_FREEBSD_HOST;
if (!HOST) console.warn('skipping FreeBSD jail real-host tests: set AP_MIGRATE_FREEBSD_HOST=root@host to run them (opt-in)');

/** Copy host binaries and their libraries into `<staging>/root`, as a thin bundle from a FreeBSD source would carry them. */
const STAGE_SCRIPT = `
set -e
staging="$1"; shift
mkdir -p "$staging/root"
for bin in "$@"; do
  for f in "$bin" $(ldd -f '%p\\n' "$bin"); do mkdir -p "$staging/root\${f%/*}"; cp -p "$f" "$staging/root$f"; done
done
`;

describe.skipIf(!HOST)('jail deployer on a real FreeBSD host (opt-in)', () => {
  let transport: Transport;
  const root = `/var/tmp/ap-migrate-jail-${randomBytes(4).toString('hex')}`;
  const [user, host] = (HOST ?? '').includes('@') ? (HOST ?? '').split('@') : ['root', HOST ?? ''];

  beforeAll(async () => {
    const options: OpenSshTransportOptions = { host: host!, username: user!, root };
    if (process.env.AP_MIGRATE_FREEBSD_PORT) options.port = Number(process.env.AP_MIGRATE_FREEBSD_PORT);
    if (process.env.AP_MIGRATE_FREEBSD_IDENTITY) options.identityFile = process.env.AP_MIGRATE_FREEBSD_IDENTITY;
    if (process.env.AP_MIGRATE_FREEBSD_KNOWN_HOSTS) options.knownHostsPath = process.env.AP_MIGRATE_FREEBSD_KNOWN_HOSTS;
    transport = (await createOpenSshTransport(options))._unsafeUnwrap();
  });

  afterAll(async () => {
    if (!transport) return;
    await transport.exec(['sh', '-c', 'jail -R apm-real-files 2>/dev/null; jail -R apm-real-net 2>/dev/null; umount -f "$1"/*/root/dev 2>/dev/null; rm -rf -- "$1"', 'x', root], { allowNonZeroExit: true });
    await transport.close();
  });

  /** Plan for the host's real release, or for `plannedRelease` (a stale plan pre-flight must catch). */
  async function contextFor(name: string, input: ResourceProfileInput, plannedRelease?: string): Promise<DeployContext> {
    const release = plannedRelease ?? (await detectFreeBsdHostFacts(transport))._unsafeUnwrap().release;
    const profile = ResourceProfileSchema.parse(input);
    const plan = planMigration(profile, {
      destination: { platform: { os: 'freebsd', release, arch: 'amd64' }, provides: ['freebsd-base-userland'] },
      allowedMethods: ['freebsd-jail'],
    })._unsafeUnwrap();
    return { transport, profile, plan, name };
  }

  /** Stand in for `receive`: fill the staging directory pre-flight chose. */
  async function stage(preflight: PreflightReport<JailFacts>, binaries: string[]): Promise<StagedBundle> {
    const { stagingDir } = preflight;
    (await runScript(transport, STAGE_SCRIPT, [stagingDir, ...binaries]))._unsafeUnwrap();
    return { stagingDir, bytesReceived: 0, entriesVerified: 0 };
  }

  // nobody: the deployer does not run a moved program as root unless told to (jailUser).
  const base = { uid: 65534, gid: 65534, cwd: '/', platform: { os: 'freebsd', release: '13.2-RELEASE', arch: 'amd64' } };

  it('creates a files-only jail from the generated jail.conf, sees it run, and removes every trace', async () => {
    const context = await contextFor('apm-real-files', { ...base, executable: '/bin/sleep', argv: ['sleep', '300'] });
    const deployer = createJailDeployer();
    const preflight = (await deployer.preflight(context, 1024 * 1024))._unsafeUnwrap();
    const activated = (await deployer.activate(context, preflight, await stage(preflight, ['/bin/sleep'])))._unsafeUnwrap();
    const started = (await deployer.start(context, activated))._unsafeUnwrap();
    (await deployer.healthCheck(context, started))._unsafeUnwrap();
    const jls = (await transport.exec(['jls', '-j', context.name, 'path', 'ip4.addr']))._unsafeUnwrap();
    expect(jls.stdout).toContain(jailPaths(activated.installDir).rootDir);
    (await deployer.rollback(context, { preflight, activated, started }))._unsafeUnwrap();
    expect((await transport.exec(['jls', '-j', context.name, 'jid'], { allowNonZeroExit: true }))._unsafeUnwrap().code).not.toBe(0);
    expect((await transport.exec(['test', '-e', activated.installDir], { allowNonZeroExit: true }))._unsafeUnwrap().code).toBe(1);
  });

  it('gives a listening program an ip4.addr and finds its port with sockstat -j', async () => {
    const iface = process.env.AP_MIGRATE_FREEBSD_JAIL_IF ?? 'lo0';
    const addr = process.env.AP_MIGRATE_FREEBSD_JAIL_ADDR ?? '127.0.0.99/32';
    const context = await contextFor('apm-real-net', {
      ...base,
      executable: '/usr/bin/nc',
      argv: ['nc', '-l', '8080'],
      sockets: [{ family: 'inet', protocol: 'tcp', localPort: 8080, listening: true }],
    });
    const deployer = createJailDeployer({ network: { mode: 'ip4', interface: iface, addresses: [addr] } });
    const preflight = (await deployer.preflight(context, 1024 * 1024))._unsafeUnwrap();
    const activated = (await deployer.activate(context, preflight, await stage(preflight, ['/usr/bin/nc'])))._unsafeUnwrap();
    try {
      const started = (await deployer.start(context, activated))._unsafeUnwrap();
      expect(started.endpoints).toEqual([`${addr.split('/')[0]}:8080`]);
      (await deployer.healthCheck(context, started))._unsafeUnwrap();
    } finally {
      (await deployer.rollback(context, { preflight, activated }))._unsafeUnwrap();
    }
  });

  it('refuses SysV IPC isolation before 11.0, or creates the jail with sysv*=new from 11.0', async () => {
    const context = await contextFor('apm-real-sysv', { ...base, executable: '/bin/sleep', argv: ['sleep', '300'], ipc: [{ kind: 'sysv-shm', key: 1, id: 1 }] }, '13.2-RELEASE');
    const facts = (await detectFreeBsdHostFacts(transport))._unsafeUnwrap();
    const result = await createJailDeployer().preflight(context, 1024 * 1024);
    if (facts.major < 11) expect(result._unsafeUnwrapErr().code).toBe('CAPABILITY_MISSING');
    else expect(result.isOk()).toBe(true);
  });
});
