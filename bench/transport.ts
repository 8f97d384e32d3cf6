/**
 * Transfer throughput of each SSH transport against OpenSSH itself, in the same run, on a
 * loopback sshd: N in-process zero bytes through `<transport>.exec(['sh','-c','cat >/dev/null'])`
 * versus `head -c N /dev/zero | ssh host 'cat >/dev/null'`, and a tree through `tar -x` versus
 * `tar -cf - DIR | ssh host tar -xf -`. Each side includes its connection set-up (ssh
 * does a handshake per run, so ours does too). Rounds are interleaved and the fastest kept, so
 * load from other processes hits both sides alike.
 *
 * Run alone: `npx tsx bench/transport.ts` (AP_MIGRATE_BENCH_MIB=1024, AP_MIGRATE_BENCH_TREE_MIB=256,
 * AP_MIGRATE_BENCH_ROUNDS=3, AP_MIGRATE_BENCH_VARIANTS=1 adds cipher comparisons).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Transport } from '../src/spec/transport.js';
import { createOpenSshTransport } from '../src/transports/openssh.js';
import { createSshTransport } from '../src/transports/ssh.js';
import { startSshd, type TestSshd } from '../test/helpers/sshd.js';
import { quote, runWhenCalledDirectly, timeShell } from './report.js';

/** One benchmark line: ratio = our throughput / OpenSSH's (goal >= 0.9). */
export interface BenchLine {
  name: string;
  ratio: number;
  detail: string;
}

const MiB = 1024 * 1024;

/**
 * The fastest round. Other processes on the machine only ever slow a run down, so the best
 * round is the least disturbed measure of each side (both sides get the same treatment).
 */
function fastest(values: number[]): number {
  return Math.min(...values);
}


/**
 * `bytes` zeros made in-process, the way the packer hands a bundle to a transport (a Readable in
 * this process); the OpenSSH side gets its zeros from `head`, an equally free source.
 */
function zeros(bytes: number): Readable {
  const block = Buffer.alloc(MiB);
  let left = bytes;
  return new Readable({
    highWaterMark: 4 * MiB,
    read() {
      if (left <= 0) return void this.push(null);
      const size = Math.min(block.length, left);
      left -= size;
      this.push(size === block.length ? block : block.subarray(0, size));
    },
  });
}

/** Stream a source (a local command's stdout, or zeros) into a remote command through a fresh transport. */
async function timeTransport(connect: () => Promise<Transport>, source: string[] | number, remoteArgv: string[]): Promise<number> {
  const started = process.hrtime.bigint();
  const transport = await connect();
  const stdin = typeof source === 'number' ? zeros(source) : spawn(source[0]!, source.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] }).stdout;
  const result = await transport.exec(remoteArgv, { stdin });
  await transport.close();
  if (result.isErr()) throw result.error;
  return Number(process.hrtime.bigint() - started) / 1e9;
}


/** A tree of `totalMiB` in files of 1-4 MiB (random content: no help from sparse files). */
function makeTree(totalMiB: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'apm-bench-tree-'));
  const block = randomBytes(MiB);
  let written = 0;
  let i = 0;
  while (written < totalMiB) {
    const sub = join(dir, `d${i % 8}`);
    mkdirSync(sub, { recursive: true });
    const size = Math.min(1 + (i % 4), totalMiB - written);
    writeFileSync(join(sub, `f${i}.bin`), Buffer.concat(Array.from({ length: size }, () => block)));
    written += size;
    i++;
  }
  return dir;
}

function ssh2BindingAvailable(): boolean {
  try {
    const require = createRequire(import.meta.url);
    return Boolean((require('ssh2/lib/protocol/crypto.js') as { bindingAvailable?: boolean }).bindingAvailable);
  } catch {
    return false;
  }
}

/** Measure every SSH transport against OpenSSH in one run. */
export async function benchTransport(): Promise<BenchLine[]> {
  const mib = Number(process.env.AP_MIGRATE_BENCH_MIB ?? 1024);
  const treeMib = Number(process.env.AP_MIGRATE_BENCH_TREE_MIB ?? 256);
  const rounds = Number(process.env.AP_MIGRATE_BENCH_ROUNDS ?? 3);
  const variants = process.env.AP_MIGRATE_BENCH_VARIANTS === '1';
  const bytes = mib * MiB;
  const sshd: TestSshd = await startSshd();
  const tree = makeTree(treeMib);
  const sink = mkdtempSync(join(tmpdir(), 'apm-bench-sink-'));
  try {
    const sshBase = [
      'ssh -T -o BatchMode=yes -o StrictHostKeyChecking=yes -o ControlMaster=no -o ControlPath=none',
      `-o UserKnownHostsFile=${quote(sshd.knownHostsPath)} -i ${quote(sshd.clientKeyPath)} -p ${sshd.port} root@${sshd.host}`,
    ].join(' ');
    const ssh2 = (ciphers?: string[]) => async () =>
      (
        await createSshTransport({
          host: sshd.host,
          port: sshd.port,
          username: 'root',
          privateKeyPath: sshd.clientKeyPath,
          knownHostsPath: sshd.knownHostsPath,
          ...(ciphers ? { ciphers } : {}),
        })
      )._unsafeUnwrap();
    const openssh = async () =>
      (
        await createOpenSshTransport({
          host: sshd.host,
          port: sshd.port,
          username: 'root',
          identityFile: sshd.clientKeyPath,
          knownHostsPath: sshd.knownHostsPath,
        })
      )._unsafeUnwrap();

    const tarDest = (n: string) => join(sink, n);
    const contenders: Record<string, () => Promise<number>> = {
      'openssh-cli': () => timeShell(`head -c ${bytes} /dev/zero | ${sshBase} 'cat >/dev/null'`),
      ssh2: () => timeTransport(ssh2(), bytes, ['sh', '-c', 'cat >/dev/null']),
      openssh: () => timeTransport(openssh, bytes, ['sh', '-c', 'cat >/dev/null']),
    };
    // Cipher comparisons, for investigating a gap (AP_MIGRATE_BENCH_VARIANTS=1).
    if (variants) {
      contenders['openssh-cli-aes128gcm'] = () => timeShell(`head -c ${bytes} /dev/zero | ${sshBase} -c aes128-gcm@openssh.com 'cat >/dev/null'`);
      contenders['ssh2-chacha20'] = () => timeTransport(ssh2(['chacha20-poly1305@openssh.com']), bytes, ['sh', '-c', 'cat >/dev/null']);
    }
    const tarContenders: Record<string, (round: number) => Promise<number>> = {
      'openssh-cli': (r) => timeShell(`mkdir -p ${tarDest(`cli${r}`)} && tar -cf - -C ${quote(tree)} . | ${sshBase} tar -xf - -C ${tarDest(`cli${r}`)}`),
      ssh2: (r) => timeTransport(ssh2(), ['tar', '-cf', '-', '-C', tree, '.'], ['sh', '-c', `mkdir -p "$1" && exec tar -xf - -C "$1"`, 'sh', tarDest(`ssh2${r}`)]),
      openssh: (r) => timeTransport(openssh, ['tar', '-cf', '-', '-C', tree, '.'], ['sh', '-c', `mkdir -p "$1" && exec tar -xf - -C "$1"`, 'sh', tarDest(`os${r}`)]),
    };
    const seconds: Record<string, number[]> = {};
    const tarSeconds: Record<string, number[]> = {};
    for (let round = 0; round < rounds; round++) {
      for (const [name, run] of Object.entries(contenders)) (seconds[name] ??= []).push(await run());
      for (const [name, run] of Object.entries(tarContenders)) {
        (tarSeconds[name] ??= []).push(await run(round));
        rmSync(sink, { recursive: true, force: true });
        mkdirSync(sink, { recursive: true });
      }
    }
    const rate = (mebibytes: number, s: number[]) => mebibytes / fastest(s);
    const base = rate(mib, seconds['openssh-cli'] ?? []);
    const tarBase = rate(treeMib, tarSeconds['openssh-cli'] ?? []);
    const binding = ssh2BindingAvailable() ? 'native binding on' : 'native binding OFF';
    const lines: BenchLine[] = [];
    for (const name of ['ssh2', 'openssh', ...(variants ? ['ssh2-chacha20', 'openssh-cli-aes128gcm'] : [])]) {
      const ours = rate(mib, seconds[name] ?? []);
      lines.push({
        name: `transport-stream-${name}`,
        ratio: ours / base,
        detail: `${mib} MiB into cat: ${ours.toFixed(0)} MiB/s vs OpenSSH ssh ${base.toFixed(0)} MiB/s (best of ${rounds} interleaved rounds; ssh2 ${binding})`,
      });
    }
    for (const name of ['ssh2', 'openssh']) {
      const ours = rate(treeMib, tarSeconds[name] ?? []);
      lines.push({
        name: `transport-tar-${name}`,
        ratio: ours / tarBase,
        detail: `${treeMib} MiB tree via tar -x: ${ours.toFixed(0)} MiB/s vs tar|ssh ${tarBase.toFixed(0)} MiB/s (best of ${rounds} interleaved rounds)`,
      });
    }
    return lines;
  } finally {
    await sshd.stop();
    rmSync(tree, { recursive: true, force: true });
    rmSync(sink, { recursive: true, force: true });
  }
}

runWhenCalledDirectly(import.meta.url, benchTransport);
