/**
 * An {@link Executor} that runs commands on another host through the OpenSSH client, one `ssh`
 * process per command (no shared connection, no set-up step: for a few probes of a host, e.g.
 * the FreeBSD profiler). The command line is the OpenSSH transport's
 * (`src/transports/openssh-args.ts`): `ssh -o BatchMode=yes [options] -- <host> <one command line>`,
 * that line built by `buildRemoteCommand`, argv quoted by `shellQuoteArgv` and run under an
 * explicit `/bin/sh -c` through an encoding every login shell (csh and tcsh too) passes on
 * unchanged, so the remote program sees exactly the argv given. This module only maps its
 * options onto that command line and runs it with a local {@link Executor}.
 *
 * @module
 */
import { err, errAsync, type Result } from 'neverthrow';
import { ApMigrateError } from '../errors.js';
import type { ExecOptions, Executor } from '../spec/executor.js';
import { openSshCommandArgv, openSshFlags } from '../transports/openssh-args.js';
import { isTcpPort } from '../transports/ssh-options.js';
import { createLocalExecutor } from './local.js';

/** Options for {@link createSshCliExecutor}. */
export interface SshCliExecutorOptions {
  /** `host`, `user@host` or an alias from ssh_config. Must not start with `-`. */
  host: string;
  /** Port (default: ssh's). */
  port?: number;
  /** Private key file (`-i`). */
  identityFile?: string;
  /** The known_hosts file to trust, alone (sets `UserKnownHostsFile`; the system-wide file is then ignored). */
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
const OPTION_NAME_RE = /^[A-Za-z]+$/;

const invalid = (options: SshCliExecutorOptions, problem: string) =>
  new ApMigrateError('INVALID_INPUT', `Cannot run over ssh: ${problem}`, { details: { host: options.host } });

/**
 * The ssh argv that runs `argv` remotely with the given options (exported for tests);
 * `INVALID_INPUT` when the remote command cannot be built (NUL byte, bad env name, too long).
 * Host keys are always checked strictly (`StrictHostKeyChecking=yes`, a secure default whatever
 * the user's ssh_config says): with `knownHostsFile`, against that file only; without, against
 * the user's and the system's known_hosts.
 */
export function sshArgv(
  options: SshCliExecutorOptions,
  argv: readonly string[],
  exec: Pick<ExecOptions, 'cwd' | 'env'> = {},
): Result<string[], ApMigrateError> {
  const flags = openSshFlags({
    ...(options.port !== undefined ? { port: options.port } : {}),
    ...(options.identityFile !== undefined ? { identityFile: options.identityFile } : {}),
    ...(options.knownHostsFile !== undefined ? { knownHostsFile: options.knownHostsFile } : {}),
    strictHostKeyChecking: true,
    onlyThisKnownHostsFile: options.knownHostsFile !== undefined,
    options: Object.entries(options.sshOptions ?? {}),
  });
  const remote = { ...(exec.cwd !== undefined ? { cwd: exec.cwd } : {}), ...(exec.env ? { env: exec.env } : {}) };
  const ssh = openSshCommandArgv(options.sshProgram ?? 'ssh', flags, options.host, argv, remote);
  return ssh.isErr() ? err(invalid(options, ssh.error.message)) : ssh;
}

/**
 * Check the options this module adds before any ssh runs; a sentence naming the problem, or
 * undefined. (argv, cwd and env are checked where the remote command is built.)
 */
function optionProblem(options: SshCliExecutorOptions): string | undefined {
  if (!HOST_RE.test(options.host) || options.host.startsWith('-')) return `"${options.host}" is not a host name (letters, digits, . - _ @ : only, not starting with -)`;
  if (options.port !== undefined && !isTcpPort(options.port)) return `port ${options.port} is not 1-65535`;
  for (const name of Object.keys(options.sshOptions ?? {})) if (!OPTION_NAME_RE.test(name)) return `"${name}" is not an ssh option name`;
  return undefined;
}

/** An {@link Executor} over the `ssh` command-line client. */
export function createSshCliExecutor(options: SshCliExecutorOptions): Executor {
  const local = options.local ?? createLocalExecutor();
  const where = options.port !== undefined ? `${options.host}:${options.port}` : options.host;
  return {
    description: `ssh://${where}`,
    exec: (argv, execOptions = {}) => {
      const problem = optionProblem(options);
      if (problem) return errAsync(invalid(options, problem));
      // cwd and env apply on the remote host (in the command line), never to the local ssh.
      const { cwd, env, ...rest } = execOptions;
      const ssh = sshArgv(options, argv, { ...(cwd !== undefined ? { cwd } : {}), ...(env ? { env } : {}) });
      return ssh.isErr() ? errAsync(ssh.error) : local.exec(ssh.value, rest);
    },
  };
}
