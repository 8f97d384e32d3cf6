import { describe, expect, it } from 'vitest';
import {
  BUILTIN_METHODS,
  classifyProfile,
  defineIsolationMethod,
  formatPlan,
  InvalidInputError,
  NoAllowedMethodError,
  planMigration,
  ResourceProfileSchema,
  UnknownMethodError,
  MB,
} from '../../src/index.js';
import { filesOnly, FREEBSD_10, FREEBSD_11, FREEBSD_92, LINUX, withNetwork, withSysvIpc } from './profiles.js';

describe('classification rules', () => {
  const base = filesOnly(LINUX);
  const classesOf = (extra: object) => classifyProfile(ResourceProfileSchema.parse({ ...base, ...extra })).classes;

  it('a path-bound unix socket is a file-system object', () => {
    expect(classesOf({ sockets: [{ family: 'unix-path', protocol: 'stream', path: '/run/app.sock', listening: true }] })).toEqual(['file']);
  });
  it('an abstract unix socket is network', () => {
    expect(classesOf({ sockets: [{ family: 'unix-abstract', protocol: 'stream', path: 'app' }] })).toEqual(['file', 'network']);
  });
  it('POSIX shm is a file on Linux (it lives in /dev/shm) but IPC on FreeBSD', () => {
    expect(classesOf({ ipc: [{ kind: 'posix-shm', name: '/seg' }] })).toEqual(['file']);
    const bsd = ResourceProfileSchema.parse({ ...filesOnly(FREEBSD_11), ipc: [{ kind: 'posix-shm', name: '/seg' }] });
    expect(classifyProfile(bsd).kinds).toEqual(['file', 'posix-shm']);
  });
  it('POSIX message queues are IPC', () => {
    expect(classesOf({ ipc: [{ kind: 'posix-mq', name: '/q' }] })).toEqual(['file', 'ipc']);
  });
  it('evidence names the rule and counts uses', () => {
    const c = classifyProfile(ResourceProfileSchema.parse(withSysvIpc(LINUX)));
    const shm = c.evidence.find((e) => e.kind === 'sysv-shm')!;
    expect(shm).toMatchObject({ resourceClass: 'ipc', rule: 'sysv-ipc', count: 1 });
    expect(shm.example).toBe('SysV shared memory key 0x00001234');
    expect(c.evidence.find((e) => e.kind === 'file')!.count).toBe(5); // binary + 4 files
  });
});

describe('planMigration', () => {
  it('explains why chroot and jail are refused for SysV IPC on FreeBSD 9.2', () => {
    const plan = planMigration(withSysvIpc())._unsafeUnwrap();
    expect(plan.chosen).toBe('esxi-vm');
    const chroot = plan.candidates.find((c) => c.method === 'chroot')!;
    const blocker = chroot.concerns.find((c) => c.id === 'not-isolated:sysv-shm')!;
    expect(blocker.severity).toBe('blocker');
    expect(blocker.message).toContain('uses SysV shared memory (key 0x00001234)');
    expect(blocker.message).toContain('FreeBSD 9.2-RELEASE');
    // The first jail row that isolates SysV IPC names the range (11.x does too: see the 11.x test below).
    expect(blocker.fix).toContain('freebsd-jail 12.0+ with jail param sysvshm=new');
    expect(blocker.fix).toContain('esxi-vm');
    const jail = plan.candidates.find((c) => c.method === 'freebsd-jail')!;
    expect(jail.concerns.map((c) => c.id)).toContain('not-isolated:sysv-sem');
    expect(jail.concerns.map((c) => c.id)).not.toContain('not-isolated:network');
  });

  it('a FreeBSD 11+ jail isolates SysV IPC, with a warning about the jail parameters', () => {
    const plan = planMigration(withSysvIpc(FREEBSD_11))._unsafeUnwrap();
    expect(plan.chosen).toBe('freebsd-jail');
    const jail = plan.candidates[0]!;
    expect(jail.concerns.find((c) => c.id === 'requires-host-config')!.message).toContain('sysvshm=new');
  });

  it('a FreeBSD 10.x jail does not isolate SysV IPC', () => {
    const plan = planMigration(withSysvIpc(FREEBSD_10))._unsafeUnwrap();
    expect(plan.chosen).toBe('esxi-vm');
  });

  describe('POSIX IPC in a FreeBSD jail (docs/decisions/0016-jail-posix-shm.md)', () => {
    const onFreeBsd = (release: string, ipc: object[]) =>
      ResourceProfileSchema.parse({ ...withNetwork({ os: 'freebsd', release, arch: 'amd64' }), ipc });
    const shm = [{ kind: 'posix-shm', name: '/PostgreSQL.1804289383', size: 1 << 20 }];
    const jailOf = (plan: ReturnType<typeof planMigration>) => plan._unsafeUnwrap().candidates.find((c) => c.method === 'freebsd-jail')!;
    const blockerIds = (plan: ReturnType<typeof planMigration>) => jailOf(plan).concerns.filter((c) => c.severity === 'blocker').map((c) => c.id);

    for (const release of ['12.0-RELEASE', '13.2-RELEASE', '14.1-RELEASE-p5']) {
      it(`FreeBSD ${release}: a jail isolates POSIX shared memory (names prefixed with the jail's path), no jail parameter needed for it`, () => {
        const plan = planMigration(onFreeBsd(release, shm), { destination: { platform: { os: 'freebsd', release, arch: 'amd64' } } });
        expect(plan._unsafeUnwrap().kinds).toEqual(['file', 'network', 'posix-shm']);
        expect(blockerIds(plan)).toEqual([]);
        expect(plan._unsafeUnwrap().chosen).toBe('freebsd-jail');
        expect(jailOf(plan).capability!.minRelease).toBe('12.0');
      });
    }

    for (const release of ['9.2-RELEASE', '10.4-RELEASE', '11.4-RELEASE-p3']) {
      it(`FreeBSD ${release}: POSIX shared memory is not counted as isolated, the plan is esxi-vm and the fix names 12.0+`, () => {
        const plan = planMigration(onFreeBsd(release, shm), { destination: { platform: { os: 'freebsd', release, arch: 'amd64' } } });
        expect(plan._unsafeUnwrap().chosen).toBe('esxi-vm');
        expect(blockerIds(plan)).toEqual(['not-isolated:posix-shm']);
        const blocker = jailOf(plan).concerns.find((c) => c.id === 'not-isolated:posix-shm')!;
        expect(blocker.fix).toContain('freebsd-jail 12.0+');
      });
    }

    it('SysV IPC still needs only 11.0 (the 11.x row), with the jail parameters', () => {
      const plan = planMigration(withSysvIpc(FREEBSD_11))._unsafeUnwrap();
      const jail = plan.candidates.find((c) => c.method === 'freebsd-jail')!;
      expect(jail.capability).toMatchObject({ minRelease: '11.0', belowRelease: '12.0' });
      expect(jail.allowed).toBe(true);
    });

    it('POSIX message queues stay not isolated in the data, even on 14.x (held back, see decision 0016)', () => {
      const release = '14.1-RELEASE';
      const plan = planMigration(onFreeBsd(release, [{ kind: 'posix-mq', name: '/q' }]), { destination: { platform: { os: 'freebsd', release, arch: 'amd64' } } });
      expect(blockerIds(plan)).toEqual(['not-isolated:posix-mq']);
      expect(plan._unsafeUnwrap().chosen).toBe('esxi-vm');
    });

    it('the jail rows do not overlap: every release has exactly one row', async () => {
      const { FREEBSD_JAIL, parseRelease, compareReleases } = await import('../../src/policy/methods.js');
      for (const release of ['4.0', '9.2', '10.4', '11.0', '11.4', '12.0', '12.4', '13.2', '14.1', '15.0']) {
        const v = parseRelease(release)!;
        const matching = FREEBSD_JAIL.capabilities.filter(
          (r) =>
            (r.minRelease === undefined || compareReleases(v, parseRelease(r.minRelease)!) >= 0) &&
            (r.belowRelease === undefined || compareReleases(v, parseRelease(r.belowRelease)!) < 0),
        );
        expect(matching, release).toHaveLength(1);
      }
    });
  });

  it('on Linux, namespaces beat a VM for a program using SysV IPC', () => {
    const plan = planMigration(withSysvIpc(LINUX))._unsafeUnwrap();
    expect(plan.chosen).toBe('linux-namespaces');
    expect(plan.candidates.map((c) => c.method)).toEqual(['linux-namespaces', 'esxi-vm', 'chroot', 'freebsd-jail']);
    expect(plan.candidates.find((c) => c.method === 'freebsd-jail')!.concerns[0]!.id).toBe('platform-unsupported');
  });

  it('forcing chroot for a network program is refused with the concern', () => {
    const result = planMigration(withNetwork(LINUX), { allowedMethods: ['chroot'] });
    const error = result._unsafeUnwrapErr();
    expect(error).toBeInstanceOf(NoAllowedMethodError);
    expect(error.code).toBe('NO_ALLOWED_METHOD');
    expect(error.message).toContain('does not isolate network sockets');
    expect(error.message).toContain('tcp 0.0.0.0:8080 (listening)');
  });

  it('forbidden methods are rejected and the next cheapest is chosen', () => {
    const plan = planMigration(filesOnly(), { forbiddenMethods: ['chroot'] })._unsafeUnwrap();
    expect(plan.chosen).toBe('freebsd-jail');
    expect(plan.candidates.find((c) => c.method === 'chroot')!.concerns.map((c) => c.id)).toEqual(['forbidden-by-options']);
  });

  it('a destination with a base userland makes the jail send no base', () => {
    const plan = planMigration(withNetwork(), { destination: { provides: ['freebsd-base-userland'] } })._unsafeUnwrap();
    const jail = plan.candidates.find((c) => c.method === 'freebsd-jail')!;
    expect(jail.estimate.items.map((i) => i.label)).not.toContain('base userland');
    expect(jail.estimate.measured).toBe(true);
  });

  it('measured sizes replace defaults and say so', () => {
    const plan = planMigration(withSysvIpc(), { sizes: { 'vm-image': 3000 * MB } })._unsafeUnwrap();
    const vm = plan.candidates.find((c) => c.method === 'esxi-vm')!;
    expect(vm.estimate.totalBytes).toBe(3000 * MB);
    expect(vm.estimate.items).toEqual([{ label: 'VM image', bytes: 3000 * MB, source: 'measured', basis: 'sizes["vm-image"]' }]);
    expect(vm.concerns.map((c) => c.id)).not.toContain('estimate-default');
    const defaults = planMigration(withSysvIpc())._unsafeUnwrap().candidates.find((c) => c.method === 'esxi-vm')!;
    expect(defaults.estimate.measured).toBe(false);
    expect(defaults.concerns.find((c) => c.id === 'estimate-default')!.message).toContain('2098 MB');
  });

  it('a program moved to another OS needs a VM', () => {
    const plan = planMigration(filesOnly(FREEBSD_92), { destination: { platform: LINUX } })._unsafeUnwrap();
    expect(plan.chosen).toBe('esxi-vm');
    expect(plan.candidates.find((c) => c.method === 'chroot')!.concerns.map((c) => c.id)).toContain('os-mismatch');
  });

  it('amd64 and x86_64 are the same architecture; aarch64 is not', () => {
    expect(planMigration(filesOnly(LINUX), { destination: { platform: { ...LINUX, arch: 'amd64' } } })._unsafeUnwrap().chosen).toBe('chroot');
    const arm = planMigration(filesOnly(LINUX), { destination: { platform: { ...LINUX, arch: 'aarch64' } } })._unsafeUnwrap();
    expect(arm.candidates.find((c) => c.method === 'chroot')!.concerns.map((c) => c.id)).toContain('arch-mismatch');
  });

  it('users add their own methods without touching the core', () => {
    const docker = defineIsolationMethod({
      id: 'docker',
      name: 'Docker container',
      weight: 2,
      capabilities: [{ os: 'linux', isolates: ['file', 'network', 'sysv-shm', 'sysv-sem', 'sysv-msg', 'posix-mq', 'posix-shm'] }],
      transfers: [
        { type: 'program-and-files' },
        { type: 'fixed', label: 'image layers', sizeKey: 'docker-base', defaultBytes: 80 * MB, defaultSource: 'debian:slim' },
      ],
    })._unsafeUnwrap();
    const plan = planMigration(withSysvIpc(LINUX), { methods: [...BUILTIN_METHODS, docker], forbiddenMethods: ['linux-namespaces'] })._unsafeUnwrap();
    expect(plan.chosen).toBe('docker');
    expect(defineIsolationMethod({ id: 'Bad Id', name: 'x', weight: 1, capabilities: [], transfers: [] })._unsafeUnwrapErr().issues.map((i) => i.path)).toEqual(
      expect.arrayContaining(['id', 'capabilities', 'transfers']),
    );
  });

  it('renders a readable table', () => {
    const text = formatPlan(planMigration(withSysvIpc())._unsafeUnwrap());
    expect(text).toMatch(/\* +esxi-vm +yes/);
    expect(text).toContain('chroot [blocker]');
    expect(text).toContain('chosen: esxi-vm');
  });
});

describe('invalid input is a typed error naming the field, never a throw', () => {
  it('bad JSON', () => {
    const e = planMigration('{not json')._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(InvalidInputError);
    expect(e.message).toContain('not valid JSON');
  });
  it('a negative file size names the field', () => {
    const p = filesOnly();
    p.files![1] = { ...p.files![1]!, size: -5 };
    const e = planMigration(p)._unsafeUnwrapErr() as InvalidInputError;
    expect(e.code).toBe('INVALID_INPUT');
    expect(e.issues[0]!.path).toBe('files.1.size');
    expect(e.message).toContain('files.1.size');
  });
  it('a relative path, a missing platform', () => {
    const e = planMigration({ ...filesOnly(), executable: 'app', platform: undefined })._unsafeUnwrapErr() as InvalidInputError;
    expect(e.issues.map((i) => i.path).sort()).toEqual(['executable', 'platform']);
  });
  it('negative size override', () => {
    const e = planMigration(filesOnly(), { sizes: { 'vm-image': -1 } })._unsafeUnwrapErr() as InvalidInputError;
    expect(e.issues[0]!.path).toBe('sizes.vm-image');
  });
  it('unknown method', () => {
    const e = planMigration(filesOnly(), { allowedMethods: ['kvm'] })._unsafeUnwrapErr();
    expect(e).toBeInstanceOf(UnknownMethodError);
    expect(e.message).toContain('chroot, freebsd-jail, linux-namespaces, esxi-vm');
  });
  it('null, numbers, arrays', () => {
    for (const bad of [null, 42, [], undefined]) expect(planMigration(bad).isErr()).toBe(true);
  });
  it('profiles survive a JSON round trip unchanged', () => {
    const parsed = ResourceProfileSchema.parse(withSysvIpc());
    expect(ResourceProfileSchema.parse(JSON.parse(JSON.stringify(parsed)))).toEqual(parsed);
    expect(planMigration(JSON.stringify(parsed))._unsafeUnwrap()).toEqual(planMigration(parsed)._unsafeUnwrap());
  });
});

describe('the VM hosting the program', () => {
  it('when known not to exist, VM methods are ruled out with a concern', () => {
    const plan = planMigration(withNetwork(), { hostingVm: false })._unsafeUnwrap();
    const vm = plan.candidates.find((c) => c.method === 'esxi-vm')!;
    expect(vm.allowed).toBe(false);
    expect(vm.concerns.find((c) => c.id === 'vm-unknown')!.message).toContain('no such VM was named');
    expect(planMigration(withSysvIpc(), { hostingVm: false })._unsafeUnwrapErr().code).toBe('NO_ALLOWED_METHOD');
  });
  it('when named with its measured size, the estimate is that size, marked measured', () => {
    const plan = planMigration(withSysvIpc(), { hostingVm: { name: 'bsd92', sizeBytes: 1234 * MB } })._unsafeUnwrap();
    const vm = plan.candidates.find((c) => c.method === 'esxi-vm')!;
    expect(vm.estimate).toMatchObject({ totalBytes: 1234 * MB, measured: true });
  });
});
