/**
 * The vSphere client's error classes work across copies of the package, like every other error
 * class (test/api/errors.test.ts checks the whole package's). OvfImportRejectedError lives in
 * ovf-import.ts, apart from src/esxi/errors.ts, and had no marker of its own: its inherited
 * isInstance fell back to `instanceof`, which fails across copies. Here src/esxi/index.ts and
 * src/errors.ts are each built, self-contained, as ESM and as CommonJS (four copies of the
 * classes), and a child Node checks errors made by one copy with the classes of the others.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'tsup';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EsxiError, InvalidStateError } from '../../src/esxi/errors.js';
import { OvfImportRejectedError } from '../../src/esxi/ovf-import.js';
import { ApMigrateError } from '../../src/errors.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
let dir = '';

/** Runs in a child Node: errors made by one copy, checked by the other. Prints JSON. */
const PROBE = String.raw`
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const copies = { esm: await import('./esxi.js'), cjs: require('./esxi.cjs') };
const base = { esm: await import('./errors.js'), cjs: require('./errors.cjs') };
const problems = [{ faultType: 'OvfUnsupportedType', message: 'bad section' }];
const out = { sameClass: copies.esm.OvfImportRejectedError === copies.cjs.OvfImportRejectedError, rows: [], negatives: {} };
for (const [from, to] of [['esm', 'cjs'], ['cjs', 'esm']]) {
  const e = new copies[from].OvfImportRejectedError('CreateImportSpec rejected the OVF descriptor', problems);
  out.rows.push({
    from,
    isInstance: copies[to].OvfImportRejectedError.isInstance(e),
    instanceOf: e instanceof copies[to].OvfImportRejectedError,
    esxiIsInstance: copies[to].EsxiError.isInstance(e),
    baseIsInstance: base[to].ApMigrateError.isInstance(e) && base[from].ApMigrateError.isInstance(e),
    sameCopy: copies[from].OvfImportRejectedError.isInstance(e) && e instanceof copies[from].OvfImportRejectedError,
    siblingIsInstance: copies[to].InvalidStateError.isInstance(e),
    unbound: [e, 'x', new copies[to].EsxiError('ESXI_OVF_REJECTED', 'x')].filter(copies[to].OvfImportRejectedError.isInstance).length,
    name: e.name, code: e.code, faultType: e.faultType, problems: e.problems, json: JSON.parse(JSON.stringify(e)),
  });
}
const lookalike = { name: 'OvfImportRejectedError', code: 'ESXI_OVF_REJECTED', message: 'x', problems, isRetryable: false, details: {} };
const candidates = {
  null: null, object: {}, error: new Error('x'), lookalike,
  // The same code from its parent class, and a sibling of the family, from the other copy.
  parentWithSameCode: new copies.cjs.EsxiError('ESXI_OVF_REJECTED', 'x'),
  sibling: new copies.cjs.InvalidStateError('x'),
};
for (const [name, value] of Object.entries(candidates)) {
  out.negatives[name] = { ovf: copies.esm.OvfImportRejectedError.isInstance(value), esxi: copies.esm.EsxiError.isInstance(value) };
}
console.log(JSON.stringify(out));
`;

type Row = {
  from: string;
  isInstance: boolean;
  instanceOf: boolean;
  esxiIsInstance: boolean;
  baseIsInstance: boolean;
  sameCopy: boolean;
  siblingIsInstance: boolean;
  unbound: number;
  name: string;
  code: string;
  faultType: string;
  problems: unknown;
  json: Record<string, unknown>;
};
let probe: { sameClass: boolean; rows: Row[]; negatives: Record<string, { ovf: boolean; esxi: boolean }> };

beforeAll(async () => {
  await mkdir(join(repo, '.tmp'), { recursive: true });
  dir = await mkdtemp(join(repo, '.tmp', 'esxi-errors-'));
  // Self-contained bundles (no shared chunk), so every file holds its own copy of the classes.
  for (const format of ['esm', 'cjs'] as const) {
    await build({
      entry: { esxi: join(repo, 'src/esxi/index.ts'), errors: join(repo, 'src/errors.ts') },
      format: [format],
      outDir: dir,
      splitting: false,
      target: 'node20',
      config: false,
      dts: false,
      clean: false,
      sourcemap: false,
      silent: true,
    });
  }
  await writeFile(join(dir, 'probe.mjs'), PROBE);
  const { stdout } = await promisify(execFile)(process.execPath, ['probe.mjs'], { cwd: dir });
  probe = JSON.parse(stdout) as typeof probe;
}, 180_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('OvfImportRejectedError across the ESM and CJS copies', () => {
  it('the two builds really are two copies', () => {
    expect(probe.sameClass).toBe(false);
    expect(probe.rows).toHaveLength(2);
  });

  it('OvfImportRejectedError.isInstance and EsxiError.isInstance recognise one made by the other copy; instanceof does not', () => {
    for (const row of probe.rows) {
      expect(row, `made by ${row.from}`).toMatchObject({ isInstance: true, instanceOf: false, esxiIsInstance: true, baseIsInstance: true, sameCopy: true, siblingIsInstance: false });
      // Unbound, as a filter callback: only the error itself, not its parent class with the same code.
      expect(row.unbound).toBe(1);
    }
  });

  it('name, code, faultType, problems and toJSON are unchanged, and the marker does not show in JSON', () => {
    for (const row of probe.rows) {
      expect(row).toMatchObject({ name: 'OvfImportRejectedError', code: 'ESXI_OVF_REJECTED', faultType: 'OvfUnsupportedType', problems: [{ faultType: 'OvfUnsupportedType', message: 'bad section' }] });
      expect(row.json).toEqual({
        name: 'OvfImportRejectedError',
        code: 'ESXI_OVF_REJECTED',
        message: 'CreateImportSpec rejected the OVF descriptor',
        isRetryable: false,
        details: { faultType: 'OvfUnsupportedType', problems: [{ faultType: 'OvfUnsupportedType', message: 'bad section' }] },
      });
    }
  });

  it('anything else is not one: non-errors, a look-alike, its parent class with the same code, a sibling', () => {
    const { parentWithSameCode, sibling, ...others } = probe.negatives;
    for (const [name, verdict] of Object.entries(others)) expect(verdict, name).toEqual({ ovf: false, esxi: false });
    expect(parentWithSameCode).toEqual({ ovf: false, esxi: true });
    expect(sibling).toEqual({ ovf: false, esxi: true });
  });

  it('in this copy too: a marker of its own, an EsxiError and an ApMigrateError, not its siblings', () => {
    const e = new OvfImportRejectedError('x', []);
    expect(Object.hasOwn(OvfImportRejectedError, 'isInstance')).toBe(true);
    expect([OvfImportRejectedError.isInstance(e), EsxiError.isInstance(e), ApMigrateError.isInstance(e), InvalidStateError.isInstance(e)]).toEqual([true, true, true, false]);
    expect(OvfImportRejectedError.isInstance(new EsxiError('ESXI_OVF_REJECTED', 'x'))).toBe(false);
  });
});
