/**
 * Copy a VM from one standalone ESXi host to another through the datastore HTTP API, without
 * vCenter: quiesce the source (power it off, or take a crash-consistent snapshot and copy the
 * frozen parent disks while it keeps running), stream every file of its directory GET -> PUT (no
 * local disk, bounded memory), register the copy at the destination, power it on and check it
 * runs. Any failure removes what this call created at the destination, removes the snapshot it
 * took and powers the source back on if this call powered it off. The source VM is never
 * destroyed or unregistered.
 *
 * The copy runs as phases over one explicit state (what was looked up, what was changed), so
 * that its pre-flight ({@link preflightVmCopy}: the look-up alone) and its rollback
 * ({@link undoVmCopy}: undoing a finished copy) are the same code the copy runs.
 *
 * @module
 */
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { ResultAsync } from 'neverthrow';
import { readRef, renewSessionThrowing, type VimClient } from './client.js';
import { assertSafeDatastorePath, datastorePathExists, openDatastoreFile, putDatastoreFile, type DatastoreFileRef } from './datastore-http.js';
import { AlreadyExistsError, EsxiAbortedError, type EsxiError, EsxiTransportError, FileNotFoundError, InvalidStateError, NotAuthenticatedError, ObjectNotFoundError, ProtocolError, asEsxiError } from './errors.js';
import { findVmByName, formatDatastorePath, getHostInventory, listVms, parseDatastorePath, vmSizeBytes, type HostInventory, type VmInfo } from './inventory.js';
import { createSnapshot, deleteDatastoreFile, destroyEntity, listDatastoreDirectory, makeDirectory, powerOffVm, powerOnVm, registerVm, removeSnapshot } from './operations.js';
import { getProperties } from './properties.js';
import { child, childText, childrenNamed, type XmlElement } from './xml.js';
import type { MoRef } from './soap.js';
import type { WaitOptions } from './tasks.js';

/** Progress of a VM copy, reported while files stream. */
export interface CopyProgress {
  /** File being copied (relative to the VM directory). */
  file: string;
  /** Bytes of this file sent so far. */
  fileBytes: number;
  /** Bytes of all files sent so far. */
  totalBytes: number;
  /** Bytes to send in all. */
  expectedBytes: number;
}

/**
 * How a running source VM is made consistent for the copy:
 * - `power-off`: power it off first; the copy is exactly the disk at rest (the default).
 * - `snapshot`: take a snapshot without memory or guest quiescing, copy the parent disks it
 *   freezes while the VM keeps running on the new delta, then remove the snapshot. The copy is
 *   crash-consistent (as if the power was cut at the snapshot), and the source keeps serving.
 */
export type QuiesceMode = 'power-off' | 'snapshot';

/** Options of a VM copy. */
export interface CopyVmOptions {
  /** How to quiesce a running source (default `power-off`); ignored for a powered-off one. */
  quiesce?: QuiesceMode;
  /** Keep both sessions alive with a `CurrentTime` call this often during the copy (default 5 minutes). */
  sessionKeepAliveMs?: number;
  /** Datastore at the destination (default: the source datastore's name). */
  destinationDatastore?: string;
  /** Name of the registered copy (default: the source VM's name). */
  destinationName?: string;
  /** Directory at the destination (default: the source VM directory's name). */
  destinationDirectory?: string;
  /** Power the copy on and check it runs (default true). */
  powerOn?: boolean;
  /** Abort the copy (the destination is then cleaned up). */
  signal?: AbortSignal;
  /** Called as bytes move. */
  onProgress?: (progress: CopyProgress) => void;
  /** Timeout of each vSphere task (default 30 minutes). */
  taskTimeoutMs?: number;
  /** Abort a transfer that moves no byte for this long (default 120 s). */
  idleTimeoutMs?: number;
}

/** What a successful copy did. */
export interface CopyVmReport {
  sourceVm: MoRef;
  destinationVm: MoRef;
  /** `[ds] dir/name.vmx` at the destination. */
  destinationVmx: string;
  /** Files copied with their sizes. */
  files: { path: string; size: number }[];
  /** Source VM size from `layoutEx.file` (what a plan estimates). */
  estimatedBytes: number;
  /** Bytes actually streamed. */
  sentBytes: number;
  /** Power state of the copy after the call. */
  destinationPowerState: string;
  /** Whether the source was running before the copy. */
  sourceWasPoweredOn: boolean;
  /** How the source was quiesced: `none` when it was already powered off. */
  quiesce: QuiesceMode | 'none';
  /** Whether the source is still powered on after the copy (only with `snapshot`). */
  sourceLeftPoweredOn: boolean;
  /** Things that went wrong without failing the copy (e.g. a snapshot that could not be removed). */
  warnings: string[];
  /** Times the destination session was renewed after an upload got HTTP 401 (downloads renew the source session by themselves). */
  sessionRenewals: number;
}

/**
 * Small files a running VM rewrites (config, snapshot database, NVRAM). With a snapshot they are
 * read *before* it is taken, so the copy describes the frozen disks and not the new delta.
 */
const METADATA_SUFFIXES = ['.vmx', '.vmxf', '.vmsd', '.nvram'];
/** Largest metadata file held in memory (they are a few KiB on real hosts). */
const MAX_METADATA_BYTES = 16 * 1024 * 1024;

function isMetadata(name: string): boolean {
  return METADATA_SUFFIXES.some((suffix) => name.endsWith(suffix));
}

async function readSmallFile(client: VimClient, file: { datacenter: string; datastore: string; path: string }, signal: AbortSignal | undefined): Promise<Buffer> {
  const download = await openDatastoreFile(client, file, signal ? { signal } : {});
  if ((download.size ?? 0) > MAX_METADATA_BYTES) {
    download.body.destroy();
    throw new ProtocolError(`${file.path} is ${download.size} bytes, more than the ${MAX_METADATA_BYTES} expected of a VM metadata file`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of download.body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > MAX_METADATA_BYTES) {
      download.body.destroy();
      throw new ProtocolError(`${file.path} is larger than the ${MAX_METADATA_BYTES} bytes expected of a VM metadata file`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The snapshot of `vm` named `name` (searched through the whole snapshot tree), if there is one. */
export async function findSnapshotByName(client: VimClient, vm: MoRef, name: string): Promise<MoRef | undefined> {
  const roots = (await getProperties(client, vm, ['snapshot.rootSnapshotList'])).get('snapshot.rootSnapshotList');
  const search = (trees: readonly XmlElement[]): MoRef | undefined => {
    for (const tree of trees) {
      if (childText(tree, 'name') === name) return readRef(child(tree, 'snapshot'));
      const found = search(childrenNamed(tree, 'childSnapshotList'));
      if (found) return found;
    }
    return undefined;
  };
  return roots ? search(roots.children) : undefined;
}

/** Files never copied: locks and swap files belong to a running instance and are recreated on power-on. */
function skipped(name: string): boolean {
  return name.endsWith('.lck') || name.endsWith('.vswp') || name.startsWith('.lck-') || name.endsWith('.vmx~');
}

/**
 * The VM's directory and `.vmx` name from `config.files.vmPathName`, checked: both come from the
 * source host (and the VM), and become datastore paths and URLs at the destination.
 */
function vmLocation(vm: VmInfo): { datastore: string; dir: string; vmxName: string } {
  const vmx = parseDatastorePath(vm.vmPathName);
  const dir = posix.dirname(vmx.path);
  if (!dir || dir === '.') throw new ProtocolError(`VM "${vm.name}" has its .vmx at the datastore root; only VMs in their own directory can be copied`);
  assertSafeDatastorePath(dir, `the directory of VM "${vm.name}" (config.files.vmPathName ${vm.vmPathName})`);
  const vmxName = posix.basename(vmx.path);
  assertSafeDatastorePath(vmxName, `the .vmx name of VM "${vm.name}"`, 'name');
  return { datastore: vmx.datastore, dir, vmxName };
}

/**
 * The files of the VM's directory: the source's datastore listing merged with `layoutEx.file`.
 * Every name is checked to be one plain file name before it is used: a listing holding `..`, a
 * `/` or a NUL is refused with UnsafeDatastorePathError, so no GET or PUT leaves the directory.
 */
async function filesToCopy(src: VimClient, inv: HostInventory, vm: VmInfo, datastore: string, dir: string, signal: AbortSignal | undefined): Promise<{ path: string; size: number }[]> {
  const ds = inv.datastores.find((d) => d.name === datastore);
  if (!ds?.browser) throw new ObjectNotFoundError(`Source datastore "${datastore}" not found on ${src.endpoint.origin.host}`);
  const listed = await listDatastoreDirectory(src, ds.browser, formatDatastorePath({ datastore, path: dir }), { signal });
  for (const f of listed) assertSafeDatastorePath(f.path, `a file name in the source's listing of [${datastore}] ${dir}`, 'name');
  const files = new Map(listed.map((f) => [f.path, f.size]));
  // layoutEx.file may name files the directory search hides (e.g. -flat.vmdk behind a disk query).
  for (const f of vm.files) {
    const p = parseDatastorePath(f.name);
    if (p.datastore !== datastore || posix.dirname(p.path) !== dir) continue;
    const name = posix.basename(p.path);
    assertSafeDatastorePath(name, `a file name in layoutEx.file of VM "${vm.name}" (${f.name})`, 'name');
    if (!files.has(name)) files.set(name, f.size);
  }
  return [...files].filter(([name]) => !skipped(name)).map(([path, size]) => ({ path, size }));
}

/**
 * Bytes a copy of the VM would send: every file of its directory (the datastore listing, merged
 * with `layoutEx.file`), without locks and swap files. On real hosts this matches `layoutEx`;
 * on the simulator, whose layout reports 0-byte files, only the listing sees real sizes.
 */
export async function measureVmCopyBytes(src: VimClient, vmName: string, options: { signal?: AbortSignal } = {}): Promise<number> {
  const vm = await findVmByName(src, vmName, options);
  const where = vmLocation(vm);
  const inv = await getHostInventory(src, options);
  const files = await filesToCopy(src, inv, vm, where.datastore, where.dir, options.signal);
  return Math.max(
    files.reduce((sum, f) => sum + f.size, 0),
    vmSizeBytes(vm),
  );
}

/** The two hosts and where the VM is on each: all that rollback needs ({@link undoVmCopy} rebuilds it from a report). */
interface CopySides {
  src: VimClient;
  dst: VimClient;
  vmName: string;
  sourceVm: MoRef;
  /** `[ds] dir` of the copy at the destination. */
  destinationDirPath: string;
  destinationDatacenter: MoRef;
  taskTimeoutMs: number | undefined;
}

/** What the copy looked up before changing anything, passed to every phase. */
interface CopyContext extends CopySides {
  options: CopyVmOptions;
  /** The caller's signal and the task timeout, for this copy's own tasks. */
  wait: WaitOptions;
  vm: VmInfo;
  /** Where the VM lives at the source (checked names). */
  source: { datastore: string; dir: string; vmxName: string; inventory: HostInventory };
  destination: { datastore: string; dir: string; name: string; inventory: HostInventory; dirRef: DatastoreFileRef };
  quiesce: QuiesceMode | 'none';
}

/** What the copy changed so far (rollback undoes exactly this), and what its report tells. */
interface CopyChanges {
  poweredOffByUs: boolean;
  snapshot: MoRef | undefined;
  snapshotName: string | undefined;
  createdDir: boolean;
  createdVm: MoRef | undefined;
  warnings: string[];
  sessionRenewals: number;
}

/** The files to send, with the metadata read before a snapshot froze the disks. */
interface CopySet {
  files: { path: string; size: number }[];
  held: Map<string, Buffer>;
  expectedBytes: number;
}

function noChanges(): CopyChanges {
  return { poweredOffByUs: false, snapshot: undefined, snapshotName: undefined, createdDir: false, createdVm: undefined, warnings: [], sessionRenewals: 0 };
}

/** Look up both sides and refuse every conflict before anything changes. */
async function lookUpCopy(src: VimClient, dst: VimClient, vmName: string, options: CopyVmOptions): Promise<CopyContext> {
  const { signal } = options;
  const vm = await findVmByName(src, vmName, { signal });
  // Checked before anything changes: names from the source must stay inside the VM's directory.
  const where = vmLocation(vm);
  if (options.destinationDirectory !== undefined) assertSafeDatastorePath(options.destinationDirectory, 'destinationDirectory');
  const [srcInv, dstInv] = await Promise.all([getHostInventory(src, { signal }), getHostInventory(dst, { signal })]);
  const datastore = options.destinationDatastore ?? where.datastore;
  const dir = options.destinationDirectory ?? where.dir;
  const ctx: CopyContext = {
    src,
    dst,
    vmName,
    sourceVm: vm.ref,
    destinationDirPath: formatDatastorePath({ datastore, path: dir }),
    destinationDatacenter: dstInv.datacenter,
    taskTimeoutMs: options.taskTimeoutMs,
    options,
    wait: { signal, timeoutMs: options.taskTimeoutMs },
    vm,
    source: { ...where, inventory: srcInv },
    destination: { datastore, dir, name: options.destinationName ?? vm.name, inventory: dstInv, dirRef: { datacenter: dstInv.datacenterName, datastore, path: `${dir}/` } },
    quiesce: vm.powerState === 'poweredOn' ? (options.quiesce ?? 'power-off') : 'none',
  };
  await refuseDestinationConflicts(ctx);
  return ctx;
}

/** A missing datastore, a taken VM name or an existing directory at the destination. */
async function refuseDestinationConflicts(ctx: CopyContext): Promise<void> {
  const { dst, destination } = ctx;
  const host = dst.endpoint.origin.host;
  const datastores = destination.inventory.datastores;
  if (!datastores.some((d) => d.name === destination.datastore)) {
    throw new ObjectNotFoundError(`Destination datastore "${destination.datastore}" not found on ${host} (it has: ${datastores.map((d) => d.name).join(', ') || 'none'})`, {
      details: { datastore: destination.datastore },
    });
  }
  if ((await listVms(dst, { signal: ctx.options.signal })).some((v) => v.name === destination.name)) {
    throw new AlreadyExistsError(`A VM named "${destination.name}" already exists on ${host}`);
  }
  if (await datastorePathExists(dst, destination.dirRef, { signal: ctx.options.signal })) {
    throw new AlreadyExistsError(`Directory [${destination.datastore}] ${destination.dir} already exists on ${host}; choose destinationDirectory`);
  }
}

/**
 * Make the source consistent and list what to send. A powered-off VM's files are consistent and
 * not locked; with a snapshot, the files listed (and the metadata read) before it is taken are
 * the frozen, consistent set.
 */
async function quiesceSource(ctx: CopyContext, changes: CopyChanges): Promise<CopySet> {
  if (ctx.quiesce === 'power-off') {
    // Flagged before the wait: an abort or timeout does not stop the task on the host, and the
    // source was on, so rollback powering it on restores it either way.
    changes.poweredOffByUs = true;
    await powerOffVm(ctx.src, ctx.sourceVm, ctx.wait);
  }
  const files = await filesToCopy(ctx.src, ctx.source.inventory, ctx.vm, ctx.source.datastore, ctx.source.dir, ctx.options.signal);
  const held = ctx.quiesce === 'snapshot' ? await snapshotSource(ctx, changes, files) : new Map<string, Buffer>();
  const expectedBytes = files.reduce((s, f) => s + (held.get(f.path)?.length ?? f.size), 0);
  return { files, held, expectedBytes };
}

/** Read the metadata files, then take the crash-consistent snapshot the disks are copied from. */
async function snapshotSource(ctx: CopyContext, changes: CopyChanges, files: readonly { path: string }[]): Promise<Map<string, Buffer>> {
  const held = new Map<string, Buffer>();
  for (const f of files.filter((file) => isMetadata(file.path))) held.set(f.path, await readSmallFile(ctx.src, sourceFile(ctx, f.path), ctx.options.signal));
  changes.snapshotName = `ap-migrate-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  // Waited for without the caller's signal (checked right after): an abort mid-task would
  // leave a snapshot on the source whose reference we never learnt.
  changes.snapshot = await createSnapshot(ctx.src, ctx.sourceVm, {
    name: changes.snapshotName,
    description: 'Taken by ap-migrate to copy this VM while it runs; removed when the copy ends.',
    memory: false,
    quiesce: false,
  }, { timeoutMs: ctx.taskTimeoutMs });
  if (!changes.snapshot) throw new ProtocolError('CreateSnapshot_Task: task result is not a snapshot reference');
  if (ctx.options.signal?.aborted) throw new EsxiAbortedError(`copy of ${ctx.vmName} aborted`);
  return held;
}

function sourceFile(ctx: CopyContext, name: string): DatastoreFileRef {
  return { datacenter: ctx.source.inventory.datacenterName, datastore: ctx.source.datastore, path: `${ctx.source.dir}/${name}` };
}

async function createDestinationDir(ctx: CopyContext, changes: CopyChanges): Promise<void> {
  await makeDirectory(ctx.dst, ctx.destinationDirPath, ctx.destinationDatacenter, ctx.wait);
  changes.createdDir = true;
}

/** Stream each file GET -> PUT; resolves with the bytes sent. */
async function copyFiles(ctx: CopyContext, changes: CopyChanges, set: CopySet): Promise<number> {
  let sentBytes = 0;
  for (const file of set.files) {
    if (ctx.options.signal?.aborted) throw new EsxiAbortedError(`copy of ${ctx.vmName} aborted`);
    try {
      sentBytes += await copyFile(ctx, set, file, sentBytes);
    } catch (err) {
      // The session expired under a long transfer: an upload cannot be replayed, so log in
      // again and copy this file once more from a fresh GET.
      if (!(await uploadSessionExpired(ctx, err))) throw err;
      changes.sessionRenewals++;
      sentBytes += await copyFile(ctx, set, file, sentBytes);
    }
  }
  return sentBytes;
}

/** One file GET -> PUT (or from the held metadata); records its real size in `file`. */
async function copyFile(ctx: CopyContext, set: CopySet, file: { path: string; size: number }, sentBefore: number): Promise<number> {
  const { signal, idleTimeoutMs, onProgress } = ctx.options;
  const held = set.held.get(file.path);
  const download = held ? { body: Readable.from([held]), size: held.length } : await openDatastoreFile(ctx.src, sourceFile(ctx, file.path), { signal });
  const size = download.size ?? file.size;
  const target = { datacenter: ctx.destination.inventory.datacenterName, datastore: ctx.destination.datastore, path: `${ctx.destination.dir}/${file.path}` };
  const sent = await putDatastoreFile(ctx.dst, target, download.body, size, {
    signal,
    idleTimeoutMs,
    onProgress: (bytes) => onProgress?.({ file: file.path, fileBytes: bytes, totalBytes: sentBefore + bytes, expectedBytes: set.expectedBytes }),
  });
  file.size = size;
  return sent;
}

/** Whether an upload failed because the destination's session expired (and it was renewed). */
async function uploadSessionExpired(ctx: CopyContext, err: unknown): Promise<boolean> {
  const { dst, options } = ctx;
  const signal = options.signal ? { signal: options.signal } : {};
  if (options.signal?.aborted) return false;
  if (NotAuthenticatedError.isInstance(err)) {
    // Only the destination's 401 is this case; the source renews its own downloads.
    if (err.details.host !== dst.endpoint.origin.host) return false;
    await renewSessionThrowing(dst, signal);
    return true;
  }
  if (!EsxiTransportError.isInstance(err)) return false;
  // A server refusing a PUT may close the connection while the body is still being sent, so
  // the client sees EPIPE rather than the 401. Probe once: the HEAD renews an expired session.
  const before = dst.sessionRenewals;
  try {
    await datastorePathExists(dst, ctx.destination.dirRef, signal);
  } catch {
    return false;
  }
  return dst.sessionRenewals > before;
}

/**
 * Remove the snapshot this copy took, if any. A removal failure must not fail a verified copy,
 * nor hide the error of a failed one: it becomes a warning, and the outcome is returned.
 */
async function dropSnapshot(sides: CopySides, changes: CopyChanges): Promise<string> {
  if (!changes.snapshot) return 'no snapshot';
  const ref = changes.snapshot;
  changes.snapshot = undefined;
  try {
    await removeSnapshot(sides.src, ref, { timeoutMs: sides.taskTimeoutMs });
    return 'done';
  } catch (e) {
    changes.warnings.push(`snapshot ${ref.value} of ${sides.vmName} could not be removed (remove it by hand; the VM runs on its delta disk until then): ${(e as Error).message}`);
    return `failed: ${(e as Error).message}`;
  }
}

/** Check what arrived before registering it: every file with the size sent. */
async function verifyArrived(ctx: CopyContext, files: readonly { path: string; size: number }[]): Promise<void> {
  const browser = ctx.destination.inventory.datastores.find((d) => d.name === ctx.destination.datastore)?.browser;
  if (!browser) return;
  const arrived = new Map((await listDatastoreDirectory(ctx.dst, browser, ctx.destinationDirPath, ctx.wait)).map((f) => [f.path, f.size]));
  for (const f of files) {
    if (arrived.get(f.path) !== f.size) throw new FileNotFoundError(`${f.path} arrived with ${arrived.get(f.path) ?? 'no'} bytes at the destination, expected ${f.size}`);
  }
}

/** Register the copied `.vmx`; resolves with its datastore path. */
async function registerCopy(ctx: CopyContext, changes: CopyChanges): Promise<{ vm: MoRef; vmx: string }> {
  const { inventory, datastore, dir, name } = ctx.destination;
  const vmx = formatDatastorePath({ datastore, path: `${dir}/${ctx.source.vmxName}` });
  changes.createdVm = await registerVm(ctx.dst, { folder: inventory.vmFolder, vmxPath: vmx, name, pool: inventory.resourcePool, host: inventory.host }, ctx.wait);
  return { vm: changes.createdVm, vmx };
}

/** Power the copy on (unless told not to) and check it runs; resolves with its power state. */
async function powerOnCopy(ctx: CopyContext, vm: MoRef): Promise<string> {
  if (!(ctx.options.powerOn ?? true)) return 'poweredOff';
  await powerOnVm(ctx.dst, vm, ctx.wait);
  const state = (await getProperties(ctx.dst, vm, ['runtime.powerState'], { signal: ctx.options.signal })).get('runtime.powerState')?.text.trim() ?? 'unknown';
  if (state !== 'poweredOn') throw new InvalidStateError(`Copy of ${ctx.vmName} registered but is ${state} after power-on`);
  return state;
}

/**
 * Undo `changes`, newest first, each step on its own: remove the copy at the destination, the
 * source snapshot, and power the source back on if this copy powered it off. Runs even when the
 * caller's signal fired, so no step uses it. `steps` is each outcome, for `details.rollback`.
 */
async function rollBackCopy(sides: CopySides, changes: CopyChanges): Promise<{ steps: string[]; failures: unknown[] }> {
  const { src, dst } = sides;
  const steps: string[] = [];
  const failures: unknown[] = [];
  const note = async (what: string, step: () => Promise<unknown>) => {
    try {
      await step();
      steps.push(`${what}: done`);
    } catch (e) {
      failures.push(e);
      steps.push(`${what}: failed: ${(e as Error).message}`);
    }
  };
  const vm = changes.createdVm;
  if (vm) {
    await note('power off destination VM', () => powerOffVm(dst, vm).catch(unless(InvalidStateError.isInstance)));
    await note('destroy destination VM', () => destroyEntity(dst, vm));
  }
  if (changes.createdDir) {
    await note('delete destination directory', () => deleteDatastoreFile(dst, sides.destinationDirPath, sides.destinationDatacenter).catch(unless(FileNotFoundError.isInstance)));
  }
  // A snapshot task that timed out may still have finished on the host: find it by its name.
  if (!changes.snapshot && changes.snapshotName) changes.snapshot = await findSnapshotByName(src, sides.sourceVm, changes.snapshotName).catch(() => undefined);
  if (changes.snapshot) steps.push(`remove source snapshot: ${await dropSnapshot(sides, changes)}`);
  if (changes.poweredOffByUs) {
    // InvalidState: still on, the power-off never happened.
    await note('power source VM back on', () => powerOnVm(src, sides.sourceVm).catch(unless(InvalidStateError.isInstance)));
  }
  return { steps, failures };
}

/** A rejection handler that swallows the errors `expected` recognises (the state is already as wanted) and rethrows others. */
function unless(expected: (e: unknown) => boolean): (e: unknown) => void {
  return (e) => {
    if (!expected(e)) throw e;
  };
}

/** The copy, throwing; {@link copyVmBetweenHosts} is its only caller and wraps it in a Result. */
async function runVmCopy(src: VimClient, dst: VimClient, vmName: string, options: CopyVmOptions): Promise<CopyVmReport> {
  const ctx = await lookUpCopy(src, dst, vmName, options);
  const changes = noChanges();
  const keepAlive = options.sessionKeepAliveMs ?? 5 * 60_000;
  const stopKeepAlive = [src.keepSessionAlive(keepAlive), dst.keepSessionAlive(keepAlive)];
  try {
    const set = await quiesceSource(ctx, changes);
    await createDestinationDir(ctx, changes);
    const sentBytes = await copyFiles(ctx, changes, set);
    // The frozen disks are copied: let the source run on its base disks again as soon as possible.
    await dropSnapshot(ctx, changes);
    await verifyArrived(ctx, set.files);
    const registered = await registerCopy(ctx, changes);
    const destinationPowerState = await powerOnCopy(ctx, registered.vm);
    const sourceWasPoweredOn = ctx.vm.powerState === 'poweredOn';
    return {
      sourceVm: ctx.sourceVm,
      destinationVm: registered.vm,
      destinationVmx: registered.vmx,
      files: set.files,
      estimatedBytes: vmSizeBytes(ctx.vm),
      sentBytes,
      destinationPowerState,
      sourceWasPoweredOn,
      quiesce: ctx.quiesce,
      sourceLeftPoweredOn: sourceWasPoweredOn && !changes.poweredOffByUs,
      warnings: changes.warnings,
      sessionRenewals: changes.sessionRenewals,
    };
  } catch (err) {
    const error = asEsxiError(err, `copy of VM ${vmName}`);
    (error.details as Record<string, unknown>).rollback = (await rollBackCopy(ctx, changes)).steps;
    throw error;
  } finally {
    for (const stop of stopKeepAlive) stop();
  }
}

/**
 * Copy a VM between two standalone hosts through the datastore HTTP API (quiesce, stream its
 * directory GET -> PUT, register, power on, verify). Failures remove what was created at the
 * destination, remove the snapshot taken and power the source back on (`details.rollback` lists
 * each step); the source is never destroyed. After a successful `power-off` copy it stays off
 * (two running copies would fight over the same identity); after a `snapshot` copy it is still
 * running, and the caller decides.
 */
export function copyVmBetweenHosts(src: VimClient, dst: VimClient, vmName: string, options: CopyVmOptions = {}): ResultAsync<CopyVmReport, EsxiError> {
  return ResultAsync.fromPromise(runVmCopy(src, dst, vmName, options), (e) => asEsxiError(e, `copy of VM ${vmName}`));
}

/** What {@link preflightVmCopy} found: the copy {@link copyVmBetweenHosts} would make with the same options. */
export interface VmCopyPreflight {
  sourceVm: MoRef;
  /** Power state of the source now (`poweredOn`, `poweredOff`, `suspended`). */
  sourcePowerState: string;
  /** How the copy would quiesce it: `none` when it is not running. */
  quiesce: QuiesceMode | 'none';
  /** Source VM size from `layoutEx.file` (the report's `estimatedBytes`). */
  estimatedBytes: number;
  destinationDatastore: string;
  destinationName: string;
  /** `[ds] dir/name.vmx` the copy would be registered as. */
  destinationVmx: string;
}

/** Options of {@link preflightVmCopy}: the copy's options that choose names and places. */
export type VmCopyPreflightOptions = Pick<CopyVmOptions, 'quiesce' | 'destinationDatastore' | 'destinationName' | 'destinationDirectory' | 'signal'>;

/**
 * Every check {@link copyVmBetweenHosts} makes before it changes anything, and nothing else: the
 * source VM exists with safe file names, the destination has the datastore, and neither a VM of
 * the name nor the directory exists there yet. Changes nothing on either host.
 */
export function preflightVmCopy(src: VimClient, dst: VimClient, vmName: string, options: VmCopyPreflightOptions = {}): ResultAsync<VmCopyPreflight, EsxiError> {
  const check = async (): Promise<VmCopyPreflight> => {
    const ctx = await lookUpCopy(src, dst, vmName, options);
    return {
      sourceVm: ctx.sourceVm,
      sourcePowerState: ctx.vm.powerState,
      quiesce: ctx.quiesce,
      estimatedBytes: vmSizeBytes(ctx.vm),
      destinationDatastore: ctx.destination.datastore,
      destinationName: ctx.destination.name,
      destinationVmx: formatDatastorePath({ datastore: ctx.destination.datastore, path: `${ctx.destination.dir}/${ctx.source.vmxName}` }),
    };
  };
  return ResultAsync.fromPromise(check(), (e) => asEsxiError(e, `pre-flight of the copy of VM ${vmName}`));
}

/** The parts of a move's report {@link undoVmCopy} needs (a {@link CopyVmReport} has them all). */
export type VmCopyToUndo = Pick<CopyVmReport, 'sourceVm' | 'destinationVm' | 'destinationVmx' | 'sourceWasPoweredOn' | 'sourceLeftPoweredOn'>;

/**
 * Undo a copy that succeeded (the migration failed later): power off and destroy the copy,
 * delete its directory, and power the source on again if the copy powered it off. Every step
 * runs even when one fails; resolves with each step's outcome, or fails with the first step's
 * error, every outcome in `details.rollback`. Works for an OVF export/import's VM too.
 */
export function undoVmCopy(src: VimClient, dst: VimClient, copy: VmCopyToUndo): ResultAsync<string[], EsxiError> {
  const undo = async (): Promise<string[]> => {
    const vmx = parseDatastorePath(copy.destinationVmx);
    const dir = posix.dirname(vmx.path);
    // Never a datastore root: that is not the copy's own directory.
    const ownDir = dir !== '.' && dir !== '' && dir !== '/';
    if (ownDir) assertSafeDatastorePath(dir, `the directory of ${copy.destinationVmx}`);
    const changes = { ...noChanges(), createdVm: copy.destinationVm, createdDir: ownDir, poweredOffByUs: copy.sourceWasPoweredOn && !copy.sourceLeftPoweredOn };
    const sides: CopySides = {
      src,
      dst,
      vmName: copy.destinationVmx, // only for messages: there is no snapshot left to remove
      sourceVm: copy.sourceVm,
      destinationDirPath: formatDatastorePath({ datastore: vmx.datastore, path: dir }),
      // Only DeleteDatastoreFile_Task needs the datacenter; without a directory to delete, no look-up.
      destinationDatacenter: ownDir ? (await getHostInventory(dst)).datacenter : { type: 'Datacenter', value: '' },
      taskTimeoutMs: undefined,
    };
    const { steps, failures } = await rollBackCopy(sides, changes);
    if (failures.length === 0) return steps;
    const error = asEsxiError(failures[0], `undo of the copy ${copy.destinationVmx}`);
    (error.details as Record<string, unknown>).rollback = steps;
    throw error;
  };
  return ResultAsync.fromPromise(undo(), (e) => asEsxiError(e, `undo of the copy ${copy.destinationVmx}`));
}
