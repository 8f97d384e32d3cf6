/**
 * The vSphere calls that change things: power, snapshot, register, destroy, datastore
 * directories and files. Each waits for its task and rejects with a typed error.
 *
 * @module
 */
import { callThrowing, type VimClient } from './client.js';
import { ProtocolError } from './errors.js';
import { el, refEl, textEl, type MoRef } from './soap.js';
import { runTask, type WaitOptions } from './tasks.js';
import { childText, childrenNamed } from './xml.js';

/** Power a VM off (hard). InvalidStateError when it already is. */
export async function powerOffVm(client: VimClient, vm: MoRef, options: WaitOptions = {}): Promise<void> {
  await runTask(client, 'PowerOffVM_Task', vm, [], options);
}

/** Power a VM on. */
export async function powerOnVm(client: VimClient, vm: MoRef, options: WaitOptions = {}): Promise<void> {
  await runTask(client, 'PowerOnVM_Task', vm, [], options);
}

/** Take a snapshot; returns its reference. `memory: false, quiesce: false` gives crash consistency. */
export async function createSnapshot(
  client: VimClient,
  vm: MoRef,
  spec: { name: string; description?: string; memory?: boolean; quiesce?: boolean },
  options: WaitOptions = {},
): Promise<MoRef | undefined> {
  const outcome = await runTask(client, 'CreateSnapshot_Task', vm, [
    textEl('name', spec.name),
    textEl('description', spec.description),
    textEl('memory', spec.memory ?? false),
    textEl('quiesce', spec.quiesce ?? false),
  ], options);
  return outcome.resultRef;
}

/**
 * Remove one snapshot (its children are kept) and, with `consolidate` (the default), merge its
 * delta disk back into the parent so the VM runs on its base disks again.
 */
export async function removeSnapshot(client: VimClient, snapshot: MoRef, options: WaitOptions & { consolidate?: boolean } = {}): Promise<void> {
  await runTask(client, 'RemoveSnapshot_Task', snapshot, [textEl('removeChildren', false), textEl('consolidate', options.consolidate ?? true)], options);
}

/** Destroy a managed entity (a VM: unregisters it and deletes its files). */
export async function destroyEntity(client: VimClient, entity: MoRef, options: WaitOptions = {}): Promise<void> {
  await runTask(client, 'Destroy_Task', entity, [], options);
}

/** Register a `.vmx` already on a datastore as a VM; returns the new VM's reference. */
export async function registerVm(
  client: VimClient,
  args: { folder: MoRef; vmxPath: string; name: string; pool: MoRef; host?: MoRef },
  options: WaitOptions = {},
): Promise<MoRef> {
  const outcome = await runTask(client, 'RegisterVM_Task', args.folder, [
    textEl('path', args.vmxPath),
    textEl('name', args.name),
    textEl('asTemplate', false),
    refEl('pool', args.pool),
    refEl('host', args.host),
  ], options);
  if (!outcome.resultRef) throw new ProtocolError('RegisterVM_Task: task result is not a VM reference');
  return outcome.resultRef;
}

/** FileManager.MakeDirectory on `[ds] path` (parents created). */
export async function makeDirectory(client: VimClient, datastorePath: string, datacenter: MoRef, options: WaitOptions = {}): Promise<void> {
  const fm = client.serviceContent.fileManager;
  if (!fm) throw new ProtocolError('server has no FileManager');
  await callThrowing(client, 'MakeDirectory', fm, [textEl('name', datastorePath), refEl('datacenter', datacenter), textEl('createParentDirectories', true)], options);
}

/** FileManager.DeleteDatastoreFile_Task on `[ds] path` (a directory is removed with its content). */
export async function deleteDatastoreFile(client: VimClient, datastorePath: string, datacenter: MoRef, options: WaitOptions = {}): Promise<void> {
  const fm = client.serviceContent.fileManager;
  if (!fm) throw new ProtocolError('server has no FileManager');
  await runTask(client, 'DeleteDatastoreFile_Task', fm, [textEl('name', datastorePath), refEl('datacenter', datacenter)], options);
}

/** A file found by {@link listDatastoreDirectory}. */
export interface DatastoreFileEntry {
  /** Name relative to the searched directory. */
  path: string;
  size: number;
}

/** List the files of one datastore directory (not recursive) with sizes, via SearchDatastore_Task. */
export async function listDatastoreDirectory(client: VimClient, browser: MoRef, datastorePath: string, options: WaitOptions = {}): Promise<DatastoreFileEntry[]> {
  const spec = el('searchSpec', [
    el('details', [textEl('fileType', true), textEl('fileSize', true), textEl('modification', false), textEl('fileOwner', false)]),
    // Without a pattern some servers (vcsim) match nothing; '*' is every name.
    textEl('matchPattern', '*'),
  ]);
  const outcome = await runTask(client, 'SearchDatastore_Task', browser, [textEl('datastorePath', datastorePath), spec], options);
  return childrenNamed(outcome.result, 'file').map((f) => ({ path: childText(f, 'path') ?? '', size: Number(childText(f, 'fileSize') ?? 0) }));
}

