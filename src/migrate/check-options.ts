/**
 * The one validation of `migrate()`'s options, at entry, before anything runs.
 *
 * @module
 */
import { checkBandwidthLimit } from '../transfer/throttle.js';
import { InvalidInputError } from '../errors.js';
import { validateTarget } from '../profilers/common.js';

/** The first problem with {@link migrate}'s options, found before anything runs; never throws. */
export function checkMigrateOptions(options: unknown): InvalidInputError | undefined {
  const invalid = (path: string, message: string) => new InvalidInputError('migrate options', [{ path, message }]);
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(options)) return invalid('', 'must be an object with at least `target`');
  const o = options;
  if (!isObject(o.target)) return invalid('target', 'must be { profile }, { command: [...] } or { pid }');
  if ('profile' in o.target) {
    const pid = o.target.pid;
    if (pid !== undefined && !(typeof pid === 'number' && Number.isInteger(pid) && pid > 0 && pid <= 2 ** 31 - 1)) return invalid('target.pid', 'must be a positive integer');
  } else {
    const target = validateTarget(o.target);
    if (target.isErr()) return new InvalidInputError('migrate options', target.error.issues.map((i) => ({ ...i, path: i.path ? `target.${i.path}` : 'target' })));
    if (!isObject(o.profiler) || typeof o.profiler.profile !== 'function') return invalid('profiler', 'a profiler is needed to profile a pid or command');
  }
  if (o.profiler !== undefined && (!isObject(o.profiler) || typeof o.profiler.profile !== 'function')) return invalid('profiler', 'must be a Profiler');
  for (const key of ['destination', 'vm', 'planOptions', 'deployers'] as const) {
    if (o[key] !== undefined && !isObject(o[key])) return invalid(key, 'must be an object');
  }
  for (const key of ['name', 'method'] as const) {
    const v = o[key];
    if (v !== undefined && (typeof v !== 'string' || v === '' || v.includes('\0'))) return invalid(key, 'must be a non-empty string without NUL');
  }
  const ms = o.profileDurationMs;
  if (ms !== undefined && !(typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 && ms <= 2 ** 31 - 1)) return invalid('profileDurationMs', 'must be a number of milliseconds');
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) return invalid('signal', 'must be an AbortSignal');
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') return invalid('onProgress', 'must be a function');
  if (o.dryRun !== undefined && typeof o.dryRun !== 'boolean') return invalid('dryRun', 'must be true or false');
  if (o.sourcePolicy !== undefined && o.sourcePolicy !== 'keep-running' && o.sourcePolicy !== 'stop') return invalid('sourcePolicy', 'must be keep-running or stop');
  if (o.cutover !== undefined && o.cutover !== 'copy' && o.cutover !== 'stop-and-copy' && o.cutover !== 'pre-copy') return invalid('cutover', 'must be copy, stop-and-copy or pre-copy');
  if ((o.cutover === 'stop-and-copy' || o.cutover === 'pre-copy') && 'profile' in o.target && o.target.pid === undefined) {
    return invalid('cutover', `${o.cutover} needs the source program: give target.pid (or profile it by pid or command)`);
  }
  if (o.dedup !== undefined && typeof o.dedup !== 'boolean') return invalid('dedup', 'must be true or false');
  const attempts = o.transferAttempts;
  if (o.compression !== undefined && !['auto', 'zstd', 'gzip', 'none'].includes(o.compression as string)) return invalid('compression', 'must be auto, zstd, gzip or none');
  if (o.bandwidthLimit !== undefined) {
    const limit = checkBandwidthLimit(o.bandwidthLimit);
    if (limit.isErr()) return invalid('bandwidthLimit', 'must be a number of bytes per second, at least 1024');
  }
  if (attempts !== undefined && !(Number.isInteger(attempts) && (attempts as number) >= 1 && (attempts as number) <= 20)) return invalid('transferAttempts', 'must be a whole number from 1 to 20');
  if (o.source !== undefined && !(isObject(o.source) && typeof o.source.freeze === 'function' && isObject(o.source.executor))) return invalid('source', 'must be a Source (see createExecutorSource)');
  return undefined;
}

