/**
 * Plan three sample programs and print why each method is or is not allowed.
 * Run: npx tsx examples/plan.ts
 */
import { formatPlan, planMigration, type ResourceProfileInput } from '../src/index.js';

const freebsd92 = { os: 'freebsd', release: '9.2-RELEASE', arch: 'amd64' };

const filesOnly: ResourceProfileInput = {
  executable: '/usr/local/bin/sqlite3',
  executableSize: 1_400_000,
  argv: ['sqlite3', '/var/db/app.db'],
  cwd: '/var/db',
  uid: 1001,
  gid: 1001,
  platform: freebsd92,
  files: [
    { path: '/var/db/app.db', kind: 'regular', access: ['read', 'write'], size: 48_000_000 },
    { path: '/lib/libc.so.7', kind: 'regular', access: ['read', 'exec'], size: 1_700_000, sharedLibrary: true },
  ],
};
const withNetwork: ResourceProfileInput = {
  ...filesOnly,
  executable: '/usr/local/bin/httpd',
  argv: ['httpd'],
  sockets: [{ family: 'inet', protocol: 'tcp', localAddress: '0.0.0.0', localPort: 8080, listening: true }],
};
const withIpc: ResourceProfileInput = {
  ...withNetwork,
  executable: '/usr/local/bin/postgres',
  argv: ['postgres', '-D', '/var/db/pg'],
  ipc: [
    { kind: 'sysv-shm', key: 0x0052e2c1, size: 56 },
    { kind: 'sysv-sem', key: 0x0052e2c2 },
  ],
};

for (const [title, profile] of [
  ['files only (FreeBSD 9.2)', filesOnly],
  ['files + network (FreeBSD 9.2)', withNetwork],
  ['files + network + SysV IPC (FreeBSD 9.2)', withIpc],
  ['files + network + SysV IPC (FreeBSD 11.4)', { ...withIpc, platform: { ...freebsd92, release: '11.4-RELEASE' } }],
] as const) {
  console.log(`\n== ${title}`);
  const plan = planMigration(profile);
  if (plan.isErr()) {
    console.error(plan.error.message);
    process.exitCode = 1;
  } else {
    console.log(formatPlan(plan.value));
  }
}
