/**
 * Move a FreeBSD 9.2 program that uses SysV IPC as a whole VM between two ESXi hosts.
 *
 *   ESXI_SRC=https://esx1/sdk ESXI_DST=https://esx2/sdk ESXI_USER=root ESXI_PASS=... \
 *   ESXI_SRC_THUMBPRINT=AB:CD:... ESXI_DST_THUMBPRINT=... VM_NAME=bsd92 npx tsx examples/esxi-migrate.ts
 *
 * VM_QUIESCE=snapshot copies a crash-consistent snapshot while the VM keeps running (the default,
 * power-off, stops it for the copy).
 *
 * Without ESXI_SRC it starts two vSphere simulators (vcsim, built from Debian's govmomi) and
 * moves their sample VM, so it runs on any machine where `go` is installed.
 */
import { migrate, formatBytes, formatPlan, type ResourceProfileInput } from '../src/index.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../test/helpers/vcsim.js';
import { VimClient } from '../src/esxi/client.js';
import { findVmByName } from '../src/esxi/inventory.js';
import { destroyEntity, powerOffVm } from '../src/esxi/operations.js';

const profile: ResourceProfileInput = {
  executable: '/usr/local/bin/postgres',
  executableSize: 6_000_000,
  argv: ['postgres', '-D', '/var/db/pgsql'],
  cwd: '/var/db/pgsql',
  uid: 70,
  gid: 70,
  platform: { os: 'freebsd', release: '9.2-RELEASE', arch: 'amd64' },
  files: [{ path: '/var/db/pgsql/base/1/1259', kind: 'regular', access: ['read', 'write'], size: 98_304 }],
  sockets: [{ family: 'inet', protocol: 'tcp', localAddress: '0.0.0.0', localPort: 5432, listening: true }],
  ipc: [
    { kind: 'sysv-shm', key: 5432001, size: 56 },
    { kind: 'sysv-sem', key: 5432002 },
  ],
};

let simulators: VcsimHost[] = [];
let source, destination, vmName: string;
if (process.env.ESXI_SRC && process.env.ESXI_DST) {
  const credentials = { username: process.env.ESXI_USER ?? 'root', password: process.env.ESXI_PASS ?? '' };
  source = { url: process.env.ESXI_SRC, ...credentials, ...(process.env.ESXI_SRC_THUMBPRINT ? { thumbprint: process.env.ESXI_SRC_THUMBPRINT } : {}) };
  destination = { url: process.env.ESXI_DST, ...credentials, ...(process.env.ESXI_DST_THUMBPRINT ? { thumbprint: process.env.ESXI_DST_THUMBPRINT } : {}) };
  vmName = process.env.VM_NAME ?? '';
} else {
  console.log('No ESXI_SRC/ESXI_DST: starting two vSphere simulators.');
  simulators = await startVcsim(2);
  const [a, b] = simulators.map((h) => ({ url: h.url, username: h.username, password: h.password, insecureHttp: true }));
  source = a!;
  destination = b!;
  vmName = 'ha-host_VM0';
  // The simulators start with the same VM names: free the name at the destination.
  const dst = (await VimClient.connect(destination))._unsafeUnwrap();
  const existing = await findVmByName(dst, vmName);
  await powerOffVm(dst, existing.ref);
  await destroyEntity(dst, existing.ref);
  await dst.logout();
}

try {
  const result = await migrate({
    target: { profile },
    vm: { source, destination, name: vmName, quiesce: process.env.VM_QUIESCE === 'snapshot' ? 'snapshot' : 'power-off' },
    onProgress: (p) => p.phase !== 'transfer' && console.log(`${p.phase}...`),
  });
  if (result.isErr()) {
    console.error(`error [${result.error.code}]: ${result.error.message}`);
    process.exitCode = 1;
  } else {
    const r = result.value;
    console.log(formatPlan(r.plan));
    console.log(`moved VM ${r.vm!.name}: ${r.vm!.powerState} at ${r.vm!.destinationVmx}`);
    console.log(`estimated ${formatBytes(r.estimatedBytes)}, sent ${formatBytes(r.bytesSent)}; quiesced by ${r.vm!.quiesce}; source VM ${r.source.action}`);
    for (const warning of r.vm!.warnings) console.log(`warning: ${warning}`);
  }
} finally {
  await stopVcsim(simulators);
}
