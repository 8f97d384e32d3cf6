/**
 * Seeded entries: what the destination already has is not sent again. A second round seeded from
 * the first round's staged tree, a resume from the files an interrupted unpack kept, host files
 * deduplicated against the destination's own system; and the rules that keep a hostile bundle
 * from using seeds to read what it must not (an unoffered seed, a host file no user could read,
 * a link in a seed tree, content that differs from the claim).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packBundle, type PackOptions } from '../../src/bundle/pack.js';
import { unpackBundle, type UnpackOptions } from '../../src/bundle/unpack.js';
import { DEFAULT_HOST_SEED_ROOTS, journalPathOf, SEED_PAX } from '../../src/bundle/seeds.js';
import { takeInventory } from '../../src/bundle/seed-store.js';
import { encodeTarHeader } from '../../src/bundle/tar-header.js';
import { ResourceProfileSchema, type ResourceProfile } from '../../src/policy/profile.js';
import { skipUnless } from '../helpers/requirements.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

function profileOf(files: string[], trees: string[] = []): ResourceProfile {
  return ResourceProfileSchema.parse({
    executable: '/usr/bin/env',
    executableSize: statSync('/usr/bin/env').size,
    argv: ['env'],
    cwd: '/',
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
    files: files.map((path) => ({ path, kind: 'regular', access: ['read'], size: statSync(path).size })),
    trees: trees.map((path) => ({ path, reason: 'data-root' })),
  });
}

/** Pack into memory (small test trees), counting the bytes. */
async function packToBuffer(profile: ResourceProfile, options: PackOptions): Promise<{ bytes: Buffer; report: Awaited<ReturnType<typeof packBundle>> }> {
  const chunks: Buffer[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (chunks.push(chunk), done()) });
  const report = await packBundle(profile, sink, options);
  return { bytes: Buffer.concat(chunks), report };
}

const unpack = (bytes: Buffer, dir: string, options: UnpackOptions = {}) => unpackBundle(Readable.from([bytes]), dir, options);

describe.skipIf(skipUnless('root'))('seeded entries', () => {
  let work: string;
  let tree: string;
  const big = randomBytes(3 * 1024 * 1024);

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'apm-seeds-'));
    tree = join(work, 'data');
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'big.bin'), big);
    for (let i = 0; i < 20; i++) await writeFile(join(tree, 'sub', `f${i}.txt`), `file ${i}\n`.repeat(100));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('a second round seeded from the first staged tree sends only what changed, and the tree is exact', async () => {
    const profile = profileOf([], [tree]);
    const first = await packToBuffer(profile, { extraTrees: [tree] });
    const roundOne = join(work, 'r1');
    (await unpack(first.bytes, roundOne))._unsafeUnwrap();
    expect(existsSync(journalPathOf(roundOne))).toBe(true);

    await writeFile(join(tree, 'sub', 'f3.txt'), 'changed\n');
    await writeFile(join(tree, 'sub', 'new.txt'), 'new\n');
    await rm(join(tree, 'sub', 'f4.txt'));
    const held = await takeInventory({ staged: roundOne });
    expect(Object.keys(held)).toContain(`${tree}/big.bin`);
    const second = await packToBuffer(profile, { extraTrees: [tree], held });
    const report = second.report._unsafeUnwrap();
    // big.bin and 18 unchanged small files were not sent: far fewer bytes than the first round.
    // big.bin, the 18 unchanged small files and the executable.
    expect(report.seeded.files).toBe(20);
    expect(report.seeded.bytes).toBeGreaterThanOrEqual(big.length);
    expect(second.bytes.length).toBeLessThan(first.bytes.length / 10);

    const roundTwo = join(work, 'r2');
    const unpacked = (await unpack(second.bytes, roundTwo, { seeds: { staged: roundOne } }))._unsafeUnwrap();
    expect(unpacked.verified).toBe(true);
    expect(unpacked.seeded.files).toBe(20);
    const at = (p: string) => join(roundTwo, tree, p);
    expect(sha(readFileSync(at('big.bin')))).toBe(sha(big));
    expect(readFileSync(at('sub/f3.txt'), 'utf8')).toBe('changed\n');
    expect(readFileSync(at('sub/new.txt'), 'utf8')).toBe('new\n');
    expect(existsSync(at('sub/f4.txt'))).toBe(false);
    // Removing the first round leaves the second whole (links, not references).
    await rm(roundOne, { recursive: true });
    expect(sha(readFileSync(at('big.bin')))).toBe(sha(big));
  });

  it('a cut stream keeps what was verified; the retry sends only the rest', async () => {
    const profile = profileOf([], [tree]);
    const full = await packToBuffer(profile, { extraTrees: [tree] });
    const resume = join(work, 'resume');
    // Everything up to a little past big.bin, in 64 KiB pieces as a socket delivers them, then the connection drops.
    const half = full.bytes.indexOf(Buffer.from('sub/f1')) + 512;
    let offset = 0;
    const cut = new Readable({
      read() {
        if (offset < half) {
          this.push(full.bytes.subarray(offset, Math.min(half, offset + 65536)));
          offset += 65536;
        } else {
          setTimeout(() => this.destroy(), 100);
        }
      },
    });
    const cutting = unpackBundle(cut, join(work, 'attempt1'), { keepPartialAt: resume });
    expect((await cutting)._unsafeUnwrapErr().code).toBe('BUNDLE_TRUNCATED');
    expect(existsSync(join(work, 'attempt1'))).toBe(false);
    expect(existsSync(journalPathOf(resume))).toBe(true);

    const held = await takeInventory({ resume });
    const retry = await packToBuffer(profile, { extraTrees: [tree], held });
    expect(retry.report._unsafeUnwrap().seeded.bytes).toBeGreaterThanOrEqual(big.length);
    expect(retry.bytes.length).toBeLessThan(full.bytes.length * 0.2);
    const done = (await unpack(retry.bytes, join(work, 'attempt2'), { seeds: { resume } }))._unsafeUnwrap();
    expect(done.verified).toBe(true);
    expect(sha(readFileSync(join(work, 'attempt2', tree, 'big.bin')))).toBe(sha(big));
  });

  it('host files the destination already has travel as seeds and are copied, not linked', async () => {
    const profile = profileOf(['/usr/bin/env', '/etc/hostname']);
    const held = await takeInventory({ host: { roots: [...DEFAULT_HOST_SEED_ROOTS], paths: ['/usr/bin/env', '/etc/shadow'] } });
    expect(held['/usr/bin/env']?.from).toBe('host');
    // Not world-readable: never offered, whatever the bundle asks.
    expect(held['/etc/shadow']).toBeUndefined();
    const packed = await packToBuffer(profile, { held });
    expect(packed.report._unsafeUnwrap().seeded.bySeed.host?.files).toBe(1);
    const dir = join(work, 'host');
    const done = (await unpack(packed.bytes, dir, { seeds: { hostRoots: DEFAULT_HOST_SEED_ROOTS } }))._unsafeUnwrap();
    expect(done.seeded.bytes).toBe(statSync('/usr/bin/env').size);
    expect(statSync(join(dir, 'usr/bin/env')).ino).not.toBe(statSync('/usr/bin/env').ino);
    expect(sha(readFileSync(join(dir, 'usr/bin/env')))).toBe(sha(readFileSync('/usr/bin/env')));
  });

  /** A bundle whose one data entry is a seeded entry for `path` claiming `content`'s hash. */
  function craftedSeedBundle(path: string, from: string, content: Buffer): Buffer {
    const block = (data: Buffer) => Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
    const fileEntry = (name: string, data: Buffer) => Buffer.concat([encodeTarHeader({ name, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: data.length }), block(data)]);
    const info = { kind: 'ap-migrate-bundle', formatVersion: 1, createdAt: new Date().toISOString(), estimatedEntries: 1, estimatedBytes: 0, profile: profileOf([]) };
    const entry = { path, type: 'file', size: content.length, mode: 0o644, uid: 0, gid: 0, mtime: 0, sha256: sha(content) };
    const manifest = { kind: 'ap-migrate-manifest', formatVersion: 1, entries: [entry], counts: { entries: { file: 1 }, skipped: {} }, dataBytes: content.length, warnings: [] };
    const seeded = encodeTarHeader({ name: `root${path}`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 0, pax: { [SEED_PAX.from]: from, [SEED_PAX.sha256]: sha(content), [SEED_PAX.size]: String(content.length) } });
    return Buffer.concat([fileEntry('bundle.json', Buffer.from(JSON.stringify(info))), seeded, fileEntry('manifest.json', Buffer.from(JSON.stringify(manifest))), Buffer.alloc(1024)]);
  }

  it('refuses a seed the destination did not offer, a host file no user could read, and a claim the data does not match', async () => {
    const shadow = readFileSync('/etc/shadow');
    const notOffered = await unpack(craftedSeedBundle('/etc/passwd', 'host', readFileSync('/etc/passwd')), join(work, 'h1'));
    expect(notOffered._unsafeUnwrapErr().code).toBe('BUNDLE_UNSAFE_ENTRY');
    const unreadable = await unpack(craftedSeedBundle('/etc/shadow', 'host', shadow), join(work, 'h2'), { seeds: { hostRoots: DEFAULT_HOST_SEED_ROOTS } });
    expect(unreadable._unsafeUnwrapErr().code).toBe('BUNDLE_SEED_MISSING');
    const wrong = await unpack(craftedSeedBundle('/usr/bin/env', 'host', Buffer.from('not env')), join(work, 'h3'), { seeds: { hostRoots: DEFAULT_HOST_SEED_ROOTS } });
    expect(wrong._unsafeUnwrapErr().code).toBe('BUNDLE_SEED_MISSING');
    for (const d of ['h1', 'h2', 'h3']) expect(existsSync(join(work, d))).toBe(false);
  });

  it('a seed tree path through a symlink is never followed, even when the journal lists it', async () => {
    const store = join(work, 'store');
    await mkdir(store, { mode: 0o700 });
    await symlink('/etc', join(store, 'etc'));
    const shadow = readFileSync('/etc/shadow');
    await writeFile(journalPathOf(store), JSON.stringify({ kind: 'ap-migrate-journal', version: 1, files: [['/etc/shadow', shadow.length, sha(shadow)]] }));
    await chmod(journalPathOf(store), 0o600);
    expect(await takeInventory({ resume: store })).toEqual({});
    const result = await unpack(craftedSeedBundle('/etc/shadow', 'resume', shadow), join(work, 'h4'), { seeds: { resume: store } });
    expect(result._unsafeUnwrapErr().code).toBe('BUNDLE_SEED_MISSING');
    expect(await readFile(journalPathOf(store), 'utf8')).toContain('shadow');
  });
});
