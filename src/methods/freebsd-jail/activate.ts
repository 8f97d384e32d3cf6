/**
 * The jail deployer's activation: the network the jail needs (an epair for VNET), the root
 * completed inside staging, jail.conf written next to it, and everything moved into place with
 * one rename. What it creates outside the install directory (the epair) is named in the
 * returned `undo`, so rollback removes exactly this migration's things.
 *
 * @module
 */
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../../errors.js';
import type { ActivatedDeployment, DeployContext, PreflightReport, StagedBundle } from '../../spec/deployer.js';
import { DeployError } from '../../destination/deploy-error.js';
import { layoutFor } from '../../destination/layout.js';
import { runScript } from '../../destination/run-script.js';
import type { VethAddresses } from '../../destination/veth.js';
import { renderJailConf, type JailNetwork } from './conf.js';
import { jailConfSpec, jailPaths } from './layout.js';
import { abortWins, commandOptions, profileOptions, runEach, vnetAddresses, type JailSettings } from './options.js';
import type { JailFacts } from './preflight.js';
import { checkJailProfile, type CheckedJailProfile } from './profile-check.js';
import { JAIL_ACTIVATE_SCRIPT, JAIL_HOST_FILES, JAIL_MOVE_SCRIPT, JAIL_VNET_IFCONFIG, RESCUE_IFCONFIG } from './scripts.js';

/** The jail's network as jail.conf says it, the `exec.created` commands, and what undoes it. */
interface JailNetworkSetup {
  net: JailNetwork;
  created: string[][];
  undo: string[][];
}

/** Activation of the `freebsd-jail` method, with the facts of this migration's pre-flight. */
export function activateJail(settings: JailSettings, context: DeployContext, preflight: PreflightReport<JailFacts>, staged: StagedBundle): ResultAsync<ActivatedDeployment, ApMigrateError> {
  const facts = preflight?.facts;
  if (!facts?.jailUser) return errAsync(new DeployError('ACTIVATE_FAILED', `No pre-flight facts for "${context.name}": pass the report of this deployer's preflight`));
  // Checked again: this context's profile is the one whose paths reach the scripts below.
  const checked = checkJailProfile(context.profile, profileOptions(settings));
  if (DeployError.isInstance(checked)) return errAsync(checked);
  return setUpNetwork(settings, context)
    .andThen((network) => {
      const conf = renderJailConf(jailConfSpec(settings, context, { ...facts, checked }, network.net, network.created));
      const built = conf.isErr()
        ? errAsync<string, ApMigrateError>(new DeployError('ACTIVATE_FAILED', `Cannot write the jail's configuration: ${conf.error.message}`, { cause: conf.error }))
        : buildAndMove(settings, context, staged, checked, conf.value);
      return built
        .orElse((error) => undoNetwork(settings, context, network.undo, error))
        .map((installDir): ActivatedDeployment => ({ installDir, rootDir: jailPaths(installDir).rootDir, undo: network.undo }));
    })
    .mapErr(abortWins(context));
}

/** Complete the root in staging, write jail.conf next to it, move both into place; the install directory. */
function buildAndMove(settings: JailSettings, context: DeployContext, staged: StagedBundle, checked: CheckedJailProfile, conf: string): ResultAsync<string, ApMigrateError> {
  const { transport } = context;
  const installDir = layoutFor(transport, context.name).installDir;
  const helper = settings.network.mode === 'vnet' ? RESCUE_IFCONFIG : '';
  const options = commandOptions(settings, context);
  const args = [staged.stagingDir, checked.executable, checked.cwd, helper, ...JAIL_HOST_FILES, '--', ...checked.createdDirs];
  return runScript(transport, JAIL_ACTIVATE_SCRIPT, args, options)
    // 0600: the config holds the program's environment, which may hold secrets.
    .andThen(() => transport.upload(Readable.from([conf]), posix.join(staged.stagingDir, 'run', 'jail.conf'), { ...options, mode: 0o600 }))
    .andThen(() => runScript(transport, JAIL_MOVE_SCRIPT, [staged.stagingDir, installDir], options))
    .mapErr((e) => new DeployError('ACTIVATE_FAILED', `Could not build the jail's root at ${transport.description}: ${e.message}`, { cause: e }))
    .map(() => installDir);
}

/** Activation failed after its network was made: remove that network, then fail with `error` (noting an undo that failed too). */
function undoNetwork(settings: JailSettings, context: DeployContext, undo: readonly string[][], error: ApMigrateError): ResultAsync<never, ApMigrateError> {
  return runEach(context.transport, undo, settings.commandTimeoutMs)
    .orElse((undoError) => {
      error.details.undoError = undoError.message;
      return okAsync(undefined);
    })
    .andThen(() => errAsync(error));
}

/** The jail's network: nothing, addresses on a host interface, or a new epair with its jail end moved in. */
function setUpNetwork(settings: JailSettings, context: DeployContext): ResultAsync<JailNetworkSetup, ApMigrateError> {
  const { network } = settings;
  if (network.mode === 'none') return okAsync({ net: { mode: 'none' }, created: [], undo: [] });
  if (network.mode === 'ip4') return okAsync({ net: { mode: 'ip4', interface: network.interface, addresses: network.addresses }, created: [], undo: [] });
  const addresses = vnetAddresses(network, context.name);
  return createEpair(settings, context, addresses).map((hostSide) => {
    const inner = `${hostSide.slice(0, -1)}b`;
    return {
      net: { mode: 'vnet', interface: inner },
      // Run as root inside the jail: the host's static ifconfig copied in, never the bundle's.
      created: [
        ['/usr/sbin/jexec', context.name, JAIL_VNET_IFCONFIG, 'lo0', 'inet', '127.0.0.1/8', 'up'],
        ['/usr/sbin/jexec', context.name, JAIL_VNET_IFCONFIG, inner, 'inet', addresses.program, 'up'],
      ],
      // This activation's own epair, by the name the kernel gave it.
      undo: [['ifconfig', hostSide, 'destroy']],
    };
  });
}

/** Create an epair and address its host end; returns the host end's name (`epairNa`). */
function createEpair(settings: JailSettings, context: DeployContext, addresses: VethAddresses): ResultAsync<string, ApMigrateError> {
  const { transport } = context;
  const options = commandOptions(settings, context);
  return transport.exec(['ifconfig', 'epair', 'create'], options).andThen((r) => {
    const hostSide = r.stdout.trim();
    if (!/^epair\d+a$/.test(hostSide)) return errAsync(new DeployError('ACTIVATE_FAILED', `ifconfig epair create printed ${JSON.stringify(hostSide)}, not an epair name`));
    return transport
      .exec(['ifconfig', hostSide, 'inet', addresses.host, 'up'], options)
      .map(() => hostSide)
      .orElse((e) => transport.exec(['ifconfig', hostSide, 'destroy'], { allowNonZeroExit: true, timeoutMs: settings.commandTimeoutMs }).andThen(() => errAsync(e)));
  });
}
