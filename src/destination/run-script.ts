/**
 * Running fixed scripts at the destination. Scripts take their data as positional arguments
 * ("$@"), never spliced into the script text, so no file name can become shell syntax.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ExecResult } from '../spec/executor.js';
import type { Transport } from '../spec/transport.js';

/** Run a fixed POSIX sh script at the destination with `args` as "$@" (never spliced into the text). */
export function runScript(
  transport: Transport,
  script: string,
  args: readonly string[],
  options: { signal?: AbortSignal; stdin?: Readable; allowNonZeroExit?: boolean; timeoutMs?: number; cwd?: string } = {},
): ResultAsync<ExecResult, ApMigrateError> {
  return transport.exec(['sh', '-c', script, 'ap-migrate', ...args], {
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.stdin ? { stdin: options.stdin } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    allowNonZeroExit: options.allowNonZeroExit ?? false,
  });
}
