/**
 * Choosing the deployer: a plan whose method has no deployer, the destination transport a
 * deployer needs or not, options refused before any plug-in runs, and the deploy context.
 */
import { describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrate.js';
import { ApMigrateError, InvalidInputError } from '../../src/errors.js';
import { CHROOT, IsolationMethodSchema } from '../../src/policy/methods.js';
import type { Deployer } from '../../src/spec/deployer.js';
import { CallLog, createFakeDeployer, fakeMigration } from '../helpers/fake-plugins.js';

describe('NO_DEPLOYER', () => {
  it('a plan that chooses a method no deployer is registered for fails before any deployer is called', async () => {
    const method = IsolationMethodSchema.parse({ ...CHROOT, id: 'fake-chroot', name: 'fake chroot' });
    const fake = fakeMigration({ migrate: { planOptions: { methods: [method] } } });
    const result = await migrate(fake.options);
    expect(result.isErr()).toBe(true);
    const error = result._unsafeUnwrapErr();
    expect(ApMigrateError.isInstance(error)).toBe(true);
    expect(error.code).toBe('NO_DEPLOYER');
    expect(error.message).toContain('fake-chroot');
    expect((error.details.plan as { chosen: string }).chosen).toBe('fake-chroot');
    // Not the fake (registered as chroot), not its packager, not the destination transport.
    expect(fake.log.calls).toEqual([]);
  });
});

describe('the destination transport', () => {
  it("a deployer with destination 'own' needs no transport, and gets one that refuses every call", async () => {
    const fake = fakeMigration({ deployer: { destination: 'own' } });
    const { destination: _unused, ...options } = fake.options;
    const result = await migrate(options);
    expect(result.isOk()).toBe(true);
    const context = fake.log.of('preflight')[0]!.context!;
    expect(context.transport.description).toContain('no transport');
    const exec = await context.transport.exec(['true']);
    expect(exec.isErr() && exec.error.code).toBe('INVALID_INPUT');
  });

  it.each([undefined, 'transport' as const])('a deployer with destination %s and no transport is INVALID_INPUT naming destination, before any phase', async (destination) => {
    const fake = fakeMigration({ deployer: destination ? { destination } : {} });
    const { destination: _unused, ...options } = fake.options;
    const result = await migrate(options);
    expect(result.isErr()).toBe(true);
    const error = result._unsafeUnwrapErr();
    expect(InvalidInputError.isInstance(error)).toBe(true);
    expect((error as InvalidInputError).issues[0]!.path).toBe('destination');
    expect(fake.log.calls).toEqual([]);
  });
});

describe('options refused before anything runs', () => {
  it("cutover 'stop-and-copy' with a given profile and no pid is INVALID_INPUT naming cutover", async () => {
    const fake = fakeMigration({ migrate: { cutover: 'stop-and-copy' } });
    const result = await migrate(fake.options);
    expect(result.isErr()).toBe(true);
    const error = result._unsafeUnwrapErr() as InvalidInputError;
    expect(error.code).toBe('INVALID_INPUT');
    expect(error.issues[0]!.path).toBe('cutover');
    expect(fake.log.calls).toEqual([]);
  });
});

describe('the deploy context', () => {
  it('is one object for every phase of a migration, named from the executable by default', async () => {
    const fake = fakeMigration();
    const result = await migrate(fake.options);
    expect(result.isOk()).toBe(true);
    const contexts = new Set(fake.log.calls.filter((c) => c.who === 'deployer').map((c) => c.context));
    expect(contexts.size).toBe(1);
    const [context] = [...contexts];
    expect(context!.name).toBe('app');
    expect(context!.transport).toBe(fake.options.destination);
    expect(context!.plan.chosen).toBe('chroot');
    expect(result._unsafeUnwrap().name).toBe('app');
  });

  it("uses the deployer's defaultName when the caller gives no name, and the caller's name over it", async () => {
    const log = new CallLog();
    const named: Deployer<unknown, unknown> = { ...(createFakeDeployer(log) as Deployer<unknown, unknown>), defaultName: (p) => `dflt-${p.argv[0]}` };
    const fake = fakeMigration();
    const byDefault = await migrate({ ...fake.options, deployers: { chroot: named } });
    expect(byDefault._unsafeUnwrap().name).toBe('dflt-app');
    const byCaller = await migrate({ ...fake.options, deployers: { chroot: named }, name: 'given' });
    expect(byCaller._unsafeUnwrap().name).toBe('given');
    expect(log.of('preflight').map((c) => c.context!.name)).toEqual(['dflt-app', 'given']);
  });
});
