/**
 * Inventory look-ups on one host: its datacenter, VM folder, resource pool, datastores, and VMs
 * by name with their power state, paths and real file sizes (`layoutEx.file`).
 *
 * @module
 */
import type { CallOptions, VimClient } from './client.js';
import { readRef } from './client.js';
import { ObjectNotFoundError, ProtocolError } from './errors.js';
import { INVENTORY_TRAVERSAL, retrieveProperties } from './properties.js';
import type { MoRef } from './soap.js';
import { childText, childrenNamed, type XmlElement } from './xml.js';

/** A datastore path split into its parts: `[LocalDS_0] vm/vm.vmx` -> `{ datastore: 'LocalDS_0', path: 'vm/vm.vmx' }`. */
export interface DatastorePath {
  datastore: string;
  path: string;
}

/** Parse `[datastore] path`. Throws ProtocolError on anything else. */
export function parseDatastorePath(value: string): DatastorePath {
  const m = /^\[([^\]]+)\]\s*(.*)$/.exec(value);
  if (!m) throw new ProtocolError(`not a datastore path: ${value}`);
  return { datastore: m[1] ?? '', path: m[2] ?? '' };
}

/** Format `[datastore] path`. */
export function formatDatastorePath(p: DatastorePath): string {
  return `[${p.datastore}] ${p.path}`;
}

/** A datastore of the host. */
export interface DatastoreInfo {
  ref: MoRef;
  name: string;
  /** Its HostDatastoreBrowser (for SearchDatastore_Task). */
  browser: MoRef | undefined;
}

/** Where new VMs go on a standalone host. */
export interface HostInventory {
  datacenter: MoRef;
  /** The datacenter's name, the `dcPath` of datastore URLs (`ha-datacenter` on ESXi). */
  datacenterName: string;
  vmFolder: MoRef;
  resourcePool: MoRef;
  host: MoRef | undefined;
  datastores: DatastoreInfo[];
}

/** One file of a VM as the server accounts it. */
export interface VmFile {
  /** Datastore path, `[ds] dir/file`. */
  name: string;
  /** `config`, `nvram`, `diskDescriptor`, `diskExtent`, `snapshotData`, `log`, ... */
  type: string;
  size: number;
}

/** A VM found by name. */
export interface VmInfo {
  ref: MoRef;
  name: string;
  powerState: 'poweredOn' | 'poweredOff' | 'suspended' | string;
  /** `config.files.vmPathName`, e.g. `[LocalDS_0] vm/vm.vmx`. */
  vmPathName: string;
  files: VmFile[];
}

function text(props: Map<string, XmlElement>, path: string): string | undefined {
  return props.get(path)?.text.trim();
}

/** Read datacenter, VM folder, resource pool, host and datastores (the first datacenter). */
export async function getHostInventory(client: VimClient, options: CallOptions = {}): Promise<HostInventory> {
  const objects = await retrieveProperties(
    client,
    [
      { type: 'Datacenter', paths: ['name', 'vmFolder'] },
      { type: 'ComputeResource', paths: ['resourcePool', 'host'] },
      { type: 'Datastore', paths: ['name', 'browser'] },
    ],
    [{ obj: client.serviceContent.rootFolder, selectSet: INVENTORY_TRAVERSAL }],
    options,
  );
  const dc = objects.find((o) => o.obj.type === 'Datacenter');
  const cr = objects.find((o) => o.obj.type === 'ComputeResource' || o.obj.type === 'ClusterComputeResource');
  const vmFolder = readRef(dc?.props.get('vmFolder'));
  const resourcePool = readRef(cr?.props.get('resourcePool'));
  if (!dc || !vmFolder || !resourcePool) throw new ObjectNotFoundError(`${client.endpoint.origin.host}: no datacenter with a VM folder and resource pool`);
  const hostList = cr?.props.get('host');
  const firstHost = hostList?.children[0];
  return {
    datacenter: dc.obj,
    datacenterName: text(dc.props, 'name') ?? 'ha-datacenter',
    vmFolder,
    resourcePool,
    host: firstHost ? { type: 'HostSystem', value: firstHost.text.trim() } : undefined,
    datastores: objects
      .filter((o) => o.obj.type === 'Datastore')
      .map((o) => ({ ref: o.obj, name: text(o.props, 'name') ?? '', browser: readRef(o.props.get('browser')) })),
  };
}

function readFiles(val: XmlElement | undefined): VmFile[] {
  return childrenNamed(val, 'VirtualMachineFileLayoutExFileInfo').map((f) => ({
    name: childText(f, 'name') ?? '',
    type: childText(f, 'type') ?? '',
    size: Number(childText(f, 'size') ?? 0),
  }));
}

/** Every VM on the host with its state, path and files. */
export async function listVms(client: VimClient, options: CallOptions = {}): Promise<VmInfo[]> {
  const objects = await retrieveProperties(
    client,
    [{ type: 'VirtualMachine', paths: ['name', 'runtime.powerState', 'config.files.vmPathName', 'layoutEx.file'] }],
    [{ obj: client.serviceContent.rootFolder, selectSet: INVENTORY_TRAVERSAL }],
    options,
  );
  return objects
    .filter((o) => o.obj.type === 'VirtualMachine')
    .map((o) => ({
      ref: o.obj,
      name: text(o.props, 'name') ?? '',
      powerState: text(o.props, 'runtime.powerState') ?? 'unknown',
      vmPathName: text(o.props, 'config.files.vmPathName') ?? '',
      files: readFiles(o.props.get('layoutEx.file')),
    }));
}

/** Find one VM by its exact name; ObjectNotFoundError when absent. */
export async function findVmByName(client: VimClient, name: string, options: CallOptions = {}): Promise<VmInfo> {
  const vm = (await listVms(client, options)).find((v) => v.name === name);
  if (!vm) throw new ObjectNotFoundError(`No VM named "${name}" on ${client.endpoint.origin.host}`, { details: { vmName: name } });
  return vm;
}

/**
 * The VM's real size in bytes: the sum of `layoutEx.file` sizes (disks, snapshots, config,
 * logs), each file counted once.
 */
export function vmSizeBytes(vm: Pick<VmInfo, 'files'>): number {
  const seen = new Map<string, number>();
  for (const f of vm.files) seen.set(f.name, f.size);
  let total = 0;
  for (const size of seen.values()) total += Number.isFinite(size) ? size : 0;
  return total;
}
