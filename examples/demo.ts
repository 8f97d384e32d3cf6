/**
 * The main job, end to end and for real (run as root on Linux):
 *
 *   1. build and start a sample service (examples/demo/notesd.c: files only, fed through a named pipe),
 *   2. make a second "host": a network namespace running a real OpenSSH server,
 *   3. profile the service with the best profiler here (eBPF, else strace), plan, and migrate it
 *      over SSH with the lightest method (chroot), verifying every byte at the destination,
 *   4. talk to the migrated copy through the SSH transport, and print the report;
 *   5. move a real Debian daemon, PostgreSQL 15, attached by pid, with the pre-copy cutover (a row
 *      is written during the first round), print what travelled by reason and round and the
 *      downtime, and read both rows back at the destination.
 *
 * Everything it creates is removed at the end; the source service is stopped last.
 *
 *   npm run demo
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createChrootDeployer, createNamespacesDeployer, createProcfsProfiler, formatBytes, formatPlan, migrate, namespaceNames, summarizeReasons, type MigrationReport } from '../src/index.js';
import { resolveInRoot } from '../src/destination/root-builder.js';
import { chooseProfiler } from '../src/cli/profilers.js';
import { createOpenSshTransport } from '../src/transports/openssh.js';
import type { Transport } from '../src/spec/transport.js';
import buildReceiver from '../test/global-setup.js';
import { createNetnsPair } from '../test/helpers/netns.js';
import { startSshd } from '../test/helpers/sshd.js';

const WORK = '/tmp/ap-migrate-demo';
const step = (text: string) => console.log(`\n== ${text}`);

async function main(): Promise<number> {
  // The receiver uploaded to the destination, built as the tests and `npm run build` build it.
  await buildReceiver();
  if (process.getuid?.() !== 0) {
    console.error('The demo needs root (chroot, network namespaces, sshd).');
    return 1;
  }
  rmSync(WORK, { recursive: true, force: true });
  const dataDir = join(WORK, 'src/var/lib/notes');
  const exe = join(WORK, 'src/usr/local/bin/notesd');
  mkdirSync(dataDir, { recursive: true });
  mkdirSync(join(WORK, 'src/usr/local/bin'), { recursive: true });
  const cleanups: Array<() => unknown> = [];

  try {
    step('1. build and start the sample service (notesd: files and a named pipe, nothing else)');
    execFileSync('gcc', ['-O2', '-o', exe, 'examples/demo/notesd.c']);
    writeFileSync(join(dataDir, 'notesd.conf'), 'demo\n');
    writeFileSync(join(dataDir, 'notes.db'), 'demo: written before the migration\n');
    execFileSync('mkfifo', [join(dataDir, 'in.fifo')]);

    step('2. a destination host: network namespace + OpenSSH server with throwaway keys');
    const hosts = createNetnsPair();
    cleanups.push(() => hosts.teardown());
    const sshd = await startSshd({ host: hosts.destinationAddress, port: 22, wrap: hosts.wrap(hosts.destination) });
    cleanups.push(() => sshd.stop());
    console.log(`sshd on ${hosts.destinationAddress}:${sshd.port} (namespace ${hosts.destination}), host key ${sshd.hostKeyFingerprint}`);
    const opened = await createOpenSshTransport({
      host: hosts.destinationAddress,
      port: sshd.port,
      username: 'root',
      identityFile: sshd.clientKeyPath,
      knownHostsPath: sshd.knownHostsPath, // host key verified: nothing is sent to an unknown host
      root: join(WORK, 'dst-host/srv'),
      proxyCommand: hosts.proxyCommand,
    });
    if (opened.isErr()) throw opened.error;
    const transport: Transport = opened.value;
    cleanups.push(() => transport.close());

    step('3. profile, plan and migrate');
    const { profiler, reason } = await chooseProfiler(undefined, false);
    if (!profiler) throw new Error(reason);
    console.log(`profiler: ${profiler.name}`);
    // While the profiler watches, feed the service one note so its database write is seen too.
    const feeder = (async () => {
      await sleep(profiler.name === 'ebpf' ? 6000 : 1500);
      writeFileSync(join(dataDir, 'in.fifo'), 'written while profiling\n');
    })();
    let report: MigrationReport | undefined;
    const result = await migrate({
  allowRoot: true, // the fixture runs as root here

      target: { command: [exe, dataDir] },
      profiler,
      profileDurationMs: profiler.name === 'ebpf' ? 9000 : 3000,
      destination: transport,
      name: 'notesd',
      onProgress: (p) => console.log(`   ${p.phase}${p.bytesSent !== undefined ? ` ${formatBytes(p.bytesSent)} of ${formatBytes(p.bytesTotal ?? 0)}` : ''}`),
    });
    await feeder;
    const sourcePid = result.isOk() ? result.value.source.pid : (result.error.details.sourcePid as number | undefined);
    if (sourcePid) cleanups.unshift(() => process.kill(sourcePid, 'SIGKILL'));
    if (result.isErr()) throw result.error;
    report = result.value;
    cleanups.unshift(() =>
      createChrootDeployer().rollback(
        { transport, profile: report!.profile, plan: report!.plan, name: report!.name },
        { activated: { installDir: report!.destination!.installDir, rootDir: join(report!.destination!.installDir, 'root'), undo: [] }, started: { pid: report!.destination!.pid, logPath: '', endpoints: [] } },
      ),
    );
    console.log(formatPlan(report.plan));

    step('4. talk to the migrated service over SSH');
    const fifo = join(report.destination!.installDir, 'root', dataDir, 'in.fifo');
    const status = join(report.destination!.installDir, 'root', dataDir, 'status');
    const db = join(report.destination!.installDir, 'root', dataDir, 'notes.db');
    const sent = await transport.exec(['sh', '-c', 'printf "%s\\n" "$1" > "$2"', 'demo', 'hello from the destination', fifo]);
    if (sent.isErr()) throw sent.error;
    await sleep(300);
    for (const path of [status, db]) {
      const content = await transport.readFile(path);
      if (content.isErr()) throw content.error;
      console.log(`${path}:\n${content.value.toString().replace(/^/gm, '   ')}`);
    }

    step('report');
    console.log(`method ${report.method}; plan estimate ${formatBytes(report.estimatedBytes)}, bundle estimate ${formatBytes(report.bundleEstimatedBytes)}, sent ${formatBytes(report.bytesSent)} (manifest ${formatBytes(report.manifestBytes)})`);
    for (const p of report.phases) console.log(`   ${p.phase.padEnd(10)} ${p.ms.toFixed(0).padStart(6)} ms`);
    console.log(`destination pid ${report.destination!.pid} in ${report.destination!.installDir}; source pid ${report.source.pid} ${report.source.action}`);

    await movePostgres(transport, cleanups);
    return 0;
  } finally {
    step('cleanup');
    for (const cleanup of cleanups) {
      try {
        await cleanup();
      } catch {
        // best effort
      }
    }
    rmSync(WORK, { recursive: true, force: true });
  }
}

/**
 * 5. A real Debian daemon: PostgreSQL 15 started as Debian starts it (`pg_ctlcluster`), attached by
 * pid, moved to the same destination host with `pre-copy` (copied while it runs, then frozen and
 * only what changed sent, started, checked, then stopped at the source), and asked for the rows
 * written before the move and during its first round.
 */
async function movePostgres(transport: Transport, cleanups: Array<() => unknown>): Promise<void> {
  step('5. a real daemon: PostgreSQL 15 (pg_ctlcluster), attached by pid, cutover pre-copy');
  const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' }).trim();
  const wasRunning = spawnSync('pgrep', ['-f', 'bin/postgres -D']).status === 0;
  if (!wasRunning) sh('pg_ctlcluster 15 main start');
  // Leave the source as we found it: running again if it ran, stopped if we started it.
  cleanups.push(() => (wasRunning ? sh('pg_ctlcluster 15 main start || true') : sh('pg_ctlcluster 15 main stop || true')));
  const psql = (host: string, sql: string) => sh(`su postgres -c "psql -h '${host}' -tAc \\"${sql}\\""`);
  psql('/var/run/postgresql', "create table if not exists demo_rows(x text); insert into demo_rows values ('written before the move')");
  const pid = Number(spawnSync('pgrep', ['-o', '-f', 'bin/postgres -D'], { encoding: 'utf8' }).stdout.trim());
  let wroteDuring = false;
  const result = await migrate({
    target: { pid },
    profiler: createProcfsProfiler(),
    profileDurationMs: 1000,
    destination: transport,
    name: 'postgres',
    cutover: 'pre-copy',
    onProgress: (p) => {
      if (p.bytesSent === undefined) console.log(`   ${p.phase}`);
      else if (p.phase === 'precopy' && !wroteDuring) {
        // The source keeps working while the first round runs: this row must travel in the second.
        wroteDuring = true;
        psql('/var/run/postgresql', "insert into demo_rows values ('written during the pre-copy')");
      }
    },
  });
  if (result.isErr()) throw result.error;
  const r = result.value;
  cleanups.unshift(() =>
    createNamespacesDeployer().rollback(
      { transport, profile: r.profile, plan: r.plan, name: r.name },
      {
        activated: { installDir: r.destination!.installDir, rootDir: join(r.destination!.installDir, 'root'), undo: [['ip', 'netns', 'del', namespaceNames(r.name).netns], ['ip', 'link', 'del', namespaceNames(r.name).hostVeth]] },
        started: { pid: r.destination!.pid, logPath: '', endpoints: [] },
      },
    ),
  );
  console.log(`method ${r.method} (uid ${r.profile.uid}: no root needed), sent ${formatBytes(r.bytesSent)}`);
  for (const [reason, v] of Object.entries(summarizeReasons(r.profile))) if (v.files) console.log(`   ${reason.padEnd(14)} ${String(v.files).padStart(6)} files ${formatBytes(v.bytes).padStart(10)}`);
  for (const round of r.rounds) console.log(`   round ${round.round.padEnd(5)} sent ${formatBytes(round.bytesSent).padStart(10)}, already at the destination ${formatBytes(round.seededBytes).padStart(10)}`);
  console.log(`downtime ${r.cutover.downtimeMs!.toFixed(0)} ms (${r.cutover.frozenProcesses} processes frozen, ${r.cutover.freezer ?? 'sigstop'}) of ${r.totalMs.toFixed(0)} ms in all; source ${r.source.action}`);
  // The destination host shares this machine's file system: the server's socket, resolved inside its root.
  const socket = resolveInRoot(join(r.destination!.installDir, 'root'), '/var/run/postgresql', { followLast: true });
  console.log(`psql at the destination: ${psql(socket, 'select x from demo_rows').split('\n').join(' | ')}`);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(`demo failed: ${error instanceof Error ? `${(error as { code?: string }).code ?? ''} ${error.message}` : String(error)}`);
    process.exitCode = 1;
  },
);
