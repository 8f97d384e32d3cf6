/**
 * A full run through fakes: the order of phases (progress and report), the report's fields, a
 * dry run, a packager that measures before planning, and a deployer's `describe`.
 */
import { describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrate.js';
import type { MigrationProgress } from '../../src/migrate/types.js';
import { IsolationMethodSchema } from '../../src/policy/methods.js';
import type { DeploymentState, VmMoveSummary } from '../../src/spec/deployer.js';
import { fakeMigration, type FakeFacts } from '../helpers/fake-plugins.js';

const phasesOf = (events: MigrationProgress[]) => events.map((e) => e.phase).filter((p, i, all) => p !== all[i - 1]);

describe('a full run', () => {
  it("runs profile, plan, preflight, transfer, activate, start, health, source in that order (progress and report.phases)", async () => {
    const events: MigrationProgress[] = [];
    const fake = fakeMigration({ deployer: { chunks: ['abcd', 'efgh', 'ij'], estimateBytes: 10 }, migrate: { onProgress: (p) => events.push(p) } });
    const result = await migrate(fake.options);
    expect(result.isOk()).toBe(true);
    const report = result._unsafeUnwrap();
    // `profile` runs for a given profile too: it is where the given profile is validated.
    const expected = ['profile', 'plan', 'preflight', 'transfer', 'activate', 'start', 'health', 'source'];
    expect(phasesOf(events)).toEqual(expected);
    expect(report.phases.map((p) => p.phase)).toEqual(expected);
    expect(report.phases.every((p) => p.ms >= 0)).toBe(true);
    // Bytes while transferring, against the packager's estimate.
    const bytes = events.filter((e) => e.bytesSent !== undefined);
    expect(bytes.map((e) => e.bytesSent)).toEqual([4, 8, 10]);
    expect(bytes.every((e) => e.phase === 'transfer' && e.bytesTotal === 10)).toBe(true);
    expect(fake.log.names()).toEqual(['estimate', 'preflight', 'pack', 'receive', 'activate', 'start', 'healthCheck', 'release']);
    expect(fake.log.of('preflight')[0]!.args[0]).toBe(10); // the estimate's bytes, for the space check

    expect(report).toMatchObject({
      name: 'app',
      method: 'chroot',
      dryRun: false,
      bundleEstimatedBytes: 10,
      bytesSent: 10,
      manifestBytes: 0,
      destination: { installDir: '/srv/app', pid: 4242, endpoints: ['10.0.0.2:8080'], logPath: '/srv/app/program.log' },
      source: { action: 'none' },
      cutover: { mode: 'copy' },
    });
    expect(report.estimatedBytes).toBe(report.plan.candidates.find((c) => c.method === 'chroot')!.estimate.totalBytes);
    expect(report.totalMs).toBeGreaterThanOrEqual(0);
    expect(fake.log.of('rollback')).toEqual([]);
  });

  it('a progress callback that throws does not break the migration', async () => {
    const fake = fakeMigration({ migrate: { onProgress: () => { throw new Error('display broke'); } } });
    expect((await migrate(fake.options)).isOk()).toBe(true);
  });
});

describe('dryRun', () => {
  it('runs pre-flight and nothing after it; no rollback; report.dryRun true, bytesSent 0; release still called', async () => {
    const fake = fakeMigration({ pid: 900, migrate: { dryRun: true, cutover: 'stop-and-copy', sourcePolicy: 'stop' } });
    const result = await migrate(fake.options);
    expect(result.isOk()).toBe(true);
    expect(fake.log.names()).toEqual(['estimate', 'preflight', 'release']);
    const report = result._unsafeUnwrap();
    expect(report.dryRun).toBe(true);
    expect(report.bytesSent).toBe(0);
    expect(report.manifestBytes).toBe(0);
    expect(report.destination).toBeUndefined();
    expect(report.phases.map((p) => p.phase)).toEqual(['profile', 'plan', 'preflight']);
    expect(report.source).toEqual({ pid: 900, action: 'kept-running' });
    expect(report.cutover.frozenProcesses).toBeUndefined();
    // release gets the pre-flight report, the only state there is.
    expect(Object.keys(fake.log.of('release')[0]!.args[0] as object)).toEqual(['preflight']);
  });
});

describe('measure', () => {
  // A method whose payload is a blob sized only by measuring (like a VM image).
  const IMAGE = IsolationMethodSchema.parse({
    id: 'fake-image',
    name: 'fake image',
    weight: 1,
    capabilities: [{ os: '*', isolates: ['file', 'network'] }],
    transfers: [{ type: 'fixed', label: 'fake image', sizeKey: 'fake-image-bytes', defaultBytes: 10 * 2 ** 30, defaultSource: 'a guess' }],
  });

  it("adds a 'measure' phase before 'plan', and what it measured reaches the planner", async () => {
    const events: MigrationProgress[] = [];
    const controller = new AbortController();
    const fake = fakeMigration({
      deployer: { method: 'fake-image', measure: { sizes: { 'fake-image-bytes': 4242 } } },
      migrate: { planOptions: { methods: [IMAGE] }, onProgress: (p) => events.push(p), signal: controller.signal },
    });
    const result = await migrate(fake.options);
    expect(result.isOk()).toBe(true);
    const report = result._unsafeUnwrap();
    expect(phasesOf(events).slice(0, 4)).toEqual(['profile', 'measure', 'plan', 'preflight']);
    expect(report.phases.map((p) => p.phase).slice(0, 3)).toEqual(['profile', 'measure', 'plan']);
    expect(fake.log.names()[0]).toBe('measure');
    expect(fake.log.of('measure')[0]!.args[0]).toEqual({ executable: '/usr/local/bin/app', source: 'fake-source', signal: true });
    const candidate = report.plan.candidates.find((c) => c.method === 'fake-image')!;
    expect(candidate.estimate.totalBytes).toBe(4242);
    expect(candidate.estimate.items[0]!.source).toBe('measured');
    expect(report.estimatedBytes).toBe(4242);
    expect(report.method).toBe('fake-image');
  });

  it("measured sizes merge over the caller's planOptions.sizes", async () => {
    const fake = fakeMigration({
      deployer: { method: 'fake-image', measure: { sizes: { 'fake-image-bytes': 77 } } },
      migrate: { planOptions: { methods: [IMAGE], sizes: { 'fake-image-bytes': 99, other: 1 } } },
    });
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(report.estimatedBytes).toBe(77);
  });
});

describe('describe', () => {
  it("a deployer's describe is merged into the report, and sees the final state", async () => {
    const vm: VmMoveSummary = { name: 'vm1', destinationVmx: '[ds1] vm1/vm1.vmx', powerState: 'poweredOn', files: 3, transfer: 'datastore-copy', quiesce: 'power-off', warnings: [] };
    const fake = fakeMigration({ deployer: { destination: 'own', describe: () => ({ vm }) } });
    const { destination: _unused, ...options } = fake.options;
    const report = (await migrate(options))._unsafeUnwrap();
    expect(report.vm).toEqual(vm);
    const described = fake.log.of('describe');
    expect(described).toHaveLength(1);
    expect(Object.keys(described[0]!.args[0] as DeploymentState<FakeFacts>).sort()).toEqual(['activated', 'preflight', 'started']);
  });

  it('a dry run is described too, with the pre-flight state', async () => {
    const fake = fakeMigration({ deployer: { describe: (_c, state) => ({ vm: { name: state.preflight!.facts.token } as VmMoveSummary }) }, migrate: { dryRun: true } });
    const report = (await migrate(fake.options))._unsafeUnwrap();
    expect(report.vm?.name).toMatch(/^[0-9a-f-]{36}$/);
  });
});
