/**
 * Source: the host the program runs on. `migrate()` reads it (capture), and freezes, thaws and
 * stops the program there, never on the orchestrator's machine unless that is the source.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { Executor } from './executor.js';

/** Options of {@link Source.stream}. */
export interface StreamOptions {
  /** Bytes written to the command's standard input. */
  stdin?: string | Uint8Array;
  /** Kill the command. */
  signal?: AbortSignal;
}

/** A command running on the source host, its output still flowing. */
export interface StreamedCommand {
  /** The command's standard output. */
  stdout: Readable;
  /** Settles when the command has exited: its stderr, or an error for a non-zero exit (with its stderr). */
  exit: ResultAsync<{ stderr: string }, ApMigrateError>;
}

/**
 * How a {@link Source} froze a program: its own cgroup by the cgroup v2 freezer
 * (`cgroup.freeze`) or the v1 `freezer` controller (`freezer.state`), or `SIGSTOP` to every
 * process of its tree.
 */
export type FreezerKind = 'cgroup-v2' | 'cgroup-v1' | 'sigstop';

/**
 * What {@link Source.freeze} returns: the pids frozen, still an array (callers that take
 * `number[]` keep working), with `freezer` saying how, where the source tells, and
 * `freezerNote` why not by a cgroup (non-enumerable properties: JSON and spreads keep the pids only).
 */
export type FrozenPids = number[] & {
  readonly freezer?: FreezerKind;
  /** With `sigstop`: why no cgroup froze the tree (`no cgroup of its own`, `cgroup-v1 /x: foreign 77`). */
  readonly freezerNote?: string;
};

/** What to do with the source program once the destination runs and is healthy. */
export type SourcePolicy = 'keep-running' | 'stop';

/** The host a program runs on, and what can be done to the program there. */
export interface Source {
  /** For messages: `local`, `ssh://user@host`. */
  readonly description: string;
  /** Runs commands on the source host (capture reads files and package data through it). */
  readonly executor: Executor;
  /** True when the source is the orchestrator's own machine: packers read its files in-process. */
  readonly isLocal: boolean;
  /**
   * Run `argv` on the source host with its standard output as a stream (how a packer runs on a
   * remote source: its bundle flows back through the orchestrator to the destination). Absent
   * when the source cannot stream; a local source never needs it.
   */
  stream?(argv: readonly string[], options?: StreamOptions): ResultAsync<StreamedCommand, ApMigrateError>;
  /** The pids of `pid`'s process tree (itself first, then its descendants) as they are now. */
  processTree(pid: number): ResultAsync<number[], ApMigrateError>;
  /**
   * Stop the whole tree (it keeps its state; no file changes while frozen). Returns the pids
   * frozen (and, from `createExecutorSource`, `freezer`: how).
   */
  freeze(pid: number): ResultAsync<FrozenPids, ApMigrateError>;
  /** Let frozen processes run again (the pids `freeze` returned: a cgroup it froze is thawed as a whole). */
  thaw(pids: readonly number[]): ResultAsync<void, ApMigrateError>;
  /** Terminate the tree: SIGTERM (and SIGCONT, so a frozen process sees it), SIGKILL after `graceMs`. */
  stop(pid: number, graceMs?: number): ResultAsync<void, ApMigrateError>;
}
