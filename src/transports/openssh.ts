/**
 * The OpenSSH transport: drives the system `ssh` client. Always BatchMode (never prompts) and
 * StrictHostKeyChecking=yes against the given known_hosts; one ControlMaster connection per
 * transport is reused by every command, so each exec costs a local socket hop, not a handshake.
 *
 * @module
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { Transport, TransportErrorCode, TransportExecOptions } from '../spec/transport.js';
import { asTransportError, TransportError } from './errors.js';
import { checkHostKey, fingerprintSha256, knownHostsName, loadKnownHosts, pinnedHostKeyMismatch, revokedHostKeyError } from './known-hosts.js';
import { openSshArgv, openSshCommandArgv, openSshFlags, sshOptionValue } from './openssh-args.js';
import { commandFileMethods } from './remote-files.js';
import { RemoteRunDirectory, remoteCommandOptions } from './remote-command.js';
import { describeCommand, judgedExec, runProcess, type ProcessExit, type RawResult, type RunningProcess } from './run-process.js';
import { sshConnectionOptionsProblem, type SshConnectionOptions } from './ssh-options.js';
import { streamProcess } from './stream-command.js';
import type { StreamedCommand, StreamOptions } from '../spec/source.js';

/**
 * Options for {@link createOpenSshTransport}. `trustHostKeyFingerprint` works by fetching the
 * server's keys with `ssh-keyscan` and writing only the matching one to a private known_hosts.
 */
export interface OpenSshTransportOptions extends SshConnectionOptions {
  /** Private key file (`-i`, with IdentitiesOnly); default: ssh's own choice and the agent. */
  identityFile?: string;
  /** How long the shared connection outlives its last use (default 60 s). */
  controlPersistSeconds?: number;
  /** Cipher preference (`-c`); default ssh's. */
  ciphers?: string[];
  /** A ProxyCommand (jump host, namespace relay); `%h` and `%p` are expanded by ssh. */
  proxyCommand?: string;
  /** The ssh binary (default `ssh` on PATH). */
  sshPath?: string;
}

/** ssh's own messages on exit 255, mapped to our codes (order matters: most specific first). */
const SSH_FAILURES: ReadonlyArray<[RegExp, TransportErrorCode]> = [
  [/REVOKED HOST KEY/i, 'HOST_KEY_REVOKED'],
  [/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed/i, 'HOST_KEY_MISMATCH'],
  [/host key is known for|Host key verification failed/i, 'HOST_KEY_UNKNOWN'],
  [/Permission denied \(/i, 'AUTH_FAILED'],
  [/Connection timed out|Operation timed out|timed out during banner/i, 'CONNECT_TIMEOUT'],
  [/Connection refused|No route to host|Could not resolve|Network is unreachable/i, 'CONNECT_FAILED'],
  [/Timeout, server .* not responding|Connection reset|Broken pipe|closed by remote host|Connection closed by|client_loop|mux_client|Control socket connect/i, 'CONNECTION_LOST'],
];

/** A typed error for an ssh client failure, or undefined when exit 255 came from the command. */
function sshFailure(stderr: string, where: string): TransportError | undefined {
  for (const [pattern, code] of SSH_FAILURES) {
    if (pattern.test(stderr)) {
      const retryable = code === 'CONNECTION_LOST' || code === 'CONNECT_TIMEOUT' || code === 'CONNECT_FAILED';
      return new TransportError(code, `ssh to ${where}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`, { isRetryable: retryable, details: { stderr: stderr.slice(0, 4096) } });
    }
  }
  return undefined;
}

/** Run a short ssh or ssh-keyscan invocation to its end; a failure to start counts as exit 255. */
function run(argv: readonly string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  const [file = '', ...args] = argv;
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : 255) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** The server's keys as `[type, base64]`, fetched with ssh-keyscan (no proxy, no known_hosts). */
async function scanHostKeys(options: OpenSshTransportOptions, port: number): Promise<{ keys: Array<[string, string]>; stderr: string }> {
  const timeout = Math.ceil((options.connectTimeoutMs ?? 20_000) / 1000);
  const scan = await run(['ssh-keyscan', '-p', String(port), '-T', String(timeout), '--', options.host], (timeout + 5) * 1000);
  const lines = scan.stdout.split('\n').filter((l) => l && !l.startsWith('#'));
  const fields = lines.map((l) => l.trim().split(/\s+/)).filter((f): f is [string, string, string] => f.length >= 3);
  return { keys: fields.map(([, type, key]) => [type, key]), stderr: scan.stderr };
}

/**
 * Fetch the server's keys and keep only the one with the trusted fingerprint: ssh then accepts
 * that key and no other (known_hosts is not consulted, except that a key it marks `@revoked`
 * is refused, as the ssh2 transport does).
 */
async function trustedKnownHosts(options: OpenSshTransportOptions, port: number, dir: string): Promise<{ path: string; keyType: string }> {
  const where = knownHostsName(options.host, port);
  const pin = options.trustHostKeyFingerprint ?? '';
  const revoked = (await loadKnownHosts(options.knownHostsPath)).filter((e) => e.marker === 'revoked');
  const { keys, stderr } = await scanHostKeys(options, port);
  const fingerprints = keys.map(([, key]) => fingerprintSha256(Buffer.from(key, 'base64')));
  const match = keys[fingerprints.indexOf(pin)];
  if (!match) {
    if (keys.length === 0) throw new TransportError('CONNECT_FAILED', `Cannot fetch host keys of ${where}: ${stderr.trim()}`, { isRetryable: true });
    throw pinnedHostKeyMismatch(options.host, port, pin, fingerprints);
  }
  const verdict = checkHostKey(revoked, options.host, port, Buffer.from(match[1], 'base64'));
  if (verdict.status === 'revoked') throw revokedHostKeyError(options.host, port, pin, verdict.line);
  const path = join(dir, 'trusted_known_hosts');
  await writeFile(path, `${where} ${match[0]} ${match[1]}\n`, { mode: 0o600 });
  return { path, keyType: match[0] };
}

/** Everything one OpenSSH transport holds; its methods are the module functions below. */
interface OpenSshState {
  readonly options: OpenSshTransportOptions;
  readonly port: number;
  readonly root: string;
  /** `user@host` (or `user@[host]:port`), for messages. */
  readonly where: string;
  readonly description: string;
  /** The ssh program. */
  readonly ssh: string;
  readonly runDir: RemoteRunDirectory;
  /** Commands that record a remote PID, by PID file: abort and close kill them there. */
  readonly running: Map<string, RunningProcess>;
  /** ssh's flags before `--`; empty until set-up has settled the host key. */
  flags: string[];
  /** Private directory of the ControlMaster socket (and a pinned key's known_hosts); '' until made. */
  controlDir: string;
  closed: boolean;
}

/** The first problem with the options, or undefined. */
function openSshOptionsProblem(options: OpenSshTransportOptions): ApMigrateError | undefined {
  const problem = sshConnectionOptionsProblem(options);
  if (problem) return problem;
  if (options.host.startsWith('-') || options.username.startsWith('-')) return new TransportError('INVALID_INPUT', 'host and username must not start with "-"');
  if (options.trustHostKeyFingerprint !== undefined && options.proxyCommand !== undefined) {
    return new TransportError('INVALID_INPUT', 'trustHostKeyFingerprint cannot be combined with proxyCommand (ssh-keyscan cannot use a proxy)');
  }
  return undefined;
}

function newOpenSshState(options: OpenSshTransportOptions): OpenSshState {
  const port = options.port ?? 22;
  const root = options.root ?? '.';
  const where = `${options.username}@${knownHostsName(options.host, port)}`;
  return {
    options,
    port,
    root,
    where,
    description: `ssh://${where}${root === '.' ? '' : root}`,
    ssh: options.sshPath ?? 'ssh',
    runDir: new RemoteRunDirectory(),
    running: new Map(),
    flags: [],
    controlDir: '',
    closed: false,
  };
}

/**
 * ssh's flags for every command of this transport. Host keys: always strict, and with a
 * known_hosts file (given, or the pinned key's) only that file: the transport trusts what it
 * was told to, never what a user's ssh_config or the system file add.
 */
function clientFlags(state: OpenSshState, pinned: { path: string; keyType: string } | undefined): string[] {
  const { options } = state;
  const knownHostsFile = pinned?.path ?? options.knownHostsPath;
  // A pinned RSA key may be offered under any of its signature algorithms.
  const hostKeyAlgorithms = pinned && (pinned.keyType === 'ssh-rsa' ? 'rsa-sha2-512,rsa-sha2-256,ssh-rsa' : pinned.keyType);
  const sshOptions: Array<readonly [string, string]> = [
    ...(hostKeyAlgorithms ? [['HostKeyAlgorithms', hostKeyAlgorithms] as const] : []),
    ['ControlMaster', 'auto'],
    ['ControlPath', sshOptionValue(join(state.controlDir, 'cm'))],
    ['ControlPersist', String(options.controlPersistSeconds ?? 60)],
    ['ConnectTimeout', String(Math.ceil((options.connectTimeoutMs ?? 20_000) / 1000))],
    ['ServerAliveInterval', String(Math.max(1, Math.round((options.keepaliveIntervalMs ?? 5_000) / 1000)))],
    ['ServerAliveCountMax', String(options.keepaliveCountMax ?? 3)],
    ['LogLevel', 'ERROR'],
    // Never let a user's config forward agents, X11 or ports over our connection.
    ['ForwardAgent', 'no'],
    ['ForwardX11', 'no'],
    ['ClearAllForwardings', 'yes'],
    ...(options.proxyCommand !== undefined ? [['ProxyCommand', options.proxyCommand] as const] : []),
  ];
  return openSshFlags({
    port: state.port,
    ...(options.identityFile !== undefined ? { identityFile: options.identityFile } : {}),
    ...(knownHostsFile !== undefined ? { knownHostsFile } : {}),
    strictHostKeyChecking: true,
    onlyThisKnownHostsFile: true,
    options: sshOptions,
    extra: [...(options.ciphers ? ['-c', options.ciphers.join(',')] : []), '-l', options.username, '-T', '-e', 'none'],
  });
}

/** Make the control directory, settle the host key, build the flags and open the shared connection. */
async function setUp(state: OpenSshState): Promise<void> {
  state.controlDir = await mkdtemp(join(tmpdir(), 'apm-ssh-'));
  const pinned = state.options.trustHostKeyFingerprint !== undefined ? await trustedKnownHosts(state.options, state.port, state.controlDir) : undefined;
  state.flags = clientFlags(state, pinned);
  // Open the master now, without a session (-N): host key and authentication failures
  // surface at creation, and no remote command runs for it.
  await startMaster(state);
}

async function startMaster(state: OpenSshState): Promise<void> {
  const { options, where } = state;
  if (options.signal?.aborted) throw new TransportError('ABORTED', `Connecting to ${where} aborted`);
  const connectMs = options.connectTimeoutMs ?? 20_000;
  const master = run(openSshArgv(state.ssh, [...state.flags, '-o', 'ControlMaster=yes', '-f', '-N'], options.host), connectMs + 10_000);
  const aborted = new Promise<never>((_, reject) =>
    options.signal?.addEventListener('abort', () => reject(new TransportError('ABORTED', `Connecting to ${where} aborted`)), { once: true }),
  );
  const result = await Promise.race([master, aborted]);
  if (result.code !== 0) {
    throw sshFailure(result.stderr, where) ?? new TransportError('CONNECT_FAILED', `ssh to ${where} failed: ${result.stderr.trim() || `exit ${result.code}`}`);
  }
}

/** Ask the ControlMaster something (`-O check`, `-O exit`). */
function controlMaster(state: OpenSshState, command: 'check' | 'exit'): ReturnType<typeof run> {
  return run(openSshArgv(state.ssh, [...state.flags, '-O', command], state.options.host), 10_000);
}

/** Close the shared connection and remove its directory (each only if it was made). */
async function stopMaster(state: OpenSshState): Promise<void> {
  if (state.flags.length > 0) await controlMaster(state, 'exit');
  if (state.controlDir) await rm(state.controlDir, { recursive: true, force: true });
}

/** Start one ssh client process; its stderr is kept (64 KiB) to tell ssh's failures from the command's. */
function spawnSsh(state: OpenSshState, argv: readonly string[]): RunningProcess & { stderrText: () => string } {
  const child = spawn(state.ssh, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderrText = '';
  child.stderr.on('data', (d: Buffer) => {
    if (stderrText.length < 65536) stderrText += d.toString('utf8');
  });
  const exited = new Promise<ProcessExit>((resolve, reject) => {
    child.once('error', (cause) => reject(new TransportError('EXEC_FAILED', `Cannot run ${state.ssh}: ${cause.message}`, { cause })));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  const kill = async (): Promise<void> => {
    child.kill('SIGTERM');
    // The ControlMaster holds our pipe ends (ssh passes them over the control socket), so
    // "close" would wait for the remote command; destroying our ends settles it now.
    child.stdin.destroy();
    child.stdout.destroy();
    child.stderr.destroy();
    await exited.catch(() => undefined);
  };
  return { stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, exited, stderrText: () => stderrText, kill };
}

/** `process`, killed remotely first when it records a PID. */
function killableRemotely(state: OpenSshState, process: RunningProcess, pidFile: string | undefined): RunningProcess {
  const kill = async (): Promise<void> => {
    // Remote first: closing the channel first would hand the command an EOF, and an
    // upload script would then publish its partial file.
    if (pidFile !== undefined) await run(openSshArgv(state.ssh, state.flags, state.options.host, state.runDir.killCommand(pidFile)), 10_000);
    await process.kill();
  };
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, exited: process.exited, kill };
}

/** Exit 255 is ssh's own failure or the command's: throw the typed error when it was ssh's. */
async function explainExit255(state: OpenSshState, stderr: string, shown: string): Promise<void> {
  const failure = sshFailure(stderr, state.where);
  if (failure) throw failure;
  // ssh says nothing at LogLevel=ERROR when the server goes away; a live master means
  // the 255 came from the command itself.
  const check = await controlMaster(state, 'check');
  if (check.code !== 0) throw new TransportError('CONNECTION_LOST', `Connection to ${state.where} lost while running ${shown}`, { details: { stderr: stderr.slice(0, 4096) } });
}

/** Run a command; with `track`, its PID is recorded so abort and close can kill it remotely. */
async function execRaw(state: OpenSshState, argv: readonly string[], opts: TransportExecOptions, track = true): Promise<RawResult> {
  if (state.closed) throw new TransportError('TRANSPORT_CLOSED', `${state.description} was closed`);
  const shown = describeCommand(state.description, argv);
  if (opts.signal?.aborted) throw new TransportError('ABORTED', `Aborted before running ${shown}`);
  const pidFile = track ? state.runDir.pidFile() : undefined;
  const sshArgv = openSshCommandArgv(state.ssh, state.flags, state.options.host, argv, remoteCommandOptions(state.root, opts, pidFile));
  if (sshArgv.isErr()) throw sshArgv.error;
  const child = spawnSsh(state, sshArgv.value);
  const process = killableRemotely(state, child, pidFile);
  if (pidFile !== undefined) state.running.set(pidFile, process);
  try {
    const raw = await runProcess(process, { ...opts, describe: shown });
    if (raw.code === 255) await explainExit255(state, child.stderrText(), shown);
    return raw;
  } finally {
    if (pidFile !== undefined) state.running.delete(pidFile);
  }
}

/**
 * Start a command whose stdout the caller reads as a stream: the same command line, host-key
 * rules and PID file as {@link execRaw}, so abort and close kill it remotely.
 */
async function streamRaw(state: OpenSshState, argv: readonly string[], opts: StreamOptions): Promise<StreamedCommand> {
  if (state.closed) throw new TransportError('TRANSPORT_CLOSED', `${state.description} was closed`);
  const shown = describeCommand(state.description, argv);
  if (opts.signal?.aborted) throw new TransportError('ABORTED', `Aborted before running ${shown}`);
  const pidFile = state.runDir.pidFile();
  const sshArgv = openSshCommandArgv(state.ssh, state.flags, state.options.host, argv, remoteCommandOptions(state.root, {}, pidFile));
  if (sshArgv.isErr()) throw sshArgv.error;
  const child = spawnSsh(state, sshArgv.value);
  const process = killableRemotely(state, child, pidFile);
  state.running.set(pidFile, process);
  return streamProcess(process, opts, {
    describe: shown,
    argv,
    // ssh's own failures (exit 255) say so on stderr, as for exec.
    explain: async (exit) => (exit.code === 255 ? explainExit255(state, child.stderrText(), shown) : undefined),
    onEnd: () => state.running.delete(pidFile),
  });
}

/** Kill what still runs, then stop the shared connection. A second close does nothing. */
function closeOpenSsh(state: OpenSshState): ResultAsync<void, ApMigrateError> {
  if (state.closed) return okAsync(undefined);
  const work = async (): Promise<void> => {
    for (const process of [...state.running.values()]) await process.kill().catch(() => undefined);
    state.closed = true;
    await stopMaster(state);
  };
  return ResultAsync.fromSafePromise(work());
}

/**
 * Return a {@link Transport} that drives the system `ssh` client, after opening the shared
 * connection (host key and authentication are checked here, before any data is sent).
 */
export function createOpenSshTransport(options: OpenSshTransportOptions): ResultAsync<Transport, ApMigrateError> {
  const problem = openSshOptionsProblem(options);
  if (problem) return errAsync(problem);
  const state = newOpenSshState(options);
  // Reads record no PID: a read killed by the connection's end leaves nothing half-done.
  const files = commandFileMethods(state.root, (a, o) => execRaw(state, a, o), (a, o) => execRaw(state, a, o, false));
  const transport: Transport = {
    kind: 'openssh',
    root: state.root,
    description: state.description,
    exec: (argv, opts = {}) => judgedExec((a, o) => execRaw(state, a, o), describeCommand(state.description, argv), argv, opts),
    upload: files.upload,
    readFile: files.readFile,
    stream: (argv, opts = {}) => ResultAsync.fromPromise(streamRaw(state, argv, opts), (e) => asTransportError(e)),
    close: () => closeOpenSsh(state),
  };
  const connected = setUp(state).catch(async (e: unknown) => {
    await stopMaster(state);
    throw e;
  });
  return ResultAsync.fromPromise(connected, (e) => asTransportError(e, 'CONNECT_FAILED')).map(() => transport);
}
