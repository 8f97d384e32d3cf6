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

/**
 * A TCP client for echod, run with `node -e` *at the destination host* (inside its network
 * namespace, through SSH): read the greeting, send one line, print what came back.
 */
export const ECHO_CLIENT = `
const [host, port, line] = process.argv.slice(1);
const socket = require('node:net').connect({ host, port: Number(port) });
let data = '';
const timer = setTimeout(() => { console.error('no answer: ' + JSON.stringify(data)); process.exit(2); }, 5000);
socket.on('data', (chunk) => {
  data += chunk;
  const lines = data.split('\\n').length;
  if (lines === 2) socket.write(line + '\\n');
  if (lines >= 3) { clearTimeout(timer); process.stdout.write(data); socket.end(); }
});
socket.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

