/**
 * `Transport.stream` over any transport's {@link RunningProcess}: the command's stdout handed
 * back as a stream (backpressure reaches the remote command: nothing is read faster than the
 * caller reads), its stderr captured (bounded), its exit judged like `exec` judges it.
 *
 * @module
 */
import { PassThrough } from 'node:stream';
import { ResultAsync } from 'neverthrow';
import { ApMigrateError } from '../errors.js';
import type { StreamedCommand, StreamOptions } from '../spec/source.js';
import { asTransportError, TransportError } from './errors.js';
import { armAbortAndTimeout, collectBounded, judgeExit, type ProcessExit, type RunningProcess } from './run-process.js';

/** Cap on a streamed command's captured stderr (it is only for messages and replies). */
export const STREAM_STDERR_MAX = 1024 * 1024;

/** What {@link streamProcess} needs besides the process. */
export interface StreamHooks {
  /** `where: argv`, for messages. */
  describe: string;
  argv: readonly string[];
  /** Look at an exit before it is judged; throw a typed error when it was the carrier's failure (ssh's 255). */
  explain?: (exit: ProcessExit, stderr: string) => Promise<void>;
  /** Called once when the command is over, however it ended (bookkeeping of running commands). */
  onEnd?: () => void;
}

/** Write `stdin` (or nothing) and close the command's input. */
function feed(process: RunningProcess, stdin: StreamOptions['stdin']): void {
  // A command that exits without reading its stdin closes the pipe: its exit code speaks.
  process.stdin.on('error', () => {});
  process.stdin.end(stdin === undefined ? undefined : typeof stdin === 'string' ? Buffer.from(stdin) : stdin);
}

/** Drive a started command whose stdout the caller reads; see the module comment. */
export function streamProcess(process: RunningProcess, options: StreamOptions, hooks: StreamHooks): StreamedCommand {
  const stdout = new PassThrough({ highWaterMark: 1024 * 1024 });
  let failure: ApMigrateError | undefined;
  const fail = (error: ApMigrateError): void => {
    if (failure) return;
    failure = error;
    if (!stdout.destroyed) stdout.destroy(error);
    // Nobody reads any more: drain, or a channel waiting for its reader never reports its end.
    process.stdout.unpipe(stdout);
    process.stdout.resume();
    void process.kill();
  };
  // pipe() pauses the command's output while the caller does not read: that is the backpressure.
  process.stdout.pipe(stdout);
  process.stdout.on('error', () => {});
  // A reader that gives up (destroys the stream) must not leave the command blocked forever.
  stdout.on('close', () => {
    if (!process.stdout.readableEnded) fail(new TransportError('ABORTED', `${hooks.describe}: its output was closed by the reader`));
  });
  const stderr = collectBounded(process.stderr, STREAM_STDERR_MAX, () => undefined);
  const disarm = armAbortAndTimeout({ signal: options.signal }, hooks.describe, fail);
  feed(process, options.stdin);
  const work = async (): Promise<{ stderr: string }> => {
    try {
      let exit: ProcessExit = { code: null, signal: null };
      try {
        exit = await process.exited;
      } catch (cause) {
        fail(ApMigrateError.isInstance(cause) ? cause : new TransportError('CONNECTION_LOST', String(cause), { cause }));
      }
      if (failure) throw failure;
      const text = stderr();
      await hooks.explain?.(exit, text.toString('utf8'));
      judgeExit({ ...exit, stdout: Buffer.alloc(0), stderr: text }, hooks.describe, hooks.argv, false);
      return { stderr: text.toString('utf8') };
    } catch (error) {
      // The output must not look complete when the command failed.
      if (!stdout.destroyed && !stdout.writableEnded) stdout.destroy(asTransportError(error));
      throw error;
    } finally {
      disarm();
      hooks.onEnd?.();
    }
  };
  return { stdout, exit: ResultAsync.fromPromise(work(), (e) => asTransportError(e)) };
}
