/**
 * The CLI prints bytes before and after compression (issue 13): `plan --compress` ranks and
 * prints both estimates; `migrate --compress zstd` prints the estimate and the bytes on the wire
 * against the bundle's, per round too. src/cli/main.ts is bundled once with esbuild (as
 * test/cli does) and run as a child process.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResourceProfileInput } from '../../src/policy/profile.js';
import { startNotesd, type NotesdSource } from '../helpers/notesd.js';
import { skipUnless } from '../helpers/requirements.js';

const cliDir = resolve(`test/.build/wire-cli-${process.pid}-${randomBytes(3).toString('hex')}`);
const cliPath = join(cliDir, 'main.mjs');
const work = join(tmpdir(), `apm-wire-cli-${process.pid}-${randomBytes(3).toString('hex')}`);
const MiB = 1024 * 1024;

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, reject) => {
    // The bundle lives under test/.build: point it at the built receiver.
    const env = { ...process.env, AP_MIGRATE_RECEIVER: resolve('dist/receiver.cjs') };
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  mkdirSync(work, { recursive: true });
  await build({ entryPoints: ['src/cli/main.ts'], outfile: cliPath, bundle: true, platform: 'node', format: 'esm', packages: 'external', target: 'node20', logLevel: 'warning' });
});

afterAll(() => {
  rmSync(cliDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe('plan --compress', () => {
  const profile: ResourceProfileInput = {
    executable: '/usr/local/bin/app',
    executableSize: MiB,
    argv: ['app'],
    cwd: '/',
    uid: 1001,
    gid: 1001,
    platform: { os: 'linux', release: '6.1.0', arch: 'x86_64' },
    files: [
      { path: '/srv/app/site/index.html', kind: 'regular', access: ['read'], size: 10 * MiB },
      { path: '/srv/app/photo.jpg', kind: 'regular', access: ['read'], size: 20 * MiB },
    ],
  };

  it('prints the estimate before and after compression and the ratios; --json carries wireBytes', async () => {
    const path = join(work, 'profile.json');
    writeFileSync(path, JSON.stringify(profile));
    const table = await runCli(['plan', path, '--compress', 'zstd', '--ratio', 'text=0.2']);
    expect(table.stderr).toBe('');
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/estimate\s+on the wire \(zstd-1\)/);
    // 1 MiB of machine code at 0.532, 10 MiB of text at the measured 0.2, 20 MiB of JPEG at 1.
    expect(table.stdout).toMatch(/\*\s+chroot\s+yes\s+file\s+31\.0 MB\s+22\.5 MB/);
    expect(table.stdout).toContain('compression: zstd level 1, ratios text 0.2 (measured), machine-code 0.532, compressed 1, other 0.558');
    const json = await runCli(['plan', path, '--json', '--compress', 'gzip', '--ratio', '0.5']);
    const plan = JSON.parse(json.stdout) as { compression: { codec: string }; candidates: Array<{ method: string; estimate: { totalBytes: number; wireBytes: number } }> };
    expect(plan.compression.codec).toBe('gzip');
    const chroot = plan.candidates.find((c) => c.method === 'chroot')!;
    expect(chroot.estimate.wireBytes).toBe(Math.round(11 * MiB * 0.5) + 20 * MiB);
    const plain = await runCli(['plan', path]);
    expect(plain.stdout).not.toContain('on the wire');
  });

  it('--ratio without --compress, or a bad class, is bad usage (exit 2); a bad ratio is INVALID_INPUT (exit 1)', async () => {
    const path = join(work, 'profile.json');
    writeFileSync(path, JSON.stringify(profile));
    expect((await runCli(['plan', path, '--ratio', '0.3'])).code).toBe(2);
    const cls = await runCli(['plan', path, '--compress', 'zstd', '--ratio', 'texts=0.3']);
    expect(cls.code).toBe(2);
    expect(cls.stderr).toContain('CLASS is one of text, machine-code, compressed, other');
    const zero = await runCli(['plan', path, '--compress', 'zstd', '--ratio', '0']);
    expect(zero.code).toBe(1);
    expect(zero.stderr).toContain('compression.ratio');
  });
});

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:zstd'))('migrate --compress zstd', () => {
  let source: NotesdSource;
  let destinationPid: number | undefined;

  afterAll(() => {
    if (destinationPid) {
      try {
        process.kill(destinationPid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    source?.stop();
    if (source) rmSync(source.base, { recursive: true, force: true });
  });

  it('prints the estimate and the bytes on the wire against the bundle, and each round with both', async () => {
    source = startNotesd('cli');
    const text = join(source.dataDir, 'copying.txt');
    writeFileSync(text, readFileSync('/usr/share/common-licenses/GPL-3').toString().repeat(20));
    const profile = { ...source.profile, files: [...(source.profile.files ?? []), { path: text, kind: 'regular' as const, access: ['read' as const], size: statSync(text).size }] };
    const profilePath = join(work, 'notesd.json');
    writeFileSync(profilePath, JSON.stringify(profile));
    const run = await runCli(['migrate', '--to', join(work, 'dst'), '--profile', profilePath, '--pid', String(source.process.pid), '--allow-root', '--compress', 'zstd', '--name', 'notesd-cli']);
    expect(run.stderr).not.toContain('error [');
    expect(run.code).toBe(0);
    destinationPid = Number(/destination: \S+ pid (\d+)/.exec(run.stdout)?.[1]);
    expect(run.stdout).toMatch(/estimate\s+on the wire \(zstd-1\)/);
    const line = /compression zstd level 1: estimated [\d.]+ [KM]?B on the wire, ([\d.]+ [KM]?B) on the wire for ([\d.]+ [KM]?B) of bundle \(ratio (0\.\d+)\)/.exec(run.stdout);
    expect(line, run.stdout).not.toBeNull();
    expect(Number(line![3])).toBeLessThan(0.5);
    expect(run.stdout).toMatch(/round full: \d+ bytes sent \(\d+ on the wire\)/);
    console.log(run.stdout.split('\n').filter((l) => l.startsWith('compression') || l.startsWith('round')).join('\n'));
  }, 90_000);
});
