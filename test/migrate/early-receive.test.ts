/**
 * The first round's receiver starts during pre-flight, before the codec is chosen (decision 0203,
 * fifth amendment), through the real migrate() over the local transport with the real receiver
 * and notesd. The link sample is slowed down here (as a slow link slows it): the unpack command is
 * already running before the sample ends, and the migration still verifies and starts the
 * program. A migration that fails after that launch (its link sample fails) leaves no receiver
 * running and nothing written at the destination.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errAsync, ResultAsync } from 'neverthrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChrootDeployer, DeployError, migrate, type MigrationReport } from '../../src/index.js';
import { createLocalTransport } from '../../src/transports/local.js';
import type { Transport } from '../../src/spec/transport.js';
import { startNotesd, type NotesdSource } from '../helpers/notesd.js';
import { skipUnless } from '../helpers/requirements.js';

const isSample = (argv: readonly string[]) => argv[0] === 'sh' && argv[2] === 'cat >/dev/null';
const isUnpack = (argv: readonly string[]) => argv.includes('unpack');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The local transport with its link samples held back `delayMs` (and failed, with `failSamples`), and when each command started and ended. */
function slowSampleTransport(inner: Transport, delayMs: number, failSamples = false) {
  const events: Array<{ what: 'sample-end' | 'unpack-start'; at: number }> = [];
  const transport = Object.create(inner) as Transport;
  transport.exec = (argv, options) => {
    if (isUnpack(argv)) events.push({ what: 'unpack-start', at: performance.now() });
    if (!isSample(argv)) return inner.exec(argv, options);
    return new ResultAsync(
      (async () => {
        const result = await inner.exec(argv, options);
        await sleep(delayMs);
        events.push({ what: 'sample-end', at: performance.now() });
        return failSamples ? await errAsync(new DeployError('RECEIVE_FAILED', 'the link sample was cut (test)')) : result;
      })(),
    );
  };
  return { transport, events };
}

/** Receiver processes unpacking under `dir`. */
const receiversUnder = (dir: string) => {
  try {
    return execFileSync('pgrep', ['-f', `unpack ${dir}`], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
};

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare'))('the first receiver, started during pre-flight', () => {
  let source: NotesdSource;
  const dst = mkdtempSync(join(tmpdir(), 'apm-early-'));
  const reports: Array<{ report: MigrationReport; transport: Transport }> = [];

  beforeAll(() => {
    source = startNotesd('early');
  });

  afterAll(async () => {
    for (const { report: r, transport } of reports) {
      if (!r.destination) continue;
      await createChrootDeployer().rollback(
        { transport, profile: r.profile, plan: r.plan, name: r.name },
        { activated: { installDir: r.destination.installDir, rootDir: join(r.destination.installDir, 'root'), undo: [] }, started: { pid: r.destination.pid, logPath: '', endpoints: [] } },
      );
    }
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
    rmSync(dst, { recursive: true, force: true });
  });

  it('its unpack command runs before the link sample ends; the bundle is verified and the program starts', async () => {
    const { transport, events } = slowSampleTransport(createLocalTransport({ root: dst }), 1_500);
    const result = await migrate({ allowRoot: true, target: { profile: source.profile, pid: source.process.pid! }, destination: transport, name: 'early-ok', compression: 'auto' });
    if (result.isErr()) throw result.error;
    reports.push({ report: result.value, transport });
    const unpackAt = events.find((e) => e.what === 'unpack-start')?.at;
    const sampleEnds = events.filter((e) => e.what === 'sample-end').map((e) => e.at);
    expect(unpackAt, JSON.stringify(events)).toBeDefined();
    expect(sampleEnds.length).toBeGreaterThan(0);
    expect(unpackAt!).toBeLessThan(Math.max(...sampleEnds));
    expect(result.value.rounds[0]?.bytesSent).toBeGreaterThan(0);
    expect(result.value.destination?.pid).toBeGreaterThan(0);
  });

  it('a migration that fails after that start (its link sample fails): no receiver left running, nothing staged', async () => {
    const { transport, events } = slowSampleTransport(createLocalTransport({ root: dst }), 1_500, true);
    const result = await migrate({ allowRoot: true, target: { profile: source.profile, pid: source.process.pid! }, destination: transport, name: 'early-cut', compression: 'auto' });
    expect(result.isErr()).toBe(true);
    expect(result._unsafeUnwrapErr().message).toContain('the link sample was cut (test)');
    // The receiver was started, and has stopped by the time migrate() answered.
    expect(events.some((e) => e.what === 'unpack-start'), JSON.stringify(events)).toBe(true);
    expect(receiversUnder(join(dst, '.ap-migrate', 'staging-early-cut'))).toBe('');
    const work = join(dst, '.ap-migrate');
    const left = existsSync(work) ? readdirSync(work).filter((e) => e.includes('early-cut')) : [];
    expect(left).toEqual([]);
    expect(existsSync(join(dst, 'early-cut'))).toBe(false);
  });
});
