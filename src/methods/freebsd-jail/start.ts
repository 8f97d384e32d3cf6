/**
 * Starting the jail (`jail -c -f` with its own jail.conf, under `env -i`) and the queries the
 * start and the health check share: the jail's jid (`jls`), its processes (`pgrep -j`), the tail
 * of its console log.
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../../errors.js';
import type { ActivatedDeployment, DeployContext, StartedProgram } from '../../spec/deployer.js';
import { DeployError } from '../../destination/deploy-error.js';
import { endpointsFor, jailPaths } from './layout.js';
import { abortWins, commandOptions, type JailSettings } from './options.js';
import { JAIL_PATH } from './scripts.js';

/** Start of the `freebsd-jail` method: create the jail, and find the program running in it. */
export function startJail(settings: JailSettings, context: DeployContext, activated: ActivatedDeployment): ResultAsync<StartedProgram, ApMigrateError> {
  const paths = jailPaths(activated.installDir);
  const fail = <T>(why: string, cause?: unknown) =>
    consoleTail(settings, context, paths.consoleLog).andThen((tail) =>
      errAsync<T, ApMigrateError>(new DeployError('START_FAILED', `Could not start the jail "${context.name}" at ${context.transport.description}: ${why}${tail ? `\n${tail}` : ''}`, { cause })),
    );
  return context.transport
    .exec(['env', '-i', `PATH=${JAIL_PATH}`, 'jail', '-c', '-f', paths.conf, context.name], { ...commandOptions(settings, context), allowNonZeroExit: true })
    .andThen((r) => (r.code === 0 ? jidOf(settings, context) : fail<number | undefined>(`jail -c exited with ${r.code}: ${r.stderr.trim().slice(0, 600)}`)))
    .andThen((jid) => (jid === undefined ? fail<number[]>('jls does not list the jail after jail -c') : pidsIn(settings, context, jid)))
    .andThen((pids) => (pids.length === 0 ? fail<number>('no process runs in the jail: the program exited at once') : okAsync(Math.min(...pids))))
    .map((pid): StartedProgram => ({ pid, logPath: paths.consoleLog, endpoints: endpointsFor(context, settings.network) }))
    .mapErr(abortWins(context));
}

/** The jid of the jail named like the program, or undefined when no such jail exists. */
export function jidOf(settings: JailSettings, context: DeployContext): ResultAsync<number | undefined, ApMigrateError> {
  return context.transport.exec(['jls', '-j', context.name, 'jid'], { ...commandOptions(settings, context), allowNonZeroExit: true }).map((r) => {
    const jid = Number(r.stdout.trim());
    return r.code === 0 && Number.isInteger(jid) && jid > 0 ? jid : undefined;
  });
}

/** The pids of the processes in jail `jid`. */
export function pidsIn(settings: JailSettings, context: DeployContext, jid: number): ResultAsync<number[], ApMigrateError> {
  return context.transport
    .exec(['pgrep', '-j', String(jid)], { ...commandOptions(settings, context), allowNonZeroExit: true })
    .map((r) => r.stdout.split('\n').map((l) => Number(l.trim())).filter((n) => Number.isInteger(n) && n > 0));
}

/** The end of the jail's console log, for error messages (empty when it cannot be read). */
export function consoleTail(settings: JailSettings, context: DeployContext, logPath: string): ResultAsync<string, never> {
  return context.transport
    .exec(['tail', '-c', '2000', logPath], { allowNonZeroExit: true, timeoutMs: settings.commandTimeoutMs })
    .map((r) => r.stdout.trim())
    .orElse(() => okAsync(''));
}
