/**
 * The destination pre-flight shared by the file-based methods: platform, tools, free space and no
 * name collision, checked without changing anything (a dry run ends here).
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { DeployContext, PreflightReport } from '../spec/deployer.js';
import { DeployError } from './deploy-error.js';
import { launchTools } from './launch.js';
import { isSafeName, layoutFor, newStagingDir } from './layout.js';
import { checkProfileForDeploy, type ProfileSafetyOptions } from './profile-safety.js';
import { runScript } from './run-script.js';

const PREFLIGHT_SCRIPT = `
root="$1"; install="$2"; shift 2
# Change nothing (a dry run ends here): measure space where the root is or will be created.
probe="$root"; while [ ! -d "$probe" ]; do probe=$(dirname "$probe"); done
echo "os=$(uname -s)"; echo "release=$(uname -r)"; echo "arch=$(uname -m)"
echo "free_kb=$(df -Pk "$probe" | awk 'NR==2 {print $4}')"
if [ -e "$install" ] || [ -L "$install" ]; then echo "exists=1"; else echo "exists=0"; fi
for tool in "$@"; do p=$(command -v "$tool" 2>/dev/null) && echo "tool.$tool=$p"; done
exit 0
`;

/**
 * Check the destination: platform matches the plan's, the install directory is free, every tool
 * in `tools` exists, and there is room for `estimatedBytes` (plus 5% and 16 MiB of slack). Tools
 * in `optionalTools` are looked for too; the report's `tools` says which were found.
 */
export function preflightCommon(
  context: DeployContext,
  estimatedBytes: number,
  tools: readonly string[],
  optionalTools: readonly string[] = [],
): ResultAsync<PreflightReport<undefined>, ApMigrateError> {
  const { transport, name } = context;
  if (!isSafeName(name)) {
    return errAsync(new DeployError('PREFLIGHT_FAILED', `Invalid program name "${name}": use letters, digits, dot, dash, underscore (max 63)`));
  }
  const layout = layoutFor(transport, name);
  // Run from `/`: the root directory itself may not exist yet.
  const looked = [...new Set([...optionalTools, ...tools])];
  return runScript(transport, PREFLIGHT_SCRIPT, [transport.root, layout.installDir, ...looked], { cwd: '/', ...(context.signal ? { signal: context.signal } : {}) })
    // An abort stays an abort; anything else is this pre-flight's failure.
    .mapErr((e) => (e.code === 'ABORTED' ? e : new DeployError('PREFLIGHT_FAILED', `Pre-flight check on ${transport.description} failed: ${e.message}`, { cause: e, isRetryable: e.isRetryable })))
    .andThen((result) => {
      const facts = new Map<string, string>();
      for (const line of result.stdout.split('\n')) {
        const eq = line.indexOf('=');
        if (eq > 0) facts.set(line.slice(0, eq), line.slice(eq + 1));
      }
      const foundTools: Record<string, string> = {};
      for (const tool of looked) {
        const path = facts.get(`tool.${tool}`);
        if (path) foundTools[tool] = path;
      }
      const missing = tools.filter((t) => !foundTools[t]);
      if (missing.length) {
        return errAsync(new DeployError('TOOL_MISSING', `The destination ${transport.description} lacks: ${missing.join(', ')}`, { details: { missing } }));
      }
      if (facts.get('exists') === '1') {
        return errAsync(new DeployError('DESTINATION_EXISTS', `${layout.installDir} already exists at ${transport.description}; choose another name or remove it`));
      }
      const os = (facts.get('os') ?? '').toLowerCase();
      const expected = context.plan.destination.os;
      if (os !== expected) {
        return errAsync(new DeployError('PLATFORM_MISMATCH', `The plan was made for a ${expected} destination but ${transport.description} runs ${os || 'an unknown OS'}`));
      }
      const freeBytes = Number(facts.get('free_kb') ?? 'NaN') * 1024;
      const needed = Math.ceil(estimatedBytes * 1.05) + 16 * 1024 * 1024;
      if (!Number.isFinite(freeBytes) || freeBytes < needed) {
        return errAsync(
          new DeployError('INSUFFICIENT_SPACE', `The destination has ${Math.floor(freeBytes / 1048576)} MiB free under ${transport.root}; the bundle needs about ${Math.ceil(needed / 1048576)} MiB`, {
            details: { freeBytes, needed },
          }),
        );
      }
      return okAsync<PreflightReport<undefined>, ApMigrateError>({
        platform: { os, release: facts.get('release') ?? '', arch: facts.get('arch') ?? '' },
        freeBytes,
        tools: foundTools,
        installDir: layout.installDir,
        stagingDir: newStagingDir(transport, name),
        facts: undefined,
      });
    });
}

/**
 * Pre-flight of the Linux deployers: the profile's own check first, then the destination's, with
 * the launcher's tools (`setpriv`, and `prlimit` for a profile with limits) added to `tools`.
 */
export function preflightLinux(context: DeployContext, estimatedBytes: number, tools: readonly string[], safety: ProfileSafetyOptions): ResultAsync<PreflightReport<undefined>, ApMigrateError> {
  const checked = checkProfileForDeploy(context.profile, safety);
  if (checked.isErr()) return errAsync(checked.error);
  // gzip, where there: the receiver travels gzipped (23% of its bytes), in one command.
  return preflightCommon(context, estimatedBytes, [...new Set([...tools, ...launchTools(context)])], ['gzip']);
}
