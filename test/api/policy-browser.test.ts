/**
 * `ap-migrate/policy` stands on its own: bundled for the browser it needs no `node:` module and
 * no ssh2, and it plans a migration in a realm that has neither `require` nor `process`; from
 * CommonJS, `require('ap-migrate/policy')` loads no ssh2. The package is built with the library
 * blocks of tsup.config.ts into a private node_modules/ap-migrate under .tmp/ (with the real
 * package.json, whose exports map resolves `ap-migrate/policy`), as test/api/errors.test.ts does.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import vm from 'node:vm';
import { build as bundle } from 'esbuild';
import { build, type Options } from 'tsup';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import config from '../../tsup.config.js';
import { ApMigrateError, NoAllowedMethodError } from '../../src/errors.js';
import { FREEBSD_92, LINUX, filesOnly, withNetwork, withSysvIpc } from '../policy/profiles.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
let root = '';

/** Build `ap-migrate` (ESM and CJS, both entries) into `<root>/node_modules/ap-migrate`. */
async function buildPackage(prefix: string): Promise<string> {
  await mkdir(join(repo, '.tmp'), { recursive: true });
  const dir = await mkdtemp(join(repo, '.tmp', prefix));
  const pkg = join(dir, 'node_modules', 'ap-migrate');
  const library = (config as Options[]).filter((o) => typeof o.entry === 'object' && o.entry !== null && 'policy' in o.entry);
  for (const options of library) {
    await build({ ...options, config: false, outDir: join(pkg, 'dist'), dts: false, clean: false, sourcemap: false, silent: true });
  }
  await copyFile(join(repo, 'package.json'), join(pkg, 'package.json'));
  // Its own package scope, so that `ap-migrate` does not resolve to the repository itself.
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'probe', private: true, type: 'module' }));
  return dir;
}

interface Bundled {
  code: string;
  inputs: string[];
}
let browser: Bundled;

/** What the vm realm's copy exports (its classes are not this realm's). */
interface PolicyApi {
  planMigration: (profile: unknown, options?: unknown) => {
    isOk(): boolean;
    isErr(): boolean;
    value: { chosen: string };
    error: unknown;
  };
  formatPlan: (plan: unknown) => string;
  BUILTIN_METHODS: readonly { id: string }[];
  ResourceProfileSchema: { safeParse(value: unknown): { success: boolean } };
  InvalidInputError: { isInstance(value: unknown): boolean };
}

beforeAll(async () => {
  root = await buildPackage('api-policy-');
  const result = await bundle({
    stdin: { contents: "export * from 'ap-migrate/policy';", resolveDir: root, sourcefile: 'entry.js' },
    bundle: true,
    platform: 'browser',
    format: 'iife',
    globalName: 'apMigratePolicy',
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  browser = { code: result.outputFiles[0]!.text, inputs: Object.keys(result.metafile.inputs) };
}, 180_000);

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('ap-migrate/policy in a browser bundle', () => {
  it('resolves to the built dist/policy.js and pulls in no ssh2 and no Node built-in', () => {
    expect(browser.inputs.some((p) => p.endsWith('node_modules/ap-migrate/dist/policy.js'))).toBe(true);
    expect(browser.inputs.filter((p) => /(^|\/)(ssh2|cpu-features|node-ssh)\//.test(p) || p.startsWith('node:'))).toEqual([]);
    expect(browser.code).not.toMatch(/\b(?:require|import)\s*\(\s*["'](?:node:[\w/]+|ssh2)["']\s*\)/);
    expect(browser.code).not.toMatch(/\bfrom\s*["']node:/);
    expect(browser.code).not.toMatch(/\brequire\s*\(/);
  });

  it('plans a migration in a realm with no require, process or Buffer', () => {
    const context = vm.createContext({});
    expect(vm.runInContext('[typeof require, typeof process, typeof Buffer, typeof module]', context)).toEqual(['undefined', 'undefined', 'undefined', 'undefined']);
    vm.runInContext(browser.code, context, { filename: 'policy.browser.js' });
    const api = (context as { apMigratePolicy: PolicyApi }).apMigratePolicy;
    expect(api.BUILTIN_METHODS.map((m) => m.id)).toEqual(['chroot', 'freebsd-jail', 'linux-namespaces', 'esxi-vm']);

    const cases: [unknown, string][] = [
      [filesOnly(LINUX), 'chroot'],
      [withNetwork(FREEBSD_92), 'freebsd-jail'],
      [withSysvIpc(LINUX), 'linux-namespaces'],
      [withSysvIpc(FREEBSD_92), 'esxi-vm'],
    ];
    for (const [profile, chosen] of cases) {
      // As JSON: nothing of this realm crosses over.
      const plan = api.planMigration(JSON.stringify(profile));
      expect(plan.isOk()).toBe(true);
      expect(plan.value.chosen).toBe(chosen);
      expect(api.formatPlan(plan.value)).toContain(`chosen: ${chosen}`);
    }
    expect(api.ResourceProfileSchema.safeParse(JSON.parse(JSON.stringify(filesOnly()))).success).toBe(true);

    // An error made in that realm is recognised here by isInstance, not by instanceof.
    const refused = api.planMigration(JSON.stringify(withNetwork(LINUX)), { allowedMethods: ['chroot'] });
    expect(refused.isErr()).toBe(true);
    expect(NoAllowedMethodError.isInstance(refused.error)).toBe(true);
    expect(ApMigrateError.isInstance(refused.error)).toBe(true);
    expect(refused.error instanceof ApMigrateError).toBe(false);
    const invalid = api.planMigration('{"executable": 7}');
    expect(api.InvalidInputError.isInstance(invalid.error)).toBe(true);
  });
});

describe('ap-migrate/policy from CommonJS and ESM', () => {
  /** Runs in a child Node, so that its module cache starts empty. */
  const PROBE = String.raw`
const path = require('node:path');
const loaded = () => Object.keys(require.cache).map((p) => p.split(path.sep).join('/'));
const policy = require('ap-migrate/policy');
const planned = policy.planMigration(${JSON.stringify(JSON.stringify(filesOnly(LINUX)))});
const afterPolicy = loaded();
const root = require('ap-migrate');
const afterRoot = loaded();
console.log(JSON.stringify({
  chosen: planned.isOk() ? planned.value.chosen : planned.error.message,
  afterPolicy,
  afterRoot,
  sameClass: root.InvalidInputError === policy.InvalidInputError && root.planMigration === policy.planMigration,
}));
`;

  it('require("ap-migrate/policy") loads no ssh2; the root does (so the check can see it)', async () => {
    await writeFile(join(root, 'probe.cjs'), PROBE);
    const { stdout } = await promisify(execFile)(process.execPath, ['probe.cjs'], { cwd: root });
    const out = JSON.parse(stdout) as { chosen: string; afterPolicy: string[]; afterRoot: string[]; sameClass: boolean };
    expect(out.chosen).toBe('chroot');
    const ours = out.afterPolicy.filter((p) => p.includes('/node_modules/ap-migrate/'));
    expect(ours.some((p) => p.endsWith('/dist/policy.cjs'))).toBe(true);
    expect(ours.some((p) => p.endsWith('/dist/index.cjs'))).toBe(false);
    expect(out.afterPolicy.filter((p) => /\/node_modules\/(ssh2|cpu-features|node-ssh)\//.test(p))).toEqual([]);
    // Only the policy core's own dependencies.
    const deps = new Set(out.afterPolicy.filter((p) => p.includes('/node_modules/')).map((p) => /^\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(p.slice(p.lastIndexOf('/node_modules/')))?.[1]));
    expect([...deps].sort()).toEqual(['ap-migrate', 'neverthrow', 'zod']);
    expect(out.afterRoot.some((p) => p.includes('/node_modules/ssh2/'))).toBe(true);
    // One copy of each class in one format: the root re-exports the policy chunk.
    expect(out.sameClass).toBe(true);
  });

  it('import("ap-migrate/policy") gives the same classes as import("ap-migrate")', async () => {
    const probe = `const [p, r] = await Promise.all([import('ap-migrate/policy'), import('ap-migrate')]);
console.log(JSON.stringify([p.InvalidInputError === r.InvalidInputError, p.planMigration === r.planMigration, import.meta.resolve('ap-migrate/policy')]));`;
    await writeFile(join(root, 'probe-esm.mjs'), probe);
    const { stdout } = await promisify(execFile)(process.execPath, ['probe-esm.mjs'], { cwd: root });
    const [sameClass, samePlan, resolved] = JSON.parse(stdout) as [boolean, boolean, string];
    expect([sameClass, samePlan]).toEqual([true, true]);
    expect(resolved.endsWith('/node_modules/ap-migrate/dist/policy.js')).toBe(true);
  });
});
