/**
 * Where a jail lives at the destination, what its jail.conf says, and where it can be reached.
 *
 * @module
 */
import { posix } from 'node:path';
import type { ResourceProfile } from '../../policy/profile.js';
import type { DeployContext } from '../../spec/deployer.js';
import { layoutFor } from '../../destination/layout.js';
import type { JailConfSpec, JailNetwork } from './conf.js';
import { vnetAddresses, type JailNetworkOption, type JailSettings } from './options.js';
import type { CheckedJailProfile } from './profile-check.js';

/** Where the jail's config, console log and root live under its install directory. */
export function jailPaths(installDir: string): { conf: string; consoleLog: string; rootDir: string } {
  return { conf: posix.join(installDir, 'run', 'jail.conf'), consoleLog: posix.join(installDir, 'run', 'console.log'), rootDir: posix.join(installDir, 'root') };
}

/** TCP ports the program listened on at the source. */
export function listeningPorts(profile: ResourceProfile): number[] {
  return [...new Set(profile.sockets.filter((s) => s.listening && s.protocol === 'tcp' && s.localPort).map((s) => s.localPort!))].sort((a, b) => a - b);
}

/** `host:port` for every TCP port the program listened on, at the jail's first address. */
export function endpointsFor(context: DeployContext, network: JailNetworkOption): string[] {
  const host =
    network.mode === 'ip4' ? network.addresses[0]?.split('/')[0] : network.mode === 'vnet' ? vnetAddresses(network, context.name).program.split('/')[0] : undefined;
  return host ? listeningPorts(context.profile).map((p) => `${host}:${p}`) : [];
}

/** What jail.conf needs from pre-flight: the user, whether SysV IPC is the jail's own, the checked paths. */
export interface JailConfFacts {
  jailUser: string;
  sysvIpc: boolean;
  checked: CheckedJailProfile;
}

/** The jail.conf spec of `context` with network `net` and `exec.created` commands `created`. */
export function jailConfSpec(settings: JailSettings, context: DeployContext, facts: JailConfFacts, net: JailNetwork, created: ReadonlyArray<readonly string[]>): JailConfSpec {
  const paths = jailPaths(layoutFor(context.transport, context.name).installDir);
  return {
    name: context.name,
    path: paths.rootDir,
    hostname: settings.hostname ?? context.name,
    network: net,
    ...(settings.devfsRuleset !== undefined ? { devfsRuleset: settings.devfsRuleset } : {}),
    sysvIpc: facts.sysvIpc,
    argv: [facts.checked.executable, ...context.profile.argv.slice(1)],
    cwd: facts.checked.cwd,
    ...(context.profile.env ? { env: context.profile.env } : {}),
    jailUser: facts.jailUser,
    consoleLog: paths.consoleLog,
    created,
  };
}
