/**
 * The one OpenSSH command line (src/transports/openssh-args.ts), which the OpenSSH transport and
 * the ssh CLI executor both build with: host key rules, option quoting, the order ssh relies on.
 */
import { describe, expect, it } from 'vitest';
import { sshArgv } from '../../src/exec/ssh-cli.js';
import { openSshArgv, openSshCommandArgv, openSshFlags, sshOptionValue } from '../../src/transports/openssh-args.js';
import { buildRemoteCommand } from '../../src/transports/remote-command.js';

describe('openSshFlags', () => {
  it("the transport's host key rules: always strict, and a given file is the only one", () => {
    expect(openSshFlags({ strictHostKeyChecking: true, onlyThisKnownHostsFile: true })).toEqual(['-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes']);
    expect(openSshFlags({ knownHostsFile: '/k/known', strictHostKeyChecking: true, onlyThisKnownHostsFile: true })).toEqual([
      '-o', 'BatchMode=yes', '-o', 'UserKnownHostsFile=/k/known', '-o', 'StrictHostKeyChecking=yes', '-o', 'GlobalKnownHostsFile=/dev/null',
    ]);
  });

  it('built-in options come before the caller\'s, so ssh (first value wins) keeps them', () => {
    const flags = openSshFlags({ knownHostsFile: '/k', strictHostKeyChecking: true, options: [['StrictHostKeyChecking', 'no']], extra: ['-T'] });
    expect(flags.indexOf('StrictHostKeyChecking=yes')).toBeLessThan(flags.indexOf('StrictHostKeyChecking=no'));
    expect(flags.at(-1)).toBe('-T');
  });

  it('quotes a known_hosts path that ssh would split at a blank, in the transport and the executor alike', () => {
    expect(sshOptionValue('/plain/path')).toBe('/plain/path');
    expect(sshOptionValue('/dir with space/k')).toBe('"/dir with space/k"');
    expect(sshOptionValue('/a"b')).toBe('"/a\\"b"');
    const viaTransport = openSshFlags({ knownHostsFile: '/dir with space/k', strictHostKeyChecking: true });
    const viaExecutor = sshArgv({ host: 'h', knownHostsFile: '/dir with space/k' }, ['true'])._unsafeUnwrap();
    expect(viaTransport).toContain('UserKnownHostsFile="/dir with space/k"');
    expect(viaExecutor).toContain('UserKnownHostsFile="/dir with space/k"');
  });
});

describe('openSshCommandArgv', () => {
  it('is program, flags, --, host, and the remote command line', () => {
    const line = buildRemoteCommand(['uname', '-a'], { cwd: '/srv' })._unsafeUnwrap();
    expect(openSshCommandArgv('ssh', ['-T'], 'h', ['uname', '-a'], { cwd: '/srv' })._unsafeUnwrap()).toEqual(['ssh', '-T', '--', 'h', line]);
    expect(openSshArgv('ssh', ['-O', 'check'], 'h')).toEqual(['ssh', '-O', 'check', '--', 'h']);
  });

  it('refuses what the remote command cannot carry', () => {
    expect(openSshCommandArgv('ssh', [], 'h', ['echo', 'a\0b'], {})._unsafeUnwrapErr().code).toBe('INVALID_INPUT');
  });
});
