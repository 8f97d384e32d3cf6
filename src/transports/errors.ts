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

/** Wrap anything thrown into a {@link TransportError}, keeping SDK errors as they are. */
export function asTransportError(value: unknown, fallback: TransportErrorCode = 'EXEC_FAILED'): ApMigrateError {
  if (ApMigrateError.isInstance(value)) return value;
  const message = value instanceof Error ? value.message : String(value);
  return new TransportError(fallback, message, { cause: value });
}
