/**
 * The deployers' own check of the profile, at pre-flight, before anything at the destination is
 * touched. The profile comes from the program being moved (its env is read from
 * `/proc/<pid>/environ`, which the program writes), so whatever of it reaches a host-side command
 * or path is checked here again, whoever validated it before: a deployer is a public entry point.
 *
 * @module
 */
import { err, ok, type Result } from 'neverthrow';
import type { ResourceProfile } from '../policy/profile.js';
import { envProblems, normalizeAbsolutePath } from '../policy/safe-input.js';
import { DeployError } from './deploy-error.js';

/** Options of {@link checkProfileForDeploy}. */
export interface ProfileSafetyOptions {
  /**
   * Start a program whose profile says uid 0 or gid 0. Root inside a chroot or these namespaces
   * is root on the host (it can leave the root), so this is refused unless the caller, who knows
   * the source really ran it as root, says so. Default false.
   */
  allowRoot?: boolean;
}

function unsafe(field: string, message: string): Result<never, DeployError> {
  return err(new DeployError('UNSAFE_PROFILE', `Refusing the profile: ${field} ${message}`, { details: { field } }));
}

/** Refuse a profile whose paths, env, argv or ids could act outside the program's root. */
export function checkProfileForDeploy(profile: ResourceProfile, options: ProfileSafetyOptions = {}): Result<void, DeployError> {
  const exe = normalizeAbsolutePath(profile.executable);
  if (!exe.ok) return unsafe('executable', exe.reason);
  // The exec wrapper (`env`) reads a first word with `=` as an assignment, not the command.
  if (profile.executable.includes('=')) return unsafe('executable', 'must not contain "="');
  if (profile.start?.invokedAs !== undefined) {
    const inv = normalizeAbsolutePath(profile.start.invokedAs);
    if (!inv.ok) return unsafe('start.invokedAs', inv.reason);
    if (inv.path.includes('=')) return unsafe('start.invokedAs', 'must not contain "="');
  }
  const cwd = normalizeAbsolutePath(profile.cwd);
  if (!cwd.ok) return unsafe('cwd', cwd.reason);
  const argvNul = profile.argv.findIndex((a) => typeof a !== 'string' || a.includes('\0'));
  if (argvNul >= 0) return unsafe(`argv.${argvNul}`, 'must be a string without NUL');
  for (const [i, f] of profile.files.entries()) {
    const p = normalizeAbsolutePath(f.path);
    if (!p.ok) return unsafe(`files.${i}.path`, p.reason);
  }
  if (profile.env) {
    const problem = envProblems(profile.env)[0];
    if (problem) return unsafe(problem.name ? `env.${problem.name}` : 'env', problem.reason);
  }
  for (const field of ['uid', 'gid'] as const) {
    const id = profile[field];
    if (!Number.isSafeInteger(id) || id < 0 || id > 0xfffffffe) return unsafe(field, 'must be an id between 0 and 4294967294');
    if (id === 0 && !options.allowRoot) {
      return unsafe(field, 'is 0: a program run as root can leave its chroot or namespaces; pass allowRoot: true to the deployer (or migrate) if the source really ran it as root and you trust it');
    }
  }
  return ok(undefined);
}
