/**
 * What the destination side of every file-based method shares: pre-flight, the receiver, the
 * private root, the launcher, the health check and rollback. Methods import these; they never
 * import each other.
 *
 * @module
 */
export { DeployError, type DeployErrorCode } from './deploy-error.js';
export { runScript } from './run-script.js';
export { isSafeName, layoutFor, newStagingDir, type DestinationLayout } from './layout.js';
export { preflightCommon, preflightLinux } from './preflight.js';
export { buildRootAtDestination, inventoryWithReceiver, locateReceiver, receiveWithReceiver, seedPaths } from './receiver.js';
export {
  HOST_TOOL_ENV,
  launchArgv,
  launchTools,
  privilegeDropArgv,
  programArgvFile,
  programArgvPath,
  programCommand,
  programEnv,
  REAPER_SCRIPT,
  START_FACTS_SCRIPT,
  startDetached,
  startFactsArgv,
  supervisedLaunchArgv,
} from './launch.js';
export { checkProfileForDeploy, checkStartFacts, type ProfileSafetyOptions } from './profile-safety.js';
export { healthCheckCommon, maskTitle, readinessRoles, type HealthCheckOptions } from './health.js';
export { rollbackCommon, stagingDirOf } from './rollback.js';
export { accountLines, buildAndActivate, checkMethod, endpointsOf, rootSpecOf } from './linux-root.js';
export { defaultVethAddresses, type VethAddresses } from './veth.js';
