/**
 * The in-process SSH transport (the `ssh2` library). Host keys are checked against an OpenSSH
 * known_hosts file before authentication, so a wrong or unknown server never sees a credential
 * or a byte of data. The connection is opened on creation and reopened on demand after a cut,
 * so "retry the call" is all a caller does on a retryable error.
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import ssh2 from 'ssh2';
import type { ClientChannel, ConnectConfig } from 'ssh2';
import type { ApMigrateError } from '../errors.js';
import type { Transport, TransportExecOptions } from '../spec/transport.js';
import { asTransportError, errorMessage, TransportError } from './errors.js';
import {
  checkHostKey,
  entryMatches,
  fingerprintSha256,
  knownHostsName,
  loadKnownHosts,
  pinnedHostKeyMismatch,
  revokedHostKeyError,
  type KnownHostEntry,
} from './known-hosts.js';
import { commandFileMethods } from './remote-files.js';
import { buildRemoteCommand, RemoteRunDirectory, remoteCommandOptions } from './remote-command.js';
import { describeCommand, judgedExec, runProcess, type ProcessExit, type RawExec, type RawResult, type RunningProcess } from './run-process.js';
import { sshConnectionOptionsProblem, type SshConnectionOptions } from './ssh-options.js';
import { streamProcess } from './stream-command.js';
import type { StreamedCommand, StreamOptions } from '../spec/source.js';

/** Options for {@link createSshTransport}. */
export interface SshTransportOptions extends SshConnectionOptions {
  /** A private key (PEM/OpenSSH text). */
  privateKey?: string | Buffer;
  /** Path of a private key file (read when connecting). */
  privateKeyPath?: string;
  /** Passphrase of an encrypted private key. */
  passphrase?: string;
  /** ssh-agent socket; default `$SSH_AUTH_SOCK` when no key is given. */
  agent?: string;
  /** Close the connection after this long without any operation (reopened on demand). */
  idleTimeoutMs?: number;
  /** Cipher preference (default: ssh2's, AES-GCM first). */
  ciphers?: string[];
  /** Open the byte stream to the server yourself (jump host, network namespace relay). */
  connectVia?: () => Promise<Duplex>;
}

type Ssh2Client = InstanceType<typeof ssh2.Client>;

const DEFAULT_CONNECT_TIMEOUT = 20_000;
const RETRYABLE_NET = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']);

/** A connection that has finished its handshake. */
interface Live {
  client: Ssh2Client;
  lost: boolean;
}

/**
 * Decides whether a presented host key is acceptable; remembers why not. With
 * `trustHostKeyFingerprint` only that key is accepted (like a private known_hosts holding just
 * it): any other key is `HOST_KEY_MISMATCH`, even one known_hosts lists. A key marked
 * `@revoked` in known_hosts is refused either way.
 */
function hostKeyPolicy(options: SshTransportOptions, entries: readonly KnownHostEntry[], port: number) {
  let refusal: TransportError | undefined;
  const refuse = (error: TransportError): false => {
    refusal = error;
    return false;
  };
  const verify = (key: Buffer): boolean => {
    const fingerprint = fingerprintSha256(key);
    const verdict = checkHostKey(entries, options.host, port, key);
    const where = knownHostsName(options.host, port);
    const details = { host: options.host, port, fingerprint };
    const pin = options.trustHostKeyFingerprint;
    if (verdict.status === 'revoked') return refuse(revokedHostKeyError(options.host, port, fingerprint, verdict.line));
    if (pin !== undefined) return fingerprint === pin || refuse(pinnedHostKeyMismatch(options.host, port, pin, [fingerprint]));
    if (verdict.status === 'trusted') return true;
    if (verdict.status === 'unknown') {
      return refuse(
        new TransportError(
          'HOST_KEY_UNKNOWN',
          `Host key of ${where} (${fingerprint}) is not in known_hosts; add it there or pass trustHostKeyFingerprint after checking it out of band`,
          { details },
        ),
      );
    }
    return refuse(
      new TransportError(
        'HOST_KEY_MISMATCH',
        `Host key of ${where} CHANGED: server presented ${fingerprint}, known_hosts expects ${verdict.knownFingerprints.join(' or ')} (lines ${verdict.lines.join(', ')}). Someone may be intercepting the connection; refused`,
        { details: { ...details, expected: verdict.knownFingerprints } },
      ),
    );
  };
  return { verify, refusal: () => refusal };
}

function connectError(error: Error & { level?: string; code?: string }, where: string): TransportError {
  if (error.level === 'client-authentication') {
    return new TransportError('AUTH_FAILED', `Authentication to ${where} failed (no offered key or agent identity was accepted)`, { cause: error });
  }
  if (error.level === 'client-timeout') return new TransportError('CONNECT_TIMEOUT', `Timed out connecting to ${where}`, { cause: error });
  const retryable = error.code !== undefined && RETRYABLE_NET.has(error.code);
  return new TransportError('CONNECT_FAILED', `Cannot connect to ${where}: ${error.message}`, { cause: error, isRetryable: retryable });
}

// ssh2's own default preference, written out so known types can be moved to the front.
const HOST_KEY_ALGORITHMS = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];

/**
 * Host key algorithms of the keys known_hosts lists for `name`, so they are negotiated first,
 * like OpenSSH does: a host known by its RSA key is not "changed" because it also has Ed25519.
 */
function hostKeyAlgorithmsFor(entries: readonly KnownHostEntry[], name: string): string[] {
  const types = new Set(entries.filter((e) => e.marker === undefined && entryMatches(e, name)).map((e) => e.keyType));
  return HOST_KEY_ALGORITHMS.filter((a) => types.has(a) || (types.has('ssh-rsa') && a.startsWith('rsa-sha2-')));
}

/** What {@link hostKeyPolicy} returns. */
type HostKeyPolicy = ReturnType<typeof hostKeyPolicy>;

/** The key or agent to authenticate with; `INVALID_INPUT` when there is neither. */
async function credentials(options: SshTransportOptions, where: string): Promise<Pick<ConnectConfig, 'privateKey' | 'passphrase' | 'agent'>> {
  const privateKey = options.privateKey ?? (options.privateKeyPath ? await readFile(options.privateKeyPath) : undefined);
  const agent = options.agent ?? (privateKey === undefined ? process.env.SSH_AUTH_SOCK : undefined);
  if (privateKey === undefined && agent === undefined) {
    throw new TransportError('INVALID_INPUT', `No credentials for ${where}: give privateKey, privateKeyPath or an ssh-agent (SSH_AUTH_SOCK)`);
  }
  return {
    ...(privateKey !== undefined ? { privateKey } : {}),
    ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}),
    ...(agent !== undefined ? { agent } : {}),
  };
}

/** ssh2's settings for one connection: where, how long, which key types first, who we are. */
async function connectConfig(options: SshTransportOptions, entries: readonly KnownHostEntry[], policy: HostKeyPolicy, where: string): Promise<ConnectConfig> {
  const port = options.port ?? 22;
  const auth = await credentials(options, where);
  // Offer the key types known_hosts lists for this host first, like OpenSSH, so a host known
  // by its RSA key is not "changed" just because it also has an Ed25519 one.
  const knownAlgorithms = hostKeyAlgorithmsFor(entries, knownHostsName(options.host, port));
  return {
    host: options.host,
    port,
    username: options.username,
    readyTimeout: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT,
    keepaliveInterval: options.keepaliveIntervalMs ?? 5_000,
    keepaliveCountMax: options.keepaliveCountMax ?? 3,
    hostVerifier: (key: Buffer) => policy.verify(key),
    ...auth,
    ...(options.connectVia ? { sock: (await options.connectVia()) as ConnectConfig['sock'] } : {}),
    algorithms: {
      ...(options.ciphers ? { cipher: options.ciphers as never } : {}),
      ...(knownAlgorithms.length > 0 && options.trustHostKeyFingerprint === undefined
        ? { serverHostKey: [...knownAlgorithms, ...HOST_KEY_ALGORITHMS.filter((a) => !knownAlgorithms.includes(a))] as never }
        : {}),
    },
  };
}

/** Open one authenticated connection, verifying the host key first. */
async function openConnection(options: SshTransportOptions, onLost: (error: TransportError) => void): Promise<Live> {
  const where = `${options.username}@${knownHostsName(options.host, options.port ?? 22)}`;
  const entries = await loadKnownHosts(options.knownHostsPath);
  const policy = hostKeyPolicy(options, entries, options.port ?? 22);
  const config = await connectConfig(options, entries, policy, where);
  return handshake(config, options.signal, where, policy, onLost);
}

/** Mark `live` lost once and tell the transport, which fails the commands it carried. */
function markLost(live: Live, error: TransportError, onLost: (error: TransportError) => void): void {
  if (live.lost) return;
  live.lost = true;
  onLost(error);
}

/**
 * Connect and authenticate. Before "ready", an error or a close rejects (with the host key
 * refusal when that was the reason); after it, either one means the connection was lost.
 */
function handshake(config: ConnectConfig, signal: AbortSignal | undefined, where: string, policy: HostKeyPolicy, onLost: (error: TransportError) => void): Promise<Live> {
  const client = new ssh2.Client();
  return new Promise<Live>((resolve, reject) => {
    let ready = false;
    const live: Live = { client, lost: false };
    const onAbort = () => {
      client.end();
      reject(new TransportError('ABORTED', `Connecting to ${where} aborted`));
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const failBeforeReady = (error: TransportError) => {
      signal?.removeEventListener('abort', onAbort);
      reject(policy.refusal() ?? error);
    };
    client.on('ready', () => {
      ready = true;
      signal?.removeEventListener('abort', onAbort);
      resolve(live);
    });
    client.on('error', (error: Error & { level?: string; code?: string }) => {
      if (!ready) return failBeforeReady(connectError(error, where));
      markLost(live, new TransportError('CONNECTION_LOST', `Connection to ${where} lost: ${error.message}`, { cause: error }), onLost);
    });
    client.on('close', () => {
      if (!ready) return failBeforeReady(new TransportError('CONNECT_FAILED', `Connection to ${where} closed during the handshake`, { isRetryable: true }));
      markLost(live, new TransportError('CONNECTION_LOST', `Connection to ${where} closed`), onLost);
    });
    client.connect(config);
  });
}

function openChannel(client: Ssh2Client, command: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      client.exec(command, (error, channel) => (error ? reject(error) : resolve(channel)));
    } catch (error) {
      reject(error);
    }
  });
}

/** Run a housekeeping command (kill a remote process) and wait at most 15 s for it; output is discarded. */
async function runHousekeeping(client: Ssh2Client, command: string): Promise<void> {
  const channel = await openChannel(client, command);
  channel.resume();
  channel.stderr.resume();
  await new Promise<void>((resolve) => {
    channel.once('close', () => resolve());
    setTimeout(resolve, 15_000).unref();
  });
}

/** Everything one ssh2 transport holds; its methods are the module functions below. */
interface Ssh2State {
  readonly options: SshTransportOptions;
  readonly root: string;
  readonly description: string;
  readonly runDir: RemoteRunDirectory;
  /** PID files of the commands running now: close kills them remotely. */
  readonly runningPidFiles: Set<string>;
  /** Open channels, each with how to fail its command when the connection is lost. */
  readonly inFlightChannels: Map<ClientChannel, (error: TransportError) => void>;
  /** The connection, open or opening; replaced when lost or idle. */
  current: Promise<Live> | undefined;
  closed: boolean;
  idleTimer: NodeJS.Timeout | undefined;
  /** Operations under way; the idle timer runs only at 0. */
  active: number;
}

function newSsh2State(options: SshTransportOptions): Ssh2State {
  const root = options.root ?? '.';
  return {
    options,
    root,
    description: `ssh://${options.username}@${knownHostsName(options.host, options.port ?? 22)}${root === '.' ? '' : root}`,
    runDir: new RemoteRunDirectory(),
    runningPidFiles: new Set(),
    inFlightChannels: new Map(),
    current: undefined,
    closed: false,
    idleTimer: undefined,
    active: 0,
  };
}

/** The live connection, reopened when the last one was lost ("retry the call" is all a caller does). */
async function connection(state: Ssh2State): Promise<Live> {
  if (state.closed) throw new TransportError('TRANSPORT_CLOSED', `${state.description} was closed`);
  if (state.current) {
    const live = await state.current.catch(() => undefined);
    if (live && !live.lost) return live;
  }
  // The creation signal aborts the first connect only, never a later reconnect.
  state.current = openConnection({ ...state.options, signal: undefined as never }, (error) => failInFlight(state, error));
  return state.current;
}

function failInFlight(state: Ssh2State, error: TransportError): void {
  for (const fail of state.inFlightChannels.values()) fail(error);
}

/** Count operations; when none is left, end the connection after `idleTimeoutMs`. */
function touch(state: Ssh2State, delta: number): void {
  state.active += delta;
  if (state.idleTimer) clearTimeout(state.idleTimer);
  if (state.active === 0 && state.options.idleTimeoutMs !== undefined && !state.closed) {
    state.idleTimer = setTimeout(() => {
      void state.current?.then((live) => live.client.end()).catch(() => undefined);
      state.current = undefined;
    }, state.options.idleTimeoutMs);
    state.idleTimer.unref();
  }
}

async function killRemote(state: Ssh2State, pidFile: string): Promise<void> {
  const live = state.current ? await state.current.catch(() => undefined) : undefined;
  if (!live || live.lost) return;
  try {
    await runHousekeeping(live.client, state.runDir.killCommand(pidFile));
  } catch {
    /* the connection is going away: sshd ends the session's commands' input anyway */
  }
}

async function startChannel(live: Live, command: string, shown: string): Promise<ClientChannel> {
  try {
    return await openChannel(live.client, command);
  } catch (cause) {
    if (live.lost) throw new TransportError('CONNECTION_LOST', `Connection lost before running ${shown}`, { cause });
    throw new TransportError('EXEC_FAILED', `Cannot start ${shown}: ${errorMessage(cause)}`, { cause });
  }
}

/** The command on `channel` as a {@link RunningProcess}: it ends with an exit status, or fails when the connection does. */
function channelProcess(state: Ssh2State, channel: ClientChannel, pidFile: string, shown: string): RunningProcess {
  const exited = new Promise<ProcessExit>((resolve, reject) => {
    let exit: ProcessExit | undefined;
    state.inFlightChannels.set(channel, reject);
    channel.on('exit', (code: number | null, signal?: string) => {
      exit = { code: typeof code === 'number' ? code : null, signal: signal ?? null };
    });
    channel.on('close', () => {
      state.inFlightChannels.delete(channel);
      if (exit) resolve(exit);
      else reject(new TransportError('CONNECTION_LOST', `${shown}: the channel closed without an exit status (connection cut or server stopped)`));
    });
  });
  const kill = async (): Promise<void> => {
    try {
      channel.signal('KILL');
    } catch {
      /* channel already gone */
    }
    await killRemote(state, pidFile);
    channel.destroy();
  };
  return { stdin: channel, stdout: channel, stderr: channel.stderr, exited, kill };
}

async function execRaw(state: Ssh2State, argv: readonly string[], opts: TransportExecOptions): Promise<RawResult> {
  const shown = describeCommand(state.description, argv);
  if (opts.signal?.aborted) throw new TransportError('ABORTED', `Aborted before running ${shown}`);
  const pidFile = state.runDir.pidFile();
  const command = buildRemoteCommand(argv, remoteCommandOptions(state.root, opts, pidFile));
  if (command.isErr()) throw command.error;
  touch(state, +1);
  try {
    const channel = await startChannel(await connection(state), command.value, shown);
    state.runningPidFiles.add(pidFile);
    try {
      return await runProcess(channelProcess(state, channel, pidFile, shown), { ...opts, describe: shown });
    } finally {
      state.runningPidFiles.delete(pidFile);
    }
  } finally {
    touch(state, -1);
  }
}

/** Start a command whose stdout the caller reads as a stream: the same command line and PID file as {@link execRaw}. */
async function streamRaw(state: Ssh2State, argv: readonly string[], opts: StreamOptions): Promise<StreamedCommand> {
  const shown = describeCommand(state.description, argv);
  if (opts.signal?.aborted) throw new TransportError('ABORTED', `Aborted before running ${shown}`);
  const pidFile = state.runDir.pidFile();
  const command = buildRemoteCommand(argv, remoteCommandOptions(state.root, {}, pidFile));
  if (command.isErr()) throw command.error;
  touch(state, +1);
  let channel: ClientChannel;
  try {
    channel = await startChannel(await connection(state), command.value, shown);
  } catch (error) {
    touch(state, -1);
    throw error;
  }
  state.runningPidFiles.add(pidFile);
  return streamProcess(channelProcess(state, channel, pidFile, shown), opts, {
    describe: shown,
    argv,
    onEnd: () => {
      state.runningPidFiles.delete(pidFile);
      touch(state, -1);
    },
  });
}

/** Kill the commands still running (by PID, remotely), then end the connection (at most 2 s). */
async function shutDown(state: Ssh2State): Promise<void> {
  const live = state.current ? await state.current.catch(() => undefined) : undefined;
  if (!live || live.lost) return;
  if (state.runningPidFiles.size > 0) {
    try {
      await runHousekeeping(live.client, state.runDir.killAllCommand(state.runningPidFiles));
    } catch {
      /* best effort */
    }
  }
  for (const channel of state.inFlightChannels.keys()) channel.destroy();
  await new Promise<void>((resolve) => {
    live.client.once('close', () => resolve());
    live.client.end();
    setTimeout(resolve, 2_000).unref();
  });
}

function closeSsh2(state: Ssh2State): ResultAsync<void, ApMigrateError> {
  if (state.closed) return okAsync(undefined);
  state.closed = true;
  if (state.idleTimer) clearTimeout(state.idleTimer);
  return ResultAsync.fromSafePromise(shutDown(state));
}

/**
 * Connect to an SSH server and return a {@link Transport} for it. Fails with
 * `HOST_KEY_UNKNOWN` / `HOST_KEY_MISMATCH` before authenticating when the server is not the
 * one known_hosts (or `trustHostKeyFingerprint`) names.
 */
export function createSshTransport(options: SshTransportOptions): ResultAsync<Transport, ApMigrateError> {
  const problem = sshConnectionOptionsProblem(options);
  if (problem) return errAsync(problem);
  const state = newSsh2State(options);
  const raw: RawExec = (argv, opts) => execRaw(state, argv, opts);
  const transport: Transport = {
    kind: 'ssh2',
    root: state.root,
    description: state.description,
    exec: (argv, opts = {}) => judgedExec(raw, describeCommand(state.description, argv), argv, opts),
    ...commandFileMethods(state.root, raw),
    stream: (argv, opts = {}) => ResultAsync.fromPromise(streamRaw(state, argv, opts), (e) => asTransportError(e)),
    close: () => closeSsh2(state),
  };
  // Connect now: host key and auth problems belong to creation, not to the first command.
  if (options.signal?.aborted) return errAsync(new TransportError('ABORTED', `Connecting to ${state.description} aborted`));
  state.current = openConnection(options, (error) => failInFlight(state, error));
  return ResultAsync.fromPromise(state.current, (e) => asTransportError(e, 'CONNECT_FAILED')).map(() => transport);
}
