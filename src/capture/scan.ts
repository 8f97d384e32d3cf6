/**
 * Reading config text and argv for what they name. Pure.
 *
 * @module
 */
import { normalizeAbsolutePath } from '../policy/safe-input.js';

/** An absolute path in free text: after a quote, `=`, `:`, whitespace or the start; glob characters kept. */
const PATH_TOKEN = /(?:^|[\s"'=:,(])(\/[A-Za-z0-9._+@%~*?[\]-][A-Za-z0-9._+@%~*?[\]/-]*)/g;

/** Absolute, normalised paths named in `text` (comments included: a commented path costs a stat). */
export function absolutePathsIn(text: string): string[] {
  const out = new Set<string>();
  for (const m of text.matchAll(PATH_TOKEN)) {
    const raw = m[1]!.replace(/[.,;:)]+$/, '');
    if (raw.length < 2) continue;
    const n = normalizeAbsolutePath(raw);
    if (n.ok && n.path !== '/') out.add(n.path);
  }
  return [...out];
}

/** Words that could name an account (`-u appuser`, `user appuser;`). */
export function wordsIn(text: string): string[] {
  return [...new Set(text.match(/[A-Za-z_][A-Za-z0-9_.-]{0,31}/g) ?? [])];
}
