/**
 * How every benchmark reports: ratio lines, printed the same way by `npm run bench` and by a
 * bench file run on its own (`npx tsx bench/<name>.ts`).
 */
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';

/** One benchmark line: `ratio` is ours over the baseline (the line's name says which way is better). */
export interface RatioLine {
  name: string;
  ratio: number;
  detail?: string;
}

/** Print ratio lines, aligned. */
export function printRatios(lines: readonly RatioLine[]): void {
  for (const l of lines) console.log(`  ${l.name.padEnd(48)} ${l.ratio.toFixed(2).padStart(6)}x${l.detail ? `  ${l.detail}` : ''}`);
}

/** Run `bench` and print its lines when `moduleUrl` is the file node was started with; nothing when bench/run.ts imports it. */
export function runWhenCalledDirectly(moduleUrl: string, bench: () => Promise<readonly RatioLine[]>): void {
  if (!process.argv[1] || moduleUrl !== pathToFileURL(process.argv[1]).href) return;
  bench().then(printRatios, (e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}

/** Quote one word for `sh` (single quotes). */
export function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Run a shell pipeline; resolves with elapsed seconds. */
export function timeShell(script: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`${script} exited ${code}: ${stderr}`));
      else resolve(Number(process.hrtime.bigint() - started) / 1e9);
    });
  });
}
