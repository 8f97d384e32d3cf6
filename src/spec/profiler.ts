/**
 * Profiler: watches a program and reports the {@link ResourceProfile} the planner needs.
 *
 * @module
 */
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ResourceProfile } from '../policy/profile.js';

/** Launch a program and watch it from its first instruction. */
export interface LaunchTarget {
  /** argv; `command[0]` is looked up on PATH. */
  command: readonly string[];
  cwd?: string;
  env?: Record<string, string>;
}

/** Attach to a running process (and follow its children). */
export interface AttachTarget {
  pid: number;
}

/** What to profile. */
export type ProfileTarget = LaunchTarget | AttachTarget;

/** Progress reported while a profiler watches. */
export interface ProfileProgress {
  /** Events (syscalls, samples) seen so far. */
  events: number;
  /** Milliseconds since watching started. */
  elapsedMs: number;
}

/** Options for one profiling run. */
export interface ProfileOptions {
  /**
   * Stop watching after this long. A launched program that is still running then is stopped
   * (unless `keepRunning`); an attached one is always left running.
   */
  durationMs?: number;
  /** Stop watching early; the profile gathered so far is returned. */
  signal?: AbortSignal;
  /** Called every few hundred milliseconds with the events seen so far. */
  onProgress?: (progress: ProfileProgress) => void;
  /** Leave a launched program running when watching stops (default false). */
  keepRunning?: boolean;
}

/** Whether a profiler works on this host, and why not. */
export interface ProfilerAvailability {
  name: string;
  available: boolean;
  /** Why it is unavailable (not root, tool missing, kernel lacks BPF ...), or notes when available. */
  reason?: string;
}

/** Errors a profiler returns carry one of these codes. */
export type ProfileErrorCode =
  | 'PROFILER_UNAVAILABLE'
  | 'NO_SUCH_PROCESS'
  | 'LAUNCH_FAILED'
  | 'PERMISSION_DENIED'
  | 'PROFILER_FAILED'
  | 'PARSE_FAILED'
  | 'INVALID_INPUT';

/** Watches a program and reports the resources it uses. */
export interface Profiler {
  /** Stable name: `ebpf`, `strace`, `procfs`, `freebsd`. */
  readonly name: string;
  /** Whether this profiler can run here, and why not. */
  availability(): Promise<ProfilerAvailability>;
  /** Watch `target` and return what it used. Never throws. */
  profile(target: ProfileTarget, options?: ProfileOptions): ResultAsync<ResourceProfile, ApMigrateError>;
}
