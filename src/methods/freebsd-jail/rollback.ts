/**
 * The jail deployer's rollback: remove the jail (with its own config, so jail(8) also unmounts
 * devfs and drops the address aliases), this migration's staging and install directories, then
 * run the undo steps activation named (its epair). Everything comes from the state passed in,
 * so a rollback touches only its own migration's things, and running it twice is harmless.
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../../errors.js';
import type { DeployContext, DeploymentState } from '../../spec/deployer.js';
import { DeployError } from '../../destination/deploy-error.js';
import { isSafeName, layoutFor } from '../../destination/layout.js';
import { stagingDirOf } from '../../destination/rollback.js';
import { runScript } from '../../destination/run-script.js';
import { jailPaths } from './layout.js';
import { runEach, type JailSettings } from './options.js';
import type { JailFacts } from './preflight.js';
import { JAIL_ROLLBACK_SCRIPT } from './scripts.js';
import { seedPaths } from '../../destination/receiver.js';

/** The rollback script's arguments for `state`: name, config (empty before activation), the directory to remove. */
export function jailRollbackArgs(context: DeployContext, state: DeploymentState<JailFacts>): string[] {
  const conf = state.activated ? jailPaths(state.activated.installDir).conf : '';
  // Once activated, staging was renamed to the install directory: only that one is left to remove.
  const dirs = [state.activated ? state.activated.installDir : stagingDirOf(state)].filter((d): d is string => !!d);
  // The files a cut attempt kept for the next one go too: a rollback is a final failure.
  const resume = isSafeName(context.name) ? [seedPaths(context, '/').resume] : [];
  return [context.name, conf, ...dirs, ...resume.flatMap((r) => [r, `${r}.journal.json`])];
}

/** Rollback of the `freebsd-jail` method. */
export function rollbackJail(settings: JailSettings, context: DeployContext, state: DeploymentState<JailFacts>): ResultAsync<void, ApMigrateError> {
  const { transport } = context;
  const where = `check jls and ${layoutFor(transport, context.name).installDir}`;
  const failed = (why: string, cause?: unknown) => new DeployError('ROLLBACK_FAILED', `Rollback at ${transport.description} failed${why}; ${where}`, { cause });
  const timeoutMs = settings.commandTimeoutMs;
  // Rollback must run even after an abort, so it never takes the caller's signal.
  const removed = runScript(transport, JAIL_ROLLBACK_SCRIPT, jailRollbackArgs(context, state), { allowNonZeroExit: true, timeoutMs })
    .map((r) => (r.code === 0 ? undefined : failed(` (exit ${r.code}): ${r.stderr.trim().slice(0, 400)}`)))
    .orElse((e) => okAsync(failed(`: ${e.message}`, e)));
  // The undo steps run even when the jail could not be removed: they free what they can.
  return removed.andThen((scriptError) =>
    runEach(transport, state.activated?.undo ?? [], timeoutMs)
      .mapErr((e) => scriptError ?? failed(`: ${e.message}`, e))
      .andThen(() => (scriptError ? errAsync(scriptError) : okAsync(undefined))),
  );
}
