/**
 * The local transport: the destination is this machine (a directory on it). Commands are
 * spawned directly, without any shell, in their own process group so an abort kills all of it.
 * The embedded default for demos and for tests that need no network.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, basename, isAbsolute, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ReadFileOptions, Transport, TransportExecOptions, UploadOptions, UploadResult } from '../spec/transport.js';
import { asTransportError, errorMessage, TransportError } from './errors.js';
import { describeArgv } from './quote.js';
import { judgedExec, runProcess, type ProcessExit, type RawResult, type RunningProcess } from './run-process.js';
import { DEFAULT_MAX_READ } from './remote-files.js';
import { streamProcess } from './stream-command.js';
import type { StreamedCommand, StreamOptions } from '../spec/source.js';

/** Options for {@link createLocalTransport}. */
export interface LocalTransportOptions {
  /** Destination directory: default cwd of commands and base of relative paths (default: process cwd). */
  root?: string;
}

function spawnLocal(argv: readonly string[], cwd: string, env: Record<string, string> | undefined): RunningProcess {
  const [program, ...args] = argv;
  const child = spawn(program ?? '', args, {
    cwd,
    env: env ? { ...process.env, ...env } : process.env,
    stdio: ['pipe', 'pipe', 'pipe'],
    // Own process group: abort kills the command and anything it started.
    detached: true,
  });
  const exited = new Promise<ProcessExit>((resolvePromise, reject) => {
    child.once('error', (cause) =>
      reject(new TransportError('EXEC_FAILED', `Cannot run ${describeArgv(argv)}: ${cause.message}`, { cause })),
    );
    child.once('close', (code, signal) => resolvePromise({ code, signal }));
  });
  return {
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    exited,
    kill: async () => {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      await exited.catch(() => undefined);
    },
  };
}

/** What one local transport holds; its methods are the module functions below. */
interface LocalState {
  /** Absolute destination directory. */
  readonly root: string;
  /** Commands running now: close kills them. */
  readonly running: Set<RunningProcess>;
  closed: boolean;
}

/** `path` on this machine: absolute stays, relative is under the root. */
function at(state: LocalState, path: string): string {
  return isAbsolute(path) ? path : resolve(state.root, path);
}

const closedError = () => new TransportError('TRANSPORT_CLOSED', 'The local transport was closed');

/** Refuse what no command can be run with: closed transport, empty argv, NUL bytes, an abort. */
function checkRunnable(state: LocalState, argv: readonly string[], signal: AbortSignal | undefined): void {
  if (state.closed) throw closedError();
  if (argv.length === 0 || !argv[0]) throw new TransportError('INVALID_INPUT', 'Empty argv: nothing to run');
  const withNul = argv.findIndex((a) => a.includes('\0'));
  if (withNul >= 0) throw new TransportError('INVALID_INPUT', `argv[${withNul}] contains a NUL byte, which no command can receive`);
  if (signal?.aborted) throw new TransportError('ABORTED', `Aborted before running ${describeArgv(argv)}`);
}

async function execRaw(state: LocalState, argv: readonly string[], opts: TransportExecOptions): Promise<RawResult> {
  checkRunnable(state, argv, opts.signal);
  const child = spawnLocal(argv, opts.cwd !== undefined ? at(state, opts.cwd) : state.root, opts.env);
  state.running.add(child);
  try {
    return await runProcess(child, { ...opts, describe: describeArgv(argv) });
  } finally {
    state.running.delete(child);
  }
}

/** A command whose stdout the caller reads as a stream (see {@link streamProcess}). */
function streamLocal(state: LocalState, argv: readonly string[], opts: StreamOptions): ResultAsync<StreamedCommand, ApMigrateError> {
  try {
    checkRunnable(state, argv, opts.signal);
  } catch (error) {
    return errAsync(asTransportError(error));
  }
  const child = spawnLocal(argv, state.root, undefined);
  state.running.add(child);
  return okAsync(streamProcess(child, opts, { describe: describeArgv(argv), argv, onEnd: () => state.running.delete(child) }));
}

/** The caller's signal and the timeout as one signal (undefined when there is neither). */
function uploadSignal(opts: UploadOptions): AbortSignal | undefined {
  const signals = [opts.signal, opts.timeoutMs !== undefined ? AbortSignal.timeout(opts.timeoutMs) : undefined].filter((s): s is AbortSignal => s !== undefined);
  return signals.length > 0 ? AbortSignal.any(signals) : undefined;
}

/** Write to a temp name beside the target, then rename: a reader never sees a half file. */
function upload(state: LocalState, source: Readable, path: string, opts: UploadOptions = {}): ResultAsync<UploadResult, ApMigrateError> {
  if (state.closed) return errAsync(closedError());
  const target = at(state, path);
  const temp = resolve(dirname(target), `.${basename(target)}.ap-migrate-part-${randomBytes(6).toString('hex')}`);
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _e, callback) {
      bytes += chunk.length;
      opts.onProgress?.({ operation: 'upload', bytes });
      callback(null, chunk);
    },
  });
  const signal = uploadSignal(opts);
  const work = async (): Promise<UploadResult> => {
    try {
      await pipeline(source, counter, createWriteStream(temp, { mode: opts.mode ?? 0o600, flags: 'wx' }), signal ? { signal } : {});
      await rename(temp, target);
      return { remotePath: path, bytes };
    } catch (cause) {
      await rm(temp, { force: true });
      if (opts.signal?.aborted) throw new TransportError('ABORTED', `Upload to ${target} aborted`, { cause });
      if (signal?.aborted) throw new TransportError('EXEC_TIMEOUT', `Upload to ${target} timed out after ${opts.timeoutMs} ms`, { cause });
      throw new TransportError('UPLOAD_FAILED', `Cannot write ${target}: ${errorMessage(cause)}`, { cause });
    }
  };
  return ResultAsync.fromPromise(work(), (e) => asTransportError(e));
}

async function openForReading(target: string, path: string): Promise<FileHandle> {
  try {
    return await open(target, 'r');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new TransportError('FILE_NOT_FOUND', `${target} does not exist`, { cause, details: { path } });
    throw new TransportError('EXEC_FAILED', `Cannot read ${target}: ${errorMessage(cause)}`, { cause });
  }
}

/**
 * A regular file's bytes, at most `max`, read in a loop with a running count: the size may change while we read.
 * Plain `handle.read` calls rather than a stream over the fd, so no read is still pending when the handle closes.
 */
async function readBounded(handle: FileHandle, target: string, path: string, max: number, signal: AbortSignal | undefined): Promise<Buffer> {
  const stat = await handle.stat();
  if (!stat.isFile()) throw new TransportError('FILE_NOT_FOUND', `${target} is not a regular file`, { details: { path } });
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    if (signal?.aborted) throw new TransportError('ABORTED', `Reading ${target} aborted`);
    const chunk = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
    if (bytesRead === 0) return Buffer.concat(chunks, total);
    total += bytesRead;
    if (total > max) throw new TransportError('FILE_TOO_LARGE', `${target} is larger than ${max} bytes`, { details: { path, maxBytes: max } });
    chunks.push(chunk.subarray(0, bytesRead));
  }
}

const READ_CHUNK_BYTES = 64 * 1024;

function readFile(state: LocalState, path: string, opts: ReadFileOptions = {}): ResultAsync<Buffer, ApMigrateError> {
  if (state.closed) return errAsync(closedError());
  const target = at(state, path);
  const work = async (): Promise<Buffer> => {
    if (opts.signal?.aborted) throw new TransportError('ABORTED', `Reading ${target} aborted`);
    const handle = await openForReading(target, path);
    try {
      return await readBounded(handle, target, path, opts.maxBytes ?? DEFAULT_MAX_READ, opts.signal);
    } catch (cause) {
      if (opts.signal?.aborted) throw new TransportError('ABORTED', `Reading ${target} aborted`, { cause });
      throw cause;
    } finally {
      // A failed close must not replace the error that explains the read.
      await handle.close().catch(() => undefined);
    }
  };
  return ResultAsync.fromPromise(work(), (e) => asTransportError(e));
}

function close(state: LocalState): ResultAsync<void, ApMigrateError> {
  state.closed = true;
  return ResultAsync.fromSafePromise(Promise.all([...state.running].map((p) => p.kill())).then(() => undefined));
}

/** A {@link Transport} whose destination is this machine. Never fails to create. */
export function createLocalTransport(options: LocalTransportOptions = {}): Transport {
  const state: LocalState = { root: resolve(options.root ?? process.cwd()), running: new Set(), closed: false };
  return {
    kind: 'local',
    root: state.root,
    description: `local:${state.root}`,
    exec: (argv, opts = {}) => judgedExec((a, o) => execRaw(state, a, o), describeArgv(argv), argv, opts),
    upload: (source, path, opts) => upload(state, source, path, opts),
    readFile: (path, opts) => readFile(state, path, opts),
    stream: (argv, opts = {}) => streamLocal(state, argv, opts),
    close: () => close(state),
  };
}
