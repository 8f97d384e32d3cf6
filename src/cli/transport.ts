/**
 * Opening a transport from a `--to` URL with the CLI's flags.
 *
 * @module
 */
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { Transport } from '../spec/transport.js';
import { createTransport, type SshImplementation } from '../transports/select.js';

/** Transport options the CLI passes through. */
export interface CliTransportOptions {
  identity?: string;
  knownHosts?: string;
  trustHostKey?: string;
  /** `auto` (default), `openssh` or `ssh2`. */
  client?: string;
}

/** Open the destination named by `url` (`ssh://user@host[:port]/path`, `local:///path` or `/path`). */
export function openDestination(url: string, options: CliTransportOptions): ResultAsync<Transport, ApMigrateError> {
  return createTransport(url, {
    implementation: (options.client ?? 'auto') as SshImplementation,
    ...(options.identity ? { privateKeyPath: options.identity } : {}),
    ...(options.knownHosts ? { knownHostsPath: options.knownHosts } : {}),
    ...(options.trustHostKey ? { trustHostKeyFingerprint: options.trustHostKey } : {}),
  });
}
