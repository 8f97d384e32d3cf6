/**
 * Executor for this machine: spawns argv directly (no shell), streams stdin, captures output.
 *
 * @module
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { errAsync, ResultAsync } from 'neverthrow';
import { ApMigrateError, InvalidInputError, type InputIssue } from '../errors.js';
import type { ExecOptions, ExecResult, Executor } from '../spec/executor.js';
import { describeArgv } from '../transports/quote.js';
import { armAbortAndTimeout, collectBounded } from '../transports/run-process.js';

export { describeArgv } from '../transports/quote.js';

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
  const [program, ...args] = argv;
  if (!program) return Promise.reject(new ExecError('EXEC_FAILED', 'Empty argv'));
  if (options.signal?.aborted) return Promise.reject(new ExecError('ABORTED', `Aborted before running ${describeArgv(argv)}`));
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      cwd: options.cwd,
      env: options.env ? { ...process.env, ...options.env } : process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const watch = watchChild(child, argv, options);
    child.on('close', (code, signal) => {
      watch.stopWatching();
      if (watch.failure) return reject(watch.failure);
      const outcome = judge(argv, options, { code, signal, stdout: watch.stdout().toString('utf8'), stderr: watch.stderr().toString('utf8') });
      return ExecError.isInstance(outcome) ? reject(outcome) : resolve(outcome);
    });
    feedStdin(child.stdin, options.stdin);
  });
}

/** A running child being watched: the first failure wins, and kills it. */
interface ChildWatch {
  failure: ApMigrateError | undefined;
  stdout: () => Buffer;
  stderr: () => Buffer;
  stopWatching: () => void;
}

/** Capture bounded output and arm abort, timeout and spawn failure. */
function watchChild(child: ChildProcessWithoutNullStreams, argv: readonly string[], options: ExecOptions): ChildWatch {
  const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const shown = describeArgv(argv);
  const watch: ChildWatch = { failure: undefined, stdout: () => Buffer.alloc(0), stderr: () => Buffer.alloc(0), stopWatching: () => undefined };
  const fail = (e: ApMigrateError) => {
    watch.failure ??= e;
    child.kill('SIGKILL');
  };
  watch.stdout = collectBounded(child.stdout, max, () => fail(new ExecError('OUTPUT_TOO_LARGE', `${shown} printed more than ${max} bytes`)));
  // stderr beyond the cap is dropped: it is only for messages.
  watch.stderr = collectBounded(child.stderr, max, () => undefined);
  watch.stopWatching = armAbortAndTimeout(options, shown, fail, (code, message) => new ExecError(code, message, code === 'EXEC_TIMEOUT' ? { isRetryable: true } : {}));
  child.on('error', (cause) => fail(new ExecError('EXEC_FAILED', `Cannot run ${shown}: ${cause.message}`, { cause })));
  return watch;
}

/** The result, or `EXEC_NONZERO` for a non-zero exit the caller did not allow. */
function judge(argv: readonly string[], options: ExecOptions, result: ExecResult): ExecResult | ExecError {
  if (result.code === 0 || options.allowNonZeroExit) return result;
  return new ExecError('EXEC_NONZERO', `${describeArgv(argv)} exited with ${result.code ?? result.signal}: ${result.stderr.trim().slice(0, 500)}`, {
    details: { argv: [...argv], ...result },
  });
}

function feedStdin(target: Writable, stdin: ExecOptions['stdin']): void {
  // A command that does not read its stdin closes the pipe early: that is not our error.
  target.on('error', () => {});
  if (stdin === undefined) target.end();
  else if (typeof stdin === 'string' || stdin instanceof Uint8Array) target.end(stdin);
  else (stdin as Readable).pipe(target);
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
