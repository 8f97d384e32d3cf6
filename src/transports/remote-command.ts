/**
 * Building the one command string SSH sends, shared by the ssh2 and OpenSSH transports (and so
 * by the ssh CLI executor, which builds its command line with the OpenSSH transport's).
 *
 * sshd hands that string to the user's *login shell* (`$SHELL -c STRING`), which may be csh or
 * tcsh (FreeBSD root before 14.0), fish, ... and those parse POSIX text differently (`!` history
 * expansion, no newlines inside quotes, no `$(...)`). So the string sent is always
 *
 *     exec /bin/sh -c 'eval "$(printf %b "ENCODED")"'
 *
 * where ENCODED is the real POSIX script with every byte outside `[A-Za-z0-9 ,./:=_+@-]` written
 * as a `\0NNN` octal escape ({@link wrapForLoginShell}). The single-quoted part holds no `'`,
 * newline or `!`, and a `\` only ever before `0` (its `"`, `$(` and `%` mean nothing inside
 * single quotes), so POSIX shells, csh/tcsh and fish all pass it to `/bin/sh` byte for byte
 * (tests: dash, bash, tcsh); there `printf %b` restores the script (which never ends in a
 * newline, the only thing `$(...)` strips) and `eval` runs it. `exec` keeps the PID: `/bin/sh`
 * replaces the login shell, which sshd started as a session and process group leader.
 *
 * With a PID file, the script records that PID (`$$`), runs the command in a subshell (same
 * process group), deletes the file and exits with the command's status. SSH has no reliable way
 * to kill a remote command when the client gives up (sshd only closes the channel, and the
 * OpenSSH client cannot send signals), so aborts and `close()` kill that process group by PID
 * ({@link RemoteRunDirectory.killCommand}).
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { posix } from 'node:path';
import { err, ok, type Result } from 'neverthrow';
import { TransportError } from './errors.js';
import { shellQuote, shellQuoteArgv } from './quote.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Largest command string sent (bytes). The string is an argument of two `execve` calls on the
 * destination (login shell, then `/bin/sh`): Linux caps one argument at 128 KiB, FreeBSD caps
 * argv plus environment at 256 KiB (ARG_MAX). Bulk data belongs on stdin or in `upload`.
 */
export const MAX_REMOTE_COMMAND_BYTES = 100 * 1024;

/** Bytes written as themselves in {@link wrapForLoginShell}; everything else is `\0NNN`. */
const PLAIN_BYTES = new Set([...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ,./:=_+@-'].map((c) => c.charCodeAt(0)));

/**
 * The command string that runs the POSIX `script` under `/bin/sh`, whatever the remote login
 * shell is (see the module comment). `script` must not contain NUL (no shell can hold it) and
 * should not end in a newline (command substitution would drop it); no size check here.
 */
export function wrapForLoginShell(script: string): string {
  const parts: string[] = [];
  for (const byte of Buffer.from(script, 'utf8')) {
    // Always three octal digits, so a digit that follows is never read as part of the escape.
    parts.push(PLAIN_BYTES.has(byte) ? String.fromCharCode(byte) : `\\0${byte.toString(8).padStart(3, '0')}`);
  }
  return `exec /bin/sh -c 'eval "$(printf %b "${parts.join('')}")"'`;
}

/** Resolve a destination path: absolute stays, relative is joined to `root` (`.` = login dir). */
export function resolveRemotePath(root: string, path: string): string {
  if (path.startsWith('/') || root === '.') return path;
  return posix.join(root, path);
}

/**
 * POSIX text that kills the command recorded in a PID file (group first, then the PID alone).
 * The file is only trusted to hold a PID above 1: the command could overwrite it, and
 * `kill -- -1` would kill every process of the user. dash's `kill` takes no `--`, so the group
 * kill is tried in both spellings.
 */
function killScript(quotedPidFile: string): string {
  return (
    `p=$(cat ${quotedPidFile} 2>/dev/null) && case $p in ''|*[!0-9]*) false ;; *) [ "$p" -gt 1 ] ;; esac 2>/dev/null && ` +
    `{ kill -KILL -- "-$p" 2>/dev/null || kill -KILL "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; }; rm -f ${quotedPidFile}`
  );
}

/**
 * Per-transport bookkeeping of remote PIDs: one file per running command, removed by the
 * command's own wrapper when it ends, so nothing needs cleaning up after normal use.
 */
export class RemoteRunDirectory {
  /** Prefix of this transport's PID files in the remote /tmp. */
  readonly prefix = `/tmp/.ap-migrate-${randomUUID()}`;
  private next = 0;

  /** A fresh PID file path for one command. */
  pidFile(): string {
    this.next += 1;
    return `${this.prefix}-${this.next}.pid`;
  }

  /**
   * The command string (already wrapped for any login shell) that kills the command recorded in
   * `pidFile`: the whole process group, since sshd starts every session as its own group, then
   * the PID alone as a fallback; it always exits 0.
   */
  killCommand(pidFile: string): string {
    return wrapForLoginShell(`${killScript(shellQuote(pidFile))}; true`);
  }

  /** The command string that kills every command in `running` (PID files of commands still running). */
  killAllCommand(running: Iterable<string>): string {
    const files = [...running].map(shellQuote);
    if (files.length === 0) return wrapForLoginShell('true');
    return wrapForLoginShell(`for f in ${files.join(' ')}; do ${killScript('"$f"')}; done; true`);
  }
}

/** Where and how to run one remote command. */
export interface RemoteCommandOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Record the command's PID here (see {@link RemoteRunDirectory}). */
  pidFile?: string;
}

/**
 * Where a transport with destination directory `root` runs a command asked for with `cwd` and
 * `env`: in `cwd` resolved against `root`, else in `root` itself (nothing for the login dir).
 */
export function remoteCommandOptions(root: string, exec: { cwd?: string; env?: Record<string, string> }, pidFile?: string): RemoteCommandOptions {
  const cwd = exec.cwd !== undefined ? resolveRemotePath(root, exec.cwd) : root !== '.' ? root : undefined;
  return {
    ...(cwd !== undefined ? { cwd } : {}),
    ...(exec.env ? { env: exec.env } : {}),
    ...(pidFile !== undefined ? { pidFile } : {}),
  };
}

/**
 * The POSIX script (before {@link wrapForLoginShell}) for `argv`: `cd`, environment, then the
 * command, with a PID file when asked. `INVALID_INPUT` for NUL bytes or bad env names.
 */
export function buildRemoteScript(argv: readonly string[], options: RemoteCommandOptions): Result<string, TransportError> {
  if (argv.length === 0) return err(new TransportError('INVALID_INPUT', 'Empty argv: nothing to run'));
  // A C string cannot hold NUL: the remote side would silently cut the argument short.
  const withNul = argv.findIndex((a) => a.includes('\0'));
  if (withNul >= 0) return err(new TransportError('INVALID_INPUT', `argv[${withNul}] contains a NUL byte, which no remote command can receive`));
  if (options.cwd?.includes('\0')) return err(new TransportError('INVALID_INPUT', 'cwd contains a NUL byte'));
  if (options.pidFile !== undefined && (options.pidFile.includes('\0') || !options.pidFile.startsWith('/'))) {
    return err(new TransportError('INVALID_INPUT', 'pidFile must be an absolute path without NUL'));
  }
  const body: string[] = [];
  if (options.cwd !== undefined) {
    // `./` keeps a relative directory relative to the login directory: CDPATH cannot redirect it.
    const dir = options.cwd.startsWith('/') ? options.cwd : `./${options.cwd}`;
    body.push(`cd -- ${shellQuote(dir)} || exit 127`);
  }
  for (const [name, value] of Object.entries(options.env ?? {})) {
    if (!ENV_NAME.test(name)) return err(new TransportError('INVALID_INPUT', `Invalid environment variable name "${name}"`));
    if (value.includes('\0')) return err(new TransportError('INVALID_INPUT', `Environment variable ${name} contains a NUL byte`));
    body.push(`${name}=${shellQuote(value)}; export ${name}`);
  }
  // `exec` cannot take a program whose name starts with `-` in every sh (bash reads it as an
  // option, dash has no `--`): such a command runs as a child instead.
  const command = shellQuoteArgv(argv);
  body.push(argv[0]!.startsWith('-') ? command : `exec ${command}`);
  if (options.pidFile === undefined) return ok(body.join('; '));
  // The command runs in a subshell, so `cd`, the environment (PATH, IFS...) and a failing `cd`
  // never reach the shell that deletes the PID file. Recording is best effort: a destination
  // without a writable /tmp still runs the command.
  const f = shellQuote(options.pidFile);
  return ok(`(set -C; echo "$$" > ${f}) 2>/dev/null; (${body.join('; ')}); s=$?; rm -f ${f}; exit "$s"`);
}

/**
 * The command string SSH sends for `argv`: {@link buildRemoteScript} wrapped for any login
 * shell. `INVALID_INPUT` for NUL bytes, bad env names, or a command longer than
 * {@link MAX_REMOTE_COMMAND_BYTES} once encoded.
 */
export function buildRemoteCommand(argv: readonly string[], options: RemoteCommandOptions): Result<string, TransportError> {
  return buildRemoteScript(argv, options).andThen((script) => {
    const command = wrapForLoginShell(script);
    if (command.length > MAX_REMOTE_COMMAND_BYTES) {
      return err(
        new TransportError(
          'INVALID_INPUT',
          `Remote command is ${command.length} bytes once encoded for the remote shell, more than the ${MAX_REMOTE_COMMAND_BYTES} allowed; pass large data on stdin or with upload()`,
          { details: { bytes: command.length, maxBytes: MAX_REMOTE_COMMAND_BYTES } },
        ),
      );
    }
    return ok(command);
  });
}
