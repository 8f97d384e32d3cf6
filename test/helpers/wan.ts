/**
 * An emulated wide-area link: the two namespace hosts of netns.ts with both directions shaped to
 * a rate and a round-trip time, for tests and benchmarks of transfers over slow, distant links.
 *
 * Preferred shaping is `tc qdisc ... netem delay <rtt/2>ms rate <rate>mbit limit <n>` on each veth
 * end. Some kernels are built without sch_netem (the 6.18 Firecracker kernel this was written on), so
 * when netem is missing the link is emulated from what such kernels do have: a `tbf` qdisc for the
 * rate on each veth's egress, and for the delay an ingress `mirred` redirect of every IP packet
 * into a TUN device whose reader (a small Python loop) writes each packet back after rtt/2. The
 * TUN keeps GSO offloads on, so a 1 Gbit/s flow is ~2k large packets a second, not 80k.
 *
 * Names of everything created start with `apmw` (namespaces, veths, TUNs), so leak checks can look
 * for exactly those.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createNetnsPair, type NetnsPair } from './netns.js';

/** Prefix of every namespace, veth and TUN this helper creates. */
export const WAN_NAME_PREFIX = 'apmw';

/** How the delay and rate are made: kernel netem, or tbf plus a user-space delay line. */
export type WanEmulator = 'netem' | 'tbf+tun';

/** Options for {@link createWanLink}. */
export interface WanLinkOptions {
  /** Bottleneck rate of each direction, in Mbit/s (10^6 bit/s, as tc counts). */
  rateMbit: number;
  /** Round-trip time added by the link, in ms (half each way). */
  rttMs: number;
  /** Force one emulator (default: netem when the kernel has it, else tbf+tun). */
  emulator?: WanEmulator;
  /** Prefix of the namespaces, veths and TUNs (default {@link WAN_NAME_PREFIX}), for a run whose leak checks look for its own. */
  namePrefix?: string;
}

/** A shaped pair of namespace hosts. */
export interface WanLink {
  /** The namespaces, addresses, relay and ProxyCommand (see netns.ts). */
  pair: NetnsPair;
  rateMbit: number;
  rttMs: number;
  emulator: WanEmulator;
  /** PIDs of the user-space delay lines still running (none with netem, none after teardown). */
  delayLinePids(): number[];
  /** Stop the delay lines and delete both namespaces (call this, not `pair.teardown()`). */
  teardown(): Promise<void>;
}

// Reads IP packets (with their virtio-net header) from a TUN and writes each back after a fixed
// delay. A fixed delay keeps packets in order, so a FIFO is the whole scheduler. Exits when stdin
// closes, so a crashed test process leaves no delay line behind.
const DELAY_LINE = `
import collections, fcntl, os, select, struct, sys, time
TUNSETIFF, TUNSETOFFLOAD = 0x400454CA, 0x400454D0
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
name, delay = sys.argv[1], float(sys.argv[2]) / 1000.0
fd = os.open('/dev/net/tun', os.O_RDWR | os.O_NONBLOCK)
fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
print('ready', flush=True)
queue = collections.deque()
stdin = sys.stdin.fileno()
while True:
    now = time.monotonic()
    while queue and queue[0][0] <= now:
        try:
            os.write(fd, queue.popleft()[1])
        except OSError:
            pass
    timeout = max(0.0, queue[0][0] - now) if queue else None
    ready, _, _ = select.select([fd, stdin], [], [], timeout)
    if stdin in ready and not os.read(stdin, 4096):
        break
    if fd in ready:
        due = time.monotonic() + delay
        while True:
            try:
                queue.append((due, os.read(fd, 65600)))
            except BlockingIOError:
                break
`;

function run(argv: string[]): void {
  execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Bytes in flight on a full link: rate x RTT. */
function bdpBytes(rateMbit: number, rttMs: number): number {
  return Math.ceil((rateMbit * 1e6 * (rttMs / 1000)) / 8);
}

/**
 * netem's queue holds the packets being delayed as well as those waiting for the rate, so it must
 * hold several BDPs of full-size packets: at the default 1000 a bulk flow at 1 Gbit/s + 20 ms is
 * tail-dropped into a crawl.
 */
function netemArgs(dev: string, o: WanLinkOptions): string[] {
  const limit = Math.max(10_000, Math.ceil((4 * bdpBytes(o.rateMbit, o.rttMs)) / 1500));
  return ['tc', 'qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', `${o.rttMs / 2}ms`, 'rate', `${o.rateMbit}mbit`, 'limit', String(limit)];
}

/** Put netem on both veth ends; false (nothing changed) when this kernel has no netem. */
function tryNetem(pair: NetnsPair, o: WanLinkOptions): boolean {
  try {
    run([...pair.wrap(pair.source), ...netemArgs(pair.sourceDevice, o)]);
  } catch {
    return false;
  }
  run([...pair.wrap(pair.destination), ...netemArgs(pair.destinationDevice, o)]);
  return true;
}

/** Start one delay line in `ns` and wait until its TUN exists. */
async function startDelayLine(ns: string, tun: string, delayMs: number, script: string): Promise<ChildProcess> {
  // Niced up: the link must not queue behind the processes whose traffic it carries.
  const child = spawn('ip', ['netns', 'exec', ns, 'nice', '-n', '-10', 'python3', script, tun, String(delayMs)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout! });
  const ready = await new Promise<boolean>((resolve) => {
    lines.once('line', (l) => resolve(l.trim() === 'ready'));
    child.once('exit', () => resolve(false));
    child.once('error', () => resolve(false));
  });
  lines.close();
  if (!ready) {
    child.kill('SIGKILL');
    throw new Error(`delay line in ${ns} did not start: ${stderr.trim()}`);
  }
  return child;
}

/**
 * Shape one direction's sending end (`dev` in `ns`) with tbf, and delay what arrives at it. tbf's
 * burst must exceed one GSO packet (64 KiB) or tbf splits them; its byte limit is several BDPs so
 * a bulk flow is never tail-dropped (TCP's small-queue limit keeps the real queue short anyway).
 */
function shapeWithTbf(ns: string, dev: string, tun: string, o: WanLinkOptions): void {
  const exec = (argv: string[]) => run(['ip', 'netns', 'exec', ns, ...argv]);
  const rateBytes = (o.rateMbit * 1e6) / 8;
  const burst = Math.max(128 * 1024, Math.ceil(rateBytes * 0.002));
  const limit = Math.max(1024 * 1024, 4 * bdpBytes(o.rateMbit, o.rttMs));
  exec(['tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${o.rateMbit}mbit`, 'burst', String(burst), 'limit', String(limit)]);
  exec(['ip', 'link', 'set', tun, 'txqueuelen', '10000', 'up']);
  // Packets re-enter through the TUN while the route back is the veth: strict reverse-path
  // filtering would drop them.
  exec(['sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0', `net.ipv4.conf.${tun}.rp_filter=0`]);
  exec(['tc', 'qdisc', 'add', 'dev', dev, 'ingress']);
  // IP only: ARP keeps flowing undelayed on the veth (a TUN cannot carry it).
  exec(['tc', 'filter', 'add', 'dev', dev, 'parent', 'ffff:', 'protocol', 'ip', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', tun]);
}

async function stopAll(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }),
  );
}

function checkOptions(o: WanLinkOptions): void {
  if (!(o.rateMbit > 0 && o.rateMbit <= 100_000)) throw new Error(`rateMbit out of range: ${o.rateMbit}`);
  if (!(o.rttMs >= 0 && o.rttMs <= 10_000)) throw new Error(`rttMs out of range: ${o.rttMs}`);
}

/** Build a shaped pair. Call `teardown()` in afterAll. */
export async function createWanLink(options: WanLinkOptions): Promise<WanLink> {
  checkOptions(options);
  const prefix = options.namePrefix ?? WAN_NAME_PREFIX;
  const pair = createNetnsPair({ namePrefix: prefix });
  const dir = mkdtempSync(join(tmpdir(), 'apmw-wan-'));
  const children: ChildProcess[] = [];
  const teardown = async (): Promise<void> => {
    await stopAll(children);
    pair.teardown();
    rmSync(dir, { recursive: true, force: true });
  };
  const delayLinePids = () => children.filter((c) => c.exitCode === null && c.signalCode === null && c.pid !== undefined).map((c) => c.pid!);
  const link = (emulator: WanEmulator): WanLink => ({ pair, rateMbit: options.rateMbit, rttMs: options.rttMs, emulator, delayLinePids, teardown });
  try {
    if (options.emulator !== 'tbf+tun' && tryNetem(pair, options)) return link('netem');
    if (options.emulator === 'netem') throw new Error('tc has no netem here (kernel built without sch_netem)');
    const script = join(dir, 'delay-line.py');
    writeFileSync(script, DELAY_LINE);
    const id = randomBytes(3).toString('hex');
    for (const [ns, dev, tun] of [
      [pair.source, pair.sourceDevice, `${prefix}ts${id}`],
      [pair.destination, pair.destinationDevice, `${prefix}td${id}`],
    ] as const) {
      children.push(await startDelayLine(ns, tun, options.rttMs / 2, script));
      shapeWithTbf(ns, dev, tun, options);
    }
    return link('tbf+tun');
  } catch (e) {
    await teardown();
    throw e;
  }
}

// Probe endpoints, run inside the namespaces: `serve HOST PORT` answers an echo ('E' first byte)
// or counts a bulk upload and replies with the count; `echo HOST PORT N` prints N round trips in
// ms; `bulk HOST PORT BYTES` prints {bytes, seconds} from first byte sent to the count received.
const PROBE = `
const net = require('node:net');
const [mode, host, port, arg] = [process.argv[2], process.argv[3], Number(process.argv[4]), Number(process.argv[5])];
if (mode === 'serve') {
  net.createServer((s) => {
    s.setNoDelay(true);
    s.once('data', (d) => {
      if (d[0] === 0x45) { s.write('E'); s.on('data', (x) => s.write(x)); return; }
      let n = d.length;
      s.on('data', (x) => (n += x.length));
      s.on('end', () => s.end(String(n)));
    });
    s.on('error', () => {});
  }).listen(port, host, () => console.log('listening'));
} else {
  const s = net.connect({ host, port }, () => {
    s.setNoDelay(true);
    if (mode === 'echo') {
      const rtts = []; let t = process.hrtime.bigint(); s.write('E');
      s.on('data', () => {
        rtts.push(Number(process.hrtime.bigint() - t) / 1e6);
        if (rtts.length >= arg) { console.log(JSON.stringify(rtts)); s.destroy(); return; }
        t = process.hrtime.bigint(); s.write('x');
      });
      return;
    }
    const t0 = process.hrtime.bigint(); const block = Buffer.alloc(1 << 20, 0x5a); let left = arg; let reply = '';
    const pump = () => { while (left > 0) { const b = block.subarray(0, Math.min(left, block.length)); left -= b.length; if (!s.write(b)) return void s.once('drain', pump); } s.end(); };
    s.on('data', (d) => (reply += d));
    s.on('end', () => console.log(JSON.stringify({ bytes: Number(reply), seconds: Number(process.hrtime.bigint() - t0) / 1e9 })));
    pump();
  });
  s.on('error', (e) => { console.error(e.message); process.exit(1); });
}
`;

/** Run a probe client in the source namespace against a probe server in the destination one. */
async function withProbe(link: WanLink, clientArgs: string[]): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'apmw-probe-'));
  const script = join(dir, 'probe.cjs');
  writeFileSync(script, PROBE);
  const port = String(20_000 + (randomBytes(2).readUInt16BE() % 40_000));
  const { pair } = link;
  const server = spawn('ip', ['netns', 'exec', pair.destination, process.execPath, script, 'serve', pair.destinationAddress, port], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      server.stdout!.once('data', () => resolve());
      server.once('exit', (code) => reject(new Error(`probe server exited ${code}`)));
    });
    const [mode, ...rest] = clientArgs;
    const argv = ['netns', 'exec', pair.source, process.execPath, script, mode!, pair.destinationAddress, port, ...rest];
    return await new Promise<string>((resolve, reject) => {
      let out = '';
      const client = spawn('ip', argv, { stdio: ['ignore', 'pipe', 'inherit'] });
      client.stdout.on('data', (d: Buffer) => (out += d.toString()));
      client.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`probe ${mode} exited ${code}`))));
    });
  } finally {
    await stopAll([server]);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Round trips (ms) of one-byte messages over one TCP connection, source to destination and back. */
export async function measureRtt(link: WanLink, samples = 10): Promise<number[]> {
  return JSON.parse(await withProbe(link, ['echo', String(samples)])) as number[];
}

/** A measured bulk TCP upload: payload bits per second over the link's nominal rate. */
export interface ThroughputSample {
  bytes: number;
  seconds: number;
  mbit: number;
  /** `mbit / rateMbit`. */
  ratio: number;
}

/** Upload `bytes` over one TCP connection from the source to the destination namespace. */
export async function measureThroughput(link: WanLink, bytes: number): Promise<ThroughputSample> {
  const r = JSON.parse(await withProbe(link, ['bulk', String(bytes)])) as { bytes: number; seconds: number };
  if (r.bytes !== bytes) throw new Error(`probe server counted ${r.bytes} of ${bytes} bytes`);
  const mbit = (r.bytes * 8) / r.seconds / 1e6;
  return { ...r, mbit, ratio: mbit / link.rateMbit };
}
