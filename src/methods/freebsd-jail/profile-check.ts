/**
 * The jail deployer's check of the profile it is given: nothing unchecked from the program being
 * moved reaches a command at the destination.
 *
 * @module
 */
import { posix } from 'node:path';
import type { InputIssue } from '../../errors.js';
import { isPseudoPath } from '../../policy/estimate.js';
import type { ResourceProfile } from '../../policy/profile.js';
import { envProblems, normalizeAbsolutePath } from '../../policy/safe-input.js';
import { DeployError } from '../../destination/deploy-error.js';

/** The profile's paths as the jail deployer uses them: each absolute, normalised, without `..`. */
export interface CheckedJailProfile {
  /** Path of the executable inside the jail. */
  executable: string;
  /** Working directory inside the jail. */
  cwd: string;
  /** Directories the program creates files in (they are made in its root), sorted. */
  createdDirs: string[];
}

/**
 * Check what the profile (which comes from the program being moved) gives the jail deployer
 * before any of it reaches a command at the destination: the executable, the working directory
 * and the paths of created files must be absolute without `..` or NUL (`mkdir -p <root><cwd>`
 * with a `..` would climb out of the root), no argument may hold NUL, the environment must have
 * portable names and sane sizes, and a program that ran as root (uid 0) is not run as root in
 * the jail unless the caller names the user (`jailUser`) or passes `allowRoot`. Refusals are
 * `UNSAFE_PROFILE` (`details.issues` lists every problem, `details.field` the first), the code
 * the other deployers use. The profile's gid is not used: the jail's user gets the groups of
 * its entry in the host's passwd (`exec.system_jail_user`).
 */
export function checkJailProfile(profile: ResourceProfile, options: { jailUser?: string; allowRoot?: boolean } = {}): CheckedJailProfile | DeployError {
  const issues: InputIssue[] = [];
  const exe = normalizeAbsolutePath(profile.executable);
  if (!exe.ok) issues.push({ path: 'executable', message: exe.reason });
  else if (exe.path === '/') issues.push({ path: 'executable', message: 'must name a file, not /' });
  const cwd = normalizeAbsolutePath(profile.cwd);
  if (!cwd.ok) issues.push({ path: 'cwd', message: cwd.reason });
  if (!Array.isArray(profile.argv) || profile.argv.length === 0) issues.push({ path: 'argv', message: 'must be a non-empty array of strings' });
  else {
    profile.argv.forEach((a: unknown, i) => {
      if (typeof a !== 'string' || a.includes('\0')) issues.push({ path: `argv.${i}`, message: 'must be a string without NUL' });
    });
  }
  const dirs = new Set<string>();
  if (!Array.isArray(profile.files)) issues.push({ path: 'files', message: 'must be an array' });
  else profile.files.forEach((f, i) => {
    if (!f?.created) return;
    const n = normalizeAbsolutePath(f.path);
    if (!n.ok) issues.push({ path: `files.${i}.path`, message: n.reason });
    else if (!isPseudoPath(n.path)) dirs.add(posix.dirname(n.path));
  });
  const env: unknown = profile.env;
  if (env !== undefined) {
    if (typeof env !== 'object' || env === null || Array.isArray(env)) issues.push({ path: 'env', message: 'must be an object of strings' });
    else for (const p of envProblems(env as Record<string, unknown>)) issues.push({ path: p.name ? `env.${p.name}` : 'env', message: p.reason });
  }
  if (!Number.isSafeInteger(profile.uid) || profile.uid < 0) issues.push({ path: 'uid', message: 'must be a non-negative integer' });
  else if (profile.uid === 0 && options.jailUser === undefined && !options.allowRoot) {
    issues.push({ path: 'uid', message: 'is 0: the program ran as root; it is not run as root in the jail unless you pass jailUser (the user to run it as) or allowRoot: true' });
  }
  const first = issues[0];
  if (first || !exe.ok || !cwd.ok) {
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
    return new DeployError('UNSAFE_PROFILE', `Refusing the profile: ${first?.path} ${first?.message}${more}`, { details: { field: first?.path, issues } });
  }
  return { executable: exe.path, cwd: cwd.path, createdDirs: [...dirs].sort() };
}
