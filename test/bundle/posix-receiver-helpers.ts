/**
 * Shared by the POSIX receiver tests: a transport whose commands see a shim directory first on
 * PATH (to pick the destination's `tar`), shim directories, and a tree snapshot.
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Transport } from '../../src/spec/transport.js';

/** `inner`, with `dir` first on the PATH of every command it runs. */
export function withPathFirst(inner: Transport, dir: string | undefined): Transport {
  if (dir === undefined) return inner;
  const path = `${dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;
  return {
    kind: inner.kind,
    root: inner.root,
    description: `${inner.description} (PATH=${dir}:...)`,
    exec: (argv, options) => inner.exec(['env', `PATH=${path}`, ...argv], options),
    upload: (source, remotePath, options) => inner.upload(source, remotePath, options),
    readFile: (remotePath, options) => inner.readFile(remotePath, options),
    close: () => inner.close(),
  };
}

/** A shim directory whose `tar` is `program` (e.g. /usr/bin/bsdtar). */
export function tarShim(dir: string, program: string): string {
  mkdirSync(dir, { recursive: true });
  symlinkSync(program, join(dir, 'tar'));
  return dir;
}

/** A shim directory whose `tar` runs the real one, then `after` (sh, cwd = the extraction directory). */
export function wrappingTarShim(dir: string, realTar: string, after: string): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tar'), `#!/bin/sh\n${realTar} "$@" || exit $?\n${after}\n`);
  chmodSync(join(dir, 'tar'), 0o755);
  return dir;
}

export interface Snapshot {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: number;
  size?: number;
  sha256?: string;
  target?: string;
  links?: string[];
}

/** Every attribute of every object under `dir` (symlink times left out), keyed by relative path. */
export async function snapshot(dir: string): Promise<Record<string, Snapshot>> {
  const result: Record<string, Snapshot> = {};
  const inodes = new Map<number, string[]>();
  const walk = async (path: string): Promise<void> => {
    const stats = await lstat(path);
    const rel = relative(dir, path) || '.';
    const entry: Snapshot = { type: 'other', mode: stats.mode & 0o7777, uid: stats.uid, gid: stats.gid, mtime: Math.floor(stats.mtimeMs / 1000) };
    if (stats.isDirectory()) {
      entry.type = 'directory';
      for (const name of await readdir(path)) await walk(join(path, name));
    } else if (stats.isSymbolicLink()) {
      entry.type = 'symlink';
      entry.target = await readlink(path);
      delete entry.mtime;
    } else if (stats.isFile()) {
      entry.type = 'file';
      entry.size = stats.size;
      entry.sha256 = createHash('sha256').update(await readFile(path)).digest('hex');
      inodes.set(stats.ino, [...(inodes.get(stats.ino) ?? []), rel]);
    } else if (stats.isFIFO()) {
      entry.type = 'fifo';
    }
    result[rel] = entry;
  };
  await walk(dir);
  for (const names of inodes.values()) {
    const sorted = [...names].sort();
    for (const name of sorted) {
      const entry = result[name];
      if (entry) entry.links = sorted;
    }
  }
  return result;
}

/** The destination tars to run every test with: the default `tar` (GNU tar here) and bsdtar through a shim. */
export const TAR_FLAVOURS = [
  { name: 'GNU tar', program: undefined },
  { name: 'bsdtar', program: '/usr/bin/bsdtar' },
] as const;
