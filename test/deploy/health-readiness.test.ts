/**
 * The health check waits for readiness, not just a listening port (decision 0015): a real
 * profile of a fixture daemon (procfs profiler), then copies of it started the way a destination
 * would see them, checked with healthCheckCommon over the local transport.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProcfsProfiler } from '../../src/index.js';
import { healthCheckCommon, maskTitle, readinessRoles } from '../../src/destination/health.js';
import type { MigrationPlan } from '../../src/policy/plan.js';
import type { ResourceProfile } from '../../src/policy/profile.js';
import type { DeployContext, StartedProgram } from '../../src/spec/deployer.js';
import { createLocalTransport } from '../../src/transports/local.js';
import { skipUnless } from '../helpers/requirements.js';
import { freePort } from '../fixtures/health-free-port.js';

const FIXTURE = join(__dirname, '..', 'fixtures', 'health-workers.cjs');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || gone(child.pid)) return;
  child.kill('SIGTERM');
  for (let i = 0; i < 50 && !gone(child.pid); i++) await sleep(50);
}

describe('maskTitle and readinessRoles', () => {
  it('masks every number-bearing word, keeps the rest', () => {
    expect(maskTitle('  srv: worker 12  of 0x1f ')).toBe('srv: worker # of #');
    expect(maskTitle('srv: startup recovering 00000001000000000000000A')).toBe('srv: startup recovering #');
  });

  it('one role per distinct title; the top process, its own argv and per-connection handlers are left out', () => {
    const profile = {
      argv: ['/usr/sbin/srv', '-D', '/data'],
      sockets: [{ family: 'inet', protocol: 'tcp', localPort: 7000, remoteAddress: '10.1.2.3', remotePort: 40000, listening: false }],
      processes: [
        { pid: 10, ppid: 1, argv: ['/usr/sbin/srv', '-D', '/data'] },
        { pid: 11, ppid: 10, argv: ['srv: worker 1'] },
        { pid: 12, ppid: 10, argv: ['srv: worker 2'] },
        { pid: 13, ppid: 10, argv: ['srv: flusher'] },
        { pid: 14, ppid: 10, argv: ['srv: alice db 192.168.0.7(5123) idle'] },
        { pid: 15, ppid: 10, argv: ['srv: conn [::1]:40122'] },
        { pid: 16, ppid: 10, argv: ['srv: serving 10.1.2.3'] },
        { pid: 17, ppid: 10, argv: ['/usr/sbin/srv', '-D', '/data'] }, // a fork that kept the argv
        { pid: 18, ppid: 10 }, // no argv recorded (a tracer that saw only the fork)
        { pid: 19, ppid: 10, argv: ['srv: rotated at 12:30:45'] }, // a time is no address
      ],
    } as unknown as ResourceProfile;
    expect(readinessRoles(profile)).toEqual(['srv: flusher', 'srv: rotated at #:#:#', 'srv: worker #']);
  });
});

describe.skipIf(skipUnless('root', 'tool:awk', 'tool:setsid'))('health check readiness: a daemon whose workers start after it listens', () => {
  const tmp = mkdtempSync('/tmp/aphealth-fixture-');
  const transport = createLocalTransport({ root: tmp });
  let port = 0;
  let profile: ResourceProfile;
  const running: ChildProcess[] = [];

  const daemon = (workers: number, delayMs: number, manager = true): ChildProcess => {
    const child = spawn(process.execPath, [FIXTURE, String(port), String(workers), String(delayMs), manager ? 'yes' : 'no'], { detached: true, stdio: 'ignore' });
    running.push(child);
    return child;
  };
  const context = (p: ResourceProfile): DeployContext => ({ transport, profile: p, plan: {} as MigrationPlan, name: 'health-fixture' });
  const check = async (p: ResourceProfile, child: ChildProcess, options: Parameters<typeof healthCheckCommon>[2] = {}) => {
    const started: StartedProgram = { pid: child.pid!, logPath: join(tmp, 'program.log'), endpoints: [] };
    const t0 = performance.now();
    const result = await healthCheckCommon(context(p), started, { timeoutMs: 8000, ...options });
    return { result, ms: performance.now() - t0, outcome: result.isOk() ? result.value : undefined };
  };

  beforeAll(async () => {
    port = await freePort();
    const source = daemon(3, 0);
    await sleep(700); // listening, with its manager and three workers
    const profiled = await createProcfsProfiler().profile({ pid: source.pid! }, { durationMs: 600 });
    if (profiled.isErr()) throw profiled.error;
    profile = profiled.value;
    await stop(source);
  }, 20_000);

  afterAll(async () => {
    for (const child of running) await stop(child);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('the profile holds the source tree with its roles', () => {
    expect(readinessRoles(profile)).toEqual([`health-workers: manager ${maskTitle(FIXTURE)} role`, `health-workers: worker # ${maskTitle(FIXTURE)} role #`]);
  });

  it('is not healthy before the workers start, and healthy soon after', async () => {
    const child = daemon(3, 1500);
    const { result, ms, outcome } = await check(profile, child);
    await stop(child);
    expect(result.isOk()).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(1500);
    expect(ms).toBeLessThan(4000);
    expect(outcome).toEqual({ readiness: 'roles', missingRoles: [], warnings: [] });
  });

  it('without the source tree (the rule before) it passes while the workers are not there yet', async () => {
    const child = daemon(3, 1500);
    const { result, ms, outcome } = await check({ ...profile, processes: [] }, child);
    await stop(child);
    expect(result.isOk()).toBe(true);
    expect(ms).toBeLessThan(1200);
    expect(outcome?.readiness).toBe('listening');
  });

  it('passes with another worker count (one, where the source had three)', async () => {
    const child = daemon(1, 0);
    const { result, ms, outcome } = await check(profile, child);
    await stop(child);
    expect(result.isOk()).toBe(true);
    expect(ms).toBeLessThan(3000); // node starts each worker in a few hundred ms here
    expect(outcome?.readiness).toBe('roles');
  });

  it('a role that never comes back does not fail the check: it passes after the quiet time, with a warning', async () => {
    const child = daemon(2, 0, false);
    const { result, ms, outcome } = await check(profile, child, { quietMs: 1000 });
    await stop(child);
    expect(result.isOk()).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(1000);
    expect(ms).toBeLessThan(5000); // listening, the workers, then 1 s without change
    expect(outcome?.readiness).toBe('quiet');
    expect(outcome?.missingRoles).toEqual([`health-workers: manager ${maskTitle(FIXTURE)} role`]);
    expect(outcome?.warnings[0]).toContain('never appeared');
  });

  it('a role the source lacked holds the quiet pass back until the timeout, which passes with a warning', async () => {
    // The source's profile says it had a "manager"; this destination runs without one but with an
    // extra process of the same family, as a server in recovery runs one the steady source did not.
    const extra: ResourceProfile = {
      ...profile,
      processes: profile.processes.map((p) => (p.argv?.[0] === 'health-workers: manager' ? { ...p, argv: ['health-workers: janitor', ...p.argv.slice(1)] } : p)),
    };
    const child = daemon(2, 0, true);
    const { result, ms, outcome } = await check(extra, child, { quietMs: 500, timeoutMs: 2500 });
    await stop(child);
    expect(result.isOk()).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(2400);
    expect(outcome?.readiness).toBe('timeout');
    expect(outcome?.warnings[0]).toMatch(/manager.*which the source did not.*downtime may be understated/);
  });

  it('a readiness probe decides instead of the roles: not healthy until it succeeds', async () => {
    const flag = join(tmp, 'ready');
    const child = daemon(0, 0, false);
    setTimeout(() => writeFileSync(flag, ''), 1200);
    const { result, ms, outcome } = await check(profile, child, { probe: ['test', '-e', flag] });
    expect(result.isOk()).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(1200);
    expect(outcome?.readiness).toBe('probe');
    const never = await check(profile, child, { probe: ['test', '-e', join(tmp, 'never')], timeoutMs: 800 });
    await stop(child);
    expect(never.result._unsafeUnwrapErr().code).toBe('HEALTH_CHECK_FAILED');
    expect(never.result._unsafeUnwrapErr().message).toContain('readiness probe');
  });

  it('the 300 ms a program must stay up count from its start, not from the first poll', async () => {
    // Up for a second already: healthy at the first poll, even with a check timeout shorter than
    // 300 ms. Counted from the first poll, the timeout came first and the check passed only with a warning.
    const child = spawn('sleep', ['30'], { detached: true, stdio: 'ignore' });
    running.push(child);
    await sleep(1000);
    const { result, outcome } = await check({ ...profile, processes: [], sockets: [] }, child, { timeoutMs: 200 });
    await stop(child);
    expect(result.isOk()).toBe(true);
    expect(outcome).toEqual({ readiness: 'listening', missingRoles: [], warnings: [] });
  });

  it('a program that exits still fails at once', async () => {
    const child = spawn('sh', ['-c', 'sleep 0.3'], { detached: true, stdio: 'ignore' });
    const { result } = await check(profile, child);
    expect(result._unsafeUnwrapErr().message).toContain('exited');
  });
});
