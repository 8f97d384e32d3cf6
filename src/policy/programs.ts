/**
 * Which executables a program runs. A program is more than its first executable: a launched
 * wrapper (`setpriv ... server`, `env ...`) execs into the real server, and a daemon may run
 * helpers. The capture reads the packages of each, and the root builder follows the needed
 * libraries of each. Pure.
 *
 * @module
 */
import { isPseudoPath } from './paths.js';
import type { ResourceProfile } from './profile.js';

/**
 * The files the program's processes executed besides `profile.executable`, in profile order:
 * files used with `exec` access that are not shared libraries (those are mapped, not run).
 */
export function otherProgramsRun(profile: Pick<ResourceProfile, 'executable' | 'files'>): string[] {
  const seen = new Set<string>();
  for (const f of profile.files) {
    if (f.access.includes('exec') && !f.sharedLibrary && f.path.startsWith('/') && f.path !== profile.executable && !isPseudoPath(f.path)) seen.add(f.path);
  }
  return [...seen];
}
