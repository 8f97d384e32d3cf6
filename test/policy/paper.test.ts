/**
 * The paper's rules and tables, as tests. Quoted from "Selecting the migration method for a
 * program's execution environment according to the resources it uses" (Tanimura et al.), as
 * summarised in shared/paper.md.
 */
import { describe, expect, it } from 'vitest';
import { planMigration, BUILTIN_METHODS, capabilityFor, MB, type ResourceProfileInput } from '../../src/index.js';
import { filesOnly, FREEBSD_92, withNetwork, withSysvIpc } from './profiles.js';

// Table 1: which resources each method isolates (case study on FreeBSD 9.2)
// | AP resource \ method          | chroot       | jail         | ESXi     |
// | file access                   | isolated     | isolated     | isolated |
// | network communication         | not isolated | isolated     | isolated |
// | IPC (excluding named pipes)   | not isolated | not isolated | isolated |
const TABLE_1 = {
  chroot: { file: true, network: false, ipc: false },
  'freebsd-jail': { file: true, network: true, ipc: false },
  'esxi-vm': { file: true, network: true, ipc: true },
} as const;

// IPC here is every IPC kind: SysV and POSIX (on 9.2 a jail shares both with the host).
const IPC_KINDS = ['sysv-shm', 'sysv-sem', 'sysv-msg', 'posix-mq', 'posix-shm'] as const;

function allowedMethods(profile: ResourceProfileInput): string[] {
  const plan = planMigration(profile)._unsafeUnwrap();
  return plan.candidates.filter((c) => c.allowed).map((c) => c.method).sort();
}

describe('paper, Table 1 (FreeBSD 9.2)', () => {
  for (const [id, row] of Object.entries(TABLE_1)) {
    it(`${id} isolates exactly what Table 1 says`, () => {
      const method = BUILTIN_METHODS.find((m) => m.id === id)!;
      const cap = capabilityFor(method, FREEBSD_92.os, FREEBSD_92.release)!;
      expect(cap).toBeDefined();
      expect(cap.isolates.includes('file')).toBe(row.file);
      expect(cap.isolates.includes('network')).toBe(row.network);
      for (const kind of IPC_KINDS) expect(cap.isolates.includes(kind)).toBe(row.ipc);
    });
  }

  it('Linux namespaces are not a candidate on FreeBSD', () => {
    const method = BUILTIN_METHODS.find((m) => m.id === 'linux-namespaces')!;
    expect(capabilityFor(method, 'freebsd', '9.2-RELEASE')).toBeUndefined();
  });
});

describe('paper, section 3.1 selection rules', () => {
  it('(1) files only: chroot, jail and ESXi all apply', () => {
    expect(allowedMethods(filesOnly())).toEqual(['chroot', 'esxi-vm', 'freebsd-jail']);
  });
  it('(2) network only, or files + network: jail and ESXi apply', () => {
    expect(allowedMethods(withNetwork())).toEqual(['esxi-vm', 'freebsd-jail']);
  });
  it('(3) any IPC: only ESXi applies', () => {
    expect(allowedMethods(withSysvIpc())).toEqual(['esxi-vm']);
    const shmOnly = { ...filesOnly(), ipc: [{ kind: 'sysv-msg' as const, key: 7 }] };
    expect(allowedMethods(shmOnly)).toEqual(['esxi-vm']);
  });
  it('named pipes are files, not IPC (Table 1: "IPC (excluding named pipes)")', () => {
    const plan = planMigration(filesOnly())._unsafeUnwrap();
    expect(plan.classes).toEqual(['file']);
    expect(plan.chosen).toBe('chroot');
  });
});

describe('paper, Table 2: data moved', () => {
  // | data moved | chroot: AP + resources | jail: AP + resources + about 1108 MB | ESXi: about 2098 MB |
  const plan = planMigration(filesOnly())._unsafeUnwrap();
  const total = (id: string) => plan.candidates.find((c) => c.method === id)!.estimate.totalBytes;
  const apAndResources = 200_000 + 1_000 + 5_000_000; // binary + config + database; libc comes from the destination
  const sharedLibs = 1_700_000;

  it('chroot moves the AP and its resources only', () => {
    expect(total('chroot')).toBe(apAndResources);
  });
  it('a jail adds the shared libraries and about 1108 MB of userland', () => {
    expect(total('freebsd-jail')).toBe(apAndResources + sharedLibs + 1108 * MB);
  });
  it('ESXi moves about 2098 MB (the image; the default also counts the AP data it must hold)', () => {
    expect(total('esxi-vm')).toBe(2098 * MB + apAndResources);
  });
  it('choosing by resources shortens migration: chroot is chosen and is the smallest', () => {
    expect(plan.chosen).toBe('chroot');
    expect(total('chroot')).toBeLessThan(total('freebsd-jail'));
    expect(total('freebsd-jail')).toBeLessThan(total('esxi-vm'));
  });
});
