/**
 * The chroot deployer: the program's files under a private root, the destination's own shared
 * libraries copied in, a minimal `/dev`, and the program started with `unshare --root --wd`
 * (util-linux) as its original uid/gid.
 *
 * @module
 */
import { posix } from 'node:path';
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ActivatedDeployment, DeployContext, Deployer } from '../spec/deployer.js';
import { isPseudoPath } from '../policy/estimate.js';
import {
  buildRootAtDestination,
  DeployError,
  healthCheckCommon,
  layoutFor,
  preflightCommon,
  receiveWithReceiver,
  rollbackCommon,
  runScript,
  startDetached,
  supervisedLaunchArgv,
} from './common.js';
import { checkProfileForDeploy, type ProfileSafetyOptions } from './profile-safety.js';
import type { PreflightReport } from '../spec/deployer.js';

/** Options of {@link createChrootDeployer}. */
export interface ChrootDeployerOptions extends ProfileSafetyOptions {
  /** Also accept device nodes from the bundle (default false). */
  allowDevices?: boolean;
  /** setuid/setgid files in the bundle: reject (default), strip the bits, or allow. */
  setuid?: 'reject' | 'strip' | 'allow';
  /** How long the health check waits for the program to listen (default 10 s). */
  healthTimeoutMs?: number;
}

/** Tools the destination needs for a chroot deployment. */
export const CHROOT_TOOLS = ['node', 'unshare', 'setsid', 'mknod', 'cp', 'mv', 'awk', 'df', 'env', 'pkill'];

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

/** Build the private root inside staging (see `root-builder.ts`), then move it into place with one rename. */
export function buildAndActivate(context: DeployContext, stagingDir: string, extraUndo: string[][] = []): ResultAsync<ActivatedDeployment, ApMigrateError> {
  const layout = layoutFor(context.transport, context.name);
  const signalOpt = context.signal ? { signal: context.signal } : {};
  const spec = {
    root: posix.join(stagingDir, 'root'),
    executable: context.profile.executable,
    cwd: context.profile.cwd,
    dirs: createdFileDirs(context),
    libraries: context.profile.files.filter((f) => f.sharedLibrary).map((f) => f.path),
    wrapperSource: '',
    ...accountLines(context),
  };
  return buildRootAtDestination(context, spec)
    .andThen(() => runScript(context.transport, MOVE_INTO_PLACE_SCRIPT, [stagingDir, layout.installDir], signalOpt))
    .mapErr((e) => (e.code === 'UNSAFE_BUNDLE' || e.code === 'ACTIVATE_FAILED' ? e : new DeployError('ACTIVATE_FAILED', `Could not build the program's root at ${context.transport.description}: ${e.message}`, { cause: e })))
    .map(() => ({ installDir: layout.installDir, rootDir: layout.rootDir, undo: extraUndo }));
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

/** Pre-flight shared by the Linux deployers: the profile's own check first, then the destination's. */
export function preflightLinux(context: DeployContext, estimatedBytes: number, tools: readonly string[], safety: ProfileSafetyOptions): ResultAsync<PreflightReport, ApMigrateError> {
  const checked = checkProfileForDeploy(context.profile, safety);
  if (checked.isErr()) return errAsync(checked.error);
  return preflightCommon(context, estimatedBytes, tools);
}

/**
 * The argv that starts the program under its private root as its own uid/gid. A pid namespace
 * (with a private procfs) gives it a reaper as init, so a daemon that forks and lets its first
 * process exit is followed; files are its only other isolation, as the method says.
 */
export function chrootLaunchArgv(context: DeployContext, rootDir: string): string[] {
  return supervisedLaunchArgv(context, rootDir);
}

/** The chroot deployer. */
export function createChrootDeployer(options: ChrootDeployerOptions = {}): Deployer {
  return {
    method: 'chroot',
    // The destination supplies its own shared libraries (paper, section 3.2).
    bundleSelection: () => ({ includeSharedLibraries: false }),
    preflight: (context, estimatedBytes) => preflightLinux(context, estimatedBytes, CHROOT_TOOLS, options),
    receive: (context, bundle, onBytes) =>
      receiveWithReceiver(context, bundle, {
        ...(options.allowDevices ? { allowDevices: true } : {}),
        ...(options.setuid ? { setuid: options.setuid } : {}),
        ...(onBytes ? { onBytes } : {}),
      }),
    activate: (context, staged) => buildAndActivate(context, staged.stagingDir),
    start: (context, activated) =>
      startDetached(context, activated, chrootLaunchArgv(context, activated.rootDir)).map(({ pid, logPath }) => ({ pid, logPath, endpoints: endpointsOf(context, '127.0.0.1') })),
    healthCheck: (context, started) => healthCheckCommon(context, started, options.healthTimeoutMs !== undefined ? { timeoutMs: options.healthTimeoutMs } : {}),
    rollback: (context, state) => rollbackCommon(context, state),
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
