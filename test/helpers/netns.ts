/**
 * Two network-namespace "hosts" joined by a veth pair (10.213.N.1/30 and 10.213.N.2/30, only
 * inside the namespaces), for tests where source and destination are separate machines as
 * far as the network is concerned. The test process itself stays in the root namespace and
 * reaches the destination through a relay running in the source namespace.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';

/** A pair of namespaces and the link between them. */
export interface NetnsPair {
  /** Namespace of the source host. */
  source: string;
  /** Namespace of the destination host. */
  destination: string;
  sourceAddress: string;
  destinationAddress: string;
  /** The veth end inside the source namespace (for shaping it with `tc`). */
  sourceDevice: string;
  /** The veth end inside the destination namespace. */
  destinationDevice: string;
  /** Prefix that runs a command inside a namespace: `['ip', 'netns', 'exec', ns]`. */
  wrap(ns: string): string[];
  /** Take the link down (packets are dropped silently, like a pulled cable). */
  cutLink(): void;
  /** Bring the link back up. */
  restoreLink(): void;
  /** A byte stream to host:port opened from inside the source namespace (for ssh2's `sock`). */
  connectFromSource(host: string, port: number): Promise<Duplex>;
  /** A ProxyCommand for OpenSSH that connects from inside the source namespace. */
  proxyCommand: string;
  /** Delete both namespaces (and the veth with them) and the relay script. */
  teardown(): void;
}

// Copies stdin to a TCP connection and back; run inside the source namespace.
const RELAY = `
const net = require('node:net');
const socket = net.connect({ host: process.argv[2], port: Number(process.argv[3]) });
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on('error', () => process.exit(255));
socket.on('close', () => process.exit(0));
`;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Options for {@link createNetnsPair}. */
export interface NetnsPairOptions {
  /**
   * Start of every namespace and veth name (default `apm`): namespaces `<prefix>-src-<id>`, veths
   * `<prefix>s<id>`. Lets a caller tell its own leftovers from everyone else's. At most 8 characters
   * (a veth name has 15).
   */
  namePrefix?: string;
}

/** Create the two hosts. Call `teardown()` in afterAll. */
export function createNetnsPair(options: NetnsPairOptions = {}): NetnsPair {
  const prefix = options.namePrefix ?? 'apm';
  if (!/^[a-z][a-z0-9]{0,7}$/.test(prefix)) throw new Error(`namePrefix must be 1-8 lowercase letters or digits: ${prefix}`);
  const id = randomBytes(3).toString('hex');
  const subnet = 1 + (randomBytes(1)[0]! % 250);
  const source = `${prefix}-src-${id}`;
  const destination = `${prefix}-dst-${id}`;
  const sourceVeth = `${prefix}s${id}`;
  const destinationVeth = `${prefix}d${id}`;
  const sourceAddress = `10.213.${subnet}.1`;
  const destinationAddress = `10.213.${subnet}.2`;
  const dir = mkdtempSync(join(tmpdir(), 'apm-netns-'));
  const relayPath = join(dir, 'relay.cjs');
  writeFileSync(relayPath, RELAY);
  const teardown = (): void => {
    for (const ns of [source, destination]) {
      try {
        ip('netns', 'delete', ns);
      } catch {
        /* not created */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    ip('netns', 'add', source);
    ip('netns', 'add', destination);
    ip('link', 'add', sourceVeth, 'type', 'veth', 'peer', 'name', destinationVeth);
    ip('link', 'set', sourceVeth, 'netns', source);
    ip('link', 'set', destinationVeth, 'netns', destination);
    ip('-n', source, 'addr', 'add', `${sourceAddress}/30`, 'dev', sourceVeth);
    ip('-n', destination, 'addr', 'add', `${destinationAddress}/30`, 'dev', destinationVeth);
    for (const [ns, dev] of [
      [source, sourceVeth],
      [destination, destinationVeth],
    ] as const) {
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'link', 'set', dev, 'up');
    }
  } catch (e) {
    teardown();
    throw e;
  }
  const wrap = (ns: string) => ['ip', 'netns', 'exec', ns];
  return {
    source,
    destination,
    sourceAddress,
    destinationAddress,
    sourceDevice: sourceVeth,
    destinationDevice: destinationVeth,
    wrap,
    cutLink: () => ip('-n', source, 'link', 'set', sourceVeth, 'down'),
    restoreLink: () => ip('-n', source, 'link', 'set', sourceVeth, 'up'),
    proxyCommand: `ip netns exec ${source} ${process.execPath} ${relayPath} %h %p`,
    connectFromSource: async (host, port) => {
      const child = spawn('ip', ['netns', 'exec', source, process.execPath, relayPath, host, String(port)], { stdio: ['pipe', 'pipe', 'ignore'] });
      const duplex = Duplex.from({ readable: child.stdout, writable: child.stdin });
      // Ending the stream (ssh2 closing) must end the relay too.
      duplex.on('close', () => child.kill('SIGKILL'));
      return duplex;
    },
    teardown,
  };
}
