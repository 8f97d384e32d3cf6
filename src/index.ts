/**
 * ap-migrate: move an application program to another machine with the lightest isolation method
 * that isolates every resource it really uses.
 *
 * @packageDocumentation
 */
export * from './errors.js';
export * from './policy/index.js';
export type * from './spec/executor.js';
export type * from './spec/profiler.js';
export { createLocalExecutor, ExecError, describeArgv } from './exec/local.js';
export * from './bundle/index.js';
export * from './esxi/index.js';
