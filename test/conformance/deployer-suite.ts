/**
 * The deployer conformance suite: every Deployer passes the same tests, whatever its method and
 * however its destination is reached. Call `deployerConformance(factory)` at the top level of a
 * test file, once per implementation.
 *
 * What every deployer must do: pre-flight changes nothing (a dry run ends there) and says where
 * `receive` will write; a full round works and its rollback leaves nothing behind; a taken name
 * is `DESTINATION_EXISTS`; a failure in any phase (a truncated payload, a destination command
 * failing at any step of activate, start or the health check) is undone by rollback, and rollback
 * twice is harmless; an abort is `ABORTED`; a malformed name is refused before anything runs; the
 * deployer keeps no state between migrations (the same name twice on one instance); and of two
 * same-name migrations racing for one destination, the loser's rollback leaves the winner alone.
 * A gap an implementation is known to have is declared in `expectedFailures` and runs as `it.fails`.
 *
 * The factory says how its destination is made and checked. It gives the payload (a bundle stream
 * for the file-based methods, whatever a VM-based method moves), and "nothing behind" is its own
 * check (files and processes on a real host, the exact commands and the simulated state on a
 * scripted one). For a deployer reached through a transport, the suite makes destination commands
 * fail through a proxy of that transport; a deployer that reaches its destination itself gives
 * `breakStep` instead (or has no fault tests).
 */
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { err, ResultAsync } from 'neverthrow';
import { afterEach, describe, expect, it, type TestContext } from 'vitest';
import { ApMigrateError } from '../../src/errors.js';
import type { MigrationPlan } from '../../src/policy/plan.js';
import type { ResourceProfile } from '../../src/policy/profile.js';
import type { DeployContext, Deployer, DeploymentState, PreflightReport, ReceiveOptions } from '../../src/spec/deployer.js';
import type { Transport } from '../../src/spec/transport.js';
import { noTransport } from '../../src/migrate/no-transport.js';
import { TransportError } from '../../src/transports/errors.js';
import { type Requirement, skipUnless } from '../helpers/requirements.js';

/** The phases after pre-flight, in the order migrate() runs them. */
export type DeployPhase = 'receive' | 'activate' | 'start' | 'health';

/** One call the deployer made at the destination, as the suite's proxy saw it. */
export type DestinationCall = { op: 'exec'; argv: string[] } | { op: 'upload'; path: string } | { op: 'readFile'; path: string };

/** Payloads for one migration: fresh ones on every call. */
export interface PayloadSource<Payload> {
  /** The whole payload. */
  whole(): Payload;
  /** Cut short: receiving it must fail. Absent when a payload cannot be cut (a VM). */
  truncated?(): Payload;
  /** Part of the payload, then nothing more, ever (for the abort test). Absent when it cannot stall. */
  stalled?(): Payload;
}

/** A destination under test, fresh for each test. */
export interface DestinationUnderTest<Payload, Facts> {
  /** How deploy contexts reach it (the suite wraps it in its proxy); absent for a deployer that reaches its own. */
  transport?: Transport;
  /** The payloads of the program for `context`. */
  payloads(deployer: Deployer<Payload, Facts>, context: DeployContext): Promise<PayloadSource<Payload>>;
  /** What the destination holds that concerns `name`, as comparable text (for the dry run). */
  snapshot(name: string): Promise<string>;
  /**
   * Fail (with expect) unless nothing of the migration is left. `state` is what rollback was
   * given; `rollbackCalls` the destination calls that rollback made, for a check of the exact commands.
   */
  expectNothingBehind(context: DeployContext, state: DeploymentState<Facts>, rollbackCalls: readonly DestinationCall[]): Promise<void>;
  /** Fail unless the started migration in `state` is still in place and running. */
  expectRunning(context: DeployContext, state: DeploymentState<Facts>): Promise<void>;
  /** Remove whatever the test left (after a failed assertion), for these names. */
  dispose(names: readonly string[]): Promise<void>;
}

/** One implementation under test. */
export interface DeployerConformanceFactory<Payload, Facts> {
  name: string;
  /** What the tests need (root, tools): they skip without it, or fail under AP_MIGRATE_STRICT=1. */
  requirements?: Requirement[];
  makeDeployer(): Deployer<Payload, Facts>;
  makeDestination(): Promise<DestinationUnderTest<Payload, Facts>>;
  /** The program to move, with a plan that chose this deployer's method. */
  program(): { profile: ResourceProfile; plan: MigrationPlan };
  /** Whether the program really runs at the destination (a real host): its pid is then checked there. */
  canRunForReal: boolean;
  /**
   * Names are unique per machine there (network namespaces), or every destination made by this
   * factory is one and the same host (a deployer that fixes its own destination, like esxi-vm): two
   * destinations cannot hold one name at once, so the same-name test runs its two migrations one
   * after the other.
   */
  namesAreMachineWide?: boolean;
  /**
   * Where `receive` writes, when that is not a directory of a file system (a VM's directory on a
   * datastore): what `PreflightReport.stagingDir` looks like (default: an absolute path), and
   * whether it is fixed by the name alone, so that two migrations of one name, one after the other,
   * stage in the same place (default: every pre-flight chooses a place of its own).
   */
  staging?: { pattern: RegExp; fixedByName?: boolean };
  /**
   * The phase that takes the name at the destination (default `activate`). A VM method's `receive`
   * registers the copy under its name, so of two same-name migrations the loser fails in `receive`.
   */
  takesNameIn?: 'activate' | 'receive';
  /**
   * For a deployer that reaches its destination itself: make the `step`-th destination operation
   * of the next `phase` fail. Without it, the suite's transport proxy fails that command.
   */
  breakStep?(phase: Exclude<DeployPhase, 'receive'>, step: number): void;
  /** Bytes pre-flight is told the payload has (default 1 MiB). */
  estimatedBytes?: number;
  /**
   * Tests this implementation is known to fail, by id, with the reason: each runs as `it.fails`,
   * so the gap shows in every run and the entry must go once it is fixed (the test then fails).
   */
  expectedFailures?: Partial<Record<ConformanceTestId, string>>;
}

/** The suite's tests, by id. */
export type ConformanceTestId =
  | 'dry-run'
  | 'full-round'
  | 'name-taken'
  | 'malformed-name'
  | 'truncated-payload'
  | 'fails-in-activate'
  | 'fails-in-start'
  | 'fails-in-health'
  | 'abort-before-preflight'
  | 'abort-while-receiving'
  | 'same-name-race'
  | 'no-state-between-migrations'
  | 'delta-round'
  | 'resumed-after-cut';

/** The transport proxy: records every call and fails the `failAt`-th one from when it was armed. */
interface ProxiedTransport extends Transport {
  calls: DestinationCall[];
  /** Fail the `step`-th call from now; `fired()` says whether it has. */
  failAt(step: number): void;
  disarm(): void;
  fired(): boolean;
}

function proxyTransport(inner: Transport): ProxiedTransport {
  const calls: DestinationCall[] = [];
  let left = 0;
  let hasFired = false;
  const fault = (what: string, stream?: Readable) => {
    if (left === 0) return undefined;
    left -= 1;
    if (left > 0) return undefined;
    hasFired = true;
    stream?.destroy();
    return new ResultAsync(Promise.resolve(err<never, ApMigrateError>(new TransportError('EXEC_FAILED', `injected fault: ${what} failed at the destination`))));
  };
  return {
    kind: inner.kind,
    root: inner.root,
    description: inner.description,
    calls,
    failAt: (step) => ((left = step), (hasFired = false)),
    disarm: () => void (left = 0),
    fired: () => hasFired,
    exec: (argv, options) => {
      calls.push({ op: 'exec', argv: [...argv] });
      return fault(argv.slice(0, 2).join(' '), options?.stdin instanceof Readable ? options.stdin : undefined) ?? inner.exec(argv, options);
    },
    upload: (source, path, options) => {
      calls.push({ op: 'upload', path });
      return fault(`upload ${path}`, source) ?? inner.upload(source, path, options);
    },
    readFile: (path, options) => {
      calls.push({ op: 'readFile', path });
      return fault(`read ${path}`) ?? inner.readFile(path, options);
    },
    close: () => inner.close(),
  };
}

/** Names valid for every method (letters and digits; jail(8) refuses dots), unique per run: some things are machine-wide. */
const RUN = randomBytes(3).toString('hex');
let serial = 0;
const freshName = (tag: string) => `cf${RUN}${tag}${serial++}`;

/** Names no deployer may accept: path syntax, shell syntax, option-like, empty, too long. */
export const MALFORMED_NAMES: readonly string[] = ['../escape', 'a/b', 'a b', '', '-rf', '$(touch pwned)', 'semi;colon', 'new\nline', 'x'.repeat(100)];

/** Define the suite for one implementation. */
export function deployerConformance<Payload, Facts>(factory: DeployerConformanceFactory<Payload, Facts>): void {
  describe.skipIf(skipUnless(...(factory.requirements ?? [])))(`deployer conformance: ${factory.name}`, () => {
    const opened: Array<{ destination: DestinationUnderTest<Payload, Facts>; names: string[]; rounds: Round<Payload, Facts>[] }> = [];
    const estimatedBytes = factory.estimatedBytes ?? 1024 * 1024;
    /** `it`, or `it.fails` for a test this implementation is known to fail (the reason in its title). */
    const test = (id: ConformanceTestId, title: string, body: (ctx: TestContext) => Promise<void>) => {
      const known = factory.expectedFailures?.[id];
      if (known) it.fails(`${title} [known gap: ${known}]`, body);
      else it(title, body);
    };

    afterEach(async () => {
      for (const { destination, names, rounds } of opened.splice(0)) {
        // Whatever a failed assertion left: rolled back by a fresh deployer, then the harness's own sweep.
        for (const round of rounds) await factory.makeDeployer().rollback(round.context, round.state);
        await destination.dispose(names);
      }
    });

    /** A fresh destination with its proxy, and a maker of rounds there. */
    async function open() {
      const destination = await factory.makeDestination();
      const proxy = proxyTransport(destination.transport ?? noTransport(factory.name));
      const entry = { destination, names: [] as string[], rounds: [] as Round<Payload, Facts>[] };
      opened.push(entry);
      const round = (deployer: Deployer<Payload, Facts>, tag: string, name = freshName(tag)): Round<Payload, Facts> => {
        const { profile, plan } = factory.program();
        entry.names.push(name);
        const made = new Round(deployer, destination, proxy, { transport: proxy, profile, plan, name }, estimatedBytes);
        entry.rounds.push(made);
        return made;
      };
      // A context that is never rolled back (nothing may run for it).
      const context = (name: string): DeployContext => ({ transport: proxy, ...factory.program(), name });
      return { destination, proxy, round, context };
    }

    /** Roll back, check nothing is left, roll back again, check again. */
    async function expectRolledBackTwice(round: Round<Payload, Facts>): Promise<void> {
      for (const attempt of ['first', 'second']) {
        const from = round.proxy.calls.length;
        const result = await round.deployer.rollback(round.context, round.state);
        expect(result.isOk(), `${attempt} rollback: ${result.isErr() ? result.error.message : ''}`).toBe(true);
        await round.destination.expectNothingBehind(round.context, round.state, round.proxy.calls.slice(from));
      }
    }

    test('dry-run', 'pre-flight changes nothing at the destination (a dry run ends there) and says where receive writes', async () => {
      const { destination, proxy, round } = await open();
      const r = round(factory.makeDeployer(), 'dry');
      const before = await destination.snapshot(r.context.name);
      const report = await r.preflight();
      expect(report.stagingDir, 'PreflightReport.stagingDir').toMatch(factory.staging?.pattern ?? /^\/./);
      expect(report.stagingDir).not.toBe(report.installDir);
      expect(proxy.calls.filter((c) => c.op === 'upload')).toEqual([]);
      expect(await destination.snapshot(r.context.name)).toBe(before);
    });

    test('full-round', 'a full round works, and its rollback leaves nothing behind (twice)', async () => {
      const { round } = await open();
      const r = round(factory.makeDeployer(), 'full');
      const report = await r.preflight();
      const staged = await r.receive();
      expect(staged.stagingDir).toBe(report.stagingDir);
      await r.through('health');
      expect(r.state.started!.pid).toBeGreaterThanOrEqual(0);
      if (factory.canRunForReal) expect(r.state.started!.pid).toBeGreaterThan(0);
      await r.destination.expectRunning(r.context, r.state);
      await expectRolledBackTwice(r);
    });

    test('name-taken', 'refuses a name that is taken at the destination with DESTINATION_EXISTS, before sending anything', async () => {
      const { proxy, round, context } = await open();
      const deployer = factory.makeDeployer();
      const first = round(deployer, 'taken');
      await first.through('start');
      const from = proxy.calls.length;
      const refused = await deployer.preflight(context(first.context.name), estimatedBytes);
      expect(refused._unsafeUnwrapErr().code).toBe('DESTINATION_EXISTS');
      expect(proxy.calls.slice(from).filter((c) => c.op === 'upload')).toEqual([]);
      await first.destination.expectRunning(first.context, first.state);
      await expectRolledBackTwice(first);
    });

    test('malformed-name', 'refuses a malformed name before anything runs at the destination', async () => {
      const { proxy, context } = await open();
      const deployer = factory.makeDeployer();
      for (const name of MALFORMED_NAMES) {
        const result = await deployer.preflight(context(name), estimatedBytes);
        expect(result.isErr(), JSON.stringify(name)).toBe(true);
        expect(ApMigrateError.isInstance(result._unsafeUnwrapErr())).toBe(true);
      }
      expect(proxy.calls).toEqual([]);
    });

    test('truncated-payload', 'a truncated payload fails to receive, and rollback removes what it had written (twice)', async (ctx) => {
      const { round } = await open();
      const r = round(factory.makeDeployer(), 'cut');
      await r.preflight();
      const payloads = await r.payloads();
      if (!payloads.truncated) return ctx.skip();
      const received = await r.deployer.receive(r.context, r.state.preflight!, payloads.truncated());
      expect(received.isErr(), 'receiving a truncated payload must fail').toBe(true);
      expect(ApMigrateError.isInstance(received._unsafeUnwrapErr())).toBe(true);
      await expectRolledBackTwice(r);
    });

    for (const phase of ['activate', 'start', 'health'] as const) {
      test(`fails-in-${phase}`, `a destination failing at any step of ${phase} is undone by rollback (twice)`, async (ctx) => {
        if (factory.makeDeployer().destination === 'own' && !factory.breakStep) return ctx.skip();
        const { proxy, round } = await open();
        const deployer = factory.makeDeployer();
        // Step 1, 2, ... until the phase runs out of steps before the fault.
        for (let step = 1; step <= 8; step++) {
          const r = round(deployer, phase.slice(0, 3));
          await r.through(previousPhase(phase));
          if (factory.breakStep) factory.breakStep(phase, step);
          else proxy.failAt(step);
          const result = await r.phase(phase);
          const fired = factory.breakStep ? result.isErr() : proxy.fired();
          proxy.disarm();
          if (result.isErr()) expect(ApMigrateError.isInstance(result.error), result.error.message).toBe(true);
          await expectRolledBackTwice(r);
          if (!fired) break;
        }
      });
    }

    test('abort-before-preflight', 'an abort before pre-flight is ABORTED, and changes nothing', async () => {
      const { destination, context } = await open();
      const controller = new AbortController();
      controller.abort();
      const name = freshName('abort');
      const before = await destination.snapshot(name);
      const refused = await factory.makeDeployer().preflight({ ...context(name), signal: controller.signal }, estimatedBytes);
      expect(refused._unsafeUnwrapErr().code).toBe('ABORTED');
      expect(await destination.snapshot(name)).toBe(before);
    });

    test('abort-while-receiving', 'an abort while the payload streams is ABORTED, and rollback leaves nothing behind (twice)', async (ctx) => {
      const { proxy, round } = await open();
      const r = round(factory.makeDeployer(), 'abort');
      await r.preflight();
      const payloads = await r.payloads();
      if (!payloads.stalled) return ctx.skip();
      const controller = new AbortController();
      const from = proxy.calls.length;
      const receiving = r.deployer.receive({ ...r.context, signal: controller.signal }, r.state.preflight!, payloads.stalled());
      // Abort once the destination has been reading the payload for a moment.
      for (let i = 0; i < 100 && proxy.calls.length - from < 2; i++) await sleep(20);
      await sleep(200);
      controller.abort();
      const received = await receiving;
      expect(received._unsafeUnwrapErr().code).toBe('ABORTED');
      await expectRolledBackTwice(r);
    });

    const namePhase = factory.takesNameIn ?? 'activate';
    const losesBy = namePhase === 'receive' ? 'receiving' : 'activation';
    test('same-name-race', `two same-name migrations racing for one destination: the loser fails by ${losesBy}, and its rollback leaves the winner running`, async () => {
      const deployer = factory.makeDeployer();
      const { round } = await open();
      const winner = round(deployer, 'race');
      const loser = round(deployer, 'race', winner.context.name);
      // Both pass the phases before the one that takes the name before either takes it.
      await winner.through(previousPhase(namePhase));
      await loser.through(previousPhase(namePhase));
      await winner.through('start');
      const lost = namePhase === 'receive' ? await loser.tryReceive() : await loser.phase('activate');
      expect(lost.isErr(), `the second ${losesBy === 'receiving' ? 'receive' : 'activation'} of one name at one destination must fail`).toBe(true);
      if (lost.isErr()) expect(ApMigrateError.isInstance(lost.error), lost.error.message).toBe(true);
      const rolledBack = await loser.deployer.rollback(loser.context, loser.state);
      expect(rolledBack.isOk(), rolledBack.isErr() ? rolledBack.error.message : '').toBe(true);
      await winner.through('health');
      await winner.destination.expectRunning(winner.context, winner.state);
      await expectRolledBackTwice(winner);
    });

    test('delta-round', 'a second round seeded from the first replaces the staged tree; the inventory answers; rollback leaves nothing (twice)', async (ctx) => {
      if (!factory.makeDeployer().inventory) return ctx.skip();
      const { round } = await open();
      const r = round(factory.makeDeployer(), 'delta');
      const report = await r.preflight();
      (await r.tryReceive())._unsafeUnwrap();
      const held = (await r.deployer.inventory!(r.context, report, { round: 'delta' }))._unsafeUnwrap();
      for (const [path, file] of Object.entries(held)) {
        expect(path.startsWith('/'), path).toBe(true);
        expect(['staged', 'resume', 'host']).toContain(file.from);
      }
      const second = (await r.tryReceive({ round: 'delta' }))._unsafeUnwrap();
      expect(second.stagingDir).toBe(report.stagingDir);
      await r.through('health');
      await r.destination.expectRunning(r.context, r.state);
      await expectRolledBackTwice(r);
    });

    test('resumed-after-cut', 'a cut payload fails retryably; the next attempt receives it whole; rollback removes what the cut one kept (twice)', async (ctx) => {
      if (!factory.makeDeployer().inventory) return ctx.skip();
      const { round } = await open();
      const r = round(factory.makeDeployer(), 'resume');
      const report = await r.preflight();
      const payloads = await r.payloads();
      if (!payloads.truncated) return ctx.skip();
      const cut = await r.deployer.receive(r.context, report, payloads.truncated(), undefined, { attempt: 1 });
      expect(cut.isErr(), 'receiving a cut payload must fail').toBe(true);
      expect(cut._unsafeUnwrapErr().isRetryable, 'a cut stream is worth another attempt').toBe(true);
      (await r.deployer.inventory!(r.context, report, { round: 'full', attempt: 2 }))._unsafeUnwrap();
      (await r.tryReceive({ attempt: 2 }))._unsafeUnwrap();
      await r.through('health');
      await r.destination.expectRunning(r.context, r.state);
      await expectRolledBackTwice(r);
    });

    test('no-state-between-migrations', 'keeps no state between migrations: the same name twice on one instance, each rollback touching only its own', async () => {
      const deployer = factory.makeDeployer();
      const a = await open();
      const first = a.round(deployer, 'twin');
      if (factory.namesAreMachineWide) {
        // One after the other: the second round must not see anything of the first.
        await first.through('health');
        await expectRolledBackTwice(first);
        const again = a.round(deployer, 'twin', first.context.name);
        await again.through('health');
        if (!factory.staging?.fixedByName) expect(again.state.preflight!.stagingDir).not.toBe(first.state.preflight!.stagingDir);
        await expectRolledBackTwice(again);
        return;
      }
      const b = await open();
      const second = b.round(deployer, 'twin', first.context.name);
      // Interleaved: both pre-flights before either receives; A is rolled back while B is half-way.
      const [preA, preB] = [await first.preflight(), await second.preflight()];
      expect(preA.stagingDir).not.toBe(preB.stagingDir);
      await second.receive();
      await first.receive();
      await second.phase('activate').then((r) => r._unsafeUnwrap());
      await first.through('health');
      const fromB = second.proxy.calls.length;
      await expectRolledBackTwice(first);
      expect(second.proxy.calls.length, "A's rollback reached B's destination").toBe(fromB);
      await second.through('health');
      await second.destination.expectRunning(second.context, second.state);
      await expectRolledBackTwice(second);
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const PHASES = ['preflight', 'receive', 'activate', 'start', 'health'] as const;
type AnyPhase = (typeof PHASES)[number];

function previousPhase(phase: DeployPhase): AnyPhase {
  return PHASES[PHASES.indexOf(phase) - 1]!;
}

/** One migration driven phase by phase, with its state kept as migrate() keeps it. */
class Round<Payload, Facts> {
  readonly state: DeploymentState<Facts> = {};
  private readonly ran = new Set<AnyPhase>();
  private payloadSource: PayloadSource<Payload> | undefined;

  constructor(
    readonly deployer: Deployer<Payload, Facts>,
    readonly destination: DestinationUnderTest<Payload, Facts>,
    readonly proxy: ProxiedTransport,
    readonly context: DeployContext,
    private readonly estimatedBytes: number,
  ) {}

  async payloads(): Promise<PayloadSource<Payload>> {
    this.payloadSource ??= await this.destination.payloads(this.deployer, this.context);
    return this.payloadSource;
  }

  async preflight(): Promise<PreflightReport<Facts>> {
    const result = await this.deployer.preflight(this.context, this.estimatedBytes);
    if (result.isErr()) throw new Error(`pre-flight of "${this.context.name}" failed: [${result.error.code}] ${result.error.message}`, { cause: result.error });
    const report = result.value;
    this.state.preflight = report;
    this.ran.add('preflight');
    return report;
  }

  async receive() {
    return (await this.tryReceive())._unsafeUnwrap();
  }

  /** Receive the whole payload as one round of `options`, which may fail; what it staged is recorded. */
  async tryReceive(options?: ReceiveOptions) {
    const received = await this.deployer.receive(this.context, this.state.preflight!, (await this.payloads()).whole(), undefined, options);
    if (received.isOk()) this.state.staged = received.value;
    this.ran.add('receive');
    return received;
  }

  /** Run one phase after pre-flight and receive, recording what it made. */
  async phase(phase: Exclude<DeployPhase, 'receive'>) {
    const { deployer, context, state } = this;
    this.ran.add(phase);
    if (phase === 'activate') {
      const activated = await deployer.activate(context, state.preflight!, state.staged!);
      if (activated.isOk()) {
        state.activated = activated.value;
        delete state.staged; // moved into place, as migrate() records it
      }
      return activated.map(() => undefined);
    }
    if (phase === 'start') {
      const started = await deployer.start(context, state.activated!);
      if (started.isOk()) state.started = started.value;
      return started.map(() => undefined);
    }
    return deployer.healthCheck(context, state.started!);
  }

  /** Run every phase not run yet up to and including `last`, each of which must succeed. */
  async through(last: AnyPhase): Promise<void> {
    for (const phase of PHASES.slice(0, PHASES.indexOf(last) + 1)) {
      if (this.ran.has(phase)) continue;
      if (phase === 'preflight') await this.preflight();
      else if (phase === 'receive') await this.receive();
      else {
        const result = await this.phase(phase);
        expect(result.isOk(), `${phase}: ${result.isErr() ? result.error.message : ''}`).toBe(true);
      }
    }
  }
}
