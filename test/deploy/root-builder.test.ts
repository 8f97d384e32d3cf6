/**
 * The root builder's pieces on their own: the ELF reader against real binaries and crafted bytes,
 * and path resolution inside a root against every kind of link.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { readElf } from '../../src/destination/elf.js';
import { buildRoot, resolveInRoot } from '../../src/destination/root-builder.js';
import { skipUnless } from '../helpers/requirements.js';

describe('readElf', () => {
  it('reads the interpreter and DT_NEEDED of a real binary as the loader would', () => {
    const facts = readElf(readFileSync('/bin/ls'))!;
    expect(facts.bits).toBe(64);
    expect(facts.interpreter).toMatch(/^\/lib.*ld-linux.*\.so\.\d$/);
    expect(facts.needed).toContain('libc.so.6');
    // The same list ldd's loader prints (on our own, trusted binary).
    const viaLoader = execFileSync('sh', ['-c', "objdump -p /bin/ls 2>/dev/null | awk '/NEEDED/ {print $2}' || true"]).toString().trim().split('\n').filter(Boolean);
    if (viaLoader.length) expect(facts.needed).toEqual(viaLoader);
  });

  it('reads a shared object (ET_DYN) and a file that is not ELF', () => {
    const libc = execFileSync('sh', ['-c', "ldd /bin/ls | awk '/libc.so/ {print $3}'"]).toString().trim();
    expect(readElf(readFileSync(libc))!.type).toBe(3);
    expect(readElf(Buffer.from('#!/bin/sh\necho hi\n'))).toBeUndefined();
  });

  it('never throws on truncated or random bytes', () => {
    const ls = readFileSync('/bin/ls');
    for (const cut of [0, 4, 16, 52, 63, 64, 200, 1000, 5000]) expect(() => readElf(ls.subarray(0, cut))).not.toThrow();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 512 }), fc.nat(400), (bytes, at) => {
        const header = Buffer.from(ls.subarray(0, 512));
        Buffer.from(bytes).copy(header, Math.min(at, 511));
        expect(() => readElf(header)).not.toThrow();
        expect(() => readElf(Buffer.from(bytes))).not.toThrow();
      }),
      { numRuns: 500 },
    );
  });
});

describe('resolveInRoot', () => {
  const root = mkdtempSync(join(tmpdir(), 'apm-resolve-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'usr/lib'), { recursive: true });
  symlinkSync('usr/lib', join(root, 'lib'));
  symlinkSync('/etc', join(root, 'abs'));
  symlinkSync('../../../../../../etc', join(root, 'climb'));
  symlinkSync('loop2', join(root, 'loop1'));
  symlinkSync('loop1', join(root, 'loop2'));
  writeFileSync(join(root, 'file'), 'x');

  it('follows links inside the root, clamps ".." at it, and never leaves it', () => {
    expect(resolveInRoot(root, '/lib/x.so')).toBe(join(root, 'usr/lib/x.so'));
    expect(resolveInRoot(root, '/abs/passwd')).toBe(join(root, 'etc/passwd'));
    expect(resolveInRoot(root, '/climb/shadow')).toBe(join(root, 'etc/shadow'));
    expect(resolveInRoot(root, '/../../etc')).toBe(join(root, 'etc'));
    // The last component is not followed unless asked.
    expect(resolveInRoot(root, '/abs')).toBe(join(root, 'abs'));
    expect(resolveInRoot(root, '/abs', { followLast: true })).toBe(join(root, 'etc'));
  });

  it('refuses a loop and a file used as a directory', () => {
    expect(() => resolveInRoot(root, '/loop1/x')).toThrow(/too many/);
    expect(() => resolveInRoot(root, '/file/x')).toThrow(/not a directory/);
  });

  it('creates missing directories inside the root only', () => {
    const made = resolveInRoot(root, '/abs/new/dir', { create: true, followLast: true });
    expect(made).toBe(join(root, 'etc/new/dir'));
    expect(readFileSync('/etc/hostname').length).toBeGreaterThan(0); // the host's /etc is not where it went
    expect(() => readFileSync(join('/etc/new/dir'))).toThrow();
  });
});

// Was a bug: only the executable's own needed libraries were followed, so a launched wrapper
// (setpriv ... postgres) profiled by sampling, which sees the real files mapped but not the
// names the loader looks them up by (libxml2.so.2 -> libxml2.so.2.9.14), came up without them.
describe.skipIf(skipUnless('root', 'tool:curl', 'tool:setpriv'))('buildRoot follows the needed libraries of every program the processes ran', () => {
  const curl = execFileSync('sh', ['-c', 'readlink -f "$(command -v curl)"'], { encoding: 'utf8' }).trim();
  const setpriv = execFileSync('sh', ['-c', 'readlink -f "$(command -v setpriv)"'], { encoding: 'utf8' }).trim();
  const needed = readElf(readFileSync(curl))!.needed.find((n) => n.startsWith('libcurl'))!;
  const made: string[] = [];
  afterAll(() => {
    for (const d of made) rmSync(d, { recursive: true, force: true });
  });

  /** A root holding a wrapper as the executable and curl as a program it execs into. */
  function rootWithWrapperAndProgram(): string {
    const root = mkdtempSync(join(tmpdir(), 'apm-programs-'));
    made.push(root);
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    mkdirSync(join(root, 'opt/tool'), { recursive: true });
    copyFileSync(setpriv, join(root, 'usr/bin/setpriv'));
    copyFileSync(curl, join(root, 'opt/tool/curl'));
    return root;
  }
  const base = { executable: '/usr/bin/setpriv', cwd: '/', dirs: [], libraries: [], wrapperSource: '' };

  it('a program named in `programs` gets its libraries by the names it needs them by', () => {
    expect(needed).toBeDefined();
    const root = rootWithWrapperAndProgram();
    const report = buildRoot({ root, ...base, programs: ['/opt/tool/curl'] });
    expect(report.copied.some((p) => p.endsWith(`/${needed}`))).toBe(true);
    expect(existsSync(resolveInRoot(root, report.copied.find((p) => p.endsWith(`/${needed}`))!))).toBe(true);
  });

  it('without it, only the executable\'s are (what failed before)', () => {
    const root = rootWithWrapperAndProgram();
    const report = buildRoot({ root, ...base });
    expect(report.copied.some((p) => p.endsWith(`/${needed}`))).toBe(false);
  });

  it('a program path with ".." is refused; a link out of the root is read inside it; one not there is passed over', () => {
    expect(() => buildRoot({ root: rootWithWrapperAndProgram(), ...base, programs: ['/../../opt/tool/curl'] })).toThrow(/\.\./);
    const root = rootWithWrapperAndProgram();
    // Names the host's curl: inside the root that is <root>/usr/bin/curl, which is not there.
    symlinkSync(curl, join(root, 'opt/tool/outside'));
    const report = buildRoot({ root, ...base, programs: ['/opt/tool/outside', '/nowhere/prog'] });
    expect(report.copied.some((p) => p.endsWith(`/${needed}`))).toBe(false);
  });
});
