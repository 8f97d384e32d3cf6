/**
 * Measurement for decision 0104 (only with AP_MIGRATE_BENCH=1): a ~500 MiB mixed tree moved
 * (a) pack -> forwardSanitized -> transport -> tar -x + listing/sha256 (the POSIX receiver),
 * (b) pack -> transport -> `node receiver.cjs unpack` (today's Node receiver),
 * (c) `tar -c | tar -x` (and `tar -c | ssh ... tar -x`), in the same run, local and over a loopback
 * OpenSSH, medians of 3, alternating. Prints one JSON line per result.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBundleStream } from '../../src/bundle/pack.js';
import { receivePosix } from '../../src/destination/posix-receiver.js';
import { ResourceProfileSchema, type ResourceProfile } from '../../src/policy/profile.js';
import type { Transport } from '../../src/spec/transport.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { createOpenSshTransport } from '../../src/transports/openssh.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

const BENCH = process.env.AP_MIGRATE_BENCH === '1';
const RECEIVER = resolve('dist/receiver.cjs');
const work = '/var/tmp/ap-posix-bench';
const tree = join(work, 'tree');

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

describe.skipIf(!BENCH)('POSIX receiver throughput', () => {
  let sshd: TestSshd;
  let ssh: Transport;
  const local = createLocalTransport();
  let profile: ResourceProfile;
  let bytes = 0;

  beforeAll(async () => {
    await rm(work, { recursive: true, force: true });
    await mkdir(join(tree, 'large'), { recursive: true });
    for (let i = 0; i < 110; i++) {
      const data = Buffer.allocUnsafe(4 * 1024 * 1024);
      for (let j = 0; j < data.length; j += 4096) data.writeUInt32LE((i * 7919 + j) >>> 0, j);
      await writeFile(join(tree, 'large', `f${i}.bin`), data);
      bytes += data.length;
    }
    for (let d = 0; d < 50; d++) {
      await mkdir(join(tree, 'small', `d${d}`), { recursive: true });
      for (let i = 0; i < 200; i++) {
        const data = Buffer.alloc(8 * 1024, `${d}-${i}-`);
        await writeFile(join(tree, 'small', `d${d}`, `s${i}.txt`), data);
        bytes += data.length;
      }
    }
    profile = ResourceProfileSchema.parse({
      executable: join(tree, 'large', 'f0.bin'),
      argv: ['x'],
      cwd: tree,
      uid: 0,
      gid: 0,
      platform: { os: 'linux', release: '6.1', arch: 'x86_64' },
      trees: [{ path: tree, reason: 'data-root' }],
    });
    sshd = await startSshd();
    ssh = (await createOpenSshTransport({ host: sshd.host, port: sshd.port, username: 'root', identityFile: sshd.clientKeyPath, knownHostsPath: sshd.knownHostsPath, root: work }))._unsafeUnwrap();
  }, 300_000);

  afterAll(async () => {
    await ssh?.close();
    await sshd?.stop();
    await rm(work, { recursive: true, force: true });
  });

  const bundle = () => createBundleStream(profile, { extraTrees: [tree] })._unsafeUnwrap().stream;

  async function posixRun(transport: Transport, n: number): Promise<number> {
    const target = join(work, `posix-${n}`, 'root');
    execFileSync('sync');
    const start = performance.now();
    const result = await receivePosix(transport, bundle(), target);
    const ms = performance.now() - start;
    expect(result.isOk(), result.isErr() ? result.error.message : '').toBe(true);
    await rm(join(work, `posix-${n}`), { recursive: true, force: true });
    return ms;
  }

  async function nodeRun(transport: Transport, n: number): Promise<number> {
    const target = join(work, `node-${n}`, 'root');
    execFileSync('sync');
    const start = performance.now();
    const result = await transport.exec(['node', RECEIVER, 'unpack', target], { stdin: bundle(), allowNonZeroExit: true });
    const ms = performance.now() - start;
    expect(result.isOk() && result.value.stdout.includes('"ok":true'), result.isOk() ? result.value.stdout + result.value.stderr : result.error.message).toBe(true);
    await rm(join(work, `node-${n}`), { recursive: true, force: true });
    return ms;
  }

  async function tarRun(over: 'local' | 'ssh', n: number): Promise<number> {
    const out = join(work, `tar-${n}`);
    await mkdir(out);
    execFileSync('sync');
    const consumer = over === 'local' ? `tar -x -p -f - -C ${out}` : `ssh -i ${sshd.clientKeyPath} -o UserKnownHostsFile=${sshd.knownHostsPath} -o StrictHostKeyChecking=yes -p ${sshd.port} root@${sshd.host} tar -x -p -f - -C ${out}`;
    const start = performance.now();
    await new Promise<void>((resolvePromise, reject) => {
      const child = spawn('sh', ['-c', `tar -c -f - -C ${tree} . | ${consumer}`], { stdio: 'inherit' });
      child.on('exit', (code) => (code === 0 ? resolvePromise() : reject(new Error(`tar pipeline exited ${code}`))));
    });
    const ms = performance.now() - start;
    await rm(out, { recursive: true, force: true });
    return ms;
  }

  it('measures', async () => {
    expect(existsSync(RECEIVER)).toBe(true);
    for (const over of ['local', 'ssh'] as const) {
      const transport = over === 'local' ? local : ssh;
      const times = { posix: [] as number[], node: [] as number[], tar: [] as number[] };
      const loads: number[] = [];
      for (let n = 0; n < 3; n++) {
        loads.push(loadavg()[0] as number);
        times.tar.push(await tarRun(over, n));
        times.posix.push(await posixRun(transport, n));
        times.node.push(await nodeRun(transport, n));
      }
      const mib = bytes / 1024 / 1024;
      const m = { posix: median(times.posix), node: median(times.node), tar: median(times.tar) };
      console.log(
        JSON.stringify({
          over,
          dataMiB: Math.round(mib),
          files: 110 + 50 * 200,
          medianMs: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, Math.round(v)])),
          MiBps: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, Math.round(mib / (v / 1000))])),
          ratioPosixToTar: +(m.tar / m.posix).toFixed(2),
          ratioNodeToTar: +(m.tar / m.node).toFixed(2),
          ratioPosixToNode: +(m.node / m.posix).toFixed(2),
          allMs: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v.map(Math.round)])),
          loadavg: loads.map((l) => +l.toFixed(1)),
        }),
      );
    }
  }, 1_200_000);
});
