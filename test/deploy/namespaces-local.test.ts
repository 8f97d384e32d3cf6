/**
 * Linux namespaces migration on this machine (local transport): profile real programs with
 * strace, plan, migrate into new mount/net/ipc/pid/uts namespaces, and talk to them from the
 * destination host through the veth pair.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createNamespacesDeployer, migrate, namespaceNames, type MigrationReport } from '../../src/index.js';
import { createStraceProfiler } from '../../src/profilers/strace.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { demoBinary } from '../helpers/demo-programs.js';
import { readIpcpairStatus } from '../helpers/ipcpair-status.js';
import { skipUnless } from '../helpers/requirements.js';

/** Connect, read the greeting, send a line, read the echo. */
export function askEchod(host: string, port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host, port });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from ${host}:${port}; got ${JSON.stringify(data)}`));
    }, 5000);
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (data.split('\n').length === 2) socket.write(`${line}\n`);
      if (data.split('\n').length >= 3) {
        clearTimeout(timer);
        socket.end();
        resolve(data);
      }
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:ip', 'tool:strace'))('linux-namespaces migration (local transport)', () => {
  const work = mkdtempSync(join(tmpdir(), 'apm-ns-'));
  const dst = join(work, 'dst');
  mkdirSync(dst);
  const transport = createLocalTransport({ root: dst });
  const reports: MigrationReport[] = [];
  const sources: number[] = [];

  afterAll(async () => {
    for (const r of reports) {
      await createNamespacesDeployer().rollback(
        { transport, profile: r.profile, plan: r.plan, name: r.name },
        {
          activated: {
            installDir: r.destination!.installDir,
            rootDir: join(r.destination!.installDir, 'root'),
            undo: [
              ['ip', 'netns', 'del', namespaceNames(r.name).netns],
              ['ip', 'link', 'del', namespaceNames(r.name).hostVeth],
            ],
          },
          started: { pid: r.destination!.pid, logPath: '', endpoints: [] },
        },
      );
    }
    for (const pid of sources) {
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, 'SIGKILL'); // the whole process group first: ipcpair forks
        } catch {
          // not a group leader, or gone
        }
      }
    }
    execFileSync('sh', ['-c', 'ipcrm -M 0x5a17c0de; ipcrm -S 0x5a17c0df; true'], { stdio: 'ignore' });
    rmSync(work, { recursive: true, force: true });
  });

  /** Start a source program in its own process group; it is profiled by pid, like a running daemon. */
  function startSource(argv: string[]): number {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore', detached: true });
    child.on('exit', () => {}); // reaped by us: PID 1 here does not reap orphans
    child.unref();
    sources.push(child.pid!);
    return child.pid!;
  }

  it('a TCP server (files + network) moves into its own namespaces and answers from the destination host', async () => {
    const greeting = join(work, 'greeting.txt');
    writeFileSync(greeting, 'hello from echod\n');
    // Launched by the profiler: echod reads its greeting at start-up, before any attach could see it.
    const result = await migrate({
  allowRoot: true, // the fixture runs as root here

      target: { command: [demoBinary('echod'), '7411', greeting] },
      profiler: createStraceProfiler(),
      profileDurationMs: 1500,
      destination: transport,
      name: 'echod',
    });
    if (result.isErr()) {
      if (typeof result.error.details.sourcePid === 'number') sources.push(result.error.details.sourcePid);
      throw result.error;
    }
    const report = result.value;
    reports.push(report);
    sources.push(report.source.pid!);
    expect(report.plan.classes).toEqual(['file', 'network']);
    expect(report.method).toBe('linux-namespaces');
    expect(report.plan.candidates.find((c) => c.method === 'chroot')!.concerns.map((c) => c.id)).toContain('not-isolated:network');
    const endpoint = report.destination!.endpoints[0]!;
    const [host, port] = endpoint.split(':');
    // The source still listens on 7411 in the host namespace; the copy listens in its own.
    const answer = await askEchod(host!, Number(port), 'ping');
    expect(answer).toBe('hello from echod\necho: ping\n');
    const sourceAnswer = await askEchod('127.0.0.1', 7411, 'pong');
    expect(sourceAnswer).toContain('echo: pong');
  });

  it('a SysV IPC pair moves with its own IPC namespace; its counter keeps moving there', async () => {
    const status = join(work, 'ipcpair.status');
    const key = '0x5a17c0de';
    const pid = startSource([demoBinary('ipcpair'), key, status]);
    await new Promise((r) => setTimeout(r, 200));
    const result = await migrate({
  allowRoot: true, // the fixture runs as root here

      target: { pid },
      profiler: createStraceProfiler(),
      profileDurationMs: 1500,
      destination: transport,
      name: 'ipcpair',
    });
    if (result.isErr()) throw result.error;
    const report = result.value;
    reports.push(report);
    expect(report.plan.classes).toEqual(['file', 'ipc']);
    expect(report.plan.kinds).toEqual(expect.arrayContaining(['sysv-shm', 'sysv-sem']));
    expect(report.method).toBe('linux-namespaces');
    const remoteStatus = join(report.destination!.installDir, 'root', status);
    const read = () => readIpcpairStatus(() => readFileSync(remoteStatus, 'utf8'));
    await new Promise((r) => setTimeout(r, 400));
    const first = (await read()).counter;
    await new Promise((r) => setTimeout(r, 600));
    const later = await read();
    expect(later.counter).toBeGreaterThan(first);
    // The destination's segment lives in the program's IPC namespace, not the host's.
    const hostSegments = execFileSync('ipcs', ['-m']).toString();
    const segmentId = later.segment;
    const sourceSegment = (await readIpcpairStatus(() => readFileSync(status, 'utf8'))).segment;
    expect(hostSegments).toContain(key.slice(2));
    expect(segmentId === sourceSegment ? hostSegments.split(`0x${key.slice(2)}`).length - 1 : 1).toBe(1);
  });
});
