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
  | 'UNSAFE_BUNDLE';

/** A deployment step failed at the destination. */
export class DeployError extends ApMigrateError {
  constructor(code: DeployErrorCode | string, message: string, options: { cause?: unknown; isRetryable?: boolean; details?: Record<string, unknown> } = {}) {
    super(code, message, options);
  }
}

