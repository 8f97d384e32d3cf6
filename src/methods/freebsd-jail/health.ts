/**
 * The jail deployer's health check: the jail exists, the program's process still runs in it,
 * it listens (in `sockstat -j`) on every TCP port it listened on at the source, and it stays so
 * for the settle time.
 *
 * @module
 */
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../../errors.js';
import { parseSockstat } from '../../profilers/freebsd-parsers.js';
import type { DeployContext, StartedProgram } from '../../spec/deployer.js';
import { DeployError } from '../../destination/deploy-error.js';
import { listeningPorts } from './layout.js';
import { abortWins, commandOptions, type JailSettings } from './options.js';
import { consoleTail, jidOf, pidsIn } from './start.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** When the health check gives up, and when the program has been up long enough. */
interface HealthClock {
  deadline: number;
  settleAt: number;
}

/** Health check of the `freebsd-jail` method. */
export function healthCheckJail(settings: JailSettings, context: DeployContext, started: StartedProgram): ResultAsync<void, ApMigrateError> {
  const now = Date.now();
  const clock = { deadline: now + settings.health.timeoutMs, settleAt: now + settings.health.settleMs };
  return probe(settings, context, started, clock).mapErr(abortWins(context));
}

/** One probe; polls again (after a pause) until healthy, gone, or out of time. */
function probe(settings: JailSettings, context: DeployContext, started: StartedProgram, clock: HealthClock): ResultAsync<void, ApMigrateError> {
  const ports = listeningPorts(context.profile);
  const failed = (what: string) =>
    consoleTail(settings, context, started.logPath).andThen((tail) => errAsync<void, ApMigrateError>(new DeployError('HEALTH_CHECK_FAILED', `Health check failed: ${what}.${tail ? ` ${tail.slice(-600)}` : ''}`)));
  return jidOf(settings, context).andThen((jid) => {
    if (jid === undefined) return failed(`the jail "${context.name}" is gone`);
    return pidsIn(settings, context, jid).andThen((pids) => {
      if (!pids.includes(started.pid)) return failed('the program exited in the jail');
      return openPorts(settings, context, jid, ports).andThen((open) => {
        const listening = open.length === ports.length;
        if (listening && Date.now() >= clock.settleAt) return okAsync(undefined);
        if (Date.now() >= clock.deadline) return failed(`the program is not listening on port(s) ${ports.filter((p) => !open.includes(p)).join(', ')}`);
        // Listening but not yet settled: wait out the rest of the settle time; else poll again.
        const wait = listening ? Math.max(1, clock.settleAt - Date.now()) : settings.health.pollMs;
        return ResultAsync.fromSafePromise(sleep(wait)).andThen(() => probe(settings, context, started, clock));
      });
    });
  });
}

/** Which of `ports` the jail listens on now (TCP, per `sockstat -4 -6 -l -j`). */
function openPorts(settings: JailSettings, context: DeployContext, jid: number, ports: readonly number[]): ResultAsync<number[], ApMigrateError> {
  if (!ports.length) return okAsync([]);
  return context.transport.exec(['sockstat', '-4', '-6', '-l', '-j', String(jid)], commandOptions(settings, context)).andThen((r) => {
    const parsed = parseSockstat(r.stdout, `sockstat -4 -6 -l -j ${jid}`);
    if (parsed.isErr()) return errAsync<number[], ApMigrateError>(parsed.error);
    return okAsync(ports.filter((p) => parsed.value.some((s) => s.protocol === 'tcp' && s.localPort === p)));
  });
}
