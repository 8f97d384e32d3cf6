/**
 * Executor for this machine: spawns argv directly (no shell), streams stdin, captures output.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { ResultAsync } from 'neverthrow';
import { ApMigrateError } from '../errors.js';
import type { ExecOptions, ExecResult, Executor } from '../spec/executor.js';

const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;

/** A command could not be run, failed, timed out or was aborted. */
export class ExecError extends ApMigrateError {
  constructor(
    code: 'EXEC_FAILED' | 'EXEC_NONZERO' | 'EXEC_TIMEOUT' | 'ABORTED' | 'OUTPUT_TOO_LARGE',
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown>; isRetryable?: boolean } = {},
  ) {
    super(code, message, options);
  }
}

/** Render argv for messages (not for execution). */
export function describeArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

function runLocal(argv: readonly string[], options: ExecOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const [program, ...args] = argv;
    if (!program) {
      reject(new ExecError('EXEC_FAILED', 'Empty argv'));
      return;
    }
    if (options.signal?.aborted) {
      reject(new ExecError('ABORTED', `Aborted before running ${describeArgv(argv)}`));
      return;
    }
    const child = spawn(program, args, {
      cwd: options.cwd,
      env: options.env ? { ...process.env, ...options.env } : process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    let failure: ExecError | undefined;
    const fail = (e: ExecError) => {
      failure ??= e;
      child.kill('SIGKILL');
    };
    child.stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > max) fail(new ExecError('OUTPUT_TOO_LARGE', `${describeArgv(argv)} printed more than ${max} bytes`));
      else out.push(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      errBytes += chunk.length;
      if (errBytes <= max) err.push(chunk);
    });
    const timer =
      options.timeoutMs !== undefined
        ? setTimeout(
            () => fail(new ExecError('EXEC_TIMEOUT', `${describeArgv(argv)} timed out after ${options.timeoutMs} ms`, { isRetryable: true })),
            options.timeoutMs,
          )
        : undefined;
    const onAbort = () => fail(new ExecError('ABORTED', `Aborted: ${describeArgv(argv)}`));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (cause) =>
      fail(new ExecError('EXEC_FAILED', `Cannot run ${describeArgv(argv)}: ${cause.message}`, { cause })),
    );
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (failure) return reject(failure);
      const result: ExecResult = {
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (code !== 0 && !options.allowNonZeroExit) {
        return reject(
          new ExecError('EXEC_NONZERO', `${describeArgv(argv)} exited with ${code ?? signal}: ${result.stderr.trim().slice(0, 500)}`, {
            details: { argv: [...argv], ...result },
          }),
        );
      }
      resolve(result);
    });
    // A command that does not read its stdin closes the pipe early: that is not our error.
    child.stdin.on('error', () => {});
    const stdin = options.stdin;
    if (stdin === undefined) child.stdin.end();
    else if (typeof stdin === 'string' || stdin instanceof Uint8Array) child.stdin.end(stdin);
    else (stdin as Readable).pipe(child.stdin);
  });
}

/** An {@link Executor} that runs commands on this machine. */
export function createLocalExecutor(): Executor {
  return {
    description: 'local',
    exec: (argv, options = {}) =>
      ResultAsync.fromPromise(runLocal(argv, options), (e) =>
        e instanceof ApMigrateError ? e : new ExecError('EXEC_FAILED', String(e), { cause: e }),
      ),
  };
}
