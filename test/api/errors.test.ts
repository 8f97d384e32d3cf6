/**
 * Errors work across copies of the package. An app that `import`s ap-migrate in one place and
 * `require`s it in another loads dist/index.js and dist/index.cjs: two copies of every class, so
 * `instanceof` fails across them. `X.isInstance` checks a `Symbol.for` marker, which all copies
 * share. The package is built with the library blocks of tsup.config.ts (as `npm run build` does)
 * into a private node_modules/ap-migrate under .tmp/, with the real package.json, so that the
 * exports map is what resolves `import` and `require`, and so that a build another process runs
 * in dist/ at the same time cannot disturb it.
 */
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPackage } from '../helpers/build-package.js';

let root = '';

/** Runs in a child Node: errors made by one copy, checked by the other. Prints JSON. */
const PROBE = String.raw`
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const esm = await import('ap-migrate');
const cjs = require('ap-migrate');
const out = { sameClass: esm.ApMigrateError === cjs.ApMigrateError, rows: [], negatives: {},
  resolved: [import.meta.resolve('ap-migrate'), require.resolve('ap-migrate')] };

const makers = {
  ApMigrateError: (m) => new m.ApMigrateError('SOME_CODE', 'x', { isRetryable: true, details: { a: 1 } }),
  InvalidInputError: (m) => new m.InvalidInputError('profile', [{ path: 'uid', message: 'bad' }]),
  UnknownMethodError: (m) => new m.UnknownMethodError('nope', ['chroot']),
  NoAllowedMethodError: (m) => new m.NoAllowedMethodError('none', {}),
  TransportError: (m) => new m.TransportError('CONNECTION_LOST', 'cut'),
  DeployError: (m) => new m.DeployError('START_FAILED', 'x'),
  BundleError: (m) => new m.BundleError('BUNDLE_TRUNCATED', 'x'),
  EsxiError: (m) => new m.EsxiError('ESXI_PROTOCOL', 'x'),
  InvalidStateError: (m) => new m.InvalidStateError('x'),
  FileNotFoundError: (m) => new m.FileNotFoundError('x'),
};
for (const [cls, make] of Object.entries(makers)) {
  for (const [from, maker, checker] of [['cjs', cjs, esm], ['esm', esm, cjs]]) {
    const e = make(maker);
    out.rows.push({
      cls, from,
      isInstance: checker[cls].isInstance(e),
      instanceOf: e instanceof checker[cls],
      baseIsInstance: checker.ApMigrateError.isInstance(e),
      sameCopy: maker[cls].isInstance(e) && e instanceof maker[cls],
      name: e.name, code: e.code, isRetryable: e.isRetryable, json: JSON.stringify(e),
    });
  }
}
// Not one of them, or another class of the family.
const revoked = Proxy.revocable({}, {}); revoked.revoke();
const lookalike = { name: 'InvalidInputError', code: 'INVALID_INPUT', message: 'x', isRetryable: false, details: {} };
const candidates = { null: null, undefined: undefined, number: 42, string: 'INVALID_INPUT', object: {}, error: new Error('x'),
  lookalike, revokedProxy: revoked.proxy, otherClass: new cjs.TransportError('EXEC_FAILED', 'x'), sibling: new cjs.FileNotFoundError('x') };
for (const [name, value] of Object.entries(candidates)) {
  out.negatives[name] = { base: esm.ApMigrateError.isInstance(value), invalidInput: esm.InvalidInputError.isInstance(value), invalidState: esm.InvalidStateError.isInstance(value) };
}
// What the API returns, not only what a test constructs.
const planned = cjs.planMigration({ executable: 'relative' });
out.planError = { isErr: planned.isErr(), isInstance: esm.InvalidInputError.isInstance(planned.error), instanceOf: planned.error instanceof esm.InvalidInputError, issues: planned.error.issues.length > 0 };
// Unbound, as a filter callback.
out.filtered = [new cjs.InvalidInputError('x', []), new cjs.TransportError('EXEC_FAILED', 'x'), 'x'].filter(esm.InvalidInputError.isInstance).length;
console.log(JSON.stringify(out));
`;

let probe: {
  sameClass: boolean;
  rows: { cls: string; from: string; name: string; isInstance: boolean; instanceOf: boolean; baseIsInstance: boolean; sameCopy: boolean; code: string; isRetryable: boolean; json: string }[];
  negatives: Record<string, { base: boolean; invalidInput: boolean; invalidState: boolean }>;
  planError: { isErr: boolean; isInstance: boolean; instanceOf: boolean; issues: boolean };
  filtered: number;
  resolved: string[];
};

beforeAll(async () => {
  root = await buildPackage('api-errors-');
  await writeFile(join(root, 'probe.mjs'), PROBE);
  const { stdout } = await promisify(execFile)(process.execPath, ['probe.mjs'], { cwd: root });
  probe = JSON.parse(stdout) as typeof probe;
}, 180_000);

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('errors across the ESM and CJS copies', () => {
  it('the two builds really are two copies, of the package built here', () => {
    expect(probe.sameClass).toBe(false);
    expect(probe.resolved.map((p) => p.replace(/^file:\/\//, '').slice(root.length))).toEqual(['/node_modules/ap-migrate/dist/index.js', '/node_modules/ap-migrate/dist/index.cjs']);
  });

  it('X.isInstance recognises an error made by the other copy; instanceof does not (why isInstance exists)', () => {
    expect(probe.rows).toHaveLength(20);
    for (const row of probe.rows) {
      expect(row, `${row.cls} made by ${row.from}`).toMatchObject({ isInstance: true, instanceOf: false, baseIsInstance: true, sameCopy: true });
    }
  });

  it('name, code, isRetryable and toJSON are unchanged, and the marker does not show in JSON', () => {
    for (const row of probe.rows) expect(row.name).toBe(row.cls);
    const base = probe.rows.find((r) => r.cls === 'ApMigrateError')!;
    expect(base.isRetryable).toBe(true);
    expect(JSON.parse(base.json)).toEqual({ name: 'ApMigrateError', code: 'SOME_CODE', message: 'x', isRetryable: true, details: { a: 1 } });
    expect(probe.rows.find((r) => r.cls === 'TransportError')).toMatchObject({ code: 'CONNECTION_LOST', isRetryable: true });
  });

  it('anything else is not an instance: non-errors, look-alikes, a revoked Proxy, another class of the family', () => {
    const { otherClass, sibling, ...others } = probe.negatives;
    for (const [name, verdict] of Object.entries(others)) expect(verdict, name).toEqual({ base: false, invalidInput: false, invalidState: false });
    // A TransportError is an ApMigrateError, and nothing narrower.
    expect(otherClass).toEqual({ base: true, invalidInput: false, invalidState: false });
    // FileNotFoundError and InvalidStateError are siblings under EsxiError.
    expect(sibling).toEqual({ base: true, invalidInput: false, invalidState: false });
  });

  it('an error returned by planMigration of one copy is recognised by the other', () => {
    expect(probe.planError).toEqual({ isErr: true, isInstance: true, instanceOf: false, issues: true });
  });

  it('isInstance works unbound (as a filter callback)', () => {
    expect(probe.filtered).toBe(1);
  });
});
