/**
 * Path rules of the unpacker: how tar names map into the staging root, and whether a symlink
 * target stays inside it.
 *
 * @module
 */
import { lstat, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { err, ok, type Result } from 'neverthrow';
import { errnoOf } from './errors.js';

/**
 * Split a tar member name into path components below the root. Rejects (with the reason) absolute
 * names, `..` components and NUL bytes; drops `.` and empty components (`./a//b` -> `a`, `b`).
 */
export function splitMemberName(name: string): Result<string[], string> {
  if (name.includes('\0')) return err('contains a NUL byte');
  if (name.startsWith('/')) return err('is an absolute name');
  const components = name.split('/').filter((c) => c !== '' && c !== '.');
  if (components.includes('..')) return err("has a '..' component");
  return ok(components);
}

/**
 * Where a symlink's target leads, by name only: absolute targets start at the root, relative ones at
 * the link's directory; returns false when a `..` climbs above the root.
 */
export function symlinkTargetStaysInside(linkComponents: readonly string[], target: string): boolean {
  if (target.includes('\0')) return false;
  const stack = target.startsWith('/') ? [] : linkComponents.slice(0, -1);
  for (const component of target.split('/')) {
    if (component === '' || component === '.') continue;
    if (component === '..') {
      if (stack.length === 0) return false;
      stack.pop();
    } else {
      stack.push(component);
    }
  }
  return true;
}

const MAX_HOPS = 40;

/**
 * Resolve a symlink inside `root` the way the kernel would, following symlinks already in the tree
 * (absolute targets restart at `root`); returns false when the walk climbs above `root` or loops.
 * Components that do not exist are taken by name. Run it once the tree is complete: a later entry
 * can change where an earlier link leads.
 */
export async function symlinkResolvesInside(root: string, linkComponents: readonly string[], target: string): Promise<boolean> {
  let stack = target.startsWith('/') ? [] : linkComponents.slice(0, -1);
  const pending = target.split('/');
  let hops = 0;
  let exists = true;
  while (pending.length > 0) {
    const component = pending.shift() as string;
    if (component === '' || component === '.') continue;
    if (component === '..') {
      if (stack.length === 0) return false;
      stack = stack.slice(0, -1);
      continue;
    }
    const candidate = [...stack, component];
    if (exists) {
      try {
        const stats = await lstat(join(root, ...candidate));
        if (stats.isSymbolicLink()) {
          if (++hops > MAX_HOPS) return false;
          const next = await readlink(join(root, ...candidate));
          if (next.startsWith('/')) stack = [];
          pending.unshift(...next.split('/'));
          continue;
        }
      } catch (e) {
        const errno = errnoOf(e);
        if (errno !== 'ENOENT' && errno !== 'ENOTDIR') throw e;
        exists = false;
      }
    }
    stack = candidate;
  }
  return true;
}
