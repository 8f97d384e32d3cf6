/**
 * Runs govmomi's vCenter simulator (vcsim, ESX model) for tests: builds test/.build/vcsim-esx
 * when needed (test/vcsim/build.sh, cached), then starts N separate processes, one per "host",
 * each on its own free loopback port with its own TMPDIR (the model keeps datastores in temp
 * dirs; a killed process cannot clean them, so the helper removes the whole TMPDIR).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = resolve(import.meta.dirname, '..', '..');

/** One running simulator process. */
export interface VcsimHost {
  /** SOAP endpoint, e.g. http://127.0.0.1:40123/sdk */
  url: string;
  /** host:port */
  hostPort: string;
  /** Credentials it accepts. */
  username: string;
  password: string;
  /** Certificate thumbprints (hex, upper case) when started with tls. */
  sha256?: string;
  sha1?: string;
  /** The process's TMPDIR; its datastore directories live under it (`govcsim-*`). */
  tmpDir: string;
  /** The process (kill it to simulate a host crash). */
  child: ChildProcess;
  /** Stop it (SIGTERM, then SIGKILL) and remove its temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** Options for {@link startVcsim}. */
export interface StartVcsimOptions {
  tls?: boolean;
  username?: string;
  password?: string;
  /** Start without -user/-pass: vcsim then accepts any non-empty credentials. */
  anyCredentials?: boolean;
  /** Parent of each process's TMPDIR (default: the OS temp dir). Benchmarks use /dev/shm to keep disk writeback out of the numbers. */
  tmpRoot?: string;
}

/** Build the simulator binary if main.go changed; returns its path. Takes ~30 s the first time. */
export function buildVcsim(): string {
  return execFileSync(join(ROOT, 'test', 'vcsim', 'build.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

/** Whether Debian's go toolchain and govmomi sources are present (tests skip or fail otherwise). */
export function vcsimBuildable(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v go && test -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function startOne(binary: string, options: StartVcsimOptions): Promise<VcsimHost> {
  const username = options.username ?? 'root';
  const password = options.password ?? 'vcsim-secret';
  const tmp = mkdtempSync(join(options.tmpRoot ?? tmpdir(), 'ap-migrate-vcsim-'));
  const args = ['-listen', '127.0.0.1:0', ...(options.anyCredentials ? [] : ['-user', username, '-pass', password])];
  if (options.tls) args.push('-tls');
  const child = spawn(binary, args, { env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4000);
  });
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (!stopped) {
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  };
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`vcsim did not print its URL within 20 s: ${stderr}`));
    }, 20_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`vcsim exited early (code ${code}, signal ${signal}): ${stderr}`));
    });
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      clearTimeout(timer);
      const info = JSON.parse(line) as { url: string; sha256?: string; sha1?: string };
      const hostPort = new URL(info.url).host;
      resolvePromise({ url: info.url, hostPort, username, password, sha256: info.sha256, sha1: info.sha1, tmpDir: tmp, child, stop });
    });
  });
}

/** Start `count` separate simulator processes (one host each) and wait until each serves. */
export async function startVcsim(count: number, options: StartVcsimOptions = {}): Promise<VcsimHost[]> {
  const binary = buildVcsim();
  const hosts = await Promise.all(Array.from({ length: count }, () => startOne(binary, options)));
  // The URL line is printed after the listener is bound; a TCP connect confirms it accepts.
  await Promise.all(hosts.map((h) => probe(h.hostPort)));
  return hosts;
}

function probe(hostPort: string): Promise<void> {
  const url = new URL(`tcp://${hostPort}`);
  return new Promise((res, rej) => {
    const socket = connect(Number(url.port), url.hostname, () => {
      socket.end();
      res();
    });
    socket.once('error', rej);
  });
}

/** Stop every host (ignores already-stopped ones). */
export async function stopVcsim(hosts: readonly VcsimHost[]): Promise<void> {
  await Promise.all(hosts.map((h) => h.stop()));
}
