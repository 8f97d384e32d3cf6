/**
 * Name and symlink-target rules of the unpacker, against independent formulations (fast-check).
 */
import { posix } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { splitMemberName, symlinkTargetStaysInside } from '../../src/bundle/paths.js';

const component = fc.constantFrom('a', 'b', '..', '.', '', 'c d', 'ü');
const pathLike = fc.array(component, { maxLength: 8 }).map((parts) => parts.join('/'));

describe('splitMemberName', () => {
  it('accepts a name only when it is relative and has no ".." (so it stays below the root)', () => {
    fc.assert(
      fc.property(fc.boolean(), pathLike, (absolute, rest) => {
        const name = (absolute ? '/' : '') + rest;
        const result = splitMemberName(name);
        if (result.isOk()) {
          expect(name.startsWith('/')).toBe(false);
          const resolved = posix.resolve('/root', ...result.value);
          expect(resolved === '/root' || resolved.startsWith('/root/')).toBe(true);
          expect(result.value).not.toContain('..');
          expect(result.value).not.toContain('.');
        } else {
          expect(name.startsWith('/') || name.split('/').includes('..')).toBe(true);
        }
      }),
    );
  });

  it('refuses NUL bytes', () => {
    expect(splitMemberName('a\0b').isErr()).toBe(true);
  });
});

describe('symlinkTargetStaysInside', () => {
  it('agrees with resolving the target by name, absolute targets from the root', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 4 }), fc.boolean(), pathLike, (link, absolute, rest) => {
        const target = (absolute ? '/' : '') + rest;
        // Independent check: walk the parts, counting depth below the root.
        let depth = target.startsWith('/') ? 0 : link.length - 1;
        let escaped = false;
        for (const part of target.split('/')) {
          if (part === '' || part === '.') continue;
          if (part === '..') {
            if (depth === 0) escaped = true;
            depth -= 1;
          } else depth += 1;
          if (escaped) break;
        }
        expect(symlinkTargetStaysInside(link, target)).toBe(!escaped);
      }),
    );
  });

  it('allows absolute targets that stay inside and refuses climbing out', () => {
    expect(symlinkTargetStaysInside(['etc', 'localtime'], '/usr/share/zoneinfo/UTC')).toBe(true);
    expect(symlinkTargetStaysInside(['lib'], 'usr/lib')).toBe(true);
    expect(symlinkTargetStaysInside(['a', 'link'], '../../etc')).toBe(false);
    expect(symlinkTargetStaysInside(['link'], '/../etc')).toBe(false);
  });
});
