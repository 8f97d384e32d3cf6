/**
 * Whether a jail on the destination's FreeBSD release isolates what the program uses: the
 * capability matrix per release, the SysV IPC jail parameters, VIMAGE for `vnet`.
 *
 * @module
 */
import { ApMigrateError } from '../../errors.js';
import { RESOURCE_KIND_LABELS, type ResourceKind } from '../../policy/classify.js';
import { capabilityFor, FREEBSD_JAIL } from '../../policy/methods.js';
import type { FreeBsdHostFacts } from '../../platforms/freebsd-facts.js';
import { DeployError } from '../../destination/deploy-error.js';
import type { JailNetworkOption } from './options.js';

/** The destination lacks a capability the plan needs. `code` is `CAPABILITY_MISSING`. */
export class JailCapabilityError extends DeployError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.JailCapabilityError');
  }

  /** Whether `value` is a JailCapabilityError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is JailCapabilityError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.JailCapabilityError');
  }

  constructor(message: string, details: Record<string, unknown>) {
    super('CAPABILITY_MISSING', message, { details });
  }
}

/** Kinds the jail must isolate that the host's release cannot, per the capability matrix. */
function missingKinds(kinds: readonly ResourceKind[], release: string): { missing: ResourceKind[]; note?: string } {
  const row = capabilityFor(FREEBSD_JAIL, 'freebsd', release);
  if (!row) return { missing: [...kinds] };
  return { missing: kinds.filter((k) => !row.isolates.includes(k)), ...(row.note ? { note: row.note } : {}) };
}

const KIND_WORDS = RESOURCE_KIND_LABELS;

const SYSV_KINDS: readonly ResourceKind[] = ['sysv-shm', 'sysv-sem', 'sysv-msg'];

/**
 * Decide, from the plan's resource kinds and the host's facts, whether a jail there isolates the
 * program; and whether the jail needs its own SysV IPC namespace. Pure, so every refusal is tested.
 */
export function checkJailCapabilities(
  kinds: readonly ResourceKind[],
  facts: FreeBsdHostFacts,
  network: JailNetworkOption,
  where: string,
): { sysvIpc: boolean } | JailCapabilityError {
  const { missing, note } = missingKinds(kinds, facts.release);
  if (missing.length) {
    const what = missing.map((k) => KIND_WORDS[k]).join(', ');
    const fix = missing.some((k) => SYSV_KINDS.includes(k)) && facts.major < 11 ? ' Use a FreeBSD 11.0 or later destination, or the esxi-vm method.' : ' Use the esxi-vm method.';
    return new JailCapabilityError(`A jail on FreeBSD ${facts.release} at ${where} cannot isolate the program's ${what}${note ? ` (${note})` : ''}.${fix}`, {
      missing,
      release: facts.release,
    });
  }
  const sysvIpc = kinds.some((k) => SYSV_KINDS.includes(k));
  if (sysvIpc && !facts.sysvIpcJailParams) {
    return new JailCapabilityError(
      `The program uses SysV IPC, but FreeBSD ${facts.release} at ${where} lacks the jail parameters sysvshm, sysvsem and sysvmsg (security.jail.param.sysv*), so a jail there cannot get its own SysV IPC namespace.`,
      { missing: ['security.jail.param.sysvshm', 'security.jail.param.sysvsem', 'security.jail.param.sysvmsg'], release: facts.release },
    );
  }
  if (network.mode === 'vnet' && !facts.vnet) {
    return new JailCapabilityError(`A VNET jail was asked for, but the kernel of ${where} (FreeBSD ${facts.release}) has no VIMAGE (kern.features.vimage is not 1). Use network mode "ip4".`, {
      missing: ['kern.features.vimage'],
      release: facts.release,
    });
  }
  if (network.mode === 'vnet' && facts.major < 12) {
    // The epair end inside the jail is configured from exec.created, which jail(8) has from 12.0.
    return new JailCapabilityError(`VNET jails need FreeBSD 12.0 or later here (exec.created); ${where} runs ${facts.release}. Use network mode "ip4".`, {
      missing: ['exec.created'],
      release: facts.release,
    });
  }
  if (kinds.includes('network') && network.mode === 'none') {
    return new JailCapabilityError(
      'The program uses network sockets, but the jail deployer was given no network: pass `network: { mode: "ip4", interface, addresses }` or `{ mode: "vnet" }`.',
      { missing: ['network'] },
    );
  }
  return { sysvIpc };
}
