/**
 * Executor: runs a command on some host (this machine, or one reached over SSH).
 * Profilers for remote platforms (FreeBSD) and deployers talk to hosts only through it.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';

/** Options for one command run. */
export interface ExecOptions {
  /** Working directory on the host. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Bytes streamed to the command's standard input. */
  stdin?: Readable | Uint8Array | string;
  /** Abort the command (it is killed). */
  signal?: AbortSignal;
  /** Kill the command after this many milliseconds. */
  timeoutMs?: number;
  /** Resolve even when the exit code is not 0 (default: a non-zero exit is an error). */
  allowNonZeroExit?: boolean;
  /** Cap on captured stdout/stderr bytes each (default 16 MiB); more is an error, never silent truncation. */
  maxOutputBytes?: number;
}

/** What a finished command produced. */
export interface ExecResult {
  /** Exit code (null when killed by a signal). */
  code: number | null;
  /** The signal that ended it, if any. */
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs argv arrays on one host. Arguments are never interpreted by a shell unquoted. */
export interface Executor {
  /** A short description of the host, for messages (`local`, `ssh://user@host:22`). */
  readonly description: string;
  /** Run `argv` (argv[0] is the program) and capture its output. */
  exec(argv: readonly string[], options?: ExecOptions): ResultAsync<ExecResult, ApMigrateError>;
}
