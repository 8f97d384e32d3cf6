/**
 * Options both SSH transports share (OpenSSH's `ssh` and the in-process ssh2 client): where to
 * connect, how the server is verified, and how a dead connection is noticed.
 *
 * @module
 */

/** Connection options common to {@link SshTransportOptions} and {@link OpenSshTransportOptions}. */
export interface SshConnectionOptions {
  host: string;
  /** Default 22. */
  port?: number;
  username: string;
  /** known_hosts file to verify the server against (default `~/.ssh/known_hosts`). */
  knownHostsPath?: string;
  /**
   * Trust exactly this host key (`SHA256:...`, as `ssh-keygen -l` prints), known_hosts or not:
   * only a server presenting a key with this fingerprint is accepted.
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
