/** The demo programs (examples/demo/*.c), compiled once per test run into test/.build/. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const BUILD_DIR = resolve('test/.build/demo');

/** Compile examples/demo/NAME.c (when newer than the binary) and return the binary's path. */
export function demoBinary(name: 'notesd' | 'echod' | 'ipcpair'): string {
  const source = resolve(`examples/demo/${name}.c`);
  const binary = join(BUILD_DIR, name);
  mkdirSync(BUILD_DIR, { recursive: true });
  if (!existsSync(binary) || statSync(binary).mtimeMs < statSync(source).mtimeMs) {
    execFileSync('gcc', ['-O2', '-Wall', '-o', binary, source]);
  }
  return binary;
}
