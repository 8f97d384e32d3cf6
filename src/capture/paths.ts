/**
 * Path classes the capture rules use. Pure.
 *
 * @module
 */

import { isPseudoPath as isKernelPath } from '../policy/paths.js';

/** Kernel-made trees (the policy core's rule) and per-user runtime directories: never carried by a capture rule. */
export function isPseudoPath(path: string): boolean {
  return isKernelPath(path) || /^\/run\/user(\/|$)/.test(path);
}

/** Documentation: never needed to run (`/usr/share/doc`, man and info pages, lintian overrides). */
export function isDocumentationPath(path: string): boolean {
  return /^\/usr\/share\/(doc|doc-base|man|info|lintian|bug|gtk-doc|help)(\/|$)/.test(path);
}

/** A shared library (or the loader) under a library directory: the destination supplies these for a dependency. */
export function isLibraryPath(path: string): boolean {
  return /^\/(usr\/)?(local\/)?lib(32|64|x32)?\//.test(path) && /\.so(\.[0-9.]+)?$|\/ld-linux[^/]*$|\.a$/.test(path);
}

/** Top levels too broad to carry whole: the root, its first level, and the second level of the system trees. */
const SYSTEM_TOP = new Set(['usr', 'var', 'lib', 'lib32', 'lib64', 'libx32', 'bin', 'sbin', 'boot', 'tmp', 'proc', 'sys', 'dev']);

/** Whether a directory is too broad to travel whole (`/`, `/usr`, `/var/lib`; `/etc/myapp`, `/var/lib/x` are fine). */
export function isBroadDirectory(path: string): boolean {
  const parts = path.split('/').filter(Boolean);
  if (parts.length <= 1) return true;
  if (parts.length === 2 && SYSTEM_TOP.has(parts[0]!)) return true;
  // /usr/share, /usr/lib/x86_64-linux-gnu, /var/lib/dpkg-like trees: one level deeper still shared.
  if (parts.length === 3 && parts[0] === 'usr' && parts[1] === 'local') return true; // /usr/local/bin, /usr/local/lib ...
  if (parts.length === 3 && parts[0] === 'usr' && ['share', 'lib', 'lib64', 'include', 'src'].includes(parts[1]!) && /-linux-|^(locale|zoneinfo|perl|python3)/.test(parts[2]!)) return true;
  return false;
}
