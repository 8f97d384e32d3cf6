/**
 * Bytes before and after compression (issue 13), through the real migrate() over the local
 * transport with the real receiver: `bytesSent` counts the bundle, `wireBytes` what the transport
 * was given after the compressor (and the bandwidth cap). With zstd and gzip a compressible tree
 * has fewer wire bytes; with none the two are the same stream. The plan's estimate after
 * compression is reported too. Then the same through fakes: a deployer that does not count wire
 * bytes, and what the plan is asked to assume for each `compression`.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errAsync } from 'neverthrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChrootDeployer, DeployError, migrate, type MigrateOptions, type MigrationReport, type ResourceProfileInput, type WireCountOptions } from '../../src/index.js';
import { planCompression } from '../../src/migrate/source-phases.js';
import { createLocalTransport } from '../../src/transports/local.js';
import type { Transport } from '../../src/spec/transport.js';
import { fakeMigration } from '../helpers/fake-plugins.js';
import { startNotesd, type NotesdSource } from '../helpers/notesd.js';
import { skipUnless } from '../helpers/requirements.js';

async function rollBack(transport: Transport, report: MigrationReport): Promise<void> {
  if (!report.destination) return;
  await createChrootDeployer().rollback(
    { transport, profile: report.profile, plan: report.plan, name: report.name },
    { activated: { installDir: report.destination.installDir, rootDir: join(report.destination.installDir, 'root'), undo: [] }, started: { pid: report.destination.pid, logPath: '', endpoints: [] } },
  );
}

/**
 * The local transport, counting on its own (its exec's stdin progress, below our counter) the
 * bytes it was given for the receiver's `unpack` commands since the last `reset()`.
 */
function countingTransport(inner: Transport): { transport: Transport; unpackBytes: () => number; reset: () => void } {
  let total = 0;
  const transport = Object.create(inner) as Transport;
  transport.exec = (argv, options = {}) => {
    if (!argv.includes('unpack')) return inner.exec(argv, options);
    let last = 0;
    return inner.exec(argv, {
      ...options,
      onProgress: (p) => {
        options.onProgress?.(p);
        if (p.operation !== 'exec-stdin') return;
        total += p.bytes - last;
        last = p.bytes;
      },
    });
  };
  return { transport, unpackBytes: () => total, reset: () => void (total = 0) };
}

/** Real text: the C headers of /usr/include (first `limit` bytes), as one file. */
function headersText(limit: number): Buffer {
  const parts: Buffer[] = [];
  let size = 0;
  for (const name of readdirSync('/usr/include').sort()) {
    if (!name.endsWith('.h')) continue;
    const bytes = readFileSync(join('/usr/include', name));
    parts.push(bytes);
    size += bytes.length;
    if (size >= limit) break;
  }
  return Buffer.concat(parts).subarray(0, limit);
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:zstd', 'tool:gzip'))('wire bytes through migrate() over the local transport', () => {
  let source: NotesdSource;
  let profile: ResourceProfileInput;
  const dst = mkdtempSync(join(tmpdir(), 'apm-wire-dst-'));
  const counted = countingTransport(createLocalTransport({ root: dst }));
  const transport = counted.transport;
  const reports: MigrationReport[] = [];
  const run = async (name: string, extra: Partial<MigrateOptions>): Promise<MigrationReport> => {
    counted.reset();
    const result = await migrate({ allowRoot: true, target: { profile, pid: source.process.pid! }, destination: transport, name, ...extra });
    if (result.isErr()) throw result.error;
    reports.push(result.value);
    return result.value;
  };

  beforeAll(() => {
    source = startNotesd('wire');
    // A small tree: up to 4 MiB of real C headers (text) and 1 MiB of random bytes (incompressible).
    const text = join(source.dataDir, 'headers.h');
    const blob = join(source.dataDir, 'blob.bin');
    writeFileSync(text, headersText(4 * 1024 * 1024));
    writeFileSync(blob, randomBytes(1024 * 1024));
    const extra = [text, blob].map((path) => ({ path, kind: 'regular' as const, access: ['read' as const], size: statSync(path).size }));
    profile = { ...source.profile, files: [...(source.profile.files ?? []), ...extra] };
  });

  afterAll(async () => {
    for (const r of reports) await rollBack(transport, r);
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
    rmSync(dst, { recursive: true, force: true });
  });

  it('none: wireBytes is bytesSent (the same stream), per round and in total; no wire estimate', async () => {
    const report = await run('wire-none', { compression: 'none' });
    expect(report.compression).toBeUndefined();
    expect(report.wireBytes).toBe(report.bytesSent);
    expect(report.rounds).toHaveLength(1);
    expect(report.rounds[0]).toMatchObject({ bytesSent: report.bytesSent, wireBytes: report.bytesSent, wireBytesBefore: 0 });
    expect(report.estimatedWireBytes).toBeUndefined();
    expect(report.plan.compression).toBeUndefined();
    // What the transport itself counted feeding the receiver's command.
    expect(counted.unpackBytes()).toBe(report.wireBytes);
    console.log(`none: bundle ${report.bytesSent} B, wire ${report.wireBytes} B`);
  });

  for (const codec of ['zstd', 'gzip'] as const) {
    it(`${codec}: fewer bytes on the wire than in the bundle; the plan ranked by its estimate after ${codec}`, async () => {
      const report = await run(`wire-${codec}`, { compression: codec });
      expect(report.compression?.codec).toBe(codec);
      const [round] = report.rounds;
      expect(round!.wireBytes).toBe(report.wireBytes);
      // Exactly what the transport itself counted feeding the receiver's command.
      expect(counted.unpackBytes()).toBe(report.wireBytes);
      // The text compresses (the random MiB does not): well under the bundle, above the random part.
      expect(report.wireBytes).toBeLessThan(0.6 * report.bytesSent);
      expect(report.wireBytes).toBeGreaterThan(1024 * 1024);
      // The plan assumed this codec; its estimate for the chosen method is what the report says.
      expect(report.plan.compression).toMatchObject({ codec, level: 1 });
      const chosen = report.plan.candidates.find((c) => c.method === report.method)!;
      expect(report.estimatedWireBytes).toBe(chosen.estimate.wireBytes);
      expect(chosen.estimate.wireBytes!).toBeLessThan(chosen.estimate.totalBytes);
      // The destination verified the whole bundle: bytesSent keeps its meaning.
      expect(statSync(join(dst, `wire-${codec}`, 'root', source.dataDir, 'headers.h')).size).toBe(statSync(join(source.dataDir, 'headers.h')).size);
      console.log(
        `${codec}: bundle ${report.bytesSent} B, wire ${report.wireBytes} B (ratio ${(report.wireBytes / report.bytesSent).toFixed(3)}); ` +
          `plan: ${chosen.estimate.totalBytes} B before, ${chosen.estimate.wireBytes} B after (ratio ${(chosen.estimate.wireBytes! / chosen.estimate.totalBytes).toFixed(3)})`,
      );
    }, 60_000);
  }

  it('zstd under a bandwidth cap: the cap is on the wire bytes, which are counted after it', async () => {
    const report = await run('wire-capped', { compression: 'zstd', bandwidthLimit: 16 * 1024 * 1024 });
    expect(report.wireBytes).toBeLessThan(0.6 * report.bytesSent);
    expect(report.rounds[0]!.wireBytes).toBe(report.wireBytes);
    expect(counted.unpackBytes()).toBe(report.wireBytes);
  }, 60_000);

  it('auto: the plan ranks by bytes (the codec is not known yet); the report gives the estimate after the codec negotiated', async () => {
    const report = await run('wire-auto', { compression: 'auto', dryRun: true });
    expect(report.plan.compression).toBeUndefined();
    expect(report.wireBytes).toBe(0);
    const codec = report.compression!.codec;
    if (codec === 'none') expect(report.estimatedWireBytes).toBeUndefined();
    else {
      const chosen = report.plan.candidates.find((c) => c.method === report.method)!;
      expect(report.estimatedWireBytes).toBeGreaterThan(0);
      expect(report.estimatedWireBytes!).toBeLessThan(chosen.estimate.totalBytes);
    }
  }, 60_000);
});

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:zstd'))('compression to a destination root that does not exist yet', () => {
  it('the codec probe runs from / (it used to fail with spawn ENOENT in the missing root)', async () => {
    const base = mkdtempSync(join(tmpdir(), 'apm-wire-fresh-'));
    const source = startNotesd('fresh');
    try {
      const transport = createLocalTransport({ root: join(base, 'not-yet') });
      const result = await migrate({ allowRoot: true, target: { profile: source.profile, pid: source.process.pid! }, destination: transport, name: 'fresh', compression: 'zstd', dryRun: true });
      if (result.isErr()) throw result.error;
      expect(result.value.compression?.codec).toBe('zstd');
      expect(result.value.estimatedWireBytes).toBeGreaterThan(0);
    } finally {
      source.stop();
      rmSync(source.base, { recursive: true, force: true });
      rmSync(base, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('wire bytes through fakes', () => {
  it('a deployer that does not count wire bytes: wireBytes is bytesSent', async () => {
    const fake = fakeMigration({ deployer: { chunks: ['abcd', 'efgh', 'ij'], estimateBytes: 10 } });
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(report.bytesSent).toBe(10);
    expect(report.wireBytes).toBe(10);
    expect(report.rounds[0]).toMatchObject({ bytesSent: 10, wireBytes: 10, bytesSentBefore: 0, wireBytesBefore: 0 });
  });

  it('a deployer that counts them (onWireBytes): per attempt, and the cut attempts apart (wireBytesBefore)', async () => {
    const fake = fakeMigration({ deployer: { chunks: ['abcd', 'efgh', 'ij'], estimateBytes: 10 }, migrate: { transferAttempts: 2 } });
    const receive = fake.deployer.receive.bind(fake.deployer);
    let attempt = 0;
    fake.deployer.receive = (context, preflight, payload, onBytes, options) => {
      attempt += 1;
      // A codec that halves the bundle: the wire gets 5 of its 10 bytes; the first attempt is cut after 4.
      const wire = (options as WireCountOptions | undefined)?.onWireBytes;
      if (attempt === 1) {
        wire?.(2);
        payload.destroy();
        return errAsync(new DeployError('CONNECTION_LOST', 'cut', { isRetryable: true }));
      }
      return receive(context, preflight, payload, onBytes, options).map((staged) => {
        wire?.(5);
        return staged;
      });
    };
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(report.rounds).toEqual([expect.objectContaining({ attempts: 2, bytesSent: 10, wireBytes: 5, wireBytesBefore: 2 })]);
    expect(report.wireBytes).toBe(7);
  });

  it('a dry run: no wire bytes', async () => {
    const fake = fakeMigration({ migrate: { dryRun: true } });
    expect((await migrate(fake.options))._unsafeUnwrap().wireBytes).toBe(0);
  });

  it("the plan assumes zstd or gzip as migrate() is asked; none and auto plan without; the caller's measured ratio is kept", () => {
    expect(planCompression('zstd', undefined)).toEqual({ codec: 'zstd' });
    expect(planCompression('gzip', { codec: 'zstd', level: 3, ratio: 0.4 })).toEqual({ codec: 'gzip', ratio: 0.4 });
    expect(planCompression('zstd', { codec: 'zstd', level: 3, ratio: { text: 0.1 } })).toEqual({ codec: 'zstd', level: 3, ratio: { text: 0.1 } });
    expect(planCompression('auto', { codec: 'zstd' })).toBeUndefined();
    expect(planCompression('none', { codec: 'zstd' })).toBeUndefined();
    expect(planCompression(undefined, { codec: 'zstd' })).toBeUndefined();
  });

  it('migrate({ compression: zstd }) plans with it even for a method that then sends nothing compressed', async () => {
    const fake = fakeMigration({ migrate: { compression: 'zstd', planOptions: { compression: { codec: 'gzip', ratio: 0.5 } } } });
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(report.plan.compression).toMatchObject({ codec: 'zstd', ratios: { text: 0.5, other: 0.5, compressed: 1 } });
  });
});
