/**
 * The jail deployer on a FreeBSD host without Node.js: pre-flight picks the POSIX receiver and
 * says so, and the bundle lands through the destination's own `sh` and `tar`, checked by the SDK.
 *
 * No FreeBSD host exists here: the host is the scripted one of the jail tests, except that the
 * receive, settle and discard scripts really run, with this machine's `sh`, GNU tar, `stat -c` and
 * `sha256sum`, in a directory standing in for the host's file system. FreeBSD's own branch of the
 * listing (`stat -f`, `sha256 -q`, bsdtar) is covered by the POSIX receiver's tests with bsdtar;
 * `stat -f` never ran.
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/bundle/pack.js';
import { POSIX_DISCARD_SCRIPT, POSIX_PROBE_SCRIPT, POSIX_RECEIVE_SCRIPT, POSIX_SETTLE_SCRIPT } from '../../src/destination/posix-receiver.js';
import { createJailDeployer, JAIL_ACTIVATE_SCRIPT, JAIL_MOVE_SCRIPT, JAIL_PREFLIGHT_SCRIPT, JAIL_ROLLBACK_SCRIPT, type JailDeployerOptions } from '../../src/methods/freebsd-jail/deployer.js';
import { planMigration } from '../../src/policy/plan.js';
import { ResourceProfileSchema, type ResourceProfileInput } from '../../src/policy/profile.js';
import type { DeployContext } from '../../src/spec/deployer.js';
import { commonPreflightReply, freebsdHost, isCommonPreflight, JAIL_FIXTURES } from '../fixtures/jail/freebsd-host.js';
import { createScriptedTransport, renderCalls, type ScriptedReply, type ScriptedRule } from '../helpers/scripted-transport.js';
import { skipUnless } from '../helpers/requirements.js';

const ROOT = '/var/ap-migrate';
const UPDATE = process.env.UPDATE_GOLDEN === '1';
const FAST: JailDeployerOptions = { settleMs: 0, healthPollMs: 10, healthTimeoutMs: 2000 };

/** The probe's answer on FreeBSD 13.2 without Node.js (written from uname, id, sha256 and bsdtar's documented output). */
const PROBE_NO_NODE = ['os=FreeBSD', 'uid=0', 'hasher=sha256', 'node=no', 'tar=bsdtar 3.6.2 - libarchive 3.6.2 zlib/1.2.13 liblzma/5.4.1 bzip2/1.0.8', 'tarflags=ok', ''].join('\n');

describe.skipIf(skipUnless('tool:tar', 'tool:sha256sum', 'tool:stat'))('jail deployer: a FreeBSD host without Node.js gets the POSIX receiver', () => {
  let work: string;
  let bundlePath: string;
  let host: string;
  const files = { 'apserver': 'ELF stand-in\n', 'notes.db': 'note 1\nnote 2\n' };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-jail-posix-'));
    const tree = join(work, 'source');
    mkdirSync(tree);
    for (const [name, text] of Object.entries(files)) writeFileSync(join(tree, name), text, { mode: 0o644 });
    const profile: ResourceProfileInput = {
      executable: join(tree, 'apserver'),
      argv: ['apserver'],
      cwd: tree,
      uid: 1001,
      gid: 1001,
      platform: { os: 'linux', release: '6.1.0', arch: 'x86_64' },
      files: [{ path: join(tree, 'notes.db'), kind: 'regular', access: ['read', 'write'], size: 14 }],
    };
    bundlePath = join(work, 'bundle.tar');
    const packed = await packBundle(profile, createWriteStream(bundlePath));
    expect(packed.isOk(), packed.isErr() ? packed.error.message : '').toBe(true);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  /** The host's file system, under a directory of this run. */
  const local = (path: string) => join(host, path);

  /** Run one of the POSIX receiver's scripts here, its target path moved under `host`. */
  function runHere(argv: readonly string[], stdin: Buffer | undefined): ScriptedReply {
    const run = spawnSync('sh', ['-c', argv[2]!, argv[3]!, local(argv[4]!)], { input: stdin ?? Buffer.alloc(0), maxBuffer: 64 << 20 });
    return { code: run.status ?? 1, stdout: run.stdout.toString(), stderr: run.stderr.toString() };
  }

  /** The FreeBSD 13.2 host of the jail tests, without `node`, with `tools` found by the shared pre-flight. */
  function hostRules(options: { node: boolean }): ScriptedRule[] {
    return freebsdHost('13.2', [
      { match: isCommonPreflight, reply: (argv) => commonPreflightReply('13.2', options.node ? argv : argv.filter((a, i) => i < 6 || a !== 'node'), false) },
      { match: ['sh', '-c', POSIX_PROBE_SCRIPT], reply: { stdout: options.node ? PROBE_NO_NODE.replace('node=no', 'node=yes') : PROBE_NO_NODE } },
      { match: ['sh', '-c', POSIX_RECEIVE_SCRIPT], reply: (argv, _text, raw) => runHere(argv, raw) },
      { match: ['sh', '-c', POSIX_SETTLE_SCRIPT], reply: (argv) => runHere(argv, undefined) },
      { match: ['sh', '-c', POSIX_DISCARD_SCRIPT], reply: (argv) => runHere(argv, undefined) },
    ]);
  }

  function contextFor(transport: DeployContext['transport']): DeployContext {
    const input: ResourceProfileInput = {
      executable: '/usr/local/bin/apserver',
      argv: ['apserver'],
      cwd: '/var/db/apserver',
      uid: 1001,
      gid: 1001,
      platform: { os: 'freebsd', release: '13.2-RELEASE-p4', arch: 'amd64' },
      files: [{ path: '/var/db/apserver/notes.db', kind: 'regular', access: ['read', 'write'], size: 14 }],
    };
    const profile = ResourceProfileSchema.parse(input);
    const plan = planMigration(profile, {
      destination: { platform: { os: 'freebsd', release: '13.2-RELEASE', arch: 'amd64' }, provides: ['freebsd-base-userland'] },
      allowedMethods: ['freebsd-jail'],
    })._unsafeUnwrap();
    return { transport, profile, plan, name: 'apserver' };
  }

  it('pre-flight says posix-sh, the bundle lands verified through sh and tar, nothing asks for node, and the commands are golden', async () => {
    host = join(work, 'host-1');
    mkdirSync(host);
    const transport = createScriptedTransport({ root: ROOT, rules: hostRules({ node: false }) });
    const deployer = createJailDeployer(FAST);
    const context = contextFor(transport);
    const preflight = (await deployer.preflight(context, 1 << 20))._unsafeUnwrap();
    expect(preflight.receiver).toEqual({ kind: 'posix-sh', seeds: false, summary: expect.stringContaining('no Node.js at') });
    expect(preflight.tools.node).toBeUndefined();
    // Nothing the host holds could be used: the inventory holds nothing and asks nothing.
    expect((await deployer.inventory!(context, preflight, { round: 'full', hostPaths: ['/lib/libc.so.7'] }))._unsafeUnwrap()).toEqual({});
    const staged = (await deployer.receive(context, preflight, createReadStream(bundlePath)))._unsafeUnwrap();
    expect(staged.entriesVerified).toBeGreaterThan(0);
    const landed = local(`${preflight.stagingDir}/root`);
    for (const [name, text] of Object.entries(files)) expect(readFileSync(join(landed, work, 'source', name), 'utf8')).toBe(text);
    expect(existsSync(`${landed}.incoming`)).toBe(false);
    const activated = (await deployer.activate(context, preflight, staged))._unsafeUnwrap();
    const started = (await deployer.start(context, activated))._unsafeUnwrap();
    (await deployer.healthCheck(context, started))._unsafeUnwrap();
    expect(transport.unmatched).toEqual([]);
    expect(transport.calls.some((c) => c.op === 'exec' && c.argv[0] === 'node')).toBe(false);
    const names = { JAIL_PREFLIGHT_SCRIPT, JAIL_ACTIVATE_SCRIPT, JAIL_MOVE_SCRIPT, JAIL_ROLLBACK_SCRIPT, POSIX_PROBE_SCRIPT, POSIX_RECEIVE_SCRIPT, POSIX_SETTLE_SCRIPT };
    const commands = renderCalls(transport.calls, names)
      .replace(/staging-apserver-[0-9a-f]{12}/g, 'staging-apserver-RANDOM')
      .replace(/<stdin \d+ bytes>/g, '<stdin N bytes>');
    const golden = join(JAIL_FIXTURES, 'posix-receiver.commands.txt');
    if (UPDATE) writeFileSync(golden, commands);
    expect(commands).toBe(readFileSync(golden, 'utf8'));
  });

  it('a cut bundle is BUNDLE_TRUNCATED (retryable) and leaves nothing at the host', async () => {
    host = join(work, 'host-2');
    mkdirSync(host);
    const transport = createScriptedTransport({ root: ROOT, rules: hostRules({ node: false }) });
    const deployer = createJailDeployer(FAST);
    const context = contextFor(transport);
    const preflight = (await deployer.preflight(context, 1 << 20))._unsafeUnwrap();
    const whole = readFileSync(bundlePath);
    const error = (await deployer.receive(context, preflight, Readable.from([whole.subarray(0, whole.length >> 1)])))._unsafeUnwrapErr();
    expect(error.code).toBe('BUNDLE_TRUNCATED');
    expect(error.isRetryable).toBe(true);
    const staging = local(preflight.stagingDir);
    expect(existsSync(`${staging}/root`) || existsSync(`${staging}/root.incoming`)).toBe(false);
  });

  it("receiver: 'posix-sh' is used where node exists; receiver: 'node' where none exists is TOOL_MISSING", async () => {
    host = join(work, 'host-3');
    mkdirSync(host);
    const withNode = createScriptedTransport({ root: ROOT, rules: hostRules({ node: true }) });
    const asked = (await createJailDeployer({ ...FAST, receiver: 'posix-sh' }).preflight(contextFor(withNode), 1 << 20))._unsafeUnwrap();
    expect(asked.receiver).toMatchObject({ kind: 'posix-sh', seeds: false, summary: expect.stringContaining('asked for') });
    const auto = (await createJailDeployer(FAST).preflight(contextFor(createScriptedTransport({ root: ROOT, rules: hostRules({ node: true }) })), 1 << 20))._unsafeUnwrap();
    expect(auto.receiver).toMatchObject({ kind: 'node', seeds: true });
    const without = createScriptedTransport({ root: ROOT, rules: hostRules({ node: false }) });
    const error = (await createJailDeployer({ ...FAST, receiver: 'node' }).preflight(contextFor(without), 1 << 20))._unsafeUnwrapErr();
    expect(error.code).toBe('TOOL_MISSING');
    expect(error.message).toContain('node');
  });
});
