/**
 * The caller's AbortSignal, fired at every phase of a migration driven through fakes: the result
 * is ABORTED, the destination is rolled back once with exactly what existed there, a frozen source
 * is thawed (and never stopped), and the deployer's `release` runs once.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { migrate } from '../../src/migrate.js';
import type { Cutover } from '../../src/migrate/types.js';
import type { DeploymentState } from '../../src/spec/deployer.js';
import { fakeMigration, type FakeDeployerOptions, type FakeFacts } from '../helpers/fake-plugins.js';

const SOURCE_PID = 777;

/** The deployer's phases in the order migrate() calls them, after estimate. */
const ORDER = ['preflight', 'pack', 'receive', 'activate', 'start', 'healthCheck'] as const;
type Step = (typeof ORDER)[number];

interface AbortCase {
  /** The migration phase the abort happens in. */
  phase: 'preflight' | 'transfer' | 'activate' | 'start' | 'health';
  how: string;
  /** The fake call the abort happens in. */
  step: Step;
  /** The deployer options that make the abort happen (`hang`: the test aborts once `step` was entered). */
  setup: (controller: AbortController) => FakeDeployerOptions;
  hang: boolean;
  /** Keys of the DeploymentState rollback must receive (none: no rollback, nothing exists). */
  state?: (keyof DeploymentState)[];
}

const CASES: AbortCase[] = [
  { phase: 'preflight', how: 'preflight honours the signal', step: 'preflight', hang: true, setup: () => ({ preflight: 'hang' }) },
  { phase: 'preflight', how: 'preflight ignores the signal', step: 'preflight', hang: false, setup: (c) => ({ preflight: { abort: c } }) },
  { phase: 'transfer', how: 'receive honours the signal', step: 'receive', hang: true, setup: () => ({ receive: 'hang' }), state: ['preflight'] },
  { phase: 'transfer', how: 'receive ignores the signal', step: 'receive', hang: false, setup: (c) => ({ receive: { abort: c } }), state: ['preflight', 'staged'] },
  { phase: 'activate', how: 'activate honours the signal', step: 'activate', hang: true, setup: () => ({ activate: 'hang' }), state: ['preflight', 'staged'] },
  { phase: 'activate', how: 'activate ignores the signal', step: 'activate', hang: false, setup: (c) => ({ activate: { abort: c } }), state: ['preflight', 'activated'] },
  { phase: 'start', how: 'start honours the signal', step: 'start', hang: true, setup: () => ({ start: 'hang' }), state: ['preflight', 'activated'] },
  { phase: 'start', how: 'start ignores the signal', step: 'start', hang: false, setup: (c) => ({ start: { abort: c } }), state: ['activated', 'preflight', 'started'] },
  { phase: 'health', how: 'health honours the signal', step: 'healthCheck', hang: true, setup: () => ({ health: 'hang' }), state: ['activated', 'preflight', 'started'] },
  // The abort fires while the health check runs and the check still passes: the source phase
  // (which stops the source for `stop` and stop-and-copy) must not run after the caller aborted.
  { phase: 'health', how: 'health ignores the signal', step: 'healthCheck', hang: false, setup: (c) => ({ health: { abort: c } }), state: ['activated', 'preflight', 'started'] },
];

afterEach(() => vi.restoreAllMocks());

describe.each<Cutover>(['copy', 'stop-and-copy'])('abort with cutover %s', (cutover) => {
  it.each(CASES)('abort in $phase ($how): ABORTED, rollback of exactly what existed, release once', async (c) => {
    const kill = vi.spyOn(process, 'kill');
    const controller = new AbortController();
    // sourcePolicy 'stop': the source would be stopped after health; an aborted migration never stops it.
    const fake = fakeMigration({ deployer: c.setup(controller), pid: SOURCE_PID, migrate: { signal: controller.signal, cutover, sourcePolicy: 'stop' } });
    const running = migrate(fake.options);
    if (c.hang) {
      await fake.log.entered(c.step);
      controller.abort(new Error('caller gave up'));
    }
    const result = await running;

    // Exactly the calls up to the aborted one, then undo: thaw (if frozen), rollback, release.
    const reached = ORDER.slice(0, ORDER.indexOf(c.step) + 1) as string[];
    const frozen = cutover === 'stop-and-copy' && c.phase !== 'preflight';
    if (frozen) reached.splice(1, 0, 'freeze');
    const undo = [...(frozen ? ['thaw'] : []), ...(c.state ? ['rollback'] : []), 'release'];
    expect(fake.log.names()).toEqual(['estimate', ...reached, ...undo]);
    expect(result.isErr()).toBe(true);
    expect(result._unsafeUnwrapErr().code).toBe('ABORTED');

    expect(fake.log.of('stop')).toEqual([]);
    expect(kill).not.toHaveBeenCalled();
    if (frozen) {
      expect(fake.log.of('freeze')[0]!.args[0]).toBe(SOURCE_PID);
      expect(fake.log.of('thaw')[0]!.args[0]).toEqual([SOURCE_PID, SOURCE_PID + 1]);
    }

    const preflightReport = fake.log.of('receive')[0]?.args[0] ?? undefined;
    if (c.state) {
      const rollbacks = fake.log.of('rollback');
      expect(rollbacks).toHaveLength(1);
      const state = rollbacks[0]!.args[0] as DeploymentState<FakeFacts>;
      expect(Object.keys(state).sort()).toEqual([...c.state].sort());
      // What rollback gets is what the phases produced, not a copy of something else.
      expect(state.preflight).toEqual(preflightReport);
      if (state.staged) expect(state.staged.stagingDir).toBe(state.preflight!.stagingDir);
      if (state.activated) expect(state.activated.installDir).toBe(state.preflight!.installDir);
      if (state.started) expect(state.started.pid).toBe(4242);
    }
    const releases = fake.log.of('release');
    expect(releases).toHaveLength(1);
  });
});

describe('abort before migrate() starts', () => {
  it('is ABORTED with no plug-in call at all: nothing is estimated, nothing reaches the destination', async () => {
    const controller = new AbortController();
    controller.abort(new Error('cancelled while queued'));
    const fake = fakeMigration({ pid: SOURCE_PID, migrate: { signal: controller.signal, cutover: 'stop-and-copy' } });
    const result = await migrate(fake.options);
    expect(result.isErr()).toBe(true);
    expect(result._unsafeUnwrapErr().code).toBe('ABORTED');
    expect(fake.log.of('freeze')).toEqual([]);
    expect(fake.log.of('pack')).toEqual([]);
    expect(fake.log.of('rollback')).toEqual([]);
    // An already-aborted signal should be refused before the destination is contacted at all.
    expect(fake.log.names()).toEqual([]);
  });
});
