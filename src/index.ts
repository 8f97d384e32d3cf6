/**
 * ap-migrate: move an application program to another machine with the lightest isolation method
 * that isolates every resource it really uses.
 *
 * @packageDocumentation
 */
export * from './errors.js';
export * from './policy/index.js';

// Interfaces ("spec"): implementations live apart from them.
export type * from './spec/executor.js';
export type * from './spec/profiler.js';
export type * from './spec/transport.js';
export type * from './spec/deployer.js';
export type * from './spec/packager.js';
export type * from './spec/source.js';

// Executors.
export { createLocalExecutor, ExecError, describeArgv } from './exec/local.js';
export { createSshCliExecutor } from './exec/ssh-cli.js';
export type { SshCliExecutorOptions } from './exec/ssh-cli.js';

// Profilers.
export { ProfileError } from './profilers/common.js';
export type { ProgramOutput } from './profilers/common.js';
export { detectProfilers } from './profilers/detect.js';
export { createEbpfProfiler, ebpfAvailability } from './profilers/ebpf.js';
export type { EbpfProfilerOptions } from './profilers/ebpf.js';
export { createStraceProfiler, straceAvailability } from './profilers/strace.js';
export type { StraceProfilerOptions } from './profilers/strace.js';
export { createProcfsProfiler, procfsAvailability } from './profilers/procfs.js';
export type { ProcfsProfilerOptions } from './profilers/procfs.js';
export { createFreeBsdProfiler, FREEBSD_PROFILER_NAME } from './profilers/freebsd.js';
export type { FreeBsdProfilerOptions } from './profilers/freebsd.js';
export { FreeBsdParseError } from './profilers/freebsd-parsers.js';
export { detectFreeBsdHostFacts, factsFromOutputs, parseUnameRelease, parseSysctlInteger, SYSV_JAIL_PARAMS, FACT_COMMANDS } from './platforms/freebsd-facts.js';
export type { FreeBsdHostFacts, SysctlValue } from './platforms/freebsd-facts.js';

// Bundles.
export * from './bundle/index.js';

// Deployment and orchestration.
export { migrate, MIGRATION_PHASES } from './migrate.js';
export type { Cutover } from './migrate.js';
export { createExecutorSource } from './source/executor-source.js';
export { createSourceProfiler, type SourceProfilerOptions } from './source/source-profiler.js';
export { captureProgram, summarizeReasons, type CaptureOptions, type ReasonSummary } from './capture/index.js';
export type { MigrateOptions, MigrationReport, MigrationProgress, MigrationPhase, PhaseTiming, TransferRound } from './migrate.js';
export * from './transfer/index.js';
export { DeployError } from './destination/deploy-error.js';
export type { DeployErrorCode } from './destination/deploy-error.js';
export { createBundlePackager, withProfileTrees, type SelectBundle } from './bundle/packager.js';
export { createChrootDeployer, CHROOT_TOOLS } from './methods/chroot/deployer.js';
export type { ChrootDeployerOptions } from './methods/chroot/deployer.js';
export { createNamespacesDeployer, defaultVethAddresses, namespaceNames, NAMESPACES_TOOLS } from './methods/linux-namespaces/deployer.js';
export type { NamespacesDeployerOptions, VethAddresses } from './methods/linux-namespaces/deployer.js';
export {
  createJailDeployer,
  checkJailCapabilities,
  jailBundleContents,
  measureFreeBsdBase,
  parseDuSk,
  jailPaths,
  JailCapabilityError,
  JAIL_TOOLS,
  JAIL_PATH,
  JAIL_HOST_FILES,
  FREEBSD_BASE_DIRS,
} from './methods/freebsd-jail/deployer.js';
export type { JailDeployerOptions, JailNetworkOption, JailBundleContents, FreeBsdBaseMeasurement, JailFacts, CheckedJailProfile } from './methods/freebsd-jail/deployer.js';
export { renderJailConf, quoteJailConfString, execStartCommand, isValidJailName, DEFAULT_DEVFS_RULESET } from './methods/freebsd-jail/conf.js';
export type { JailConfSpec, JailNetwork } from './methods/freebsd-jail/conf.js';
export * from './esxi/index.js';
export { measureHostingVm } from './methods/esxi-vm/hosting-vm.js';
export type { HostingVm, VmSessions, VmTransfer, VmTransferUsed, HostingVmMoveReport } from './methods/esxi-vm/hosting-vm.js';
export { createEsxiVmDeployer, type EsxiVmFacts, type VmPayload } from './methods/esxi-vm/deployer.js';
export { createLocalTransport } from './transports/local.js';
export type { LocalTransportOptions } from './transports/local.js';
export { createSshTransport } from './transports/ssh.js';
export type { SshTransportOptions } from './transports/ssh.js';
export type { SshConnectionOptions } from './transports/ssh-options.js';
export { createOpenSshTransport } from './transports/openssh.js';
export type { OpenSshTransportOptions } from './transports/openssh.js';
export { parseDestination } from './transports/url.js';
export type { Destination, SshDestination, LocalDestination } from './transports/url.js';
export { TransportError } from './transports/errors.js';
export { createTransport, resolveSshImplementation } from './transports/select.js';
export type { CreateTransportOptions, SshImplementation } from './transports/select.js';
export { parseKnownHosts, checkHostKey, fingerprintSha256, knownHostsName } from './transports/known-hosts.js';
export type { KnownHostEntry, HostKeyVerdict } from './transports/known-hosts.js';
export { shellQuote, shellQuoteArgv } from './transports/quote.js';
export {
  checkListing,
  POSIX_RECEIVE_SCRIPT,
  POSIX_RECEIVER_TOOLS,
  probePosixReceiver,
  receivePosix,
  receiveWithPosixReceiver,
  type PosixListingCheck,
  type PosixReceiveOptions,
  type PosixReceiveReport,
  type PosixReceiverProbe,
  type ReceiverKind,
  type ReceiveWithPosixOptions,
} from './destination/posix-receiver.js';
