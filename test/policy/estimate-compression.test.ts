/**
 * Estimates before and after compression on the wire (issue 13): content classes from file names,
 * wire bytes per item and per candidate, the ranking by wire bytes when compression is on, the
 * measured defaults of decision 0203, a caller's measured ratios, validation, determinism and the
 * plan's rendering.
 */
import { describe, expect, it } from 'vitest';
import {
  BUILTIN_METHODS,
  contentClassOf,
  defaultCompressionRatios,
  DEFAULT_COMPRESSION_LEVEL,
  defineIsolationMethod,
  formatPlan,
  InvalidInputError,
  MEASURED_COMPRESSION_RATIOS,
  measureProfile,
  planMigration,
  ResourceProfileSchema,
  type IsolationMethod,
  type PlanOptions,
  type ResourceProfileInput,
} from '../../src/policy/index.js';
import { DEFAULT_LEVEL } from '../../src/transfer/compression.js';
import { filesOnly, LINUX } from './profiles.js';

const MiB = 1024 * 1024;

/** A Linux program with one file of each content class. */
function mixedProfile(): ResourceProfileInput {
  return {
    ...filesOnly(LINUX),
    executableSize: 1 * MiB,
    files: [
      { path: '/srv/app/templates/page.html', kind: 'regular', access: ['read'], size: 10 * MiB },
      { path: '/srv/app/media/photo.JPG', kind: 'regular', access: ['read'], size: 20 * MiB },
      { path: '/srv/app/plugins/libextra.so.1.2', kind: 'regular', access: ['read'], size: 3 * MiB },
      { path: '/var/db/app.db', kind: 'regular', access: ['read', 'write'], size: 40 * MiB },
      { path: '/lib/libc.so.6', kind: 'regular', access: ['read', 'exec'], size: 2 * MiB, sharedLibrary: true },
    ],
  };
}

const plan = (profile: ResourceProfileInput, options: PlanOptions = {}) => planMigration(profile, options)._unsafeUnwrap();

describe('content classes', () => {
  it('from the name: compressed formats, text formats, object code (versioned .so too), else other', () => {
    expect(contentClassOf('/usr/share/doc/x/changelog.Debian.gz')).toBe('compressed');
    expect(contentClassOf('/srv/photo.JPG')).toBe('compressed');
    expect(contentClassOf('/opt/app/lib.jar')).toBe('compressed');
    expect(contentClassOf('/etc/nginx/nginx.conf')).toBe('text');
    expect(contentClassOf('/usr/lib/python3/x.py')).toBe('text');
    expect(contentClassOf('/usr/lib/x86_64-linux-gnu/libssl.so.3')).toBe('machine-code');
    expect(contentClassOf('/usr/lib/libz.so')).toBe('machine-code');
    expect(contentClassOf('/var/lib/db/base/16384/1259')).toBe('other');
    expect(contentClassOf('/etc/.hidden')).toBe('other');
    expect(contentClassOf('/srv/data.bin')).toBe('other');
    // The profile's flag wins over the name.
    expect(contentClassOf('/lib/ld-linux-x86-64.so.2.txt', true)).toBe('machine-code');
  });

  it('measureProfile splits program and files by class (the executable is machine code; libraries apart)', () => {
    const sizes = measureProfile(ResourceProfileSchema.parse(mixedProfile()));
    expect(sizes.programAndFilesByClass).toEqual({ text: 10 * MiB, compressed: 20 * MiB, 'machine-code': 4 * MiB, other: 40 * MiB });
    expect(sizes.programAndFilesBytes).toBe(74 * MiB);
    expect(sizes.sharedLibraryBytes).toBe(2 * MiB);
  });
});

describe('default ratios (decision 0203)', () => {
  it('level 1 is the default of both codecs, as in the transfer module', () => {
    expect(DEFAULT_COMPRESSION_LEVEL).toEqual(DEFAULT_LEVEL);
  });
  it('the measured level at or below the one asked for; compressed is always 1', () => {
    expect(defaultCompressionRatios('zstd').ratios).toEqual({ text: 0.214, 'machine-code': 0.532, compressed: 1, other: 0.558 });
    expect(defaultCompressionRatios('zstd', 2).level).toBe(1);
    expect(defaultCompressionRatios('zstd', 19)).toMatchObject({ level: 3, ratios: MEASURED_COMPRESSION_RATIOS.zstd[3] });
    expect(defaultCompressionRatios('gzip', 9).level).toBe(6);
    expect(defaultCompressionRatios('gzip', 5).level).toBe(1);
    for (const codec of ['zstd', 'gzip'] as const) {
      for (const ratios of Object.values(MEASURED_COMPRESSION_RATIOS[codec])) expect(ratios.compressed).toBe(1);
    }
  });
});

describe('planMigration with compression', () => {
  it('without it: no wireBytes anywhere, no plan.compression (plans as before)', () => {
    const p = plan(mixedProfile());
    expect(p.compression).toBeUndefined();
    for (const c of p.candidates) {
      expect(c.estimate.wireBytes).toBeUndefined();
      for (const item of c.estimate.items) expect(item).not.toHaveProperty('wireBytes');
    }
    expect(formatPlan(p)).not.toContain('on the wire');
  });

  it('zstd: every candidate and item carries bytes before and after; each class at its ratio, compressed at 1', () => {
    const p = plan(mixedProfile(), { compression: { codec: 'zstd' } });
    expect(p.compression).toMatchObject({ codec: 'zstd', level: 1, measured: [] });
    const chroot = p.candidates.find((c) => c.method === 'chroot')!;
    const r = MEASURED_COMPRESSION_RATIOS.zstd[1]!;
    const program = Math.round(10 * MiB * r.text) + 20 * MiB + Math.round(4 * MiB * r['machine-code']) + Math.round(40 * MiB * r.other);
    expect(chroot.estimate.totalBytes).toBe(74 * MiB);
    expect(chroot.estimate.items[0]!.wireBytes).toBe(program);
    expect(chroot.estimate.wireBytes).toBe(program);
    const ns = p.candidates.find((c) => c.method === 'linux-namespaces')!;
    expect(ns.estimate.wireBytes).toBe(program + Math.round(2 * MiB * r['machine-code']));
    for (const c of p.candidates) expect(c.estimate.wireBytes).toBeLessThanOrEqual(c.estimate.totalBytes);
    // A method that moves the hosting VM copies its files as they are.
    const vm = p.candidates.find((c) => c.method === 'esxi-vm')!;
    expect(vm.estimate.wireBytes).toBe(vm.estimate.totalBytes);
    expect(p.concerns.find((c) => c.id === 'compression-ratio-default')).toMatchObject({ severity: 'info' });
  });

  it('already-compressed files count at ratio 1: a tree of JPEGs has as many bytes on the wire as before', () => {
    const jpegs: ResourceProfileInput = {
      ...filesOnly(LINUX),
      executableSize: 0,
      files: Array.from({ length: 3 }, (_, i) => ({ path: `/srv/photos/${i}.jpeg`, kind: 'regular' as const, access: ['read' as const], size: 5 * MiB })),
    };
    const chroot = plan(jpegs, { compression: { codec: 'gzip' } }).candidates.find((c) => c.method === 'chroot')!;
    expect(chroot.estimate.wireBytes).toBe(chroot.estimate.totalBytes);
  });

  it("a measured ratio replaces the defaults: one number for all but compressed, or per class; no 'default' concern once all are measured", () => {
    const one = plan(mixedProfile(), { compression: { codec: 'zstd', ratio: 0.5 } });
    expect(one.compression!.ratios).toEqual({ text: 0.5, 'machine-code': 0.5, compressed: 1, other: 0.5 });
    expect(one.candidates.find((c) => c.method === 'chroot')!.estimate.wireBytes).toBe(27 * MiB + 20 * MiB);
    expect(one.concerns.map((c) => c.id)).not.toContain('compression-ratio-default');
    const some = plan(mixedProfile(), { compression: { codec: 'zstd', ratio: { other: 0.9, compressed: 0.99 } } });
    expect(some.compression!.ratios).toEqual({ text: 0.214, 'machine-code': 0.532, compressed: 0.99, other: 0.9 });
    expect(some.compression!.measured).toEqual(['compressed', 'other']);
    const concern = some.concerns.find((c) => c.id === 'compression-ratio-default')!;
    expect(concern.message).toContain('text (0.214)');
    expect(concern.message).not.toContain('other (');
  });

  it('the ranking uses wireBytes when compression is on: a text-heavy tree beats a smaller blob of unknown data', () => {
    const method = (id: string, weight: number, transfers: unknown[]): IsolationMethod =>
      defineIsolationMethod({ id, name: id, weight, capabilities: [{ os: '*', isolates: ['file'] }], transfers })._unsafeUnwrap();
    const methods = [
      method('tree', 2, [{ type: 'program-and-files' }]),
      method('blob', 1, [{ type: 'fixed', label: 'blob', sizeKey: 'blob', defaultBytes: 60 * MiB, defaultSource: 'a test' }]),
    ];
    const text: ResourceProfileInput = {
      ...filesOnly(LINUX),
      executableSize: 0,
      files: [{ path: '/srv/site/index.html', kind: 'regular', access: ['read'], size: 100 * MiB }],
    };
    const plain = plan(text, { methods });
    expect(plain.chosen).toBe('blob'); // 60 MiB < 100 MiB
    const zstd = plan(text, { methods, compression: { codec: 'zstd' } });
    expect(zstd.chosen).toBe('tree'); // 100 MiB * 0.214 < 60 MiB * 0.558
    expect(zstd.candidates.map((c) => [c.method, c.estimate.totalBytes, c.estimate.wireBytes])).toEqual([
      ['tree', 100 * MiB, Math.round(100 * MiB * 0.214)],
      ['blob', 60 * MiB, Math.round(60 * MiB * 0.558)],
    ]);
  });

  it('deterministic: the same input gives the same plan', () => {
    const options: PlanOptions = { compression: { codec: 'gzip', level: 6, ratio: { text: 0.3 } } };
    expect(plan(mixedProfile(), options)).toEqual(plan(mixedProfile(), options));
    expect(plan(mixedProfile(), options).compression).toMatchObject({ codec: 'gzip', level: 6 });
  });

  it('bad compression options are INVALID_INPUT naming the field', () => {
    const bad = (compression: unknown) => {
      const result = planMigration(mixedProfile(), { compression } as PlanOptions);
      expect(result.isErr()).toBe(true);
      const error = result._unsafeUnwrapErr();
      expect(InvalidInputError.isInstance(error)).toBe(true);
      return (error as InvalidInputError).issues.map((i) => i.path);
    };
    expect(bad({ codec: 'lz4' })).toEqual(['compression.codec']);
    expect(bad({ codec: 'zstd', ratio: 0 })).toEqual(['compression.ratio']);
    expect(bad({ codec: 'zstd', ratio: { texts: 0.2 } })[0]).toMatch(/^compression\.ratio/);
    expect(bad({ codec: 'gzip', level: 12 })).toEqual(['compression.level']);
    expect(bad({ codec: 'zstd', level: 0 })).toEqual(['compression.level']);
  });

  it('formatPlan prints both numbers and the ratios used', () => {
    const text = formatPlan(plan(mixedProfile(), { compression: { codec: 'zstd', ratio: { other: 0.9 } } }));
    expect(text).toMatch(/estimate\s+on the wire \(zstd-1\)/);
    expect(text).toMatch(/\*\s+chroot .*74\.0 MB\s+60\.3 MB/);
    expect(text).toContain('compression: zstd level 1, ratios text 0.214, machine-code 0.532, compressed 1, other 0.9 (measured)');
  });

  it('the built-in methods are unchanged by it', () => {
    expect(BUILTIN_METHODS.map((m) => m.id)).toContain('chroot');
  });
});
