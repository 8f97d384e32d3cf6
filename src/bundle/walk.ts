/**
 * A lazy, deterministic walk of a directory tree: depth first, names sorted, `lstat` only (a
 * symlink is reported, never followed). Only the listings of the directories on the current path
 * are held, so memory grows with depth and directory width, not with the size of the tree.
 *
 * @module
 */
import { lstatSync, type Stats } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { errnoOf, toBundleError } from './errors.js';

/** One object met by {@link walkTree}. */
export interface WalkedEntry {
  /** Destination path (absolute). */
  path: string;
  stats: Stats;
}

/** How {@link walkTree} reaches the file system. */
export interface WalkOptions {
  /** Where the destination path `path` is read from (e.g. below a snapshot's mount point). */
  sourcePath: (path: string) => string;
  /** Paths whose subtree is left out entirely (called for every entry). */
  exclude?: (path: string) => boolean;
  /** Called for an entry that vanished between its directory listing and its lstat. */
  onVanished?: (path: string) => void;
}

/**
 * Yield every object below the directory `dir` (not `dir` itself), parents before children, names
 * in code-unit order (the order `comparePaths` gives), so each directory's entries are contiguous.
 * Entries are `lstat`ed synchronously: on a warm cache that is a few microseconds, against tens for
 * a round trip through libuv's thread pool; the caller paces the event loop.
 */
export async function* walkTree(dir: string, options: WalkOptions): AsyncGenerator<WalkedEntry> {
  // An explicit stack rather than recursive generators: each entry passes through one generator.
  const stack: { dir: string; names: string[]; next: number }[] = [];
  const top = await listDirectory(dir, options);
  if (top) stack.push({ dir, names: top, next: 0 });
  while (stack.length > 0) {
    const frame = stack[stack.length - 1] as (typeof stack)[number];
    const name = frame.names[frame.next++];
    if (name === undefined) {
      stack.pop();
      continue;
    }
    const path = frame.dir === '/' ? `/${name}` : `${frame.dir}/${name}`;
    if (options.exclude?.(path)) continue;
    let stats: Stats | undefined;
    try {
      stats = lstatSync(options.sourcePath(path), { throwIfNoEntry: false });
    } catch (e) {
      throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `reading ${path}`);
    }
    if (!stats) {
      options.onVanished?.(path);
      continue;
    }
    yield { path, stats };
    if (stats.isDirectory()) {
      const names = await listDirectory(path, options);
      if (names) stack.push({ dir: path, names, next: 0 });
    }
  }
}

/** The sorted names in a directory; undefined (reported as vanished) when it is gone. */
async function listDirectory(dir: string, options: WalkOptions): Promise<string[] | undefined> {
  try {
    return (await readdir(options.sourcePath(dir))).sort();
  } catch (e) {
    const errno = errnoOf(e);
    // Removed since it was listed: the same as a file that vanished.
    if (errno === 'ENOENT' || errno === 'ENOTDIR') {
      options.onVanished?.(dir);
      return undefined;
    }
    throw toBundleError(e, 'BUNDLE_SOURCE_UNREADABLE', `listing ${dir}`);
  }
}
