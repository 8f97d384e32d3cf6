/**
 * Wire compression (src/transfer/compression.ts): round trips through the real tools and a local
 * `sh -c` running the destination wrapper, failures of the decompressor and of the compressor,
 * no compressor child left behind, the codec choice, the probe and the link measurement.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gunzipSync } from 'node:zlib';
import { okAsync } from 'neverthrow';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ApMigrateError } from '../../src/errors.js';
import {
  chooseCodec,
  compressStream,
  decompressingArgv,
  decompressorFailure,
  DECOMPRESSOR_FAILED_LINE,
  DECOMPRESSOR_FAILED_STATUS,
  DEFAULT_COMPRESSOR_BYTES_PER_SECOND,
  localCompressors,
  looksIncompressible,
  measureLinkThroughput,
  secondLinkSample,
  firstIsEnough,
  probeCodecs,
  type CodecChoiceInput,
  type HostCodecs,
  type WireCodec,
} from '../../src/transfer/compression.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createThrottle } from '../../src/transfer/throttle.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { createSshTransport } from '../../src/transports/ssh.js';
import type { Transport } from '../../src/spec/transport.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const MiB = 1024 * 1024;

/** A few MiB of mixed data: random (incompressible), text-like, zeros, a little of each again. */
function mixedData(): Buffer {
  const words = ['alpha', 'beta', 'gamma', 'delta', 'config', 'listen', 'port', '8080', '/var/lib', 'true', '\n', '  '];
  let seed = 7;
  const text: string[] = [];
  for (let size = 0; size < 2 * MiB; ) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const word = words[seed % words.length] as string;
    text.push(word, ' ');
    size += word.length + 1;
  }
  return Buffer.concat([randomBytes(MiB), Buffer.from(text.join('')), Buffer.alloc(512 * 1024), randomBytes(300_000), Buffer.from('tail\n')]);
}

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Chunks of `data`, as a packer would yield them. */
function chunked(data: Buffer, size = 64 * 1024): Readable {
  const chunks: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) chunks.push(data.subarray(at, at + size));
  return Readable.from(chunks, { objectMode: false });
}

/** A source that never ends (random data, on demand), and whether it was destroyed. */
function endless(): { stream: Readable; destroyed: () => boolean } {
  const block = randomBytes(256 * 1024);
  const stream = new Readable({
    read() {
      this.push(block);
    },
  });
  return { stream, destroyed: () => stream.destroyed };
}

/** Pids of this process's children whose command name is `name` (from /proc, no tool needed). */
function childrenNamed(name: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (comm === name && Number(ppid) === process.pid && state !== 'Z') pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
};

async function waitFor(condition: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Run `decompressingArgv(codec, argv)` here with `stdin`, as a destination would. */
async function atDestination(codec: WireCodec, argv: string[], stdin: Readable | Buffer) {
  const transport = createLocalTransport();
  try {
    const result = await transport.exec(decompressingArgv(codec, argv), { stdin, allowNonZeroExit: true });
    return result._unsafeUnwrap();
  } finally {
    await transport.close();
  }
}

const codecsHere: { codec: WireCodec; skip: boolean }[] = [
  { codec: 'zstd', skip: skipUnless('tool:zstd') },
  { codec: 'gzip', skip: skipUnless('tool:gzip') },
  { codec: 'none', skip: false },
];

describe('round trip: compressStream -> sh -c decompressingArgv -> sha256sum', () => {
  const data = mixedData();
  for (const { codec, skip } of codecsHere) {
    it.skipIf(skip)(`${codec}: the command reads exactly the original bytes`, async () => {
      const compressed = compressStream(chunked(data), codec);
      const result = await atDestination(codec, ['sha256sum'], compressed);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(result.stdout.split(' ')[0]).toBe(sha256(data));
    });
  }

  for (const { codec, skip } of codecsHere) {
    it.skipIf(skip)(`${codec}: every argv element reaches the command as it is (positional, never script text)`, async () => {
      const tricky = ['a b', '$(echo injected)', '`id`', "it's", '"; exit 9; "', '*', '', 'line\nbreak', '-n'];
      const result = await atDestination(codec, ['printf', '[%s]', ...tricky], compressStream(chunked(Buffer.from('unused')), codec));
      expect(result.code).toBe(0);
      expect(result.stdout).toBe(tricky.map((t) => `[${t}]`).join(''));
    });
  }

  it.skipIf(skipUnless('tool:zstd'))('the command gets its own status back, and the wrapper leaves nothing in the temp dir', async () => {
    const before = readdirSync(tmpdir()).filter((n) => n.startsWith('ap-migrate-z.'));
    const result = await atDestination('zstd', ['sh', '-c', 'cat >/dev/null; exit 7'], compressStream(chunked(data), 'zstd'));
    expect(result.code).toBe(7);
    expect(result.stderr).not.toContain(DECOMPRESSOR_FAILED_LINE);
    expect(readdirSync(tmpdir()).filter((n) => n.startsWith('ap-migrate-z.'))).toEqual(before);
  });

  it.skipIf(skipUnless('tool:zstd'))('a command that fails before reading everything: its status, not a decompressor failure', async () => {
    const result = await atDestination('zstd', ['sh', '-c', 'head -c 10 >/dev/null; echo gave-up >&2; exit 3'], compressStream(chunked(data), 'zstd'));
    expect(result.code).toBe(3);
    expect(result.stderr.trim()).toBe('gave-up');
  });

  it.skipIf(skipUnless('tool:zstd'))('a command that succeeds without reading everything: the rest is drained and checked', async () => {
    const result = await atDestination('zstd', ['sh', '-c', 'head -c 10 >/dev/null'], compressStream(chunked(data), 'zstd'));
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
  });
});

describe('a corrupt or truncated compressed stream fails the whole command', () => {
  const data = mixedData();
  const cases: { codec: 'zstd' | 'gzip'; tool: string; skip: boolean }[] = [
    { codec: 'zstd', tool: 'zstd -d', skip: skipUnless('tool:zstd') },
    { codec: 'gzip', tool: 'gzip -d', skip: skipUnless('tool:gzip') },
  ];
  for (const { codec, tool, skip } of cases) {
    describe.skipIf(skip)(codec, () => {
      let good: Buffer;
      beforeAll(async () => {
        good = await collect(compressStream(chunked(data), codec));
      });

      const expectDecompressorFailure = (result: { code: number | null; stderr: string }) => {
        expect(result.code).toBe(DECOMPRESSOR_FAILED_STATUS);
        const line = result.stderr.split('\n').find((l) => l.startsWith(DECOMPRESSOR_FAILED_LINE));
        expect(line).toBeDefined();
        expect(line).toContain(`(${tool}`);
      };

      it('corrupted bytes in the middle', async () => {
        const bad = Buffer.from(good);
        for (let i = Math.floor(bad.length / 2); i < Math.floor(bad.length / 2) + 64; i++) bad[i] = (bad[i] as number) ^ 0x5a;
        const result = await atDestination(codec, ['sha256sum'], bad);
        expectDecompressorFailure(result);
        expect(result.stdout.split(' ')[0]).not.toBe(sha256(data));
      });

      it('truncated', async () => {
        expectDecompressorFailure(await atDestination(codec, ['sha256sum'], good.subarray(0, Math.floor(good.length * 0.6))));
      });

      it('not compressed at all', async () => {
        expectDecompressorFailure(await atDestination(codec, ['sha256sum'], data));
      });

      it('the command failing too (it saw a short stream) does not hide it', async () => {
        const result = await atDestination(codec, ['sh', '-c', 'n=$(wc -c); [ "$n" -eq ' + data.length + ' ] || exit 4'], good.subarray(0, Math.floor(good.length / 2)));
        expectDecompressorFailure(result);
        expect(result.stderr).toContain('the command exited with 4');
      });

      it('decompressorFailure() turns it into RECEIVE_FAILED naming the decompressor', async () => {
        const result = await atDestination(codec, ['sha256sum'], good.subarray(0, 100));
        const error = decompressorFailure(codec, result, 'local');
        expect(error?.code).toBe('RECEIVE_FAILED');
        expect(error?.message).toContain(tool);
        expect(decompressorFailure(codec, { code: 1, signal: null, stdout: '', stderr: 'receiver said no' })).toBeUndefined();
        expect(decompressorFailure('none', result)).toBeUndefined();
      });
    });
  }

  it('decompressingArgv with none is the command itself; an empty command fails with 125', async () => {
    expect(decompressingArgv('none', ['node', 'r.cjs', 'unpack', 'x'])).toEqual(['node', 'r.cjs', 'unpack', 'x']);
    const argv = decompressingArgv('zstd', ['node', 'r.cjs']);
    expect(argv.slice(0, 2)).toEqual(['sh', '-c']);
    expect(argv.slice(3)).toEqual(['ap-migrate-decompress', 'node', 'r.cjs']);
    if (!skipUnless('tool:zstd')) {
      const result = await atDestination('zstd', [], Buffer.alloc(0));
      expect(result.code).toBe(DECOMPRESSOR_FAILED_STATUS);
      expect(result.stderr).toContain('no command to run');
    }
  });
});

describe.skipIf(skipUnless('tool:zstd'))('compressStream(zstd): failures and no child left behind', () => {
  const originalPath = process.env.PATH;
  let fakeBin: string | undefined;
  afterEach(() => {
    process.env.PATH = originalPath;
    if (fakeBin) rmSync(fakeBin, { recursive: true, force: true });
    fakeBin = undefined;
  });

  /** Put a fake `zstd` first on PATH (a script: its command name is `zstd` too). */
  function fakeZstd(script: string): void {
    fakeBin = mkdtempSync(join(tmpdir(), 'apm-fake-zstd-'));
    writeFileSync(join(fakeBin, 'zstd'), `#!/bin/sh\n${script}\n`);
    chmodSync(join(fakeBin, 'zstd'), 0o755);
    process.env.PATH = `${fakeBin}:${originalPath}`;
  }

  it('destroying the output mid-way kills the child and destroys the input', async () => {
    const before = childrenNamed('zstd');
    const source = endless();
    const output = compressStream(source.stream, 'zstd');
    const pid = await new Promise<number>((resolve) => {
      output.once('data', () => resolve(childrenNamed('zstd').find((p) => !before.includes(p)) ?? -1));
    });
    expect(pid).toBeGreaterThan(0);
    expect(alive(pid)).toBe(true);
    output.destroy();
    await waitFor(() => !alive(pid));
    expect(source.destroyed()).toBe(true);
    expect(childrenNamed('zstd').filter((p) => !before.includes(p))).toEqual([]);
  });

  it('the signal aborts: ABORTED, child killed', async () => {
    const before = childrenNamed('zstd');
    const controller = new AbortController();
    const output = compressStream(endless().stream, 'zstd', { signal: controller.signal });
    output.once('data', () => controller.abort());
    const error = await collect(output).then(() => undefined, (e: unknown) => e);
    expect(ApMigrateError.isInstance(error) && error.code).toBe('ABORTED');
    await waitFor(() => childrenNamed('zstd').filter((p) => !before.includes(p)).length === 0);
  });

  it('a failing input destroys the output with its error and kills the child', async () => {
    const before = childrenNamed('zstd');
    let sent = 0;
    const input = new Readable({
      read() {
        sent += 1;
        if (sent > 20) this.destroy(new Error('disk went away'));
        else this.push(randomBytes(64 * 1024));
      },
    });
    const error = await collect(compressStream(input, 'zstd')).then(() => undefined, (e: unknown) => e);
    expect(ApMigrateError.isInstance(error) && error.code).toBe('EXEC_FAILED');
    expect(String((error as Error).message)).toContain('disk went away');
    await waitFor(() => childrenNamed('zstd').filter((p) => !before.includes(p)).length === 0);
  });

  it('a compressor exiting non-zero: EXEC_NONZERO with its stderr, the output never ends cleanly', async () => {
    fakeZstd('head -c 1000; echo "zstd: out of memory" >&2; exit 3');
    const output = compressStream(chunked(mixedData()), 'zstd');
    const seen: Buffer[] = [];
    const error = await pipeline(output, new Writable({ write: (c: Buffer, _e, cb) => (seen.push(c), cb()) })).then(() => undefined, (e: unknown) => e);
    expect(ApMigrateError.isInstance(error) && error.code).toBe('EXEC_NONZERO');
    expect(String((error as Error).message)).toContain('out of memory');
    expect(Buffer.concat(seen).length).toBeLessThanOrEqual(1000);
  });

  it('a compressor that cannot start: EXEC_FAILED naming it', async () => {
    process.env.PATH = '/nonexistent-apm';
    const error = await collect(compressStream(chunked(Buffer.from('x')), 'zstd')).then(() => undefined, (e: unknown) => e);
    expect(ApMigrateError.isInstance(error) && error.code).toBe('EXEC_FAILED');
    expect(String((error as Error).message)).toContain('zstd');
  });

  it('a bad level is INVALID_INPUT, and nothing is started', async () => {
    const before = childrenNamed('zstd');
    const error = await collect(compressStream(chunked(Buffer.from('x')), 'zstd', { level: 42 })).then(() => undefined, (e: unknown) => e);
    expect(ApMigrateError.isInstance(error) && error.code).toBe('INVALID_INPUT');
    expect(childrenNamed('zstd').filter((p) => !before.includes(p))).toEqual([]);
  });
});

describe('compressStream(gzip): node:zlib, members, stored blocks', () => {
  it('decodes with zlib too (concatenated members), and stores incompressible blocks', async () => {
    const random = randomBytes(4 * MiB);
    const out = await collect(compressStream(chunked(random), 'gzip'));
    expect(sha256(gunzipSync(out))).toBe(sha256(random));
    // Stored: a few bytes a 64 KiB block and 18 a member, no expansion beyond that.
    expect(out.length).toBeLessThan(random.length * 1.001);
    const text = mixedData().subarray(MiB, 3 * MiB);
    expect((await collect(compressStream(chunked(text), 'gzip'))).length).toBeLessThan(text.length / 3);
  });

  it('looksIncompressible: random yes; text, zeros, machine-code-like and short blocks no', () => {
    expect(looksIncompressible(randomBytes(MiB))).toBe(true);
    expect(looksIncompressible(mixedData().subarray(MiB, 2 * MiB))).toBe(false);
    expect(looksIncompressible(Buffer.alloc(MiB))).toBe(false);
    const halfAndHalf = Buffer.concat([randomBytes(512 * 1024), Buffer.alloc(512 * 1024, 'abc')]);
    expect(looksIncompressible(halfAndHalf)).toBe(false);
    expect(looksIncompressible(randomBytes(4000))).toBe(false);
  });

  it('destroying the output destroys the input', async () => {
    const source = endless();
    const output = compressStream(source.stream, 'gzip');
    await new Promise((resolve) => output.once('data', resolve));
    output.destroy();
    await waitFor(() => source.destroyed());
  });

  it('a failing input fails the output; the signal aborts with ABORTED', async () => {
    const input = new Readable({ read() {} });
    input.push(randomBytes(100));
    setTimeout(() => input.destroy(new Error('packer crashed')), 10);
    const error = await collect(compressStream(input, 'gzip')).then(() => undefined, (e: unknown) => e);
    expect(String((error as Error).message)).toContain('packer crashed');
    const controller = new AbortController();
    const source = endless();
    const output = compressStream(source.stream, 'gzip', { signal: controller.signal });
    output.once('data', () => controller.abort());
    const aborted = await collect(output).then(() => undefined, (e: unknown) => e);
    expect(ApMigrateError.isInstance(aborted) && aborted.code).toBe('ABORTED');
    await waitFor(() => source.destroyed());
  });

  it('none returns the input itself', () => {
    const input = Readable.from(['x']);
    expect(compressStream(input, 'none')).toBe(input);
  });
});

describe('chooseCodec', () => {
  const both: HostCodecs = { zstd: true, gzip: true };
  const gzipOnly: HostCodecs = { zstd: false, gzip: true };
  const neither: HostCodecs = { zstd: false, gzip: false };
  const choose = (over: Partial<CodecChoiceInput>) => chooseCodec({ requested: 'auto', sourceHas: both, destinationHas: both, ...over });

  const table: { name: string; input: Partial<CodecChoiceInput>; codec: WireCodec; reason: RegExp; level?: number }[] = [
    { name: 'auto, both have zstd, no measurement', input: {}, codec: 'zstd', reason: /both ends have zstd/, level: 1 },
    { name: 'auto, destination lacks zstd', input: { destinationHas: gzipOnly }, codec: 'gzip', reason: /only the source has zstd/, level: 1 },
    { name: 'auto, source lacks zstd', input: { sourceHas: gzipOnly }, codec: 'gzip', reason: /only the destination has zstd/ },
    { name: 'auto, neither codec on the destination', input: { destinationHas: neither }, codec: 'none', reason: /no codec both ends have/ },
    { name: 'auto, slow link: zstd level 3', input: { linkBytesPerSecond: 12.5e6 }, codec: 'zstd', reason: /faster than the link \(12.5 MB\/s\).*level 3/, level: 3 },
    { name: 'auto, 1 Gbit/s-ish link: zstd level 1', input: { linkBytesPerSecond: 80e6 }, codec: 'zstd', reason: /level 1/, level: 1 },
    { name: 'auto, slow link, gzip: level 1', input: { destinationHas: gzipOnly, linkBytesPerSecond: 5e6 }, codec: 'gzip', reason: /gzip/, level: 1 },
    { name: 'auto, link faster than the compressor', input: { linkBytesPerSecond: 1.2e9 }, codec: 'none', reason: /would slow the transfer/ },
    { name: 'auto, link equal to the compressor', input: { linkBytesPerSecond: 300e6, compressorBytesPerSecond: 300e6 }, codec: 'none', reason: /at least as fast/ },
    { name: 'auto, measured compressor faster than the link', input: { linkBytesPerSecond: 200e6, compressorBytesPerSecond: 400e6 }, codec: 'zstd', reason: /400 MB\/s/, level: 1 },
    { name: 'auto, gzip slower than a link zstd would beat', input: { destinationHas: gzipOnly, linkBytesPerSecond: 70e6 }, codec: 'none', reason: /gzip compressor \(60 MB\/s\)/ },
    { name: 'explicit zstd, fast link: honoured', input: { requested: 'zstd', linkBytesPerSecond: 1.2e9 }, codec: 'zstd', reason: /requested/, level: 1 },
    { name: 'explicit zstd, slow link: level 3', input: { requested: 'zstd', linkBytesPerSecond: 2e6 }, codec: 'zstd', reason: /requested.*level 3/, level: 3 },
    { name: 'explicit gzip', input: { requested: 'gzip' }, codec: 'gzip', reason: /requested/ },
    { name: 'explicit none', input: { requested: 'none', destinationHas: neither }, codec: 'none', reason: /turned off/ },
  ];
  for (const row of table) {
    it(row.name, () => {
      const choice = choose(row.input)._unsafeUnwrap();
      expect(choice.codec).toBe(row.codec);
      expect(choice.reason).toMatch(row.reason);
      expect(choice.level === undefined).toBe(row.codec === 'none');
      if (row.level !== undefined) expect(choice.level).toBe(row.level);
    });
  }

  const missing: { name: string; input: Partial<CodecChoiceInput>; sides: string[]; message: RegExp }[] = [
    { name: 'zstd, destination lacks it', input: { requested: 'zstd', destinationHas: gzipOnly }, sides: ['destination'], message: /the destination lacks zstd/ },
    { name: 'zstd, source lacks it', input: { requested: 'zstd', sourceHas: gzipOnly }, sides: ['source'], message: /the source lacks zstd/ },
    { name: 'zstd, both lack it', input: { requested: 'zstd', sourceHas: gzipOnly, destinationHas: neither }, sides: ['source', 'destination'], message: /the source and the destination lack zstd/ },
    { name: 'gzip, destination lacks it', input: { requested: 'gzip', destinationHas: neither }, sides: ['destination'], message: /destination lacks gzip/ },
  ];
  for (const row of missing) {
    it(`explicit ${row.name}: TOOL_MISSING naming the side`, () => {
      const error = choose(row.input)._unsafeUnwrapErr();
      expect(error.code).toBe('TOOL_MISSING');
      expect(error.message).toMatch(row.message);
      expect(error.details.sides).toEqual(row.sides);
    });
  }

  it('bad input is INVALID_INPUT naming the field', () => {
    const bad = [
      { requested: 'brotli' as never },
      { linkBytesPerSecond: -1 },
      { compressorBytesPerSecond: Number.NaN },
      { destinationHas: {} as HostCodecs },
    ];
    const paths = bad.map((over) => {
      const error = choose(over)._unsafeUnwrapErr();
      expect(error.code).toBe('INVALID_INPUT');
      return (error.details.issues as { path: string }[])[0]?.path;
    });
    expect(paths).toEqual(['requested', 'linkBytesPerSecond', 'compressorBytesPerSecond', 'destinationHas']);
  });

  it('the defaults: a 75 MB/s link (SSH over 1 Gbit/s) still compresses with zstd, not with gzip', () => {
    expect(DEFAULT_COMPRESSOR_BYTES_PER_SECOND.zstd).toBeGreaterThan(DEFAULT_COMPRESSOR_BYTES_PER_SECOND.gzip);
    expect(choose({ linkBytesPerSecond: 75e6 })._unsafeUnwrap().codec).toBe('zstd');
    expect(choose({ destinationHas: gzipOnly, linkBytesPerSecond: 75e6 })._unsafeUnwrap().codec).toBe('none');
    expect(choose({ destinationHas: gzipOnly, linkBytesPerSecond: 12.5e6 })._unsafeUnwrap().codec).toBe('gzip');
  });
});

describe('probeCodecs', () => {
  it('one sh -c probe, the tool names as positional parameters', async () => {
    const seen: string[][] = [];
    const has = await probeCodecs((argv) => {
      seen.push(argv);
      return okAsync({ stdout: '/usr/bin/ignored\nzstd\nmkfifo\nmktemp\n' });
    });
    expect(has._unsafeUnwrap()).toEqual({ zstd: true, gzip: false });
    expect(seen).toHaveLength(1);
    const [argv] = seen as [string[]];
    expect(argv.slice(0, 2)).toEqual(['sh', '-c']);
    expect(argv.slice(3)).toEqual(['ap-migrate-probe', 'zstd', 'gzip', 'mkfifo', 'mktemp']);
    expect(argv[2]).not.toMatch(/zstd|gzip/);
  });

  it('a codec without mkfifo or mktemp does not count (the wrapper needs them)', async () => {
    const has = await probeCodecs(() => okAsync({ stdout: 'zstd\ngzip\nmktemp\n' }));
    expect(has._unsafeUnwrap()).toEqual({ zstd: false, gzip: false });
  });

  it('over the local transport, and here', async () => {
    const transport = createLocalTransport();
    const remote = (await probeCodecs((argv) => transport.exec(argv)))._unsafeUnwrap();
    await transport.close();
    const local = (await localCompressors())._unsafeUnwrap();
    expect(local.gzip).toBe(true);
    expect(remote.zstd).toBe(!skipUnless('tool:zstd') && local.zstd);
  });
});

describe('measureLinkThroughput', () => {
  const transport = createLocalTransport();
  afterAll(async () => {
    await transport.close();
  });

  it('against the local transport: a positive number of bytes/s', async () => {
    const bytesPerSecond = (await measureLinkThroughput(transport))._unsafeUnwrap();
    expect(bytesPerSecond).toBeGreaterThan(0);
    expect(Number.isFinite(bytesPerSecond)).toBe(true);
    // A pipe on this machine: far faster than 10 MB/s.
    expect(bytesPerSecond).toBeGreaterThan(10e6);
  });

  /** The local transport with every command's stdin through the SDK's throttle, counting what was fed. */
  function slowed(bytesPerSecond: number): { exec: Transport['exec']; fed: () => number } {
    let fed = 0;
    return {
      fed: () => fed,
      exec: (argv, options = {}) => {
        const stdin = options.stdin;
        if (!(stdin instanceof Readable)) return transport.exec(argv, options);
        const throttle = createThrottle(bytesPerSecond);
        throttle.on('data', (chunk: Buffer) => (fed += chunk.length));
        return transport.exec(argv, { ...options, stdin: stdin.pipe(throttle) });
      },
    };
  }

  it('a slow link pays only the first, small sample; a fast one gets the full sample', async () => {
    const slow = slowed(MiB);
    const measured = (await measureLinkThroughput(slow, 8 * MiB))._unsafeUnwrap();
    // 1 MiB at 1 MiB/s: a second, well past the point where the first sample is believed.
    expect(slow.fed()).toBe(MiB);
    expect(measured / MiB).toBeGreaterThan(0.5);
    expect(measured / MiB).toBeLessThan(1.3);
    const fast = slowed(1024 * MiB);
    (await measureLinkThroughput(fast, 8 * MiB))._unsafeUnwrap();
    expect(fast.fed()).toBe(9 * MiB);
  });

  it('with enoughBelow, a short first sample that reads slower than it is the answer: no second sample', async () => {
    // 1 MiB at 8 MiB/s: ~125 ms, too short to be believed on its own, but it reads ~8 MB/s.
    const link = slowed(8 * MiB);
    const measured = (await measureLinkThroughput(link, 8 * MiB, { enoughBelow: 25e6 }))._unsafeUnwrap();
    expect(link.fed()).toBe(MiB);
    expect(measured).toBeLessThan(25e6);
  });

  it('with samplesAfter, the empty baseline runs at once and the samples only once it settled (even rejected)', async () => {
    for (const outcome of ['resolve', 'reject'] as const) {
      const started: { sample: boolean; settled: boolean }[] = [];
      let settled = false;
      let settle!: () => void;
      const gate = new Promise<void>((resolve, reject) => (settle = () => ((settled = true), outcome === 'resolve' ? resolve() : reject(new Error('pre-flight failed')))));
      gate.catch(() => undefined);
      const recording: Pick<Transport, 'exec'> = {
        exec: (argv, options = {}) => (started.push({ sample: options.stdin instanceof Readable, settled }), transport.exec(argv, options)),
      };
      const measuring = measureLinkThroughput(recording, 64 * 1024, { samplesAfter: gate, enoughBelow: Number.MAX_VALUE });
      await new Promise((r) => setTimeout(r, 300));
      expect(started).toEqual([{ sample: false, settled: false }]); // the baseline only, so far
      settle();
      expect((await measuring)._unsafeUnwrap()).toBeGreaterThan(0);
      expect(started).toEqual([
        { sample: false, settled: false },
        { sample: true, settled: true },
      ]);
    }
  });

  it('firstIsEnough: only a reading below the threshold, and only when one is given', () => {
    expect(firstIsEnough(10e6, 25e6)).toBe(true);
    expect(firstIsEnough(25e6, 25e6)).toBe(false);
    expect(firstIsEnough(40e6, 25e6)).toBe(false);
    expect(firstIsEnough(1, undefined)).toBe(false);
  });

  it('the second sample is sized to ~600 ms at the speed the first showed, between the first and the full sample', () => {
    // The emulated 100 Mbit/s link: 1 MiB in 190 ms beyond start-up, so about 3.3 MiB more.
    expect(secondLinkSample(MiB, 190, 8 * MiB) / MiB).toBeCloseTo(600 / 190, 2);
    // A first sample gone in no time: the full sample.
    expect(secondLinkSample(MiB, 5, 8 * MiB)).toBe(8 * MiB);
    // Never below the first (a first sample just under the believed time).
    expect(secondLinkSample(MiB, 249, 8 * MiB)).toBeGreaterThanOrEqual(MiB);
    expect(secondLinkSample(MiB, 1000, 8 * MiB)).toBe(MiB);
  });

  it('a small sample, and a bad size is INVALID_INPUT', async () => {
    expect((await measureLinkThroughput(transport, 1000))._unsafeUnwrap()).toBeGreaterThan(0);
    expect((await measureLinkThroughput(transport, 0))._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
  });
});

describe.skipIf(skipUnless('root', 'tool:/usr/sbin/sshd', 'tool:ssh', 'tool:ssh-keygen', 'tool:zstd', 'tool:gzip'))('over SSH on loopback (the wrapper survives quoting and the login shell)', () => {
  let sshd: TestSshd;
  const data = mixedData();
  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  const transports: { kind: string; open: () => Promise<Transport> }[] = [
    {
      kind: 'openssh',
      open: async () =>
        (await createOpenSshTransport({ host: sshd.host, port: sshd.port, username: 'root', identityFile: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath }))._unsafeUnwrap(),
    },
    {
      kind: 'ssh2',
      open: async () =>
        (await createSshTransport({ host: sshd.host, port: sshd.port, username: 'root', privateKeyPath: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath }))._unsafeUnwrap(),
    },
  ];
  for (const { kind, open } of transports) {
    it(`${kind}: probe, measure, round trip with zstd and gzip, a corrupt stream fails with 125`, async () => {
      const transport = await open();
      try {
        expect((await probeCodecs((argv) => transport.exec(argv)))._unsafeUnwrap()).toEqual({ zstd: true, gzip: true });
        expect((await measureLinkThroughput(transport, 2 * MiB))._unsafeUnwrap()).toBeGreaterThan(0);
        for (const codec of ['zstd', 'gzip'] as const) {
          const ok = (await transport.exec(decompressingArgv(codec, ['sha256sum']), { stdin: compressStream(chunked(data), codec) }))._unsafeUnwrap();
          expect(ok.stdout.split(' ')[0]).toBe(sha256(data));
          const compressed = await collect(compressStream(chunked(data), codec));
          const cut = (await transport.exec(decompressingArgv(codec, ['sha256sum']), { stdin: compressed.subarray(0, compressed.length >> 1), allowNonZeroExit: true }))._unsafeUnwrap();
          expect(cut.code).toBe(DECOMPRESSOR_FAILED_STATUS);
          expect(decompressorFailure(codec, cut, transport.description)?.message).toContain(codec === 'zstd' ? 'zstd -dcq' : 'gzip -dc');
        }
      } finally {
        await transport.close();
      }
    });
  }
});
