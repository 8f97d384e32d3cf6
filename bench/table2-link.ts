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
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Transport } from '../src/spec/transport.js';
import { createOpenSshTransport } from '../src/transports/openssh.js';
import { createNetnsPair, type NetnsPair } from '../test/helpers/netns.js';
import { startSshd, type TestSshd } from '../test/helpers/sshd.js';
import { buildVcsim } from '../test/helpers/vcsim.js';
import { createWanLink, type WanLink } from '../test/helpers/wan.js';

/** Prefix of every namespace, veth and TUN this bench creates (namespaces: `apt2-src-*`, `apt2-dst-*`). */
export const TABLE2_PREFIX = 'apt2';

// ---------------------------------------------------------------------------------------------
// The shaped link (test/helpers/wan.ts's, with this bench's prefix)

/** A shaped pair of namespace hosts named `apt2-*`; a {@link WanLink}, so the helper's probes take it. */
export async function createTable2Link(rateMbit: number, rttMs: number, janitor?: Janitor): Promise<WanLink> {
  const link = await createWanLink({ rateMbit, rttMs, namePrefix: TABLE2_PREFIX });
  janitor?.track('netns', link.pair.source);
  janitor?.track('netns', link.pair.destination);
  return link;
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
