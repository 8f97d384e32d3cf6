/**
 * Plain-text rendering of a plan, for the CLI and examples.
 *
 * @module
 */
import { formatBytes, type MigrationPlan } from './plan.js';

function pad(cells: string[][]): string {
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  return cells.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

/** What is wrong with `value` as a {@link MigrationPlan} (only what rendering needs), or undefined. */
function planShapeProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return `got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}`;
  const p = value as Record<string, unknown>;
  for (const key of ['classes', 'evidence', 'candidates', 'concerns'] as const) if (!Array.isArray(p[key])) return `\`${key}\` is not an array`;
  for (const key of ['source', 'destination'] as const) if (typeof p[key] !== 'object' || p[key] === null) return `\`${key}\` is not a platform`;
  if (typeof p.chosen !== 'string') return '`chosen` is not a method id';
  return undefined;
}

/**
 * Render a plan as a table of candidates followed by the reasons for each rejection. Never throws:
 * a value that is not a {@link MigrationPlan} gives one line starting `invalid migration plan:`.
 */
export function formatPlan(plan: MigrationPlan): string {
  const problem = planShapeProblem(plan);
  if (problem !== undefined) return `invalid migration plan: ${problem}`;
  try {
    return renderPlan(plan);
  } catch (e) {
    return `invalid migration plan: ${e instanceof Error ? e.message : String(e)}`;
  }
}

function renderPlan(plan: MigrationPlan): string {
  const lines: string[] = [];
  lines.push(`uses: ${plan.classes.join(' + ')}  (${plan.evidence.map((e) => `${e.kind}: ${e.example}`).join('; ')})`);
  lines.push(`platform: ${plan.source.os} ${plan.source.release} -> ${plan.destination.os} ${plan.destination.release}`);
  // With compression on the wire: the estimate before it, and after it (what the ranking used).
  const compression = plan.compression;
  const wire = compression !== undefined || plan.candidates.some((c) => c.estimate.wireBytes !== undefined);
  const rows = [['', 'method', 'allowed', 'isolates', 'estimate', ...(wire ? [`on the wire${compression ? ` (${compression.codec}-${compression.level})` : ''}`] : []), 'basis']];
  for (const c of plan.candidates) {
    rows.push([
      c.method === plan.chosen ? '*' : ' ',
      c.method,
      c.allowed ? 'yes' : 'no',
      c.isolates.join(',') || '-',
      formatBytes(c.estimate.totalBytes),
      ...(wire ? [c.estimate.wireBytes !== undefined ? formatBytes(c.estimate.wireBytes) : '-'] : []),
      c.estimate.measured ? 'measured' : 'includes defaults',
    ]);
  }
  lines.push(pad(rows));
  if (compression) {
    const ratios = Object.entries(compression.ratios).map(([cls, ratio]) => `${cls} ${ratio}${compression.measured.includes(cls as never) ? ' (measured)' : ''}`);
    lines.push(`compression: ${compression.codec} level ${compression.level}, ratios ${ratios.join(', ')}`);
  }
  for (const c of plan.candidates) {
    for (const concern of c.concerns) {
      if (concern.severity === 'info') continue;
      lines.push(`  ${c.method} [${concern.severity}] ${concern.message}${concern.fix ? ` Fix: ${concern.fix}.` : ''}`);
    }
  }
  for (const concern of plan.concerns) lines.push(`  plan [${concern.severity}] ${concern.message}`);
  lines.push(`chosen: ${plan.chosen} (rules ${plan.rulesVersion})`);
  return lines.join('\n');
}
