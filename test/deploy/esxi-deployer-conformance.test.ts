/**
 * The esxi-vm deployer (src/methods/esxi-vm/deployer.ts) in the deployer conformance suite
 * (test/conformance/deployer-suite.ts), between two vcsim processes (test/helpers/vcsim.ts).
 *
 * - The deployer is `createEsxiVmDeployer({ source: A, destination: B, name: ha-host_VM0 })`: it
 *   reaches both hosts itself (no transport), and the name of the copy is fixed by that VM, so
 *   every destination this factory makes is host B (one pair of hosts for the whole file, set back
 *   before and after every test).
 * - The payload is what the deployer's own packager packs (the VM to move, nothing travels until
 *   `receive`); the plan is the planner's own for a FreeBSD 9.2 program using SysV IPC, with the
 *   VM measured by the packager (as migrate() does), so it chooses esxi-vm.
 * - "Nothing behind": host B holds no VM of the copy's name and no directory of it, its other VMs
 *   are as they were, and the source VM at A exists with the power state it had before the test.
 * - The deployer reaches host A through a TCP relay that can stall the VM's disk part-way (the
 *   `stalled` payload of the abort test); a VM payload cannot be cut short (no `truncated`), and
 *   activate/start/health do nothing at the destination (no `breakStep`): those tests skip.
 */
import { createHash } from 'node:crypto';
import { connect as connectTcp, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect } from 'vitest';
import { VimClient } from '../../src/esxi/client.js';
import { datastorePathExists, putDatastoreFile } from '../../src/esxi/datastore-http.js';
import { listVms } from '../../src/esxi/inventory.js';
import { destroyEntity, powerOffVm, powerOnVm } from '../../src/esxi/operations.js';
import { createEsxiVmDeployer, type EsxiVmFacts, type VmPayload } from '../../src/methods/esxi-vm/deployer.js';
import type { HostingVm } from '../../src/methods/esxi-vm/hosting-vm.js';
import { planMigration } from '../../src/policy/plan.js';
import { ResourceProfileSchema, type ResourceProfile } from '../../src/policy/profile.js';
import type { MigrationPlan } from '../../src/policy/plan.js';
import type { DeployContext, Deployer } from '../../src/spec/deployer.js';
import { createExecutorSource } from '../../src/source/executor-source.js';
import { deployerConformance, type DestinationUnderTest, type PayloadSource } from '../conformance/deployer-suite.js';
import { diskStream } from '../helpers/datastore-bytes.js';
import { missing } from '../helpers/requirements.js';
import { startVcsim, stopVcsim, type VcsimHost } from '../helpers/vcsim.js';
import { withSysvIpc } from '../policy/profiles.js';

const DC = 'ha-datacenter';
const DS = 'LocalDS_0';
/** The VM every vcsim host starts with; the copy at B keeps its name. */
const VM = 'ha-host_VM0';
const DISK = `${VM}/disk1-flat.vmdk`;
const DISK_BYTES = 8 * 1024 * 1024;
/** Bytes from the source the relay forwards once armed: past the SOAP calls, well before the disk's end. */
const STALL_AFTER_BYTES = 2 * 1024 * 1024;

/**
 * A TCP relay in front of the source host, which the deployer reaches it through. Armed, it
 * forwards `budget` more bytes from the host, then stops forwarding on the connection that carried
 * them (the VM's disk being read), for good: the move stalls part-way, as on a hung network. Every
 * other connection keeps working, so the move's own clean-up can reach the host after an abort.
 */
interface StallingRelay {
  url: string;
  stallAfter(budget: number): void;
  /** Whether a connection has stalled since the relay was last armed. */
  stalled(): boolean;
  disarm(): void;
  close(): Promise<void>;
}

function startStallingRelay(host: VcsimHost): Promise<StallingRelay> {
  const target = new URL(host.url);
  let budget: number | undefined;
  let hasStalled = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connectTcp(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    let stuck = false;
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (stuck) return;
      if (budget !== undefined) {
        if (chunk.length >= budget) {
          client.write(chunk.subarray(0, budget));
          // Nothing more on this connection, ever; the relay is disarmed for the others.
          stuck = true;
          hasStalled = true;
          budget = undefined;
          upstream.pause();
          return;
        }
        budget -= chunk.length;
      }
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) socket.on('error', end).on('close', end);
    upstream.on('end', () => void (stuck || client.end()));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      resolve({
        url: `http://127.0.0.1:${port}${target.pathname}`,
        stallAfter: (bytes) => ((budget = bytes), (hasStalled = false)),
        stalled: () => hasStalled,
        disarm: () => void (budget = undefined),
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    }),
  );
}

let hosts: VcsimHost[] = [];
let relay: StallingRelay | undefined;
let measuredBytes = 0;
const endpoint = (h: VcsimHost) => ({ url: h.url, username: h.username, password: h.password, insecureHttp: true });
/** The VM to move: the deployer reaches the source host through the relay. */
const hostingVm = (): HostingVm => ({ source: { ...endpoint(hosts[0]!), url: relay!.url }, destination: endpoint(hosts[1]!), name: VM });

async function connect(host: VcsimHost): Promise<VimClient> {
  return (await VimClient.connect(endpoint(host)))._unsafeUnwrap();
}

/** Remove the VM named `VM` (and its directory) from host B, whatever state it is in. */
async function freeNameAtDestination(dst: VimClient): Promise<void> {
  for (const vm of (await listVms(dst)).filter((v) => v.name === VM)) {
    if (vm.powerState !== 'poweredOff') await powerOffVm(dst, vm.ref).catch(() => undefined);
    await destroyEntity(dst, vm.ref);
  }
}

/** Names and power states of every VM of a host, sorted. */
async function vmsOf(client: VimClient): Promise<string[]> {
  return (await listVms(client)).map((v) => `${v.name}:${v.powerState}`).sort();
}

const runs = missing('tool:go').length === 0;
if (runs) {
  beforeAll(async () => {
    hosts = await startVcsim(2);
    relay = await startStallingRelay(hosts[0]!);
    // Real bytes in the source VM's directory, so the copy streams something.
    const src = await connect(hosts[0]!);
    await putDatastoreFile(src, { datacenter: DC, datastore: DS, path: DISK }, diskStream(DISK_BYTES, createHash('sha256')), DISK_BYTES);
    await src.logout();
    // vcsim starts every host with the same VM names: free the name at the destination.
    const dst = await connect(hosts[1]!);
    await freeNameAtDestination(dst);
    await dst.logout();
    // The packager measures the VM before planning, as migrate() has it do.
    const measured = (await createEsxiVmDeployer(hostingVm()).packager.measure!(ResourceProfileSchema.parse(withSysvIpc()), createExecutorSource()))._unsafeUnwrap();
    measuredBytes = measured.hostingVm ? measured.hostingVm.sizeBytes ?? 0 : 0;
    expect(measuredBytes).toBeGreaterThanOrEqual(DISK_BYTES);
  });
  afterAll(async () => {
    await relay?.close();
    await stopVcsim(hosts);
  });
}

let program: { profile: ResourceProfile; plan: MigrationPlan } | undefined;
function vmProgram() {
  if (!program) {
    const profile = ResourceProfileSchema.parse(withSysvIpc());
    const plan = planMigration(profile, { hostingVm: { name: VM, sizeBytes: measuredBytes } })._unsafeUnwrap();
    expect(plan.chosen).toBe('esxi-vm');
    program = { profile, plan };
  }
  return program;
}

/** The deployer's own packager's payload for `context` (the VM to move). */
async function packVm(deployer: Deployer<VmPayload, EsxiVmFacts>, context: DeployContext, stall: () => void): Promise<PayloadSource<VmPayload>> {
  const request = { profile: context.profile, plan: context.plan, source: createExecutorSource() };
  const estimate = (await deployer.packager.estimate(request))._unsafeUnwrap();
  expect(estimate.bytes).toBe(measuredBytes);
  // Packing a VM is handing it over (nothing travels until receive): the suite takes one per round.
  const { payload } = (await deployer.packager.pack(request, estimate))._unsafeUnwrap();
  return {
    whole: () => payload,
    // The VM's bytes stop coming part-way through its disk (a hung source), for the abort test.
    stalled: () => {
      stall();
      return payload;
    },
  };
}

/** Host B, set back to hold no copy, with the source VM's power state remembered. */
async function vmDestination(): Promise<DestinationUnderTest<VmPayload, EsxiVmFacts>> {
  const src = await connect(hosts[0]!);
  const dst = await connect(hosts[1]!);
  await freeNameAtDestination(dst);
  const sourceVm = async () => (await listVms(src)).find((v) => v.name === VM);
  const sourceBefore = (await sourceVm())?.powerState;
  expect(sourceBefore, `the source VM ${VM}`).toBeDefined();
  const othersBefore = (await vmsOf(dst)).filter((v) => !v.startsWith(`${VM}:`));
  let stalling = false;
  const copyDirExists = () => datastorePathExists(dst, { datacenter: DC, datastore: DS, path: `${VM}/` });
  return {
    payloads: (deployer, context) =>
      packVm(deployer, context, () => {
        relay!.stallAfter(STALL_AFTER_BYTES);
        stalling = true;
      }),
    snapshot: async () => JSON.stringify({ destination: await vmsOf(dst), copyDir: await copyDirExists(), source: await vmsOf(src) }),
    expectNothingBehind: async () => {
      // The abort test: the move had really stalled part-way through the VM's disk.
      if (stalling) expect(relay!.stalled(), 'the relay stalled the move').toBe(true);
      expect((await listVms(dst)).filter((v) => v.name === VM), `a VM ${VM} is left at the destination`).toEqual([]);
      expect(await copyDirExists(), `[${DS}] ${VM}/ is left at the destination`).toBe(false);
      expect(await vmsOf(dst), 'the destination\'s other VMs').toEqual(othersBefore);
      expect((await sourceVm())?.powerState, 'the source VM\'s power state').toBe(sourceBefore);
    },
    expectRunning: async (_context, state) => {
      const moved = state.preflight!.facts.moved!;
      const copies = (await listVms(dst)).filter((v) => v.name === VM);
      expect(copies.map((c) => [c.ref.value, c.vmPathName, c.powerState])).toEqual([[moved.destinationVm.value, moved.destinationVmx, 'poweredOn']]);
      expect(state.activated!.installDir).toBe(moved.destinationVmx);
    },
    dispose: async () => {
      relay!.disarm();
      await freeNameAtDestination(dst);
      const vm = await sourceVm();
      if (vm && vm.powerState !== sourceBefore) {
        if (sourceBefore === 'poweredOn') await powerOnVm(src, vm.ref);
        else await powerOffVm(src, vm.ref);
      }
      await Promise.allSettled([src.logout(), dst.logout()]);
    },
  };
}

deployerConformance<VmPayload, EsxiVmFacts>({
  name: 'esxi-vm (two vcsim hosts)',
  requirements: ['tool:go'],
  makeDeployer: () => createEsxiVmDeployer(hostingVm()),
  makeDestination: vmDestination,
  program: vmProgram,
  // The copy runs in a (simulated) VM: its program's pid is not known (0).
  canRunForReal: false,
  // The deployer fixes its destination host and the copy's name: every destination made here is
  // host B, so two rounds of one name run one after the other.
  namesAreMachineWide: true,
  // receive writes the VM's directory on the datastore, named by the VM, and registers the copy there.
  staging: { pattern: /^\[[^\]]+\] \S/, fixedByName: true },
  takesNameIn: 'receive',
  // Known gap: the copy is named by the HostingVm (destinationName ?? name), not by the context, so
  // the context's name is never checked; vSphere names from the VM are checked by the esxi layer.
  // Not applicable, by the suite's own means: a VM payload cannot be cut short (no `truncated`),
  // and activate, start and health make no call at the destination (the move in receive registers,
  // powers on and verifies the copy), so there is no step of theirs to break (no `breakStep`).

});
