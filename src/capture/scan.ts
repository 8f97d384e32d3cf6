/**
 * Reading config text and argv for what they name. Pure.
 *
 * @module
 */
import { normalizeAbsolutePath } from '../policy/safe-input.js';

/** An absolute path in free text: after a quote, `=`, `:`, whitespace or the start; glob characters kept. */
const PATH_TOKEN = /(?:^|[\s"'=:,(])(\/[A-Za-z0-9._+@%~*?[\]-][A-Za-z0-9._+@%~*?[\]/-]*)/g;

/**
 * Absolute, normalised paths named in `text` (comments included: a commented path costs a stat).
 * A path that goes on with a variable or a command substitution (`/etc/init.d/$NAME`,
 * `/run/${NAME}.pid`, `` /srv/`hostname` ``) names something unknown inside its directory, not the
 * directory: it is left out.
 */
export function absolutePathsIn(text: string): string[] {
  const out = new Set<string>();
  for (const m of text.matchAll(PATH_TOKEN)) {
    const next = text[m.index + m[0].length];
    if (next === '$' || next === '`') continue;
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

/**
 * Words of config text that could name an account: not in comments (`#` or `;` at the start of a
 * line, `#` after a blank, `//` lines), and not the components of a path (`/usr/bin/x` names no
 * user `bin`). A commented-out `user nobody` does not make the program switch to it.
 */
export function configWordsIn(text: string): string[] {
  const live = text
    .split('\n')
    .filter((line) => !/^\s*(#|;|\/\/)/.test(line))
    .map((line) => line.replace(/(^|\s)#.*$/, '$1'))
    .join('\n')
    .replace(PATH_TOKEN, ' ');
  return wordsIn(live);
}
