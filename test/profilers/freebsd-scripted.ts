/**
 * Scripted Executors for the FreeBSD tests: no FreeBSD host exists here, so the profiler talks to
 * an Executor that answers the exact argv it sends with samples of the tools' output written
 * from their documented formats (test/fixtures/freebsd), and records every call.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { errAsync, okAsync } from 'neverthrow';
import { expect } from 'vitest';
import { ApMigrateError } from '../../src/errors.js';
import type { ExecOptions, ExecResult, Executor } from '../../src/spec/executor.js';

/** The FreeBSD samples. */
export const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'freebsd');
/** How every sample starts: it says it was written from documentation, not captured. */
export const MARK = '# Written by hand from the documented output format of';

/** A sample without its header comment (which says it was not captured from a real host). */
export function sample(name: string): string {
  const text = readFileSync(join(FIXTURES, name), 'utf8');
  const [first, ...rest] = text.split('\n');
  expect(first!.startsWith(MARK)).toBe(true);
  return rest.join('\n');
}

/** A canned reply to one command. */
export interface Reply {
  stdout?: string;
  stderr?: string;
  code?: number;
}

/** An Executor that replays canned replies by exact argv and records every call with its options. */
export function scripted(replies: Record<string, Reply>): Executor & { calls: string[][]; options: ExecOptions[] } {
  const calls: string[][] = [];
  const options: ExecOptions[] = [];
  return {
    description: 'scripted',
    calls,
    options,
    exec(argv, opts = {}) {
      calls.push([...argv]);
      options.push(opts);
      const reply = replies[JSON.stringify(argv)];
      if (!reply) return errAsync(new ApMigrateError('UNEXPECTED_COMMAND', `The test did not script ${JSON.stringify(argv)}`));
      const result: ExecResult = { code: reply.code ?? 0, signal: null, stdout: reply.stdout ?? '', stderr: reply.stderr ?? '' };
      if (result.code !== 0 && !opts.allowNonZeroExit) return errAsync(new ApMigrateError('EXEC_NONZERO', `exit ${result.code}`));
      return okAsync(result);
    },
  };
}

/** The key of a reply in {@link scripted}. */
export const key = (...argv: string[]) => JSON.stringify(argv);
