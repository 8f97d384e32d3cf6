/**
 * The crafted-bundle corpus (test/bundle/unsafe.test.ts, receiver-input.test.ts, seeds.test.ts)
 * against forwardSanitized + the POSIX receiver, with GNU tar and bsdtar at the destination, over
 * the local transport and (GNU tar) a loopback OpenSSH: every hostile or damaged bundle is refused
 * with the code unpackBundle gives for the same bytes, and nothing is written outside the staging
 * directory (a canary beside it, a victim directory, /etc/passwd) nor left behind.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/bundle/pack.js';
import { unpackBundle } from '../../src/bundle/unpack.js';
import { SEED_PAX } from '../../src/bundle/seeds.js';
import { receivePosix } from '../../src/destination/posix-receiver.js';
import type { Transport } from '../../src/spec/transport.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { TAR_FLAVOURS, tarShim, withPathFirst } from './posix-receiver-helpers.js';
import { CRAFT_PROFILE, craftBundle, type CraftedEntry } from '../helpers/crafted-bundle.js';

const profile = CRAFT_PROFILE;
const craft = craftBundle;

/** A manifest entry for `craft`, listing what the crafted entries hold (so only the rule under test can refuse). */
function manifestOf(entries: { path: string; type: string; size?: number; sha256?: string; linkTarget?: string }[]): CraftedEntry {
  const manifest = {
    kind: 'ap-migrate-manifest',
    formatVersion: 1,
    createdAt: new Date().toISOString(),
    profile,
    plan: null,
    entries: entries.map((e) => ({ mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, ...e })),
    counts: { entries: {}, skipped: {} },
    dataBytes: 0,
    warnings: [],
  };
  return { header: { name: 'manifest.json' }, data: JSON.stringify(manifest) };
}

interface Case {
  name: string;
  bytes: () => Promise<Buffer> | Buffer;
  /** An input stream other than the bytes in one chunk. */
  stream?: (bytes: Buffer) => Readable;
  /** The code both receivers must give. */
  code: string;
}

describe.skipIf(skipUnless('root', 'tool:tar', 'tool:bsdtar', 'tool:sha256sum', 'tool:sshd'))('the crafted-bundle corpus against the POSIX receiver', () => {
  let work: string;
  let outside: string;
  let real: Buffer;
  const marker = 'MARKER-'.repeat(100);
  let sshd: TestSshd;
  let ssh: Transport;
  const local = createLocalTransport();
  let passwd: { nlink: number; size: number };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-posix-corpus-'));
    outside = join(work, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'sentinel'), 'untouched');
    const tree = join(work, 'fixtures', 'tree');
    await mkdir(tree, { recursive: true });
    await writeFile(join(tree, 'data.txt'), marker);
    await writeFile(join(tree, 'other.bin'), Buffer.alloc(3 * 1024 * 1024, 1));
    const path = join(work, 'fixtures', 'real.tar');
    const packed = await packBundle(
      { ...profile, executable: join(tree, 'data.txt'), cwd: tree, files: [{ path: join(tree, 'other.bin'), kind: 'regular', access: ['read'], size: 3 * 1024 * 1024, sharedLibrary: false, created: false }] },
      createWriteStream(path),
    );
    expect(packed.isOk(), packed.isErr() ? packed.error.message : '').toBe(true);
    real = await readFile(path);
    const s = await stat('/etc/passwd');
    passwd = { nlink: s.nlink, size: s.size };
    sshd = await startSshd();
    ssh = (await createOpenSshTransport({ host: sshd.host, port: sshd.port, username: 'root', identityFile: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath, root: work }))._unsafeUnwrap();
  }, 60_000);

  afterAll(async () => {
    await ssh?.close();
    await sshd?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const largeHeader = () => real.indexOf(Buffer.from('/other.bin\0')) - (real.indexOf(Buffer.from('/other.bin\0')) % 512);
  const chunked = (buffer: Buffer, size = 64 * 1024) =>
    Readable.from((function* () {
      for (let at = 0; at < buffer.length; at += size) yield buffer.subarray(at, Math.min(buffer.length, at + size));
    })());

  const CASES: Case[] = [
    // unsafe.test.ts
    { name: 'a ../ name', bytes: () => craft([{ header: { name: 'root/../../x' }, data: 'x' }]), code: 'BUNDLE_UNSAFE_ENTRY' },
    { name: 'an absolute name', bytes: () => craft([{ header: { name: '/etc/ap-migrate-crafted' }, data: 'x' }]), code: 'BUNDLE_UNSAFE_ENTRY' },
    { name: 'an entry outside root/', bytes: () => craft([{ header: { name: 'elsewhere/x' }, data: 'x' }]), code: 'BUNDLE_UNSAFE_ENTRY' },
    {
      name: 'a symlink whose target escapes, then a file through it',
      bytes: () => craft([{ header: { name: 'root/escape', type: 'symlink', linkname: '../../../outside' } }, { header: { name: 'root/escape/pwned' }, data: 'pwned' }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    {
      name: 'writing through an allowed absolute symlink (to the victim directory)',
      bytes: () => craft([{ header: { name: 'root/escape', type: 'symlink', linkname: outside } }, { header: { name: 'root/escape/pwned' }, data: 'pwned' }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    {
      name: 'a symlink that escapes only once the links it goes through are followed (a -> r/.., r -> .)',
      bytes: () => craft([{ header: { name: 'root/later', type: 'symlink', linkname: 'r/..' } }, { header: { name: 'root/r', type: 'symlink', linkname: '.' } }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    ...['/etc/passwd', 'root/../../../../etc/passwd', 'root/etc/passwd'].map((linkname) => ({
      name: `a hard link to ${linkname}`,
      bytes: () => craft([{ header: { name: 'root/passwd', type: 'link' as const, linkname } }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    })),
    { name: 'a device node', bytes: () => craft([{ header: { name: 'root/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 } }]), code: 'BUNDLE_UNSAFE_ENTRY' },
    { name: 'a setuid file', bytes: () => craft([{ header: { name: 'root/su', mode: 0o4755 }, data: 'x' }]), code: 'BUNDLE_UNSAFE_ENTRY' },
    { name: 'a setgid file', bytes: () => craft([{ header: { name: 'root/sg', mode: 0o2755 }, data: 'x' }]), code: 'BUNDLE_UNSAFE_ENTRY' },
    { name: 'a file as the root', bytes: () => craft([{ header: { name: 'root' }, data: 'x' }]), code: 'BUNDLE_UNSAFE_ENTRY' },
    {
      name: 'a file below a file',
      bytes: () => craft([{ header: { name: 'root/f' }, data: 'x' }, { header: { name: 'root/f/g' }, data: 'y' }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    {
      name: 'a file over a directory',
      bytes: () => craft([{ header: { name: 'root/d', type: 'directory' } }, { header: { name: 'root/d' }, data: 'x' }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    {
      name: 'a symlink below a symlink',
      bytes: () => craft([{ header: { name: 'root/s', type: 'symlink', linkname: '/' } }, { header: { name: 'root/s/t', type: 'symlink', linkname: 'x' } }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    {
      name: 'a symlink loop resolved (a -> b, b -> a)',
      bytes: () => craft([{ header: { name: 'root/a', type: 'symlink', linkname: 'b/x' } }, { header: { name: 'root/b', type: 'symlink', linkname: 'a/x' } }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    // seeds.test.ts: a seeded entry (no seed is ever offered here)
    {
      name: 'a seeded entry naming the host seed',
      bytes: () => craft([{ header: { name: 'root/etc/passwd', size: 0, pax: { [SEED_PAX.from]: 'host', [SEED_PAX.sha256]: 'a'.repeat(64), [SEED_PAX.size]: '10' } } }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    {
      name: 'a seeded entry naming the resume seed',
      bytes: () => craft([{ header: { name: 'root/x', size: 0, pax: { [SEED_PAX.from]: 'resume', [SEED_PAX.sha256]: 'b'.repeat(64), [SEED_PAX.size]: '1' } } }]),
      code: 'BUNDLE_UNSAFE_ENTRY',
    },
    // metadata
    { name: 'a plain tar (first entry is not bundle.json)', bytes: () => craft([{ header: { name: 'x' }, data: 'x' }], false), code: 'BUNDLE_MANIFEST_INVALID' },
    { name: 'bundle.json that is not JSON', bytes: () => craft([{ header: { name: 'bundle.json' }, data: '{nope' }], false), code: 'BUNDLE_MANIFEST_INVALID' },
    {
      name: 'an entry after the manifest',
      bytes: () => craft([manifestOf([]), { header: { name: 'root/late' }, data: 'x' }]),
      code: 'BUNDLE_MANIFEST_MISMATCH',
    },
    { name: 'a manifest listing a file not sent', bytes: () => craft([manifestOf([{ path: '/ghost', type: 'file', sha256: 'c'.repeat(64) }])]), code: 'BUNDLE_MANIFEST_MISMATCH' },
    { name: 'a file the manifest does not list', bytes: () => craft([{ header: { name: 'root/extra' }, data: 'x' }, manifestOf([])]), code: 'BUNDLE_MANIFEST_MISMATCH' },
    {
      name: 'a symlink whose target differs from the manifest',
      bytes: () => craft([{ header: { name: 'root/l', type: 'symlink', linkname: 'a' } }, manifestOf([{ path: '/l', type: 'symlink', linkTarget: 'b' }])]),
      code: 'BUNDLE_MANIFEST_MISMATCH',
    },
    // damaged real bundles (unsafe.test.ts, receiver-input.test.ts)
    {
      name: 'a flipped data byte',
      bytes: () => {
        const damaged = Buffer.from(real);
        const at = damaged.indexOf(marker);
        damaged.writeUInt8(damaged.readUInt8(at + 10) ^ 0x01, at + 10);
        return damaged;
      },
      code: 'BUNDLE_HASH_MISMATCH',
    },
    { name: 'cut mid-entry', bytes: () => real.subarray(0, Math.floor(real.length / 2)), code: 'BUNDLE_TRUNCATED' },
    { name: 'cut right after a large file header', bytes: () => real.subarray(0, largeHeader() + 512), code: 'BUNDLE_TRUNCATED' },
    { name: 'cut inside a large file, in 511-byte chunks', bytes: () => real.subarray(0, largeHeader() + 512 + 65_536), stream: (b) => chunked(b, 511), code: 'BUNDLE_TRUNCATED' },
    { name: 'cut cleanly before the manifest', bytes: () => real.subarray(0, real.indexOf(Buffer.from('manifest.json\0'))), code: 'BUNDLE_TRUNCATED' },
    {
      name: 'a damaged header',
      bytes: () => {
        const damaged = Buffer.from(real);
        damaged.writeUInt8(damaged.readUInt8(512 * 3 + 100) ^ 0x40, 512 * 3 + 100);
        return damaged;
      },
      code: 'BUNDLE_CORRUPT',
    },
    { name: 'an empty stream', bytes: () => Buffer.alloc(0), code: 'BUNDLE_TRUNCATED' },
    { name: 'only the end-of-archive blocks', bytes: () => Buffer.alloc(1024), code: 'BUNDLE_TRUNCATED' },
    {
      name: 'a stream closed without an error inside a large file',
      bytes: () => real.subarray(0, largeHeader() + 512 + 100_000),
      stream: (b) => {
        const input = new Readable({ read() {} });
        input.push(b);
        setTimeout(() => input.destroy(), 50);
        return input;
      },
      code: 'BUNDLE_TRUNCATED',
    },
    {
      name: 'an input that fails with an error',
      bytes: () => real.subarray(0, largeHeader() + 512 + 100_000),
      stream: (b) => {
        const input = new Readable({ read() {} });
        input.push(b);
        setTimeout(() => input.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })), 50);
        return input;
      },
      code: 'BUNDLE_IO',
    },
  ];

  /** Nothing outside the case's staging changed, and nothing of it is left. */
  async function expectNothingLeft(parent: string): Promise<void> {
    expect((await readdir(parent)).sort()).toEqual(['canary']);
    expect(await readFile(join(parent, 'canary'), 'utf8')).toBe('canary');
    expect(await readdir(outside)).toEqual(['sentinel']);
    expect(await readFile(join(outside, 'sentinel'), 'utf8')).toBe('untouched');
    const s = await stat('/etc/passwd');
    expect({ nlink: s.nlink, size: s.size }).toEqual(passwd);
    await expect(lstat('/etc/ap-migrate-crafted')).rejects.toThrow();
  }

  const runs = [
    ...TAR_FLAVOURS.map((f) => ({ label: `${f.name} (local)`, flavour: f, over: 'local' as const })),
    { label: 'GNU tar (OpenSSH)', flavour: TAR_FLAVOURS[0], over: 'ssh' as const },
  ];
  for (const run of runs) {
    it(`${run.label}: every case is refused with unpackBundle's code and nothing escapes`, async () => {
      const shim = run.flavour.program ? tarShim(join(work, `shim-${run.over}-${run.flavour.name.replace(/\W/g, '')}`), run.flavour.program) : undefined;
      const transport = withPathFirst(run.over === 'local' ? local : ssh, shim);
      const results: string[] = [];
      for (const c of CASES) {
        const bytes = await c.bytes();
        const input = () => (c.stream ? c.stream(bytes) : Readable.from([bytes]));
        const parent = join(work, `case-${Math.random().toString(36).slice(2)}`);
        await mkdir(parent);
        await writeFile(join(parent, 'canary'), 'canary');
        const reference = await unpackBundle(input(), join(parent, 'reference'));
        expect(reference.isErr(), `${c.name}: unpackBundle accepted it`).toBe(true);
        expect(reference._unsafeUnwrapErr().code, `${c.name}: unpackBundle`).toBe(c.code);
        const result = await receivePosix(transport, input(), join(parent, 'staging', 'root'));
        expect(result.isErr(), `${c.name}: the POSIX receiver accepted it`).toBe(true);
        const error = result._unsafeUnwrapErr();
        expect(error.code, `${c.name}: ${error.message}`).toBe(c.code);
        // The staging parent the receiver made is left (empty), as unpackBundle leaves its parent.
        await rm(join(parent, 'staging'), { recursive: false, force: true }).catch(async () => {
          expect(await readdir(join(parent, 'staging')), `${c.name}: left in staging`).toEqual([]);
          await rm(join(parent, 'staging'), { recursive: true });
        });
        await expectNothingLeft(parent);
        await rm(parent, { recursive: true, force: true });
        results.push(`${c.name}: ${error.code}`);
      }
      expect(results).toHaveLength(CASES.length);
    }, 120_000);
  }
});
