/**
 * The FreeBSD jail deployer: the destination side of the `freebsd-jail` method.
 *
 * Pre-flight reads the host's release and jail capabilities (`detectFreeBsdHostFacts`) and
 * refuses, before anything is sent, a plan that needs what the host lacks (SysV IPC isolation
 * before 11.0, VIMAGE for `vnet`). The bundle arrives through the shared receiver; activation
 * completes the root with FreeBSD tools (plain `cp -p`, `mv`, `mkdir -p`: no GNU flags; no
 * `mknod`, jail(8) mounts devfs), writes `run/jail.conf` and moves everything into place with one
 * rename. The jail is created with `jail -c -f`, checked with `jls`, `pgrep -j` and `sockstat -j`,
 * and removed on failure with `jail -r` (which also unmounts devfs and drops the address aliases).
 *
 * None of this has run on a FreeBSD host: the commands were written from the FreeBSD manuals and
 * the jail(8) sources and are tested as golden command sequences (see docs/method-jail.md).
 *
 * @module
 */
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import { ApMigrateError, InvalidInputError, type InputIssue } from '../errors.js';
import { estimateBundleBytes } from '../bundle/estimate.js';
import type { BundleSelectionOptions } from '../bundle/select.js';
import { capabilityFor, FREEBSD_JAIL, PAPER_JAIL_BASE_BYTES } from '../policy/methods.js';
import { RESOURCE_KIND_LABELS, type ResourceKind } from '../policy/classify.js';
import type { ResourceProfile } from '../policy/profile.js';
import { isPseudoPath } from '../policy/estimate.js';
import { envProblems, normalizeAbsolutePath } from '../policy/safe-input.js';
import { detectFreeBsdHostFacts, type FreeBsdHostFacts } from '../platforms/freebsd-facts.js';
import { parseSockstat } from '../profilers/freebsd-parsers.js';
import type { ActivatedDeployment, DeployContext, Deployer, PreflightReport, StartedProgram } from '../spec/deployer.js';
import type { Executor } from '../spec/executor.js';
import { DeployError, layoutFor, preflightCommon, receiveWithReceiver, runScript, stagingDirOf } from './common.js';
import { defaultVethAddresses, type VethAddresses } from './namespaces.js';
import { isValidJailName, isValidJailUser, renderJailConf, type JailConfSpec, type JailNetwork } from './jail-conf.js';

/** Tools the destination needs (on top of `sh`): the receiver's `node`, jail(8) and friends, and the root builder's. */
export const JAIL_TOOLS = ['node', 'jail', 'jls', 'jexec', 'pgrep', 'sockstat', 'ldd', 'cp', 'mv', 'mkdir', 'mount', 'umount', 'df', 'awk', 'env', 'id', 'tail'];

/** PATH given to `jail -c` (run under `env -i`, so nothing from the SSH session leaks into the jail). */
export const JAIL_PATH = '/sbin:/bin:/usr/sbin:/usr/bin';

/** Host files copied into a thin jail's root unless the bundle brought them: the loader and the shell `exec.start` needs. */
export const JAIL_HOST_FILES = ['/libexec/ld-elf.so.1', '/bin/sh'];

/**
 * The host's statically linked ifconfig (rescue(8)). A VNET jail's interfaces are configured from
 * `exec.created` with `jexec`, which runs as root *inside* the jail: the bundle's own
 * `/sbin/ifconfig`, loader or libc must never run there as root, so this static copy, which
 * loads nothing from the jail's root, is what runs.
 */
export const RESCUE_IFCONFIG = '/rescue/ifconfig';

/** Where activation puts the copy of {@link RESCUE_IFCONFIG} inside a VNET jail (a directory only root can enter). */
export const JAIL_VNET_IFCONFIG = '/.ap-migrate/ifconfig';

/**
 * The base userland a thick bundle carries. `/etc` is left out on purpose: it holds the source
 * host's secrets (master.passwd, SSH host keys); the program's own `/etc` files come with its profile.
 */
export const FREEBSD_BASE_DIRS = [
  '/bin',
  '/sbin',
  '/lib',
  '/libexec',
  '/usr/bin',
  '/usr/sbin',
  '/usr/lib',
  '/usr/libexec',
  '/usr/share/locale',
  '/usr/share/zoneinfo',
  '/usr/share/misc',
] as const;

/** The destination lacks a capability the plan needs. `code` is `CAPABILITY_MISSING`. */
export class JailCapabilityError extends DeployError {
  constructor(message: string, details: Record<string, unknown>) {
    super('CAPABILITY_MISSING', message, { details });
  }
}

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
  /** setuid/setgid files in the bundle: reject (default), strip the bits, or allow. Thick bundles need `strip`. */
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
   * Send a thick bundle: the program plus the whole base userland ({@link FREEBSD_BASE_DIRS}),
   * for a destination without a base to share (default false: thin, the destination's base is used).
   */
  thick?: boolean;
}

/** What pre-flight learnt that later phases need. */
interface JailFacts {
  facts: FreeBsdHostFacts;
  jailUser: string;
  sysvIpc: boolean;
  /** The profile's paths, checked. */
  checked: CheckedJailProfile;
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

/** The profile's paths as the jail deployer uses them: each absolute, normalised, without `..`. */
export interface CheckedJailProfile {
  /** Path of the executable inside the jail. */
  executable: string;
  /** Working directory inside the jail. */
  cwd: string;
  /** Directories the program creates files in (they are made in its root), sorted. */
  createdDirs: string[];
}

/**
 * Check what the profile (which comes from the program being moved) gives the jail deployer
 * before any of it reaches a command at the destination: the executable, the working directory
 * and the paths of created files must be absolute without `..` or NUL (`mkdir -p <root><cwd>`
 * with a `..` would climb out of the root), no argument may hold NUL, the environment must have
 * portable names and sane sizes, and a program that ran as root (uid 0) is not run as root in
 * the jail unless the caller names the user (`jailUser`) or passes `allowRoot`. Refusals are
 * `UNSAFE_PROFILE` (`details.issues` lists every problem, `details.field` the first), the code
 * the other deployers use. The profile's gid is not used: the jail's user gets the groups of
 * its entry in the host's passwd (`exec.system_jail_user`).
 */
export function checkJailProfile(profile: ResourceProfile, options: { jailUser?: string; allowRoot?: boolean } = {}): CheckedJailProfile | DeployError {
  const issues: InputIssue[] = [];
  const exe = normalizeAbsolutePath(profile.executable);
  if (!exe.ok) issues.push({ path: 'executable', message: exe.reason });
  else if (exe.path === '/') issues.push({ path: 'executable', message: 'must name a file, not /' });
  const cwd = normalizeAbsolutePath(profile.cwd);
  if (!cwd.ok) issues.push({ path: 'cwd', message: cwd.reason });
  if (!Array.isArray(profile.argv) || profile.argv.length === 0) issues.push({ path: 'argv', message: 'must be a non-empty array of strings' });
  else {
    profile.argv.forEach((a: unknown, i) => {
      if (typeof a !== 'string' || a.includes('\0')) issues.push({ path: `argv.${i}`, message: 'must be a string without NUL' });
    });
  }
  const dirs = new Set<string>();
  if (!Array.isArray(profile.files)) issues.push({ path: 'files', message: 'must be an array' });
  else profile.files.forEach((f, i) => {
    if (!f?.created) return;
    const n = normalizeAbsolutePath(f.path);
    if (!n.ok) issues.push({ path: `files.${i}.path`, message: n.reason });
    else if (!isPseudoPath(n.path)) dirs.add(posix.dirname(n.path));
  });
  const env: unknown = profile.env;
  if (env !== undefined) {
    if (typeof env !== 'object' || env === null || Array.isArray(env)) issues.push({ path: 'env', message: 'must be an object of strings' });
    else for (const p of envProblems(env as Record<string, unknown>)) issues.push({ path: p.name ? `env.${p.name}` : 'env', message: p.reason });
  }
  if (!Number.isSafeInteger(profile.uid) || profile.uid < 0) issues.push({ path: 'uid', message: 'must be a non-negative integer' });
  else if (profile.uid === 0 && options.jailUser === undefined && !options.allowRoot) {
    issues.push({ path: 'uid', message: 'is 0: the program ran as root; it is not run as root in the jail unless you pass jailUser (the user to run it as) or allowRoot: true' });
  }
  const first = issues[0];
  if (first || !exe.ok || !cwd.ok) {
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
    return new DeployError('UNSAFE_PROFILE', `Refusing the profile: ${first?.path} ${first?.message}${more}`, { details: { field: first?.path, issues } });
  }
  return { executable: exe.path, cwd: cwd.path, createdDirs: [...dirs].sort() };
}

/**
 * Name collision (`jls -j`) and the user to run as (`id`), with its uid (a user that resolves to
 * uid 0 is refused unless the caller named it or passed `allowRoot`). Args: name uid user-or-empty
 */
export const JAIL_PREFLIGHT_SCRIPT = `
name="$1"; uid="$2"; user="$3"
if jls -j "$name" jid >/dev/null 2>&1; then echo "jail_exists=1"; else echo "jail_exists=0"; fi
if [ -z "$user" ]; then user=$(id -un "$uid" 2>/dev/null) || user=""; fi
if [ -n "$user" ] && u=$(id -u "$user" 2>/dev/null); then echo "user=$user"; echo "user_uid=$u"; fi
exit 0
`;

/**
 * Complete the root inside staging: directories jail(8) and the program need, the loader and
 * `/bin/sh` (exec.start runs through it) with their libraries, from this host unless the bundle
 * brought them. Only the host's own binaries go through `ldd`: running `ldd` on a bundled binary
 * would run its ELF interpreter as root. Every path it writes under the root is checked first:
 * no component may be a symbolic link (the bundle's, e.g. `root/tmp -> /etc`) and none may be
 * `.` or `..`. For a VNET jail, `helper` is {@link RESCUE_IFCONFIG}, copied to
 * {@link JAIL_VNET_IFCONFIG}. Args: staging exe cwd helper-or-empty [host-file...] -- [dir...]
 */
export const JAIL_ACTIVATE_SCRIPT = `
set -e
staging="$1"; exe="$2"; cwd="$3"; helper="$4"; shift 4
root="$staging/root"
# Paths come from the program's profile: absolute, and no "." or ".." that could climb out of the root.
check_path() {
  case "$1" in /*) ;; *) echo "refusing the relative path $1" >&2; exit 4 ;; esac
  case "$1/" in */./*|*/../*) echo "refusing the path $1: it has a . or .. component" >&2; exit 4 ;; esac
}
# The root came from the bundle: never let a symbolic link in it redirect a write onto the host.
no_link() {
  [ -z "$1" ] || check_path "$1"
  p="$root"; rest="\${1#/}"
  while [ -n "$rest" ]; do
    part="\${rest%%/*}"
    if [ "$part" = "$rest" ]; then rest=""; else rest="\${rest#*/}"; fi
    p="$p/$part"
    if [ -L "$p" ]; then echo "refusing to write through the symbolic link $p" >&2; exit 4; fi
  done
}
check_path "$exe"
for dir in /dev /tmp "$cwd"; do no_link "$dir"; done
mkdir -p "$root/dev" "$root/tmp" "$root$cwd" "$staging/run"
chmod 1777 "$root/tmp"
chmod 755 "$staging" "$root"
[ -f "$root$exe" ] || { echo "the bundle has no $exe" >&2; exit 3; }
if [ -n "$helper" ]; then
  # exec.created runs it as root inside the jail: a static copy from the host, never the bundle's.
  [ -f "$helper" ] || { echo "$helper is missing: a VNET jail needs the host's statically linked ifconfig" >&2; exit 5; }
  if [ -e "$root/.ap-migrate" ] || [ -L "$root/.ap-migrate" ]; then echo "refusing a bundle that has /.ap-migrate" >&2; exit 4; fi
  mkdir -m 700 "$root/.ap-migrate"
  cp "$helper" "$root/.ap-migrate/ifconfig"
  chmod 500 "$root/.ap-migrate/ifconfig"
fi
copy_file() {
  [ -e "$1" ] || return 0
  if [ -e "$root$1" ] || [ -L "$root$1" ]; then return 0; fi
  no_link "\${1%/*}"
  mkdir -p "$root\${1%/*}"
  cp -p "$1" "$root$1"
}
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  copy_file "$1"
  ldd -f '%p\\n' "$1" 2>/dev/null | while IFS= read -r lib; do [ -z "$lib" ] || copy_file "$lib"; done
  shift
done
[ "$#" -gt 0 ] && shift
for dir in "$@"; do no_link "$dir"; mkdir -p "$root$dir"; done
exit 0
`;

/** Move the finished staging directory to the install directory with one rename (FreeBSD mv has no -T, so check first). */
export const JAIL_MOVE_SCRIPT = `
set -e
staging="$1"; install="$2"
if [ -e "$install" ] || [ -L "$install" ]; then echo "exists: $install" >&2; exit 17; fi
mv "$staging" "$install"
`;

/**
 * Remove the jail (with its config when there is one, so jail(8) also unmounts devfs and removes
 * the address aliases it added), make sure nothing is still mounted under each directory, then
 * remove them. Refuses to `rm -rf` through a live mount. Args: name conf dir...
 */
export const JAIL_ROLLBACK_SCRIPT = `
name="$1"; conf="$2"; shift 2
if jls -j "$name" jid >/dev/null 2>&1; then
  if [ -f "$conf" ]; then jail -f "$conf" -r "$name" || jail -R "$name" || exit 4; else jail -R "$name" || exit 4; fi
fi
for dir in "$@"; do
  [ -n "$dir" ] || continue
  if mount -p | awk -v m="$dir/root/dev" '$2 == m { f = 1 } END { exit !f }'; then umount -f "$dir/root/dev" || exit 5; fi
  if mount -p | awk -v p="$dir/" 'index($2, p) == 1 { f = 1 } END { exit !f }'; then echo "still mounted under $dir" >&2; exit 6; fi
  chflags -R noschg "$dir" 2>/dev/null || true
  rm -rf -- "$dir"
done
exit 0
`;

/** TCP ports the program listened on at the source. */
function listeningPorts(profile: ResourceProfile): number[] {
  return [...new Set(profile.sockets.filter((s) => s.listening && s.protocol === 'tcp' && s.localPort).map((s) => s.localPort!))].sort((a, b) => a - b);
}

/** Where the jail's config, console log and root live under its install directory. */
export function jailPaths(installDir: string): { conf: string; consoleLog: string; rootDir: string } {
  return { conf: posix.join(installDir, 'run', 'jail.conf'), consoleLog: posix.join(installDir, 'run', 'console.log'), rootDir: posix.join(installDir, 'root') };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The `freebsd-jail` deployer. */
export function createJailDeployer(options: JailDeployerOptions = {}): Deployer {
  const network: JailNetworkOption = options.network ?? { mode: 'none' };
  const learnt = new Map<string, JailFacts>();
  const epairs = new Map<string, string>();
  const timeoutMs = options.commandTimeoutMs ?? 60_000;
  const opts = (context: DeployContext) => ({ timeoutMs, ...(context.signal ? { signal: context.signal } : {}) });
  const profileOptions = { ...(options.jailUser !== undefined ? { jailUser: options.jailUser } : {}), ...(options.allowRoot ? { allowRoot: true } : {}) };

  /** The jail.conf spec for `context`; pre-flight renders it once (with a stand-in VNET interface) so bad input fails before anything is sent. */
  const confSpec = (context: DeployContext, known: JailFacts, net: JailNetwork, created: ReadonlyArray<readonly string[]>): JailConfSpec => {
    const paths = jailPaths(layoutFor(context.transport, context.name).installDir);
    return {
      name: context.name,
      path: paths.rootDir,
      hostname: options.hostname ?? context.name,
      network: net,
      ...(options.devfsRuleset !== undefined ? { devfsRuleset: options.devfsRuleset } : {}),
      sysvIpc: known.sysvIpc,
      argv: [known.checked.executable, ...context.profile.argv.slice(1)],
      cwd: known.checked.cwd,
      ...(context.profile.env ? { env: context.profile.env } : {}),
      jailUser: known.jailUser,
      consoleLog: paths.consoleLog,
      created,
    };
  };

  const preflight = (context: DeployContext, estimatedBytes: number): ResultAsync<PreflightReport, ApMigrateError> => {
    const { transport, profile } = context;
    const tools = network.mode === 'vnet' ? [...JAIL_TOOLS, 'ifconfig'] : JAIL_TOOLS;
    if (!isValidJailName(context.name)) {
      return errAsync(new DeployError('PREFLIGHT_FAILED', `Invalid jail name "${context.name}": use letters, digits, "_" and "-" (max 63, not all digits; jail(8) reads dots as a hierarchy)`));
    }
    if (options.jailUser !== undefined && !isValidJailUser(options.jailUser)) {
      return errAsync(new InvalidInputError('jail deployer options', [{ path: 'jailUser', message: 'not a valid user name (letters, digits, "_", ".", "-"; not starting with "-")' }]));
    }
    // Before anything runs at the destination: nothing unchecked from the profile reaches a command.
    const checked = checkJailProfile(profile, profileOptions);
    if (checked instanceof DeployError) return errAsync(checked);
    return preflightCommon(context, estimatedBytes, tools).andThen((report) =>
      detectFreeBsdHostFacts(transport)
        .andThen((facts) => {
          const verdict = checkJailCapabilities(context.plan.kinds, facts, network, transport.description);
          return verdict instanceof JailCapabilityError ? errAsync<never, ApMigrateError>(verdict) : okAsync({ facts, sysvIpc: verdict.sysvIpc });
        })
        .andThen(({ facts, sysvIpc }) =>
          runScript(transport, JAIL_PREFLIGHT_SCRIPT, [context.name, String(profile.uid), options.jailUser ?? ''], opts(context)).andThen((r) => {
            const lines = r.stdout.split('\n');
            if (lines.includes('jail_exists=1')) {
              return errAsync(new DeployError('DESTINATION_EXISTS', `A jail named "${context.name}" already runs at ${transport.description} (jls -j ${context.name}); choose another name or remove it`));
            }
            const jailUser = lines.find((l) => l.startsWith('user='))?.slice('user='.length);
            const jailUid = lines.find((l) => l.startsWith('user_uid='))?.slice('user_uid='.length);
            if (!jailUser || !jailUid || !/^\d+$/.test(jailUid)) {
              const who = options.jailUser ? `the user "${options.jailUser}"` : `a user with uid ${profile.uid}`;
              return errAsync(new DeployError('PREFLIGHT_FAILED', `${transport.description} has no ${who} to run the program as (exec.jail_user); create it or pass jailUser`));
            }
            if (Number(jailUid) === 0 && options.jailUser === undefined && !options.allowRoot) {
              return errAsync(new DeployError('UNSAFE_PROFILE', `At ${transport.description} the user for uid ${profile.uid} is "${jailUser}", which has uid 0: the program would run as root in the jail; pass jailUser to choose the user, or allowRoot: true`, { details: { field: 'uid' } }));
            }
            const known = { facts, jailUser, sysvIpc, checked };
            const draft: JailNetwork = network.mode === 'vnet' ? { mode: 'vnet', interface: 'epair0b' } : network;
            const rendered = renderJailConf(confSpec(context, known, draft, []));
            if (rendered.isErr()) return errAsync(rendered.error);
            learnt.set(context.name, known);
            return okAsync<PreflightReport, ApMigrateError>(report);
          }),
        ),
    );
  };

  /** Create the epair for a VNET jail; returns the jail-side interface. */
  const createEpair = (context: DeployContext, addresses: VethAddresses): ResultAsync<string, ApMigrateError> =>
    context.transport.exec(['ifconfig', 'epair', 'create'], opts(context)).andThen((r) => {
      const hostSide = r.stdout.trim();
      if (!/^epair\d+a$/.test(hostSide)) return errAsync(new DeployError('ACTIVATE_FAILED', `ifconfig epair create printed ${JSON.stringify(hostSide)}, not an epair name`));
      epairs.set(context.name, hostSide);
      return context.transport
        .exec(['ifconfig', hostSide, 'inet', addresses.host, 'up'], opts(context))
        .map(() => `${hostSide.slice(0, -1)}b`)
        .orElse((e) => context.transport.exec(['ifconfig', hostSide, 'destroy'], { allowNonZeroExit: true }).andThen(() => errAsync(e)));
    });

  const activate = (context: DeployContext, staged: { stagingDir: string }): ResultAsync<ActivatedDeployment, ApMigrateError> => {
    const { transport, profile, name } = context;
    const known = learnt.get(name);
    if (!known) return errAsync(new DeployError('ACTIVATE_FAILED', `No pre-flight facts for "${name}": run preflight first`));
    // Checked again: this context's profile is the one whose paths reach the scripts below.
    const checked = checkJailProfile(profile, profileOptions);
    if (checked instanceof DeployError) return errAsync(checked);
    const layout = layoutFor(transport, name);
    const paths = jailPaths(layout.installDir);
    const vnetAddresses = network.mode === 'vnet' ? (network.addresses ?? defaultVethAddresses(name)) : undefined;
    const jailNetwork = (): ResultAsync<{ net: JailNetwork; created: string[][]; undo: string[][] }, ApMigrateError> => {
      if (network.mode === 'none') return okAsync({ net: { mode: 'none' }, created: [], undo: [] });
      if (network.mode === 'ip4') return okAsync({ net: { mode: 'ip4', interface: network.interface, addresses: network.addresses }, created: [], undo: [] });
      return createEpair(context, vnetAddresses!).map((inner) => ({
        net: { mode: 'vnet' as const, interface: inner },
        created: [
          ['/usr/sbin/jexec', name, JAIL_VNET_IFCONFIG, 'lo0', 'inet', '127.0.0.1/8', 'up'],
          ['/usr/sbin/jexec', name, JAIL_VNET_IFCONFIG, inner, 'inet', vnetAddresses!.program, 'up'],
        ],
        undo: [['ifconfig', epairs.get(name)!, 'destroy']],
      }));
    };
    const helper = network.mode === 'vnet' ? RESCUE_IFCONFIG : '';
    return jailNetwork().andThen(({ net, created, undo }) => {
      const conf = renderJailConf(confSpec(context, { ...known, checked }, net, created));
      const undoNetwork = () => undo.reduce<ResultAsync<unknown, ApMigrateError>>((acc, argv) => acc.andThen(() => transport.exec(argv, { allowNonZeroExit: true })), okAsync(undefined));
      if (conf.isErr()) return undoNetwork().andThen(() => errAsync(new DeployError('ACTIVATE_FAILED', `Cannot write the jail's configuration: ${conf.error.message}`, { cause: conf.error })));
      const stagingConf = posix.join(staged.stagingDir, 'run', 'jail.conf');
      return runScript(transport, JAIL_ACTIVATE_SCRIPT, [staged.stagingDir, checked.executable, checked.cwd, helper, ...JAIL_HOST_FILES, '--', ...checked.createdDirs], opts(context))
        // 0600: the config holds the program's environment, which may hold secrets.
        .andThen(() => transport.upload(Readable.from([conf.value]), stagingConf, { ...opts(context), mode: 0o600 }))
        .andThen(() => runScript(transport, JAIL_MOVE_SCRIPT, [staged.stagingDir, layout.installDir], opts(context)))
        .mapErr((e) => new DeployError('ACTIVATE_FAILED', `Could not build the jail's root at ${transport.description}: ${e.message}`, { cause: e }))
        .orElse((e) => undoNetwork().andThen(() => errAsync(e)))
        .map((): ActivatedDeployment => ({ installDir: layout.installDir, rootDir: paths.rootDir, undo }));
    });
  };

  const consoleTail = (context: DeployContext, logPath: string): ResultAsync<string, never> =>
    context.transport
      .exec(['tail', '-c', '2000', logPath], { allowNonZeroExit: true, timeoutMs })
      .map((r) => r.stdout.trim())
      .orElse(() => okAsync(''));

  const jidOf = (context: DeployContext): ResultAsync<number | undefined, ApMigrateError> =>
    context.transport.exec(['jls', '-j', context.name, 'jid'], { ...opts(context), allowNonZeroExit: true }).map((r) => {
      const jid = Number(r.stdout.trim());
      return r.code === 0 && Number.isInteger(jid) && jid > 0 ? jid : undefined;
    });

  const pidsIn = (context: DeployContext, jid: number): ResultAsync<number[], ApMigrateError> =>
    context.transport
      .exec(['pgrep', '-j', String(jid)], { ...opts(context), allowNonZeroExit: true })
      .map((r) => r.stdout.split('\n').map((l) => Number(l.trim())).filter((n) => Number.isInteger(n) && n > 0));

  const start = (context: DeployContext, activated: ActivatedDeployment): ResultAsync<StartedProgram, ApMigrateError> => {
    const paths = jailPaths(activated.installDir);
    const fail = <T>(why: string, cause?: unknown) =>
      consoleTail(context, paths.consoleLog).andThen((tail) =>
        errAsync<T, ApMigrateError>(new DeployError('START_FAILED', `Could not start the jail "${context.name}" at ${context.transport.description}: ${why}${tail ? `\n${tail}` : ''}`, { cause })),
      );
    return context.transport
      .exec(['env', '-i', `PATH=${JAIL_PATH}`, 'jail', '-c', '-f', paths.conf, context.name], { ...opts(context), allowNonZeroExit: true })
      .andThen((r) => (r.code === 0 ? jidOf(context) : fail<number | undefined>(`jail -c exited with ${r.code}: ${r.stderr.trim().slice(0, 600)}`)))
      .andThen((jid) => (jid === undefined ? fail<number[]>('jls does not list the jail after jail -c') : pidsIn(context, jid)))
      .andThen((pids) => (pids.length === 0 ? fail<number>('no process runs in the jail: the program exited at once') : okAsync(Math.min(...pids))))
      .map((pid): StartedProgram => ({ pid, logPath: paths.consoleLog, endpoints: endpointsFor(context, network, context.name) }));
  };

  const healthCheck = (context: DeployContext, started: StartedProgram): ResultAsync<void, ApMigrateError> => {
    const ports = listeningPorts(context.profile);
    const deadline = Date.now() + (options.healthTimeoutMs ?? 10_000);
    const settleAt = Date.now() + (options.settleMs ?? 300);
    const pollMs = options.healthPollMs ?? 200;
    const failed = (what: string) =>
      consoleTail(context, started.logPath).andThen((tail) => errAsync<void, ApMigrateError>(new DeployError('HEALTH_CHECK_FAILED', `Health check failed: ${what}.${tail ? ` ${tail.slice(-600)}` : ''}`)));
    const probe = (): ResultAsync<void, ApMigrateError> =>
      jidOf(context).andThen((jid) => {
        if (jid === undefined) return failed(`the jail "${context.name}" is gone`);
        return pidsIn(context, jid).andThen((pids) => {
          if (!pids.includes(started.pid)) return failed('the program exited in the jail');
          const listening = ports.length
            ? context.transport.exec(['sockstat', '-4', '-6', '-l', '-j', String(jid)], opts(context)).andThen((r) => {
                const parsed = parseSockstat(r.stdout, `sockstat -4 -6 -l -j ${jid}`);
                if (parsed.isErr()) return errAsync<number[], ApMigrateError>(parsed.error);
                return okAsync(ports.filter((p) => parsed.value.some((s) => s.protocol === 'tcp' && s.localPort === p)));
              })
            : okAsync<number[], ApMigrateError>([]);
          return listening.andThen((open) => {
            if (open.length === ports.length && Date.now() >= settleAt) return okAsync(undefined);
            if (Date.now() >= deadline) return failed(`the program is not listening on port(s) ${ports.filter((p) => !open.includes(p)).join(', ')}`);
            // Listening but not yet settled: wait out the rest of the settle time; else poll again.
            const wait = open.length === ports.length ? Math.max(1, settleAt - Date.now()) : pollMs;
            return ResultAsync.fromSafePromise(sleep(wait)).andThen(probe);
          });
        });
      });
    return probe();
  };

  const rollback: Deployer['rollback'] = (context, state) => {
    const layout = layoutFor(context.transport, context.name);
    const conf = state.activated ? jailPaths(state.activated.installDir).conf : '';
    const dirs = [stagingDirOf(context, state), state.activated?.installDir].filter((d): d is string => !!d);
    const undo = state.activated?.undo ?? [];
    learnt.delete(context.name);
    epairs.delete(context.name);
    // Rollback must run even after an abort, so it never takes the caller's signal.
    return runScript(context.transport, JAIL_ROLLBACK_SCRIPT, [context.name, conf, ...dirs], { allowNonZeroExit: true, timeoutMs })
      .andThen((r) =>
        r.code === 0
          ? okAsync(undefined)
          : errAsync(new DeployError('ROLLBACK_FAILED', `Rollback at ${context.transport.description} failed (exit ${r.code}): ${r.stderr.trim().slice(0, 400)}; check jls and ${layout.installDir}`)),
      )
      .andThen(() => undo.reduce<ResultAsync<unknown, ApMigrateError>>((acc, argv) => acc.andThen(() => context.transport.exec(argv, { allowNonZeroExit: true, timeoutMs })), okAsync(undefined)))
      .map(() => undefined)
      .mapErr((e) => (e instanceof DeployError && e.code === 'ROLLBACK_FAILED' ? e : new DeployError('ROLLBACK_FAILED', `Rollback at ${context.transport.description} failed: ${e.message}; check jls and ${layout.installDir}`, { cause: e })));
  };

  // A thick bundle carries the base userland, whose setuid programs (su, passwd) must keep their bits.
  const setuid = options.setuid ?? (options.thick ? 'allow' : undefined);
  return {
    method: 'freebsd-jail',
    bundleSelection: (context) => {
      const contents = jailBundleContents(context.profile, { thick: !!options.thick });
      return { ...contents.selection, ...(contents.extraTrees.length ? { extraTrees: contents.extraTrees } : {}) };
    },
    preflight,
    receive: (context, bundle, onBytes) => receiveWithReceiver(context, bundle, { ...(setuid ? { setuid } : {}), ...(onBytes ? { onBytes } : {}) }),
    activate,
    start,
    healthCheck,
    rollback,
  };
}

/** `host:port` for every TCP port the program listened on, at the jail's first address. */
function endpointsFor(context: DeployContext, network: JailNetworkOption, name: string): string[] {
  const host = network.mode === 'ip4' ? network.addresses[0]?.split('/')[0] : network.mode === 'vnet' ? (network.addresses ?? defaultVethAddresses(name)).program.split('/')[0] : undefined;
  return host ? listeningPorts(context.profile).map((p) => `${host}:${p}`) : [];
}

// ---------------------------------------------------------------------------------------------
// Thin and thick bundles

/** Sizes of the base userland directories measured on a FreeBSD source. */
export interface FreeBsdBaseMeasurement {
  /** Sum over the directories found (hard links counted once, as `du` does across its arguments). */
  bytes: number;
  /** Bytes per directory. */
  byDirectory: Record<string, number>;
  /** Directories that do not exist on the host. */
  missing: string[];
}

/** Parse `du -sk DIR...`: lines `KB<TAB>DIR`; `No such file or directory` on stderr marks a missing one. */
export function parseDuSk(stdout: string, stderr: string, dirs: readonly string[]): FreeBsdBaseMeasurement | DeployError {
  const byDirectory: Record<string, number> = {};
  for (const line of stdout.split('\n')) {
    if (!line.trim()) continue;
    const m = /^(\d+)\t(\/.*)$/.exec(line);
    if (!m) return new DeployError('PARSE_FAILED', `Cannot parse du -sk output line ${JSON.stringify(line.slice(0, 200))}`);
    byDirectory[m[2]!] = Number(m[1]) * 1024;
  }
  const missing = dirs.filter((d) => byDirectory[d] === undefined);
  const unexplained = missing.filter((d) => !stderr.includes(`${d}: No such file or directory`));
  if (unexplained.length) return new DeployError('PARSE_FAILED', `du -sk printed nothing for ${unexplained.join(', ')}: ${stderr.trim().slice(0, 300)}`);
  return { bytes: Object.values(byDirectory).reduce((a, b) => a + b, 0), byDirectory, missing };
}

/** Measure the base userland a thick bundle would carry, with `du -sk` on the (FreeBSD) source. */
export function measureFreeBsdBase(executor: Executor, dirs: readonly string[] = FREEBSD_BASE_DIRS): ResultAsync<FreeBsdBaseMeasurement, ApMigrateError> {
  if (typeof (executor as Partial<Executor> | null)?.exec !== 'function') {
    return errAsync(new InvalidInputError('measureFreeBsdBase arguments', [{ path: 'executor', message: 'must be an Executor (an object with exec)' }]));
  }
  if (!Array.isArray(dirs) || !dirs.every((d) => normalizeAbsolutePath(d).ok)) {
    return errAsync(new InvalidInputError('measureFreeBsdBase arguments', [{ path: 'dirs', message: 'must be an array of absolute paths' }]));
  }
  return executor.exec(['du', '-sk', '--', ...dirs], { allowNonZeroExit: true, timeoutMs: 300_000 }).andThen((r) => {
    const parsed = parseDuSk(r.stdout, r.stderr, dirs);
    if (parsed instanceof DeployError) return errAsync(parsed);
    if (r.code !== 0 && parsed.missing.length === 0) return errAsync(new DeployError('PREFLIGHT_FAILED', `du -sk exited with ${r.code}: ${r.stderr.trim().slice(0, 300)}`));
    return okAsync(parsed);
  });
}

/** What a jail bundle carries and how big it should be. */
export interface JailBundleContents {
  /** `thin`: program, files and library closure; `thick`: plus the base userland. */
  kind: 'thin' | 'thick';
  /** Selection options for the packer and `estimateBundleBytes`. */
  selection: BundleSelectionOptions;
  /** Whole directory trees the packer must add (thick only). The packer needs an `extraTrees` option for this. */
  extraTrees: string[];
  estimate: {
    /** The program, its files (and for thin bundles its libraries), as the bundle estimate computes. */
    programBytes: number;
    /** The base userland (0 for thin bundles). */
    baseBytes: number;
    /** Where `baseBytes` comes from. */
    baseSource: 'not-sent' | 'measured' | 'paper-default';
    totalBytes: number;
    /** A sentence saying which bundle and which base size. */
    note: string;
  };
  /** Planner options that make `planMigration` estimate the same bundle. */
  planOptions: { destination: { provides: string[] }; sizes: Record<string, number> };
}

/**
 * What a jail bundle of `profile` carries. Thin (default): the program, its files and its shared
 * libraries; the destination's base supplies `/bin/sh` and the loader. Thick: the libraries come
 * inside the base userland trees ({@link FREEBSD_BASE_DIRS}), sized by `measuredBaseBytes`
 * (from {@link measureFreeBsdBase}) when known, else the paper's 1108 MB.
 */
export function jailBundleContents(profile: ResourceProfile, options: { thick?: boolean; measuredBaseBytes?: number } = {}): JailBundleContents {
  if (!options.thick) {
    const selection = { includeSharedLibraries: true };
    const programBytes = estimateBundleBytes(profile, selection).bytes;
    return {
      kind: 'thin',
      selection,
      extraTrees: [],
      estimate: { programBytes, baseBytes: 0, baseSource: 'not-sent', totalBytes: programBytes, note: 'thin bundle: program, files and shared libraries; the destination base userland is shared' },
      planOptions: { destination: { provides: ['freebsd-base-userland'] }, sizes: {} },
    };
  }
  const selection = { includeSharedLibraries: false };
  const programBytes = estimateBundleBytes(profile, selection).bytes;
  const measured = options.measuredBaseBytes;
  const baseBytes = measured ?? PAPER_JAIL_BASE_BYTES;
  const source = measured !== undefined ? 'measured' : 'paper-default';
  const mb = (baseBytes / 1048576).toFixed(0);
  return {
    kind: 'thick',
    selection,
    extraTrees: [...FREEBSD_BASE_DIRS],
    estimate: {
      programBytes,
      baseBytes,
      baseSource: source,
      totalBytes: programBytes + baseBytes,
      note:
        source === 'measured'
          ? `thick bundle: program and files plus the base userland, measured at ${mb} MB with du -sk on the source`
          : `thick bundle: program and files plus the base userland, at the paper's default of ${mb} MB (Table 2); measure it with measureFreeBsdBase`,
    },
    planOptions: { destination: { provides: [] }, sizes: measured !== undefined ? { 'jail-base-userland': measured } : {} },
  };
}
