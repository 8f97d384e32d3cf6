/**
 * Crafted and damaged bundles: each is rejected with its code, nothing lands outside staging,
 * and staging is removed.
 */
import { execFileSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { packBundle } from '../../src/bundle/pack.js';
import { unpackBundle, type UnpackOptions } from '../../src/bundle/unpack.js';
import { skipUnless } from '../helpers/requirements.js';
import { CRAFT_PROFILE, craftBundle, type CraftedEntry } from '../helpers/crafted-bundle.js';

const profile = CRAFT_PROFILE;
const craft = craftBundle;

describe.skipIf(skipUnless('root', 'tool:mkfifo', 'tool:mknod'))('unpackBundle refuses unsafe and damaged bundles', () => {
  let work: string;
  let parent: string;
  let staging: string;
  let outside: string;
  const passwdBefore = { nlink: 0, size: 0 };

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-bundle-unsafe-'));
    outside = join(work, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'sentinel'), 'untouched');
    const passwd = await stat('/etc/passwd');
    passwdBefore.nlink = passwd.nlink;
    passwdBefore.size = passwd.size;
  });

  beforeEach(async () => {
    parent = join(work, `case-${Math.random().toString(36).slice(2)}`);
    await mkdir(parent);
    staging = join(parent, 'staging');
  });

  afterEach(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** Nothing outside staging changed and staging is gone. */
  async function expectNothingLeft(): Promise<void> {
    expect(await readdir(parent)).toEqual([]);
    expect(await readdir(outside)).toEqual(['sentinel']);
    expect(await readFile(join(outside, 'sentinel'), 'utf8')).toBe('untouched');
    expect(await readdir(work)).toEqual(expect.arrayContaining(['outside']));
    expect((await readdir(work)).filter((n) => !n.startsWith('case-') && n !== 'outside' && n !== 'fixtures')).toEqual([]);
    const passwd = await stat('/etc/passwd');
    expect({ nlink: passwd.nlink, size: passwd.size }).toEqual(passwdBefore);
    await expect(lstat('/etc/ap-migrate-crafted')).rejects.toThrow();
  }

  async function expectRejected(archive: Buffer, code: string, options: UnpackOptions = {}): Promise<string> {
    const result = await unpackBundle(Readable.from([archive]), staging, options);
    expect(result.isErr()).toBe(true);
    const error = result._unsafeUnwrapErr();
    expect(error.code, error.message).toBe(code);
    await expectNothingLeft();
    return error.message;
  }

  it('rejects a ../ name (bundle and plain tar)', async () => {
    await expectRejected(await craft([{ header: { name: 'root/../../x' }, data: 'x' }]), 'BUNDLE_UNSAFE_ENTRY');
    await expectRejected(await craft([{ header: { name: '../x' }, data: 'x' }], false), 'BUNDLE_UNSAFE_ENTRY', { requireManifest: false });
    await expectRejected(await craft([{ header: { name: 'a/../../x' }, data: 'x' }], false), 'BUNDLE_UNSAFE_ENTRY', { requireManifest: false });
  });

  it('rejects an absolute name', async () => {
    const message = await expectRejected(
      await craft([{ header: { name: '/etc/ap-migrate-crafted' }, data: 'x' }], false),
      'BUNDLE_UNSAFE_ENTRY',
      { requireManifest: false },
    );
    expect(message).toContain('absolute');
    await expectRejected(await craft([{ header: { name: '/etc/ap-migrate-crafted' }, data: 'x' }]), 'BUNDLE_UNSAFE_ENTRY');
  });

  it('rejects a bundle entry outside root/', async () => {
    await expectRejected(await craft([{ header: { name: 'elsewhere/x' }, data: 'x' }]), 'BUNDLE_UNSAFE_ENTRY');
  });

  it('rejects a symlink whose target escapes the root', async () => {
    const message = await expectRejected(
      await craft([
        { header: { name: 'root/escape', type: 'symlink', linkname: '../../../outside' } },
        { header: { name: 'root/escape/pwned' }, data: 'pwned' },
      ]),
      'BUNDLE_UNSAFE_ENTRY',
    );
    expect(message).toContain('outside the root');
  });

  it('rejects writing through a symlink extracted earlier (absolute target, allowed itself)', async () => {
    // An absolute target is resolved inside the root, so the link itself is fine ...
    const message = await expectRejected(
      await craft([
        { header: { name: 'root/escape', type: 'symlink', linkname: outside } },
        // ... but writing through it would, outside a chroot, write into the real directory.
        { header: { name: 'root/escape/pwned' }, data: 'pwned' },
      ]),
      'BUNDLE_UNSAFE_ENTRY',
    );
    expect(message).toContain('through the symlink');
  });

  it('rejects a symlink that escapes only once the links it goes through are followed', async () => {
    await expectRejected(
      await craft(
        [
          { header: { name: 'later', type: 'symlink', linkname: 'r/..' } },
          { header: { name: 'r', type: 'symlink', linkname: '.' } },
        ],
        false,
      ),
      'BUNDLE_UNSAFE_ENTRY',
      { requireManifest: false },
    );
  });

  it('rejects hard links to outside or to entries not seen before', async () => {
    for (const linkname of ['/etc/passwd', 'root/../../../../etc/passwd', 'root/etc/passwd']) {
      await expectRejected(await craft([{ header: { name: 'root/passwd', type: 'link', linkname } }]), 'BUNDLE_UNSAFE_ENTRY');
    }
    await expectRejected(
      await craft([{ header: { name: 'passwd', type: 'link', linkname: '../../../../etc/passwd' } }], false),
      'BUNDLE_UNSAFE_ENTRY',
      { requireManifest: false },
    );
  });

  it('rejects a device node unless allowed', async () => {
    const device: CraftedEntry = { header: { name: 'null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 } };
    await expectRejected(await craft([device], false), 'BUNDLE_UNSAFE_ENTRY', { requireManifest: false });
    const allowed = await unpackBundle(Readable.from([await craft([device], false)]), staging, { requireManifest: false, allowDevices: true });
    expect(allowed.isOk(), allowed.isErr() ? allowed.error.message : '').toBe(true);
    const stats = await lstat(join(staging, 'null'));
    expect(stats.isCharacterDevice()).toBe(true);
    expect(stats.mode & 0o7777).toBe(0o666);
  });

  it('rejects setuid and setgid files by default, strips them on request', async () => {
    const setuid: CraftedEntry = { header: { name: 'root/su', mode: 0o4755 }, data: 'x' };
    const setgid: CraftedEntry = { header: { name: 'root/sg', mode: 0o2755 }, data: 'x' };
    expect(await expectRejected(await craft([setuid]), 'BUNDLE_UNSAFE_ENTRY')).toContain('setuid');
    await expectRejected(await craft([setgid]), 'BUNDLE_UNSAFE_ENTRY');
    const stripped = await unpackBundle(Readable.from([await craft([setuid], false)]), staging, { requireManifest: false, setuid: 'strip' });
    expect(stripped._unsafeUnwrap().strippedSetuid).toEqual(['root/su']);
    expect((await lstat(join(staging, 'root', 'su'))).mode & 0o7777).toBe(0o755);
  });

  describe('damaged real bundles', () => {
    let bundle: Buffer;
    const marker = 'MARKER-'.repeat(100);

    beforeAll(async () => {
      const tree = join(work, 'fixtures', 'tree');
      await mkdir(tree, { recursive: true });
      await writeFile(join(tree, 'data.txt'), marker);
      await writeFile(join(tree, 'other.bin'), Buffer.alloc(200_000, 1));
      const path = join(work, 'fixtures', 'real.tar');
      const result = await packBundle(
        { ...profile, executable: join(tree, 'data.txt'), cwd: tree, files: [{ path: join(tree, 'other.bin'), kind: 'regular', access: ['read'], size: 200_000 }] },
        createWriteStream(path),
      );
      expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
      bundle = await readFile(path);
    });

    it('a flipped data byte fails verification with BUNDLE_HASH_MISMATCH', async () => {
      const damaged = Buffer.from(bundle);
      const at = damaged.indexOf(marker);
      expect(at).toBeGreaterThan(0);
      damaged.writeUInt8(damaged.readUInt8(at + 10) ^ 0x01, at + 10);
      await expectRejected(damaged, 'BUNDLE_HASH_MISMATCH');
    });

    it('a stream cut mid-entry is BUNDLE_TRUNCATED', async () => {
      await expectRejected(bundle.subarray(0, Math.floor(bundle.length / 2)), 'BUNDLE_TRUNCATED');
    });

    it('a stream cut cleanly before the manifest is BUNDLE_TRUNCATED', async () => {
      const manifestHeader = bundle.indexOf(Buffer.from('manifest.json\0'));
      expect(manifestHeader % 512).toBe(0);
      await expectRejected(bundle.subarray(0, manifestHeader), 'BUNDLE_TRUNCATED');
    });

    it('a damaged header is BUNDLE_CORRUPT', async () => {
      const damaged = Buffer.from(bundle);
      // The mode field of an early header: the checksum no longer matches.
      damaged.writeUInt8(damaged.readUInt8(512 * 3 + 100) ^ 0x40, 512 * 3 + 100);
      await expectRejected(damaged, 'BUNDLE_CORRUPT');
    });

    it('refuses a staging directory that is not empty, and leaves it alone', async () => {
      await mkdir(staging);
      await writeFile(join(staging, 'keep'), 'mine');
      const result = await unpackBundle(Readable.from([bundle]), staging);
      expect(result._unsafeUnwrapErr().code).toBe('BUNDLE_STAGING_NOT_EMPTY');
      expect(await readFile(join(staging, 'keep'), 'utf8')).toBe('mine');
    });
  });
});

describe.skipIf(skipUnless('root', 'tool:mount', 'tool:umount'))('unpackBundle on a full disk', () => {
  let work: string;
  let mountPoint: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ap-bundle-nospace-'));
    mountPoint = join(work, 'small');
    await mkdir(mountPoint);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'ap-migrate-test', mountPoint]);
  });

  afterAll(async () => {
    if (mountPoint) execFileSync('umount', [mountPoint], { stdio: 'ignore' });
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('fails with NO_SPACE and removes staging', async () => {
    const tree = join(work, 'tree');
    await mkdir(tree);
    await writeFile(join(tree, 'big.bin'), Buffer.alloc(5 * 1024 * 1024, 3));
    const path = join(work, 'big.tar');
    const packed = await packBundle({ ...profile, executable: join(tree, 'big.bin'), cwd: tree }, createWriteStream(path));
    expect(packed.isOk()).toBe(true);
    const staging = join(mountPoint, 'staging');
    const result = await unpackBundle(Readable.from([await readFile(path)]), staging);
    expect(result._unsafeUnwrapErr().code).toBe('NO_SPACE');
    expect(await readdir(mountPoint)).toEqual([]);
  });
});
