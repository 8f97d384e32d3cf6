/**
 * Executor for this machine: spawns argv directly (no shell), streams stdin, captures output.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { errAsync, ResultAsync } from 'neverthrow';
import { ApMigrateError, InvalidInputError, type InputIssue } from '../errors.js';
import type { ExecOptions, ExecResult, Executor } from '../spec/executor.js';

const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;

/** A command could not be run, failed, timed out or was aborted. */
export class ExecError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.ExecError');
  }

  /** Whether `value` is an ExecError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is ExecError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.ExecError');
  }

  constructor(
    code: 'EXEC_FAILED' | 'EXEC_NONZERO' | 'EXEC_TIMEOUT' | 'ABORTED' | 'OUTPUT_TOO_LARGE',
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown>; isRetryable?: boolean } = {},
  ) {
    super(code, message, options);
  }
}

/** Render argv for messages (not for execution); never throws, whatever it is given. */
export function describeArgv(argv: readonly string[]): string {
  if (!Array.isArray(argv)) return typeof argv === 'string' ? JSON.stringify(argv) : String(argv);
  return argv.map((a: unknown) => (typeof a === 'string' && /^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a) ?? String(a))).join(' ');
}

/** Problems with an argv array: a non-empty array of strings without NUL bytes, with a program name. */
function argvIssues(argv: unknown): InputIssue[] {
  if (!Array.isArray(argv)) return [{ path: 'argv', message: `must be an array of strings (program first), got ${argv === null ? 'null' : typeof argv}` }];
  if (argv.length === 0) return [{ path: 'argv', message: 'must not be empty: nothing to run' }];
  const issues: InputIssue[] = [];
  argv.forEach((arg: unknown, i) => {
    if (typeof arg !== 'string') issues.push({ path: `argv.${i}`, message: 'must be a string' });
    else if (arg.includes('\0')) issues.push({ path: `argv.${i}`, message: 'must not contain a NUL byte' });
  });
  if (argv[0] === '') issues.push({ path: 'argv.0', message: 'the program name must not be empty' });
  return issues;
}

/** Problems with {@link ExecOptions}, each naming its field (`''` for the whole value). */
function execOptionsIssues(options: unknown): InputIssue[] {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return [{ path: '', message: 'options must be an object' }];
  const o = options as Record<string, unknown>;
  const issues: InputIssue[] = [];
  if (o.cwd !== undefined && (typeof o.cwd !== 'string' || o.cwd === '' || o.cwd.includes('\0'))) issues.push({ path: 'cwd', message: 'must be a non-empty path without NUL bytes' });
  if (o.env !== undefined) {
    if (typeof o.env !== 'object' || o.env === null || Array.isArray(o.env)) {
      issues.push({ path: 'env', message: 'must be an object of strings' });
    } else {
      for (const [name, value] of Object.entries(o.env)) {
        if (name === '' || name.includes('=') || name.includes('\0')) issues.push({ path: `env.${name}`, message: 'is not a valid variable name' });
        else if (typeof value !== 'string' || value.includes('\0')) issues.push({ path: `env.${name}`, message: 'must be a string without NUL bytes' });
      }
    }
  }
  const stdin = o.stdin;
  if (stdin !== undefined && typeof stdin !== 'string' && !(stdin instanceof Uint8Array) && typeof (stdin as { pipe?: unknown } | null)?.pipe !== 'function') {
    issues.push({ path: 'stdin', message: 'must be a string, a Uint8Array or a Readable' });
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) issues.push({ path: 'signal', message: 'must be an AbortSignal' });
  if (o.timeoutMs !== undefined && !(typeof o.timeoutMs === 'number' && Number.isFinite(o.timeoutMs) && o.timeoutMs > 0)) {
    issues.push({ path: 'timeoutMs', message: 'must be a positive finite number of milliseconds' });
  }
  if (o.allowNonZeroExit !== undefined && typeof o.allowNonZeroExit !== 'boolean') issues.push({ path: 'allowNonZeroExit', message: 'must be true or false' });
  if (o.maxOutputBytes !== undefined && !(Number.isSafeInteger(o.maxOutputBytes) && (o.maxOutputBytes as number) > 0)) {
    issues.push({ path: 'maxOutputBytes', message: 'must be a positive integer' });
  }
  return issues;
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

/**
 * An {@link Executor} that runs commands on this machine. A malformed argv (not a non-empty array
 * of strings without NUL bytes) or options is an {@link InvalidInputError}; `exec` never throws.
 */
export function createLocalExecutor(): Executor {
  return {
    description: 'local',
    exec: (argv, options = {}) => {
      const issues = [...argvIssues(argv), ...execOptionsIssues(options)];
      if (issues.length > 0) return errAsync(new InvalidInputError('command', issues));
      return ResultAsync.fromPromise(runLocal(argv, options), (e) =>
        ApMigrateError.isInstance(e) ? e : new ExecError('EXEC_FAILED', String(e), { cause: e }),
      );
    },
  };
}
