/**
 * A real OpenSSH server for tests: `/usr/sbin/sshd -D` on a free loopback port with throwaway
 * host and user keys in a temp dir. Root may log in with the generated key only.
 * Optionally run inside a network namespace (see netns.ts) via `wrap`.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A running test sshd. */
export interface TestSshd {
  /** Address it listens on. */
  host: string;
  port: number;
  /** `SHA256:...` of the server's host key, as `ssh-keygen -l` prints it. */
  hostKeyFingerprint: string;
  /** The host key line body: `ssh-ed25519 AAAA...`. */
  hostPublicKey: string;
  /** A known_hosts file that lists exactly this server. */
  knownHostsPath: string;
  /** Private key root may log in with. */
  clientKeyPath: string;
  /** The temp dir holding keys, config and the log. */
  dir: string;
  /** The server's log (LogLevel VERBOSE). */
  log(): string;
  /** PIDs of sshd processes serving connections (children of the listener). */
  sessionPids(): number[];
  /** Stop the server and every session, remove the temp dir. */
  stop(): Promise<void>;
}

/** Options for {@link startSshd}. */
export interface StartSshdOptions {
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Fixed port (default: a free one on loopback). */
  port?: number;
  /** Prefix for the sshd command, e.g. `['ip', 'netns', 'exec', 'ns']`. */
  wrap?: string[];
  /**
   * Prefix that runs the listening probe (`ss`) where sshd listens (default `wrap`). Give it when
   * `wrap` does more than enter a network namespace (a new PID or mount namespace, a set-up script).
   */
  probeWrap?: string[];
}

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** `SHA256:<base64 without padding>` of an OpenSSH public key line. */
export function fingerprintOfPublicKey(line: string): string {
  const blob = line.trim().split(/\s+/)[1] ?? '';
  return 'SHA256:' + createHash('sha256').update(Buffer.from(blob, 'base64')).digest('base64').replace(/=+$/, '');
}

function keygen(path: string, comment: string): void {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path], { stdio: 'ignore' });
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** The command line of `pid` (NULs as spaces), '' when it is gone. */
function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** The first of `pid` and its descendants (breadth first) whose command line contains `needle`. */
function findDescendant(pid: number, needle: string): number | undefined {
  const queue = [pid];
  for (let i = 0; i < queue.length && i < 1000; i++) {
    const p = queue[i]!;
    if (cmdlineOf(p).includes(needle)) return p;
    queue.push(...childPids(p));
  }
  return undefined;
}

async function waitForBanner(host: string, port: number, child: ChildProcess, wrap: string[], deadlineMs = 10_000): Promise<void> {
  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}`);
    // Inside a namespace we cannot connect from here: wait for the pid file instead.
    const ok =
      wrap.length > 0
        ? true
        : await new Promise<boolean>((resolve) => {
            const socket = net.connect({ host, port });
            socket.once('data', (d) => {
              socket.destroy();
              resolve(d.toString().startsWith('SSH-'));
            });
            socket.once('error', () => resolve(false));
          });
    if (ok && wrap.length === 0) return;
    if (wrap.length > 0 && child.pid !== undefined) {
      try {
        const listening = execFileSync(wrap[0]!, [...wrap.slice(1), 'ss', '-Hltn', `sport = :${port}`], { encoding: 'utf8' });
        if (listening.includes(String(port))) return;
      } catch {
        /* not yet */
      }
    }
    if (Date.now() - started > deadlineMs) throw new Error(`sshd did not listen on ${host}:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Start a throwaway sshd. Call `stop()` in afterAll. */
export async function startSshd(options: StartSshdOptions = {}): Promise<TestSshd> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? (await freePort());
  const wrap = options.wrap ?? [];
  const dir = mkdtempSync(join(tmpdir(), 'apm-sshd-'));
  // Debian's sshd refuses to start without its privilege separation directory.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = join(dir, 'host_ed25519');
  const clientKey = join(dir, 'client_ed25519');
  keygen(hostKey, 'apm-test-host');
  keygen(clientKey, 'apm-test-client');
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${clientKey}.pub`));
  const hostPublicKey = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  const knownHostsPath = join(dir, 'known_hosts');
  writeFileSync(knownHostsPath, `${port === 22 ? host : `[${host}]:${port}`} ${hostPublicKey}\n`);
  const logPath = join(dir, 'sshd.log');
  // Sessions get an empty HOME of their own: a server's root account has no interactive shell
  // set-up, but this machine's root ~/.bashrc (which bash sources for every ssh command) spends
  // ~1 s on a language-version manager's init, which would add ~1 s to every remote command.
  const sessionHome = join(dir, 'home');
  mkdirSync(sessionHome, { mode: 0o700 });
  const config = [
    `Port ${port}`,
    `ListenAddress ${host}`,
    `HostKey ${hostKey}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'UsePAM no',
    'StrictModes no',
    'LogLevel VERBOSE',
    'MaxSessions 64',
    'MaxStartups 64',
    'Subsystem sftp internal-sftp',
    `SetEnv HOME=${sessionHome}`,
  ].join('\n');
  const configPath = join(dir, 'sshd_config');
  writeFileSync(configPath, config + '\n');
  const argv = [...wrap, '/usr/sbin/sshd', '-D', '-f', configPath, '-E', logPath];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
  try {
    await waitForBanner(host, port, child, options.probeWrap ?? wrap);
  } catch (e) {
    child.kill('SIGKILL');
    const log = existsSync(logPath) ? readFileSync(logPath, 'utf8') : '';
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${(e as Error).message}\n${log}`);
  }
  const listenerPid = (): number | undefined => {
    // The pid file holds sshd's pid in *its* PID namespace (1 in a namespace of its own): trust
    // it only when that pid here really is this sshd, else look for it under the child we started.
    let recorded: number | undefined;
    try {
      recorded = Number(readFileSync(join(dir, 'sshd.pid'), 'utf8').trim()) || undefined;
    } catch {
      recorded = undefined;
    }
    if (recorded !== undefined && recorded > 1 && cmdlineOf(recorded).includes(configPath)) return recorded;
    return child.pid === undefined ? undefined : (findDescendant(child.pid, configPath) ?? child.pid);
  };
  return {
    host,
    port,
    hostKeyFingerprint: fingerprintOfPublicKey(hostPublicKey),
    hostPublicKey,
    knownHostsPath,
    clientKeyPath: clientKey,
    dir,
    log: () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : ''),
    sessionPids: () => {
      const pid = listenerPid();
      return pid === undefined ? [] : childPids(pid);
    },
    stop: async () => {
      const pid = listenerPid();
      // Sessions first (they outlive the listener), then the listener.
      const sessions = pid === undefined ? [] : childPids(pid);
      for (const s of sessions) {
        for (const grandchild of childPids(s)) killQuietly(grandchild);
        killQuietly(s);
      }
      if (pid !== undefined) killQuietly(pid);
      child.kill('SIGKILL');
      if (child.exitCode === null && child.signalCode === null) {
        await new Promise((resolve) => child.once('exit', resolve));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}
