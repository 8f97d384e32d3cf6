/**
 * The jail deployer's pre-flight: the shared checks (platform, tools, space, install directory),
 * the host's jail capabilities, the jail name and the user to run as. It changes nothing at the
 * destination, and returns what it learnt in the report's `facts` for the later phases.
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import { ApMigrateError, InvalidInputError } from '../../errors.js';
import { detectFreeBsdHostFacts, type FreeBsdHostFacts } from '../../platforms/freebsd-facts.js';
import type { DeployContext, PreflightReport, ReceiverChoice } from '../../spec/deployer.js';
import { probePosixReceiver } from '../../destination/posix-receiver.js';
import { DeployError } from '../../destination/deploy-error.js';
import { preflightCommon } from '../../destination/preflight.js';
import { runScript } from '../../destination/run-script.js';
import { checkJailCapabilities, JailCapabilityError } from './capabilities.js';
import { isValidJailName, isValidJailUser, renderJailConf, type JailNetwork } from './conf.js';
import { jailConfSpec } from './layout.js';
import { abortWins, commandOptions, profileOptions, type JailSettings } from './options.js';
import { checkJailProfile, type CheckedJailProfile } from './profile-check.js';
import { JAIL_PREFLIGHT_SCRIPT, JAIL_TOOLS } from './scripts.js';

/** What the jail deployer's pre-flight learnt, passed to activation in `PreflightReport.facts`. */
export interface JailFacts {
  /** The destination's release and jail capabilities. */
  host: FreeBsdHostFacts;
  /** The host user the program runs as (`exec.jail_user`). */
  jailUser: string;
  /** Whether the jail gets its own SysV IPC namespace. */
  sysvIpc: boolean;
  /** The profile's paths, checked. */
  checked: CheckedJailProfile;
}

/** Pre-flight of the `freebsd-jail` method. */
export function preflightJail(settings: JailSettings, context: DeployContext, estimatedBytes: number): ResultAsync<PreflightReport<JailFacts>, ApMigrateError> {
  // Before anything runs at the destination: nothing unchecked reaches a command.
  const checked = checkInput(settings, context);
  if (ApMigrateError.isInstance(checked)) return errAsync(checked);
  const tools = [...(settings.receiver === 'node' ? ['node'] : []), ...JAIL_TOOLS, ...(settings.network.mode === 'vnet' ? ['ifconfig'] : [])];
  return preflightCommon(context, estimatedBytes, tools, settings.receiver === 'auto' ? ['node'] : [])
    .andThen((report) =>
      hostCapabilities(settings, context).andThen(({ host, sysvIpc }) =>
        jailUserAt(settings, context).andThen((jailUser) =>
          receiverAt(settings, context, report.tools).andThen((receiver) => {
            const facts: JailFacts = { host, jailUser, sysvIpc, checked };
            const draft = draftConf(settings, context, facts);
            return draft ? errAsync(draft) : okAsync<PreflightReport<JailFacts>, ApMigrateError>({ ...report, facts, receiver });
          }),
        ),
      ),
    )
    .mapErr(abortWins(context));
}

/**
 * The receiver: Node.js's when the host has `node` (found by the shared pre-flight) and the
 * caller did not ask for the POSIX one; else the POSIX receiver, once its tools are checked there.
 */
function receiverAt(settings: JailSettings, context: DeployContext, found: Record<string, string>): ResultAsync<ReceiverChoice, ApMigrateError> {
  const where = context.transport.description;
  if (settings.receiver !== 'posix-sh' && found.node) return okAsync({ kind: 'node', seeds: true, summary: `receiver: node (${found.node} at ${where})` });
  return probePosixReceiver(context.transport, context.signal ? { signal: context.signal } : {}).map((probe) => ({
    kind: 'posix-sh' as const,
    seeds: false,
    summary:
      settings.receiver === 'posix-sh'
        ? `receiver: posix-sh (asked for; ${probe.os}, ${probe.tarVersion}, ${probe.hasher}; checks done by the SDK)`
        : probe.summary,
  }));
}

/** The name, the `jailUser` option and the profile, checked; the profile's paths as the jail uses them. */
function checkInput(settings: JailSettings, context: DeployContext): CheckedJailProfile | ApMigrateError {
  if (!isValidJailName(context.name)) {
    return new DeployError('PREFLIGHT_FAILED', `Invalid jail name "${context.name}": use letters, digits, "_" and "-" (max 63, not all digits; jail(8) reads dots as a hierarchy)`);
  }
  if (settings.jailUser !== undefined && !isValidJailUser(settings.jailUser)) {
    return new InvalidInputError('jail deployer options', [{ path: 'jailUser', message: 'not a valid user name (letters, digits, "_", ".", "-"; not starting with "-")' }]);
  }
  return checkJailProfile(context.profile, profileOptions(settings));
}

/** The host's facts, and whether a jail there isolates what the plan needs. */
function hostCapabilities(settings: JailSettings, context: DeployContext): ResultAsync<{ host: FreeBsdHostFacts; sysvIpc: boolean }, ApMigrateError> {
  return detectFreeBsdHostFacts(context.transport).andThen((host) => {
    const verdict = checkJailCapabilities(context.plan.kinds, host, settings.network, context.transport.description);
    return JailCapabilityError.isInstance(verdict) ? errAsync(verdict) : okAsync({ host, sysvIpc: verdict.sysvIpc });
  });
}

/** No jail of this name runs there, and the user to run as exists (and is not root unless the caller said so). */
function jailUserAt(settings: JailSettings, context: DeployContext): ResultAsync<string, ApMigrateError> {
  const { transport, profile, name } = context;
  return runScript(transport, JAIL_PREFLIGHT_SCRIPT, [name, String(profile.uid), settings.jailUser ?? ''], commandOptions(settings, context)).andThen((r) => {
    const lines = r.stdout.split('\n');
    if (lines.includes('jail_exists=1')) {
      return errAsync(new DeployError('DESTINATION_EXISTS', `A jail named "${name}" already runs at ${transport.description} (jls -j ${name}); choose another name or remove it`));
    }
    const jailUser = lines.find((l) => l.startsWith('user='))?.slice('user='.length);
    const jailUid = lines.find((l) => l.startsWith('user_uid='))?.slice('user_uid='.length);
    if (!jailUser || !jailUid || !/^\d+$/.test(jailUid)) {
      const who = settings.jailUser ? `the user "${settings.jailUser}"` : `a user with uid ${profile.uid}`;
      return errAsync(new DeployError('PREFLIGHT_FAILED', `${transport.description} has no ${who} to run the program as (exec.jail_user); create it or pass jailUser`));
    }
    if (Number(jailUid) === 0 && settings.jailUser === undefined && !settings.allowRoot) {
      return errAsync(
        new DeployError('UNSAFE_PROFILE', `At ${transport.description} the user for uid ${profile.uid} is "${jailUser}", which has uid 0: the program would run as root in the jail; pass jailUser to choose the user, or allowRoot: true`, {
          details: { field: 'uid' },
        }),
      );
    }
    return okAsync(jailUser);
  });
}

/**
 * Render the jail.conf once now (with a stand-in for the epair activation creates), so input it
 * refuses (a bad address, an env name) fails before anything is sent. The error, if any.
 */
function draftConf(settings: JailSettings, context: DeployContext, facts: JailFacts): ApMigrateError | undefined {
  const draft: JailNetwork = settings.network.mode === 'vnet' ? { mode: 'vnet', interface: 'epair0b' } : settings.network;
  const rendered = renderJailConf(jailConfSpec(settings, context, facts, draft, []));
  return rendered.isErr() ? rendered.error : undefined;
}
