/**
 * Starting the program at the destination: its argv and environment, supplementary groups, umask
 * and resource limits as the source had them, under a reaper that follows a daemon's forks, after
 * the privilege drop into its root.
 *
 * @module
 */
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ActivatedDeployment, DeployContext } from '../spec/deployer.js';
import { DeployError } from './deploy-error.js';
import type { Rlimit } from '../policy/profile.js';
import { layoutFor } from './layout.js';
import { checkStartFacts } from './profile-safety.js';
import { WRAPPER_PATH } from './root-builder.js';
import { runScript } from './run-script.js';

/**
 * The program's launch argv at the destination: the path it was started by (a symlink it may
 * decide its role from, else the executable) and its original arguments, unless its title
 * replaced them (then they are unknown and it starts with none).
 */
export function launchArgv(context: DeployContext): string[] {
  const { executable, argv, start } = context.profile;
  return [start?.invokedAs ?? executable, ...(start?.argvRewritten ? [] : argv.slice(1))];
}

/** The fixed environment of host-side tools: nothing of the program's reaches them. */
export const HOST_TOOL_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL=C'];

/** The environment the program starts with: the profile's, or a minimal one. */
export function programEnv(context: DeployContext): string[] {
  const env = context.profile.env ?? { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/', LANG: 'C.UTF-8' };
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

/**
 * PID 1 of the program's pid namespace: a host shell (root, outside the root directory) that starts
 * the program and stays while any of its processes live, reaping orphans (a daemon's first process
 * exits by design; its children are reparented here). When the program is gone it exits, and the
 * namespace with it. `$1` is the namespace's procfs, the rest the command.
 */
export const REAPER_SCRIPT = `
proc="$1"; shift
"$@" &
# The program's first process; a daemon's ends soon, its children reparented to this shell.
wait
while :; do
  n=0
  for p in "$proc"/[0-9]*; do
    state=
    while read -r key value rest; do [ "$key" = State: ] && { state=$value; break; }; done < "$p/status" 2>/dev/null
    [ -n "$state" ] && [ "$state" != Z ] && n=$((n + 1))
  done
  # Only this shell is alive: the program is gone (zombies are reaped by the next wait).
  [ "$n" -le 1 ] && exit 0
  sleep 1
done
`;

/**
 * The launcher: new pid and mount namespaces (plus `extraNamespaces`) whose init is the reaper.
 * The reaper reads the rest of the command from {@link programArgvPath} (NUL-separated, 0600,
 * outside the root): the umask and limits ({@link startFactsArgv}), `setpriv --regid --groups`
 * and `unshare --root --wd --setuid` into the program's root ({@link privilegeDropArgv}), then
 * the exec wrapper with the program's environment. So the program's environment (which may hold
 * secrets) is in no long-lived process's argv, where any local user could read it with `ps`;
 * host tools run with {@link HOST_TOOL_ENV}, nothing of the profile in their environment.
 */
export function supervisedLaunchArgv(context: DeployContext, rootDir: string, extraNamespaces: readonly string[] = []): string[] {
  const proc = posix.join(rootDir, 'proc');
  return [
    'env', '-i', ...HOST_TOOL_ENV,
    'unshare', '--pid', '--fork', '--kill-child', ...extraNamespaces, `--mount-proc=${proc}`,
    '--', 'sh', '-c', REAPER_SCRIPT, 'apm-init', proc,
    // The file's items are the command: `env` (with no options) runs them. -x: fail rather than split a
    // list too long for one command; -s: the system's limit, not 128 KiB.
    'xargs', '-0', '-x', '-s', '2000000', '-a', programArgvPath(context), 'env',
  ];
}

/** Where the launcher's command file lives: the run directory, outside the program's root. */
export function programArgvPath(context: DeployContext): string {
  return posix.join(layoutFor(context.transport, context.name).runDir, 'program.argv');
}

/**
 * Sets the program's umask and resource limits in a host `sh` (root, outside the root directory,
 * before the privilege drop), then execs the rest of the command: both are inherited across exec
 * and setuid. `$1` is the umask in octal, or `-` to keep it; then `NAME SOFT HARD` triples up to
 * `--`. A hard limit above the destination's own (this shell's) is lowered to it, with a line in
 * the program's log: the profile comes from the source and never grants more than the destination
 * gives its own root session; a soft limit is at most the hard one.
 */
export const START_FACTS_SCRIPT = `
[ "$1" = - ] || umask "$1" || exit 126
shift
while [ "$#" -ge 3 ] && [ "$1" != -- ]; do
  name=$1; soft=$2; hard=$3; shift 3
  max=$(prlimit --pid "$$" "--$name" --output=HARD --noheadings) || exit 126
  max=\${max##* }
  if [ "$max" != unlimited ]; then
    if [ "$hard" = unlimited ] || [ "$hard" -gt "$max" ]; then
      echo "ap-migrate: the $name hard limit $hard is above the destination's $max: lowered to it" >&2
      hard=$max
    fi
    if [ "$soft" = unlimited ] || [ "$soft" -gt "$hard" ]; then soft=$hard; fi
  fi
  prlimit --pid "$$" "--$name=$soft:$hard" || exit 126
done
[ "$1" = -- ] || exit 126
shift
exec "$@"
`;

/** The umask as `umask` takes it: four octal digits. */
function octalUmask(umask: number): string {
  return umask.toString(8).padStart(4, '0');
}

/** Host tools the launcher needs besides the deployers' own list: `prlimit` only for a profile with limits. */
export function launchTools(context: DeployContext): string[] {
  const limits = context.profile.start?.rlimits;
  return ['setpriv', 'sh', ...(limits && Object.keys(limits).length > 0 ? ['prlimit'] : [])];
}

/** `sh -c START_FACTS_SCRIPT ...` for a profile with a umask or limits; nothing otherwise. */
export function startFactsArgv(context: DeployContext): string[] {
  const { umask, rlimits } = context.profile.start ?? {};
  const limits = Object.entries(rlimits ?? {}).filter((e): e is [string, Rlimit] => e[1] !== undefined);
  if (umask === undefined && limits.length === 0) return [];
  const triples = limits.flatMap(([name, l]) => [name, String(l.soft), String(l.hard)]);
  return ['sh', '-c', START_FACTS_SCRIPT, 'apm-start', umask === undefined ? '-' : octalUmask(umask), ...triples, '--'];
}

/**
 * The privilege drop, in two host tools that need nothing inside the root: `setpriv` sets the
 * real, effective and saved gid and the supplementary groups while still uid 0 (util-linux
 * `unshare --setgid` would clear the groups), then `unshare` chroots, enters the cwd and sets the
 * uid, which (from uid 0 to another) clears every capability. Root (uid 0) keeps its own, as before.
 */
export function privilegeDropArgv(context: DeployContext, rootDir: string): string[] {
  const { uid, gid, cwd, start } = context.profile;
  const groups = [...new Set(start?.groups ?? [])];
  const groupsOption = groups.length > 0 ? `--groups=${groups.join(',')}` : '--clear-groups';
  return ['setpriv', `--regid=${gid}`, groupsOption, '--', 'unshare', `--root=${rootDir}`, `--wd=${cwd}`, '--setuid', String(uid), '--'];
}

/** The command the reaper runs, as the NUL-separated contents of {@link programArgvPath}. */
export function programArgvFile(context: DeployContext, rootDir: string): string {
  const argv = [...startFactsArgv(context), ...privilegeDropArgv(context, rootDir), ...programCommand(context)];
  return argv.map((a) => `${a}\0`).join('');
}

/** The longest single argument Linux passes to a program (MAX_ARG_STRLEN): `setpriv --groups=` is one. */
const MAX_ARG_BYTES = 128 * 1024;

/** The start facts checked again (numbers only, bounded) before any reaches a command. */
function checkedStartFacts(context: DeployContext): DeployError | undefined {
  const checked = checkStartFacts(context.profile.start);
  if (checked.isErr()) return checked.error;
  const groups = privilegeDropArgv(context, '/')[2]!;
  if (Buffer.byteLength(groups) >= MAX_ARG_BYTES) return new DeployError('START_FAILED', `The program's ${context.profile.start?.groups?.length} supplementary groups do not fit in one argument of setpriv (${MAX_ARG_BYTES} bytes)`);
  return undefined;
}

/**
 * What runs after the privilege drop, inside the root: the exec wrapper sets the program's
 * environment there (never in a host-side tool's, where `LD_PRELOAD` or an option-like name
 * would act as root), then execs the program.
 */
export function programCommand(context: DeployContext): string[] {
  return [WRAPPER_PATH, '-i', ...programEnv(context), ...launchArgv(context)];
}

/**
 * One command (a round trip over a slow link costs ~0.1 s): the run directory (root-only), the
 * launcher's command file written from stdin (0600, then renamed into place), then the launcher.
 */
const START_SCRIPT = `
rundir="$1"; argvfile="$2"; log="$3"; pidfile="$4"; shift 4
mkdir -p "$rundir" && chmod 700 "$rundir" || exit 1
(umask 077 && cat >"$argvfile.part") && mv -f -- "$argvfile.part" "$argvfile" || exit 1
setsid "$@" >"$log" 2>&1 </dev/null &
echo $! >"$pidfile"
echo "$!"
`;

/**
 * Start the supervised launcher `argv` detached at the destination, logging to
 * `<runDir>/program.log`, after writing the command file it reads (root-only).
 */
export function startDetached(context: DeployContext, activated: ActivatedDeployment, argv: readonly string[]): ResultAsync<{ pid: number; logPath: string }, ApMigrateError> {
  const layout = layoutFor(context.transport, context.name);
  const logPath = posix.join(layout.runDir, 'program.log');
  const pidPath = posix.join(layout.runDir, 'launcher.pid');
  const signalOpt = context.signal ? { signal: context.signal } : {};
  const unsafe = checkedStartFacts(context);
  if (unsafe) return errAsync(unsafe);
  const commandFile = Readable.from([Buffer.from(programArgvFile(context, activated.rootDir))]);
  return runScript(context.transport, START_SCRIPT, [layout.runDir, programArgvPath(context), logPath, pidPath, ...argv], { ...signalOpt, stdin: commandFile })
    .mapErr((e) => (e.code === 'ABORTED' ? e : new DeployError('START_FAILED', `Could not start the program at ${context.transport.description}: ${e.message}`, { cause: e })))
    .andThen((r) => {
      const pid = Number(r.stdout.trim().split('\n').pop());
      return Number.isInteger(pid) && pid > 0 ? okAsync({ pid, logPath }) : errAsync(new DeployError('START_FAILED', `The launcher printed no pid: ${r.stdout.slice(0, 200)}`));
    });
}
