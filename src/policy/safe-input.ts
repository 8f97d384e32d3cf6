/**
 * Rules for values that come from the program being moved (its profile, its bundle) and reach a
 * host-side command, path or environment at the destination. One place for them, so the schema,
 * the planner and every deployer refuse the same things. Pure: no `node:` imports.
 *
 * @module
 */

/** Longest path accepted (Linux PATH_MAX). */
export const MAX_PATH_LENGTH = 4096;
/** Longest single environment string `NAME=value` Linux accepts for execve (MAX_ARG_STRLEN). */
export const MAX_ENV_ENTRY_BYTES = 128 * 1024;
/** Most bytes of environment accepted in all (well under any ARG_MAX, which argv shares). */
export const MAX_ENV_TOTAL_BYTES = 1024 * 1024;
/** Most environment variables accepted. */
export const MAX_ENV_ENTRIES = 4096;

/** A path with `//`, a `.` or `..` component, or a trailing `/` (the root `/` itself included). */
const NOT_NORMAL = /\/(?:\.{1,2})?(?:\/|$)/;

/** POSIX portable environment variable name: letters, digits, underscore, not starting with a digit. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Whether `name` is a portable environment variable name (so it can never read as an option or an assignment). */
export function isPortableEnvName(name: string): boolean {
  return name.length <= 255 && ENV_NAME.test(name);
}

/**
 * Normalise an absolute path from the source: collapse `//`, drop `.` components and a trailing
 * `/`. Returns a reason string instead when the path is not absolute, holds NUL, has a `..`
 * component (a path that could climb out of the program's root) or is too long.
 */
export function normalizeAbsolutePath(path: unknown): { ok: true; path: string } | { ok: false; reason: string } {
  if (typeof path !== 'string') return { ok: false, reason: 'must be a string' };
  if (path.length === 0) return { ok: false, reason: 'must not be empty' };
  if (path.includes('\0')) return { ok: false, reason: 'must not contain a NUL byte' };
  if (path[0] !== '/') return { ok: false, reason: 'must be an absolute path' };
  if (path.length > MAX_PATH_LENGTH) return { ok: false, reason: `must be at most ${MAX_PATH_LENGTH} characters` };
  // Most paths are already normal: no empty, `.` or `..` component, no trailing slash.
  if (!NOT_NORMAL.test(path)) return { ok: true, path };
  const parts: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') return { ok: false, reason: 'must not contain a ".." component' };
    parts.push(part);
  }
  return { ok: true, path: `/${parts.join('/')}` };
}

/** Whether `path` is already absolute and normalised (what {@link normalizeAbsolutePath} returns unchanged). */
export function isNormalizedAbsolutePath(path: unknown): path is string {
  const n = normalizeAbsolutePath(path);
  return n.ok && n.path === path;
}

/** One problem with an environment, naming the variable. */
export interface EnvProblem {
  name: string;
  reason: string;
}

/**
 * Check an environment from the source: every name portable, no value with NUL, no entry over
 * Linux's per-string limit, bounded in count and total size. Returns the problems (empty when fine).
 */
export function envProblems(env: Readonly<Record<string, unknown>>): EnvProblem[] {
  const problems: EnvProblem[] = [];
  let total = 0;
  let count = 0;
  for (const name of Object.keys(env)) {
    count += 1;
    const value = env[name];
    if (!isPortableEnvName(name)) {
      problems.push({ name, reason: 'is not a portable variable name (letters, digits and _, not starting with a digit)' });
      continue;
    }
    if (typeof value !== 'string') {
      problems.push({ name, reason: 'value must be a string' });
      continue;
    }
    if (value.includes('\0')) problems.push({ name, reason: 'value contains a NUL byte' });
    const bytes = utf8Length(name) + 1 + utf8Length(value) + 1;
    if (bytes > MAX_ENV_ENTRY_BYTES) problems.push({ name, reason: `is ${bytes} bytes; at most ${MAX_ENV_ENTRY_BYTES} fit one execve string` });
    total += bytes;
  }
  if (count > MAX_ENV_ENTRIES) problems.push({ name: '', reason: `holds ${count} variables; at most ${MAX_ENV_ENTRIES} are accepted` });
  if (total > MAX_ENV_TOTAL_BYTES) problems.push({ name: '', reason: `is ${total} bytes in all; at most ${MAX_ENV_TOTAL_BYTES} are accepted` });
  return problems;
}

/** UTF-8 byte length without `Buffer` (this module stays free of `node:`). */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i += 1;
    } else n += 3;
  }
  return n;
}
