/** Property tests of the planner: invariants that must hold for any profile. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CLASS_OF_KIND, planMigration, ResourceProfileSchema, safeParseProfile, type ResourceProfileInput, type ResourceKind } from '../../src/index.js';
import { FREEBSD_10, FREEBSD_11, FREEBSD_92, LINUX } from './profiles.js';

const platformArb = fc.constantFrom(FREEBSD_92, FREEBSD_10, FREEBSD_11, LINUX);
const fileArb = fc.record({
  // Components never "." or "..": such paths are refused (safe-input.ts), not what these properties are about.
  path: fc.stringMatching(/^\/[a-z]{1,6}(\/[a-z0-9][a-z0-9.]{0,7}){0,3}$/),
  kind: fc.constantFrom('regular', 'directory', 'fifo', 'device', 'symlink'),
  access: fc.subarray(['read', 'write', 'exec'] as const, { minLength: 1 }),
  size: fc.nat({ max: 10_000_000_000 }),
  sharedLibrary: fc.boolean(),
  created: fc.boolean(),
});
const socketArb = fc.record({
  family: fc.constantFrom('inet', 'inet6', 'unix-path', 'unix-abstract'),
  protocol: fc.constantFrom('tcp', 'udp', 'stream'),
  localPort: fc.integer({ min: 1, max: 65535 }),
  listening: fc.boolean(),
});
const ipcArb = fc.record({
  kind: fc.constantFrom('sysv-shm', 'sysv-sem', 'sysv-msg', 'posix-mq', 'posix-shm'),
  key: fc.integer({ min: 1, max: 0x7fffffff }),
});
const profileArb = fc.record({
  executable: fc.constant('/usr/bin/app'),
  executableSize: fc.nat({ max: 100_000_000 }),
  argv: fc.constant(['app']),
  cwd: fc.constant('/'),
  uid: fc.nat({ max: 65535 }),
  gid: fc.nat({ max: 65535 }),
  platform: platformArb,
  files: fc.array(fileArb, { maxLength: 20 }),
  sockets: fc.array(socketArb, { maxLength: 3 }),
  ipc: fc.array(ipcArb, { maxLength: 3 }),
}) as fc.Arbitrary<ResourceProfileInput>;

const WEIGHT: Record<string, number> = { chroot: 1, 'freebsd-jail': 2, 'linux-namespaces': 2, 'esxi-vm': 3 };

describe('planner properties', () => {
  it('the chosen method isolates every kind the program uses', () => {
    fc.assert(
      fc.property(profileArb, (profile) => {
        const plan = planMigration(profile)._unsafeUnwrap();
        const chosen = plan.candidates.find((c) => c.method === plan.chosen)!;
        for (const kind of plan.kinds) expect(chosen.isolates).toContain(kind);
        expect(chosen.allowed).toBe(true);
      }),
    );
  });

  it('adding a resource class never picks a lighter method', () => {
    const extraArb = fc.oneof(
      socketArb.map((s) => ({ sockets: [{ ...s, family: 'inet' as const }] })),
      ipcArb.map((i) => ({ ipc: [{ ...i, kind: 'sysv-shm' as const }] })),
    );
    fc.assert(
      fc.property(profileArb, extraArb, (profile, extra) => {
        const before = planMigration(profile)._unsafeUnwrap();
        const more: ResourceProfileInput = {
          ...profile,
          sockets: [...(profile.sockets ?? []), ...('sockets' in extra ? extra.sockets : [])],
          ipc: [...(profile.ipc ?? []), ...('ipc' in extra ? extra.ipc : [])],
        };
        const after = planMigration(more)._unsafeUnwrap();
        expect(WEIGHT[after.chosen]!).toBeGreaterThanOrEqual(WEIGHT[before.chosen]!);
        const cost = (p: typeof before) => p.candidates.find((c) => c.method === p.chosen)!.estimate.totalBytes;
        expect(cost(after)).toBeGreaterThanOrEqual(cost(before));
      }),
    );
  });

  it('estimates are monotone in file sizes', () => {
    fc.assert(
      fc.property(profileArb, fc.nat({ max: 19 }), fc.nat({ max: 1_000_000_000 }), (profile, index, growth) => {
        const files = profile.files ?? [];
        fc.pre(files.length > 0);
        const i = index % files.length;
        const grown = { ...profile, files: files.map((f, j) => (j === i ? { ...f, size: f.size + growth } : f)) };
        const a = planMigration(profile)._unsafeUnwrap();
        const b = planMigration(grown)._unsafeUnwrap();
        for (const ca of a.candidates) {
          const cb = b.candidates.find((c) => c.method === ca.method)!;
          expect(cb.estimate.totalBytes).toBeGreaterThanOrEqual(ca.estimate.totalBytes);
        }
      }),
    );
  });

  it('planning is deterministic, whatever the order of uses', () => {
    fc.assert(
      fc.property(profileArb, (profile) => {
        const reversed = {
          ...profile,
          files: [...(profile.files ?? [])].reverse(),
          sockets: [...(profile.sockets ?? [])].reverse(),
          ipc: [...(profile.ipc ?? [])].reverse(),
        };
        const a = planMigration(profile)._unsafeUnwrap();
        expect(planMigration(profile)._unsafeUnwrap()).toEqual(a);
        const b = planMigration(reversed)._unsafeUnwrap();
        expect(b.chosen).toBe(a.chosen);
        expect(b.classes).toEqual(a.classes);
        expect(b.candidates.map((c) => [c.method, c.allowed, c.estimate.totalBytes])).toEqual(
          a.candidates.map((c) => [c.method, c.allowed, c.estimate.totalBytes]),
        );
      }),
    );
  });

  it('classes are exactly the classes of the kinds', () => {
    fc.assert(
      fc.property(profileArb, (profile) => {
        const plan = planMigration(profile)._unsafeUnwrap();
        expect(plan.classes).toEqual(['file', 'network', 'ipc'].filter((c) => plan.kinds.some((k: ResourceKind) => CLASS_OF_KIND[k] === c)));
      }),
    );
  });
});

describe('the fast profile validator', () => {
  it('agrees with ResourceProfileSchema on valid and invalid profiles', () => {
    const mangle = fc.oneof(
      fc.constant((p: Record<string, unknown>) => p),
      fc.constant((p: Record<string, unknown>) => ({ ...p, files: [...((p.files as unknown[]) ?? []), { path: 'relative', kind: 'regular', access: ['read'], size: 1 }] })),
      fc.constant((p: Record<string, unknown>) => ({ ...p, files: [...((p.files as unknown[]) ?? []), { path: '/x', kind: 'regular', access: [], size: 1 }] })),
      fc.constant((p: Record<string, unknown>) => ({ ...p, files: [...((p.files as unknown[]) ?? []), { path: '/x', kind: 'regular', access: ['read'], size: -1, extra: 1 }] })),
      fc.constant((p: Record<string, unknown>) => ({ ...p, files: [...((p.files as unknown[]) ?? []), { path: '/x', kind: 'pipe', access: ['read'], size: 1 }] })),
      fc.constant((p: Record<string, unknown>) => ({ ...p, files: [...((p.files as unknown[]) ?? []), { path: '/x', kind: 'regular', access: ['read'], size: 1, extra: true }] })),
      fc.constant((p: Record<string, unknown>) => ({ ...p, uid: -1 })),
    );
    fc.assert(
      fc.property(profileArb, mangle, (profile, change) => {
        const input = change(profile as Record<string, unknown>);
        const fast = safeParseProfile(input);
        const slow = ResourceProfileSchema.safeParse(input);
        expect(fast.success).toBe(slow.success);
        if (fast.success && slow.success) expect(fast.data).toEqual(slow.data);
        if (!fast.success && !slow.success) expect(fast.error.issues.map((i) => i.path)).toEqual(slow.error.issues.map((i) => i.path));
      }),
    );
  });
});
