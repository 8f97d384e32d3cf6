/**
 * The one builder of a migration's report, for a dry run and a full run alike.
 *
 * @module
 */
import type { MigrationPlan } from '../policy/plan.js';
import type { ResourceProfile } from '../policy/profile.js';
import type { SourceOutcome } from '../spec/deployer.js';
import type { FrozenPids } from '../spec/source.js';
import type { PackEstimate, PackSummary } from '../spec/packager.js';
import type { ChosenMethod, Frozen } from './deploy-phases.js';
import type { Run } from './run.js';
import type { MigrationReport } from './types.js';

/** What the phases produced, as far as the run got. */
export interface ReportParts {
  profile: ResourceProfile;
  plan: MigrationPlan;
  chosen: ChosenMethod;
  estimate: PackEstimate;
  sourcePid?: number;
  sent?: PackSummary;
  frozen?: Frozen;
  healthyAt?: number;
  sourceOutcome?: SourceOutcome;
}

/** The report of `run` from what its phases produced. */
export function buildReport(run: Run, parts: ReportParts): MigrationReport {
  const { plan, chosen, sourcePid, frozen } = parts;
  const candidate = plan.candidates.find((c) => c.method === plan.chosen)!;
  const started = run.deployment.started;
  const activated = run.deployment.activated;
  const methodReport = chosen.deployer.describe?.(chosen.context, run.deployment) ?? {};
  const selfQuiesced = chosen.deployer.settleSource !== undefined;
  const defaultAction = sourcePid !== undefined && !selfQuiesced ? 'kept-running' : 'none';
  // How the source froze it, where it tells (non-enumerable properties of the pid list).
  const { freezer, freezerNote } = (frozen?.pids ?? []) as FrozenPids;
  return {
    name: chosen.context.name,
    method: plan.chosen,
    plan,
    profile: parts.profile,
    dryRun: !!run.options.dryRun,
    estimatedBytes: candidate.estimate.totalBytes,
    bundleEstimatedBytes: parts.estimate.bytes,
    // Every round and every cut attempt: the bundle's bytes, before compression.
    bytesSent: run.rounds.length ? run.rounds.reduce((sum, r) => sum + r.bytesSent + r.bytesSentBefore, 0) : (parts.sent?.totalBytes ?? 0),
    // The same after compression and the bandwidth cap: what the transport was given.
    wireBytes: run.rounds.length ? run.rounds.reduce((sum, r) => sum + r.wireBytes + r.wireBytesBefore, 0) : (parts.sent?.totalBytes ?? 0),
    ...(run.estimatedWireBytes !== undefined ? { estimatedWireBytes: run.estimatedWireBytes } : {}),
    manifestBytes: parts.sent?.manifestBytes ?? 0,
    phases: run.phases,
    ...(run.deployment.health ? { health: run.deployment.health } : {}),
    ...(started && activated ? { destination: { installDir: activated.installDir, pid: started.pid, endpoints: started.endpoints, logPath: started.logPath } } : {}),
    ...methodReport,
    source: { ...(sourcePid !== undefined ? { pid: sourcePid } : {}), action: parts.sourceOutcome ?? defaultAction },
    // A method that quiesces the source itself (a VM's power-off or snapshot) has that as its cutover.
    cutover: {
      mode: selfQuiesced ? 'copy' : run.cutover,
      ...(frozen?.pids.length ? { frozenProcesses: frozen.pids.length } : {}),
      ...(freezer ? { freezer } : {}),
      ...(freezerNote ? { freezerNote } : {}),
      ...(frozen?.pids.length && parts.healthyAt !== undefined ? { downtimeMs: parts.healthyAt - frozen.at } : {}),
    },
    rounds: run.rounds,
    ...(run.deployment.preflight?.receiver ? { receiver: run.deployment.preflight.receiver } : {}),
    ...(run.compression ? { compression: run.compression } : {}),
    totalMs: performance.now() - run.startedAt,
  };
}
