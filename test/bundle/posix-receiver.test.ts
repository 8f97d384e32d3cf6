/**
 * The receiver that needs no Node.js at the destination: real bundles (made by the repo's packer
 * and by every bundle packager) go through forwardSanitized into `sh` + `tar` + `sha256sum` at the
 * destination, over the local transport and over a loopback OpenSSH, with GNU tar and bsdtar.
 * The tree must be exactly what unpackBundle makes; a destination that tampers is caught.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync, statSync } from 'node:fs';
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, mkdtemp, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/bundle/pack.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { forwardSanitized } from '../../src/bundle/forward-sanitized.js';
import { probePosixReceiver, receivePosix, receiveWithPosixReceiver } from '../../src/destination/posix-receiver.js';
import type { DeployContext } from '../../src/spec/deployer.js';
import { createBundlePackager } from '../../src/bundle/packager.js';
import { createChrootDeployer } from '../../src/methods/chroot/deployer.js';
import { createNamespacesDeployer } from '../../src/methods/linux-namespaces/deployer.js';
import { createExecutorSource } from '../../src/source/executor-source.js';
import { planMigration } from '../../src/policy/plan.js';
import { ResourceProfileSchema, type FileUse, type ResourceProfile } from '../../src/policy/profile.js';
import type { Transport } from '../../src/spec/transport.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { snapshot, TAR_FLAVOURS, tarShim, withPathFirst, wrappingTarShim } from './posix-receiver-helpers.js';

const LONG_COMPONENT = 'l'.repeat(120);
const UNICODE_NAME = 'ünïcødé-文件-😀.txt';

/** The round-trip test's tree: every entry type, long and unicode names, large ids, setuid. */
async function buildTree(tree: string): Promise<string[]> {
  const listed: string[] = [];
  const file = async (rel: string, content: string | Buffer, mode = 0o644) => {
    const path = join(tree, rel);
    await writeFile(path, content);
    await chmod(path, mode);
    listed.push(path);
    return path;
  };
  await mkdir(join(tree, 'bin'), { recursive: true });
  await mkdir(join(tree, 'data', 'sub'), { recursive: true });
  await mkdir(join(tree, 'data', 'private'), { mode: 0o700 });
  await chmod(join(tree, 'data', 'private'), 0o700);
  const program = await file('bin/program', '#!/bin/sh\necho hi\n', 0o755);
  await file('data/empty', '');
  await file('data/zero-mode', 'nobody may read me', 0o000);
  await file('data/sub/big.bin', Buffer.alloc(3 * 1024 * 1024 + 17, 7));
  await file('data/private/secret', 'secret', 0o600);
  await file(`data/${UNICODE_NAME}`, 'unicode content ✓');
  await file('data/name with\nnewline and \\ backslash', 'odd name');
  await file('bin/setuid-helper', 'suid', 0o4755);
  const deep = join(tree, 'data', 'deep'.repeat(10), 'nested'.repeat(5), LONG_COMPONENT);
  await mkdir(deep, { recursive: true });
  const longFile = await file(relative(tree, join(deep, 'file-with-a-long-path.txt')), 'long path content');
  await link(program, join(tree, 'bin', 'program-hardlink'));
  listed.push(join(tree, 'bin', 'program-hardlink'));
  await symlink('program', join(tree, 'bin', 'program-link'));
  listed.push(join(tree, 'bin', 'program-link'));
  await symlink(join(tree, 'data', 'empty'), join(tree, 'data', 'absolute-link'));
  listed.push(join(tree, 'data', 'absolute-link'));
  await symlink('sub', join(tree, 'data', 'sub-link'));
  listed.push(join(tree, 'data', 'sub-link', 'big.bin'));
  await symlink(relative(join(tree, 'data'), longFile), join(tree, 'data', 'long-target-link'));
  listed.push(join(tree, 'data', 'long-target-link'));
  await symlink('target with\nnewline', join(tree, 'data', 'odd-link'));
  listed.push(join(tree, 'data', 'odd-link'));
  execFileSync('mkfifo', [join(tree, 'data', 'fifo')]);
  listed.push(join(tree, 'data', 'fifo'));
  await chown(join(tree, 'data', 'private', 'secret'), 1234, 2345);
  await chown(join(tree, 'data', 'private'), 1234, 2345);
  await lchown(join(tree, 'bin', 'program-link'), 1234, 2345);
  await chown(join(tree, 'data', 'empty'), 300_000, 300_001);
  await chmod(join(tree, 'bin', 'setuid-helper'), 0o4755);
  let time = Date.UTC(2001, 1, 3) / 1000;
  const stamp = async (path: string) => {
    const stats = await lstat(path);
    time += 3600;
    if (stats.isSymbolicLink()) await lutimes(path, time, time);
    else if (!stats.isDirectory()) await utimes(path, time, time);
    if (stats.isDirectory()) for (const name of await readdir(path)) await stamp(join(path, name));
    if (stats.isDirectory()) await utimes(path, time, time);
  };
  await stamp(tree);
  return listed;
}

function profileFor(tree: string, listed: string[]): ResourceProfile {
  const files: FileUse[] = listed.map((path) => {
    let size = 0;
    let kind: FileUse['kind'] = 'regular';
    try {
      const stats = statSync(path);
      size = stats.isFile() ? stats.size : 0;
      if (stats.isFIFO()) kind = 'fifo';
    } catch {
      // a dangling symlink: the packer stores the link
    }
    return { path, kind, access: ['read'], size, sharedLibrary: false, created: false };
  });
  const executable = join(tree, 'bin', 'program');
  return ResourceProfileSchema.parse({
    executable,
    executableSize: statSync(executable).size,
    argv: ['program'],
    cwd: join(tree, 'data'),
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
    files,
  });
}

describe.skipIf(skipUnless('root', 'tool:tar', 'tool:bsdtar', 'tool:mkfifo', 'tool:sha256sum', 'tool:sshd'))('the POSIX receiver', () => {
  let work: string;
  let tree: string;
  let bundlePath: string;
  let expected: Awaited<ReturnType<typeof snapshot>>;
  let sshd: TestSshd;
  let ssh: Transport;
  const local = createLocalTransport();

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-posix-rx-'));
    tree = join(work, 'tree');
    await mkdir(tree);
    const profile = profileFor(tree, await buildTree(tree));
    bundlePath = join(work, 'bundle.tar');
    const packed = await packBundle(profile, createWriteStream(bundlePath));
    expect(packed.isOk(), packed.isErr() ? packed.error.message : '').toBe(true);
    // The reference: what unpackBundle makes of the same bundle.
    const reference = await unpackBundle(createReadStream(bundlePath), join(work, 'reference'), { setuid: 'allow' });
    expect(reference.isOk(), reference.isErr() ? reference.error.message : '').toBe(true);
    expected = await snapshot(join(work, 'reference', tree));
    sshd = await startSshd();
    ssh = (
      await createOpenSshTransport({ host: sshd.host, port: sshd.port, username: 'root', identityFile: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath, root: work })
    )._unsafeUnwrap();
  }, 60_000);

  afterAll(async () => {
    await ssh?.close();
    await sshd?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const transports = () => ({ local, ssh });

  for (const flavour of TAR_FLAVOURS) {
    for (const over of ['local', 'ssh'] as const) {
      it(`${flavour.name} over ${over}: the tree is exactly what unpackBundle makes, verified`, async () => {
        const shim = flavour.program ? tarShim(join(work, `shim-${over}-${Date.now()}`), flavour.program) : undefined;
        const transport = withPathFirst(transports()[over], shim);
        const target = join(work, `out-${flavour.program ? 'bsd' : 'gnu'}-${over}`, 'root');
        const result = await receivePosix(transport, createReadStream(bundlePath), target, { setuid: 'allow' });
        expect(result.isOk(), result.isErr() ? `${result.error.code}: ${result.error.message}` : '').toBe(true);
        const report = result._unsafeUnwrap();
        expect(report).toMatchObject({ verified: true, isBundle: true, receiver: 'posix-sh', destination: { os: 'Linux', uid: 0 } });
        expect(report.checked.files).toBeGreaterThanOrEqual(9);
        expect(report.checked.symlinks).toBe(5);
        expect(report.dataBytes).toBeGreaterThan(3 * 1024 * 1024);
        expect(await snapshot(join(target, tree))).toEqual(expected);
        await expect(lstat(`${target}.incoming`)).rejects.toThrow();
        if (flavour.program) {
          // The shim really was the tar that ran.
          expect(execFileSync('env', [`PATH=${shim}:/usr/bin:/bin`, 'tar', '--version']).toString()).toContain('bsdtar');
        }
      }, 60_000);
    }
  }

  it('gzip on the wire and a bandwidth cap: the same verified tree', async () => {
    const target = join(work, 'gzip', 'root');
    const result = await receivePosix(local, createReadStream(bundlePath), target, { setuid: 'allow', compression: { codec: 'gzip', level: 1 }, bandwidthLimit: 64 * 1024 * 1024 });
    expect(result.isOk(), result.isErr() ? `${result.error.code}: ${result.error.message}` : '').toBe(true);
    expect(await snapshot(join(target, tree))).toEqual(expected);
  });

  for (const over of ['local', 'ssh'] as const) {
    it(`the caller's abort mid-stream (${over}) is ABORTED and leaves nothing`, async () => {
      const target = join(work, `aborted-${over}`, 'root');
      const controller = new AbortController();
      const slow = new Readable({ read() {} });
      const bytes = readFileSync(bundlePath);
      slow.push(bytes.subarray(0, 2 * 1024 * 1024));
      setTimeout(() => controller.abort(), 300);
      const result = await receivePosix(transports()[over], slow, target, { setuid: 'allow', signal: controller.signal });
      expect(result._unsafeUnwrapErr().code).toBe('ABORTED');
      expect(await readdir(join(work, `aborted-${over}`))).toEqual([]);
    });
  }

  it('pre-flight probe: names what it would use', async () => {
    const probe = (await probePosixReceiver(local))._unsafeUnwrap();
    expect(probe).toMatchObject({ os: 'Linux', hasher: 'sha256sum', statSyntax: 'stat -c', uid: 0 });
    expect(probe.tarVersion).toContain('GNU tar');
    expect(probe.kind).toBe(probe.hasNode ? 'node' : 'posix-sh');
    // A destination without node (PATH without it): posix-sh.
    const bare = join(work, 'bare-bin');
    await mkdir(bare);
    for (const tool of ['sh', 'tar', 'find', 'xargs', 'stat', 'readlink', 'cut', 'mkdir', 'mv', 'rm', 'rmdir', 'ls', 'dirname', 'id', 'uname', 'sha256sum', 'head', 'dd', 'env']) {
      await symlink(execFileSync('sh', ['-c', `command -v ${tool}`]).toString().trim(), join(bare, tool));
    }
    const noNode: Transport = { ...local, exec: (argv, options) => local.exec(['/usr/bin/env', '-i', `PATH=${bare}`, ...argv], options) };
    const picked = (await probePosixReceiver(noNode))._unsafeUnwrap();
    expect(picked.kind).toBe('posix-sh');
    expect(picked.summary).toContain('posix-sh');
    const bsd = (await probePosixReceiver(withPathFirst(local, tarShim(join(work, 'probe-bsd'), '/usr/bin/bsdtar'))))._unsafeUnwrap();
    expect(bsd.tarVersion).toContain('bsdtar');
    // Without a hasher: TOOL_MISSING, naming it.
    await rm(join(bare, 'sha256sum'));
    const missing = await probePosixReceiver(noNode);
    expect(missing._unsafeUnwrapErr().code).toBe('TOOL_MISSING');
    expect(missing._unsafeUnwrapErr().message).toContain('sha256sum');
  });

  for (const flavour of TAR_FLAVOURS) {
    it(`${flavour.name}: a file changed at the destination after extraction is BUNDLE_HASH_MISMATCH, and nothing is left`, async () => {
      const real = flavour.program ?? '/usr/bin/tar';
      const victim = `root${tree}/data/private/secret`;
      const shim = wrappingTarShim(join(work, `tamper-${Date.now()}`), real, `printf X >> '${victim}'`);
      const target = join(work, `tampered-${Date.now()}`, 'root');
      const result = await receivePosix(withPathFirst(local, shim), createReadStream(bundlePath), target, { setuid: 'allow' });
      const error = result._unsafeUnwrapErr();
      expect(error.code, error.message).toBe('BUNDLE_HASH_MISMATCH');
      expect(error.details).toMatchObject({ at: 'destination', path: `${tree}/data/private/secret` });
      await expect(lstat(target)).rejects.toThrow();
      await expect(lstat(`${target}.incoming`)).rejects.toThrow();
    });

    it(`${flavour.name}: an extra file, a changed mode or a replaced symlink at the destination is caught`, async () => {
      const real = flavour.program ?? '/usr/bin/tar';
      const keepTimes = (command: string) => `touch -r 'root${tree}/bin' ../bin-times && ${command} && touch -r ../bin-times 'root${tree}/bin' && rm ../bin-times`;
      const cases = [
        { after: `echo extra > 'root${tree}/data/extra'`, code: 'BUNDLE_MANIFEST_MISMATCH', message: /objects/ },
        { after: `chmod 666 'root${tree}/data/empty'`, code: 'BUNDLE_MANIFEST_MISMATCH', message: /mode/ },
        // The directory's times are put back: only the link itself differs.
        { after: keepTimes(`rm 'root${tree}/bin/program-link' && ln -s /etc/shadow 'root${tree}/bin/program-link'`), code: 'BUNDLE_MANIFEST_MISMATCH', message: /program-link/ },
        { after: keepTimes(`rm 'root${tree}/bin/program-hardlink' && cp -p 'root${tree}/bin/program' 'root${tree}/bin/program-hardlink'`), code: 'BUNDLE_MANIFEST_MISMATCH', message: /hard link/ },
      ];
      for (const c of cases) {
        const shim = wrappingTarShim(join(work, `tamper-${Math.random().toString(36).slice(2)}`), real, c.after);
        const target = join(work, `tampered-${Math.random().toString(36).slice(2)}`, 'root');
        const result = await receivePosix(withPathFirst(local, shim), createReadStream(bundlePath), target, { setuid: 'allow' });
        const error = result._unsafeUnwrapErr();
        expect(error.code, `${c.after}: ${error.message}`).toBe(c.code);
        expect(error.message).toMatch(c.message);
        await expect(lstat(`${target}.incoming`)).rejects.toThrow();
      }
    });
  }

  it('refuses a staging path that exists (and leaves it alone), and takes an empty directory', async () => {
    const target = join(work, 'busy', 'root');
    await mkdir(target, { recursive: true });
    await writeFile(join(target, 'keep'), 'mine');
    const busy = await receivePosix(local, createReadStream(bundlePath), target, { setuid: 'allow' });
    expect(busy._unsafeUnwrapErr().code).toBe('BUNDLE_STAGING_NOT_EMPTY');
    expect(readFileSync(join(target, 'keep'), 'utf8')).toBe('mine');
    const empty = join(work, 'empty-target', 'root');
    await mkdir(empty, { recursive: true });
    const taken = await receivePosix(local, createReadStream(bundlePath), empty, { setuid: 'allow' });
    expect(taken.isOk(), taken.isErr() ? taken.error.message : '').toBe(true);
  });

  it('with setuid: reject (the default) a setuid file is BUNDLE_UNSAFE_ENTRY; strip removes the bits', async () => {
    const target = join(work, 'suid', 'root');
    const refused = await receivePosix(local, createReadStream(bundlePath), target);
    expect(refused._unsafeUnwrapErr().code).toBe('BUNDLE_UNSAFE_ENTRY');
    await expect(lstat(`${target}.incoming`)).rejects.toThrow();
    const stripped = await receivePosix(local, createReadStream(bundlePath), target, { setuid: 'strip' });
    expect(stripped.isOk(), stripped.isErr() ? stripped.error.message : '').toBe(true);
    expect(stripped._unsafeUnwrap().strippedSetuid).toEqual([`root${tree}/bin/setuid-helper`]);
    expect(statSync(join(target, tree, 'bin/setuid-helper')).mode & 0o7777).toBe(0o755);
  });

  it('the sanitized stream is a plain tar both tars list, with links last', async () => {
    const forward = forwardSanitized(createReadStream(bundlePath), { setuid: 'allow', trailer: () => ['all', 'files', 'links'].map((n) => ({ name: `list/${n}`, data: Buffer.from('x') })) });
    const chunks: Buffer[] = [];
    for await (const chunk of forward.stream) chunks.push(chunk as Buffer);
    expect((await forward.done).isOk()).toBe(true);
    const plain = Buffer.concat(chunks);
    for (const tool of ['tar', 'bsdtar']) {
      const names = execFileSync(tool, ['-tf', '-'], { input: plain }).toString().trim().split('\n');
      expect(names[0]).toBe('root/');
      expect(names).not.toContain('manifest.json');
      const firstLink = names.findIndex((n) => n.endsWith('program-hardlink'));
      const lastData = names.findIndex((n) => n.endsWith('big.bin'));
      expect(firstLink).toBeGreaterThan(lastData);
      expect(names.slice(-3)).toEqual(['list/all', 'list/files', 'list/links']);
    }
  });

  describe('bundles of every bundle packager (the packager conformance tree)', () => {
    const packagers = [
      { name: 'chroot', packager: () => createChrootDeployer().packager },
      { name: 'linux-namespaces', packager: () => createNamespacesDeployer().packager },
      { name: 'bundle packager without trees', packager: () => createBundlePackager(() => ({})) },
    ];
    for (const { name, packager } of packagers) {
      for (const flavour of TAR_FLAVOURS) {
        it(`${name} -> ${flavour.name}: every file verified`, async () => {
          const root = join(work, `conf-${name.replace(/\W/g, '')}-${flavour.program ? 'bsd' : 'gnu'}`);
          const files: string[] = [];
          const put = (rel: string, content: string | Buffer) => {
            const path = join(root, 'src', rel);
            execFileSync('mkdir', ['-p', join(path, '..')]);
            execFileSync('sh', ['-c', 'cat > "$1"', 'sh', path], { input: content });
            files.push(path);
          };
          put('bin/prog', '#!/bin/sh\necho hi\n');
          put('etc/prog.conf', 'port = 8080\n');
          for (let i = 0; i < 40; i++) put(`data/row-${i}`, `row ${i}\n`.repeat(i + 1));
          put('data/big.bin', Buffer.alloc(3 * 1024 * 1024 + 17, 7));
          const profile = ResourceProfileSchema.parse({
            executable: join(root, 'src/bin/prog'),
            argv: [join(root, 'src/bin/prog')],
            cwd: '/',
            uid: 65534,
            gid: 65534,
            platform: { os: 'linux', release: '6.1.0', arch: 'x86_64' },
            files: files.map((path) => ({ path, kind: 'regular', access: ['read'], size: statSync(path).size })),
            trees: [{ path: join(root, 'src/data'), reason: 'data-root' }],
          });
          const request = { profile, plan: planMigration(profile)._unsafeUnwrap(), source: createExecutorSource() };
          const p = packager();
          const estimate = (await p.estimate(request))._unsafeUnwrap();
          const packed = (await p.pack(request, estimate))._unsafeUnwrap();
          const shim = flavour.program ? tarShim(join(root, 'shim'), flavour.program) : undefined;
          const target = join(root, 'staging', 'root');
          const [received, done] = await Promise.all([receivePosix(withPathFirst(local, shim), packed.payload, target), packed.done]);
          expect(done.isOk()).toBe(true);
          expect(received.isOk(), received.isErr() ? received.error.message : '').toBe(true);
          for (const path of files) {
            expect(createHash('sha256').update(readFileSync(join(target, path))).digest('hex')).toBe(createHash('sha256').update(readFileSync(path)).digest('hex'));
          }
        }, 60_000);
      }
    }
  });

  it('the deployers\' hook: receiveWithPosixReceiver stages <stagingDir>/root, retries clear it, and refuses what it cannot do', async () => {
    const context = { transport: local, name: 'hook', profile: undefined, plan: undefined } as unknown as DeployContext;
    const stagingDir = join(work, 'hook-staging');
    let seen = 0;
    const staged = await receiveWithPosixReceiver(context, { stagingDir }, createReadStream(bundlePath), { setuid: 'allow', onBytes: (b) => (seen = b) });
    expect(staged.isOk(), staged.isErr() ? staged.error.message : '').toBe(true);
    expect(staged._unsafeUnwrap()).toMatchObject({ stagingDir, seededBytes: 0 });
    expect(staged._unsafeUnwrap().bytesReceived).toBe(statSync(bundlePath).size);
    expect(seen).toBe(statSync(bundlePath).size);
    expect(await snapshot(join(stagingDir, 'root', tree))).toEqual(expected);
    const again = await receiveWithPosixReceiver(context, { stagingDir }, createReadStream(bundlePath), { setuid: 'allow', attempt: 2 });
    expect(again.isOk(), again.isErr() ? again.error.message : '').toBe(true);
    const delta = await receiveWithPosixReceiver(context, { stagingDir }, createReadStream(bundlePath), { round: 'delta' });
    expect(delta._unsafeUnwrapErr().code).toBe('RECEIVE_FAILED');
    const refused = await receiveWithPosixReceiver(context, { stagingDir: join(work, 'hook-2') }, createReadStream(bundlePath));
    expect(refused._unsafeUnwrapErr().code).toBe('BUNDLE_UNSAFE_ENTRY');
  });

  it('forwardSanitized answers malformed arguments with INVALID_INPUT, never a throw', async () => {
    for (const [input, options, path] of [
      [undefined, {}, 'input'],
      [null, {}, 'input'],
      ['a string', {}, 'input'],
      [Readable.from([]), { setuid: 'sometimes' }, 'setuid'],
      [Readable.from([]), { prefix: '../up' }, 'prefix'],
      [Readable.from([]), null, 'options'],
    ] as const) {
      const forward = forwardSanitized(input as never, options as never);
      forward.stream.on('error', () => undefined);
      const error = (await forward.done)._unsafeUnwrapErr();
      expect(error.code).toBe('INVALID_INPUT');
      expect(JSON.stringify(error.details)).toContain(path);
    }
  });

  it('an input that is not a bundle, and a bad target, are typed errors', async () => {
    const plain = execFileSync('tar', ['-cf', '-', '-C', tree, 'bin']);
    const result = await receivePosix(local, Readable.from([plain]), join(work, 'plain', 'root'));
    expect(result._unsafeUnwrapErr().code).toBe('BUNDLE_MANIFEST_INVALID');
    await expect(lstat(join(work, 'plain', 'root.incoming'))).rejects.toThrow();
    expect((await receivePosix(local, Readable.from([plain]), 'relative/path'))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
  });
});
