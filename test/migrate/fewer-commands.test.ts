/**
 * Commands a migration no longer sends (each is a round trip, and a receiver command a Node.js
 * start at the destination), through the real migrate() over the local transport with the real
 * receiver and notesd:
 *
 * - the first round's inventory asks the receiver only when it could find something: with dedup
 *   off and no journal of a cut attempt at the destination, the receiver check's own round trip
 *   answers "nothing there"; with a journal there, or with dedup on, the receiver is asked;
 * - the last round's receiver builds the root once the bundle is verified (`unpack --build-root`),
 *   and activate only moves it into place; a pre-copy's first round does not.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChrootDeployer, migrate, type MigrateOptions, type MigrationReport } from '../../src/index.js';
import { createLocalTransport } from '../../src/transports/local.js';
import type { Transport } from '../../src/spec/transport.js';
import { startNotesd, type NotesdSource } from '../helpers/notesd.js';
import { skipUnless } from '../helpers/requirements.js';

/** The local transport, keeping every command's argv. */
function recordingTransport(inner: Transport): { transport: Transport; commands: string[][]; reset: () => void } {
  const commands: string[][] = [];
  const transport = Object.create(inner) as Transport;
  transport.exec = (argv, options) => {
    commands.push([...argv]);
    return inner.exec(argv, options);
  };
  return { transport, commands, reset: () => void commands.splice(0) };
}

const isInventory = (argv: string[]) => argv[0] === 'node' && argv[2] === 'inventory';
/** Any command that runs the receiver's build-root (alone or inside a script). */
const runsBuildRoot = (argv: string[]) => argv.includes('build-root') || argv.some((a) => a.includes('" build-root'));
const unpackFlags = (commands: string[][]) => commands.filter((argv) => argv.includes('unpack')).map((argv) => argv.filter((a) => a.startsWith('--build-root=')).length);

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare'))('the first inventory, skipped when nothing can be held', () => {
  let source: NotesdSource;
  const dst = mkdtempSync(join(tmpdir(), 'apm-inv-skip-'));
  const recorded = recordingTransport(createLocalTransport({ root: dst }));
  const reports: MigrationReport[] = [];
  const run = async (name: string, extra: Partial<MigrateOptions>): Promise<MigrationReport> => {
    recorded.reset();
    const result = await migrate({ allowRoot: true, target: { profile: source.profile, pid: source.process.pid! }, destination: recorded.transport, name, ...extra });
    if (result.isErr()) throw result.error;
    reports.push(result.value);
    return result.value;
  };

  beforeAll(() => {
    source = startNotesd('invskip');
  });

  afterAll(async () => {
    for (const r of reports) {
      if (!r.destination) continue;
      await createChrootDeployer().rollback(
        { transport: recorded.transport, profile: r.profile, plan: r.plan, name: r.name },
        { activated: { installDir: r.destination.installDir, rootDir: join(r.destination.installDir, 'root'), undo: [] }, started: { pid: r.destination.pid, logPath: '', endpoints: [] } },
      );
    }
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
    rmSync(dst, { recursive: true, force: true });
  });

  it('dedup off, nothing kept from a cut attempt: no inventory command, the files verified all the same', async () => {
    const report = await run('inv-fresh', { dedup: false });
    expect(recorded.commands.filter(isInventory)).toEqual([]);
    // The receiver check was asked to look at the resume journal (its last argument).
    const check = recorded.commands.find((argv) => argv.at(-1) === join(dst, '.ap-migrate', 'resume-inv-fresh.journal.json'));
    expect(check, recorded.commands.map((a) => a.slice(0, 3).join(' ')).join('\n')).toBeDefined();
    expect(report.rounds[0]?.seededBytes).toBe(0);
  });

  it('dedup off, a journal of a cut attempt there: the receiver is asked what it holds', async () => {
    const work = join(dst, '.ap-migrate');
    mkdirSync(join(work, 'resume-inv-kept'), { recursive: true, mode: 0o700 });
    writeFileSync(join(work, 'resume-inv-kept.journal.json'), JSON.stringify({ kind: 'ap-migrate-journal', version: 1, files: [] }), { mode: 0o600 });
    await run('inv-kept', { dedup: false });
    expect(recorded.commands.filter(isInventory)).toHaveLength(1);
  });

  it('dedup on: the receiver is asked for the host files it has', async () => {
    await run('inv-dedup', { dedup: true });
    expect(recorded.commands.filter(isInventory)).toHaveLength(1);
  });

  it('one round: its unpack builds the root, activate sends no build-root, and the program runs from it', async () => {
    const report = await run('root-in-unpack', {});
    expect(unpackFlags(recorded.commands)).toEqual([1]);
    expect(recorded.commands.filter(runsBuildRoot)).toEqual([]);
    // Built: the exec wrapper and the accounts are in the root the program runs in.
    const root = join(report.destination!.installDir, 'root');
    expect(existsSync(join(root, '.ap-migrate'))).toBe(true);
    expect(statSync(root).mode & 0o777).toBe(0o755);
  });

  it('pre-copy: the first round builds nothing, the delta round builds the root', async () => {
    const report = await run('root-precopy', { cutover: 'pre-copy' });
    expect(report.rounds.map((r) => r.round)).toEqual(['full', 'delta']);
    expect(unpackFlags(recorded.commands)).toEqual([0, 1]);
    expect(recorded.commands.filter(runsBuildRoot)).toEqual([]);
    expect(existsSync(join(report.destination!.installDir, 'root', '.ap-migrate'))).toBe(true);
  });
});
