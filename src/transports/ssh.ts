/**
 * The in-process SSH transport (the `ssh2` library). Host keys are checked against an OpenSSH
 * known_hosts file before authentication, so a wrong or unknown server never sees a credential
 * or a byte of data. The connection is opened on creation and reopened on demand after a cut,
 * so "retry the call" is all a caller does on a retryable error.
 *
 * @module
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Duplex, Readable } from 'node:stream';
import { errAsync, ResultAsync } from 'neverthrow';
import ssh2 from 'ssh2';
import type { ClientChannel, ConnectConfig } from 'ssh2';
import type { ApMigrateError } from '../errors.js';
import type { ExecResult } from '../spec/executor.js';
import type { ReadFileOptions, Transport, TransportExecOptions, UploadOptions, UploadResult } from '../spec/transport.js';
import { asTransportError, TransportError } from './errors.js';
import { checkHostKey, entryMatches, fingerprintSha256, knownHostsName, parseKnownHosts, type KnownHostEntry } from './known-hosts.js';
import { readFileViaExec, uploadViaExec } from './remote-files.js';
import { buildRemoteCommand, RemoteRunDirectory, resolveRemotePath } from './remote-command.js';
import { judgeExit, runProcess, type ProcessExit, type RawResult, type RunningProcess } from './run-process.js';
import { sshConnectionOptionsProblem, type SshConnectionOptions } from './ssh-options.js';

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
  const verify = (key: Buffer): boolean => {
    const fingerprint = fingerprintSha256(key);
    const verdict = checkHostKey(entries, options.host, port, key);
    const where = knownHostsName(options.host, port);
    const details = { host: options.host, port, fingerprint };
    const pin = options.trustHostKeyFingerprint;
    if (verdict.status === 'revoked') {
      refusal = new TransportError('HOST_KEY_REVOKED', `Host key of ${where} (${fingerprint}) is marked @revoked in known_hosts (line ${verdict.line})`, { details });
      return false;
    }
    if (pin !== undefined) {
      if (fingerprint === pin) return true;
      refusal = new TransportError(
        'HOST_KEY_MISMATCH',
        `Host key of ${where} is not the pinned one: trustHostKeyFingerprint expects ${pin}, server presented ${fingerprint}. Someone may be intercepting the connection, or the pin is out of date; refused`,
        { details: { ...details, expected: [pin] } },
      );
      return false;
    }
    if (verdict.status === 'trusted') return true;
    if (verdict.status === 'unknown') {
      refusal = new TransportError(
        'HOST_KEY_UNKNOWN',
        `Host key of ${where} (${fingerprint}) is not in known_hosts; add it there or pass trustHostKeyFingerprint after checking it out of band`,
        { details },
      );
    } else {
      refusal = new TransportError(
        'HOST_KEY_MISMATCH',
        `Host key of ${where} CHANGED: server presented ${fingerprint}, known_hosts expects ${verdict.knownFingerprints.join(' or ')} (lines ${verdict.lines.join(', ')}). Someone may be intercepting the connection; refused`,
        { details: { ...details, expected: verdict.knownFingerprints } },
      );
    }
    return false;
  };
  return { verify, refusal: () => refusal };
}

async function loadKnownHosts(path: string, required: boolean): Promise<KnownHostEntry[]> {
  try {
    return parseKnownHosts(await readFile(path, 'utf8'));
  } catch (cause) {
    if (!required && (cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TransportError('KNOWN_HOSTS_UNREADABLE', `Cannot read known_hosts file ${path}: ${(cause as Error).message}`, { cause });
  }
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

/** Open one authenticated connection, verifying the host key first. */
async function openConnection(options: SshTransportOptions, onLost: (live: Live, error: TransportError) => void): Promise<Live> {
  const port = options.port ?? 22;
  const where = `${options.username}@${knownHostsName(options.host, port)}`;
  const knownHostsPath = options.knownHostsPath ?? join(homedir(), '.ssh', 'known_hosts');
  const entries = await loadKnownHosts(knownHostsPath, options.knownHostsPath !== undefined);
  const policy = hostKeyPolicy(options, entries, port);
  const privateKey = options.privateKey ?? (options.privateKeyPath ? await readFile(options.privateKeyPath) : undefined);
  const agent = options.agent ?? (privateKey === undefined ? process.env.SSH_AUTH_SOCK : undefined);
  if (privateKey === undefined && agent === undefined) {
    throw new TransportError('INVALID_INPUT', `No credentials for ${where}: give privateKey, privateKeyPath or an ssh-agent (SSH_AUTH_SOCK)`);
  }
  // Offer the key types known_hosts lists for this host first, like OpenSSH, so a host known
  // by its RSA key is not "changed" just because it also has an Ed25519 one.
  const knownAlgorithms = hostKeyAlgorithmsFor(entries, knownHostsName(options.host, port));
  const config: ConnectConfig = {
    host: options.host,
    port,
    username: options.username,
    readyTimeout: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT,
    keepaliveInterval: options.keepaliveIntervalMs ?? 5_000,
    keepaliveCountMax: options.keepaliveCountMax ?? 3,
    hostVerifier: (key: Buffer) => policy.verify(key),
    ...(privateKey !== undefined ? { privateKey } : {}),
    ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}),
    ...(agent !== undefined ? { agent } : {}),
    ...(options.connectVia ? { sock: (await options.connectVia()) as ConnectConfig['sock'] } : {}),
    algorithms: {
      ...(options.ciphers ? { cipher: options.ciphers as never } : {}),
      ...(knownAlgorithms.length > 0 && options.trustHostKeyFingerprint === undefined
        ? { serverHostKey: [...knownAlgorithms, ...HOST_KEY_ALGORITHMS.filter((a) => !knownAlgorithms.includes(a))] as never }
        : {}),
    },
  };
  const client = new ssh2.Client();
  return new Promise<Live>((resolve, reject) => {
    let ready = false;
    const live: Live = { client, lost: false };
    const onAbort = () => {
      client.end();
      reject(new TransportError('ABORTED', `Connecting to ${where} aborted`));
    };
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    client.on('ready', () => {
      ready = true;
      options.signal?.removeEventListener('abort', onAbort);
      resolve(live);
    });
    client.on('error', (error: Error & { level?: string; code?: string }) => {
      if (!ready) {
        options.signal?.removeEventListener('abort', onAbort);
        reject(policy.refusal() ?? connectError(error, where));
        return;
      }
      if (!live.lost) {
        live.lost = true;
        onLost(live, new TransportError('CONNECTION_LOST', `Connection to ${where} lost: ${error.message}`, { cause: error }));
      }
    });
    client.on('close', () => {
      if (!ready) {
        options.signal?.removeEventListener('abort', onAbort);
        reject(policy.refusal() ?? new TransportError('CONNECT_FAILED', `Connection to ${where} closed during the handshake`, { isRetryable: true }));
        return;
      }
      if (!live.lost) {
        live.lost = true;
        onLost(live, new TransportError('CONNECTION_LOST', `Connection to ${where} closed`));
      }
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

/**
 * Connect to an SSH server and return a {@link Transport} for it. Fails with
 * `HOST_KEY_UNKNOWN` / `HOST_KEY_MISMATCH` before authenticating when the server is not the
 * one known_hosts (or `trustHostKeyFingerprint`) names.
 */
export function createSshTransport(options: SshTransportOptions): ResultAsync<Transport, ApMigrateError> {
  const problem = sshConnectionOptionsProblem(options);
  if (problem) return errAsync(problem);
  const port = options.port ?? 22;
  const root = options.root ?? '.';
  const description = `ssh://${options.username}@${knownHostsName(options.host, port)}${root === '.' ? '' : root}`;
  const runDir = new RemoteRunDirectory();
  const runningPidFiles = new Set<string>();
  const inFlightChannels = new Map<ClientChannel, (error: TransportError) => void>();
  let current: Promise<Live> | undefined;
  let closed = false;
  let idleTimer: NodeJS.Timeout | undefined;
  let active = 0;

  const onLost = (live: Live, error: TransportError): void => {
    void live;
    for (const fail of inFlightChannels.values()) fail(error);
  };

  const connection = async (): Promise<Live> => {
    if (closed) throw new TransportError('TRANSPORT_CLOSED', `${description} was closed`);
    if (current) {
      const live = await current.catch(() => undefined);
      if (live && !live.lost) return live;
    }
    current = openConnection({ ...options, signal: undefined as never }, onLost);
    return current;
  };

  const touch = (delta: number): void => {
    active += delta;
    if (idleTimer) clearTimeout(idleTimer);
    if (active === 0 && options.idleTimeoutMs !== undefined && !closed) {
      idleTimer = setTimeout(() => {
        void current?.then((live) => live.client.end()).catch(() => undefined);
        current = undefined;
      }, options.idleTimeoutMs);
      idleTimer.unref();
    }
  };

  const killRemote = async (pidFile: string): Promise<void> => {
    const live = current ? await current.catch(() => undefined) : undefined;
    if (!live || live.lost) return;
    try {
      await runHousekeeping(live.client, runDir.killCommand(pidFile));
    } catch {
      /* the connection is going away: sshd ends the session's commands' input anyway */
    }
  };

  const execRaw = async (argv: readonly string[], opts: TransportExecOptions): Promise<RawResult> => {
    const shown = `${description}: ${argv.join(' ').slice(0, 200)}`;
    if (opts.signal?.aborted) throw new TransportError('ABORTED', `Aborted before running ${shown}`);
    const pidFile = runDir.pidFile();
    const command = buildRemoteCommand(argv, {
      ...(opts.cwd !== undefined ? { cwd: resolveRemotePath(root, opts.cwd) } : root !== '.' ? { cwd: root } : {}),
      ...(opts.env ? { env: opts.env } : {}),
      pidFile,
    });
    if (command.isErr()) throw command.error;
    touch(+1);
    try {
      const live = await connection();
      let channel: ClientChannel;
      try {
        channel = await openChannel(live.client, command.value);
      } catch (cause) {
        if (live.lost) throw new TransportError('CONNECTION_LOST', `Connection lost before running ${shown}`, { cause });
        throw new TransportError('EXEC_FAILED', `Cannot start ${shown}: ${(cause as Error).message}`, { cause });
      }
      runningPidFiles.add(pidFile);
      const exited = new Promise<ProcessExit>((resolve, reject) => {
        let exit: ProcessExit | undefined;
        inFlightChannels.set(channel, reject);
        channel.on('exit', (code: number | null, signal?: string) => {
          exit = { code: typeof code === 'number' ? code : null, signal: signal ?? null };
        });
        channel.on('close', () => {
          inFlightChannels.delete(channel);
          if (exit) resolve(exit);
          else reject(new TransportError('CONNECTION_LOST', `${shown}: the channel closed without an exit status (connection cut or server stopped)`));
        });
      });
      const process: RunningProcess = {
        stdin: channel,
        stdout: channel,
        stderr: channel.stderr,
        exited,
        kill: async () => {
          try {
            channel.signal('KILL');
          } catch {
            /* channel already gone */
          }
          await killRemote(pidFile);
          channel.destroy();
        },
      };
      try {
        return await runProcess(process, { ...opts, describe: shown });
      } finally {
        runningPidFiles.delete(pidFile);
      }
    } finally {
      touch(-1);
    }
  };

  const exec = (argv: readonly string[], opts: TransportExecOptions = {}): ResultAsync<ExecResult, ApMigrateError> =>
    ResultAsync.fromPromise(
      execRaw(argv, opts).then((raw) => {
        const judged = judgeExit(raw, `${description}: ${argv.join(' ').slice(0, 200)}`, argv, opts.allowNonZeroExit);
        return { code: judged.code, signal: judged.signal, stdout: judged.stdout.toString('utf8'), stderr: judged.stderr.toString('utf8') };
      }),
      (e) => asTransportError(e),
    );

  const upload = (source: Readable, path: string, opts: UploadOptions = {}): ResultAsync<UploadResult, ApMigrateError> =>
    ResultAsync.fromPromise(uploadViaExec(execRaw, source, resolveRemotePath(root, path), opts), (e) => asTransportError(e, 'UPLOAD_FAILED'));

  const readFileRemote = (path: string, opts: ReadFileOptions = {}): ResultAsync<Buffer, ApMigrateError> =>
    ResultAsync.fromPromise(readFileViaExec(execRaw, resolveRemotePath(root, path), opts), (e) => asTransportError(e));

  const close = (): ResultAsync<void, ApMigrateError> => {
    if (closed) return ResultAsync.fromSafePromise(Promise.resolve());
    closed = true;
    if (idleTimer) clearTimeout(idleTimer);
    const work = async (): Promise<void> => {
      const live = current ? await current.catch(() => undefined) : undefined;
      if (!live || live.lost) return;
      if (runningPidFiles.size > 0) {
        try {
          await runHousekeeping(live.client, runDir.killAllCommand(runningPidFiles));
        } catch {
          /* best effort */
        }
      }
      for (const channel of inFlightChannels.keys()) channel.destroy();
      await new Promise<void>((resolve) => {
        live.client.once('close', () => resolve());
        live.client.end();
        setTimeout(resolve, 2_000).unref();
      });
    };
    return ResultAsync.fromSafePromise(work());
  };

  const transport: Transport = { kind: 'ssh2', root, description, exec, upload, readFile: readFileRemote, close };
  // Connect now: host key and auth problems belong to creation, not to the first command.
  if (options.signal?.aborted) return errAsync(new TransportError('ABORTED', `Connecting to ${description} aborted`));
  current = openConnection(options, onLost);
  return ResultAsync.fromPromise(current, (e) => asTransportError(e, 'CONNECT_FAILED')).map(() => transport);
}
