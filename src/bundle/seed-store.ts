/**
 * The destination's side of seeded entries (see `seeds.ts`): reading journals, opening a seed
 * file without letting a path from the bundle lead anywhere else, and answering an inventory.
 *
 * Two kinds of seed, two rules:
 * - a tree this receiver unpacked earlier (`staged`, `resume`): root-owned and private (0700), its
 *   files were verified when they arrived and are listed in its journal. Opened without following
 *   any symlink below the tree, so a link the program brought cannot redirect the read.
 * - the host (`host`): the host's own links are followed (they are the host's, not the bundle's),
 *   but the file must resolve under one of the allowed roots, be a regular file owned by root and
 *   readable by everyone: nothing a local user could not read already. Its data is always hashed.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readFile, realpath, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { JournalSchema, journalPathOf, type HeldFiles, type InventoryRequest } from './seeds.js';

/** What a journal lists: path → size and SHA-256. */
export type JournalIndex = Map<string, { size: number; sha256: string }>;

const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** The journal of the tree at `root`, or an empty index when it has none (or a damaged one). */
export async function loadJournal(root: string): Promise<JournalIndex> {
  const index: JournalIndex = new Map();
  const text = await readFile(journalPathOf(root), 'utf8').catch(() => undefined);
  if (text === undefined) return index;
  let parsed: ReturnType<typeof JournalSchema.safeParse>;
  try {
    parsed = JournalSchema.safeParse(JSON.parse(text));
  } catch {
    return index;
  }
  if (!parsed.success) return index;
  for (const [path, size, sha256] of parsed.data.files) index.set(path, { size, sha256 });
  return index;
}

/**
 * Open `path` (absolute, as in the bundle) inside the tree at `dir`: every directory on the way
 * must be a real directory, the file itself a regular file; no symlink is followed.
 */
export async function openInTree(dir: string, path: string): Promise<FileHandle | undefined> {
  const components = path.split('/').filter((c) => c !== '');
  if (components.length === 0 || components.some((c) => c === '.' || c === '..')) return undefined;
  for (let depth = 1; depth < components.length; depth++) {
    const stats = await lstat(join(dir, ...components.slice(0, depth))).catch(() => undefined);
    if (!stats?.isDirectory()) return undefined;
  }
  const handle = await open(join(dir, ...components), READ_FLAGS).catch(() => undefined);
  if (!handle) return undefined;
  const stats = await handle.stat();
  if (stats.isFile()) return handle;
  await handle.close();
  return undefined;
}

/** Open the host's file at `path` if it may seed a root: under `roots`, regular, root-owned, world-readable. */
export async function openOnHost(path: string, roots: readonly string[]): Promise<FileHandle | undefined> {
  if (!path.startsWith('/') || path.split('/').some((c) => c === '..')) return undefined;
  const real = await realpath(path).catch(() => undefined);
  if (!real) return undefined;
  const realRoots = await Promise.all(roots.map((r) => realpath(r).catch(() => undefined)));
  if (!realRoots.some((r) => r !== undefined && (real === r || real.startsWith(r === '/' ? '/' : `${r}/`)))) return undefined;
  const handle = await open(real, READ_FLAGS).catch(() => undefined);
  if (!handle) return undefined;
  const stats = await handle.stat();
  if (stats.isFile() && stats.uid === 0 && (stats.mode & 0o004) !== 0) return handle;
  await handle.close();
  return undefined;
}

/** SHA-256 and size of what `handle` holds, read from its start. */
export async function hashHandle(handle: FileHandle): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let size = 0;
  for (;;) {
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, size);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    size += bytesRead;
  }
  return { sha256: hash.digest('hex'), size };
}

/** Copy `from` (from its start) into `to`, hashing on the way. */
export async function copyHashed(from: FileHandle, to: FileHandle): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let size = 0;
  for (;;) {
    const { bytesRead } = await from.read(buffer, 0, buffer.length, size);
    if (bytesRead === 0) break;
    const chunk = buffer.subarray(0, bytesRead);
    hash.update(chunk);
    let written = 0;
    while (written < bytesRead) written += (await to.write(chunk, written, bytesRead - written)).bytesWritten;
    size += bytesRead;
  }
  return { sha256: hash.digest('hex'), size };
}

/** The journaled files of the tree at `dir` that are still there with their size. */
async function heldInTree(dir: string, from: 'staged' | 'resume', held: HeldFiles): Promise<void> {
  for (const [path, entry] of await loadJournal(dir)) {
    const handle = await openInTree(dir, path);
    if (!handle) continue;
    try {
      if ((await handle.stat()).size === entry.size) held[path] = { ...entry, from };
    } finally {
      await handle.close();
    }
  }
}

/** Answer an inventory: what the destination holds for the request's seeds. */
export async function takeInventory(request: InventoryRequest): Promise<HeldFiles> {
  const held: HeldFiles = {};
  // Host first: a file the staged tree or the resume store also has is better taken from there (a link, not a copy).
  if (request.host) {
    for (const path of request.host.paths) {
      const handle = await openOnHost(path, request.host.roots);
      if (!handle) continue;
      try {
        held[path] = { ...(await hashHandle(handle)), from: 'host' };
      } finally {
        await handle.close();
      }
    }
  }
  if (request.resume) await heldInTree(request.resume, 'resume', held);
  if (request.staged) await heldInTree(request.staged, 'staged', held);
  return held;
}
