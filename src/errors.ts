/**
 * Error classes shared by every layer.
 *
 * Every fallible public call returns a neverthrow `Result`/`ResultAsync` whose error side is an
 * {@link ApMigrateError}: a class with a stable `code` for programs, a sentence for people,
 * the underlying `cause`, and `isRetryable` so orchestrators know whether trying again can help.
 * This module is pure (no `node:` imports) so the policy core can use it.
 *
 * Check errors with the static `isInstance` of a class (`InvalidInputError.isInstance(e)`), not
 * with `instanceof`: an app that loads both the ESM and the CommonJS build (or two versions) holds
 * two copies of every class, and `instanceof` answers only for its own copy. Every class marks its
 * prototype with `Symbol.for('ap-migrate.error…')`, which all copies share.
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

/** Key of the marker every error of this package carries: `Symbol.for('ap-migrate.error')`. */
const MARKER = 'ap-migrate.error';

// Module functions rather than code in the class body: a class that names itself in its own body
// is emitted by esbuild as `class _ApMigrateError`, which would change `name` (`new.target.name`).
function markClass(cls: abstract new (...args: never[]) => ApMigrateError, key: string): void {
  Object.defineProperty(cls.prototype, Symbol.for(key), { value: true });
}

function hasMarker(value: unknown, key: string): boolean {
  if (typeof value !== 'object' || value === null) return false;
  try {
    return (value as Record<symbol, unknown>)[Symbol.for(key)] === true;
  } catch {
    return false; // a revoked Proxy, a throwing getter
  }
}

/**
 * Base class of every error the SDK returns. Check with {@link ApMigrateError.isInstance}, which
 * works across copies of the package; `instanceof` does not.
 */
export class ApMigrateError extends Error {
  static {
    markClass(this, MARKER);
  }

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

  /**
   * Whether `value` is an ApMigrateError (or any subclass) made by **any** copy of this package:
   * the ESM and the CommonJS build, two versions side by side, another realm. Never throws, and
   * works unbound (`errors.filter(ApMigrateError.isInstance)`). Each subclass has its own
   * (`TransportError.isInstance` ...); a subclass that defines none answers with `instanceof`
   * for itself, so that it never answers for the whole family.
   */
  static isInstance(value: unknown): value is ApMigrateError {
    // Called through a subclass that has no isInstance of its own: same copy only, never "any SDK error".
    if (typeof this === 'function' && !Object.hasOwn(this, 'isInstance')) return value instanceof this;
    return hasMarker(value, MARKER);
  }

  /**
   * Mark the instances of `cls` with `Symbol.for(key)`: a non-enumerable `true` on its prototype,
   * so that no instance changes shape. Each subclass calls it once, in a static block, with its own
   * key (`ap-migrate.error.<ClassName>`), and checks it in its own `isInstance` with {@link ApMigrateError.hasMarker}.
   */
  protected static markClass(cls: abstract new (...args: never[]) => ApMigrateError, key: string): void {
    markClass(cls, key);
  }

  /** Whether `value` carries the marker `Symbol.for(key)` (see {@link ApMigrateError.markClass}); never throws. */
  protected static hasMarker(value: unknown, key: string): boolean {
    return hasMarker(value, key);
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

/** Codes of the errors defined in this module, the ones the policy core returns. */
export type PolicyErrorCode = 'INVALID_INPUT' | 'UNKNOWN_METHOD' | 'NO_ALLOWED_METHOD';

/** External input (a profile, options, a manifest, CLI flags) failed validation. */
export class InvalidInputError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.InvalidInputError');
  }

  /** Whether `value` is an InvalidInputError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is InvalidInputError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.InvalidInputError');
  }

  /** Always `INVALID_INPUT`. */
  declare readonly code: 'INVALID_INPUT';
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
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.UnknownMethodError');
  }

  /** Whether `value` is an UnknownMethodError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is UnknownMethodError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.UnknownMethodError');
  }

  /** Always `UNKNOWN_METHOD`. */
  declare readonly code: 'UNKNOWN_METHOD';

  constructor(method: string, known: readonly string[]) {
    super('UNKNOWN_METHOD', `Unknown isolation method "${method}"; known methods: ${known.join(', ')}`, {
      details: { method, known },
    });
  }
}

/** No candidate isolation method is allowed for the program's resources and the options. */
export class NoAllowedMethodError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.NoAllowedMethodError');
  }

  /** Whether `value` is a NoAllowedMethodError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is NoAllowedMethodError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.NoAllowedMethodError');
  }

  /** Always `NO_ALLOWED_METHOD`. */
  declare readonly code: 'NO_ALLOWED_METHOD';

  constructor(message: string, details: Record<string, unknown>) {
    super('NO_ALLOWED_METHOD', message, { details });
  }
}

/** The union of errors `planMigration` can return. */
export type PlanError = InvalidInputError | UnknownMethodError | NoAllowedMethodError;

/** Stable codes of the errors the orchestration layer (`migrate()`, sources, packagers) returns itself. */
export type MigrationErrorCode =
  /** The plan chose a method no deployer is registered for. */
  | 'NO_DEPLOYER'
  /** The caller's signal fired. */
  | 'ABORTED'
  /** A plug-in threw instead of returning a Result. */
  | 'MIGRATION_FAILED'
  /** The source program is not running (any more). */
  | 'SOURCE_GONE'
  /** The source cannot stream what the packager must read there. */
  | 'SOURCE_CANNOT_PACK'
  /** A command on the source host failed. */
  | 'SOURCE_COMMAND_FAILED';

/** An error of the orchestration layer itself (the phases' own errors keep their classes). */
export class MigrationError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.MigrationError');
  }

  /** Whether `value` is a MigrationError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is MigrationError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.MigrationError');
  }

  /** The stable code, narrowed to orchestration codes. */
  declare readonly code: MigrationErrorCode;

  constructor(code: MigrationErrorCode, message: string, options: ApMigrateErrorOptions = {}) {
    super(code, message, options);
  }
}

/** Turn anything thrown into an Error without losing it. */
export function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
