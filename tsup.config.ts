import { defineConfig, type Options } from 'tsup';

/**
 * The library: `ap-migrate` and `ap-migrate/policy` (the pure core: no ssh2, no `node:`). Both
 * entries are split into shared chunks, so that an app importing both gets one copy of each class.
 */
const library = {
  entry: { index: 'src/index.ts', policy: 'src/policy/index.ts' },
  splitting: true,
  dts: true,
  sourcemap: true,
  target: 'node20',
} satisfies Options;

export default defineConfig([
  // ESM without tsup's shims: they import "path" and "url" into the chunk the policy entry shares,
  // which a browser bundler cannot resolve. ESM code uses `import.meta.url`, never `__filename`.
  { ...library, format: ['esm'], clean: true, shims: false },
  // CommonJS with them: its `import.meta.url` shim needs no import.
  { ...library, format: ['cjs'], shims: true },
  {
    entry: { cli: 'src/cli/main.ts' },
    format: ['esm'],
    sourcemap: true,
    shims: true,
    target: 'node20',
    banner: { js: '#!/usr/bin/env node' },
  },
  {
    // The destination-side receiver: one self-contained file, uploaded to the destination.
    entry: { receiver: 'src/destination/receiver-cli.ts' },
    format: ['cjs'],
    outExtension: () => ({ js: '.cjs' }),
    noExternal: [/.*/],
    platform: 'node',
    target: 'node18',
    minify: true,
  },
]);
