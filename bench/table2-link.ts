/**
 * Links and hosts for `npm run bench -- table2` (bench/table2.ts).
 *
 * The shaped link is test/helpers/wan.ts's: the same pair of namespace hosts (test/helpers/netns.ts),
 * the same shaping (netem when the kernel has it, else tbf on each veth plus a TUN delay line for
 * rtt/2 each way) and the same probes (`measureRtt`, `measureThroughput`). The one difference is
 * the name: `createWanLink` names everything `apmw*`, which other runs' leak checks look for, so
 * this file builds the pair with its own prefix (`apt2`: namespaces `apt2-src-<id>` and
 * `apt2-dst-<id>`, veths and TUNs `apt2*`) and applies the helper's shaping itself. The shaping
 * code below is a copy of the helper's (same commands, same parameters); keep them in step.
 *
 * Also here: an sshd in the destination namespace with an OpenSSH transport through the link, a
 * vcsim process inside a namespace, and a loopback TCP forwarder that reaches a namespace
 * address through the pair's relay (so HTTP clients in this process cross the shaped link just as
 * ssh does through its ProxyCommand).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Transport } from '../src/spec/transport.js';
import { createOpenSshTransport } from '../src/transports/openssh.js';
import { createNetnsPair, type NetnsPair } from '../test/helpers/netns.js';
import { startSshd, type TestSshd } from '../test/helpers/sshd.js';
import { buildVcsim } from '../test/helpers/vcsim.js';
import type { WanEmulator, WanLink } from '../test/helpers/wan.js';

/** Prefix of every namespace, veth and TUN this bench creates (namespaces: `apt2-src-*`, `apt2-dst-*`). */
export const TABLE2_PREFIX = 'apt2';

// ---------------------------------------------------------------------------------------------
// The shaped link (a copy of test/helpers/wan.ts's shaping, with this bench's prefix)

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

const bdpBytes = (rateMbit: number, rttMs: number) => Math.ceil((rateMbit * 1e6 * (rttMs / 1000)) / 8);

function tryNetem(pair: NetnsPair, rateMbit: number, rttMs: number): boolean {
  const args = (dev: string) => {
    const limit = Math.max(10_000, Math.ceil((4 * bdpBytes(rateMbit, rttMs)) / 1500));
    return ['tc', 'qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', `${rttMs / 2}ms`, 'rate', `${rateMbit}mbit`, 'limit', String(limit)];
  };
  try {
    run([...pair.wrap(pair.source), ...args(pair.sourceDevice)]);
  } catch {
    return false;
  }
  run([...pair.wrap(pair.destination), ...args(pair.destinationDevice)]);
  return true;
}

async function startDelayLine(ns: string, tun: string, delayMs: number, script: string): Promise<ChildProcess> {
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

function shapeWithTbf(ns: string, dev: string, tun: string, rateMbit: number, rttMs: number): void {
  const exec = (argv: string[]) => run(['ip', 'netns', 'exec', ns, ...argv]);
  const rateBytes = (rateMbit * 1e6) / 8;
  const burst = Math.max(128 * 1024, Math.ceil(rateBytes * 0.002));
  const limit = Math.max(1024 * 1024, 4 * bdpBytes(rateMbit, rttMs));
  exec(['tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${rateMbit}mbit`, 'burst', String(burst), 'limit', String(limit)]);
  exec(['ip', 'link', 'set', tun, 'txqueuelen', '10000', 'up']);
  exec(['sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0', `net.ipv4.conf.${tun}.rp_filter=0`]);
  exec(['tc', 'qdisc', 'add', 'dev', dev, 'ingress']);
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

/** A shaped pair of namespace hosts named `apt2-*`; a {@link WanLink}, so the helper's probes take it. */
export async function createTable2Link(rateMbit: number, rttMs: number, janitor?: Janitor): Promise<WanLink> {
  const pair = createNetnsPair({ namePrefix: TABLE2_PREFIX });
  janitor?.track('netns', pair.source);
  janitor?.track('netns', pair.destination);
  const dir = mkdtempSync(join(tmpdir(), 'apt2-wan-'));
  janitor?.track('dir', dir);
  const children: ChildProcess[] = [];
  const teardown = async (): Promise<void> => {
    await stopAll(children);
    pair.teardown();
    rmSync(dir, { recursive: true, force: true });
  };
  const delayLinePids = () => children.filter((c) => c.exitCode === null && c.signalCode === null && c.pid !== undefined).map((c) => c.pid!);
  const link = (emulator: WanEmulator): WanLink => ({ pair, rateMbit, rttMs, emulator, delayLinePids, teardown });
  try {
    if (tryNetem(pair, rateMbit, rttMs)) return link('netem');
    const script = join(dir, 'delay-line.py');
    writeFileSync(script, DELAY_LINE);
    const id = randomBytes(3).toString('hex');
    for (const [ns, dev, tun] of [
      [pair.source, pair.sourceDevice, `${TABLE2_PREFIX}ts${id}`],
      [pair.destination, pair.destinationDevice, `${TABLE2_PREFIX}td${id}`],
    ] as const) {
      children.push(await startDelayLine(ns, tun, rttMs / 2, script));
      shapeWithTbf(ns, dev, tun, rateMbit, rttMs);
    }
    return link('tbf+tun');
  } catch (e) {
    await teardown();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// The destination host's sshd and a transport to it

/** An sshd in the link's destination namespace and an OpenSSH transport to it (rooted at `root`) through the link. */
export interface SshHost {
  sshd: TestSshd;
  transport: Transport;
  root: string;
  close(): Promise<void>;
}

export async function openSshHost(link: WanLink, root: string, janitor?: Janitor): Promise<SshHost> {
  const { pair } = link;
  mkdirSync(root, { recursive: true });
  const sshd = await startSshd({ host: pair.destinationAddress, wrap: pair.wrap(pair.destination) });
  janitor?.track('dir', sshd.dir);
  try {
    const opened = await createOpenSshTransport({
      host: sshd.host,
      port: sshd.port,
      username: 'root',
      identityFile: sshd.clientKeyPath,
      knownHostsPath: sshd.knownHostsPath,
      proxyCommand: pair.proxyCommand,
      root,
    });
    if (opened.isErr()) throw opened.error;
    const transport = opened.value;
    return {
      sshd,
      transport,
      root,
      close: async () => {
        await transport.close();
        await sshd.stop();
      },
    };
  } catch (e) {
    await sshd.stop();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// vcsim inside a namespace, and a forwarder to reach it through the link

/** A vcsim-esx process (test/vcsim) listening on `address` inside `ns` (or here when `ns` is undefined). */
export interface NsVcsim {
  /** The URL it printed (its own address). */
  url: string;
  host: string;
  port: number;
  username: string;
  password: string;
  tmpDir: string;
  stop(): Promise<void>;
}

export async function startNsVcsim(ns: string | undefined, address: string, tmpRoot: string, janitor?: Janitor): Promise<NsVcsim> {
  const binary = buildVcsim();
  const username = 'root';
  const password = 'vcsim-secret';
  const tmp = mkdtempSync(join(tmpRoot, 'apt2-vcsim-'));
  janitor?.track('dir', tmp);
  const argv = [...(ns ? ['ip', 'netns', 'exec', ns] : []), binary, '-listen', `${address}:0`, '-user', username, '-pass', password];
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
  // In a namespace the janitor kills it with the namespace; here by its pid.
  if (!ns && child.pid !== undefined) janitor?.track('pid', `${child.pid} ${binary}`);
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (!stopped) {
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        // `ip netns exec` execs the binary, so the signal reaches vcsim itself (it removes its datastores on SIGTERM).
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  };
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`vcsim did not print its URL within 20 s: ${stderr}`)), 20_000);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`vcsim exited early (code ${code}, signal ${signal}): ${stderr}`));
      });
      createInterface({ input: child.stdout! }).once('line', (l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
    const url = new URL((JSON.parse(line) as { url: string }).url);
    return { url: url.href, host: url.hostname, port: Number(url.port), username, password, tmpDir: tmp, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** A loopback listener here whose every connection is relayed, from the source namespace, to `host:port`. */
export interface Forwarder {
  port: number;
  close(): Promise<void>;
}

export async function forwardThroughLink(pair: NetnsPair, host: string, port: number): Promise<Forwarder> {
  const sockets = new Set<net.Socket>();
  const relays = new Set<{ destroy(): void }>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.pause();
    pair.connectFromSource(host, port).then(
      (relay) => {
        relays.add(relay);
        relay.on('close', () => relays.delete(relay));
        relay.on('error', () => socket.destroy());
        socket.on('error', () => relay.destroy());
        socket.pipe(relay);
        relay.pipe(socket);
        socket.on('close', () => relay.destroy());
        relay.on('end', () => socket.end());
        socket.resume();
      },
      () => socket.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      for (const r of relays) r.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The janitor: clean-up that survives this process

// Reads `KIND ARG` lines on stdin; when stdin closes without a `done` line (this bench was killed:
// tsx SIGKILLs a child that is slow to acknowledge a Ctrl-C), undoes them in reverse: `netns` kills
// every process in the namespace and deletes it, `pid PID NEEDLE` kills a process if its command
// line still holds NEEDLE (not a reused pid), `dir` removes a directory.
const JANITOR = `
const { execFileSync } = require('node:child_process');
const { readFileSync, rmSync } = require('node:fs');
const items = [];
let buffer = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buffer += d;
  for (let i = buffer.indexOf('\\n'); i >= 0; i = buffer.indexOf('\\n')) {
    const line = buffer.slice(0, i);
    buffer = buffer.slice(i + 1);
    if (line === 'done') process.exit(0);
    items.push(line);
  }
});
process.stdin.on('end', () => {
  for (const line of items.reverse()) {
    const [kind, ...rest] = line.split(' ');
    const arg = rest.join(' ');
    try {
      if (kind === 'pid') {
        // \`pid PID NEEDLE\`: only while that pid is still the process meant (its command line holds NEEDLE).
        const [pid, ...needle] = rest;
        if (readFileSync('/proc/' + pid + '/cmdline', 'utf8').replaceAll('\\0', ' ').includes(needle.join(' '))) process.kill(Number(pid), 'SIGKILL');
      }
      else if (kind === 'dir') rmSync(arg, { recursive: true, force: true });
      else if (kind === 'netns') {
        let pids = [];
        try { pids = execFileSync('ip', ['netns', 'pids', arg], { encoding: 'utf8' }).split(/\\s+/).filter(Boolean); } catch {}
        for (const p of pids) { try { process.kill(Number(p), 'SIGKILL'); } catch {} }
        execFileSync('ip', ['netns', 'delete', arg], { stdio: 'ignore' });
      }
    } catch {}
  }
  process.exit(0);
});
`;

/** A detached process that undoes what it was told about if this process dies without saying `done`. */
export interface Janitor {
  /** `pid` takes `PID NEEDLE`: a string its command line holds. */
  track(kind: 'netns' | 'pid' | 'dir', arg: string): void;
  /** Everything was cleaned up here: the janitor exits without doing anything. */
  done(): void;
}

export function startJanitor(): Janitor {
  // Detached: its own process group, so the Ctrl-C that stops the bench does not stop it.
  const child = spawn(process.execPath, ['-e', JANITOR], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  child.unref();
  const stdin = child.stdin!;
  stdin.on('error', () => {});
  (stdin as unknown as { unref?: () => void }).unref?.();
  return {
    track: (kind, arg) => void stdin.write(`${kind} ${arg}\n`),
    done: () => {
      stdin.write('done\n');
      stdin.end();
    },
  };
}
