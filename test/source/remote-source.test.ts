/**
 * A program on a REMOTE source host moves to another host, driven by an orchestrator that is
 * neither (this test process). The source host is a network namespace whose sshd runs in PID and
 * mount namespaces of its own; the program's files live on a tmpfs mounted only there, so only a
 * packer running on the source host can read them. The program's pid there is made equal to the
 * pid of a sleeper this test runs here: `sourcePolicy: 'stop'` must stop the program on the source
 * host and leave the sleeper with the same pid number alone.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChrootDeployer, createNamespacesDeployer, migrate, namespaceNames, type MigrationReport } from '../../src/index.js';
import { createExecutorSource } from '../../src/source/executor-source.js';
import { createSourceProfiler } from '../../src/source/source-profiler.js';
import { packRemotely } from '../../src/bundle/remote-pack.js';
import type { PackRequest } from '../../src/spec/packager.js';
import type { Source } from '../../src/spec/source.js';
import type { Transport } from '../../src/spec/transport.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { demoBinary, ECHO_CLIENT } from '../helpers/demo-programs.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import { skipUnless } from '../helpers/requirements.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

// Runs in the source host's fresh mount namespace before sshd: the program's files on a tmpfs
// that exists nowhere else. Then sshd (the rest of argv) replaces it, as PID 1 of the namespace.
const SOURCE_HOST_SETUP = `
d="$1"; exe="$2"; shift 2
mount -t tmpfs -o size=64m,mode=0755 apm-source-only "$d" || exit 91
cp "$exe" "$d/echod" && printf 'hello from the source host\\n' > "$d/greeting.txt" || exit 92
exec "$@"
`;

// In the source PID namespace: the next pid handed out is $1 + 1; start the program (detached
// from the session) and print its pid.
const START_WITH_PID = `
echo "$1" > /proc/sys/kernel/ns_last_pid || exit 93
shift
"$@" </dev/null >/dev/null 2>&1 &
echo "$!"
`;

async function openSsh(sshd: TestSshd, pair: NetnsPair, root?: string): Promise<Transport> {
  const opened = await createOpenSshTransport({
    host: sshd.host,
    port: sshd.port,
    username: 'root',
    identityFile: sshd.clientKeyPath,
    knownHostsPath: sshd.knownHostsPath,
    proxyCommand: pair.proxyCommand,
    ...(root ? { root } : {}),
  });
  return opened._unsafeUnwrap();
}

function stateOf(pid: number): string | undefined {
  try {
    return /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:ip', 'tool:ss', 'tool:unshare', 'tool:mount', 'tool:node', 'tool:/usr/sbin/sshd', 'tool:ssh'))(
  'a program on a remote source host (its own PID and mount namespaces) moves to another host over SSH',
  () => {
    const id = randomBytes(2).toString('hex');
    const NAME = `remote-echod-${id}`;
    const work = mkdtempSync(join(tmpdir(), 'apm-remote-src-'));
    // Empty here; a tmpfs holding the program is mounted on it only inside the source host.
    const onlyOnSource = join(work, 'source-only');
    const dstRoot = join(work, 'dst-host/srv');
    const port = 20000 + (randomBytes(2).readUInt16BE(0) % 20000);
    let pair: NetnsPair | undefined;
    let sourceSshd: TestSshd | undefined;
    let destinationSshd: TestSshd | undefined;
    let sourceTransport: Transport | undefined;
    let destination: Transport | undefined;
    let sleeper: ChildProcess | undefined;
    let report: MigrationReport | undefined;

    beforeAll(async () => {
      mkdirSync(onlyOnSource, { recursive: true });
      mkdirSync(dstRoot, { recursive: true });
      pair = createNetnsPair();
      sourceSshd = await startSshd({
        host: pair.sourceAddress,
        port: 22,
        wrap: [...pair.wrap(pair.source), 'unshare', '--pid', '--fork', '--kill-child', '--mount', '--mount-proc', 'sh', '-c', SOURCE_HOST_SETUP, 'sh', onlyOnSource, demoBinary('echod')],
        probeWrap: pair.wrap(pair.source),
      });
      destinationSshd = await startSshd({ host: pair.destinationAddress, port: 22, wrap: pair.wrap(pair.destination) });
      sourceTransport = await openSsh(sourceSshd, pair);
      destination = await openSsh(destinationSshd, pair, dstRoot);
      sleeper = spawn('sleep', ['3600'], { stdio: 'ignore' });
    });

    afterAll(async () => {
      if (report?.destination && destination) {
        const { netns, hostVeth } = namespaceNames(report.name);
        const deployer = report.method === 'chroot' ? createChrootDeployer() : createNamespacesDeployer();
        await deployer.rollback(
          { transport: destination, profile: report.profile, plan: report.plan, name: report.name },
          {
            activated: {
              installDir: report.destination.installDir,
              rootDir: join(report.destination.installDir, 'root'),
              undo: report.method === 'chroot' ? [] : [['ip', 'netns', 'del', netns], ['ip', 'link', 'del', hostVeth]],
            },
            started: { pid: report.destination.pid, logPath: '', endpoints: [] },
          },
        );
      }
      await sourceTransport?.close();
      await destination?.close();
      // Killing the source sshd (PID 1 of its namespace) ends every process there and its mounts.
      await sourceSshd?.stop();
      await destinationSshd?.stop();
      pair?.teardown();
      sleeper?.kill('SIGKILL');
      rmSync(work, { recursive: true, force: true });
    });

    /** Start echod on the source host with pid `pid` there; retried when another fork took it first. */
    async function startOnSourceWithPid(source: Source, pid: number): Promise<void> {
      for (let attempt = 0; attempt < 10; attempt++) {
        const started = await source.executor.exec(['sh', '-c', START_WITH_PID, 'sh', String(pid - 1), join(onlyOnSource, 'echod'), String(port), join(onlyOnSource, 'greeting.txt')]);
        const got = Number(started._unsafeUnwrap().stdout.trim());
        if (got === pid) return;
        await source.executor.exec(['kill', '-KILL', String(got)], { allowNonZeroExit: true });
      }
      throw new Error(`could not start the program with pid ${pid} on the source host`);
    }

    it('profiles, packs and stops the program ON THE SOURCE HOST; the orchestrator only relays bytes', { timeout: 180_000 }, async () => {
      const localPid = sleeper!.pid!;
      const source = createExecutorSource(sourceTransport!);
      expect(source.isLocal).toBe(false);
      expect(typeof source.stream).toBe('function');
      // The program's files exist only on the source host.
      expect(existsSync(join(onlyOnSource, 'echod'))).toBe(false);
      const listed = (await source.executor.exec(['ls', onlyOnSource]))._unsafeUnwrap().stdout.split('\n');
      expect(listed).toEqual(expect.arrayContaining(['echod', 'greeting.txt']));

      // Whole trees are measured where they are (`receiver.cjs measure-trees` on the source host).
      const measured = await packRemotely.measure({ source } as unknown as PackRequest, [onlyOnSource]);
      expect(measured._unsafeUnwrap()).toBeGreaterThan(statSync(demoBinary('echod')).size);

      await startOnSourceWithPid(source, localPid);
      await new Promise((r) => setTimeout(r, 300));
      // The same pid number names two processes: the program there, the sleeper here.
      const there = (await source.executor.exec(['cat', `/proc/${localPid}/cmdline`]))._unsafeUnwrap().stdout;
      expect(there.split('\0')[0]).toBe(join(onlyOnSource, 'echod'));
      expect(readFileSync(`/proc/${localPid}/cmdline`, 'utf8').split('\0')[0]).toBe('sleep');
      expect((await source.processTree(localPid))._unsafeUnwrap()).toEqual([localPid]);

      const result = await migrate({
        allowRoot: true, // the fixture runs as root on the source host
        target: { pid: localPid },
        profiler: createSourceProfiler(source),
        profileDurationMs: 1500,
        source,
        destination: destination!,
        sourcePolicy: 'stop',
        name: NAME,
      });
      if (result.isErr()) throw result.error;
      report = result.value;
      console.log(
        `remote source: pid ${localPid} on ${source.description} (and a local sleeper with the same pid); method ${report.method}; ` +
          `${report.bytesSent} bundle bytes (manifest ${report.manifestBytes}) relayed; phases ${report.phases.map((p) => `${p.phase}=${Math.round(p.ms)}`).join(' ')}`,
      );
      expect(report.source).toEqual({ pid: localPid, action: 'stopped' });
      expect(report.profile.executable).toBe(join(onlyOnSource, 'echod'));
      expect(report.bytesSent).toBeGreaterThan(report.manifestBytes);
      expect(report.manifestBytes).toBeGreaterThan(0);

      // It answers at the destination, through the destination host's network namespace.
      const endpoint = report.destination!.endpoints[0] ?? `127.0.0.1:${port}`;
      const [address, answeredPort] = endpoint.split(':') as [string, string];
      const asked = await destination!.exec(['node', '-e', ECHO_CLIENT, address, answeredPort, 'ping from the orchestrator']);
      if (asked.isErr()) throw asked.error;
      expect(asked.value.stdout).toBe('hello from the source host\necho: ping from the orchestrator\n');
      // The greeting came from the tmpfs of the source host: the copy holds it now.
      const copied = (await destination!.readFile(join(report.destination!.installDir, 'root', onlyOnSource, 'greeting.txt')))._unsafeUnwrap().toString();
      expect(copied).toBe('hello from the source host\n');

      // Gone on the source host (checked inside its PID namespace)...
      let state = 'alive';
      for (let i = 0; i < 50 && state !== ''; i++) {
        const probe = await source.executor.exec(['sh', '-c', 'sed -n "s/^State:[[:space:]]*\\(.\\).*/\\1/p" "/proc/$1/status" 2>/dev/null; true', 'sh', String(localPid)]);
        state = probe._unsafeUnwrap().stdout.trim();
        if (state === 'Z') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(['', 'Z']).toContain(state);
      expect((await source.processTree(localPid))._unsafeUnwrap()).toEqual(state === 'Z' ? [localPid] : []);
      // ...while the local sleeper with the same pid number is untouched.
      expect(['S', 'R']).toContain(stateOf(localPid));
      expect(sleeper!.exitCode).toBeNull();
      expect(sleeper!.signalCode).toBeNull();
      expect(readFileSync(`/proc/${localPid}/cmdline`, 'utf8').split('\0')[0]).toBe('sleep');
    });
  },
);
