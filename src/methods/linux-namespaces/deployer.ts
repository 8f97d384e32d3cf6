/**
 * The Linux namespaces deployer: the same bundle and private root as chroot (plus the shared
 * libraries the bundle carries), started in new mount, IPC, PID and UTS namespaces inside a
 * network namespace of its own, joined to the destination host by a veth pair.
 *
 * The program's SysV IPC objects live in its own IPC namespace; its sockets live in its own
 * network namespace, reachable from the destination host at the container address.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { Readable } from 'node:stream';
import type { ApMigrateError } from '../../errors.js';
import { createBundlePackager } from '../../bundle/packager.js';
import type { DeployContext, Deployer, PreflightReport } from '../../spec/deployer.js';
import {
  buildAndActivate,
  rootSpecOf,
  defaultVethAddresses,
  DeployError,
  endpointsOf,
  healthCheckCommon,
  preflightLinux,
  receiveWithReceiver,
  rollbackCommon,
  runScript,
  startDetached,
  supervisedLaunchArgv,
  type VethAddresses,
} from '../../destination/index.js';
import { inventoryWithReceiver } from '../../destination/receiver.js';
import type { ProfileSafetyOptions } from '../../destination/profile-safety.js';

export { defaultVethAddresses, type VethAddresses };

/** Options of {@link createNamespacesDeployer}. */
export interface NamespacesDeployerOptions extends ProfileSafetyOptions {
  /** Addresses of the veth pair (default: a /30 in 10.231.0.0/16 derived from the name). */
  addresses?: (name: string) => VethAddresses;
  /** How long the health check waits for the program to listen (default 10 s). */
  healthTimeoutMs?: number;
  /** setuid/setgid files in the bundle: reject (default), strip, or allow. */
  setuid?: 'reject' | 'strip' | 'allow';
}

/** Tools the destination needs. */
export const NAMESPACES_TOOLS = ['node', 'unshare', 'setsid', 'xargs', 'ip', 'mknod', 'cp', 'mv', 'awk', 'df', 'env', 'pkill'];

/** Network-namespace and interface names for a program (interface names are at most 15 bytes). */
export function namespaceNames(name: string): { netns: string; hostVeth: string } {
  const short = createHash('sha256').update(name).digest('hex').slice(0, 8);
  return { netns: `apm-${name}`, hostVeth: `apm${short}` };
}

// Undoes, on failure, only what this run created: when the namespace or the veth name is already
// taken (a same-name migration got there first), that one's are never touched.
const NETWORK_SCRIPT = `
ns="$1"; hv="$2"; hostaddr="$3"; progaddr="$4"
ip netns add "$ns" || exit 10
ip link add "$hv" type veth peer name eth0 netns "$ns" || { ip netns del "$ns"; exit 11; }
if ! { ip addr add "$hostaddr" dev "$hv" &&
  ip link set "$hv" up &&
  ip -n "$ns" addr add "$progaddr" dev eth0 &&
  ip -n "$ns" link set eth0 up &&
  ip -n "$ns" link set lo up &&
  ip -n "$ns" route add default via "\${hostaddr%/*}"; }; then
  ip link del "$hv"; ip netns del "$ns"; exit 12
fi
`;

// Is the name or the /30 taken at the destination? A second interface with an address in the
// same /30 would make the host's route to the program ambiguous, so refuse before sending.
const COLLISION_SCRIPT = `
ns="$1"; progaddr="$2"
ip netns list | awk '{print $1}' | grep -qxF -- "$ns" && echo "netns-exists"
ip -o -4 addr show to "$progaddr" | awk '{print "address-used", $2, $4}'
exit 0
`;

/** The argv that starts the program inside its namespaces (its network namespace, then mount, IPC, PID and UTS). */
export function namespacesLaunchArgv(context: DeployContext, rootDir: string): string[] {
  const { netns } = namespaceNames(context.name);
  return ['ip', 'netns', 'exec', netns, ...supervisedLaunchArgv(context, rootDir, ['--mount', '--ipc', '--uts'])];
}

/** Refuse a destination where the namespace's name or its veth /30 is already taken. */
function checkNetworkFree(context: DeployContext, addrs: VethAddresses, report: PreflightReport<undefined>): ResultAsync<PreflightReport<undefined>, ApMigrateError> {
  const { netns } = namespaceNames(context.name);
  // From `/`: the transport's root may not exist yet.
  return runScript(context.transport, COLLISION_SCRIPT, [netns, addrs.program], { cwd: '/', ...(context.signal ? { signal: context.signal } : {}) }).andThen((r) => {
    const lines = r.stdout.split('\n');
    if (lines.includes('netns-exists')) {
      return errAsync(new DeployError('DESTINATION_EXISTS', `Network namespace ${netns} already exists at ${context.transport.description}`));
    }
    const used = lines.filter((l) => l.startsWith('address-used ')).map((l) => l.split(' ').slice(1).join(' '));
    if (!used.length) return okAsync(report);
    return errAsync(
      new DeployError('DESTINATION_EXISTS', `The veth subnet of ${netns} (${addrs.program}) is already used at ${context.transport.description} by ${used.join(', ')}; pass other addresses (option \`addresses\`)`, {
        details: { used },
      }),
    );
  });
}

/** The Linux namespaces deployer. */
export function createNamespacesDeployer(options: NamespacesDeployerOptions = {}): Deployer<Readable, undefined> {
  const addressesOf = options.addresses ?? defaultVethAddresses;
  return {
    method: 'linux-namespaces',
    // The program keeps the libraries it ran with: its namespaces share nothing else with the host's userland.
    packager: createBundlePackager(() => ({ includeSharedLibraries: true })),
    preflight: (context, estimatedBytes) =>
      preflightLinux(context, estimatedBytes, NAMESPACES_TOOLS, options).andThen((report) => checkNetworkFree(context, addressesOf(context.name), report)),
    receive: (context, preflight, bundle, onBytes, round) =>
      receiveWithReceiver(context, preflight, bundle, {
        ...round,
        ...(options.setuid ? { setuid: options.setuid } : {}),
        ...(onBytes ? { onBytes } : {}),
        ...(round?.activateNext ? { buildRoot: rootSpecOf(context) } : {}),
      }),
    inventory: (context, preflight, query) => inventoryWithReceiver(context, preflight, query),
    activate: (context, _preflight, staged) => {
      const { netns, hostVeth } = namespaceNames(context.name);
      const addrs = addressesOf(context.name);
      const undo = [
        ['ip', 'netns', 'del', netns],
        ['ip', 'link', 'del', hostVeth],
      ];
      // Network first: if it fails, nothing was moved into place and rollback removes staging.
      return runScript(context.transport, NETWORK_SCRIPT, [netns, hostVeth, addrs.host, addrs.program], context.signal ? { signal: context.signal } : {})
        .mapErr((e) => (e.code === 'ABORTED' ? e : new DeployError('ACTIVATE_FAILED', `Could not create the network namespace: ${e.message}`, { cause: e })))
        .andThen(() =>
          buildAndActivate(context, staged, undo).orElse((e) =>
            runScript(context.transport, 'ip netns del "$1" 2>/dev/null; ip link del "$2" 2>/dev/null; exit 0', [netns, hostVeth]).andThen(() => errAsync(e)),
          ),
        );
    },
    start: (context, activated) =>
      startDetached(context, activated, namespacesLaunchArgv(context, activated.rootDir)).map(({ pid, logPath }) => ({
        pid,
        logPath,
        endpoints: endpointsOf(context, addressesOf(context.name).program.split('/')[0]!),
      })),
    healthCheck: (context, started) =>
      healthCheckCommon(context, started, {
        ...(options.healthTimeoutMs !== undefined ? { timeoutMs: options.healthTimeoutMs } : {}),
        wrap: (argv) => ['ip', 'netns', 'exec', namespaceNames(context.name).netns, ...argv],
      }),
    rollback: (context, state) => rollbackCommon(context, state),
  };
}
