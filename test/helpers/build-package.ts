/**
 * A built copy of the package for tests that check errors across copies (ESM vs CJS, two builds).
 */
import { copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Options } from 'tsup';
import { expect } from 'vitest';
import config from '../../tsup.config.js';

/** The repository root. */
export const repo = fileURLToPath(new URL('../..', import.meta.url));

/** Build `ap-migrate` (ESM and CJS, both entries) into `<root>/node_modules/ap-migrate`. */
export async function buildPackage(prefix: string): Promise<string> {
  await mkdir(join(repo, '.tmp'), { recursive: true });
  const dir = await mkdtemp(join(repo, '.tmp', prefix));
  const pkg = join(dir, 'node_modules', 'ap-migrate');
  const library = (config as Options[]).filter((o) => typeof o.entry === 'object' && o.entry !== null && 'policy' in o.entry);
  expect(library.map((o) => o.format).flat().sort()).toEqual(['cjs', 'esm']);
  for (const options of library) {
    await build({ ...options, config: false, outDir: join(pkg, 'dist'), dts: false, clean: false, sourcemap: false, silent: true });
  }
  await copyFile(join(repo, 'package.json'), join(pkg, 'package.json'));
  // Its own package scope: under the repository's package.json, `import 'ap-migrate'` would resolve
  // to the repository itself (a package may import its own name) and load the shared dist/.
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'probe', private: true, type: 'module' }));
  return dir;
}
