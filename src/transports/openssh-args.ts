/**
 * The OpenSSH client's command line, the one place it is built: the OpenSSH transport and the
 * ssh CLI executor (`src/exec/ssh-cli.ts`) both run
 *
 *     ssh -o BatchMode=yes [-p PORT] [-i KEY -o IdentitiesOnly=yes] [host key options] [-o ...] [flags] -- HOST COMMAND
 *
 * where COMMAND is {@link buildRemoteCommand}'s one line, safe for any remote login shell.
 * BatchMode makes ssh fail instead of prompting for a password or a host key; `--` keeps a
 * host from ever being read as an option.
 *
 * @module
 */
import type { Result } from 'neverthrow';
import type { TransportError } from './errors.js';
import { buildRemoteCommand, type RemoteCommandOptions } from './remote-command.js';

/**
 * Quote a value for an ssh `-o Key=value` option. ssh splits some values (UserKnownHostsFile
 * takes several files) at blanks, honouring double quotes; so a path with a blank or `"` is quoted.
 * Not for ProxyCommand, which ssh takes verbatim to the end of the line.
 */
export function sshOptionValue(value: string): string {
  return /[\s"]/.test(value) ? `"${value.replace(/"/g, '\\"')}"` : value;
}

/** What goes between the program and `--` (see the module comment). */
export interface OpenSshFlags {
  /** `-p`; default ssh's (22, or ssh_config's). */
  port?: number;
  /** `-i`, with IdentitiesOnly so the agent's other keys are not offered first. */
  identityFile?: string;
  /** Check host keys against this known_hosts file (`UserKnownHostsFile`). */
  knownHostsFile?: string;
  /** `StrictHostKeyChecking=yes`: never accept or add a key known_hosts lacks or contradicts. */
  strictHostKeyChecking: boolean;
  /** With `knownHostsFile`: ignore the system-wide known_hosts, so only that file vouches for keys. */
  onlyThisKnownHostsFile?: boolean;
  /** More `-o Name=value` options, in order, values as given (quote paths with {@link sshOptionValue}). */
  options?: ReadonlyArray<readonly [name: string, value: string]>;
  /** Flags after the options (`-l user`, `-T` ...). */
  extra?: readonly string[];
}

/**
 * The flags for {@link OpenSshFlags}, host key rules included. ssh keeps the first value it is
 * given for an option, so the built-in ones, which come first, cannot be overridden by `options`.
 */
export function openSshFlags(flags: OpenSshFlags): string[] {
  const o = (name: string, value: string) => ['-o', `${name}=${value}`];
  return [
    ...o('BatchMode', 'yes'),
    ...(flags.port !== undefined ? ['-p', String(flags.port)] : []),
    ...(flags.identityFile !== undefined ? ['-i', flags.identityFile, ...o('IdentitiesOnly', 'yes')] : []),
    ...(flags.knownHostsFile !== undefined ? o('UserKnownHostsFile', sshOptionValue(flags.knownHostsFile)) : []),
    ...(flags.strictHostKeyChecking ? o('StrictHostKeyChecking', 'yes') : []),
    ...(flags.knownHostsFile !== undefined && flags.onlyThisKnownHostsFile ? o('GlobalKnownHostsFile', '/dev/null') : []),
    ...(flags.options ?? []).flatMap(([name, value]) => o(name, value)),
    ...(flags.extra ?? []),
  ];
}

/** `program flags -- host [command]`: `command` is a line already built for the remote login shell. */
export function openSshArgv(program: string, flags: readonly string[], host: string, command?: string): string[] {
  return [program, ...flags, '--', host, ...(command !== undefined ? [command] : [])];
}

/**
 * The ssh argv that runs `argv` on `host`: its command line built by {@link buildRemoteCommand}
 * (`INVALID_INPUT` for a NUL byte, a bad env name, or a command too long once encoded).
 */
export function openSshCommandArgv(
  program: string,
  flags: readonly string[],
  host: string,
  argv: readonly string[],
  remote: RemoteCommandOptions,
): Result<string[], TransportError> {
  return buildRemoteCommand(argv, remote).map((command) => openSshArgv(program, flags, host, command));
}
