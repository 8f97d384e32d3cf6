/**
 * Quoting for a POSIX shell (`/bin/sh`). SSH sends one command string, so every argv element
 * must become exactly one word there, whatever it holds. What reaches the remote *login* shell
 * (csh, tcsh, fish, ...) is not this text but the encoded wrapper of
 * {@link wrapForLoginShell} in remote-command.ts, which hands this text to `/bin/sh` unchanged.
 * The one place argv is quoted: for a shell here, for messages in {@link describeArgv}.
 *
 * @module
 */

/**
 * Characters that never need quoting in a POSIX shell word outside the command position.
 * Not `=`: a leading `NAME=value` word would be read as an assignment.
 */
const SAFE = /^[A-Za-z0-9_@%+:,./-]+$/;

/**
 * Quote one argument for a POSIX shell: left bare when made only of `[A-Za-z0-9_@%+:,./-]` characters,
 * otherwise wrapped in single quotes with each `'` written as `'\''`. Inside single quotes
 * nothing is special (not `$`, `` ` ``, `\`, `!`, newline), so this is exact.
 */
export function shellQuote(arg: string): string {
  if (arg.length > 0 && SAFE.test(arg)) return arg;
  return singleQuote(arg);
}

/** Always single-quote (`'` as `'\''`), even a plain word. */
export function singleQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * Quote a whole argv into one command for `sh -c`. The first word is always single-quoted, so
 * it can never be read as an assignment (`X=1`), a reserved word (`if`, `{`, `!`) or an alias;
 * the others are quoted by {@link shellQuote}. (bash still reads a command word starting with
 * `%` as a job, quoted or not: the transports always put `exec` first.)
 */
export function shellQuoteArgv(argv: readonly string[]): string {
  return argv.map((arg, i) => (i === 0 ? singleQuote(arg) : shellQuote(arg))).join(' ');
}

/**
 * Render argv for messages, never for execution: plain words bare, anything else as a JSON
 * string, so a blank or a newline in an argument stays visible. Never throws, whatever it is given.
 */
export function describeArgv(argv: readonly string[]): string {
  if (!Array.isArray(argv)) return typeof argv === 'string' ? JSON.stringify(argv) : String(argv);
  return argv.map((a: unknown) => (typeof a === 'string' && /^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a) ?? String(a))).join(' ');
}
