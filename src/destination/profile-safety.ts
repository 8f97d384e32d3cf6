/**
 * The deployers' own check of the profile, at pre-flight, before anything at the destination is
 * touched. The profile comes from the program being moved (its env is read from
 * `/proc/<pid>/environ`, which the program writes), so whatever of it reaches a host-side command
 * or path is checked here again, whoever validated it before: a deployer is a public entry point.
 *
 * @module
 */
import { err, ok, type Result } from 'neverthrow';
import { MAX_GROUPS, RLIMIT_NAMES, softWithinHard, type ResourceProfile } from '../policy/profile.js';
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
  const start = checkStartFacts(profile.start);
  if (start.isErr()) return start;
  for (const field of ['uid', 'gid'] as const) {
    const id = profile[field];
    if (!Number.isSafeInteger(id) || id < 0 || id > 0xfffffffe) return unsafe(field, 'must be an id between 0 and 4294967294');
    if (id === 0 && !options.allowRoot) {
      return unsafe(field, 'is 0: a program run as root can leave its chroot or namespaces; pass allowRoot: true to the deployer (or migrate) if the source really ran it as root and you trust it');
    }
  }
  return ok(undefined);
}

/** True for a uid or gid the kernel takes: an integer from 0 to 2^32 - 2. */
function isUnixId(value: unknown): boolean {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= 0xfffffffe;
}

/** True for a limit value: `unlimited` or a non-negative integer JSON carries exactly. */
function isLimitValue(value: unknown): value is number | 'unlimited' {
  return value === 'unlimited' || (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0);
}

const RLIMIT_NAME_SET: ReadonlySet<string> = new Set(RLIMIT_NAMES);

/** The resource limits of the start facts: known names only, each `{ soft, hard }` with soft at most hard. */
function checkRlimits(rlimits: unknown): Result<void, DeployError> {
  if (typeof rlimits !== 'object' || rlimits === null || Array.isArray(rlimits)) return unsafe('start.rlimits', 'must be an object of limits by name');
  for (const [name, limit] of Object.entries(rlimits)) {
    // A name reaches `prlimit --NAME=` at the destination: only the known ones, and never echoed whole.
    if (!RLIMIT_NAME_SET.has(name)) return unsafe('start.rlimits', `names an unknown resource limit ${JSON.stringify(name.slice(0, 32))}${name.length > 32 ? '...' : ''}`);
    const { soft, hard } = (typeof limit === 'object' && limit !== null ? limit : {}) as { soft?: unknown; hard?: unknown };
    if (!isLimitValue(soft) || !isLimitValue(hard)) return unsafe(`start.rlimits.${name}`, 'must be { soft, hard }, each "unlimited" or a non-negative integer');
    if (!softWithinHard(soft, hard)) return unsafe(`start.rlimits.${name}`, 'has a soft limit above its hard limit');
  }
  return ok(undefined);
}

/**
 * The start facts that reach host-side commands at the destination (`setpriv --groups`, the
 * umask, `prlimit`): numbers only, bounded, and known limit names, checked again here whatever
 * validated the profile before. Also called by the launcher itself, a public entry point too.
 */
export function checkStartFacts(start: ResourceProfile['start'] | undefined): Result<void, DeployError> {
  if (start === undefined) return ok(undefined);
  if (typeof start !== 'object' || start === null) return unsafe('start', 'must be an object');
  const { groups, umask, rlimits } = start as Record<string, unknown>;
  if (groups !== undefined) {
    if (!Array.isArray(groups) || groups.length > MAX_GROUPS) return unsafe('start.groups', `must be a list of at most ${MAX_GROUPS} group ids`);
    const bad = groups.findIndex((g) => !isUnixId(g));
    if (bad >= 0) return unsafe(`start.groups.${bad}`, 'must be a group id between 0 and 4294967294');
  }
  if (umask !== undefined && !(typeof umask === 'number' && Number.isInteger(umask) && umask >= 0 && umask <= 0o777)) {
    return unsafe('start.umask', 'must be an integer from 0 to 0o777');
  }
  return rlimits === undefined ? ok(undefined) : checkRlimits(rlimits);
}
