/**
 * Destination URLs: `ssh://user@host[:port]/path`, `ssh://user@[::1]:2222/srv`, and
 * `local:///path`, `file:///path` or a bare absolute path for this machine (see {@link parseDestination}).
 *
 * @module
 */
import { err, ok, type Result } from 'neverthrow';
import { z } from 'zod';
import { InvalidInputError } from '../errors.js';
import { issuesFromZod } from '../policy/validate.js';

/** A parsed SSH destination. */
export interface SshDestination {
  kind: 'ssh';
  /** Login name; percent-decoded. */
  username: string;
  /** Host name or address (IPv6 without brackets). */
  host: string;
  /** TCP port (22 when absent). */
  port: number;
  /** Absolute directory at the destination; `.` (the login directory) when the URL has no path. */
  root: string;
}

/** A parsed local destination. */
export interface LocalDestination {
  kind: 'local';
  /** Absolute directory on this machine. */
  root: string;
}

/** Any destination the SDK can reach. */
export type Destination = SshDestination | LocalDestination;

const hostName = z
  .string()
  .min(1, 'host is empty')
  .max(253)
  .refine((h) => /^[A-Za-z0-9.-]+$/.test(h) || /^[0-9A-Fa-f:.]+$/.test(h), 'host must be a DNS name or an IP address')
  .refine((h) => !h.startsWith('-'), 'host must not start with "-"');

const PORT_MESSAGE = 'port must be an integer 1-65535';

const sshDestination = z.object({
  kind: z.literal('ssh'),
  username: z
    .string()
    .min(1, 'user is required: ssh://user@host')
    .regex(/^[A-Za-z0-9._][A-Za-z0-9._-]*$/, 'user may hold letters, digits, ".", "_" and "-" only'),
  host: hostName,
  port: z.number(PORT_MESSAGE).int(PORT_MESSAGE).min(1, PORT_MESSAGE).max(65535, PORT_MESSAGE),
  root: z
    .string()
    .refine((p) => p === '.' || p.startsWith('/'), 'path must be absolute')
    .refine((p) => !p.includes('\0'), 'path must not contain NUL'),
});

const localDestination = z.object({
  kind: z.literal('local'),
  root: z
    .string()
    .startsWith('/', 'path must be absolute')
    .refine((p) => !p.includes('\0'), 'path must not contain NUL'),
});

const destination = z.discriminatedUnion('kind', [sshDestination, localDestination], {
  error: 'a destination is { kind: "ssh", username, host, port, root } or { kind: "local", root }',
});

const fail = (message: string, path = '') => err(new InvalidInputError('destination URL', [{ path, message }]));

/** `decodeURIComponent`, or undefined for a malformed `%` escape. */
function decode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/**
 * Parse and validate a destination URL. Accepted forms, and nothing else:
 *
 * - `ssh://user@host[:port][/absolute/path]` (IPv6 as `[::1]`; port 1-65535, default 22; no
 *   path means the login directory);
 * - `local:///absolute/path` or `file:///absolute/path` (three slashes: the host part is empty);
 * - a bare absolute path `/absolute/path`.
 *
 * `local://tmp/x` (a host part) and relative paths are refused, never reinterpreted.
 * Anything that is not a string is `INVALID_INPUT` too.
 */
export function parseDestination(input: unknown): Result<Destination, InvalidInputError> {
  if (typeof input !== 'string') return fail(`a destination URL must be a string, not ${input === null ? 'null' : typeof input}`);
  if (input.startsWith('/')) return validated(localDestination, { kind: 'local', root: input });
  const local = /^(local|file):(.*)$/is.exec(input);
  if (local) {
    const [, scheme, rest = ''] = local;
    const lower = scheme!.toLowerCase();
    if (!rest.startsWith('///')) {
      const path = rest.replace(/^\/+/, '');
      return fail(`"${input}" is not a ${lower}: URL of an absolute path; write ${lower}:///${path || 'absolute/path'} (three slashes) or just /${path || 'absolute/path'}`);
    }
    if (/[?#]/.test(rest)) return fail(`${lower}: URLs take no query or fragment`);
    const root = decode(rest.slice(2));
    if (root === undefined) return fail(`"${input}" has a malformed %-escape`);
    return validated(localDestination, { kind: 'local', root });
  }
  const port = /^ssh:\/\/(?:[^@/?#]*@)?(?:\[[^\]/]*\]|[^:/?#@[]*):([^/?#@]*)(?=[/?#]|$)/i.exec(input);
  if (port && !(/^\d+$/.test(port[1]!) && Number(port[1]) >= 1 && Number(port[1]) <= 65535)) return fail(`"${port[1]}" is not a TCP port: ${PORT_MESSAGE}`, 'port');
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    return fail(`"${input}" is not a URL; expected ssh://user@host[:port]/path or local:///path`);
  }
  if (url.protocol !== 'ssh:') return fail(`unsupported scheme "${url.protocol}"; expected ssh: or local:`);
  if (url.password) return fail('passwords in URLs are not supported; use a key or an agent');
  if (url.search || url.hash) return fail('ssh URLs take no query or fragment');
  const path = decode(url.pathname);
  const username = decode(url.username);
  if (path === undefined || username === undefined) return fail(`"${input}" has a malformed %-escape`);
  return validated(sshDestination, {
    kind: 'ssh',
    username,
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port ? Number(url.port) : 22,
    root: path === '' || path === '/' ? (path === '/' ? '/' : '.') : path.replace(/\/+$/, ''),
  });
}

/** Validate an already parsed {@link Destination} (from a caller, not a URL); same rules as {@link parseDestination}. */
export function validateDestination(value: unknown): Result<Destination, InvalidInputError> {
  return validated(destination, value, 'destination');
}

function validated<T>(schema: z.ZodType<T>, value: unknown, what = 'destination URL'): Result<T, InvalidInputError> {
  const parsed = schema.safeParse(value);
  return parsed.success ? ok(parsed.data) : err(new InvalidInputError(what, issuesFromZod(parsed.error)));
}
