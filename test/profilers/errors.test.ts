/**
 * The profilers' errors work across copies of the package (as test/api/errors.test.ts checks for
 * the other classes): a ProfileError or FreeBsdParseError made by the CommonJS build is
 * recognised by the ESM build's `isInstance`, where `instanceof` fails. The package is built
 * with the library blocks of tsup.config.ts into a private node_modules/ap-migrate under .tmp/,
 * and probed in a child Node that loads both builds.
 */
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPackage } from '../helpers/build-package.js';
import { ApMigrateError } from '../../src/errors.js';
import { ProfileError } from '../../src/profilers/common.js';
import { FreeBsdParseError } from '../../src/profilers/freebsd-parsers.js';

let root = '';

/** Runs in a child Node: errors made (or returned) by one copy, checked by the other. Prints JSON. */
const PROBE = String.raw`
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const esm = await import('ap-migrate');
const cjs = require('ap-migrate');
const verdicts = (checker, e) => ({
  base: checker.ApMigrateError.isInstance(e),
  profile: checker.ProfileError.isInstance(e),
  freebsdParse: checker.FreeBsdParseError.isInstance(e),
  instanceOf: e instanceof checker.ProfileError,
});
const out = { sameClass: esm.ProfileError === cjs.ProfileError, made: {}, returned: {}, negatives: {} };
const makers = {
  ProfileError: (m) => new m.ProfileError('NO_SUCH_PROCESS', 'gone', { details: { pid: 7 } }),
  FreeBsdParseError: (m) => new m.FreeBsdParseError('procstat -f', 3, 'bad row', 'row does not match'),
};
for (const [cls, make] of Object.entries(makers)) {
  for (const [from, maker, checker] of [['cjs', cjs, esm], ['esm', esm, cjs]]) {
    const e = make(maker);
    out.made[cls + ' from ' + from] = { ...verdicts(checker, e), name: e.name, code: e.code, sameCopy: maker[cls].isInstance(e) && e instanceof maker[cls] };
  }
}
// What a profiler of one copy returns: a Linux host answers uname, so the FreeBSD profiler fails to parse it.
const { okAsync } = require('neverthrow');
const linux = { description: 'probe', exec: () => okAsync({ code: 0, signal: null, stdout: 'Linux 6.1.0-18-amd64 x86_64\n', stderr: '' }) };
const parsed = await cjs.createFreeBsdProfiler({ executor: linux }).profile({ pid: 42 });
out.returned.parseFailure = { isErr: parsed.isErr(), code: parsed.error?.code, ...verdicts(esm, parsed.error) };
// An SDK error of the other copy thrown by an executor is passed through, not wrapped.
const thrown = new cjs.TransportError('CONNECTION_LOST', 'cut');
const throwing = { description: 'probe', exec: () => { throw thrown; } };
const passed = await esm.createFreeBsdProfiler({ executor: throwing }).profile({ pid: 42 });
out.returned.thrownTransportError = { isErr: passed.isErr(), same: passed.error === thrown, code: passed.error?.code };
const plain = await esm.createFreeBsdProfiler({ executor: { description: 'probe', exec: () => { throw new Error('boom'); } } }).profile({ pid: 42 });
out.returned.thrownPlainError = { code: plain.error?.code, ...verdicts(cjs, plain.error) };
// Not one of them.
const candidates = { null: null, error: new Error('x'), lookalike: { name: 'ProfileError', code: 'NO_SUCH_PROCESS', message: 'x' },
  transportError: new cjs.TransportError('EXEC_FAILED', 'x'), invalidInput: new cjs.InvalidInputError('x', []) };
for (const [name, value] of Object.entries(candidates)) out.negatives[name] = verdicts(esm, value);
console.log(JSON.stringify(out));
`;

let probe: {
  sameClass: boolean;
  made: Record<string, { base: boolean; profile: boolean; freebsdParse: boolean; instanceOf: boolean; name: string; code: string; sameCopy: boolean }>;
  returned: Record<string, Record<string, unknown>>;
  negatives: Record<string, { base: boolean; profile: boolean; freebsdParse: boolean; instanceOf: boolean }>;
};

beforeAll(async () => {
  root = await buildPackage('profile-errors-');
  await writeFile(join(root, 'probe.mjs'), PROBE);
  const { stdout } = await promisify(execFile)(process.execPath, ['probe.mjs'], { cwd: root });
  probe = JSON.parse(stdout) as typeof probe;
}, 180_000);

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('profile errors across the ESM and CJS copies', () => {
  it('the two builds are two copies', () => {
    expect(probe.sameClass).toBe(false);
  });

  it('ProfileError.isInstance recognises a ProfileError of the other copy; instanceof does not', () => {
    for (const from of ['cjs', 'esm']) {
      expect(probe.made[`ProfileError from ${from}`]).toEqual({ base: true, profile: true, freebsdParse: false, instanceOf: false, name: 'ProfileError', code: 'NO_SUCH_PROCESS', sameCopy: true });
    }
  });

  it('a FreeBsdParseError of the other copy is a FreeBsdParseError and a ProfileError', () => {
    for (const from of ['cjs', 'esm']) {
      expect(probe.made[`FreeBsdParseError from ${from}`]).toEqual({ base: true, profile: true, freebsdParse: true, instanceOf: false, name: 'FreeBsdParseError', code: 'PARSE_FAILED', sameCopy: true });
    }
  });

  it('what a profiler of one copy returns is recognised by the other', () => {
    expect(probe.returned.parseFailure).toEqual({ isErr: true, code: 'PARSE_FAILED', base: true, profile: true, freebsdParse: true, instanceOf: false });
    expect(probe.returned.thrownPlainError).toEqual({ code: 'PROFILER_FAILED', base: true, profile: true, freebsdParse: false, instanceOf: false });
  });

  it('an SDK error of another copy thrown by an executor comes back as it is, not wrapped', () => {
    expect(probe.returned.thrownTransportError).toEqual({ isErr: true, same: true, code: 'CONNECTION_LOST' });
  });

  it('anything else is not a ProfileError: non-errors, look-alikes, other classes of the family', () => {
    for (const name of ['null', 'error', 'lookalike']) expect(probe.negatives[name], name).toEqual({ base: false, profile: false, freebsdParse: false, instanceOf: false });
    for (const name of ['transportError', 'invalidInput']) expect(probe.negatives[name], name).toEqual({ base: true, profile: false, freebsdParse: false, instanceOf: false });
  });
});

describe('profile errors in this copy', () => {
  it('each class has its own marker: a plain ProfileError is no FreeBsdParseError', () => {
    const plain = new ProfileError('PROFILER_FAILED', 'x');
    const parse = new FreeBsdParseError('ipcs -a', 1, 'T ID', 'unknown header');
    expect([ApMigrateError.isInstance(plain), ProfileError.isInstance(plain), FreeBsdParseError.isInstance(plain)]).toEqual([true, true, false]);
    expect([ApMigrateError.isInstance(parse), ProfileError.isInstance(parse), FreeBsdParseError.isInstance(parse)]).toEqual([true, true, true]);
    expect(Object.hasOwn(ProfileError, 'isInstance') && Object.hasOwn(FreeBsdParseError, 'isInstance')).toBe(true);
    // Unbound, as a filter callback.
    expect([plain, parse, new Error('x')].filter(ProfileError.isInstance)).toEqual([plain, parse]);
    // The marker is on the prototype: JSON and the instance's own keys do not show it.
    expect(Object.getOwnPropertySymbols(plain)).toEqual([]);
    expect(JSON.parse(JSON.stringify(parse))).toMatchObject({ name: 'FreeBsdParseError', code: 'PARSE_FAILED' });
  });
});
