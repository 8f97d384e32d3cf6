/**
 * The OpenSSH transport: drives the system `ssh` client. Always BatchMode (never prompts) and
 * StrictHostKeyChecking=yes against the given known_hosts; one ControlMaster connection per
 * transport is reused by every command, so each exec costs a local socket hop, not a handshake.
 *
 * @module
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { errAsync, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ExecResult } from '../spec/executor.js';
import type { ReadFileOptions, Transport, TransportErrorCode, TransportExecOptions, UploadOptions, UploadResult } from '../spec/transport.js';
import { asTransportError, TransportError } from './errors.js';
import { checkHostKey, fingerprintSha256, knownHostsName, parseKnownHosts, type KnownHostEntry } from './known-hosts.js';
import { readFileViaExec, uploadViaExec } from './remote-files.js';
import { buildRemoteCommand, RemoteRunDirectory, resolveRemotePath } from './remote-command.js';
import { judgeExit, runProcess, type ProcessExit, type RawResult, type RunningProcess } from './run-process.js';
import { sshConnectionOptionsProblem, type SshConnectionOptions } from './ssh-options.js';

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

/** Quote a value for an ssh `-o Key=value` option. */
function optionValue(value: string): string {
  return /[\s"]/.test(value) ? `"${value.replace(/"/g, '\\"')}"` : value;
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

function run(file: string, args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : 255) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** known_hosts entries, for `@revoked` lines; a missing default file is empty, an unreadable given one an error. */
async function revocations(options: OpenSshTransportOptions): Promise<KnownHostEntry[]> {
  const path = options.knownHostsPath ?? join(homedir(), '.ssh', 'known_hosts');
  try {
    return parseKnownHosts(await readFile(path, 'utf8')).filter((e) => e.marker === 'revoked');
  } catch (cause) {
    if (options.knownHostsPath === undefined && (cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TransportError('KNOWN_HOSTS_UNREADABLE', `Cannot read known_hosts file ${path}: ${(cause as Error).message}`, { cause });
  }
}

/**
 * Fetch the server's keys and keep only the one with the trusted fingerprint: ssh then accepts
 * that key and no other (known_hosts is not consulted, except that a key it marks `@revoked`
 * is refused, as the ssh2 transport does).
 */
async function trustedKnownHosts(options: OpenSshTransportOptions, port: number, dir: string): Promise<{ path: string; keyType: string }> {
  const where = knownHostsName(options.host, port);
  const revoked = await revocations(options);
  const timeout = Math.ceil((options.connectTimeoutMs ?? 20_000) / 1000);
  const scan = await run('ssh-keyscan', ['-p', String(port), '-T', String(timeout), '--', options.host], (timeout + 5) * 1000);
  const lines = scan.stdout.split('\n').filter((l) => l && !l.startsWith('#'));
  const keys = lines.map((l) => l.trim().split(/\s+/)).filter((f): f is [string, string, string] => f.length >= 3);
  const match = keys.find(([, , key]) => fingerprintSha256(Buffer.from(key, 'base64')) === options.trustHostKeyFingerprint);
  if (!match) {
    if (keys.length === 0) throw new TransportError('CONNECT_FAILED', `Cannot fetch host keys of ${where}: ${scan.stderr.trim()}`, { isRetryable: true });
    const seen = keys.map(([, , key]) => fingerprintSha256(Buffer.from(key, 'base64')));
    throw new TransportError(
      'HOST_KEY_MISMATCH',
      `Host key of ${where} is not the pinned one: trustHostKeyFingerprint expects ${options.trustHostKeyFingerprint}, server presented ${seen.join(', ')}. Someone may be intercepting the connection, or the pin is out of date; refused`,
      { details: { host: options.host, port, expected: [options.trustHostKeyFingerprint], presented: seen } },
    );
  }
  const verdict = checkHostKey(revoked, options.host, port, Buffer.from(match[2], 'base64'));
  if (verdict.status === 'revoked') {
    throw new TransportError('HOST_KEY_REVOKED', `Host key of ${where} (${options.trustHostKeyFingerprint}) is marked @revoked in known_hosts (line ${verdict.line})`, {
      details: { host: options.host, port, fingerprint: options.trustHostKeyFingerprint },
    });
  }
  const path = join(dir, 'trusted_known_hosts');
  await writeFile(path, `${where} ${match[1]} ${match[2]}\n`, { mode: 0o600 });
  return { path, keyType: match[1] };
}

/**
 * Return a {@link Transport} that drives the system `ssh` client, after opening the shared
 * connection (host key and authentication are checked here, before any data is sent).
 */
export function createOpenSshTransport(options: OpenSshTransportOptions): ResultAsync<Transport, ApMigrateError> {
  const problem = sshConnectionOptionsProblem(options);
  if (problem) return errAsync(problem);
  if (options.host.startsWith('-') || options.username.startsWith('-')) return errAsync(new TransportError('INVALID_INPUT', 'host and username must not start with "-"'));
  if (options.trustHostKeyFingerprint !== undefined && options.proxyCommand !== undefined) {
    return errAsync(new TransportError('INVALID_INPUT', 'trustHostKeyFingerprint cannot be combined with proxyCommand (ssh-keyscan cannot use a proxy)'));
  }
  const port = options.port ?? 22;
  const root = options.root ?? '.';
  const where = `${options.username}@${knownHostsName(options.host, port)}`;
  const description = `ssh://${where}${root === '.' ? '' : root}`;
  const ssh = options.sshPath ?? 'ssh';
  const runDir = new RemoteRunDirectory();
  const running = new Map<string, RunningProcess>();
  let baseArgs: string[] = [];
  let controlDir = '';
  let closed = false;

  const setUp = async (): Promise<void> => {
    controlDir = await mkdtemp(join(tmpdir(), 'apm-ssh-'));
    let knownHosts = options.knownHostsPath;
    let hostKeyAlgorithms: string | undefined;
    if (options.trustHostKeyFingerprint !== undefined) {
      const trusted = await trustedKnownHosts(options, port, controlDir);
      knownHosts = trusted.path;
      hostKeyAlgorithms = trusted.keyType === 'ssh-rsa' ? 'rsa-sha2-512,rsa-sha2-256,ssh-rsa' : trusted.keyType;
    }
    const o = (kv: string) => ['-o', kv];
    baseArgs = [
      ...o('BatchMode=yes'),
      ...o('StrictHostKeyChecking=yes'),
      ...(knownHosts !== undefined ? [...o(`UserKnownHostsFile=${optionValue(knownHosts)}`), ...o('GlobalKnownHostsFile=/dev/null')] : []),
      ...(hostKeyAlgorithms ? o(`HostKeyAlgorithms=${hostKeyAlgorithms}`) : []),
      ...o('ControlMaster=auto'),
      ...o(`ControlPath=${optionValue(join(controlDir, 'cm'))}`),
      ...o(`ControlPersist=${options.controlPersistSeconds ?? 60}`),
      ...o(`ConnectTimeout=${Math.ceil((options.connectTimeoutMs ?? 20_000) / 1000)}`),
      ...o(`ServerAliveInterval=${Math.max(1, Math.round((options.keepaliveIntervalMs ?? 5_000) / 1000))}`),
      ...o(`ServerAliveCountMax=${options.keepaliveCountMax ?? 3}`),
      ...o('LogLevel=ERROR'),
      // Never let a user's config forward agents, X11 or ports over our connection.
      ...o('ForwardAgent=no'),
      ...o('ForwardX11=no'),
      ...o('ClearAllForwardings=yes'),
      ...(options.proxyCommand !== undefined ? o(`ProxyCommand=${options.proxyCommand}`) : []),
      ...(options.identityFile !== undefined ? ['-i', options.identityFile, ...o('IdentitiesOnly=yes')] : []),
      ...(options.ciphers ? ['-c', options.ciphers.join(',')] : []),
      '-p',
      String(port),
      '-l',
      options.username,
      '-T',
      '-e',
      'none',
    ];
    // Open the master now, without a session (-N): host key and authentication failures
    // surface at creation, and no remote command runs for it.
    await startMaster();
  };

  const startMaster = async (): Promise<void> => {
    if (options.signal?.aborted) throw new TransportError('ABORTED', `Connecting to ${where} aborted`);
    const connectMs = options.connectTimeoutMs ?? 20_000;
    const master = run(ssh, [...baseArgs, '-o', 'ControlMaster=yes', '-f', '-N', '--', options.host], connectMs + 10_000);
    const aborted = new Promise<never>((_, reject) =>
      options.signal?.addEventListener('abort', () => reject(new TransportError('ABORTED', `Connecting to ${where} aborted`)), { once: true }),
    );
    const result = await Promise.race([master, aborted]);
    if (result.code !== 0) {
      throw sshFailure(result.stderr, where) ?? new TransportError('CONNECT_FAILED', `ssh to ${where} failed: ${result.stderr.trim() || `exit ${result.code}`}`);
    }
  };

  const spawnSsh = (command: string): RunningProcess & { stderrText: () => string } => {
    const child = spawn(ssh, [...baseArgs, '--', options.host, command], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderrText = '';
    child.stderr.on('data', (d: Buffer) => {
      if (stderrText.length < 65536) stderrText += d.toString('utf8');
    });
    const exited = new Promise<ProcessExit>((resolve, reject) => {
      child.once('error', (cause) => reject(new TransportError('EXEC_FAILED', `Cannot run ${ssh}: ${cause.message}`, { cause })));
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    return {
      stdin: child.stdin,
      stdout: child.stdout,
      stderr: child.stderr,
      exited,
      stderrText: () => stderrText,
      kill: async () => {
        child.kill('SIGTERM');
        // The ControlMaster holds our pipe ends (ssh passes them over the control socket), so
        // "close" would wait for the remote command; destroying our ends settles it now.
        child.stdin.destroy();
        child.stdout.destroy();
        child.stderr.destroy();
        await exited.catch(() => undefined);
      },
    };
  };

  /** Run a command; with `track`, its PID is recorded so abort and close can kill it remotely. */
  async function execRaw(argv: readonly string[], opts: TransportExecOptions, track = true): Promise<RawResult> {
    if (closed) throw new TransportError('TRANSPORT_CLOSED', `${description} was closed`);
    const shown = `${description}: ${argv.join(' ').slice(0, 200)}`;
    if (opts.signal?.aborted) throw new TransportError('ABORTED', `Aborted before running ${shown}`);
    const pidFile = track ? runDir.pidFile() : undefined;
    const command = buildRemoteCommand(argv, {
      ...(opts.cwd !== undefined ? { cwd: resolveRemotePath(root, opts.cwd) } : root !== '.' ? { cwd: root } : {}),
      ...(opts.env ? { env: opts.env } : {}),
      ...(pidFile !== undefined ? { pidFile } : {}),
    });
    if (command.isErr()) throw command.error;
    const child = spawnSsh(command.value);
    const process: RunningProcess = {
      ...child,
      kill: async () => {
        // Remote first: closing the channel first would hand the command an EOF, and an
        // upload script would then publish its partial file.
        if (pidFile !== undefined) await killRemote(runDir.killCommand(pidFile));
        await child.kill();
      },
    };
    if (pidFile !== undefined) running.set(pidFile, process);
    try {
      const raw = await runProcess(process, { ...opts, describe: shown });
      if (raw.code === 255) {
        const failure = sshFailure(child.stderrText(), where);
        if (failure) throw failure;
        // ssh says nothing at LogLevel=ERROR when the server goes away; a live master means
        // the 255 came from the command itself.
        const check = await run(ssh, [...baseArgs, '-O', 'check', '--', options.host], 10_000);
        if (check.code !== 0) throw new TransportError('CONNECTION_LOST', `Connection to ${where} lost while running ${shown}`, { details: { stderr: child.stderrText().slice(0, 4096) } });
      }
      return raw;
    } finally {
      if (pidFile !== undefined) running.delete(pidFile);
    }
  }

  const killRemote = async (script: string): Promise<void> => {
    await run(ssh, [...baseArgs, '--', options.host, script], 10_000);
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
    ResultAsync.fromPromise(uploadViaExec((a, o) => execRaw(a, o), source, resolveRemotePath(root, path), opts), (e) => asTransportError(e, 'UPLOAD_FAILED'));

  const readFileRemote = (path: string, opts: ReadFileOptions = {}): ResultAsync<Buffer, ApMigrateError> =>
    ResultAsync.fromPromise(readFileViaExec((a, o) => execRaw(a, o, false), resolveRemotePath(root, path), opts), (e) => asTransportError(e));

  const close = (): ResultAsync<void, ApMigrateError> => {
    if (closed) return ResultAsync.fromSafePromise(Promise.resolve());
    const work = async (): Promise<void> => {
      const pending = [...running.entries()];
      for (const [, process] of pending) await process.kill().catch(() => undefined);
      closed = true;
      if (baseArgs.length > 0) await run(ssh, [...baseArgs, '-O', 'exit', '--', options.host], 10_000);
      if (controlDir) await rm(controlDir, { recursive: true, force: true });
    };
    return ResultAsync.fromSafePromise(work());
  };

  const transport: Transport = { kind: 'openssh', root, description, exec, upload, readFile: readFileRemote, close };
  const cleanUpAfterFailedSetUp = async (e: unknown): Promise<never> => {
    if (baseArgs.length > 0) await run(ssh, [...baseArgs, '-O', 'exit', '--', options.host], 10_000);
    if (controlDir) await rm(controlDir, { recursive: true, force: true });
    throw e;
  };
  return ResultAsync.fromPromise(setUp().catch(cleanUpAfterFailedSetUp), (e) => asTransportError(e, 'CONNECT_FAILED')).map(() => transport);
}
