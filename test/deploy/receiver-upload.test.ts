/**
 * The receiver's upload where the destination has gzip: one command sends it gzipped and keeps
 * it only when it is not there; a cut or wrong stream installs nothing and leaves no part file.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { ENSURE_RECEIVER_SCRIPT, FIND_RECEIVER_SCRIPT, UNPACK_THEN_SETTLE_SCRIPT } from '../../src/destination/receiver.js';
import { runScript } from '../../src/destination/run-script.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { skipUnless } from '../helpers/requirements.js';

describe.skipIf(skipUnless('tool:gzip'))('ENSURE_RECEIVER_SCRIPT', () => {
  const work = mkdtempSync(join(tmpdir(), 'ap-ensure-rx-'));
  const transport = createLocalTransport();
  afterAll(async () => {
    await transport.close();
    rmSync(work, { recursive: true, force: true });
  });
  const receiver = Buffer.from('/* receiver */\n'.repeat(5000));
  const ensure = (dir: string, stdin: Buffer, size = receiver.length) =>
    runScript(transport, ENSURE_RECEIVER_SCRIPT, [dir, join(dir, 'receiver-x.cjs'), String(size)], { cwd: '/', stdin: Readable.from([stdin]), allowNonZeroExit: true });

  it('absent: kept whole, 0600, in a new 0700 directory; present: left as it is, the stream read and dropped', async () => {
    const dir = join(work, 'a', '.ap-migrate');
    const first = (await ensure(dir, gzipSync(receiver)))._unsafeUnwrap();
    expect(first.stdout.trim()).toBe('uploaded');
    expect(readFileSync(join(dir, 'receiver-x.cjs'))).toEqual(receiver);
    expect(statSync(join(dir, 'receiver-x.cjs')).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const second = (await ensure(dir, gzipSync(Buffer.from('something else'))))._unsafeUnwrap();
    expect(second.stdout.trim()).toBe('present');
    expect(second.code).toBe(0);
    expect(readFileSync(join(dir, 'receiver-x.cjs'))).toEqual(receiver);
    expect(readdirSync(dir)).toEqual(['receiver-x.cjs']);
  });

  it('with a path to look at: a second line says whether anything is there (a file, a dangling symlink), uploaded or present alike', async () => {
    const dir = join(work, 'look', '.ap-migrate');
    const look = join(work, 'look', 'resume.journal.json');
    const run = (stdin: Buffer) =>
      runScript(transport, ENSURE_RECEIVER_SCRIPT, [dir, join(dir, 'receiver-x.cjs'), String(receiver.length), look], { cwd: '/', stdin: Readable.from([stdin]), allowNonZeroExit: true });
    expect((await run(gzipSync(receiver)))._unsafeUnwrap().stdout.trim().split('\n')).toEqual(['uploaded', 'none']);
    writeFileSync(look, '{}');
    expect((await run(gzipSync(receiver)))._unsafeUnwrap().stdout.trim().split('\n')).toEqual(['present', 'there']);
    rmSync(look);
    symlinkSync(join(work, 'nowhere'), look);
    expect((await run(gzipSync(receiver)))._unsafeUnwrap().stdout.trim().split('\n')).toEqual(['present', 'there']);
  });

  it('FIND_RECEIVER_SCRIPT (no gzip there): present or absent, then the look line when asked', async () => {
    const dir = join(work, 'find', '.ap-migrate');
    const look = join(work, 'find', 'kept.journal.json');
    const find = async (...extra: string[]) => (await runScript(transport, FIND_RECEIVER_SCRIPT, [dir, join(dir, 'receiver-x.cjs'), ...extra], { cwd: '/' }))._unsafeUnwrap().stdout.trim().split('\n');
    expect(await find()).toEqual(['absent']);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(await find(look)).toEqual(['absent', 'none']);
    writeFileSync(join(dir, 'receiver-x.cjs'), receiver);
    writeFileSync(look, '{}');
    expect(await find(look)).toEqual(['present', 'there']);
  });

  it('a cut stream, a stream that is not gzip, or one of another size installs nothing and leaves no part file', async () => {
    const gz = gzipSync(receiver);
    for (const [name, stdin, size] of [
      ['cut', gz.subarray(0, gz.length >> 1), receiver.length],
      ['not gzip', receiver, receiver.length],
      ['other size', gz, receiver.length + 1],
    ] as const) {
      const dir = join(work, name.replace(' ', '-'));
      const result = (await ensure(dir, stdin, size))._unsafeUnwrap();
      expect(result.code, name).not.toBe(0);
      expect(result.stderr, name).toContain('did not arrive whole');
      expect(readdirSync(dir), name).toEqual([]);
    }
  });

  it('a directory or a symlink where the receiver goes is refused, not written through', async () => {
    const dir = join(work, 'd');
    (await runScript(transport, 'mkdir -p "$1"', [dir], { cwd: '/' }))._unsafeUnwrap();
    const result = (await runScript(transport, ENSURE_RECEIVER_SCRIPT, [dir, dir, String(receiver.length)], { cwd: '/', stdin: Readable.from([gzipSync(receiver)]), allowNonZeroExit: true }))._unsafeUnwrap();
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('not a regular file');
    expect(readdirSync(dir)).toEqual([]);
    const linkDir = join(work, 'l');
    const target = join(work, 'victim');
    writeFileSync(target, 'untouched');
    (await runScript(transport, 'mkdir -p "$1" && ln -s "$2" "$1/receiver-x.cjs"', [linkDir, target], { cwd: '/' }))._unsafeUnwrap();
    const linked = (await ensure(linkDir, gzipSync(receiver)))._unsafeUnwrap();
    expect(linked.code).not.toBe(0);
    expect(readFileSync(target, 'utf8')).toBe('untouched');
  });
});

describe('UNPACK_THEN_SETTLE_SCRIPT', () => {
  const work = mkdtempSync(join(tmpdir(), 'ap-unpack-settle-'));
  const transport = createLocalTransport();
  afterAll(async () => {
    await transport.close();
    rmSync(work, { recursive: true, force: true });
  });
  const ok = ['sh', '-c', `echo '{"ok":true,"report":{"verified":true}}'`];
  const failing = ['sh', '-c', `echo '{"ok":false,"error":{"code":"BUNDLE_TRUNCATED","message":"cut"}}'; exit 1`];
  const run = (resume: string, root: string, next: string, receiver: string[]) =>
    runScript(transport, UNPACK_THEN_SETTLE_SCRIPT, [resume, root, next, ...receiver], { cwd: '/', allowNonZeroExit: true });

  it('a verified round settles: the resume store goes, a delta round replaces the tree; the receiver reply stays the last line', async () => {
    const dir = join(work, 'ok');
    (await runScript(transport, 'mkdir -p "$1/resume" "$1/root" "$1/next" && echo old >"$1/root/f" && echo new >"$1/next/f" && : >"$1/next.journal.json"', [dir], { cwd: '/' }))._unsafeUnwrap();
    const result = (await run(join(dir, 'resume'), join(dir, 'root'), join(dir, 'next'), ok))._unsafeUnwrap();
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout.trim().split('\n').pop()!).ok).toBe(true);
    expect(readdirSync(dir).sort()).toEqual(['root', 'root.journal.json']);
    expect(readFileSync(join(dir, 'root', 'f'), 'utf8')).toBe('new\n');
  });

  it('a receiver that failed settles nothing (what a retry resumes from is kept) and its status stays', async () => {
    const dir = join(work, 'failed');
    (await runScript(transport, 'mkdir -p "$1/resume" "$1/root"', [dir], { cwd: '/' }))._unsafeUnwrap();
    const result = (await run(join(dir, 'resume'), join(dir, 'root'), '', failing))._unsafeUnwrap();
    expect(result.code).toBe(1);
    expect(JSON.parse(result.stdout.trim().split('\n').pop()!).error.code).toBe('BUNDLE_TRUNCATED');
    expect(readdirSync(dir).sort()).toEqual(['resume', 'root']);
  });

  it('a settle that fails after a verified round is a reply of its own, RECEIVE_FAILED', async () => {
    const dir = join(work, 'no-next');
    (await runScript(transport, 'mkdir -p "$1/root"', [dir], { cwd: '/' }))._unsafeUnwrap();
    const result = (await run(join(dir, 'resume'), join(dir, 'root'), join(dir, 'missing-next'), ok))._unsafeUnwrap();
    expect(result.code).toBe(1);
    const reply = JSON.parse(result.stdout.trim().split('\n').pop()!);
    expect(reply).toMatchObject({ ok: false, error: { code: 'RECEIVE_FAILED' } });
  });
});
