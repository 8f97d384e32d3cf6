/**
 * The error deployers return, with its codes.
 *
 * @module
 */
import { ApMigrateError } from '../errors.js';

/** Codes of deployment errors. */
export type DeployErrorCode =
  | 'PREFLIGHT_FAILED'
  | 'DESTINATION_EXISTS'
  | 'INSUFFICIENT_SPACE'
  | 'TOOL_MISSING'
  | 'PLATFORM_MISMATCH'
  | 'RECEIVE_FAILED'
  | 'RECEIVER_MISSING'
  | 'ACTIVATE_FAILED'
  | 'START_FAILED'
  | 'HEALTH_CHECK_FAILED'
  | 'ROLLBACK_FAILED'
  | 'UNSAFE_PROFILE'
  | 'UNSAFE_BUNDLE'
  | 'PARSE_FAILED'
  | 'CAPABILITY_MISSING';

/**
 * A deployment step failed at the destination. `code` is usually a {@link DeployErrorCode}, but
 * stays a `string`: an error the destination's receiver reports keeps the receiver's own code
 * (a bundle code such as `BUNDLE_HASH_MISMATCH`, `INVALID_INPUT`, `RECEIVER_CRASHED`), and a
 * receiver left there by another version may send codes this one does not know.
 */
export class DeployError extends ApMigrateError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.DeployError');
  }

  /** Whether `value` is a DeployError (or a JailCapabilityError) from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is DeployError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.DeployError');
  }

  constructor(code: DeployErrorCode | string, message: string, options: { cause?: unknown; isRetryable?: boolean; details?: Record<string, unknown> } = {}) {
    super(code, message, options);
  }
}

