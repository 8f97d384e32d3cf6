/**
 * Destination-side steps shared by the chroot and namespace deployers: pre-flight checks, the
 * receiver, library resolution, starting, health checks and rollback. Every remote step is an
 * argv run through the transport; scripts take their data as positional arguments ("$@"), never
 * spliced into the script text, so no file name can become shell syntax.
 *
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ExecResult } from '../spec/executor.js';
import type { ActivatedDeployment, DeployContext, PreflightReport, StagedBundle, StartedProgram } from '../spec/deployer.js';
import type { Transport } from '../spec/transport.js';
import { WRAPPER_PATH, type RootBuildReport, type RootBuildSpec } from './root-builder.js';

export { DeployError, type DeployErrorCode } from './deploy-error.js';
import { DeployError } from './deploy-error.js';

/** Run a fixed POSIX sh script at the destination with `args` as "$@" (never spliced into the text). */
export function runScript(
  transport: Transport,
  script: string,
  args: readonly string[],
  options: { signal?: AbortSignal; stdin?: Readable; allowNonZeroExit?: boolean; timeoutMs?: number; cwd?: string } = {},
): ResultAsync<ExecResult, ApMigrateError> {
  return transport.exec(['sh', '-c', script, 'ap-migrate', ...args], {
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.stdin ? { stdin: options.stdin } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    allowNonZeroExit: options.allowNonZeroExit ?? false,
  });
}

/** Where things live at the destination for one migrated program. */
export interface DestinationLayout {
  /** `<root>/<name>`: the final install directory. */
  installDir: string;
  /** `<installDir>/root`: what the program sees as `/`. */
  rootDir: string;
  /** `<installDir>/run`: pid file and log, outside the program's root. */
  runDir: string;
  /** `<root>/.ap-migrate`: receiver and staging directories. */
  workDir: string;
}

/** Compute the layout for `name` under the transport's root. */
export function layoutFor(transport: Transport, name: string): DestinationLayout {
  const installDir = posix.join(transport.root, name);
  return {
    installDir,
    rootDir: posix.join(installDir, 'root'),
    runDir: posix.join(installDir, 'run'),
    workDir: posix.join(transport.root, '.ap-migrate'),
  };
}

/** A name usable as one directory and namespace component. */
export function isSafeName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name);
}

const PREFLIGHT_SCRIPT = `
root="$1"; install="$2"; shift 2
# Change nothing (a dry run ends here): measure space where the root is or will be created.
probe="$root"; while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
echo "os=$(uname -s)"; echo "release=$(uname -r)"; echo "arch=$(uname -m)"
echo "free_kb=$(df -Pk "$probe" | awk 'NR==2 {print $4}')"
if [ -e "$install" ] || [ -L "$install" ]; then echo "exists=1"; else echo "exists=0"; fi
for tool in "$@"; do p=$(command -v "$tool" 2>/dev/null) && echo "tool.$tool=$p"; done
exit 0
`;

/**
 * Check the destination: platform matches the plan's, the install directory is free, every tool
 * in `tools` exists, and there is room for `estimatedBytes` (plus 5% and 16 MiB of slack).
 */
export function preflightCommon(context: DeployContext, estimatedBytes: number, tools: readonly string[]): ResultAsync<PreflightReport, ApMigrateError> {
  const { transport, name } = context;
  if (!isSafeName(name)) {
    return errAsync(new DeployError('PREFLIGHT_FAILED', `Invalid program name "${name}": use letters, digits, dot, dash, underscore (max 63)`));
  }
  const layout = layoutFor(transport, name);
  // Run from `/`: the root directory itself may not exist yet.
  return runScript(transport, PREFLIGHT_SCRIPT, [transport.root, layout.installDir, ...tools], { cwd: '/', ...(context.signal ? { signal: context.signal } : {}) })
    .mapErr((e) => new DeployError('PREFLIGHT_FAILED', `Pre-flight check on ${transport.description} failed: ${e.message}`, { cause: e, isRetryable: e.isRetryable }))
    .andThen((result) => {
      const facts = new Map<string, string>();
      for (const line of result.stdout.split('\n')) {
        const eq = line.indexOf('=');
        if (eq > 0) facts.set(line.slice(0, eq), line.slice(eq + 1));
      }
      const foundTools: Record<string, string> = {};
      for (const tool of tools) {
        const path = facts.get(`tool.${tool}`);
        if (path) foundTools[tool] = path;
      }
      const missing = tools.filter((t) => !foundTools[t]);
      if (missing.length) {
        return errAsync(new DeployError('TOOL_MISSING', `The destination ${transport.description} lacks: ${missing.join(', ')}`, { details: { missing } }));
      }
      if (facts.get('exists') === '1') {
        return errAsync(new DeployError('DESTINATION_EXISTS', `${layout.installDir} already exists at ${transport.description}; choose another name or remove it`));
      }
      const os = (facts.get('os') ?? '').toLowerCase();
      const expected = context.plan.destination.os;
      if (os !== expected) {
        return errAsync(new DeployError('PLATFORM_MISMATCH', `The plan was made for a ${expected} destination but ${transport.description} runs ${os || 'an unknown OS'}`));
      }
      const freeBytes = Number(facts.get('free_kb') ?? 'NaN') * 1024;
      const needed = Math.ceil(estimatedBytes * 1.05) + 16 * 1024 * 1024;
      if (!Number.isFinite(freeBytes) || freeBytes < needed) {
        return errAsync(
          new DeployError('INSUFFICIENT_SPACE', `The destination has ${Math.floor(freeBytes / 1048576)} MiB free under ${transport.root}; the bundle needs about ${Math.ceil(needed / 1048576)} MiB`, {
            details: { freeBytes, needed },
          }),
        );
      }
      return okAsync<PreflightReport, ApMigrateError>({
        platform: { os, release: facts.get('release') ?? '', arch: facts.get('arch') ?? '' },
        freeBytes,
        tools: foundTools,
        installDir: layout.installDir,
      });
    });
}

/** Path of the built receiver (`dist/receiver.cjs`), next to this module in a build or under `dist/` from sources. */
export function locateReceiver(): string | undefined {
  const here = typeof __filename === 'string' ? dirname(__filename) : dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'receiver.cjs'), join(here, '..', '..', 'dist', 'receiver.cjs')];
  if (process.env.AP_MIGRATE_RECEIVER) candidates.unshift(process.env.AP_MIGRATE_RECEIVER);
  return candidates.find((p) => existsSync(p));
}

/**
 * The staging directory each migration's receiver writes to, known from the moment it is chosen:
 * when the receive fails, rollback removes exactly this directory (and stops exactly this
 * receiver), so a concurrent migration of a program with the same name is never touched.
 */
const receiving = new WeakMap<DeployContext, string>();

/** The staging directory of this migration: the verified one, or the one a failed receive was writing. */
export function stagingDirOf(context: DeployContext, state: { staged?: StagedBundle }): string | undefined {
  return state.staged?.stagingDir ?? receiving.get(context);
}

/** The staging directory the next receive of this migration writes to (chosen once, random, per migration). */
export function stagingDirFor(context: DeployContext): string {
  let dir = receiving.get(context);
  if (!dir) {
    dir = posix.join(layoutFor(context.transport, context.name).workDir, `staging-${context.name}-${randomBytes(6).toString('hex')}`);
    receiving.set(context, dir);
  }
  return dir;
}

/** The receiver built here and where it lives at the destination (named by its content hash). */
function receiverFor(context: DeployContext): { localPath: string; remotePath: string } | undefined {
  const localPath = locateReceiver();
  if (!localPath) return undefined;
  let hash = receiverHashes.get(localPath);
  if (!hash) {
    hash = createHash('sha256').update(readFileSync(localPath)).digest('hex').slice(0, 16);
    receiverHashes.set(localPath, hash);
  }
  return { localPath, remotePath: posix.join(layoutFor(context.transport, context.name).workDir, `receiver-${hash}.cjs`) };
}
const receiverHashes = new Map<string, string>();

function receiverMissing(): DeployError {
  return new DeployError('RECEIVER_MISSING', 'dist/receiver.cjs not found: run `npm run build` (or set AP_MIGRATE_RECEIVER)');
}

/** Upload the receiver (once per content hash) and run it with the bundle on its stdin. */
export function receiveWithReceiver(
  context: DeployContext,
  bundle: Readable,
  options: { allowDevices?: boolean; setuid?: 'reject' | 'strip' | 'allow'; onBytes?: (bytes: number) => void } = {},
): ResultAsync<StagedBundle, ApMigrateError> {
  const { transport } = context;
  const receiver = receiverFor(context);
  if (!receiver) {
    bundle.destroy();
    return errAsync(receiverMissing());
  }
  const { localPath: receiverPath, remotePath: remoteReceiver } = receiver;
  const layout = layoutFor(transport, context.name);
  const stagingDir = stagingDirFor(context);
  const signalOpt = context.signal ? { signal: context.signal } : {};
  let bytes = 0;
  bundle.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    options.onBytes?.(bytes);
  });
  bundle.pause();
  const flags = [...(options.allowDevices ? ['--allow-devices'] : []), ...(options.setuid ? [`--setuid=${options.setuid}`] : [])];
  // From `/`: this creates the root directory when it does not exist yet.
  return runScript(transport, 'mkdir -p "$1" && chmod 700 "$1" && test -f "$2" && echo present || echo absent', [layout.workDir, remoteReceiver], { cwd: '/', ...signalOpt })
    .andThen((r) => (r.stdout.trim() === 'present' ? okAsync(undefined) : transport.upload(createReadStream(receiverPath), remoteReceiver, { ...signalOpt, mode: 0o600 }).map(() => undefined)))
    .andThen(() => transport.exec(['node', remoteReceiver, 'unpack', posix.join(stagingDir, 'root'), ...flags], { ...signalOpt, stdin: bundle, allowNonZeroExit: true }))
    .mapErr((e) => {
      bundle.destroy();
      return e;
    })
    .andThen((result) => {
      const reply = parseReceiverReply<{ bytesRead: number; entries: number; verified: boolean }>(result);
      if (!reply.ok) {
        const code = reply.error.code;
        const message = code === 'RECEIVE_FAILED' ? `The receiver at ${transport.description} failed: ${reply.error.message}` : `The destination rejected the bundle: ${reply.error.message}`;
        return errAsync(new DeployError(code, message, { isRetryable: reply.error.isRetryable ?? false }));
      }
      if (!reply.report.verified) return errAsync(new DeployError('RECEIVE_FAILED', 'The destination could not verify the bundle against its manifest'));
      // From here the caller's state names the staging directory (and drops it once activation moves it).
      receiving.delete(context);
      return okAsync<StagedBundle, ApMigrateError>({ stagingDir, bytesReceived: reply.report.bytesRead || bytes, entriesVerified: reply.report.entries });
    });
}

/**
 * Build the program's root inside staging with the receiver (`build-root`), which resolves every
 * path inside the root and copies in the destination's own libraries the program needs, found
 * from ELF headers (see `root-builder.ts`). The receiver is already there: `receive` put it.
 */
export function buildRootAtDestination(context: DeployContext, spec: RootBuildSpec): ResultAsync<RootBuildReport, ApMigrateError> {
  const receiver = receiverFor(context);
  if (!receiver) return errAsync(receiverMissing());
  return context.transport
    .exec(['node', receiver.remotePath, 'build-root'], { stdin: Readable.from([JSON.stringify(spec)]), allowNonZeroExit: true, ...(context.signal ? { signal: context.signal } : {}) })
    .andThen((result) => {
      const reply = parseReceiverReply<RootBuildReport>(result);
      if (reply.ok) return okAsync(reply.report);
      return errAsync(new DeployError(reply.error.code === 'UNSAFE_BUNDLE' ? 'UNSAFE_BUNDLE' : 'ACTIVATE_FAILED', `Could not build the program's root at ${context.transport.description}: ${reply.error.message}`));
    });
}

/** The receiver's one JSON line, or a reply saying why there is none. */
function parseReceiverReply<T>(result: ExecResult): { ok: true; report: T } | { ok: false; error: { code: string; message: string; isRetryable?: boolean } } {
  const line = result.stdout.trim().split('\n').pop() ?? '';
  try {
    const reply = JSON.parse(line) as { ok?: unknown; report?: T; error?: { code?: unknown; message?: unknown; isRetryable?: unknown } };
    if (reply.ok === true && reply.report !== undefined) return { ok: true, report: reply.report };
    const code = typeof reply.error?.code === 'string' ? reply.error.code : 'RECEIVE_FAILED';
    const message = typeof reply.error?.message === 'string' ? reply.error.message : 'unknown error';
    return { ok: false, error: { code, message, isRetryable: reply.error?.isRetryable === true } };
  } catch {
    return { ok: false, error: { code: 'RECEIVE_FAILED', message: `the receiver exited with ${result.code}: ${result.stderr.trim().slice(0, 400)}` } };
  }
}

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
 * The launcher: new pid and mount namespaces (plus `extraNamespaces`) whose init is the reaper,
 * which runs `unshare --root --wd --setgid --setuid` into the program's root, then the exec
 * wrapper. Host tools run with {@link HOST_TOOL_ENV}; nothing of the profile is in their
 * environment, only in the arguments after the privilege drop.
 */
export function supervisedLaunchArgv(context: DeployContext, rootDir: string, extraNamespaces: readonly string[] = []): string[] {
  const { uid, gid, cwd } = context.profile;
  const proc = posix.join(rootDir, 'proc');
  return [
    'env', '-i', ...HOST_TOOL_ENV,
    'unshare', '--pid', '--fork', '--kill-child', ...extraNamespaces, `--mount-proc=${proc}`,
    '--', 'sh', '-c', REAPER_SCRIPT, 'apm-init', proc,
    'unshare', `--root=${rootDir}`, `--wd=${cwd}`, '--setgid', String(gid), '--setuid', String(uid), '--', ...programCommand(context),
  ];
}

/**
 * What runs after the privilege drop, inside the root: the exec wrapper sets the program's
 * environment there (never in a host-side tool's, where `LD_PRELOAD` or an option-like name
 * would act as root), then execs the program.
 */
export function programCommand(context: DeployContext): string[] {
  return [WRAPPER_PATH, '-i', ...programEnv(context), ...launchArgv(context)];
}

const START_SCRIPT = `
log="$1"; pidfile="$2"; shift 2
mkdir -p "$(dirname "$log")"
setsid "$@" >"$log" 2>&1 </dev/null &
echo $! >"$pidfile"
echo "$!"
`;

/** Start `argv` detached at the destination, logging to `<runDir>/program.log`. */
export function startDetached(context: DeployContext, activated: ActivatedDeployment, argv: readonly string[]): ResultAsync<{ pid: number; logPath: string }, ApMigrateError> {
  const layout = layoutFor(context.transport, context.name);
  const logPath = posix.join(layout.runDir, 'program.log');
  const pidPath = posix.join(layout.runDir, 'launcher.pid');
  void activated;
  return runScript(context.transport, START_SCRIPT, [logPath, pidPath, ...argv], context.signal ? { signal: context.signal } : {})
    .mapErr((e) => new DeployError('START_FAILED', `Could not start the program at ${context.transport.description}: ${e.message}`, { cause: e }))
    .andThen((r) => {
      const pid = Number(r.stdout.trim().split('\n').pop());
      return Number.isInteger(pid) && pid > 0 ? okAsync({ pid, logPath }) : errAsync(new DeployError('START_FAILED', `The launcher printed no pid: ${r.stdout.slice(0, 200)}`));
    });
}

const HEALTH_SCRIPT = `
pid="$1"; log="$2"; wait_ms="$3"; shift 3
i=0
while [ "$i" -lt "$wait_ms" ]; do
  # A zombie still answers kill -0, so read its state.
  state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  if [ -z "$state" ] || [ "$state" = Z ]; then echo "exited"; tail -c 2000 "$log" 2>/dev/null; exit 1; fi
  ok=1
  for port in "$@"; do
    hex=$(printf '%04X' "$port")
    grep -qiE "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null || ok=0
  done
  [ "$ok" = 1 ] && [ "$i" -ge 300 ] && { echo "healthy"; exit 0; }
  sleep 0.1; i=$((i + 100))
done
echo "timeout"; exit 2
`;

/**
 * Healthy means: the process is still alive 300 ms after start and listens on every TCP port it
 * listened on at the source (read from `/proc/net/tcp*`, as seen from `netnsExec`'s namespace).
 */
export function healthCheckCommon(
  context: DeployContext,
  started: StartedProgram,
  options: { timeoutMs?: number; wrap?: (argv: string[]) => string[] } = {},
): ResultAsync<void, ApMigrateError> {
  const ports = [...new Set(context.profile.sockets.filter((s) => s.listening && s.protocol === 'tcp' && s.localPort).map((s) => String(s.localPort)))];
  const argv = ['sh', '-c', HEALTH_SCRIPT, 'ap-migrate', String(started.pid), started.logPath, String(options.timeoutMs ?? 10_000), ...ports];
  return context.transport
    .exec(options.wrap ? options.wrap(argv) : argv, { allowNonZeroExit: true, ...(context.signal ? { signal: context.signal } : {}) })
    .mapErr((e) => new DeployError('HEALTH_CHECK_FAILED', `Health check failed: ${e.message}`, { cause: e }))
    .andThen((r) => {
      if (r.code === 0) return okAsync(undefined);
      const [verdict, ...rest] = r.stdout.split('\n');
      const what = verdict === 'exited' ? 'the program exited at the destination' : `the program is not listening on port(s) ${ports.join(', ')}`;
      return errAsync(new DeployError('HEALTH_CHECK_FAILED', `Health check failed: ${what}. ${rest.join('\n').trim().slice(0, 600)}`.trim()));
    });
}

const STOP_SCRIPT = `
pidfile="$1"
if [ -n "$pidfile" ] && [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  # Kill the whole session the launcher started (setsid made the pid its session leader).
  pkill -KILL -s "$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
fi
exit 0
`;

const REMOVE_SCRIPT = `
staging="$1"; shift
# --one-file-system: a mount left inside a root (its undo failed) is not descended into.
for dir in "$@"; do
  [ -n "$dir" ] || continue
  rm -rf --one-file-system -- "$dir"
done
# A cut connection orphans the receiver (or the remote shell still starting it): it would
# recreate its staging directory after we removed it, so stop it, then remove the directory
# again. Matched by its "unpack <staging>/root" argument, regex-escaped; this script's own
# command line never holds that text (the path is followed by /root only in the receiver's).
if [ -n "$staging" ]; then
  pat=$(printf '%s' "$staging/root" | sed 's/[][\\.*^$+?(){}|]/\\\\&/g')
  if pkill -KILL -f -- "unpack '?$pat" 2>/dev/null; then
    i=0; while [ "$i" -lt 50 ] && pgrep -f -- "unpack '?$pat" >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
  fi
  rm -rf --one-file-system -- "$staging"
fi
`;

/** Stop the program (its whole session), run `undo` commands, and remove staging and install directories. */
export function rollbackCommon(
  context: DeployContext,
  state: { staged?: StagedBundle; activated?: ActivatedDeployment; started?: StartedProgram },
): ResultAsync<void, ApMigrateError> {
  const layout = layoutFor(context.transport, context.name);
  const staging = stagingDirOf(context, state);
  const dirs = [staging, state.activated ? state.activated.installDir : undefined].filter((d): d is string => !!d);
  const pidfile = posix.join(layout.runDir, 'launcher.pid');
  // Rollback must run even after an abort, so it never takes the caller's signal.
  const undo = (state.activated?.undo ?? []).reduce<ResultAsync<unknown, ApMigrateError>>(
    (acc, argv) => acc.andThen(() => context.transport.exec(argv, { allowNonZeroExit: true })),
    okAsync(undefined),
  );
  // Stop first, undo mounts and namespaces next, remove last (nothing is removed under a mount).
  return runScript(context.transport, STOP_SCRIPT, [state.activated || state.started ? pidfile : ''], { allowNonZeroExit: true, cwd: '/' })
    .andThen(() => undo)
    .andThen(() => runScript(context.transport, REMOVE_SCRIPT, [staging ?? '', ...dirs], { allowNonZeroExit: true, cwd: '/' }))
    .map(() => undefined)
    .mapErr((e) => new DeployError('ROLLBACK_FAILED', `Rollback at ${context.transport.description} failed: ${e.message}; check ${layout.installDir}`, { cause: e }));
}
