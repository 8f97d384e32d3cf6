/**
 * Thin vs thick jail bundles of the same program, against the paper's Table 2 (jail = AP +
 * resources + about 1108 MB). No FreeBSD host exists here, so the thick bundle carries this Linux
 * machine's base userland as a stand-in for FreeBSD's (/usr/bin, /usr/sbin, /usr/libexec and the
 * multiarch /usr/lib directory; on Debian 12 /bin, /sbin and /lib are links into /usr). Each
 * bundle is packed and unpacked (verified) into a temp directory in the same process: bytes sent
 * and migration time without the network.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBundleStream, estimateBundleBytes, measureTrees, unpackBundle, type ResourceProfileInput } from '../src/index.js';
import { runWhenCalledDirectly } from './report.js';

const LINUX_BASE_STAND_IN = ['/usr/bin', '/usr/sbin', '/usr/libexec', '/usr/lib/x86_64-linux-gnu'];
const MB = 1024 * 1024;

function echodProfile(): ResourceProfileInput {
  const dir = mkdtempSync(join(tmpdir(), 'apm-jb-'));
  const exe = join(dir, 'echod');
  execFileSync('gcc', ['-O2', '-o', exe, 'examples/demo/echod.c']);
  const libs = execFileSync('sh', ['-c', `ldd ${exe} | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\\//) print $i }'`]).toString().trim().split('\n');
  return {
    executable: exe,
    executableSize: statSync(exe).size,
    argv: [exe, '7000', '/etc/hostname'],
    cwd: '/',
    uid: 0,
    gid: 0,
    platform: { os: 'linux', release: '6', arch: 'x86_64' },
    files: [
      { path: '/etc/hostname', kind: 'regular', access: ['read'], size: statSync('/etc/hostname').size },
      ...libs.map((p) => ({ path: p, kind: 'regular' as const, access: ['read' as const, 'exec' as const], size: statSync(p).size, sharedLibrary: true })),
    ],
    sockets: [{ family: 'inet', protocol: 'tcp', localAddress: '0.0.0.0', localPort: 7000, listening: true }],
  };
}

async function moveOnce(profile: ResourceProfileInput, thick: boolean): Promise<{ bytes: number; estimate: number; seconds: number }> {
  const selection = { includeSharedLibraries: true, ...(thick ? { extraTrees: LINUX_BASE_STAND_IN } : {}) };
  const extraTreeBytes = thick ? (await measureTrees(LINUX_BASE_STAND_IN))._unsafeUnwrap().bytes : undefined;
  const estimate = estimateBundleBytes(profile as never, { ...selection, ...(extraTreeBytes !== undefined ? { extraTreeBytes } : {}) }).bytes;
  const staging = mkdtempSync(join(tmpdir(), 'apm-jb-dst-'));
  const start = performance.now();
  const { stream, report } = createBundleStream(profile, { ...selection, ...(extraTreeBytes !== undefined ? { extraTreeBytes } : {}) })._unsafeUnwrap();
  const [unpacked, packed] = await Promise.all([unpackBundle(stream, join(staging, 'root'), { setuid: 'allow' }), report]);
  const seconds = (performance.now() - start) / 1000;
  rmSync(staging, { recursive: true, force: true });
  if (unpacked.isErr()) throw unpacked.error;
  return { bytes: packed._unsafeUnwrap().totalBytes, estimate, seconds };
}

export async function benchJailBundles(): Promise<{ name: string; ratio: number; detail: string }[]> {
  const profile = echodProfile();
  const thin = await moveOnce(profile, false);
  const thick = await moveOnce(profile, true);
  const extraMb = (thick.bytes - thin.bytes) / MB;
  return [
    {
      name: 'jail bundle: thick / thin bytes',
      ratio: thick.bytes / thin.bytes,
      detail: `thin ${(thin.bytes / MB).toFixed(2)} MB in ${thin.seconds.toFixed(2)} s; thick ${(thick.bytes / MB).toFixed(0)} MB in ${thick.seconds.toFixed(1)} s (estimate off by ${(((thick.bytes - thick.estimate) / thick.estimate) * 100).toFixed(2)}%)`,
    },
    { name: 'thick extra vs paper (1108 MB)', ratio: extraMb / 1108, detail: `base userland stand-in adds ${extraMb.toFixed(0)} MB` },
    { name: 'jail bundle: thick / thin time', ratio: thick.seconds / thin.seconds, detail: 'pack + verified unpack, same process' },
  ];
}

runWhenCalledDirectly(import.meta.url, benchJailBundles);
