/**
 * Copy a VM from one standalone ESXi host to another through the datastore HTTP API, without
 * vCenter: quiesce the source (power it off, or take a crash-consistent snapshot and copy the
 * frozen parent disks while it keeps running), stream every file of its directory GET -> PUT (no
 * local disk, bounded memory), register the copy at the destination, power it on and check it
 * runs. Any failure removes what this call created at the destination, removes the snapshot it
 * took and powers the source back on if this call powered it off. The source VM is never
 * destroyed or unregistered.
 *
 * @module
 */
import { posix } from 'node:path';
import { ResultAsync } from 'neverthrow';
import { readRef, type VimClient } from './client.js';
import { assertSafeDatastorePath, datastorePathExists, openDatastoreFile, putDatastoreFile } from './datastore-http.js';
import { Readable } from 'node:stream';
import { AlreadyExistsError, EsxiAbortedError, type EsxiError, EsxiTransportError, FileNotFoundError, InvalidStateError, NotAuthenticatedError, ObjectNotFoundError, ProtocolError, asEsxiError } from './errors.js';
import { findVmByName, formatDatastorePath, getHostInventory, listVms, parseDatastorePath, vmSizeBytes, type HostInventory, type VmInfo } from './inventory.js';
import { createSnapshot, deleteDatastoreFile, destroyEntity, listDatastoreDirectory, makeDirectory, powerOffVm, powerOnVm, registerVm, removeSnapshot } from './operations.js';
import { getProperties } from './properties.js';
import { child, childText, childrenNamed, type XmlElement } from './xml.js';
import type { MoRef } from './soap.js';

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

/**
 * Promise form of the copy (rejects with an EsxiError); prefer the ResultAsync wrapper
 * `copyVmBetweenHosts` exported from the esxi entry point.
 */
export async function copyVmBetweenHostsAsync(src: VimClient, dst: VimClient, vmName: string, options: CopyVmOptions = {}): Promise<CopyVmReport> {
  const signal = options.signal;
  const wait = { signal, timeoutMs: options.taskTimeoutMs };
  // 1. Look everything up before changing anything.
  const vm = await findVmByName(src, vmName, { signal });
  // Checked before anything changes: names from the source must stay inside the VM's directory.
  const vmx = vmLocation(vm);
  const srcDir = vmx.dir;
  if (options.destinationDirectory !== undefined) assertSafeDatastorePath(options.destinationDirectory, 'destinationDirectory');
  const [srcInv, dstInv] = await Promise.all([getHostInventory(src, { signal }), getHostInventory(dst, { signal })]);
  const dstDatastore = options.destinationDatastore ?? vmx.datastore;
  if (!dstInv.datastores.some((d) => d.name === dstDatastore)) {
    throw new ObjectNotFoundError(`Destination datastore "${dstDatastore}" not found on ${dst.endpoint.origin.host} (it has: ${dstInv.datastores.map((d) => d.name).join(', ') || 'none'})`, {
      details: { datastore: dstDatastore },
    });
  }
  const dstName = options.destinationName ?? vm.name;
  const dstDir = options.destinationDirectory ?? srcDir;
  if ((await listVms(dst, { signal })).some((v) => v.name === dstName)) {
    throw new AlreadyExistsError(`A VM named "${dstName}" already exists on ${dst.endpoint.origin.host}`);
  }
  const dstDirRef = { datacenter: dstInv.datacenterName, datastore: dstDatastore, path: `${dstDir}/` };
  if (await datastorePathExists(dst, dstDirRef, { signal })) {
    throw new AlreadyExistsError(`Directory [${dstDatastore}] ${dstDir} already exists on ${dst.endpoint.origin.host}; choose destinationDirectory`);
  }
  const estimatedBytes = vmSizeBytes(vm);
  const sourceWasPoweredOn = vm.powerState === 'poweredOn';
  const quiesce: QuiesceMode | 'none' = sourceWasPoweredOn ? (options.quiesce ?? 'power-off') : 'none';
  const warnings: string[] = [];
  let sessionRenewals = 0;

  let poweredOffByUs = false;
  let snapshot: MoRef | undefined;
  let snapshotName: string | undefined;
  let createdDir = false;
  let createdVm: MoRef | undefined;
  // A removal failure must not fail a verified copy, nor hide the error of a failed one: it is reported.
  const dropSnapshot = async (): Promise<string> => {
    if (!snapshot) return 'no snapshot';
    const ref = snapshot;
    snapshot = undefined;
    try {
      await removeSnapshot(src, ref, { timeoutMs: options.taskTimeoutMs });
      return 'done';
    } catch (e) {
      const message = `snapshot ${ref.value} of ${vmName} could not be removed (remove it by hand; the VM runs on its delta disk until then): ${(e as Error).message}`;
      warnings.push(message);
      return `failed: ${(e as Error).message}`;
    }
  };
  const keepAlive = options.sessionKeepAliveMs ?? 5 * 60_000;
  const stopKeepAlive = [src.keepSessionAlive(keepAlive), dst.keepSessionAlive(keepAlive)];
  try {
    // 2. Quiesce. A powered-off VM's files are consistent and not locked; with a snapshot, the
    // files listed (and the metadata read) before it is taken are the frozen, consistent set.
    if (quiesce === 'power-off') {
      // Flagged before the wait: an abort or timeout does not stop the task on the host, and the
      // source was on, so rollback powering it on restores it either way.
      poweredOffByUs = true;
      await powerOffVm(src, vm.ref, wait);
    }
    const files = await filesToCopy(src, srcInv, vm, vmx.datastore, srcDir, signal);
    const sourceFile = (name: string) => ({ datacenter: srcInv.datacenterName, datastore: vmx.datastore, path: `${srcDir}/${name}` });
    const heldMetadata = new Map<string, Buffer>();
    if (quiesce === 'snapshot') {
      for (const f of files.filter((file) => isMetadata(file.path))) heldMetadata.set(f.path, await readSmallFile(src, sourceFile(f.path), signal));
      snapshotName = `ap-migrate-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
      // Waited for without the caller's signal (checked right after): an abort mid-task would
      // leave a snapshot on the source whose reference we never learnt.
      snapshot = await createSnapshot(src, vm.ref, {
        name: snapshotName,
        description: 'Taken by ap-migrate to copy this VM while it runs; removed when the copy ends.',
        memory: false,
        quiesce: false,
      }, { timeoutMs: options.taskTimeoutMs });
      if (!snapshot) throw new ProtocolError('CreateSnapshot_Task: task result is not a snapshot reference');
      if (signal?.aborted) throw new EsxiAbortedError(`copy of ${vmName} aborted`);
    }
    const expectedBytes = files.reduce((s, f) => s + (heldMetadata.get(f.path)?.length ?? f.size), 0);
    // 3. Stream each file GET -> PUT.
    await makeDirectory(dst, formatDatastorePath({ datastore: dstDatastore, path: dstDir }), dstInv.datacenter, wait);
    createdDir = true;
    let sentBytes = 0;
    const uploadSessionExpired = async (err: unknown): Promise<boolean> => {
      if (signal?.aborted) return false;
      if (err instanceof NotAuthenticatedError) {
        // Only the destination's 401 is this case; the source renews its own downloads.
        if (err.details.host !== dst.endpoint.origin.host) return false;
        await dst.renewSessionAsync(signal ? { signal } : {});
        return true;
      }
      if (!(err instanceof EsxiTransportError)) return false;
      // A server refusing a PUT may close the connection while the body is still being sent, so
      // the client sees EPIPE rather than the 401. Probe once: the HEAD renews an expired session.
      const before = dst.sessionRenewals;
      try {
        await datastorePathExists(dst, dstDirRef, signal ? { signal } : {});
      } catch {
        return false;
      }
      return dst.sessionRenewals > before;
    };
    const copyFile = async (file: { path: string; size: number }): Promise<number> => {
      const held = heldMetadata.get(file.path);
      const download = held
        ? { body: Readable.from([held]), size: held.length }
        : await openDatastoreFile(src, sourceFile(file.path), { signal });
      const size = download.size ?? file.size;
      const before = sentBytes;
      const sent = await putDatastoreFile(dst, { datacenter: dstInv.datacenterName, datastore: dstDatastore, path: `${dstDir}/${file.path}` }, download.body, size, {
        signal,
        idleTimeoutMs: options.idleTimeoutMs,
        onProgress: (bytes) => options.onProgress?.({ file: file.path, fileBytes: bytes, totalBytes: before + bytes, expectedBytes }),
      });
      file.size = size;
      return sent;
    };
    for (const file of files) {
      if (signal?.aborted) throw new EsxiAbortedError(`copy of ${vmName} aborted`);
      try {
        sentBytes += await copyFile(file);
      } catch (err) {
        // The session expired under a long transfer: an upload cannot be replayed, so log in
        // again and copy this file once more from a fresh GET.
        if (!(await uploadSessionExpired(err))) throw err;
        sessionRenewals++;
        sentBytes += await copyFile(file);
      }
    }
    // The frozen disks are copied: let the source run on its base disks again as soon as possible.
    await dropSnapshot();
    // 4. Check what arrived before registering it.
    const dstDs = dstInv.datastores.find((d) => d.name === dstDatastore);
    if (dstDs?.browser) {
      const arrived = new Map((await listDatastoreDirectory(dst, dstDs.browser, formatDatastorePath({ datastore: dstDatastore, path: dstDir }), wait)).map((f) => [f.path, f.size]));
      for (const f of files) {
        if (arrived.get(f.path) !== f.size) throw new FileNotFoundError(`${f.path} arrived with ${arrived.get(f.path) ?? 'no'} bytes at the destination, expected ${f.size}`);
      }
    }
    // 5. Register and power on.
    const destinationVmx = formatDatastorePath({ datastore: dstDatastore, path: `${dstDir}/${vmx.vmxName}` });
    createdVm = await registerVm(dst, { folder: dstInv.vmFolder, vmxPath: destinationVmx, name: dstName, pool: dstInv.resourcePool, host: dstInv.host }, wait);
    let destinationPowerState = 'poweredOff';
    if (options.powerOn ?? true) {
      await powerOnVm(dst, createdVm, wait);
      destinationPowerState = (await getProperties(dst, createdVm, ['runtime.powerState'], { signal })).get('runtime.powerState')?.text.trim() ?? 'unknown';
      if (destinationPowerState !== 'poweredOn') throw new InvalidStateError(`Copy of ${vmName} registered but is ${destinationPowerState} after power-on`);
    }
    return {
      sourceVm: vm.ref,
      destinationVm: createdVm,
      destinationVmx,
      files,
      estimatedBytes,
      sentBytes,
      destinationPowerState,
      sourceWasPoweredOn,
      quiesce,
      sourceLeftPoweredOn: sourceWasPoweredOn && !poweredOffByUs,
      warnings,
      sessionRenewals,
    };
  } catch (err) {
    const error = asEsxiError(err, `copy of VM ${vmName}`);
    const rollback: string[] = [];
    const note = async (what: string, step: () => Promise<unknown>) => {
      try {
        await step();
        rollback.push(`${what}: done`);
      } catch (e) {
        rollback.push(`${what}: failed: ${(e as Error).message}`);
      }
    };
    // Rollback must run even when the caller's signal fired, so it uses no signal.
    if (createdVm) {
      const ref = createdVm;
      await note('power off destination VM', () => powerOffVm(dst, ref).catch((e: unknown) => {
        if (!(e instanceof InvalidStateError)) throw e;
      }));
      await note('destroy destination VM', () => destroyEntity(dst, ref));
    }
    if (createdDir) {
      await note('delete destination directory', () => deleteDatastoreFile(dst, formatDatastorePath({ datastore: dstDatastore, path: dstDir }), dstInv.datacenter).catch((e: unknown) => {
        if (!(e instanceof FileNotFoundError)) throw e;
      }));
    }
    // A snapshot task that timed out may still have finished on the host: find it by its name.
    if (!snapshot && snapshotName) snapshot = await findSnapshotByName(src, vm.ref, snapshotName).catch(() => undefined);
    if (snapshot) rollback.push(`remove source snapshot: ${await dropSnapshot()}`);
    if (poweredOffByUs) {
      await note('power source VM back on', () => powerOnVm(src, vm.ref).catch((e: unknown) => {
        if (!(e instanceof InvalidStateError)) throw e; // still on: the power-off never happened
      }));
    }
    (error.details as Record<string, unknown>).rollback = rollback;
    throw error;
  } finally {
    for (const stop of stopKeepAlive) stop();
  }
}


/**
 * Copy a VM between two standalone hosts through the datastore HTTP API (quiesce, stream its
 * directory GET -> PUT, register, power on, verify). Failures remove what was created at the
 * destination, remove the snapshot taken and power the source back on; the source is never
 * destroyed. After a successful `power-off` copy it stays off (two running copies would fight
 * over the same identity); after a `snapshot` copy it is still running, and the caller decides.
 */
export function copyVmBetweenHosts(src: VimClient, dst: VimClient, vmName: string, options: CopyVmOptions = {}): ResultAsync<CopyVmReport, EsxiError> {
  return ResultAsync.fromPromise(copyVmBetweenHostsAsync(src, dst, vmName, options), (e) => asEsxiError(e, `copy of VM ${vmName}`));
}
