/**
 * The capability matrix, as data: each isolation method declares, per platform and release,
 * which resource kinds it isolates, and what it must transfer.
 *
 * Users add methods (Docker, KVM, ...) by passing `[...BUILTIN_METHODS, myMethod]` to the planner;
 * {@link defineIsolationMethod} validates a method before use.
 *
 * @module
 */
import { err, ok, type Result } from 'neverthrow';
import { z } from 'zod';
import { InvalidInputError } from '../errors.js';
import { RESOURCE_KINDS } from './classify.js';
import { issuesFromZod } from './validate.js';

/** One MB as the paper uses it, in bytes (2^20). */
export const MB = 1024 * 1024;

/** The paper's measured extra transfer for a jail: libraries and userland built by buildworld. */
export const PAPER_JAIL_BASE_BYTES = 1108 * MB;
/** The paper's measured VM image (a FreeBSD 9.2 snapshot on ESXi). */
export const PAPER_VM_IMAGE_BYTES = 2098 * MB;

/** A dotted release range; bounds compare numerically on the leading `a.b.c` of `uname -r`. */
const ReleaseRangeSchema = z.object({
  /** Operating system this row applies to (`*` for any: a VM carries its own OS). */
  os: z.string().min(1),
  /** Lowest release (inclusive), e.g. `11.0`. */
  minRelease: z.string().regex(/^\d+(\.\d+)*$/).optional(),
  /** First release this row no longer applies to (exclusive), e.g. `11.0`. */
  belowRelease: z.string().regex(/^\d+(\.\d+)*$/).optional(),
});

/** One row of the capability matrix. */
export const CapabilitySchema = ReleaseRangeSchema.extend({
  /** Resource kinds the method isolates on this platform. */
  isolates: z.array(z.enum(RESOURCE_KINDS)),
  /** Host configuration the isolation depends on, e.g. `jail param sysvshm=new`. */
  requires: z.array(z.string()).default([]),
  /** Why, in a sentence. */
  note: z.string().optional(),
});
/** One row of the capability matrix. */
export type Capability = z.infer<typeof CapabilitySchema>;

/** What the packager sends: parts computed from the profile, or a fixed-size blob. */
export const TransferComponentSchema = z.discriminatedUnion('type', [
  /** The program's executable plus the files it uses, excluding shared libraries. */
  z.object({ type: z.literal('program-and-files') }),
  /** The shared libraries (and loader) the program maps. */
  z.object({ type: z.literal('shared-libraries') }),
  /**
   * A blob whose size is known only as a default or a measurement: a base userland, a VM image.
   * `sizeKey` names the override in `PlanOptions.sizes`; with `omitWhenDestinationProvides` the
   * component is skipped when the destination already has that thing.
   */
  z.object({
    type: z.literal('fixed'),
    label: z.string().min(1),
    sizeKey: z.string().min(1),
    defaultBytes: z.number().int().nonnegative(),
    defaultSource: z.string().min(1),
    omitWhenDestinationProvides: z.string().optional(),
    /** When the size is a default, also count the program and its files (they must be inside it). */
    addProgramWhenDefault: z.boolean().default(false),
  }),
]);
/** What the packager sends. */
export type TransferComponent = z.infer<typeof TransferComponentSchema>;

/** An isolation method: how heavy it is, what it isolates where, and what it sends. */
export const IsolationMethodSchema = z.object({
  /** Stable identifier, e.g. `chroot`. */
  id: z.string().regex(/^[a-z][a-z0-9-]*$/, 'lower-case id such as "chroot" or "docker"'),
  /** Name for people. */
  name: z.string().min(1),
  /**
   * How heavy the isolation is: 1 = file system only, 2 = OS-level container, 3 = hardware VM.
   * Ties between equal estimates go to the lighter method.
   */
  weight: z.number().int().min(1),
  /** Rows of the matrix; the first row matching the platform wins. No matching row: not available. */
  capabilities: z.array(CapabilitySchema).min(1),
  transfers: z.array(TransferComponentSchema).min(1),
  /** A sentence on what the method needs at the destination. */
  needs: z.string().optional(),
  /** The method moves the VM that hosts the program, so that VM must be known (`PlanOptions.hostingVm`). */
  movesHostingVm: z.boolean().default(false),
});
/** An isolation method (validated; defaults filled in). */
export type IsolationMethod = z.infer<typeof IsolationMethodSchema>;
/** An isolation method as written by a user. */
export type IsolationMethodInput = z.input<typeof IsolationMethodSchema>;

/** Validate a user-written isolation method. */
export function defineIsolationMethod(input: unknown): Result<IsolationMethod, InvalidInputError> {
  const parsed = IsolationMethodSchema.safeParse(input);
  return parsed.success ? ok(parsed.data) : err(new InvalidInputError('isolation method', issuesFromZod(parsed.error)));
}

const ALL_KINDS = [...RESOURCE_KINDS];

/** chroot: a private root directory; files only (FreeBSD 9.2 and Linux alike). */
export const CHROOT: IsolationMethod = IsolationMethodSchema.parse({
  id: 'chroot',
  name: 'chroot',
  weight: 1,
  capabilities: [
    {
      os: 'linux',
      isolates: ['file'],
      note: 'chroot hides paths only; with its own /dev/shm it also separates POSIX shared memory, which is a file there',
    },
    { os: 'freebsd', isolates: ['file'], note: 'chroot hides paths only (paper, Table 1)' },
    { os: '*', isolates: ['file'], note: 'chroot hides paths only' },
  ],
  transfers: [{ type: 'program-and-files' }],
  needs: 'root at the destination and the shared libraries the program links against',
});

/**
 * FreeBSD jail: files + network; from 11.0, SysV IPC too when the jail gets `sysv*=new`; from
 * 12.0, POSIX shared memory too (its names are prefixed with the jail's path by the kernel).
 * The sources behind each row are in docs/decisions/0016-jail-posix-shm.md.
 */
export const FREEBSD_JAIL: IsolationMethod = IsolationMethodSchema.parse({
  id: 'freebsd-jail',
  name: 'FreeBSD jail',
  weight: 2,
  capabilities: [
    {
      os: 'freebsd',
      minRelease: '12.0',
      isolates: ['file', 'network', 'sysv-shm', 'sysv-sem', 'sysv-msg', 'posix-shm'],
      requires: ['jail param sysvshm=new', 'jail param sysvsem=new', 'jail param sysvmsg=new'],
      note:
        'SysV IPC per jail with sysvshm/sysvsem/sysvmsg=new; POSIX shm per jail with no parameter: kern_shm_open() in ' +
        'sys/kern/uipc_shm.c prefixes each name with the jail\'s path (read in releng/12.0, 12.1, main). ' +
        'POSIX mq (per prison root in uipc_mqueue.c from 12.0) is not listed yet: decision 0016',
    },
    {
      os: 'freebsd',
      minRelease: '11.0',
      belowRelease: '12.0',
      isolates: ['file', 'network', 'sysv-shm', 'sysv-sem', 'sysv-msg'],
      requires: ['jail param sysvshm=new', 'jail param sysvsem=new', 'jail param sysvmsg=new'],
      note:
        'FreeBSD 11.0 added per-jail SysV IPC namespaces (sysvshm/sysvsem/sysvmsg=new); POSIX shm and mq are counted as shared: ' +
        'no 11.x uipc_shm.c was read (10.4 lacks the jail prefix, 12.0 has it), decision 0016',
    },
    {
      os: 'freebsd',
      belowRelease: '11.0',
      isolates: ['file', 'network'],
      note:
        'before 11.0 every jail shares the host SysV IPC keys (paper, Table 1: FreeBSD 9.2); POSIX shm and mq names are ' +
        'global too (9.3 and 10.4 uipc_shm.c, 10.4 uipc_mqueue.c)',
    },
  ],
  transfers: [
    { type: 'program-and-files' },
    { type: 'shared-libraries' },
    {
      type: 'fixed',
      label: 'base userland',
      sizeKey: 'jail-base-userland',
      defaultBytes: PAPER_JAIL_BASE_BYTES,
      defaultSource: 'paper, Table 2 (buildworld libraries, FreeBSD 9.2)',
      omitWhenDestinationProvides: 'freebsd-base-userland',
    },
  ],
  needs: 'a FreeBSD host with jail(8); for SysV IPC, 11.0 or later; for POSIX shared memory, 12.0 or later',
});

/** Linux namespaces (mount, net, ipc, pid, uts): files, network, SysV IPC, POSIX mq and shm. */
export const LINUX_NAMESPACES: IsolationMethod = IsolationMethodSchema.parse({
  id: 'linux-namespaces',
  name: 'Linux namespaces',
  weight: 2,
  capabilities: [
    {
      os: 'linux',
      minRelease: '3.8',
      isolates: ['file', 'network', 'sysv-shm', 'sysv-sem', 'sysv-msg', 'posix-mq', 'posix-shm'],
      note: 'mount + net + ipc + pid + uts namespaces; the IPC namespace separates SysV IPC and POSIX mq',
    },
  ],
  transfers: [{ type: 'program-and-files' }, { type: 'shared-libraries' }],
  needs: 'Linux 3.8 or later with unshare(1) and iproute2, as root',
});

/** A VM on VMware ESXi: isolates everything; the whole VM image travels. */
export const ESXI_VM: IsolationMethod = IsolationMethodSchema.parse({
  id: 'esxi-vm',
  name: 'VMware ESXi VM',
  weight: 3,
  capabilities: [{ os: '*', isolates: ALL_KINDS, note: 'hardware virtualisation isolates every resource (paper, Table 1)' }],
  transfers: [
    {
      type: 'fixed',
      label: 'VM image',
      sizeKey: 'vm-image',
      defaultBytes: PAPER_VM_IMAGE_BYTES,
      defaultSource: 'paper, Table 2 (FreeBSD 9.2 snapshot)',
      addProgramWhenDefault: true,
    },
  ],
  needs: 'the VM that hosts the program, and an ESXi host to receive it',
  movesHostingVm: true,
});

/** The built-in methods, lightest first. */
export const BUILTIN_METHODS: readonly IsolationMethod[] = [CHROOT, FREEBSD_JAIL, LINUX_NAMESPACES, ESXI_VM];

/** Parse the leading `a.b.c` of a release string (`9.2-RELEASE-p3` -> [9, 2]). */
export function parseRelease(release: string): number[] | undefined {
  const m = /^(\d+(?:\.\d+)*)/.exec(release.trim());
  return m ? m[1]!.split('.').map(Number) : undefined;
}

/** Compare two dotted releases numerically; missing parts count as 0. */
export function compareReleases(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** The first capability row of `method` that applies to `os` at `release`, if any. */
export function capabilityFor(method: IsolationMethod, os: string, release: string): Capability | undefined {
  const version = parseRelease(release);
  return method.capabilities.find((row) => {
    if (row.os !== '*' && row.os !== os) return false;
    if (row.minRelease === undefined && row.belowRelease === undefined) return true;
    // A bounded row cannot apply to a release we cannot read.
    if (!version) return false;
    if (row.minRelease !== undefined && compareReleases(version, parseRelease(row.minRelease)!) < 0) return false;
    if (row.belowRelease !== undefined && compareReleases(version, parseRelease(row.belowRelease)!) >= 0) return false;
    return true;
  });
}
