/**
 * Turning zod failures into {@link InputIssue}s that name the offending field.
 *
 * @module
 */
import type { z } from 'zod';
import { InvalidInputError, type InputIssue } from '../errors.js';
import { err, ok, type Result } from 'neverthrow';

/** Convert a zod error into issues with dotted field paths. */
export function issuesFromZod(error: z.ZodError): InputIssue[] {
  return error.issues.map((issue) => ({
    path: issue.path.map((p) => String(p)).join('.'),
    message: issue.message,
  }));
}

/**
 * Validate `value` with `schema`; a JSON string is parsed first. `what` names the input in the
 * error message (e.g. "resource profile").
 */
export function validateInput<T>(
  schema: { safeParse(value: unknown): { success: true; data: T } | { success: false; error: z.ZodError } },
  value: unknown,
  what: string,
): Result<T, InvalidInputError> {
  let data = value;
  if (typeof value === 'string') {
    try {
      data = JSON.parse(value);
    } catch (cause) {
      return err(new InvalidInputError(what, [{ path: '', message: `not valid JSON: ${(cause as Error).message}` }], { cause }));
    }
  }
  const parsed = schema.safeParse(data);
  return parsed.success ? ok(parsed.data) : err(new InvalidInputError(what, issuesFromZod(parsed.error)));
}
