/**
 * Transport: how the SDK reaches a destination host. It is an {@link Executor} (run argv arrays
 * there) that can also stream bytes into a remote command or file and read small files back.
 * A bundle travels as one stream: packer -> `exec(['tar', '-x', ...], { stdin })`.
 *
 * Implementations: `local` (this machine), `ssh2` (in-process SSH client), `openssh`
 * (the system `ssh` client).
 *
 * @module
 */
import type { Readable } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ExecOptions, ExecResult, Executor } from './executor.js';
import type { StreamedCommand, StreamOptions } from './source.js';

/** Bytes moved so far by one transport operation. */
export interface TransferProgress {
  /** Which operation is moving bytes. */
  operation: 'exec-stdin' | 'upload' | 'read';
  /** Bytes sent (exec-stdin, upload) or received (read) so far. */
  bytes: number;
}

/** Called as bytes move; cheap, called often (about once per chunk). */
export type ProgressCallback = (progress: TransferProgress) => void;

/** Options for {@link Transport.exec}: those of {@link ExecOptions} plus progress. */
export interface TransportExecOptions extends ExecOptions {
  /** Called as stdin bytes are sent to the command. */
  onProgress?: ProgressCallback;
}

/** Options for {@link Transport.upload}. */
export interface UploadOptions {
  /** Abort the upload; the partial file is removed. */
  signal?: AbortSignal;
  /** Fail with `EXEC_TIMEOUT` after this many milliseconds. */
  timeoutMs?: number;
  /** Called as bytes are sent. */
  onProgress?: ProgressCallback;
  /** File mode of the created file (default 0o600: bundles may hold secrets). */
  mode?: number;
}

/** What an upload wrote. */
export interface UploadResult {
  /** The path written, as given. */
  remotePath: string;
  /** Bytes written. */
  bytes: number;
}

/** Options for {@link Transport.readFile}. */
export interface ReadFileOptions {
  /** Refuse files larger than this (default 16 MiB) with `FILE_TOO_LARGE`; never truncated silently. */
  maxBytes?: number;
  /** Abort the read. */
  signal?: AbortSignal;
  /** Fail with `EXEC_TIMEOUT` after this many milliseconds. */
  timeoutMs?: number;
}

/**
 * Stable codes of errors transports return (on top of the executor's `EXEC_*`, `ABORTED`,
 * `OUTPUT_TOO_LARGE`). `CONNECTION_LOST` and `CONNECT_TIMEOUT` are retryable.
 */
export type TransportErrorCode =
  | 'CONNECT_FAILED'
  | 'CONNECT_TIMEOUT'
  | 'AUTH_FAILED'
  | 'HOST_KEY_UNKNOWN'
  | 'HOST_KEY_MISMATCH'
  | 'HOST_KEY_REVOKED'
  | 'KNOWN_HOSTS_UNREADABLE'
  | 'CONNECTION_LOST'
  | 'TRANSPORT_CLOSED'
  | 'FILE_NOT_FOUND'
  | 'FILE_TOO_LARGE'
  | 'UPLOAD_FAILED'
  | 'PATH_OUTSIDE_ROOT'
  | 'ABORTED'
  | 'EXEC_FAILED'
  | 'EXEC_NONZERO'
  | 'EXEC_TIMEOUT'
  | 'OUTPUT_TOO_LARGE'
  | 'INVALID_INPUT';

/**
 * A connection to one destination host. Every call returns a `ResultAsync`; none throws.
 * Relative remote paths are resolved against the transport's root directory (the URL path).
 */
export interface Transport extends Executor {
  /** Which implementation this is. */
  readonly kind: 'local' | 'ssh2' | 'openssh';
  /** Root directory on the destination (default cwd of commands, base of relative paths). */
  readonly root: string;
  /**
   * Run `argv` at the destination, each argument quoted for its POSIX shell, streaming
   * `options.stdin` to it. Aborting kills the remote command and returns `ABORTED`.
   */
  exec(argv: readonly string[], options?: TransportExecOptions): ResultAsync<ExecResult, ApMigrateError>;
  /** Stream `source` into the file `remotePath` at the destination (created or replaced). */
  upload(source: Readable, remotePath: string, options?: UploadOptions): ResultAsync<UploadResult, ApMigrateError>;
  /** Read a whole (small) file back; larger than `maxBytes` is `FILE_TOO_LARGE`. */
  readFile(remotePath: string, options?: ReadFileOptions): ResultAsync<Buffer, ApMigrateError>;
  /**
   * Run `argv` there with its standard output as a stream, for output too large to capture (a
   * bundle packed on a remote source). `exit` settles when it has exited; a non-zero exit is
   * `EXEC_NONZERO` with `details.stderr`. Aborting kills it.
   */
  stream?(argv: readonly string[], options?: StreamOptions): ResultAsync<StreamedCommand, ApMigrateError>;
  /** Close the connection and stop anything this transport still runs remotely. Idempotent. */
  close(): ResultAsync<void, ApMigrateError>;
}
