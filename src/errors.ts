/**
 * Error classes shared by every layer.
 *
 * Every fallible public call returns a neverthrow `Result`/`ResultAsync` whose error side is an
 * {@link ApMigrateError}: a class with a stable `code` for programs, a sentence for people,
 * the underlying `cause`, and `isRetryable` so orchestrators know whether trying again can help.
 * This module is pure (no `node:` imports) so the policy core can use it.
 *
 * @module
 */

/** Options accepted by every {@link ApMigrateError} constructor. */
export interface ApMigrateErrorOptions {
  /** The lower-level error or value that caused this one. */
  cause?: unknown;
  /** Whether the same call may succeed if tried again unchanged. */
  isRetryable?: boolean;
  /** Structured facts for programs (field paths, pids, hosts ...). */
  details?: Record<string, unknown>;
}

/** Base class of every error the SDK returns. */
export class ApMigrateError extends Error {
  /** A stable machine-readable code, e.g. `INVALID_INPUT`. Never changes between versions. */
  readonly code: string;
  /** Whether retrying the same call unchanged may succeed (network cuts, timeouts). */
  readonly isRetryable: boolean;
  /** Structured facts about the failure. */
  readonly details: Record<string, unknown>;
  override readonly cause: unknown;

  constructor(code: string, message: string, options: ApMigrateErrorOptions = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.cause = options.cause;
    this.isRetryable = options.isRetryable ?? false;
    this.details = options.details ?? {};
  }

  /** A plain object safe to print as JSON. */
  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      isRetryable: this.isRetryable,
      details: this.details,
      cause: this.cause instanceof Error ? { name: this.cause.name, message: this.cause.message } : this.cause,
    };
  }
}

/** One problem found in external input, naming the field it concerns. */
export interface InputIssue {
  /** Dotted path of the offending field, e.g. `files.3.size`; empty for the whole value. */
  path: string;
  /** What is wrong, in words. */
  message: string;
}

/** External input (a profile, options, a manifest, CLI flags) failed validation. */
export class InvalidInputError extends ApMigrateError {
  /** Every problem found, each naming its field. */
  readonly issues: readonly InputIssue[];

  constructor(what: string, issues: readonly InputIssue[], options: ApMigrateErrorOptions = {}) {
    const first = issues[0];
    const where = first ? (first.path ? ` at \`${first.path}\`` : '') + `: ${first.message}` : '';
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
    super('INVALID_INPUT', `Invalid ${what}${where}${more}`, {
      ...options,
      details: { ...options.details, what, issues },
    });
    this.issues = issues;
  }
}

/** A method id was named that no registered isolation method has. */
export class UnknownMethodError extends ApMigrateError {
  constructor(method: string, known: readonly string[]) {
    super('UNKNOWN_METHOD', `Unknown isolation method "${method}"; known methods: ${known.join(', ')}`, {
      details: { method, known },
    });
  }
}

/** No candidate isolation method is allowed for the program's resources and the options. */
export class NoAllowedMethodError extends ApMigrateError {
  constructor(message: string, details: Record<string, unknown>) {
    super('NO_ALLOWED_METHOD', message, { details });
  }
}

/** The union of errors `planMigration` can return. */
export type PlanError = InvalidInputError | UnknownMethodError | NoAllowedMethodError;

/** Turn anything thrown into an Error without losing it. */
export function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
