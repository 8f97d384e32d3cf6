/**
 * Complete capture of what a program needs (see `capture.ts`).
 *
 * @module
 */
export { captureProgram, type CaptureOptions } from './capture.js';
export { summarizeReasons, type ReasonSummary } from './summary.js';
