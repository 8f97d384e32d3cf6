/**
 * Builds the C fixture programs in test/fixtures/programs with gcc into test/.build/, once per
 * source change (the binary's name carries a hash of its sources), so suites can share them.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const sources = path.resolve(here, '../fixtures/programs');
const buildDir = path.resolve(here, '../.build');

/** The fixture programs, by source file name without `.c`. */
export const FIXTURE_PROGRAMS = ['files_only', 'tcp', 'sysv', 'posix_mq', 'fifo', 'fork_exec', 'thread_files', 'lookups'] as const;
/** One fixture program's name. */
export type FixtureProgram = (typeof FIXTURE_PROGRAMS)[number];

/** Compile `name` (if its sources changed) and return the absolute path of the binary. */
export function fixtureBinary(name: FixtureProgram): string {
  const source = path.join(sources, `${name}.c`);
  const hash = createHash('sha256')
    .update(readFileSync(source))
    .update(readFileSync(path.join(sources, 'common.h')))
    .digest('hex')
    .slice(0, 12);
  const binary = path.join(buildDir, `${name}-${hash}`);
  if (existsSync(binary)) return binary;
  mkdirSync(buildDir, { recursive: true });
  // Build to a temporary name, then rename: parallel suites never run a half-written binary.
  const partial = `${binary}.${process.pid}.tmp`;
  execFileSync('gcc', ['-O1', '-Wall', '-Wextra', '-Werror', '-o', partial, source, '-lpthread', '-lrt'], { stdio: 'pipe' });
  renameSync(partial, binary);
  return binary;
}

/** Compile every fixture program; returns their paths by name. */
export function buildFixtures(): Record<FixtureProgram, string> {
  return Object.fromEntries(FIXTURE_PROGRAMS.map((name) => [name, fixtureBinary(name)])) as Record<FixtureProgram, string>;
}
