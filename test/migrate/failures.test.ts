/**
 * Failures through fakes: a rollback that fails too, both sides of the transfer failing, and
 * plug-ins that throw instead of returning a Result.
 */
import { describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrate.js';
import { ApMigrateError } from '../../src/errors.js';
import type { Readable } from 'node:stream';
import type { Deployer, DeploymentState } from '../../src/spec/deployer.js';
import { createFakeDeployer, fakeMigration, settle, type FakeDeployerOptions, type FakeFacts } from '../helpers/fake-plugins.js';

const fail = (code: string, message: string, isRetryable = false) => new ApMigrateError(code, message, { isRetryable });
const stateOf = (fake: ReturnType<typeof fakeMigration>, i = 0) => fake.log.of('rollback')[i]!.args[0] as DeploymentState<FakeFacts>;

describe('rollback failing', () => {
  it.each<[string, FakeDeployerOptions]>([
    ['transfer', { receive: { fail: fail('FAKE_RECEIVE_FAILED', 'receive broke', true) } }],
    ['activate', { activate: { fail: fail('FAKE_ACTIVATE_FAILED', 'activate broke', true) } }],
    ['start', { start: { fail: fail('FAKE_START_FAILED', 'start broke', true) } }],
    ['health', { health: { fail: fail('FAKE_HEALTH_FAILED', 'health broke', true) } }],
  ])('%s fails, rollback fails: the phase code, saying rollback failed, not retryable', async (_phase, setup) => {
    const fake = fakeMigration({ deployer: { ...setup, rollback: { fail: fail('FAKE_ROLLBACK_FAILED', 'rm -rf failed') } } });
    const result = await migrate(fake.options);
    expect(result.isErr()).toBe(true);
    const error = result._unsafeUnwrapErr();
    const original = Object.values(setup)[0] as { fail: ApMigrateError };
    expect(ApMigrateError.isInstance(error)).toBe(true);
    expect(error.code).toBe(original.fail.code);
    expect(error.message).toContain(original.fail.message);
    expect(error.message).toContain('and rollback failed');
    expect(error.message).toContain('rm -rf failed');
    expect(error.isRetryable).toBe(false);
    expect(fake.log.of('rollback')).toHaveLength(1);
    expect(fake.log.names().slice(-2)).toEqual(['rollback', 'release']);
  });

  it('an abort whose rollback fails is ABORTED, saying rollback failed', async () => {
    const controller = new AbortController();
    const fake = fakeMigration({ deployer: { activate: { abort: controller }, rollback: { fail: fail('FAKE_ROLLBACK_FAILED', 'umount busy') } }, migrate: { signal: controller.signal } });
    const error = (await migrate(fake.options))._unsafeUnwrapErr();
    expect(error.code).toBe('ABORTED');
    expect(error.message).toContain('and rollback failed');
    expect(error.isRetryable).toBe(false);
  });

  it('a failure after the freeze whose rollback fails still thaws the source first', async () => {
    const fake = fakeMigration({
      pid: 500,
      deployer: { start: { fail: fail('FAKE_START_FAILED', 'start broke') }, rollback: { fail: fail('FAKE_ROLLBACK_FAILED', 'rm failed') } },
      migrate: { cutover: 'stop-and-copy' },
    });
    const error = (await migrate(fake.options))._unsafeUnwrapErr();
    expect(error.code).toBe('FAKE_START_FAILED');
    expect(fake.log.names()).toEqual(['estimate', 'preflight', 'freeze', 'pack', 'receive', 'activate', 'start', 'thaw', 'rollback', 'release']);
    expect(fake.log.of('stop')).toEqual([]);
  });

  it('a failure whose thaw and rollback both fail keeps details.thawError (the source may still be frozen)', async () => {
    const fake = fakeMigration({
      pid: 500,
      deployer: { start: { fail: fail('FAKE_START_FAILED', 'start broke') }, rollback: { fail: fail('FAKE_ROLLBACK_FAILED', 'rm failed') } },
      source: { thaw: { fail: fail('FAKE_THAW_FAILED', 'kill -CONT failed') } },
      migrate: { cutover: 'stop-and-copy' },
    });
    const error = (await migrate(fake.options))._unsafeUnwrapErr();
    expect(error.code).toBe('FAKE_START_FAILED');
    expect(error.message).toContain('and rollback failed');
    expect(String(error.details.thawError)).toContain('kill -CONT failed');
  });
});

describe('both sides of the transfer failing', () => {
  it("the destination fails and the packer's done says BUNDLE_IO: the destination's error, with details.packError", async () => {
    const gone = fail('FAKE_DESTINATION_GONE', 'the destination disk is full', true);
    const fake = fakeMigration({ deployer: { receive: { fail: gone } } });
    const result = await migrate(fake.options);
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('FAKE_DESTINATION_GONE');
    expect(error.isRetryable).toBe(true);
    expect(String(error.details.packError)).toContain('closed before its end');
    expect(fake.log.of('rollback')).toHaveLength(1);
    // receive failed: nothing was staged; rollback removes the staging dir pre-flight chose.
    expect(Object.keys(stateOf(fake))).toEqual(['preflight']);
    expect(fake.log.names()).toEqual(['estimate', 'preflight', 'pack', 'receive', 'rollback', 'release']);
  });

  it("the packer fails with its own code and receive fails too: the packer's code wins", async () => {
    const changed = fail('BUNDLE_SOURCE_CHANGED', '/etc/app.conf changed while it was read');
    const fake = fakeMigration({ deployer: { packFailure: changed } });
    const result = await migrate(fake.options);
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('BUNDLE_SOURCE_CHANGED');
    // The receiver did fail too (the payload broke under it).
    expect(fake.log.of('receive')).toHaveLength(1);
    expect(fake.log.of('activate')).toEqual([]);
    expect(fake.log.of('rollback')).toHaveLength(1);
    expect(Object.keys(stateOf(fake))).toEqual(['preflight']);
  });
});

describe('a deployer phase that throws', () => {
  const boom = () => new Error('boom from the plug-in');
  it.each<[string, FakeDeployerOptions, boolean]>([
    ['preflight', { preflight: { throw: boom() } }, false],
    ['pack', { pack: { throw: boom() } }, true],
    ['receive', { receive: { throw: boom() } }, true],
    ['activate', { activate: { throw: boom() } }, true],
    ['start', { start: { throw: boom() } }, true],
    ['healthCheck', { health: { throw: boom() } }, true],
    ['healthCheck (a thrown string)', { health: { throw: 'not even an Error' } }, true],
    ['healthCheck (after an await)', { health: { gate: Promise.resolve(), then: { throw: boom() } } }, true],
  ])('%s: a typed ApMigrateError, destination rolled back', async (_name, setup, rolledBack) => {
    const fake = fakeMigration({ deployer: setup });
    const outcome = await settle(migrate(fake.options));
    expect(outcome.rejected).toBe(false);
    if (outcome.rejected) return;
    expect(outcome.result.isErr()).toBe(true);
    const error = outcome.result._unsafeUnwrapErr();
    expect(ApMigrateError.isInstance(error)).toBe(true);
    expect(error.code).toBe('MIGRATION_FAILED');
    expect(fake.log.of('rollback')).toHaveLength(rolledBack ? 1 : 0);
    expect(fake.log.of('release')).toHaveLength(1);
  });

  it('receive that throws leaves no packer running: the payload is destroyed', async () => {
    const fake = fakeMigration();
    const inner = createFakeDeployer(fake.log);
    let payload: Readable | undefined;
    const throwing: Deployer<Readable, unknown> = {
      ...(inner as Deployer<Readable, unknown>),
      receive: (_context, _preflight, given) => {
        payload = given;
        throw new Error('receive threw before reading');
      },
    };
    const result = await migrate({ ...fake.options, deployers: { chroot: throwing as Deployer<unknown, unknown> } });
    expect(result._unsafeUnwrapErr().code).toBe('MIGRATION_FAILED');
    expect(fake.log.of('rollback')).toHaveLength(1);
    expect(payload).toBeDefined();
    expect(payload!.destroyed).toBe(true);
  });

  it('a thrown ApMigrateError keeps its code', async () => {
    const fake = fakeMigration({ deployer: { activate: { throw: fail('FAKE_TYPED_THROW', 'typed, but thrown') } } });
    const error = (await migrate(fake.options))._unsafeUnwrapErr();
    expect(error.code).toBe('FAKE_TYPED_THROW');
    expect(fake.log.of('rollback')).toHaveLength(1);
  });
});

describe('other plug-in calls that throw', () => {
  // migrate() promises "a report, or a typed error"; timed() turns a throw into a typed error, but
  // only inside a timed phase. These calls run outside one.
  it.each<[string, Parameters<typeof fakeMigration>[0]]>([
    ['rollback (after activate failed)', { deployer: { activate: { fail: fail('FAKE_ACTIVATE_FAILED', 'activate broke') }, rollback: { throw: new Error('rollback threw') } } }],
    ['estimate', { deployer: { estimate: { throw: new Error('estimate threw') } } }],
    ['Source.freeze', { pid: 600, source: { freeze: { throw: new Error('freeze threw') } }, migrate: { cutover: 'stop-and-copy' } }],
    ['Source.thaw (after start failed)', { pid: 600, source: { thaw: { throw: new Error('thaw threw') } }, deployer: { start: { fail: fail('FAKE_START_FAILED', 'start broke') } }, migrate: { cutover: 'stop-and-copy' } }],
  ])('%s: migrate() settles with a typed error, never rejects', async (name, setup) => {
    const fake = fakeMigration(setup);
    const outcome = await settle(migrate(fake.options));
    expect(outcome.rejected ? `rejected with ${String(outcome.thrown)}` : 'settled').toBe('settled');
    if (outcome.rejected) return;
    expect(outcome.result.isErr()).toBe(true);
    expect(ApMigrateError.isInstance(outcome.result._unsafeUnwrapErr())).toBe(true);
    // release cleans up what a pre-flight opened: none ran before the estimate.
    expect(fake.log.of('release')).toHaveLength(name === 'estimate' ? 0 : 1);
  });

  it('release that throws after a successful migration leaves the report (as a failing release does)', async () => {
    const failing = fakeMigration({ deployer: { release: { fail: fail('FAKE_RELEASE_FAILED', 'session close failed') } } });
    expect((await migrate(failing.options)).isOk()).toBe(true);
    const throwing = fakeMigration({ deployer: { release: { throw: new Error('release threw') } } });
    const outcome = await settle(migrate(throwing.options));
    expect(outcome.rejected ? `rejected with ${String(outcome.thrown)}` : 'settled').toBe('settled');
    if (!outcome.rejected) expect(outcome.result.isOk()).toBe(true);
  });
});

describe('the source phase failing after the destination is healthy', () => {
  // Once the destination is healthy it holds the program's state: rolling it back and thawing the
  // source could leave two writers (the stop may have half-worked). The destination is kept, the
  // source is left as it is, and the error says both (src/migrate.ts, decision 0014).
  it('stop-and-copy, Source.stop fails: the destination is kept, the source neither thawed nor rolled back, and the error says so', async () => {
    const fake = fakeMigration({ pid: 700, source: { stop: { fail: fail('FAKE_STOP_FAILED', 'ssh to the source dropped') } }, migrate: { cutover: 'stop-and-copy' } });
    const result = await migrate(fake.options);
    expect(result.isErr()).toBe(true);
    const error = result._unsafeUnwrapErr();
    expect(error.code).toBe('FAKE_STOP_FAILED');
    expect(error.message).toContain('destination runs');
    expect(error.details.destinationKept).toBe(true);
    expect(error.details.frozenPids).toEqual(expect.any(Array));
    expect(fake.log.names()).toEqual(['estimate', 'preflight', 'freeze', 'pack', 'receive', 'activate', 'start', 'healthCheck', 'stop', 'release']);
  });
});
