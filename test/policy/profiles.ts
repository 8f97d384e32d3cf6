import type { ResourceProfileInput } from '../../src/index.js';

export const FREEBSD_92 = { os: 'freebsd', release: '9.2-RELEASE', arch: 'amd64' };
export const FREEBSD_11 = { os: 'freebsd', release: '11.4-RELEASE-p3', arch: 'amd64' };
export const FREEBSD_10 = { os: 'freebsd', release: '10.3-RELEASE', arch: 'amd64' };
export const LINUX = { os: 'linux', release: '6.1.0-18-amd64', arch: 'x86_64' };

/** A files-only program: a binary reading a config and writing a database. */
export function filesOnly(platform = FREEBSD_92): ResourceProfileInput {
  return {
    executable: '/usr/local/bin/app',
    executableSize: 200_000,
    argv: ['app', '--db', '/var/db/app.db'],
    cwd: '/var/db',
    uid: 1001,
    gid: 1001,
    platform,
    files: [
      { path: '/etc/app.conf', kind: 'regular', access: ['read'], size: 1_000 },
      { path: '/var/db/app.db', kind: 'regular', access: ['read', 'write'], size: 5_000_000 },
      { path: '/lib/libc.so.7', kind: 'regular', access: ['read', 'exec'], size: 1_700_000, sharedLibrary: true },
      { path: '/var/run/app.fifo', kind: 'fifo', access: ['read'], size: 0 },
    ],
  };
}

/** Files plus a listening TCP socket. */
export function withNetwork(platform = FREEBSD_92): ResourceProfileInput {
  return {
    ...filesOnly(platform),
    sockets: [{ family: 'inet', protocol: 'tcp', localAddress: '0.0.0.0', localPort: 8080, listening: true }],
  };
}

/** Files, network and SysV IPC (key 0x1234). */
export function withSysvIpc(platform = FREEBSD_92): ResourceProfileInput {
  return {
    ...withNetwork(platform),
    ipc: [
      { kind: 'sysv-shm', key: 0x1234, id: 65536, size: 4096 },
      { kind: 'sysv-sem', key: 0x1234, id: 3 },
    ],
  };
}
