/**
 * The program's environment (which may hold secrets: tokens, passwords) reaches the program at
 * the destination but no long-lived process's command line there, where any local user reads it
 * with `ps`. The launcher reads the command after the privilege drop from a root-only file.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate, createChrootDeployer, type MigrationReport } from '../../src/index.js';
import { programArgvPath } from '../../src/destination/launch.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { skipUnless } from '../helpers/requirements.js';
import { startNotesd } from '../helpers/notesd.js';

/** Every process's command line and environment, by pid (processes that exit meanwhile are skipped). */
function processes(): { pid: number; cmdline: string; environ: string }[] {
  const out: { pid: number; cmdline: string; environ: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      out.push({ pid: Number(name), cmdline: readFileSync(`/proc/${name}/cmdline`, 'latin1'), environ: readFileSync(`/proc/${name}/environ`, 'latin1') });
    } catch {
      // gone, or a kernel thread
    }
  }
  return out;
}

describe.skipIf(skipUnless('root', 'tool:gcc', 'tool:unshare', 'tool:xargs'))('the program environment is not in any command line', () => {
  const source = startNotesd('env');
  const dst = mkdtempSync(join(tmpdir(), 'apm-env-'));
  const transport = createLocalTransport({ root: dst });
  let report: MigrationReport | undefined;

  afterAll(async () => {
    if (report?.destination) {
      await createChrootDeployer().rollback(
        { transport, profile: report.profile, plan: report.plan, name: report.name },
        { activated: { installDir: report.destination.installDir, rootDir: join(report.destination.installDir, 'root'), undo: [] }, started: { pid: report.destination.pid, logPath: '', endpoints: [] } },
      );
    }
    source.stop();
    rmSync(source.base, { recursive: true, force: true });
    rmSync(dst, { recursive: true, force: true });
  });

  it('reaches the program, stays out of every cmdline, and its file is root-only outside the root', async () => {
    const secret = `apm-secret-${randomBytes(8).toString('hex')}`;
    const profile = { ...source.profile, env: { PATH: '/usr/bin:/bin', API_TOKEN: secret } };
    const result = await migrate({ target: { profile, pid: source.process.pid! }, destination: transport, name: 'envcheck', allowRoot: true });
    if (result.isErr()) throw result.error;
    report = result.value;
    const all = processes();
    expect(all.filter((p) => p.cmdline.includes(secret)).map((p) => `${p.pid}: ${p.cmdline.replaceAll('\0', ' ')}`)).toEqual([]);
    // It is in the program's own environment (the only process that should have it).
    expect(all.some((p) => p.environ.split('\0').includes(`API_TOKEN=${secret}`))).toBe(true);
    const argvFile = programArgvPath({ transport, profile: report.profile, plan: report.plan, name: 'envcheck' });
    expect(argvFile.startsWith(join(dst, 'envcheck', 'run'))).toBe(true);
    const stats = statSync(argvFile);
    expect(stats.mode & 0o777).toBe(0o600);
    expect(stats.uid).toBe(0);
  });
});
