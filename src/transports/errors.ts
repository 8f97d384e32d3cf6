/**
 * The error class every transport returns.
 *
 * @module
 */
import { ApMigrateError, type ApMigrateErrorOptions } from '../errors.js';
import type { TransportErrorCode } from '../spec/transport.js';

/** Codes whose failure may go away if the same call is simply tried again. */
const RETRYABLE: ReadonlySet<TransportErrorCode> = new Set(['CONNECTION_LOST', 'CONNECT_TIMEOUT', 'EXEC_TIMEOUT']);

/** A transport operation failed; `code` says how, `isRetryable` whether to try again. */
export class TransportError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.TransportError');
  }

  /** Whether `value` is a TransportError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is TransportError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.TransportError');
  }

  /** The stable code, narrowed to transport codes. */
  declare readonly code: TransportErrorCode;

  constructor(code: TransportErrorCode, message: string, options: ApMigrateErrorOptions = {}) {
    super(code, message, { ...options, isRetryable: options.isRetryable ?? RETRYABLE.has(code) });
  }
}

/**
 * The message of an Error, else `String(value)`. Not `instanceof Error`: an error from another
 * realm (a vm context, a worker's structured clone) would be missed. `Object.prototype.toString`
 * reads the internal slot every real Error has, whichever realm or subclass made it.
 */
export function errorMessage(value: unknown): string {
  const isError = Object.prototype.toString.call(value) === '[object Error]';
  const message = isError ? (value as { message?: unknown }).message : undefined;
  return typeof message === 'string' ? message : String(value);
}

/** Wrap anything thrown into a {@link TransportError}, keeping SDK errors as they are. */
export function asTransportError(value: unknown, fallback: TransportErrorCode = 'EXEC_FAILED'): ApMigrateError {
  if (ApMigrateError.isInstance(value)) return value;
  return new TransportError(fallback, errorMessage(value), { cause: value });
}
