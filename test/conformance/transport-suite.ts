/**
 * One behaviour suite every Transport must pass (local, ssh2, OpenSSH), run against real
 * destinations. Call `runTransportConformance(name, factory)` inside a describe whose
 * beforeAll has started what the factory needs.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Transport } from '../../src/spec/transport.js';

/** File names no quoting mistake survives. */
export const NASTY_NAMES: readonly string[] = [
  'plain',
  'with space',
  "single'quote",
  'double"quote',
  'new\nline',
  '$(touch pwned)',
  '`touch pwned2`',
  'semi;colon && echo hi',
  'back\\slash',
  'glob*?[a]',
  '-leading-dash',
  'tab\there',
  '~tilde',
  'ünïcødé-日本語-🚀',
  '$HOME',
  '!bang',
  '>redirect',
  "'",
  ' ',
];

/** A stream of `total` pseudo-random bytes whose sha256 is known once it has been read. */
export function randomStream(total: number, chunk = 1024 * 1024): { stream: Readable; sha256: () => string } {
  const hash = createHash('sha256');
  let sent = 0;
  // One random block reused with a counter prefix keeps generation cheap on 2 cores.
  const block = randomBytes(chunk);
  let n = 0;
  const stream = new Readable({
    highWaterMark: chunk,
    read() {
      if (sent >= total) return void this.push(null);
      const size = Math.min(chunk, total - sent);
      const out = Buffer.from(block.subarray(0, size));
      out.writeUInt32BE(n++ >>> 0, 0);
      hash.update(out);
      sent += size;
      this.push(out);
    },
  });
  return { stream, sha256: () => hash.digest('hex') };
}

/** An endless stream of zeros (bounded at `limit` so a broken abort cannot run forever). */
export function endlessStream(limit = 8 * 1024 * 1024 * 1024): Readable {
  const block = Buffer.alloc(256 * 1024);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= limit) return void this.push(null);
      sent += block.length;
      this.push(block);
    },
  });
}

/** Poll `check` until it returns true or `tries` run out (no absolute time asserted). */
export async function eventually(check: () => Promise<boolean>, tries = 50, everyMs = 100): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return false;
}

/** Whether a process whose command line matches the pgrep regex runs at the destination. */
export async function remoteProcessRuns(transport: Transport, regex: string): Promise<boolean> {
  const result = await transport.exec(['pgrep', '-f', '--', regex], { allowNonZeroExit: true });
  return result.isOk() && result.value.code === 0;
}

/** Register the conformance suite for one transport implementation. */
export function runTransportConformance(name: string, factory: () => Promise<Transport>): void {
  describe(`Transport conformance: ${name}`, () => {
    let transport: Transport;
    let scratch: string;

    beforeAll(async () => {
      transport = await factory();
      const made = await transport.exec(['mktemp', '-d', '/tmp/apm-conformance-XXXXXX']);
      scratch = made._unsafeUnwrap().stdout.trim();
    });

    afterAll(async () => {
      if (!transport) return;
      if (scratch) await transport.exec(['rm', '-rf', '--', scratch]);
      (await transport.close())._unsafeUnwrap();
    });

    it('passes every argv element to the remote program exactly', async () => {
      const result = await transport.exec(['printf', '%s\\0', ...NASTY_NAMES]);
      const seen = result._unsafeUnwrap().stdout.split('\0').slice(0, -1);
      expect(seen).toEqual(NASTY_NAMES);
    });

    it('creates files with nasty names and lists exactly those back', async () => {
      const dir = `${scratch}/names`;
      (await transport.exec(['mkdir', '-p', '--', dir]))._unsafeUnwrap();
      // One command: each remote session costs the login shell's start-up.
      (await transport.exec(['touch', '--', ...NASTY_NAMES.map((n) => `${dir}/${n}`)]))._unsafeUnwrap();
      const listed = await transport.exec(['find', dir, '-mindepth', '1', '-printf', '%f\\0']);
      expect(listed._unsafeUnwrap().stdout.split('\0').slice(0, -1).sort()).toEqual([...NASTY_NAMES].sort());
      // Nothing was executed by the names themselves.
      const pwned = await transport.exec(['sh', '-c', 'ls -A "$1" | grep -c pwned || true', 'sh', scratch]);
      expect(pwned._unsafeUnwrap().stdout.trim()).toBe('0');
    });

    it('runs in the given cwd with the given environment', async () => {
      const value = `a b'"$(x)\n;ü`;
      const result = await transport.exec(['sh', '-c', 'pwd; printf %s "$APM_VALUE"'], { cwd: scratch, env: { APM_VALUE: value } });
      const out = result._unsafeUnwrap().stdout;
      expect(out).toBe(`${scratch}\n${value}`);
    });

    it('reports a non-zero exit as EXEC_NONZERO, or returns it when allowed', async () => {
      const failed = await transport.exec(['sh', '-c', 'echo oops >&2; exit 3']);
      expect(failed._unsafeUnwrapErr().code).toBe('EXEC_NONZERO');
      expect(failed._unsafeUnwrapErr().message).toContain('oops');
      const allowed = await transport.exec(['sh', '-c', 'exit 3'], { allowNonZeroExit: true });
      expect(allowed._unsafeUnwrap().code).toBe(3);
    });

    it('streams 100 MB of stdin into a remote command intact, reporting progress', async () => {
      const total = 100 * 1024 * 1024;
      const { stream, sha256 } = randomStream(total);
      let progressed = 0;
      const result = await transport.exec(['sha256sum'], { stdin: stream, onProgress: (p) => (progressed = p.bytes) });
      expect(result._unsafeUnwrap().stdout.split(' ')[0]).toBe(sha256());
      expect(progressed).toBe(total);
    });

    it('uploads a stream to a file (mode 0600 by default) and reads it back', async () => {
      const { stream, sha256 } = randomStream(5 * 1024 * 1024 + 17);
      const path = `${scratch}/up load'd.bin`;
      const uploaded = await transport.upload(stream, path);
      expect(uploaded._unsafeUnwrap().bytes).toBe(5 * 1024 * 1024 + 17);
      const back = await transport.readFile(path);
      expect(createHash('sha256').update(back._unsafeUnwrap()).digest('hex')).toBe(sha256());
      const mode = await transport.exec(['stat', '-c', '%a', '--', path]);
      expect(mode._unsafeUnwrap().stdout.trim()).toBe('600');
      const leftovers = await transport.exec(['sh', '-c', 'ls -A "$1" | grep -c ap-migrate-part || true', 'sh', scratch]);
      expect(leftovers._unsafeUnwrap().stdout.trim()).toBe('0');
    });

    it('refuses a file larger than maxBytes and names a missing one', async () => {
      const path = `${scratch}/exact`;
      (await transport.upload(Readable.from([Buffer.alloc(1000, 7)]), path))._unsafeUnwrap();
      expect((await transport.readFile(path, { maxBytes: 1000 }))._unsafeUnwrap().length).toBe(1000);
      expect((await transport.readFile(path, { maxBytes: 999 }))._unsafeUnwrapErr().code).toBe('FILE_TOO_LARGE');
      expect((await transport.readFile(`${scratch}/no such file`))._unsafeUnwrapErr().code).toBe('FILE_NOT_FOUND');
    });

    it('aborts a stream mid-way with ABORTED and leaves nothing running', async () => {
      const marker = `apm-abort-${randomUUID()}`;
      const controller = new AbortController();
      const result = await transport.exec(['dd', `of=${scratch}/${marker}`, 'bs=64k', 'status=none'], {
        stdin: endlessStream(),
        signal: controller.signal,
        onProgress: (p) => {
          if (p.bytes > 8 * 1024 * 1024) controller.abort();
        },
      });
      expect(result._unsafeUnwrapErr().code).toBe('ABORTED');
      // The regex does not match pgrep's own command line ("d[d]" vs "dd").
      expect(await eventually(async () => !(await remoteProcessRuns(transport, `d[d] of=.*${marker}`)))).toBe(true);
    });

    it('aborts an upload and leaves no partial file', async () => {
      const controller = new AbortController();
      const result = await transport.upload(endlessStream(), `${scratch}/aborted-upload`, {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.bytes > 4 * 1024 * 1024) controller.abort();
        },
      });
      expect(result._unsafeUnwrapErr().code).toBe('ABORTED');
      const listing = await transport.exec(['sh', '-c', 'ls -A "$1" | grep -c aborted-upload || true', 'sh', scratch]);
      expect(listing._unsafeUnwrap().stdout.trim()).toBe('0');
    });

    it('kills a command that exceeds its timeout (EXEC_TIMEOUT, retryable)', async () => {
      const result = await transport.exec(['sleep', '313'], { timeoutMs: 300 });
      const error = result._unsafeUnwrapErr();
      expect(error.code).toBe('EXEC_TIMEOUT');
      expect(error.isRetryable).toBe(true);
      expect(await eventually(async () => !(await remoteProcessRuns(transport, 's[l]eep 313')))).toBe(true);
    });

    it('refuses argv with a NUL byte instead of cutting it short', async () => {
      const result = await transport.exec(['echo', 'a\0b']);
      expect(result._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
    });

    it('closes idempotently; later calls return TRANSPORT_CLOSED', async () => {
      const own = await factory();
      (await own.exec(['true']))._unsafeUnwrap();
      (await own.close())._unsafeUnwrap();
      (await own.close())._unsafeUnwrap();
      expect((await own.exec(['true']))._unsafeUnwrapErr().code).toBe('TRANSPORT_CLOSED');
    });
  });
}
