/**
 * Test prerequisites. A test that needs root or a system tool calls `requirements(...)` and
 * skips with a printed reason when something is missing. CI sets AP_MIGRATE_STRICT=1, which turns
 * every such skip into a failure, so a green CI means every system test really ran.
 */
import { execFileSync } from 'node:child_process';

export const STRICT = process.env.AP_MIGRATE_STRICT === '1';

export type Requirement = 'root' | `tool:${string}`;

function hasTool(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v "$1"`, 'sh', tool], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Returns the reasons the requirements are not met (empty when all are). */
export function missing(...needs: Requirement[]): string[] {
  const reasons: string[] = [];
  for (const need of needs) {
    if (need === 'root') {
      if (process.getuid?.() !== 0) reasons.push('needs root');
    } else {
      const tool = need.slice('tool:'.length);
      if (!hasTool(tool)) reasons.push(`needs the tool "${tool}" on PATH`);
    }
  }
  return reasons;
}

/**
 * Use as `describe.skipIf(skipUnless('root', 'tool:strace'))(...)`. Returns true (skip) with a
 * printed reason when something is missing; throws instead under AP_MIGRATE_STRICT=1.
 */
export function skipUnless(...needs: Requirement[]): boolean {
  const reasons = missing(...needs);
  if (reasons.length === 0) return false;
  const message = `skipping: ${reasons.join(', ')}`;
  if (STRICT) throw new Error(`AP_MIGRATE_STRICT=1 forbids skips: ${message}`);
  console.warn(message);
  return true;
}
