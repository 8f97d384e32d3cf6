/**
 * Building the one command string SSH sends, shared by the ssh2 and OpenSSH transports.
 *
 * The remote login shell runs `cd`, records its own PID (sshd makes it a process group leader)
 * in a PID file, runs the quoted argv and deletes the file. SSH has no reliable way to kill a
 * remote command when the client gives up (sshd only closes the channel, and the OpenSSH
 * client cannot send signals), so aborts and `close()` kill that process group by PID.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import { posix } from 'node:path';
import { err, ok, type Result } from 'neverthrow';
import { TransportError } from './errors.js';
import { shellQuote, shellQuoteArgv } from './quote.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Resolve a destination path: absolute stays, relative is joined to `root` (`.` = login dir). */
export function resolveRemotePath(root: string, path: string): string {
  if (path.startsWith('/') || root === '.') return path;
  return posix.join(root, path);
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
   * Shell text that kills the command recorded in `pidFile`: the whole process group, since
   * sshd starts every session as its own group, then the PID alone as a fallback.
   */
  killCommand(pidFile: string): string {
    const f = shellQuote(pidFile);
    return `p=$(cat ${f} 2>/dev/null) && [ -n "$p" ] && { kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; }; rm -f ${f}; true`;
  }

  /** Shell text that kills every command in `running` (PID files of commands still running). */
  killAllCommand(running: Iterable<string>): string {
    return [...[...running].map((f) => this.killCommand(f)), 'true'].join('; ');
  }
}

/** Where and how to run one remote command. */
export interface RemoteCommandOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Record the command's PID here (see {@link RemoteRunDirectory}). */
  pidFile?: string;
}

/** The command string for `argv`; `INVALID_INPUT` for NUL bytes or bad env names. */
export function buildRemoteCommand(argv: readonly string[], options: RemoteCommandOptions): Result<string, TransportError> {
  if (argv.length === 0) return err(new TransportError('INVALID_INPUT', 'Empty argv: nothing to run'));
  // A C string cannot hold NUL: the remote side would silently cut the argument short.
  const withNul = argv.findIndex((a) => a.includes('\0'));
  if (withNul >= 0) return err(new TransportError('INVALID_INPUT', `argv[${withNul}] contains a NUL byte, which no remote command can receive`));
  const parts: string[] = [];
  if (options.cwd !== undefined) parts.push(`cd -- ${shellQuote(options.cwd)} || exit 127`);
  for (const [name, value] of Object.entries(options.env ?? {})) {
    if (!ENV_NAME.test(name)) return err(new TransportError('INVALID_INPUT', `Invalid environment variable name "${name}"`));
    if (value.includes('\0')) return err(new TransportError('INVALID_INPUT', `Environment variable ${name} contains a NUL byte`));
    parts.push(`${name}=${shellQuote(value)}; export ${name}`);
  }
  const command = shellQuoteArgv(argv);
  if (options.pidFile === undefined) {
    parts.push(`exec ${command}`);
  } else {
    // Not `exec`: the shell stays to delete its PID file when the command ends. Recording
    // is best effort: a destination without a writable /tmp still runs the command.
    const f = shellQuote(options.pidFile);
    parts.push(`(set -C; echo $$ > ${f}) 2>/dev/null`, command, `s=$?`, `rm -f ${f}`, 'exit $s');
  }
  return ok(parts.join('; '));
}
