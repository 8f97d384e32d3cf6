/**
 * Source: the host the program runs on. `migrate()` reads it (capture), and freezes, thaws and
 * stops the program there, never on the orchestrator's machine unless that is the source.
 *
 * @module
 */
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { Executor } from './executor.js';

/** The host a program runs on, and what can be done to the program there. */
export interface Source {
  /** For messages: `local`, `ssh://user@host`. */
  readonly description: string;
  /** Runs commands on the source host (capture reads files and package data through it). */
  readonly executor: Executor;
  /** The pids of `pid`'s process tree (itself first, then its descendants) as they are now. */
  processTree(pid: number): ResultAsync<number[], ApMigrateError>;
  /** Stop the whole tree (it keeps its state; no file changes while frozen). Returns the pids frozen. */
  freeze(pid: number): ResultAsync<number[], ApMigrateError>;
  /** Let frozen processes run again. */
  thaw(pids: readonly number[]): ResultAsync<void, ApMigrateError>;
  /** Terminate the tree: SIGTERM (and SIGCONT, so a frozen process sees it), SIGKILL after `graceMs`. */
  stop(pid: number, graceMs?: number): ResultAsync<void, ApMigrateError>;
}
