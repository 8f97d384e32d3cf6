/**
 * In-memory plug-ins for driving `migrate()` without any host: a fake {@link Deployer} (with its
 * {@link Packager}), a fake {@link Source} and a fake {@link Executor}. Every call is recorded in
 * one shared, ordered log, so a test can say which calls happened in which order and with what.
 *
 * Each phase of the fake deployer is configurable ({@link Behaviour}): succeed, fail with a typed
 * error, throw, hang until the caller's signal aborts, or abort the caller's controller while it
 * runs (and then succeed, as a deployer that ignores the signal would).
 *
 * The fake deployer keeps no per-migration state, as the contract says: everything a later phase
 * needs travels in what the earlier one returned (the pre-flight report's staging dir is fresh for
 * every pre-flight, as a real deployer's `mktemp` would be).
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { err, errAsync, ok, okAsync, ResultAsync, type Result } from 'neverthrow';
import { ApMigrateError } from '../../src/errors.js';
import type { ResourceProfileInput } from '../../src/policy/profile.js';
import type {
  ActivatedDeployment,
  DeployContext,
  Deployer,
  DeploymentState,
  InventoryQuery,
  MethodReport,
  PreflightReport,
  ReceiverChoice,
  SourceOutcome,
  StagedBundle,
  StartedProgram,
} from '../../src/spec/deployer.js';
import type { ExecResult, Executor } from '../../src/spec/executor.js';
import type { HeldFiles, PackEstimate, PackRequest, PackSummary, Packager, PlanFacts } from '../../src/spec/packager.js';
import type { Source, SourcePolicy } from '../../src/spec/source.js';
import type { Transport } from '../../src/spec/transport.js';
import type { MigrateOptions } from '../../src/migrate/types.js';

/** A promise with its resolve exposed. */
export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (value: T) => void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** How one fake call behaves. */
export type Behaviour =
  | 'ok'
  /** Wait until the context's signal aborts, then fail with `FAKE_SAW_ABORT` (never settles without a signal). */
  | 'hang'
  | { fail: ApMigrateError }
  | { throw: unknown }
  /** Abort the caller's controller while running, then succeed (a plug-in that ignores the signal). */
  | { abort: AbortController }
  /** Wait for `gate`, then behave as `then` (default: succeed). */
  | { gate: Promise<unknown>; then?: Behaviour };

/** A behaviour, or one chosen per call from the call's context (two migrations through one fake). */
export type BehaviourFor = Behaviour | ((context: DeployContext) => Behaviour);

/** One recorded call. `context` is the deploy context (the same object for every phase of one migration). */
export interface FakeCall {
  who: 'deployer' | 'packager' | 'source' | 'executor';
  name: string;
  context?: DeployContext;
  /** The call's arguments besides the context, deep-copied when the call was made. */
  args: unknown[];
}

/** The ordered log every fake of one test writes to. */
export class CallLog {
  readonly calls: FakeCall[] = [];
  private readonly waiters = new Map<string, Deferred[]>();

  record(call: FakeCall): void {
    this.calls.push(call);
    for (const w of this.waiters.get(call.name) ?? []) w.resolve();
    this.waiters.delete(call.name);
  }

  /** Names of the calls, in order (optionally only those made with `context`). */
  names(context?: DeployContext): string[] {
    return this.calls.filter((c) => context === undefined || c.context === context).map((c) => c.name);
  }

  /** Calls of `name`. */
  of(name: string): FakeCall[] {
    return this.calls.filter((c) => c.name === name);
  }

  /** Settles once a call of `name` has been made (now, if one already was). */
  entered(name: string): Promise<void> {
    if (this.calls.some((c) => c.name === name)) return Promise.resolve();
    const d = deferred();
    this.waiters.set(name, [...(this.waiters.get(name) ?? []), d]);
    return d.promise;
  }
}

const copy = <T>(value: T): T => (value === undefined ? value : structuredClone(value));

/** Settle `work` by `behaviour`: a ResultAsync (or a throw, for `{ throw }`). */
function behave<T>(behaviour: Behaviour, what: string, signal: AbortSignal | undefined, work: () => Promise<Result<T, ApMigrateError>>): ResultAsync<T, ApMigrateError> {
  if (behaviour === 'ok') return new ResultAsync(work());
  if (behaviour === 'hang') {
    return new ResultAsync(
      new Promise<Result<T, ApMigrateError>>((resolve) => {
        const saw = () => resolve(err(new ApMigrateError('FAKE_SAW_ABORT', `fake ${what} saw the abort`)));
        if (signal?.aborted) return saw();
        signal?.addEventListener('abort', saw, { once: true });
      }),
    );
  }
  if ('gate' in behaviour) {
    const { gate, then } = behaviour;
    return new ResultAsync(gate.then(() => behave(then ?? 'ok', what, signal, work)));
  }
  if ('fail' in behaviour) return errAsync(behaviour.fail);
  if ('throw' in behaviour) throw behaviour.throw;
  behaviour.abort.abort(new Error(`aborted during fake ${what}`));
  return new ResultAsync(work());
}

/** A small payload that counts what was read; `done` settles when it ends, breaks, or is closed early. */
export function fakePayload(chunks: readonly string[], failure?: ApMigrateError): { payload: Readable; done: ResultAsync<PackSummary, ApMigrateError> } {
  const queue = chunks.map((c) => Buffer.from(c));
  let total = 0;
  let brokeItself = false;
  const payload = new Readable({
    read() {
      const next = queue.shift();
      if (next) {
        total += next.length;
        this.push(next);
      } else if (failure) {
        brokeItself = true;
        this.destroy(failure);
      } else this.push(null);
    },
  });
  const done = new ResultAsync(
    new Promise<Result<PackSummary, ApMigrateError>>((resolve) => {
      payload.once('end', () => resolve(ok({ totalBytes: total, manifestBytes: 0 })));
      payload.once('close', () => {
        if (brokeItself && failure) resolve(err(failure));
        else resolve(err(new ApMigrateError('BUNDLE_IO', 'The bundle stream was closed before its end')));
      });
    }),
  );
  return { payload, done };
}

/** What a fake deployer and its packager do. */
export interface FakeDeployerOptions {
  method?: string;
  destination?: 'transport' | 'own';
  preflight?: BehaviourFor;
  receive?: BehaviourFor;
  activate?: BehaviourFor;
  start?: BehaviourFor;
  health?: BehaviourFor;
  rollback?: BehaviourFor;
  release?: BehaviourFor;
  /** Present: the deployer settles the source itself, with this outcome (or behaviour). */
  settleSource?: { outcome: SourceOutcome; behaviour?: BehaviourFor };
  describe?: (context: DeployContext, state: DeploymentState<FakeFacts>) => MethodReport;
  /** Packager: estimate's bytes (default 100), pack's chunks, a failure of the packer itself. */
  estimateBytes?: number;
  estimate?: Behaviour;
  chunks?: string[];
  pack?: Behaviour;
  packFailure?: ApMigrateError;
  /** Present: the packager measures these facts before planning. */
  measure?: PlanFacts;
  /** Present: the deployer answers inventories (holding nothing), recorded with their query. */
  inventory?: true;
  /** Present: the receiver pre-flight reports it picked. */
  receiver?: ReceiverChoice;
}

/** What the fake's pre-flight learns. */
export interface FakeFacts {
  token: string;
}

/** A fake deployer, recording into `log`. */
export function createFakeDeployer(log: CallLog, options: FakeDeployerOptions = {}): Deployer<Readable, FakeFacts> {
  const method = options.method ?? 'chroot';
  const pick = (b: BehaviourFor | undefined, context: DeployContext): Behaviour => (typeof b === 'function' ? b(context) : (b ?? 'ok'));
  const rec = (who: FakeCall['who'], name: string, context: DeployContext | undefined, ...args: unknown[]) =>
    log.record({ who, name, ...(context ? { context } : {}), args: args.map(copy) });

  const packager: Packager<Readable> = {
    estimate: (request: PackRequest) => {
      log.record({ who: 'packager', name: 'estimate', args: [] });
      return behave(options.estimate ?? 'ok', 'estimate', request.signal, async () => ok<PackEstimate, ApMigrateError>({ bytes: options.estimateBytes ?? 100, measuredTreeBytes: 0 }));
    },
    pack: (request: PackRequest, estimate: PackEstimate) => {
      log.record({ who: 'packager', name: 'pack', args: [copy(estimate)] });
      return behave(options.pack ?? 'ok', 'pack', request.signal, async () => ok(fakePayload(options.chunks ?? ['fake-', 'payload'], options.packFailure)));
    },
    ...(options.measure
      ? {
          measure: (profile, source, signal) => {
            log.record({ who: 'packager', name: 'measure', args: [{ executable: profile.executable, source: source.description, signal: signal !== undefined }] });
            return okAsync(options.measure!);
          },
        }
      : {}),
  };

  const deployer: Deployer<Readable, FakeFacts> = {
    method,
    packager,
    ...(options.destination ? { destination: options.destination } : {}),
    preflight: (context, estimatedBytes) => {
      rec('deployer', 'preflight', context, estimatedBytes);
      return behave(pick(options.preflight, context), 'preflight', context.signal, async () => {
        const token = randomUUID();
        return ok<PreflightReport<FakeFacts>, ApMigrateError>({
          platform: { os: 'linux', release: '6.1.0', arch: 'x86_64' },
          freeBytes: 1e9,
          tools: {},
          installDir: `/srv/${context.name}`,
          stagingDir: `/srv/.staging-${context.name}-${token}`,
          facts: { token },
          ...(options.receiver ? { receiver: options.receiver } : {}),
        });
      });
    },
    ...(options.inventory
      ? {
          inventory: (context: DeployContext, _preflight: PreflightReport<FakeFacts>, query: InventoryQuery) => {
            rec('deployer', 'inventory', context, query);
            return okAsync<HeldFiles, ApMigrateError>({});
          },
        }
      : {}),
    receive: (context, preflight, payload, onBytes, receiveOptions) => {
      rec('deployer', 'receive', context, preflight, { round: receiveOptions?.round, attempt: receiveOptions?.attempt, hostSeeds: receiveOptions?.hostSeeds });
      const behaviour = pick(options.receive, context);
      const read = async (): Promise<Result<StagedBundle, ApMigrateError>> => {
        let bytes = 0;
        try {
          for await (const chunk of payload) {
            bytes += (chunk as Buffer).length;
            onBytes?.(bytes);
          }
        } catch (e) {
          return err(new ApMigrateError('RECEIVE_FAILED', `fake receive: the payload broke: ${String(e)}`, { cause: e }));
        }
        return ok({ stagingDir: preflight.stagingDir, bytesReceived: bytes, entriesVerified: 1 });
      };
      // As a real receiver does: a destination that gives up closes the payload.
      if (behaviour !== 'ok' && typeof behaviour === 'object' && 'fail' in behaviour) payload.destroy();
      const result = behave(behaviour, 'receive', context.signal, read);
      return behaviour === 'hang' ? result.mapErr((e) => (payload.destroy(), e)) : result;
    },
    activate: (context, preflight, staged) => {
      rec('deployer', 'activate', context, preflight, staged);
      return behave(pick(options.activate, context), 'activate', context.signal, async () =>
        ok<ActivatedDeployment, ApMigrateError>({ installDir: preflight.installDir, rootDir: `${preflight.installDir}/root`, undo: [['umount', `${preflight.installDir}/root/proc`]] }),
      );
    },
    start: (context, activated) => {
      rec('deployer', 'start', context, activated);
      return behave(pick(options.start, context), 'start', context.signal, async () =>
        ok<StartedProgram, ApMigrateError>({ pid: 4242, logPath: `${activated.installDir}/program.log`, endpoints: ['10.0.0.2:8080'] }),
      );
    },
    healthCheck: (context, started) => {
      rec('deployer', 'healthCheck', context, started);
      return behave(pick(options.health, context), 'healthCheck', context.signal, async () => ok<void, ApMigrateError>(undefined));
    },
    rollback: (context, state) => {
      rec('deployer', 'rollback', context, state);
      return behave(pick(options.rollback, context), 'rollback', undefined, async () => ok<void, ApMigrateError>(undefined));
    },
    release: (context, state) => {
      rec('deployer', 'release', context, state);
      return behave(pick(options.release, context), 'release', undefined, async () => ok<void, ApMigrateError>(undefined));
    },
    ...(options.settleSource
      ? {
          settleSource: (context: DeployContext, state: DeploymentState<FakeFacts>, policy: SourcePolicy) => {
            rec('deployer', 'settleSource', context, state, policy);
            const outcome = options.settleSource!.outcome;
            return behave(pick(options.settleSource!.behaviour, context), 'settleSource', context.signal, async () => ok<SourceOutcome, ApMigrateError>(outcome));
          },
        }
      : {}),
    ...(options.describe
      ? {
          describe: (context: DeployContext, state: DeploymentState<FakeFacts>) => {
            rec('deployer', 'describe', context, state);
            return options.describe!(context, state);
          },
        }
      : {}),
  };
  return deployer;
}

/** An executor that records every command and runs none. */
export function createFakeExecutor(log: CallLog): Executor {
  return {
    description: 'fake-source-host',
    exec: (argv) => {
      log.record({ who: 'executor', name: 'exec', args: [[...argv]] });
      return errAsync(new ApMigrateError('FAKE_EXEC', `the fake executor runs nothing (${argv.join(' ')})`));
    },
  };
}

/** What a fake source does. */
export interface FakeSourceOptions {
  /** The pids freeze reports for a pid (default: the pid and pid + 1). */
  tree?: (pid: number) => number[];
  freeze?: Behaviour;
  thaw?: Behaviour;
  stop?: Behaviour;
  executor?: Executor;
}

/** A fake local source (isLocal: true) that records freeze, thaw and stop. */
export function createFakeSource(log: CallLog, options: FakeSourceOptions = {}): Source {
  const tree = options.tree ?? ((pid: number) => [pid, pid + 1]);
  const rec = (name: string, ...args: unknown[]) => log.record({ who: 'source', name, args: args.map(copy) });
  return {
    description: 'fake-source',
    executor: options.executor ?? createFakeExecutor(log),
    isLocal: true,
    processTree: (pid) => {
      rec('processTree', pid);
      return okAsync(tree(pid));
    },
    freeze: (pid) => {
      rec('freeze', pid);
      return behave(options.freeze ?? 'ok', 'freeze', undefined, async () => ok(tree(pid)));
    },
    thaw: (pids) => {
      rec('thaw', [...pids]);
      return behave(options.thaw ?? 'ok', 'thaw', undefined, async () => ok<void, ApMigrateError>(undefined));
    },
    stop: (pid, graceMs) => {
      rec('stop', pid, graceMs);
      return behave(options.stop ?? 'ok', 'stop', undefined, async () => ok<void, ApMigrateError>(undefined));
    },
  };
}

/** A destination transport that nothing may use: every call fails (fake deployers never call it). */
export function unusedTransport(log: CallLog): Transport {
  const refuse = (name: string) => () => {
    log.record({ who: 'executor', name: `transport.${name}`, args: [] });
    return errAsync(new ApMigrateError('FAKE_TRANSPORT', `the fake destination transport was used (${name})`));
  };
  return { kind: 'local', root: '/', description: 'fake-destination', exec: refuse('exec'), upload: refuse('upload'), readFile: refuse('readFile'), close: () => okAsync(undefined) };
}

/** A minimal valid files-only Linux profile: the planner chooses `chroot` for it. */
export function filesOnlyLinuxProfile(): ResourceProfileInput {
  return {
    executable: '/usr/local/bin/app',
    executableSize: 20_000,
    argv: ['app'],
    cwd: '/',
    uid: 1001,
    gid: 1001,
    platform: { os: 'linux', release: '6.1.0-18-amd64', arch: 'x86_64' },
    files: [{ path: '/etc/app.conf', kind: 'regular', access: ['read'], size: 100 }],
  };
}

/** A fake deployer and source around a given profile, and the options of `migrate()` that use them. */
export interface FakeMigration {
  log: CallLog;
  deployer: Deployer<Readable, FakeFacts>;
  source: Source;
  options: MigrateOptions;
}

/**
 * A migration of {@link filesOnlyLinuxProfile} (which plans `chroot`) through fakes: the fake is
 * registered as `chroot`, capture is off, the destination transport is one nothing may use.
 */
export function fakeMigration(setup: { deployer?: FakeDeployerOptions; source?: FakeSourceOptions; pid?: number; migrate?: Partial<MigrateOptions> } = {}): FakeMigration {
  const log = new CallLog();
  const deployer = createFakeDeployer(log, setup.deployer);
  const source = createFakeSource(log, setup.source);
  const options: MigrateOptions = {
    target: { profile: filesOnlyLinuxProfile(), ...(setup.pid !== undefined ? { pid: setup.pid } : {}) },
    destination: unusedTransport(log),
    deployers: { [deployer.method]: deployer as Deployer<unknown, unknown> },
    source,
    capture: false,
    ...setup.migrate,
  };
  return { log, deployer, source, options };
}

/** The outcome of a ResultAsync that may (wrongly) reject instead of settling with an error. */
export type Settled<T, E> = { rejected: false; result: Result<T, E> } | { rejected: true; thrown: unknown };

export async function settle<T, E>(result: PromiseLike<Result<T, E>>): Promise<Settled<T, E>> {
  try {
    return { rejected: false, result: await result };
  } catch (thrown) {
    return { rejected: true, thrown };
  }
}
