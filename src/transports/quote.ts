/**
 * Quoting for a remote POSIX shell. SSH sends one command string that the remote user's login
 * shell parses, so every argv element must become exactly one word there, whatever it holds.
 *
 * @module
 */

/** Characters that never need quoting in any POSIX shell word. */
const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/**
 * Quote one argument for a POSIX shell: wrapped in single quotes, each `'` written as `'\''`.
 * Inside single quotes nothing is special (not `$`, `` ` ``, `\`, newline), so this is exact.
 */
export function shellQuote(arg: string): string {
  if (arg.length > 0 && SAFE.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Quote a whole argv into one command string for `sh -c`. */
export function shellQuoteArgv(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}
