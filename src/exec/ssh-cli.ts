/**
 * An {@link Executor} that runs commands on another host through the OpenSSH client:
 * `ssh -o BatchMode=yes [options] -- <host> <one quoted command line>`.
 *
 * ssh hands the one command line to the remote user's login shell, which may be csh or tcsh. The
 * line is built by the transports' `buildRemoteCommand`: argv quoted with {@link quoteForShell},
 * then run under an explicit `/bin/sh -c` through an encoding every login shell passes on
 * unchanged, so the remote program sees exactly the argv given.
 * BatchMode makes ssh fail instead of prompting for a password or a host key.
 *
 * @module
 */
import { err, errAsync, ok, type Result } from 'neverthrow';
import { ApMigrateError } from '../errors.js';
import type { ExecOptions, Executor } from '../spec/executor.js';
import { createLocalExecutor } from './local.js';
import { shellQuoteArgv } from '../transports/quote.js';
import { buildRemoteCommand } from '../transports/remote-command.js';

/**
 * Quote argv for a POSIX shell (`sh -c`): the transports' {@link shellQuoteArgv}, under the name
 * this module has always exported.
 */
export const quoteForShell = shellQuoteArgv;

/** Options for {@link createSshCliExecutor}. */
export interface SshCliExecutorOptions {
  /** `host`, `user@host` or an alias from ssh_config. Must not start with `-`. */
  host: string;
  /** Port (default: ssh's). */
  port?: number;
  /** Private key file (`-i`). */
  identityFile?: string;
  /** A known_hosts file to trust (sets `UserKnownHostsFile` and `StrictHostKeyChecking=yes`). */
  knownHostsFile?: string;
  /** More `-o Name=value` options, e.g. `{ ConnectTimeout: '10' }`. */
  sshOptions?: Record<string, string>;
  /** Runs the local `ssh` (default: the local executor). */
  local?: Executor;
  /** The ssh program (default `ssh`). */
  sshProgram?: string;
}

/** A host name, alias or `user@host`: no leading dash (it would be read as an option), no spaces. */
const HOST_RE = /^[A-Za-z0-9_.%@:[\]-]+$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const OPTION_NAME_RE = /^[A-Za-z]+$/;

/**
 * The ssh argv that runs `argv` remotely with the given options (exported for tests);
 * `INVALID_INPUT` when the remote command cannot be built (NUL byte, bad env name, too long).
 */
export function sshArgv(
  options: SshCliExecutorOptions,
  argv: readonly string[],
  exec: Pick<ExecOptions, 'cwd' | 'env'> = {},
): Result<string[], ApMigrateError> {
  const ssh = [options.sshProgram ?? 'ssh', '-o', 'BatchMode=yes'];
  if (options.port !== undefined) ssh.push('-p', String(options.port));
  if (options.identityFile !== undefined) ssh.push('-i', options.identityFile, '-o', 'IdentitiesOnly=yes');
  if (options.knownHostsFile !== undefined) ssh.push('-o', `UserKnownHostsFile=${options.knownHostsFile}`, '-o', 'StrictHostKeyChecking=yes');
  for (const [name, value] of Object.entries(options.sshOptions ?? {})) ssh.push('-o', `${name}=${value}`);
  const line = buildRemoteCommand(argv, { ...(exec.cwd !== undefined ? { cwd: exec.cwd } : {}), ...(exec.env ? { env: exec.env } : {}) });
  if (line.isErr()) return err(new ApMigrateError('INVALID_INPUT', `Cannot run over ssh: ${line.error.message}`, { details: { host: options.host } }));
  return ok([...ssh, '--', options.host, line.value]);
}

/** Check the options before any ssh runs; returns a sentence naming the problem, or undefined. */
function optionProblem(options: SshCliExecutorOptions, exec: ExecOptions): string | undefined {
  if (!HOST_RE.test(options.host) || options.host.startsWith('-')) return `"${options.host}" is not a host name (letters, digits, . - _ @ : only, not starting with -)`;
  if (options.port !== undefined && (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535)) return `port ${options.port} is not 1-65535`;
  for (const name of Object.keys(options.sshOptions ?? {})) if (!OPTION_NAME_RE.test(name)) return `"${name}" is not an ssh option name`;
  for (const name of Object.keys(exec.env ?? {})) if (!ENV_NAME_RE.test(name)) return `"${name}" is not an environment variable name`;
  return undefined;
}

/** An {@link Executor} over the `ssh` command-line client. */
export function createSshCliExecutor(options: SshCliExecutorOptions): Executor {
  const local = options.local ?? createLocalExecutor();
  const where = options.port !== undefined ? `${options.host}:${options.port}` : options.host;
  return {
    description: `ssh://${where}`,
    exec: (argv, execOptions = {}) => {
      const problem = optionProblem(options, execOptions);
      if (problem) return errAsync(new ApMigrateError('INVALID_INPUT', `Cannot run over ssh: ${problem}`, { details: { host: options.host } }));
      if (argv.length === 0) return errAsync(new ApMigrateError('INVALID_INPUT', 'Cannot run an empty argv over ssh'));
      const { cwd, env, ...rest } = execOptions;
      // cwd and env apply on the remote host (in the command line), never to the local ssh.
      const ssh = sshArgv(options, argv, { ...(cwd !== undefined ? { cwd } : {}), ...(env ? { env } : {}) });
      if (ssh.isErr()) return errAsync(ssh.error);
      return local.exec(ssh.value, rest);
    },
  };
}
