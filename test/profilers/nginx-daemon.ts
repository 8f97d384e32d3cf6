/**
 * Debian's nginx, launched as the user reported it (`daemon off; master_process on;`), but with
 * its own prefix, config, pid file and a free 127.0.0.1 port in a temporary directory, so that it
 * clashes with no other nginx (or test) on this machine. `user www-data` makes the workers drop
 * privileges and the master look the user up through NSS: libnss_systemd's path walk
 * (`openat(dirfd, "usr")`, `openat(dirfd, "lib")`, many of them failing) is what once turned into
 * nonexistent paths such as /usr/local/usr/lib/usr/lib.
 */
import { lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import type { ResourceProfile } from '../../src/policy/profile.js';

export const NGINX = '/usr/sbin/nginx';

/** A free TCP port on 127.0.0.1 (closed again: nginx binds it a moment later). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A prefix directory with nginx.conf; `command` runs nginx on it in the foreground. */
export async function nginxSite(): Promise<{ dir: string; conf: string; port: number; command: string[]; cleanup: () => void }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ap-migrate-nginx-'));
  const port = await freePort();
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(path.join(dir, 'index.html'), 'hello\n');
  writeFileSync(
    conf,
    [
      'user www-data;',
      'worker_processes 2;',
      `pid ${dir}/nginx.pid;`,
      'error_log stderr;',
      'events { worker_connections 64; }',
      'http {',
      '  include /etc/nginx/mime.types;',
      '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`),
      `  server { listen 127.0.0.1:${port}; root ${dir}; }`,
      '}',
      '',
    ].join('\n'),
  );
  return {
    dir,
    conf,
    port,
    command: [NGINX, '-p', dir, '-c', conf, '-g', 'daemon off; master_process on;'],
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The uid of www-data in /etc/passwd. */
export function wwwDataUid(): number | undefined {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('www-data:'));
  return line ? Number(line.split(':')[2]) : undefined;
}

/** What every profile of this nginx must show, whichever tracing profiler took it. */
export function expectSoundNginxProfile(profile: ResourceProfile, site: { conf: string; port: number }): void {
  // Every file not created by the program exists: nothing was joined to a wrong directory, and
  // no failed lookup became a use (a migration would stop with BUNDLE_SOURCE_MISSING).
  const missing = profile.files.filter((f) => !f.created && lstatSync(f.path, { throwIfNoEntry: false }) === undefined).map((f) => f.path);
  expect(missing).toEqual([]);
  expect(profile.files.filter((f) => /\/usr\/local\/usr|\/usr\/lib\/usr/.test(f.path))).toEqual([]);
  for (const p of ['/etc/nginx/mime.types', site.conf]) {
    expect(profile.files.find((f) => f.path === p)?.reasons, p).toContain('traced');
  }
  for (const f of profile.files) expect(f.reasons?.length, f.path).toBeGreaterThan(0);
  // Failed lookups are probes, and never also uses.
  expect(profile.probes.length).toBeGreaterThan(0);
  const files = new Set(profile.files.map((f) => f.path));
  expect(profile.probes.filter((p) => files.has(p))).toEqual([]);
  // libnss_systemd looks for userdb directories with openat(<fd of /etc>, "userdb"): a failed
  // lookup relative to a directory descriptor, resolved against that directory.
  if (/^(passwd|group):.*\bsystemd\b/m.test(readFileSync('/etc/nsswitch.conf', 'utf8'))) {
    for (const p of ['/etc/userdb', '/run/userdb', '/usr/lib/userdb']) {
      if (lstatSync(p, { throwIfNoEntry: false }) === undefined) expect(profile.probes).toContain(p);
    }
  }
  expect(profile.sockets).toContainEqual(expect.objectContaining({ family: 'inet', protocol: 'tcp', localAddress: '127.0.0.1', localPort: site.port, listening: true }));
  // The master runs as root; its workers dropped to www-data.
  const master = profile.processes.find((p) => p.executable === NGINX);
  expect(master?.uid).toBe(0);
  const workers = profile.processes.filter((p) => p.ppid === master?.pid);
  expect(workers.length).toBeGreaterThan(0);
  for (const w of workers) expect(w.uid, `worker ${w.pid}`).toBe(wwwDataUid());
  expect(profile.start?.groups).toBeInstanceOf(Array);
  expect(profile.start?.umask).toBe(Number.parseInt(/^Umask:\s*([0-7]+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '', 8));
}
