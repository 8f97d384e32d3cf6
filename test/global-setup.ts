/**
 * Builds the destination-side receiver (dist/receiver.cjs) once before the tests, as `npm run
 * build` does, so deployment tests running from sources upload the same file users ship.
 */
import { build } from 'esbuild';

export default async function setup(): Promise<void> {
  await build({
    entryPoints: ['src/destination/receiver-cli.ts'],
    outfile: 'dist/receiver.cjs',
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node18',
    minify: true,
    logLevel: 'warning',
  });
}
