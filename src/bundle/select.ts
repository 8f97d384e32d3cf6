/**
 * Which of a profile's paths go into a bundle, decided from the profile alone (no file-system access),
 * so the packer and the size estimate agree.
 *
 * @module
 */
import { posix } from 'node:path';
import type { FileUse, ResourceProfile } from '../policy/profile.js';
import { isPseudoPath } from '../policy/paths.js';

/** Options that decide what a bundle carries. */
export interface BundleSelectionOptions {
  /** Carry shared libraries and the dynamic loader too (default false: the destination supplies its own). */
  includeSharedLibraries?: boolean;
  /** Carry character and block device nodes (default false: the destination makes a minimal `/dev`). */
  includeDevices?: boolean;
  /**
   * Whole directory trees to carry besides the profile's paths (a *thick* bundle, e.g. a base
   * userland): absolute paths, walked with lstat (symlinks are carried, never followed), in sorted
   * order. Their size is not known from the profile: measure it with `measureTrees` and pass it to
   * the estimate as `extraTreeBytes`.
   */
  extraTrees?: string[];
}

/** Why a profile file is left out of a bundle. */
export type SkipReason = 'sharedLibrary' | 'created' | 'pseudo' | 'device' | 'socket' | 'missing';

/** A path the bundle should carry, with what the profile says about it. */
export interface SelectedPath {
  /** Absolute, normalised path. */
  path: string;
  kind: FileUse['kind'];
  /** Size from the profile (regular files). */
  size: number;
  linkTarget?: string;
}

/** The paths to carry and the number left out per reason. */
export interface Selection {
  paths: SelectedPath[];
  skipped: Record<SkipReason, number>;
}


/** An empty skip counter. */
export function emptySkipCounts(): Record<SkipReason, number> {
  return { sharedLibrary: 0, created: 0, pseudo: 0, device: 0, socket: 0, missing: 0 };
}

/** Normalise an absolute path (`//a/./b/` -> `/a/b`). */
export function normaliseAbsolute(path: string): string {
  const normal = posix.normalize(path);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

/**
 * The profile's paths a bundle carries (the executable, the working directory and the profile's
 * files), each once, in depth-first path order.
 */
export function selectProfilePaths(profile: ResourceProfile, options: BundleSelectionOptions = {}): Selection {
  const skipped = emptySkipCounts();
  const paths: SelectedPath[] = [];
  const seen = new Set<string>();
  const add = (entry: SelectedPath) => {
    if (seen.has(entry.path)) return;
    seen.add(entry.path);
    paths.push(entry);
  };
  add({ path: normaliseAbsolute(profile.executable), kind: 'regular', size: profile.executableSize });
  add({ path: normaliseAbsolute(profile.cwd), kind: 'directory', size: 0 });
  for (const file of profile.files) {
    const path = normaliseAbsolute(file.path);
    if (seen.has(path)) continue;
    const reason = skipReason(file, path, options);
    if (reason) {
      seen.add(path);
      skipped[reason] += 1;
      continue;
    }
    add({ path, kind: file.kind, size: file.kind === 'regular' ? file.size : 0, ...(file.linkTarget ? { linkTarget: file.linkTarget } : {}) });
  }
  // Depth-first order keeps each directory's entries together, which GNU tar needs to restore
  // directory times (it applies them once it sees an entry outside the directory).
  paths.sort((a, b) => comparePaths(a.path, b.path));
  return { paths, skipped };
}

/**
 * Order paths component by component, so a directory's descendants are contiguous. Equivalent to
 * comparing the components as strings, done without splitting: `/` sorts before every other
 * character (this runs for every pair the sort compares).
 */
export function comparePaths(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 47) return -1;
    if (y === 47) return 1;
    return x - y;
  }
  return a.length - b.length;
}

function skipReason(file: FileUse, path: string, options: BundleSelectionOptions): SkipReason | undefined {
  if (file.created) return 'created';
  if (isPseudoPath(path)) return 'pseudo';
  if (file.sharedLibrary && !options.includeSharedLibraries) return 'sharedLibrary';
  if (file.kind === 'device' && !options.includeDevices) return 'device';
  if (file.kind === 'unix-socket') return 'socket';
  return undefined;
}
