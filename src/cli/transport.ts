/**
 * Opening a transport from a `--to` URL.
 *
 * @module
 */
import type { ResultAsync } from 'neverthrow';
import { okAsync, errAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { Transport } from '../spec/transport.js';
import { createLocalTransport } from '../transports/local.js';
import { createOpenSshTransport } from '../transports/openssh.js';
import { createSshTransport } from '../transports/ssh.js';
import { parseDestination } from '../transports/url.js';

/** Transport options the CLI passes through. */
export interface CliTransportOptions {
  identity?: string;
  knownHosts?: string;
  trustHostKey?: string;
  /** `openssh` (default for ssh URLs) or `ssh2`. */
  client?: string;
}

/** Open the destination named by `url` (`ssh://user@host[:port]/path`, `local:///path` or `/path`). */
export function openDestination(url: string, options: CliTransportOptions): ResultAsync<Transport, ApMigrateError> {
  const parsed = parseDestination(url);
  if (parsed.isErr()) return errAsync(parsed.error);
  const dest = parsed.value;
  if (dest.kind === 'local') return okAsync(createLocalTransport({ root: dest.root }));
  const common = {
    host: dest.host,
    port: dest.port,
    username: dest.username,
    root: dest.root,
    ...(options.knownHosts ? { knownHostsPath: options.knownHosts } : {}),
    ...(options.trustHostKey ? { trustHostKeyFingerprint: options.trustHostKey } : {}),
  };
  if (options.client === 'ssh2') {
    return createSshTransport({ ...common, ...(options.identity ? { privateKeyPath: options.identity } : {}) });
  }
  return createOpenSshTransport({ ...common, ...(options.identity ? { identityFile: options.identity } : {}) });
}
