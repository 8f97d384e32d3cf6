/**
 * Rollback shared by the Linux deployers: stop the program's session, undo mounts and namespaces,
 * then remove staging and install directories (never descending into a mount).
 *
 * @module
 */
import { posix } from 'node:path';
import { okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { DeployContext, DeploymentState } from '../spec/deployer.js';
import { DeployError } from './deploy-error.js';
import { isSafeName, layoutFor } from './layout.js';
import { runScript } from './run-script.js';

/** The staging directory of a migration: the verified one, or the one pre-flight chose (a failed receive was writing it). */
export function stagingDirOf(state: DeploymentState): string | undefined {
  return state.staged?.stagingDir ?? state.preflight?.stagingDir;
}

const STOP_SCRIPT = `
pidfile="$1"
if [ -n "$pidfile" ] && [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  # Kill the whole session the launcher started (setsid made the pid its session leader).
  pkill -KILL -s "$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
fi
exit 0
`;

const REMOVE_SCRIPT = `
staging="$1"; shift
# --one-file-system: a mount left inside a root (its undo failed) is not descended into.
for dir in "$@"; do
  [ -n "$dir" ] || continue
  rm -rf --one-file-system -- "$dir"
done
# A cut connection orphans the receiver (or the remote shell still starting it): it would
# recreate its staging directory after we removed it, so stop it, then remove the directory
# again. Matched by its "unpack <staging>/root" argument, regex-escaped; this script's own
# command line never holds that text (the path is followed by /root only in the receiver's).
if [ -n "$staging" ]; then
  pat=$(printf '%s' "$staging/root" | sed 's/[][\\.*^$+?(){}|]/\\\\&/g')
  if pkill -KILL -f -- "unpack '?$pat" 2>/dev/null; then
    i=0; while [ "$i" -lt 50 ] && pgrep -f -- "unpack '?$pat" >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
  fi
  rm -rf --one-file-system -- "$staging"
fi
`;

/** Stop the program (its whole session), run `undo` commands, and remove staging and install directories. */
export function rollbackCommon(
  context: DeployContext,
  state: DeploymentState,
): ResultAsync<void, ApMigrateError> {
  const layout = layoutFor(context.transport, context.name);
  const staging = stagingDirOf(state);
  // The files a cut attempt kept for the next one go too: a rollback is a final failure.
  const resume = isSafeName(context.name) ? posix.join(layout.workDir, `resume-${context.name}`) : undefined;
  const dirs = [staging, state.activated ? state.activated.installDir : undefined, resume, resume && `${resume}.journal.json`].filter((d): d is string => !!d);
  const pidfile = posix.join(layout.runDir, 'launcher.pid');
  // Rollback must run even after an abort, so it never takes the caller's signal.
  const undo = (state.activated?.undo ?? []).reduce<ResultAsync<unknown, ApMigrateError>>(
    (acc, argv) => acc.andThen(() => context.transport.exec(argv, { allowNonZeroExit: true })),
    okAsync(undefined),
  );
  // Stop first, undo mounts and namespaces next, remove last (nothing is removed under a mount).
  return runScript(context.transport, STOP_SCRIPT, [state.activated || state.started ? pidfile : ''], { allowNonZeroExit: true, cwd: '/' })
    .andThen(() => undo)
    .andThen(() => runScript(context.transport, REMOVE_SCRIPT, [staging ?? '', ...dirs], { allowNonZeroExit: true, cwd: '/' }))
    .map(() => undefined)
    .mapErr((e) => new DeployError('ROLLBACK_FAILED', `Rollback at ${context.transport.description} failed: ${e.message}; check ${layout.installDir}`, { cause: e }));
}
