/**
 * stop-and-copy and the source policy, through a fake Source: freeze after pre-flight, stop after
 * health, thaw (never stop) on failure; `stop` goes through the Source, never `process.kill`; a
 * deployer with `settleSource` settles the source itself.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { migrate } from '../../src/migrate.js';
import { ApMigrateError } from '../../src/errors.js';
import type { DeploymentState } from '../../src/spec/deployer.js';
import { fakeMigration, type FakeDeployerOptions, type FakeFacts } from '../helpers/fake-plugins.js';

const PID = 4100;
const fail = (code: string) => new ApMigrateError(code, `${code.toLowerCase()} (fake)`);

afterEach(() => vi.restoreAllMocks());

describe('stop-and-copy', () => {
  it('freezes after pre-flight, before the transfer; stops after health; never thaws on success', async () => {
    const kill = vi.spyOn(process, 'kill');
    const fake = fakeMigration({ pid: PID, source: { tree: (pid) => [pid, pid + 1, pid + 2] }, migrate: { cutover: 'stop-and-copy' } });
    const result = await migrate(fake.options);
    expect(result.isOk()).toBe(true);
    expect(fake.log.names()).toEqual(['estimate', 'preflight', 'freeze', 'pack', 'receive', 'activate', 'start', 'healthCheck', 'stop', 'release']);
    expect(fake.log.of('freeze')[0]!.args[0]).toBe(PID);
    expect(fake.log.of('stop')[0]!.args[0]).toBe(PID);
    expect(fake.log.of('thaw')).toEqual([]);
    expect(kill).not.toHaveBeenCalled();
    const report = result._unsafeUnwrap();
    expect(report.cutover.mode).toBe('stop-and-copy');
    expect(report.cutover.frozenProcesses).toBe(3);
    expect(report.cutover.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(report.cutover.downtimeMs).toBeLessThanOrEqual(report.totalMs);
    expect(report.source).toEqual({ pid: PID, action: 'stopped' });
  });

  it.each<[string, FakeDeployerOptions, (keyof DeploymentState)[]]>([
    ['transfer', { receive: { fail: fail('FAKE_RECEIVE_FAILED') } }, ['preflight']],
    ['activate', { activate: { fail: fail('FAKE_ACTIVATE_FAILED') } }, ['preflight', 'staged']],
    ['start', { start: { fail: fail('FAKE_START_FAILED') } }, ['activated', 'preflight']],
    ['health', { health: { fail: fail('FAKE_HEALTH_FAILED') } }, ['activated', 'preflight', 'started']],
  ])('a failure in %s after the freeze thaws the frozen pids, rolls back, never stops', async (_phase, setup, state) => {
    const kill = vi.spyOn(process, 'kill');
    const fake = fakeMigration({ pid: PID, deployer: setup, migrate: { cutover: 'stop-and-copy', sourcePolicy: 'stop' } });
    const result = await migrate(fake.options);
    const code = (Object.values(setup)[0] as { fail: ApMigrateError }).fail.code;
    expect(result._unsafeUnwrapErr().code).toBe(code);
    expect(fake.log.of('thaw').map((c) => c.args[0])).toEqual([[PID, PID + 1]]);
    expect(fake.log.of('stop')).toEqual([]);
    expect(kill).not.toHaveBeenCalled();
    const names = fake.log.names();
    expect(names.indexOf('thaw')).toBeLessThan(names.indexOf('rollback'));
    expect(Object.keys(fake.log.of('rollback')[0]!.args[0] as object).sort()).toEqual(state.sort());
  });

  it('a freeze that fails ends before anything is sent: no transfer, no rollback, no thaw', async () => {
    const fake = fakeMigration({ pid: PID, source: { freeze: { fail: fail('SOURCE_GONE') } }, migrate: { cutover: 'stop-and-copy' } });
    const result = await migrate(fake.options);
    expect(result._unsafeUnwrapErr().code).toBe('SOURCE_GONE');
    expect(fake.log.names()).toEqual(['estimate', 'preflight', 'freeze', 'release']);
  });

  it('a thaw that fails after a failure is said in details.thawError; the phase error stays', async () => {
    const fake = fakeMigration({ pid: PID, deployer: { start: { fail: fail('FAKE_START_FAILED') } }, source: { thaw: { fail: fail('FAKE_THAW_FAILED') } }, migrate: { cutover: 'stop-and-copy' } });
    const error = (await migrate(fake.options))._unsafeUnwrapErr();
    expect(error.code).toBe('FAKE_START_FAILED');
    expect(String(error.details.thawError)).toContain('fake_thaw_failed');
    expect(fake.log.of('rollback')).toHaveLength(1);
  });
});

describe('source policy', () => {
  it("'stop' stops the source through the Source (never process.kill), after health", async () => {
    const kill = vi.spyOn(process, 'kill');
    const fake = fakeMigration({ pid: PID, migrate: { sourcePolicy: 'stop' } });
    const result = await migrate(fake.options);
    expect(result.isOk()).toBe(true);
    const names = fake.log.names();
    expect(names).toEqual(['estimate', 'preflight', 'pack', 'receive', 'activate', 'start', 'healthCheck', 'stop', 'release']);
    expect(fake.log.of('stop')[0]!.args[0]).toBe(PID);
    expect(fake.log.of('freeze')).toEqual([]);
    expect(kill).not.toHaveBeenCalled();
    expect(result._unsafeUnwrap().source).toEqual({ pid: PID, action: 'stopped' });
    expect(result._unsafeUnwrap().cutover).toEqual({ mode: 'copy' });
  });

  it.each([{ sourcePolicy: 'keep-running' as const }, {}])("%o never stops the source: 'kept-running'", async (policy) => {
    const kill = vi.spyOn(process, 'kill');
    const fake = fakeMigration({ pid: PID, migrate: policy });
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(fake.log.of('stop')).toEqual([]);
    expect(fake.log.of('freeze')).toEqual([]);
    expect(kill).not.toHaveBeenCalled();
    expect(report.source).toEqual({ pid: PID, action: 'kept-running' });
  });

  it("'stop' without a source pid has nothing to stop: action 'none'", async () => {
    const fake = fakeMigration({ migrate: { sourcePolicy: 'stop' } });
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(fake.log.of('stop')).toEqual([]);
    expect(report.source).toEqual({ action: 'none' });
  });

  it.each(['stop', 'keep-running'] as const)("a deployer with settleSource settles the source instead of Source.stop (policy %s); its outcome is the report's", async (policy) => {
    const outcome = policy === 'stop' ? 'stopped' : 'kept-running';
    const fake = fakeMigration({ pid: PID, deployer: { settleSource: { outcome } }, migrate: { sourcePolicy: policy } });
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(fake.log.of('stop')).toEqual([]);
    const settle = fake.log.of('settleSource');
    expect(settle).toHaveLength(1);
    const [state, given] = settle[0]!.args as [DeploymentState<FakeFacts>, string];
    expect(given).toBe(policy);
    expect(Object.keys(state).sort()).toEqual(['activated', 'preflight', 'started']);
    expect(fake.log.names().slice(-3)).toEqual(['healthCheck', 'settleSource', 'release']);
    expect(report.source).toEqual({ pid: PID, action: outcome });
  });

  it('a deployer with settleSource is never frozen from outside, even for stop-and-copy; the cutover is its own', async () => {
    const fake = fakeMigration({ pid: PID, deployer: { settleSource: { outcome: 'stopped' } }, migrate: { cutover: 'stop-and-copy' } });
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(fake.log.of('freeze')).toEqual([]);
    expect(fake.log.of('stop')).toEqual([]);
    expect(fake.log.of('settleSource')[0]!.args[1]).toBe('keep-running');
    expect(report.cutover).toEqual({ mode: 'copy' });
    expect(report.source.action).toBe('stopped');
  });
});

describe('a receiver that takes no seeded entries (the POSIX receiver)', () => {
  const posix = { kind: 'posix-sh', seeds: false, summary: 'receiver: posix-sh (fake: no Node.js there)' } as const;

  it('pre-copy becomes one full round after the freeze: no inventory, no dedup asked, and the report and progress say which receiver', async () => {
    const messages: string[] = [];
    const fake = fakeMigration({
      pid: PID,
      deployer: { inventory: true, receiver: posix },
      migrate: { cutover: 'pre-copy', dedup: true, onProgress: (p) => void (p.message && messages.push(p.message)) },
    });
    const result = await migrate(fake.options);
    expect(result.isOk()).toBe(true);
    expect(fake.log.names()).toEqual(['estimate', 'preflight', 'freeze', 'pack', 'receive', 'activate', 'start', 'healthCheck', 'stop', 'release']);
    expect(fake.log.of('receive')[0]!.args[1]).toMatchObject({ round: 'full', hostSeeds: false });
    const report = result._unsafeUnwrap();
    expect(report.receiver).toEqual(posix);
    expect(report.rounds.map((r) => r.round)).toEqual(['full']);
    expect(messages).toContain(posix.summary);
    expect(messages.some((m) => m.includes('pre-copy needs a receiver that takes seeded entries'))).toBe(true);
  });

  it('the same deployer with a receiver that takes them pre-copies: an inventory per round, two rounds', async () => {
    const fake = fakeMigration({ pid: PID, deployer: { inventory: true, receiver: { ...posix, kind: 'node', seeds: true } }, migrate: { cutover: 'pre-copy', dedup: true } });
    const result = await migrate(fake.options);
    expect(result.isOk()).toBe(true);
    expect(fake.log.of('inventory')).toHaveLength(2);
    expect(fake.log.of('receive').map((c) => c.args[1])).toMatchObject([{ round: 'full', hostSeeds: true }, { round: 'delta', hostSeeds: true }]);
    expect(result._unsafeUnwrap().rounds.map((r) => r.round)).toEqual(['full', 'delta']);
  });
});
