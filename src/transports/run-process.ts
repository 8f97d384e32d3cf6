/**
 * One command's life, shared by every transport: stream stdin in (counting bytes for progress),
 * capture bounded stdout/stderr, and turn abort, timeout and early failures into typed errors.
 * The transport supplies the process (a child, an SSH channel) and how to kill it remotely.
 *
 * @module
 */
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ResultAsync } from 'neverthrow';
import { ApMigrateError } from '../errors.js';
import type { ExecResult } from '../spec/executor.js';
import type { ProgressCallback, TransferProgress, TransportExecOptions } from '../spec/transport.js';
import { asTransportError, errorMessage, TransportError } from './errors.js';

/** Default cap on captured stdout and stderr, each. */
export const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;

/** How a command ended. */
export interface ProcessExit {
  code: number | null;
  signal: string | null;
}

/** A started command as a transport sees it. */
export interface RunningProcess {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Settles when the command has ended; rejects (typed) when the connection carrying it died. */
  exited: Promise<ProcessExit>;
  /** Kill the command wherever it runs; resolves when that was attempted. Never rejects. */
  kill(): Promise<void>;
}

/** What {@link runProcess} needs besides the process. */
export interface RunProcessOptions {
  /** Human description (`ssh://root@h:22: tar -x`) for messages. */
  describe: string;
  stdin?: Readable | Uint8Array | string;
  signal?: AbortSignal;
  timeoutMs?: number;
  maxOutputBytes?: number;
  onProgress?: ProgressCallback;
  operation?: TransferProgress['operation'];
}

/** Captured output of a finished command. */
export interface RawResult extends ProcessExit {
  stdout: Buffer;
  stderr: Buffer;
}

/** Runs argv and returns raw output, throwing typed errors (exit codes not judged). */
export type RawExec = (argv: readonly string[], options: TransportExecOptions) => Promise<RawResult>;

/**
 * Keep what `stream` yields, up to `max` bytes; past that, call `onOverflow` (once per chunk) and
 * keep nothing more. Returns the bytes kept so far. Stream errors are the process's to report.
 */
export function collectBounded(stream: Readable, max: number, onOverflow: () => void): () => Buffer {
  const chunks: Buffer[] = [];
  let bytes = 0;
  stream.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > max) onOverflow();
    else chunks.push(chunk);
  });
  stream.on('error', () => {});
  return () => Buffer.concat(chunks);
}

/** Drive `process` to its end; see the module comment. Exit codes are not judged here. */
export async function runProcess(process: RunningProcess, options: RunProcessOptions): Promise<RawResult> {
  const run = startWatching(process, options);
  let exit: ProcessExit | undefined;
  try {
    exit = await process.exited;
  } catch (cause) {
    // The carrier died: record why, but nothing is left to kill.
    run.failure ??= ApMigrateError.isInstance(cause) ? cause : new TransportError('CONNECTION_LOST', String(cause), { cause });
  } finally {
    run.stopWatching();
  }
  if (run.killing) await run.killing;
  // The command has ended: whatever stdin it did not read will never be read; and after a
  // failure, the source must not stay half-read and pinned.
  releaseStdin(options.stdin, run.failure !== undefined);
  if (run.failure) throw run.failure;
  await run.feeding;
  return { code: exit?.code ?? null, signal: exit?.signal ?? null, stdout: run.stdout(), stderr: run.stderr() };
}

/** One command being watched: the first failure wins and kills it. */
interface Watch {
  failure: ApMigrateError | undefined;
  killing: Promise<void> | undefined;
  feeding: Promise<void>;
  stdout: () => Buffer;
  stderr: () => Buffer;
  fail(error: ApMigrateError): void;
  stopWatching(): void;
}

/** Capture output, arm abort and timeout, and start feeding stdin. */
function startWatching(process: RunningProcess, options: RunProcessOptions): Watch {
  const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const watch: Watch = {
    failure: undefined,
    killing: undefined,
    feeding: Promise.resolve(),
    stdout: () => Buffer.alloc(0),
    stderr: () => Buffer.alloc(0),
    fail(error) {
      if (watch.failure) return;
      watch.failure = error;
      watch.killing = process.kill();
    },
    stopWatching: () => undefined,
  };
  watch.stdout = collectBounded(process.stdout, max, () =>
    watch.fail(new TransportError('OUTPUT_TOO_LARGE', `${options.describe} printed more than ${max} bytes on stdout`)),
  );
  // stderr beyond the cap is dropped: it is only for messages.
  watch.stderr = collectBounded(process.stderr, max, () => undefined);
  watch.stopWatching = armAbortAndTimeout(options, options.describe, watch.fail);
  // A command that exits without reading all its stdin closes the pipe: not our error, the
  // exit code says what happened.
  process.stdin.on('error', () => {});
  watch.feeding = feedStdin(process.stdin, options).then(
    (fed) => {
      if (fed.kind === 'source-failed') {
        watch.fail(new TransportError('EXEC_FAILED', `Reading the data for ${options.describe} failed: ${errorMessage(fed.cause)}`, { cause: fed.cause }));
      }
    },
    () => undefined,
  );
  return watch;
}

/** Makes the error for an abort or a timeout (a transport's TransportError, the executor's ExecError). */
export type StopErrorFactory = (code: 'ABORTED' | 'EXEC_TIMEOUT', message: string) => ApMigrateError;

/**
 * Call `fail` on abort (at once when already aborted) and after `timeoutMs`, with the error
 * `errorFor` makes; returns the function that disarms both.
 */
export function armAbortAndTimeout(
  options: { signal?: AbortSignal | undefined; timeoutMs?: number | undefined },
  describe: string,
  fail: (error: ApMigrateError) => void,
  errorFor: StopErrorFactory = (code, message) => new TransportError(code, message),
): () => void {
  const onAbort = (): void => fail(errorFor('ABORTED', `Aborted: ${describe}`));
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const timer =
    options.timeoutMs !== undefined ? setTimeout(() => fail(errorFor('EXEC_TIMEOUT', `${describe} timed out after ${options.timeoutMs} ms`)), options.timeoutMs) : undefined;
  return () => {
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  };
}

/** Destroy a Readable stdin that will not be read to its end any more. */
function releaseStdin(stdin: RunProcessOptions['stdin'], failed: boolean): void {
  if (!(stdin instanceof Readable)) return;
  if (failed ? !stdin.destroyed : !stdin.readableEnded) stdin.destroy();
}

/**
 * How feeding stdin ended. A tagged value rather than a thrown Error subclass: the caller tells
 * "the source broke" (our failure) from "the command closed its stdin" (its exit code speaks).
 */
type StdinOutcome = { kind: 'fed' } | { kind: 'source-failed'; cause: unknown };

async function feedStdin(target: Writable, options: RunProcessOptions): Promise<StdinOutcome> {
  const input = options.stdin;
  const operation = options.operation ?? 'exec-stdin';
  if (input === undefined) {
    target.end();
    return { kind: 'fed' };
  }
  if (typeof input === 'string' || input instanceof Uint8Array) {
    const bytes = typeof input === 'string' ? Buffer.from(input) : input;
    target.end(bytes);
    options.onProgress?.({ operation, bytes: bytes.length });
    return { kind: 'fed' };
  }
  let sent = 0;
  let sourceFailed: { cause: unknown } | undefined;
  input.once('error', (cause) => {
    // pipeline() also destroys the source when the target failed first: not a source error.
    if (!target.destroyed) sourceFailed = { cause };
  });
  const counter = new Transform({
    // Large chunks mean fewer callbacks and fewer, fuller SSH packets.
    highWaterMark: 1024 * 1024,
    transform(chunk: Buffer, _encoding, callback) {
      sent += chunk.length;
      options.onProgress?.({ operation, bytes: sent });
      callback(null, chunk);
    },
  });
  try {
    await pipeline(input, counter, target);
  } catch {
    if (sourceFailed) return { kind: 'source-failed', cause: sourceFailed.cause };
    // Otherwise the command closed its stdin early; its exit status tells the story.
  }
  return { kind: 'fed' };
}

/** Judge a finished command's exit: non-zero is `EXEC_NONZERO` unless allowed. */
export function judgeExit(raw: RawResult, describe: string, argv: readonly string[], allowNonZeroExit: boolean | undefined): RawResult {
  if (raw.code === 0 || allowNonZeroExit) return raw;
  const stderr = raw.stderr.toString('utf8').trim();
  throw new TransportError('EXEC_NONZERO', `${describe} exited with ${raw.code ?? raw.signal}${stderr ? `: ${stderr.slice(0, 500)}` : ''}`, {
    details: { argv: [...argv], code: raw.code, signal: raw.signal, stderr: stderr.slice(0, 4096) },
  });
}

/** `where: argv` for messages, the command cut at 200 characters. */
export function describeCommand(where: string, argv: readonly string[]): string {
  return `${where}: ${argv.join(' ').slice(0, 200)}`;
}

/**
 * `Transport.exec` over a transport's raw runner: judge the exit, decode the output as UTF-8,
 * and turn whatever was thrown into an SDK error.
 */
export function judgedExec(execRaw: RawExec, describe: string, argv: readonly string[], options: TransportExecOptions): ResultAsync<ExecResult, ApMigrateError> {
  return ResultAsync.fromPromise(
    execRaw(argv, options).then((raw) => {
      const judged = judgeExit(raw, describe, argv, options.allowNonZeroExit);
      return { code: judged.code, signal: judged.signal, stdout: judged.stdout.toString('utf8'), stderr: judged.stderr.toString('utf8') };
    }),
    (e) => asTransportError(e),
  );
}
