/**
 * Path rules of the unpacker: how tar names map into the staging root, and whether a symlink
 * target stays inside it.
 *
 * @module
 */
import { lstatSync, readlinkSync } from 'node:fs';
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

/** What a path of the tree is, for {@link resolvesInsideTree}: a symlink (its target), something else, or nothing. */
export type TreeLookup = (components: readonly string[]) => { symlink: string } | 'other' | 'missing';

/**
 * Resolve a symlink inside a tree the way the kernel would, following symlinks already in the tree
 * (absolute targets restart at its root); false when the walk climbs above the root or loops.
 * Components that do not exist are taken by name. Run it once the tree is complete: a later entry
 * can change where an earlier link leads. `lookup` is the tree: a file system or a model of one.
 */
export function resolvesInsideTree(linkComponents: readonly string[], target: string, lookup: TreeLookup): boolean {
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
      const found = lookup(candidate);
      if (found === 'missing') exists = false;
      else if (found !== 'other') {
        if (++hops > MAX_HOPS) return false;
        if (found.symlink.startsWith('/')) stack = [];
        pending.unshift(...found.symlink.split('/'));
        continue;
      }
    }
    stack = candidate;
  }
  return true;
}

/** {@link resolvesInsideTree} on the file system below `root` (nothing of the program runs while it is built). */
export function symlinkResolvesInside(root: string, linkComponents: readonly string[], target: string): boolean {
  return resolvesInsideTree(linkComponents, target, (components) => {
    const path = join(root, ...components);
    try {
      return lstatSync(path).isSymbolicLink() ? { symlink: readlinkSync(path) } : 'other';
    } catch (e) {
      const errno = errnoOf(e);
      if (errno !== 'ENOENT' && errno !== 'ENOTDIR') throw e;
      return 'missing';
    }
  });
}
