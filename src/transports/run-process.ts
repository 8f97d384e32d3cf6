/**
 * One command's life, shared by every transport: stream stdin in (counting bytes for progress),
 * capture bounded stdout/stderr, and turn abort, timeout and early failures into typed errors.
 * The transport supplies the process (a child, an SSH channel) and how to kill it remotely.
 *
 * @module
 */
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ApMigrateError } from '../errors.js';
import type { ProgressCallback, TransferProgress } from '../spec/transport.js';
import { TransportError } from './errors.js';

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

function collector(stream: Readable, max: number, onOverflow: () => void): () => Buffer {
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
  const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  let failure: ApMigrateError | undefined;
  let killing: Promise<void> | undefined;
  const fail = (error: ApMigrateError): void => {
    if (failure) return;
    failure = error;
    killing = process.kill();
  };
  const stdout = collector(process.stdout, max, () =>
    fail(new TransportError('OUTPUT_TOO_LARGE', `${options.describe} printed more than ${max} bytes on stdout`)),
  );
  const stderr = collector(process.stderr, max, () => {
    /* stderr beyond the cap is dropped: it is only for messages */
  });

  const onAbort = (): void => fail(new TransportError('ABORTED', `Aborted: ${options.describe}`));
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const timer =
    options.timeoutMs !== undefined
      ? setTimeout(
          () => fail(new TransportError('EXEC_TIMEOUT', `${options.describe} timed out after ${options.timeoutMs} ms`)),
          options.timeoutMs,
        )
      : undefined;

  // A command that exits without reading all its stdin closes the pipe: not our error, the
  // exit code says what happened.
  process.stdin.on('error', () => {});
  const feeding = feedStdin(process.stdin, options).catch((cause: unknown) => {
    if (cause instanceof SourceError) {
      fail(new TransportError('EXEC_FAILED', `Reading the data for ${options.describe} failed: ${cause.message}`, { cause: cause.cause }));
    }
  });

  let exit: ProcessExit | undefined;
  try {
    exit = await process.exited;
  } catch (cause) {
    if (!failure) failure = cause instanceof ApMigrateError ? cause : new TransportError('CONNECTION_LOST', String(cause), { cause });
  } finally {
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
  if (killing) await killing;
  if (failure) {
    // Do not leave the stdin source half-read and pinned.
    if (options.stdin instanceof Readable && !options.stdin.destroyed) options.stdin.destroy();
    throw failure;
  }
  // The command has ended: whatever stdin it did not read will never be read.
  if (options.stdin instanceof Readable && !options.stdin.readableEnded) options.stdin.destroy();
  await feeding;
  return { code: exit?.code ?? null, signal: exit?.signal ?? null, stdout: stdout(), stderr: stderr() };
}

class SourceError extends Error {}

async function feedStdin(target: Writable, options: RunProcessOptions): Promise<void> {
  const input = options.stdin;
  const operation = options.operation ?? 'exec-stdin';
  if (input === undefined) {
    target.end();
    return;
  }
  if (typeof input === 'string' || input instanceof Uint8Array) {
    const bytes = typeof input === 'string' ? Buffer.from(input) : input;
    target.end(bytes);
    options.onProgress?.({ operation, bytes: bytes.length });
    return;
  }
  let sent = 0;
  let sourceFailed: unknown;
  input.once('error', (e) => {
    // pipeline() also destroys the source when the target failed first: not a source error.
    if (!target.destroyed) sourceFailed = e;
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
  } catch (cause) {
    if (sourceFailed !== undefined) {
      const error = new SourceError(sourceFailed instanceof Error ? sourceFailed.message : String(sourceFailed));
      error.cause = sourceFailed;
      throw error;
    }
    // Otherwise the command closed its stdin early; its exit status tells the story.
  }
}

/** Judge a finished command's exit: non-zero is `EXEC_NONZERO` unless allowed. */
export function judgeExit(raw: RawResult, describe: string, argv: readonly string[], allowNonZeroExit: boolean | undefined): RawResult {
  if (raw.code === 0 || allowNonZeroExit) return raw;
  const stderr = raw.stderr.toString('utf8').trim();
  throw new TransportError('EXEC_NONZERO', `${describe} exited with ${raw.code ?? raw.signal}${stderr ? `: ${stderr.slice(0, 500)}` : ''}`, {
    details: { argv: [...argv], code: raw.code, signal: raw.signal, stderr: stderr.slice(0, 4096) },
  });
}
