/**
 * OpenSSH `known_hosts` parsing and host key checking, so the in-process SSH client refuses an
 * unknown or changed server exactly as `ssh -o StrictHostKeyChecking=yes` would.
 * Supports plain and hashed (`|1|salt|hash`) host names, `[host]:port`, wildcards and
 * negation, and `@revoked` lines. `@cert-authority` lines are ignored (host certificates are
 * not supported: such a host is "unknown").
 *
 * @module
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { errorMessage, TransportError } from './errors.js';

/** One usable line of a known_hosts file. */
export interface KnownHostEntry {
  /** `revoked` for `@revoked` lines. */
  marker?: 'revoked' | 'cert-authority';
  /** Comma-separated patterns, or a hashed name. */
  hosts: { kind: 'patterns'; patterns: string[] } | { kind: 'hashed'; salt: Buffer; hash: Buffer };
  /** Key algorithm name, e.g. `ssh-ed25519`. */
  keyType: string;
  /** The raw public key blob. */
  key: Buffer;
  /** 1-based line number, for messages. */
  line: number;
}

/** The outcome of checking a presented host key. */
export type HostKeyVerdict =
  | { status: 'trusted'; line: number }
  | { status: 'unknown' }
  | { status: 'mismatch'; knownFingerprints: string[]; lines: number[] }
  | { status: 'revoked'; line: number };

/** `SHA256:<base64, no padding>` of a public key blob, as `ssh-keygen -l` prints it. */
export function fingerprintSha256(keyBlob: Uint8Array): string {
  return 'SHA256:' + createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '');
}

/** The name OpenSSH looks up: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** Parse a known_hosts file; malformed lines are skipped like OpenSSH does. */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const fields = (lines[i] ?? '').trim().split(/\s+/);
    if (fields.length === 0 || !fields[0] || fields[0].startsWith('#')) continue;
    let marker: KnownHostEntry['marker'];
    if (fields[0] === '@revoked' || fields[0] === '@cert-authority') {
      marker = fields[0] === '@revoked' ? 'revoked' : 'cert-authority';
      fields.shift();
    }
    const [hostField, keyType, keyBase64] = fields;
    if (!hostField || !keyType || !keyBase64) continue;
    const key = Buffer.from(keyBase64, 'base64');
    if (key.length === 0) continue;
    let hosts: KnownHostEntry['hosts'];
    if (hostField.startsWith('|1|')) {
      const [, , salt, hash] = hostField.split('|');
      if (!salt || !hash) continue;
      hosts = { kind: 'hashed', salt: Buffer.from(salt, 'base64'), hash: Buffer.from(hash, 'base64') };
    } else {
      hosts = { kind: 'patterns', patterns: hostField.split(',') };
    }
    entries.push({ ...(marker ? { marker } : {}), hosts, keyType, key, line: i + 1 });
  }
  return entries;
}

function wildcardToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

/** Whether an entry's host field names `name` (already in `[host]:port` form when needed). */
export function entryMatches(entry: KnownHostEntry, name: string): boolean {
  if (entry.hosts.kind === 'hashed') {
    const digest = createHmac('sha1', entry.hosts.salt).update(name).digest();
    return digest.length === entry.hosts.hash.length && timingSafeEqual(digest, entry.hosts.hash);
  }
  let matched = false;
  for (const raw of entry.hosts.patterns) {
    const negated = raw.startsWith('!');
    const pattern = negated ? raw.slice(1) : raw;
    if (!wildcardToRegExp(pattern).test(name)) continue;
    if (negated) return false; // a negated match vetoes the whole line
    matched = true;
  }
  return matched;
}

/** Check the key a server presented for `host:port` against parsed known_hosts entries. */
export function checkHostKey(entries: readonly KnownHostEntry[], host: string, port: number, presented: Buffer): HostKeyVerdict {
  const name = knownHostsName(host, port);
  const forHost = entries.filter((e) => e.marker !== 'cert-authority' && entryMatches(e, name));
  const revoked = forHost.find((e) => e.marker === 'revoked' && e.key.equals(presented));
  if (revoked) return { status: 'revoked', line: revoked.line };
  const known = forHost.filter((e) => e.marker === undefined);
  const same = known.find((e) => e.key.equals(presented));
  if (same) return { status: 'trusted', line: same.line };
  if (known.length === 0) return { status: 'unknown' };
  return { status: 'mismatch', knownFingerprints: known.map((e) => fingerprintSha256(e.key)), lines: known.map((e) => e.line) };
}

/**
 * Read and parse known_hosts: `path`, or `~/.ssh/known_hosts` when none is given. A missing
 * default file is empty (a fresh machine); a given file that cannot be read is
 * `KNOWN_HOSTS_UNREADABLE`, never silently "no keys".
 */
export async function loadKnownHosts(path: string | undefined): Promise<KnownHostEntry[]> {
  const file = path ?? join(homedir(), '.ssh', 'known_hosts');
  try {
    return parseKnownHosts(await readFile(file, 'utf8'));
  } catch (cause) {
    if (path === undefined && (cause as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new TransportError('KNOWN_HOSTS_UNREADABLE', `Cannot read known_hosts file ${file}: ${errorMessage(cause)}`, { cause });
  }
}

/** `HOST_KEY_REVOKED`: the key `fingerprint` of `host:port` is on an `@revoked` line. */
export function revokedHostKeyError(host: string, port: number, fingerprint: string, line: number): TransportError {
  return new TransportError('HOST_KEY_REVOKED', `Host key of ${knownHostsName(host, port)} (${fingerprint}) is marked @revoked in known_hosts (line ${line})`, {
    details: { host, port, fingerprint },
  });
}

/** `HOST_KEY_MISMATCH`: none of the keys `presented` is the pinned `trustHostKeyFingerprint`. */
export function pinnedHostKeyMismatch(host: string, port: number, pin: string, presented: readonly string[]): TransportError {
  return new TransportError(
    'HOST_KEY_MISMATCH',
    `Host key of ${knownHostsName(host, port)} is not the pinned one: trustHostKeyFingerprint expects ${pin}, server presented ${presented.join(', ')}. Someone may be intercepting the connection, or the pin is out of date; refused`,
    { details: { host, port, expected: [pin], presented: [...presented], ...(presented.length === 1 ? { fingerprint: presented[0] } : {}) } },
  );
}
