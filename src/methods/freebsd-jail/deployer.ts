/**
 * The FreeBSD jail deployer: the destination side of the `freebsd-jail` method.
 *
 * Pre-flight reads the host's release and jail capabilities (`detectFreeBsdHostFacts`) and
 * refuses, before anything is sent, a plan that needs what the host lacks (SysV IPC isolation
 * before 11.0, VIMAGE for `vnet`); what it learnt travels in the report's `facts`. The bundle
 * arrives through the shared receiver; activation completes the root with FreeBSD tools (plain
 * `cp -p`, `mv`, `mkdir -p`: no GNU flags; no `mknod`, jail(8) mounts devfs), writes
 * `run/jail.conf` and moves everything into place with one rename. The jail is created with
 * `jail -c -f`, checked with `jls`, `pgrep -j` and `sockstat -j`, and removed on failure with
 * `jail -r` (which also unmounts devfs and drops the address aliases).
 *
 * The factory only wires the phase functions of this folder to the options: it keeps nothing
 * per migration, so one deployer serves any number of migrations, of the same name too.
 *
 * None of this has run on a FreeBSD host: the commands were written from the FreeBSD manuals and
 * the jail(8) sources and are tested as golden command sequences (see docs/method-jail.md).
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { createBundlePackager } from '../../bundle/packager.js';
import type { Deployer } from '../../spec/deployer.js';
import { inventoryWithReceiver, receiveWithReceiver } from '../../destination/receiver.js';
import { receiveWithPosixReceiver } from '../../destination/posix-receiver.js';
import { okAsync } from 'neverthrow';
import { activateJail } from './activate.js';
import { jailBundleSelection } from './bundle-contents.js';
import { healthCheckJail } from './health.js';
import { abortWins, jailSettings, type JailDeployerOptions } from './options.js';
import { preflightJail, type JailFacts } from './preflight.js';
import { rollbackJail } from './rollback.js';
import { startJail } from './start.js';

export { JailCapabilityError, checkJailCapabilities } from './capabilities.js';
export { checkJailProfile, type CheckedJailProfile } from './profile-check.js';
export {
  FREEBSD_BASE_DIRS,
  jailBundleContents,
  measureFreeBsdBase,
  parseDuSk,
  type FreeBsdBaseMeasurement,
  type JailBundleContents,
} from './bundle-contents.js';
export { jailPaths } from './layout.js';
export type { JailDeployerOptions, JailNetworkOption } from './options.js';
export type { JailFacts } from './preflight.js';
export {
  JAIL_ACTIVATE_SCRIPT,
  JAIL_HOST_FILES,
  JAIL_MOVE_SCRIPT,
  JAIL_PATH,
  JAIL_PREFLIGHT_SCRIPT,
  JAIL_ROLLBACK_SCRIPT,
  JAIL_TOOLS,
  JAIL_VNET_IFCONFIG,
  RESCUE_IFCONFIG,
} from './scripts.js';

/** The `freebsd-jail` deployer. */
export function createJailDeployer(options: JailDeployerOptions = {}): Deployer<Readable, JailFacts> {
  const settings = jailSettings(options);
  const receiveOptions = settings.setuid ? { setuid: settings.setuid } : {};
  return {
    method: 'freebsd-jail',
    packager: createBundlePackager((profile) => jailBundleSelection(profile, settings.thick)),
    preflight: (context, estimatedBytes) => preflightJail(settings, context, estimatedBytes),
    receive: (context, preflight, bundle, onBytes, round) => {
      const options = { ...round, ...receiveOptions, ...(onBytes ? { onBytes } : {}) };
      const received = preflight.receiver?.kind === 'posix-sh' ? receiveWithPosixReceiver(context, preflight, bundle, options) : receiveWithReceiver(context, preflight, bundle, options);
      return received.mapErr(abortWins(context));
    },
    // The POSIX receiver takes no seeded entries, so nothing the host holds could be used.
    inventory: (context, preflight, query) => (preflight.receiver?.kind === 'posix-sh' ? okAsync({}) : inventoryWithReceiver(context, preflight, query).mapErr(abortWins(context))),
    activate: (context, preflight, staged) => activateJail(settings, context, preflight, staged),
    start: (context, activated) => startJail(settings, context, activated),
    healthCheck: (context, started) => healthCheckJail(settings, context, started),
    rollback: (context, state) => rollbackJail(settings, context, state),
  };
}
