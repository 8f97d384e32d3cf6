/**
 * A profiler that runs on the source host: the procfs profiler inside the helper program
 * (`receiver.cjs profile-pid`), reached through the source's executor. It attaches by pid only
 * (procfs needs no tracer, so it works on any Linux host with Node.js), and its pid is the
 * source's, never one of the orchestrator's machine.
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import { InvalidInputError, type ApMigrateError } from '../errors.js';
import { safeParseProfile, type ResourceProfile } from '../policy/profile.js';
import type { Profiler } from '../spec/profiler.js';
import type { Source } from '../spec/source.js';
import { installHelper, parseHelperReply } from './remote-helper.js';

/** Options of {@link createSourceProfiler}. */
export interface SourceProfilerOptions {
  /** Record the program's environment (default false: it may hold secrets). */
  captureEnv?: boolean;
}

/** The procfs profiler, run on `source`. */
export function createSourceProfiler(source: Source, options: SourceProfilerOptions = {}): Profiler {
  return {
    name: 'procfs',
    availability: async () => {
      const node = await source.executor.exec(['sh', '-c', 'command -v node'], { allowNonZeroExit: true });
      const available = node.isOk() && node.value.code === 0;
      return { name: 'procfs', available, ...(available ? {} : { reason: `${source.description} has no node on PATH` }) };
    },
    profile: (target, profileOptions = {}): ResultAsync<ResourceProfile, ApMigrateError> => {
      if (!('pid' in target)) return errAsync(new InvalidInputError('profile target', [{ path: 'command', message: 'a profiler on a remote source attaches by pid only' }]));
      const request = JSON.stringify({ pid: target.pid, durationMs: profileOptions.durationMs ?? 3000, captureEnv: options.captureEnv === true });
      return installHelper(source)
        .andThen((helper) => source.executor.exec(['node', helper, 'profile-pid'], { stdin: request, allowNonZeroExit: true, ...(profileOptions.signal ? { signal: profileOptions.signal } : {}) }))
        .andThen((r) => parseHelperReply<unknown>(r.stdout, `profiling pid ${target.pid}`))
        .andThen((value) => {
          // Validated here as any external input is: it came from the source.
          const parsed = safeParseProfile(value);
          return parsed.success ? okAsync(parsed.data) : errAsync(new InvalidInputError('resource profile from the source', parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }))));
        });
    },
  };
}
