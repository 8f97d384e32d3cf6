/**
 * The jail deployer's options, and the settings the phase functions take: the options with
 * their defaults applied, fixed when the deployer is made (nothing per migration).
 *
 * @module
 */
import { err, ok, ResultAsync, type Result } from 'neverthrow';
import type { ApMigrateError } from '../../errors.js';
import type { DeployContext } from '../../spec/deployer.js';
import type { Transport } from '../../spec/transport.js';
import { DeployError } from '../../destination/deploy-error.js';
import { defaultVethAddresses, type VethAddresses } from '../../destination/veth.js';

/** Network of the jail as the caller asks for it. */
export type JailNetworkOption =
  | { mode: 'none' }
  | { mode: 'ip4'; interface: string; addresses: readonly string[] }
  /** A VNET jail joined to the host by an epair; addresses default to a /30 derived from the name. */
  | { mode: 'vnet'; addresses?: VethAddresses };

/** Options of {@link createJailDeployer}. */
export interface JailDeployerOptions {
  /** Network of the jail (default `none`; a program that uses sockets needs `ip4` or `vnet`). */
  network?: JailNetworkOption;
  /** devfs ruleset for the jail's `/dev` (default 4, `devfsrules_jail`). */
  devfsRuleset?: number;
  /** User the program runs as; default: the user with the profile's uid at the destination. */
  jailUser?: string;
  /**
   * Run a program whose profile says uid 0 as root in the jail (the host user with uid 0). Refused
   * by default (`UNSAFE_PROFILE`): pass this, or name a `jailUser`, when the source really ran it
   * as root and you trust it. Default false.
   */
  allowRoot?: boolean;
  /** `host.hostname` (default: the program's name). */
  hostname?: string;
  /**
   * setuid/setgid files in the bundle: reject, strip the bits, or allow. Default: reject for a
   * thin bundle, allow for a thick one (the setuid programs of its base userland keep their bits).
   */
  setuid?: 'reject' | 'strip' | 'allow';
  /** How long the health check waits for the program to listen (default 10 s). */
  healthTimeoutMs?: number;
  /** Pause between health probes (default 200 ms). */
  healthPollMs?: number;
  /** The program must stay up at least this long to be healthy (default 300 ms). */
  settleMs?: number;
  /** Timeout of each remote command (default 60 s). */
  commandTimeoutMs?: number;
  /**
   * Send a thick bundle: the program plus the whole base userland (`FREEBSD_BASE_DIRS`),
   * for a destination without a base to share (default false: thin, the destination's base is used).
   */
  thick?: boolean;
  /**
   * What receives the bundle at the destination: `auto` (default) the SDK's Node.js receiver when
   * the host has `node`, else the POSIX receiver (its `sh` and `tar`, every check done by the SDK;
   * decision 0104); or either one by name (`node` where the host has none is `TOOL_MISSING`). The
   * POSIX receiver takes no seeded entries: no dedup, no pre-copy, no resume.
   */
  receiver?: 'auto' | 'node' | 'posix-sh';
}

/** The options with their defaults applied: what every phase function takes. */
export interface JailSettings {
  network: JailNetworkOption;
  devfsRuleset?: number;
  jailUser?: string;
  allowRoot: boolean;
  hostname?: string;
  setuid?: 'reject' | 'strip' | 'allow';
  thick: boolean;
  receiver: 'auto' | 'node' | 'posix-sh';
  commandTimeoutMs: number;
  health: { timeoutMs: number; pollMs: number; settleMs: number };
}

/** Apply the defaults. */
export function jailSettings(options: JailDeployerOptions): JailSettings {
  const thick = !!options.thick;
  // A thick bundle carries the base userland, whose setuid programs must keep their bits.
  const setuid = options.setuid ?? (thick ? 'allow' : undefined);
  return {
    network: options.network ?? { mode: 'none' },
    ...(options.devfsRuleset !== undefined ? { devfsRuleset: options.devfsRuleset } : {}),
    ...(options.jailUser !== undefined ? { jailUser: options.jailUser } : {}),
    allowRoot: !!options.allowRoot,
    ...(options.hostname !== undefined ? { hostname: options.hostname } : {}),
    ...(setuid ? { setuid } : {}),
    thick,
    receiver: options.receiver ?? 'auto',
    commandTimeoutMs: options.commandTimeoutMs ?? 60_000,
    health: { timeoutMs: options.healthTimeoutMs ?? 10_000, pollMs: options.healthPollMs ?? 200, settleMs: options.settleMs ?? 300 },
  };
}

/** The user options of {@link checkJailProfile}. */
export function profileOptions(settings: JailSettings): { jailUser?: string; allowRoot?: boolean } {
  return { ...(settings.jailUser !== undefined ? { jailUser: settings.jailUser } : {}), ...(settings.allowRoot ? { allowRoot: true } : {}) };
}

/** Timeout and signal of a command run for `context`. */
export function commandOptions(settings: JailSettings, context: DeployContext): { timeoutMs: number; signal?: AbortSignal } {
  return { timeoutMs: settings.commandTimeoutMs, ...(context.signal ? { signal: context.signal } : {}) };
}

/** The epair's addresses of a VNET jail named `name`. */
export function vnetAddresses(network: Extract<JailNetworkOption, { mode: 'vnet' }>, name: string): VethAddresses {
  return network.addresses ?? defaultVethAddresses(name);
}

/**
 * Run undo `commands` one after the other, whatever each exits with: each runs even when one
 * before it failed (the rest may still free what they hold); the first failure is returned.
 */
export function runEach(transport: Transport, commands: readonly (readonly string[])[], timeoutMs: number): ResultAsync<void, ApMigrateError> {
  const run = async (): Promise<Result<void, ApMigrateError>> => {
    let first: ApMigrateError | undefined;
    for (const argv of commands) {
      const result = await transport.exec(argv, { allowNonZeroExit: true, timeoutMs });
      if (result.isErr()) first ??= result.error;
    }
    return first ? err(first) : ok(undefined);
  };
  return new ResultAsync(run());
}

/**
 * Report a failure that came from the caller's abort as `ABORTED`, whichever layer noticed it
 * (a shared step may have wrapped the transport's `ABORTED` in its own code).
 */
export function abortWins(context: DeployContext): (error: ApMigrateError) => ApMigrateError {
  return (error) => (context.signal?.aborted && error.code !== 'ABORTED' ? new DeployError('ABORTED', `Aborted: ${error.message}`, { cause: error }) : error);
}
