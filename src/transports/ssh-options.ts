/**
 * Options both SSH transports share (OpenSSH's `ssh` and the in-process ssh2 client): where to
 * connect, how the server is verified, and how a dead connection is noticed.
 *
 * @module
 */
import { InvalidInputError } from '../errors.js';

/** Connection options common to {@link SshTransportOptions} and {@link OpenSshTransportOptions}. */
export interface SshConnectionOptions {
  host: string;
  /** Default 22; an integer 1-65535, else `INVALID_INPUT`. */
  port?: number;
  username: string;
  /** known_hosts file to verify the server against (default `~/.ssh/known_hosts`). */
  knownHostsPath?: string;
  /**
   * Trust exactly this host key (`SHA256:...`, as `ssh-keygen -l -E sha256` prints), known_hosts
   * or not, and no other: any other key is `HOST_KEY_MISMATCH`, even one known_hosts lists. A
   * key known_hosts marks `@revoked` is still refused.
   */
  trustHostKeyFingerprint?: string;
  /** Destination directory: default cwd of commands, base of relative paths (default: login dir). */
  root?: string;
  /** Give up connecting (TCP + handshake + auth) after this long (default 20 s). */
  connectTimeoutMs?: number;
  /** Send a keep-alive this often (default 5 s); a dead peer is noticed after `keepaliveCountMax` misses. */
  keepaliveIntervalMs?: number;
  /** Unanswered keep-alives before the connection counts as lost (default 3). */
  keepaliveCountMax?: number;
  /** Abort connecting. */
  signal?: AbortSignal;
}

/** Whether `port` is a TCP port number (an integer 1-65535). */
export function isTcpPort(port: unknown): port is number {
  return typeof port === 'number' && Number.isInteger(port) && port >= 1 && port <= 65535;
}

/**
 * The first problem with the options both SSH transports share, as an {@link InvalidInputError}
 * (`INVALID_INPUT`) whose `issues[0].path` names the field (`''` for the whole options value; also
 * in `details.field` for older callers), or undefined when they are usable. Never throws.
 */
export function sshConnectionOptionsProblem(options: unknown): InvalidInputError | undefined {
  const invalid = (field: string, message: string, value?: unknown) =>
    new InvalidInputError('SSH options', [{ path: field, message }], {
      details: { field, ...(value !== undefined ? { value: String(value) } : {}) },
    });
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return invalid('', 'an options object with host and username is required');
  const o = options as Record<string, unknown>;
  if (typeof o.host !== 'string' || o.host === '') return invalid('host', 'host is required');
  if (o.host.includes('\0')) return invalid('host', 'must not contain a NUL byte');
  if (typeof o.username !== 'string' || o.username === '') return invalid('username', 'username is required');
  if (o.username.includes('\0')) return invalid('username', 'must not contain a NUL byte');
  if (o.port !== undefined && !isTcpPort(o.port)) return invalid('port', `${typeof o.port === 'string' ? JSON.stringify(o.port) : String(o.port)} is not a TCP port (an integer 1-65535)`, o.port);
  if (o.trustHostKeyFingerprint !== undefined && (typeof o.trustHostKeyFingerprint !== 'string' || !/^SHA256:[A-Za-z0-9+/]{43}$/.test(o.trustHostKeyFingerprint))) {
    return invalid('trustHostKeyFingerprint', 'expected "SHA256:" and 43 base64 characters, as `ssh-keygen -l -E sha256` prints');
  }
  for (const key of ['knownHostsPath', 'root'] as const) {
    if (o[key] !== undefined && (typeof o[key] !== 'string' || o[key] === '' || o[key].includes('\0'))) return invalid(key, 'must be a non-empty string without NUL bytes');
  }
  for (const key of ['connectTimeoutMs', 'keepaliveIntervalMs'] as const) {
    if (o[key] !== undefined && !(typeof o[key] === 'number' && Number.isFinite(o[key]) && o[key] > 0)) return invalid(key, 'must be a positive finite number of milliseconds', o[key]);
  }
  if (o.keepaliveCountMax !== undefined && !(Number.isSafeInteger(o.keepaliveCountMax) && (o.keepaliveCountMax as number) > 0)) {
    return invalid('keepaliveCountMax', 'must be a positive integer', o.keepaliveCountMax);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) return invalid('signal', 'must be an AbortSignal');
  return undefined;
}
