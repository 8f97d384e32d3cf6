/**
 * One entry point from a destination URL to a connected transport, choosing the
 * implementation (decision 0201: the system OpenSSH client when present, else ssh2).
 *
 * @module
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import { InvalidInputError, type ApMigrateError } from '../errors.js';
import type { Transport } from '../spec/transport.js';
import { createLocalTransport } from './local.js';
import { createOpenSshTransport } from './openssh.js';
import { createSshTransport } from './ssh.js';
import { parseDestination, validateDestination, type Destination } from './url.js';

/** Which SSH implementation to use; `auto` follows decision 0201. */
export type SshImplementation = 'auto' | 'ssh2' | 'openssh';

/** Options for {@link createTransport}; the SSH ones are ignored for local destinations. */
export interface CreateTransportOptions {
  /** Default `auto`: the system `ssh` client when on PATH, else the in-process ssh2 client. */
  implementation?: SshImplementation;
  /** Private key file; default: ssh's own choice / the agent. */
  privateKeyPath?: string;
  /** known_hosts file (default `~/.ssh/known_hosts`). */
  knownHostsPath?: string;
  /** Trust exactly this host key (`SHA256:...`). */
  trustHostKeyFingerprint?: string;
  /** Give up connecting after this long (default 20 s). */
  connectTimeoutMs?: number;
  /** Keep-alive interval (default 5 s). */
  keepaliveIntervalMs?: number;
  /** Abort connecting. */
  signal?: AbortSignal;
}

/** Whether an executable named `name` is on PATH. */
export function hasExecutable(name: string, path = process.env.PATH ?? ''): boolean {
  return path.split(delimiter).some((dir) => {
    if (!dir) return false;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The implementation `auto` resolves to on this machine. */
export function resolveSshImplementation(choice: SshImplementation = 'auto'): 'ssh2' | 'openssh' {
  if (choice !== 'auto') return choice;
  return hasExecutable('ssh') ? 'openssh' : 'ssh2';
}

/** The implementations {@link createTransport} accepts. */
const IMPLEMENTATIONS: readonly SshImplementation[] = ['auto', 'ssh2', 'openssh'];

/**
 * Problems with {@link CreateTransportOptions}, each naming its field (`''` for the whole value).
 * Only the fields this function reads; the SSH transports check the rest of their own options.
 */
function createTransportOptionsProblem(options: unknown): InvalidInputError | undefined {
  const invalid = (path: string, message: string) => new InvalidInputError('transport options', [{ path, message }]);
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return invalid('', 'must be an options object');
  const o = options as Record<string, unknown>;
  if (o.implementation !== undefined && !IMPLEMENTATIONS.includes(o.implementation as SshImplementation)) {
    return invalid('implementation', `must be one of ${IMPLEMENTATIONS.join(', ')}, got ${typeof o.implementation === 'string' ? JSON.stringify(o.implementation) : typeof o.implementation}`);
  }
  for (const key of ['privateKeyPath', 'knownHostsPath', 'trustHostKeyFingerprint'] as const) {
    if (o[key] !== undefined && (typeof o[key] !== 'string' || o[key] === '' || o[key].includes('\0'))) return invalid(key, 'must be a non-empty string without NUL bytes');
  }
  for (const key of ['connectTimeoutMs', 'keepaliveIntervalMs'] as const) {
    if (o[key] !== undefined && !(typeof o[key] === 'number' && Number.isFinite(o[key]) && o[key] > 0)) return invalid(key, 'must be a positive finite number of milliseconds');
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) return invalid('signal', 'must be an AbortSignal');
  return undefined;
}

/**
 * Parse `destination` (URL or parsed) and return a connected transport for it. Anything that is
 * not a valid URL or {@link Destination} (a bad port, `undefined`, `{}`), and options that are not
 * an object or name an unknown `implementation`, are an {@link InvalidInputError} (`INVALID_INPUT`).
 * Never throws.
 */
export function createTransport(destination: string | Destination, options: CreateTransportOptions = {}): ResultAsync<Transport, ApMigrateError> {
  const parsed = typeof destination === 'string' ? parseDestination(destination) : validateDestination(destination);
  if (parsed.isErr()) return errAsync(parsed.error);
  const badOptions = createTransportOptionsProblem(options);
  if (badOptions) return errAsync(badOptions);
  const target = parsed.value;
  if (target.kind === 'local') return okAsync(createLocalTransport({ root: target.root }));
  const common = {
    host: target.host,
    port: target.port,
    username: target.username,
    ...(target.root !== '.' ? { root: target.root } : {}),
    ...(options.knownHostsPath !== undefined ? { knownHostsPath: options.knownHostsPath } : {}),
    ...(options.trustHostKeyFingerprint !== undefined ? { trustHostKeyFingerprint: options.trustHostKeyFingerprint } : {}),
    ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
    ...(options.keepaliveIntervalMs !== undefined ? { keepaliveIntervalMs: options.keepaliveIntervalMs } : {}),
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
  };
  if (resolveSshImplementation(options.implementation) === 'openssh') {
    return createOpenSshTransport({ ...common, ...(options.privateKeyPath !== undefined ? { identityFile: options.privateKeyPath } : {}) });
  }
  return createSshTransport({ ...common, ...(options.privateKeyPath !== undefined ? { privateKeyPath: options.privateKeyPath } : {}) });
}
