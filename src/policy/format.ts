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

/** Render a plan as a table of candidates followed by the reasons for each rejection. */
export function formatPlan(plan: MigrationPlan): string {
  const lines: string[] = [];
  lines.push(`uses: ${plan.classes.join(' + ')}  (${plan.evidence.map((e) => `${e.kind}: ${e.example}`).join('; ')})`);
  lines.push(`platform: ${plan.source.os} ${plan.source.release} -> ${plan.destination.os} ${plan.destination.release}`);
  const rows = [['', 'method', 'allowed', 'isolates', 'estimate', 'basis']];
  for (const c of plan.candidates) {
    rows.push([
      c.method === plan.chosen ? '*' : ' ',
      c.method,
      c.allowed ? 'yes' : 'no',
      c.isolates.join(',') || '-',
      formatBytes(c.estimate.totalBytes),
      c.estimate.measured ? 'measured' : 'includes defaults',
    ]);
  }
  lines.push(pad(rows));
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
