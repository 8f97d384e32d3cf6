/**
 * Destination URLs: `ssh://user@host[:port]/path`, `ssh://user@[::1]:2222/srv`, and
 * `local:///path` (or a bare absolute path) for this machine.
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

const sshDestination = z.object({
  kind: z.literal('ssh'),
  username: z
    .string()
    .min(1, 'user is required: ssh://user@host')
    .regex(/^[A-Za-z0-9._][A-Za-z0-9._-]*$/, 'user may hold letters, digits, ".", "_" and "-" only'),
  host: hostName,
  port: z.number().int().min(1).max(65535),
  root: z
    .string()
    .refine((p) => p === '.' || p.startsWith('/'), 'path must be absolute')
    .refine((p) => !p.includes('\0'), 'path must not contain NUL'),
});

const localDestination = z.object({
  kind: z.literal('local'),
  root: z.string().startsWith('/', 'path must be absolute'),
});

/** Parse and validate a destination URL. */
export function parseDestination(input: string): Result<Destination, InvalidInputError> {
  const fail = (message: string) => err(new InvalidInputError('destination URL', [{ path: '', message }]));
  if (input.startsWith('/')) return validated(localDestination, { kind: 'local', root: input });
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    return fail(`"${input}" is not a URL; expected ssh://user@host[:port]/path or local:///path`);
  }
  if (url.protocol === 'local:' || url.protocol === 'file:') {
    return validated(localDestination, { kind: 'local', root: decodeURIComponent(url.pathname) || '/' });
  }
  if (url.protocol !== 'ssh:') return fail(`unsupported scheme "${url.protocol}"; expected ssh: or local:`);
  if (url.password) return fail('passwords in URLs are not supported; use a key or an agent');
  if (url.search || url.hash) return fail('ssh URLs take no query or fragment');
  const path = decodeURIComponent(url.pathname);
  return validated(sshDestination, {
    kind: 'ssh',
    username: decodeURIComponent(url.username),
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port ? Number(url.port) : 22,
    root: path === '' || path === '/' ? (path === '/' ? '/' : '.') : path.replace(/\/+$/, ''),
  });
}

function validated<T>(schema: z.ZodType<T>, value: unknown): Result<T, InvalidInputError> {
  const parsed = schema.safeParse(value);
  return parsed.success ? ok(parsed.data) : err(new InvalidInputError('destination URL', issuesFromZod(parsed.error)));
}
