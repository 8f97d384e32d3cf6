/**
 * One deployer instance, two migrations of the same name at once: the deployer keeps no
 * per-migration state (the contract), so each rollback must see exactly its own migration's
 * state, which only migrate() can give it.
 */
import { describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrate.js';
import { ApMigrateError } from '../../src/errors.js';
import type { DeployContext, DeploymentState, PreflightReport } from '../../src/spec/deployer.js';
import { createFakeDeployer, createFakeSource, deferred, fakeMigration, type Behaviour, type FakeFacts } from '../helpers/fake-plugins.js';

describe('two migrations of the same name through one deployer', () => {
  it('each phase and each rollback gets its own migration state', async () => {
    const a = new AbortController();
    const b = new AbortController();
    const base = fakeMigration();
    const log = base.log;
    // Both pre-flights run before either goes on, so the two migrations interleave.
    const bothInPreflight = deferred();
    const which = (context: DeployContext) => (context.signal === a.signal ? 'a' : 'b');
    const fails = (migration: 'a' | 'b', code: string) => (context: DeployContext): Behaviour =>
      which(context) === migration ? { fail: new ApMigrateError(code, `${code} (${migration})`) } : 'ok';
    const deployer = createFakeDeployer(log, {
      preflight: () => ({ gate: bothInPreflight.promise }),
      activate: fails('a', 'A_ACTIVATE_FAILED'),
      health: fails('b', 'B_HEALTH_FAILED'),
    });
    const common = { ...base.options, name: 'same', deployers: { chroot: deployer }, source: createFakeSource(log) };
    const runA = migrate({ ...common, signal: a.signal });
    const runB = migrate({ ...common, signal: b.signal });
    await log.entered('preflight');
    await new Promise((r) => setImmediate(r));
    expect(log.of('preflight')).toHaveLength(2);
    bothInPreflight.resolve();
    const [resultA, resultB] = await Promise.all([runA, runB]);

    expect(resultA._unsafeUnwrapErr().code).toBe('A_ACTIVATE_FAILED');
    expect(resultB._unsafeUnwrapErr().code).toBe('B_HEALTH_FAILED');

    const contextOf = (m: 'a' | 'b') => log.of('preflight').find((c) => which(c.context!) === m)!.context!;
    const ctxA = contextOf('a');
    const ctxB = contextOf('b');
    expect(ctxA).not.toBe(ctxB);
    expect(ctxA.name).toBe('same');
    expect(ctxB.name).toBe('same');
    expect(log.names(ctxA)).toEqual(['preflight', 'receive', 'activate', 'rollback', 'release']);
    expect(log.names(ctxB)).toEqual(['preflight', 'receive', 'activate', 'start', 'healthCheck', 'rollback', 'release']);

    // The pre-flight report each later phase got is its own migration's.
    const preflightOf = (ctx: DeployContext) => log.calls.find((c) => c.name === 'receive' && c.context === ctx)!.args[0] as PreflightReport<FakeFacts>;
    const pa = preflightOf(ctxA);
    const pb = preflightOf(ctxB);
    expect(pa.facts.token).not.toBe(pb.facts.token);
    for (const call of log.calls.filter((c) => c.name === 'activate')) {
      expect((call.args[0] as PreflightReport<FakeFacts>).facts.token).toBe(call.context === ctxA ? pa.facts.token : pb.facts.token);
    }

    const rollbackOf = (ctx: DeployContext) => {
      const calls = log.calls.filter((c) => c.name === 'rollback' && c.context === ctx);
      expect(calls).toHaveLength(1);
      return calls[0]!.args[0] as DeploymentState<FakeFacts>;
    };
    const stateA = rollbackOf(ctxA);
    const stateB = rollbackOf(ctxB);
    expect(Object.keys(stateA).sort()).toEqual(['preflight', 'staged']);
    expect(stateA.preflight).toEqual(pa);
    expect(stateA.staged!.stagingDir).toBe(pa.stagingDir);
    expect(Object.keys(stateB).sort()).toEqual(['activated', 'preflight', 'started']);
    expect(stateB.preflight).toEqual(pb);
    expect(stateB.activated!.installDir).toBe('/srv/same');

    // release, too, gets each migration's own state.
    const releaseOf = (ctx: DeployContext) => log.calls.find((c) => c.name === 'release' && c.context === ctx)!.args[0] as DeploymentState<FakeFacts>;
    expect(releaseOf(ctxA).preflight!.facts.token).toBe(pa.facts.token);
    expect(releaseOf(ctxB).preflight!.facts.token).toBe(pb.facts.token);
  });

  it('both succeed, each report its own', async () => {
    const base = fakeMigration();
    const gate = deferred();
    const deployer = createFakeDeployer(base.log, { preflight: { gate: gate.promise } });
    const common = { ...base.options, deployers: { chroot: deployer } };
    const runs = [migrate({ ...common, name: 'one' }), migrate({ ...common, name: 'two' })];
    await base.log.entered('preflight');
    gate.resolve();
    const [one, two] = await Promise.all(runs);
    expect(one!._unsafeUnwrap().destination!.installDir).toBe('/srv/one');
    expect(two!._unsafeUnwrap().destination!.installDir).toBe('/srv/two');
    expect(base.log.of('rollback')).toEqual([]);
    expect(base.log.of('release')).toHaveLength(2);
  });
});
