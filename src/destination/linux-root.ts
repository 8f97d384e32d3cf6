/**
 * The private root of the Linux deployers (chroot, linux-namespaces): built inside staging by the
 * receiver, then moved into place with one rename.
 *
 * @module
 */
import { posix } from 'node:path';
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import { isPseudoPath } from '../policy/paths.js';
import { otherProgramsRun } from '../policy/programs.js';
import type { ActivatedDeployment, DeployContext, StagedBundle } from '../spec/deployer.js';
import { DeployError } from './deploy-error.js';
import { layoutFor } from './layout.js';
import { buildRootAtDestination } from './receiver.js';
import type { RootBuildSpec } from './root-builder.js';
import { runScript } from './run-script.js';

const MOVE_INTO_PLACE_SCRIPT = `
set -e
staging="$1"; install="$2"
mkdir -p "$staging/run"
chmod 755 "$staging" "$staging/root"
[ ! -e "$install" ] || { echo "exists: $install" >&2; exit 17; }
mv -T -- "$staging" "$install"
`;

/** Directories the program will create files in: they must exist in its root. */
function createdFileDirs(context: DeployContext): string[] {
  const dirs = new Set<string>();
  for (const f of context.profile.files) {
    if (f.created && !isPseudoPath(f.path)) dirs.add(posix.dirname(f.path));
  }
  return [...dirs];
}

/** What the receiver needs to build the program's private root, but where (see `root-builder.ts`). */
export function rootSpecOf(context: DeployContext): Omit<RootBuildSpec, 'root'> {
  return {
    executable: context.profile.executable,
    cwd: context.profile.cwd,
    dirs: createdFileDirs(context),
    libraries: context.profile.files.filter((f) => f.sharedLibrary).map((f) => f.path),
    programs: otherProgramsRun(context.profile),
    wrapperSource: '',
    ...accountLines(context),
  };
}

/**
 * Build the private root inside staging (see `root-builder.ts`), then move it into place with one
 * rename. A root the receiver built while receiving (`staged.prepared`) is only moved.
 */
export function buildAndActivate(context: DeployContext, staged: Pick<StagedBundle, 'stagingDir' | 'prepared'>, extraUndo: string[][] = []): ResultAsync<ActivatedDeployment, ApMigrateError> {
  const layout = layoutFor(context.transport, context.name);
  const { stagingDir } = staged;
  const activated = { installDir: layout.installDir, rootDir: layout.rootDir, undo: extraUndo };
  const failed = (e: ApMigrateError) =>
    e.code === 'UNSAFE_BUNDLE' || e.code === 'ACTIVATE_FAILED' || e.code === 'ABORTED' ? e : new DeployError('ACTIVATE_FAILED', `Could not build the program's root at ${context.transport.description}: ${e.message}`, { cause: e });
  if (staged.prepared) {
    return runScript(context.transport, MOVE_INTO_PLACE_SCRIPT, [stagingDir, layout.installDir], context.signal ? { signal: context.signal } : {})
      .mapErr(failed)
      .map(() => activated);
  }
  // Built and moved into place in one command (a round trip is 0.1-0.3 s over a slow link).
  return buildRootAtDestination(context, { root: posix.join(stagingDir, 'root'), ...rootSpecOf(context) }, { script: MOVE_INTO_PLACE_SCRIPT, args: [stagingDir, layout.installDir] })
    .mapErr(failed)
    .map(() => activated);
}

/** The root's /etc/passwd and /etc/group lines: the accounts the capture found (validated by the profile schema). */
export function accountLines(context: DeployContext): { passwd?: string[]; group?: string[] } {
  const { users = [], groups = [] } = context.profile;
  if (!users.length && !groups.length) return {};
  return {
    passwd: users.map((u) => `${u.name}:x:${u.uid}:${u.gid}:${u.gecos}:${u.home}:${u.shell}`),
    group: groups.map((g) => `${g.name}:x:${g.gid}:${g.members.join(',')}`),
  };
}

/** `host:port` for every TCP port the program listened on. */
export function endpointsOf(context: DeployContext, host: string): string[] {
  return [...new Set(context.profile.sockets.filter((s) => s.listening && s.localPort).map((s) => `${host}:${s.localPort}`))];
}

/** Fail early when a plan did not choose the method a deployer implements. */
export function checkMethod(context: DeployContext, method: string): ResultAsync<void, ApMigrateError> {
  return context.plan.chosen === method
    ? okAsync(undefined)
    : errAsync(new DeployError('PREFLIGHT_FAILED', `The plan chose ${context.plan.chosen}, not ${method}`));
}
