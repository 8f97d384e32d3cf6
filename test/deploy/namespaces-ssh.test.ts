/**
 * linux-namespaces migration over SSH between two "hosts" (network namespaces joined by a veth,
 * the destination running a real sshd): real programs are profiled with strace, planned,
 * migrated, started in their own namespaces at the destination and talked to from there.
 * Also: the same path picks chroot for a files-only program, and refuses a forced chroot for a
 * network program before anything is sent. Everything is rolled back and checked gone.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChrootDeployer, createNamespacesDeployer, migrate, namespaceNames, type MigrationReport } from '../../src/index.js';
import { defaultVethAddresses } from '../../src/methods/linux-namespaces/deployer.js';
import { createStraceProfiler } from '../../src/profilers/strace.js';
import type { Transport } from '../../src/spec/transport.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { demoBinary, ECHO_CLIENT } from '../helpers/demo-programs.js';
import { readIpcpairStatus } from '../helpers/ipcpair-status.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import { startNotesd, type NotesdSource } from '../helpers/notesd.js';
import { skipUnless } from '../helpers/requirements.js';
import { freePort, startSshd, type TestSshd } from '../helpers/sshd.js';

// At the destination: the host's IPC namespace and its segments, then those seen inside the
// program's own IPC namespace (a process of the launcher's session whose ipc ns differs).
const IPC_VIEW_SCRIPT = `
session="$1"
host_ns=$(readlink /proc/self/ns/ipc)
echo "host-ns $host_ns"
ipcs -m | sed 's/^/host /'
for p in $(pgrep -s "$session"); do
  ns=$(readlink "/proc/$p/ns/ipc") || continue
  if [ "$ns" != "$host_ns" ]; then
    echo "program-ns $ns"
    nsenter -t "$p" -i ipcs -m | sed 's/^/program /'
    exit 0
  fi
done
echo "no process of session $session has its own IPC namespace"; exit 1
`;

/** PIDs of live (not zombie) processes whose command line mentions `needle`: PID 1 here reaps nothing. */
function liveProcessesMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1];
      if (cmdline.includes(needle) && state !== 'Z' && state !== 'X') found.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return found;
}

function killQuietly(target: number): void {
  try {
    process.kill(target, 'SIGKILL');
  } catch {
    // gone, or not a group
  }
}

/** Run a shell line at the source host without blocking the event loop (writing into a FIFO blocks until read). */
function shellLater(delayMs: number, script: string, ...args: string[]): Promise<void> {
  return new Promise((resolve) => {
    setTimeout(() => {
      const child = spawn('timeout', ['5', 'sh', '-c', script, 'sh', ...args], { stdio: 'ignore' });
      child.on('exit', () => resolve());
      child.on('error', () => resolve());
    }, delayMs);
  });
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:ip', 'tool:ss', 'tool:strace', 'tool:nsenter', 'tool:/usr/sbin/sshd', 'tool:ssh'))(
  'linux-namespaces migration over SSH between two network-namespace hosts',
  () => {
    const work = mkdtempSync(join(tmpdir(), 'apm-nsssh-'));
    const dstRoot = join(work, 'dst-host/srv');
    // Network namespace names, the source's port and SysV keys are global to the machine: make
    // them unique to this run, so another run (or the local test) cannot collide with it.
    const id = randomBytes(2).toString('hex');
    const ECHOD = `echod-${id}`;
    const IPCPAIR = `ipcpair-${id}`;
    const NOTESD = `notesd-${id}`;
    let echodPort = 0;
    const keyNumber = 0x5a170000 + randomBytes(2).readUInt16BE(0) * 2;
    const IPC_KEY = `0x${keyNumber.toString(16)}`;
    const IPC_SEM_KEY = `0x${(keyNumber + 1).toString(16)}`;
    let pair: NetnsPair | undefined;
    let sshd: TestSshd | undefined;
    let transport: Transport | undefined;
    let notesd: NotesdSource | undefined;
    const reports = new Map<string, MigrationReport>();
    const sources: number[] = [];
    const groups: number[] = [];
    const squatters: string[] = [];
    let cleaned = false;

    beforeAll(async () => {
      mkdirSync(dstRoot, { recursive: true });
      echodPort = await freePort();
      pair = createNetnsPair();
      sshd = await startSshd({ host: pair.destinationAddress, port: 22, wrap: pair.wrap(pair.destination) });
      const opened = await createOpenSshTransport({
        host: pair.destinationAddress,
        port: sshd.port,
        username: 'root',
        identityFile: sshd.clientKeyPath,
        knownHostsPath: sshd.knownHostsPath,
        root: dstRoot,
        proxyCommand: pair.proxyCommand,
      });
      if (opened.isErr()) throw opened.error;
      transport = opened.value;
    });

    /** Roll back every migration over SSH, stop the sources, then the sshd and the two hosts. Idempotent. */
    async function cleanUp(): Promise<void> {
      if (cleaned) return;
      cleaned = true;
      for (const r of reports.values()) {
        if (!transport || !r.destination) continue;
        const { netns, hostVeth } = namespaceNames(r.name);
        const deployer = r.method === 'chroot' ? createChrootDeployer() : createNamespacesDeployer();
        await deployer.rollback(
          { transport, profile: r.profile, plan: r.plan, name: r.name },
          {
            activated: {
              installDir: r.destination.installDir,
              rootDir: join(r.destination.installDir, 'root'),
              undo: r.method === 'chroot' ? [] : [['ip', 'netns', 'del', netns], ['ip', 'link', 'del', hostVeth]],
            },
            started: { pid: r.destination.pid, logPath: '', endpoints: [] },
          },
        );
      }
      for (const netns of squatters) await transport?.exec(['ip', 'netns', 'del', netns], { allowNonZeroExit: true });
      for (const pid of groups) killQuietly(-pid);
      for (const pid of sources) killQuietly(pid);
      try {
        execFileSync('sh', ['-c', `ipcrm -M ${IPC_KEY}; ipcrm -S ${IPC_SEM_KEY}; true`], { stdio: 'ignore' });
      } catch {
        // nothing to remove
      }
      await transport?.close();
      await sshd?.stop();
      pair?.teardown();
      if (notesd) rmSync(notesd.base, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    }

    afterAll(cleanUp);

    function keep(result: Awaited<ReturnType<typeof migrate>>): MigrationReport {
      if (result.isErr()) {
        if (typeof result.error.details.sourcePid === 'number') sources.push(result.error.details.sourcePid);
        throw result.error;
      }
      reports.set(result.value.name, result.value);
      if (result.value.source.pid) sources.push(result.value.source.pid);
      return result.value;
    }

    it('a TCP server (files + network) moves into its own namespaces at the destination host and answers a client there', { timeout: 120_000 }, async () => {
      const greeting = join(work, 'greeting.txt');
      writeFileSync(greeting, 'hello from echod over ssh\n');
      const report = keep(
        await migrate({
  allowRoot: true, // the fixture runs as root here

          target: { command: [demoBinary('echod'), String(echodPort), greeting] },
          profiler: createStraceProfiler(),
          profileDurationMs: 1500,
          destination: transport!,
          name: ECHOD,
        }),
      );
      expect(report.plan.classes).toEqual(['file', 'network']);
      expect(report.method).toBe('linux-namespaces');
      expect(report.plan.candidates.find((c) => c.method === 'chroot')!.concerns.map((c) => c.id)).toContain('not-isolated:network');
      expect(report.destination!.installDir).toBe(join(dstRoot, ECHOD));
      const endpoint = report.destination!.endpoints[0]!;
      const [address, port] = endpoint.split(':') as [string, string];
      expect(`${address}/30`).toBe(defaultVethAddresses(ECHOD).program);
      expect(port).toBe(String(echodPort));

      // The client runs at the destination host (its network namespace, through SSH).
      const asked = await transport!.exec(['node', '-e', ECHO_CLIENT, address, port, 'ping over ssh']);
      if (asked.isErr()) throw asked.error;
      expect(asked.value.stdout).toBe('hello from echod over ssh\necho: ping over ssh\n');

      // The destination host itself has no listener on that port: the answer came from the copy.
      const hostListeners = await transport!.exec(['ss', '-Hltn', `sport = :${echodPort}`]);
      expect(hostListeners._unsafeUnwrap().stdout.trim()).toBe('');
      // The copy's network namespace and veth exist at the destination host, not on the source host.
      const { netns, hostVeth } = namespaceNames(ECHOD);
      const links = (await transport!.exec(['ip', '-o', 'link', 'show', 'dev', hostVeth]))._unsafeUnwrap().stdout;
      expect(links).toContain(hostVeth);
      expect(execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' })).not.toContain(hostVeth);
      const inside = await transport!.exec(['ip', 'netns', 'exec', netns, 'ss', '-Hltn', `sport = :${echodPort}`]);
      expect(inside._unsafeUnwrap().stdout).toContain(`:${echodPort}`);
    });

    it('pre-flight at the destination host refuses a taken namespace name or veth subnet', { timeout: 120_000 }, async () => {
      const echod = reports.get(ECHOD);
      expect(echod, 'the echod migration ran first').toBeDefined();
      // A namespace made by someone else at the destination host, with the name a program would get.
      const squatted = `squat-${id}`;
      (await transport!.exec(['ip', 'netns', 'add', namespaceNames(squatted).netns]))._unsafeUnwrap();
      squatters.push(namespaceNames(squatted).netns);
      const byName = await createNamespacesDeployer({ allowRoot: true }).preflight({ transport: transport!, profile: echod!.profile, plan: echod!.plan, name: squatted }, 1024);
      expect(byName._unsafeUnwrapErr().code).toBe('DESTINATION_EXISTS');
      expect(byName._unsafeUnwrapErr().message).toContain(`Network namespace ${namespaceNames(squatted).netns} already exists`);
      // Another program given echod's /30: the host side of echod's veth holds it.
      const bySubnet = await createNamespacesDeployer({ allowRoot: true, addresses: () => defaultVethAddresses(ECHOD) }).preflight(
        { transport: transport!, profile: echod!.profile, plan: echod!.plan, name: `other-${id}` },
        1024,
      );
      expect(bySubnet._unsafeUnwrapErr().code).toBe('DESTINATION_EXISTS');
      expect(bySubnet._unsafeUnwrapErr().message).toContain(`already used at ${transport!.description} by ${namespaceNames(ECHOD).hostVeth}`);
      (await transport!.exec(['ip', 'netns', 'del', namespaceNames(squatted).netns]))._unsafeUnwrap();
      squatters.pop();
    });

    it('a SysV IPC pair moves with its own IPC namespace; its counter keeps moving at the destination', { timeout: 120_000 }, async () => {
      const status = join(work, 'ipcpair.status');
      const child = spawn(demoBinary('ipcpair'), [IPC_KEY, status], { stdio: 'ignore', detached: true });
      child.on('exit', () => {}); // reaped by us
      child.unref();
      groups.push(child.pid!);
      sources.push(child.pid!);
      await new Promise((r) => setTimeout(r, 200));
      const report = keep(
        await migrate({ allowRoot: true, target: { pid: child.pid! }, profiler: createStraceProfiler(), profileDurationMs: 1500, destination: transport!, name: IPCPAIR }),
      );
      expect(report.plan.classes).toEqual(['file', 'ipc']);
      expect(report.plan.kinds).toEqual(expect.arrayContaining(['sysv-shm', 'sysv-sem']));
      expect(report.method).toBe('linux-namespaces');

      const remoteStatus = join(report.destination!.installDir, 'root', status);
      const counter = async (): Promise<number> =>
        (await readIpcpairStatus(async () => (await transport!.readFile(remoteStatus))._unsafeUnwrap().toString())).counter;
      const first = await counter();
      await new Promise((r) => setTimeout(r, 500));
      expect(await counter()).toBeGreaterThan(first);

      // Two segments with the same key exist: the source's in the host's IPC namespace, the
      // copy's in its own. One IPC namespace cannot hold two segments with one key.
      const view = (await transport!.exec(['sh', '-c', IPC_VIEW_SCRIPT, 'sh', String(report.destination!.pid)]))._unsafeUnwrap().stdout;
      const keyHex = `0x${IPC_KEY.slice(2).padStart(8, '0')}`;
      const lines = view.split('\n');
      const hostNs = lines.find((l) => l.startsWith('host-ns '))?.split(' ')[1];
      const programNs = lines.find((l) => l.startsWith('program-ns '))?.split(' ')[1];
      expect(programNs).toMatch(/^ipc:\[\d+\]$/);
      expect(programNs).not.toBe(hostNs);
      expect(lines.filter((l) => l.startsWith('host ') && l.includes(keyHex))).toHaveLength(1);
      expect(lines.filter((l) => l.startsWith('program ') && l.includes(keyHex))).toHaveLength(1);
    });

    it('profile -> plan -> migrate picks chroot for the files-only notesd, and it answers at the destination', { timeout: 120_000 }, async () => {
      notesd = startNotesd('hi over ssh');
      notesd.stop(); // the profiler launches its own copy: it must see the start-up reads
      const fifo = join(notesd.dataDir, 'in.fifo');
      // While the profiler watches, feed one note so the database write is seen too.
      const feeding = shellLater(700, 'printf "%s\\n" "$1" > "$2"', 'written while profiling', fifo);
      const result = await migrate({
  allowRoot: true, // the fixture runs as root here

        target: { command: [notesd.exe, notesd.dataDir] },
        profiler: createStraceProfiler(),
        profileDurationMs: 2000,
        destination: transport!,
        name: NOTESD,
      });
      await feeding;
      const report = keep(result);
      expect(report.plan.classes).toEqual(['file']);
      expect(report.method).toBe('chroot');
      expect(report.plan.candidates.find((c) => c.method === 'linux-namespaces')?.allowed).toBe(true);

      const root = join(report.destination!.installDir, 'root');
      const sent = await transport!.exec(['sh', '-c', 'printf "%s\\n" "$1" > "$2"', 'sh', 'from the destination', join(root, fifo)], { timeoutMs: 10_000 });
      expect(sent.isOk()).toBe(true);
      let db = '';
      for (let i = 0; i < 20 && !db.includes('from the destination'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        db = (await transport!.readFile(join(root, notesd.dataDir, 'notes.db')))._unsafeUnwrap().toString();
      }
      expect(db).toContain('hi over ssh: written while profiling\n');
      expect(db).toContain('hi over ssh: from the destination\n');
    });

    it('forcing chroot for the network server is refused with the network concern, before anything is sent', async () => {
      const echod = reports.get(ECHOD);
      expect(echod, 'the echod migration ran first').toBeDefined();
      const calls: string[] = [];
      // The real transport, recording every use.
      const recording = new Proxy(transport!, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver) as unknown;
          if (typeof value !== 'function') return value;
          return (...args: unknown[]) => {
            calls.push(String(property));
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        },
      });
      const result = await migrate({ allowRoot: true, target: { profile: echod!.profile }, method: 'chroot', destination: recording, name: 'echod-forced' });
      expect(result.isErr()).toBe(true);
      const error = result._unsafeUnwrapErr();
      expect(error.code).toBe('NO_ALLOWED_METHOD');
      expect(error.message).toMatch(/chroot: .*network sockets.*chroot .*does not isolate network sockets/);
      expect(calls).toEqual([]);
      expect(existsSync(join(dstRoot, 'echod-forced'))).toBe(false);
    });

    it('rolls back: no program, namespace, veth or directory is left at the destination, nothing runs anywhere', { timeout: 120_000 }, async () => {
      const names = [...reports.keys()];
      expect(names.sort()).toEqual([ECHOD, IPCPAIR, NOTESD].sort());
      const launchers = [...reports.values()].map((r) => r.destination!.pid);
      const netnsNames = names.map((n) => namespaceNames(n).netns);
      const veths = names.map((n) => namespaceNames(n).hostVeth);
      // Roll back over SSH, but look before the destination host goes away.
      const rollbacks = [...reports.values()].map((r) => {
        const { netns, hostVeth } = namespaceNames(r.name);
        const deployer = r.method === 'chroot' ? createChrootDeployer() : createNamespacesDeployer();
        return deployer.rollback(
          { transport: transport!, profile: r.profile, plan: r.plan, name: r.name },
          {
            activated: {
              installDir: r.destination!.installDir,
              rootDir: join(r.destination!.installDir, 'root'),
              undo: r.method === 'chroot' ? [] : [['ip', 'netns', 'del', netns], ['ip', 'link', 'del', hostVeth]],
            },
            started: { pid: r.destination!.pid, logPath: '', endpoints: [] },
          },
        );
      });
      for (const rollback of rollbacks) expect((await rollback).isOk()).toBe(true);
      const atDestination = (await transport!.exec(['sh', '-c', 'ip netns list; ip -o link; ls -A "$1"', 'sh', dstRoot]))._unsafeUnwrap().stdout;
      for (const n of [...netnsNames, ...veths]) expect(atDestination).not.toContain(n);
      for (const n of names) expect(atDestination.split('\n')).not.toContain(n);
      reports.clear(); // rolled back already

      await cleanUp();
      // Nothing left on the machine: no namespace entries, no live process of ours.
      const entries = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
      for (const n of [...netnsNames, pair!.source, pair!.destination]) expect(entries).not.toContain(n);
      for (const pid of launchers) {
        const state = existsSync(`/proc/${pid}/status`) ? /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] : undefined;
        expect(state === undefined || state === 'Z').toBe(true);
      }
      await new Promise((r) => setTimeout(r, 200));
      expect(liveProcessesMentioning(work)).toEqual([]);
      expect(liveProcessesMentioning(notesd!.dataDir)).toEqual([]);
      expect(liveProcessesMentioning(sshd!.dir)).toEqual([]);
    });
  },
);
