/**
 * The chroot deployer: the program's files under a private root, the destination's own shared
 * libraries copied in, a minimal `/dev`, and the program started with `unshare --root --wd`
 * (util-linux) as its original uid/gid.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { createBundlePackager } from '../../bundle/packager.js';
import type { DeployContext, Deployer } from '../../spec/deployer.js';
import {
  buildAndActivate,
  rootSpecOf,
  endpointsOf,
  healthCheckCommon,
  preflightLinux,
  receiveWithReceiver,
  rollbackCommon,
  startDetached,
  supervisedLaunchArgv,
} from '../../destination/index.js';
import { inventoryWithReceiver } from '../../destination/receiver.js';
import type { ProfileSafetyOptions } from '../../destination/profile-safety.js';

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
export const CHROOT_TOOLS = ['node', 'unshare', 'setsid', 'xargs', 'mknod', 'cp', 'mv', 'awk', 'df', 'env', 'pkill'];

/**
 * The argv that starts the program under its private root as its own uid/gid. A pid namespace
 * (with a private procfs) gives it a reaper as init, so a daemon that forks and lets its first
 * process exit is followed; files are its only other isolation, as the method says.
 */
export function chrootLaunchArgv(context: DeployContext, rootDir: string): string[] {
  return supervisedLaunchArgv(context, rootDir);
}

/** The chroot deployer. */
export function createChrootDeployer(options: ChrootDeployerOptions = {}): Deployer<Readable, undefined> {
  return {
    method: 'chroot',
    // The destination supplies its own shared libraries (paper, section 3.2).
    packager: createBundlePackager(() => ({ includeSharedLibraries: false })),
    preflight: (context, estimatedBytes) => preflightLinux(context, estimatedBytes, CHROOT_TOOLS, options),
    receive: (context, preflight, bundle, onBytes, round) =>
      receiveWithReceiver(context, preflight, bundle, {
        ...round,
        ...(options.allowDevices ? { allowDevices: true } : {}),
        ...(options.setuid ? { setuid: options.setuid } : {}),
        ...(onBytes ? { onBytes } : {}),
        ...(round?.activateNext ? { buildRoot: rootSpecOf(context) } : {}),
      }),
    inventory: (context, preflight, query) => inventoryWithReceiver(context, preflight, query),
    activate: (context, _preflight, staged) => buildAndActivate(context, staged),
    start: (context, activated) =>
      startDetached(context, activated, chrootLaunchArgv(context, activated.rootDir)).map(({ pid, logPath }) => ({ pid, logPath, endpoints: endpointsOf(context, '127.0.0.1') })),
    healthCheck: (context, started) => healthCheckCommon(context, started, options.healthTimeoutMs !== undefined ? { timeoutMs: options.healthTimeoutMs } : {}),
    rollback: (context, state) => rollbackCommon(context, state),
  };
}
