/**
 * Files and bytes per reason: what the plan shows of a profile's capture. Pure.
 *
 * @module
 */
import { FILE_REASONS, type FileReason, type ResourceProfile } from '../policy/profile.js';

/** Count and bytes per reason; `unspecified` for uses without a reason (hand-written profiles). */
export type ReasonSummary = Record<FileReason | 'unspecified', { files: number; bytes: number }>;

/**
 * Count each file once, under its first reason (the profiler's own reasons come first), and each
 * tree under its reason with the size measured when it was captured. Written wins over named: a
 * tree labelled `config` that holds a file the program wrote (a log directory its config names,
 * in a profile captured before the capture relabelled such trees) counts as a `data-root`.
 */
export function summarizeReasons(profile: Pick<ResourceProfile, 'files' | 'trees'>): ReasonSummary {
  const summary = Object.fromEntries([...FILE_REASONS, 'unspecified'].map((r) => [r, { files: 0, bytes: 0 }])) as ReasonSummary;
  const treePaths = (profile.trees ?? []).map((t) => t.path);
  const written = profile.files.filter((f) => f.access.includes('write')).map((f) => f.path);
  const reasonOf = (t: { path: string; reason: FileReason }): FileReason =>
    t.reason === 'config' && written.some((w) => w === t.path || w.startsWith(`${t.path}/`)) ? 'data-root' : t.reason;
  for (const f of profile.files) {
    // A file inside a tree is carried (and counted) with the tree.
    if (treePaths.some((t) => f.path.startsWith(`${t}/`))) continue;
    const reason = f.reasons?.[0] ?? 'unspecified';
    summary[reason].files += 1;
    summary[reason].bytes += f.kind === 'regular' ? f.size : 0;
  }
  for (const t of profile.trees ?? []) {
    const reason = reasonOf(t);
    summary[reason].files += t.files;
    summary[reason].bytes += t.bytes;
  }
  return summary;
}
