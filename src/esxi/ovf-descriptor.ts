/**
 * An OVF descriptor for an existing VM: `OvfManager.CreateDescriptor` when the server has it,
 * otherwise a minimal OVF 1.x descriptor generated here from the VM's configuration (name,
 * guest id, CPUs, memory, disks with capacity and controller) read through the
 * PropertyCollector. The generated one carries no NICs, CD-ROMs or vApp properties: it is what
 * an import needs to recreate the VM's disks and sizing, nothing more.
 *
 * @module
 */
import { ResultAsync } from 'neverthrow';
import { callThrowing, type CallOptions, type VimClient } from './client.js';
import { EsxiError, MethodNotSupportedError, ProtocolError, asEsxiError } from './errors.js';
import { OvfImportRejectedError } from './ovf-import.js';
import { getProperties } from './properties.js';
import { el, refEl, textEl, type MoRef } from './soap.js';
import { child, childText, childrenNamed, escapeXml, xsiType, type XmlElement } from './xml.js';

/** A disk controller of the VM. */
export interface VmController {
  /** Device key (disks name it as `controllerKey`). */
  key: number;
  /** OVF resource type: 5 IDE, 6 parallel SCSI, 20 other storage controller (SATA, NVMe). */
  resourceType: 5 | 6 | 20;
  /** OVF `ResourceSubType` (`lsilogic`, `lsilogicsas`, `VirtualSCSI`, `buslogic`, `vmware.sata.ahci`, `vmware.nvme.controller`). */
  subType: string | undefined;
  busNumber: number;
}

/** A virtual disk of the VM. */
export interface VmDisk {
  key: number;
  controllerKey: number;
  unitNumber: number;
  capacityBytes: number;
  /** `deviceInfo.label`, e.g. `Hard disk 1`. */
  label: string | undefined;
}

/** The parts of a VM's configuration the generated descriptor uses. */
export interface VmHardware {
  name: string;
  guestId: string;
  numCPU: number;
  memoryMB: number;
  /** Virtual hardware version, e.g. `vmx-13`. */
  version: string | undefined;
  controllers: VmController[];
  /** Disks in device order. */
  disks: VmDisk[];
}

/** The file holding one disk, as the descriptor's `References` names it. */
export interface DescriptorDiskFile {
  /** `ovf:href`, e.g. `disk-0.vmdk`. */
  href: string;
  /** `ovf:size` in bytes, when known. */
  size?: number;
}

const CONTROLLERS: Record<string, { resourceType: 5 | 6 | 20; subType?: string }> = {
  VirtualIDEController: { resourceType: 5 },
  VirtualLsiLogicController: { resourceType: 6, subType: 'lsilogic' },
  VirtualLsiLogicSASController: { resourceType: 6, subType: 'lsilogicsas' },
  ParaVirtualSCSIController: { resourceType: 6, subType: 'VirtualSCSI' },
  VirtualBusLogicController: { resourceType: 6, subType: 'buslogic' },
  VirtualAHCIController: { resourceType: 20, subType: 'vmware.sata.ahci' },
  VirtualNVMEController: { resourceType: 20, subType: 'vmware.nvme.controller' },
};

const num = (e: XmlElement | undefined, name: string): number | undefined => {
  const t = childText(e, name);
  return t === undefined || t.trim() === '' ? undefined : Number(t);
};

/** Read {@link VmHardware} from `config.hardware.device` and friends (one PropertyCollector call). */
export async function readVmHardware(client: VimClient, vm: MoRef, options: CallOptions = {}): Promise<VmHardware> {
  const props = await getProperties(client, vm, ['name', 'config.guestId', 'config.hardware.numCPU', 'config.hardware.memoryMB', 'config.version', 'config.hardware.device'], options);
  const text = (p: string) => props.get(p)?.text.trim();
  const name = text('name');
  const devices = props.get('config.hardware.device');
  if (!name || !devices) throw new ProtocolError(`VM ${vm.value}: the server returned no name or device list`);
  const controllers: VmController[] = [];
  const disks: VmDisk[] = [];
  for (const d of devices.children) {
    const type = xsiType(d) ?? d.name;
    const key = num(d, 'key');
    if (key === undefined) continue;
    const controller = CONTROLLERS[type];
    if (controller) controllers.push({ key, resourceType: controller.resourceType, subType: controller.subType, busNumber: num(d, 'busNumber') ?? 0 });
    else if (type === 'VirtualDisk') {
      const bytes = num(d, 'capacityInBytes') ?? (num(d, 'capacityInKB') ?? 0) * 1024;
      disks.push({ key, controllerKey: num(d, 'controllerKey') ?? -1, unitNumber: num(d, 'unitNumber') ?? 0, capacityBytes: bytes, label: childText(child(d, 'deviceInfo'), 'label') });
    }
  }
  return {
    name,
    guestId: text('config.guestId') || 'otherGuest',
    numCPU: Number(text('config.hardware.numCPU') ?? 1),
    memoryMB: Number(text('config.hardware.memoryMB') ?? 4),
    version: text('config.version') || undefined,
    controllers,
    disks,
  };
}

const NS =
  'xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"' +
  ' xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"' +
  ' xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"' +
  ' xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"';

/** One `<Item>`; the CIM schema is a sequence in alphabetical order, so callers pass fields sorted. */
function item(fields: readonly [string, string | number | undefined][]): string {
  return `<Item>${fields.filter(([, v]) => v !== undefined).map(([k, v]) => `<rasd:${k}>${escapeXml(String(v))}</rasd:${k}>`).join('')}</Item>`;
}

const attr = (name: string, value: string | number) => ` ${name}="${escapeXml(String(value))}"`;

/**
 * Build a minimal OVF 1.x descriptor: References + DiskSection (stream-optimized VMDKs) + one
 * VirtualSystem with OS type, CPUs, memory, the controllers that carry disks, and the disks.
 * `diskFile(disk, i)` names each disk's file (default `<i>` -> `disk-<i>.vmdk`, no size).
 */
export function buildOvfDescriptor(vm: VmHardware, diskFile: (disk: VmDisk, index: number) => DescriptorDiskFile = (_d, i) => ({ href: `disk-${i}.vmdk` })): string {
  const used = vm.controllers.filter((c) => vm.disks.some((d) => d.controllerKey === c.key));
  const missing = vm.disks.find((d) => !used.some((c) => c.key === d.controllerKey));
  if (missing) throw new ProtocolError(`VM ${vm.name}: disk ${missing.key} is on controller ${missing.controllerKey}, which is not a known disk controller`);
  const files = vm.disks.map((d, i) => diskFile(d, i));
  const references = files.map((f, i) => `<File${attr('ovf:id', `file${i}`)}${attr('ovf:href', f.href)}${f.size !== undefined ? attr('ovf:size', f.size) : ''}/>`).join('');
  const diskSection = vm.disks
    .map((d, i) => `<Disk${attr('ovf:diskId', `vmdisk${i}`)}${attr('ovf:capacity', d.capacityBytes)}${attr('ovf:capacityAllocationUnits', 'byte')}${attr('ovf:fileRef', `file${i}`)}${attr('ovf:format', 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized')}/>`)
    .join('');
  let instance = 1;
  const items: string[] = [
    item([['AllocationUnits', 'hertz * 10^6'], ['Description', 'Number of Virtual CPUs'], ['ElementName', `${vm.numCPU} virtual CPU(s)`], ['InstanceID', instance++], ['ResourceType', 3], ['VirtualQuantity', vm.numCPU]]),
    item([['AllocationUnits', 'byte * 2^20'], ['Description', 'Memory Size'], ['ElementName', `${vm.memoryMB}MB of memory`], ['InstanceID', instance++], ['ResourceType', 4], ['VirtualQuantity', vm.memoryMB]]),
  ];
  const controllerIds = new Map<number, number>();
  for (const c of used) {
    const id = instance++;
    controllerIds.set(c.key, id);
    const label = c.resourceType === 5 ? 'IDE' : c.resourceType === 6 ? 'SCSI' : 'Storage';
    items.push(item([['Address', c.busNumber], ['Description', `${label} Controller`], ['ElementName', `${label} Controller ${c.busNumber}`], ['InstanceID', id], ['ResourceSubType', c.subType], ['ResourceType', c.resourceType]]));
  }
  vm.disks.forEach((d, i) => {
    items.push(item([['AddressOnParent', d.unitNumber], ['ElementName', d.label ?? `Hard disk ${i + 1}`], ['HostResource', `ovf:/disk/vmdisk${i}`], ['InstanceID', instance++], ['Parent', controllerIds.get(d.controllerKey)], ['ResourceType', 17]]));
  });
  const system =
    '<System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID>' +
    `<vssd:VirtualSystemIdentifier>${escapeXml(vm.name)}</vssd:VirtualSystemIdentifier>` +
    (vm.version ? `<vssd:VirtualSystemType>${escapeXml(vm.version)}</vssd:VirtualSystemType>` : '') +
    '</System>';
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n<Envelope ${NS}>` +
    `<References>${references}</References>` +
    `<DiskSection><Info>Virtual disk information</Info>${diskSection}</DiskSection>` +
    `<VirtualSystem${attr('ovf:id', vm.name)}><Info>A virtual machine</Info><Name>${escapeXml(vm.name)}</Name>` +
    // CIM OS id 1 is "Other"; VMware hosts read the real guest from vmw:osType.
    `<OperatingSystemSection${attr('ovf:id', 1)}${attr('vmw:osType', vm.guestId)}><Info>The kind of installed guest operating system</Info></OperatingSystemSection>` +
    `<VirtualHardwareSection><Info>Virtual hardware requirements</Info>${system}${items.join('')}</VirtualHardwareSection>` +
    '</VirtualSystem></Envelope>\n'
  );
}

/** A file the descriptor should reference (an ExportVm device), for `CreateDescriptor`'s `ovfFiles`. */
export interface DescribedFile {
  /** Export lease device key. */
  deviceId: string;
  /** File name in the OVF (the device's `targetId`). */
  path: string;
  /** Bytes, when known. */
  size?: number;
}

/** Which way the descriptor was made. */
export type DescriptorSource = 'CreateDescriptor' | 'generated';

/** A descriptor and how it was made. */
export interface VmDescriptor {
  descriptor: string;
  source: DescriptorSource;
}

/** Whether a fault means "this server does not have the method" (vcsim: MethodNotFound; some hosts: NotImplemented/NotSupported). */
export function isMissingMethod(err: unknown): boolean {
  return EsxiError.isInstance(err) && (err.code === 'ESXI_METHOD_NOT_SUPPORTED' || err.faultType === 'NotImplemented' || err.faultType === 'NotSupported');
}

async function createDescriptor(client: VimClient, vm: MoRef, files: readonly DescribedFile[], options: CallOptions): Promise<string> {
  const ovfManager = client.serviceContent.ovfManager;
  if (!ovfManager) throw new MethodNotSupportedError(`${client.endpoint.origin.host} has no OvfManager`);
  // OvfCreateDescriptorParams: ovfFiles (deviceId, path, compressionMethod, chunkSize, size, capacity), name, ...
  const cdp = el('cdp', files.map((f) => el('ovfFiles', [textEl('deviceId', f.deviceId), textEl('path', f.path), textEl('size', f.size ?? 0)])));
  const response = await callThrowing(client, 'CreateDescriptor', ovfManager, [refEl('obj', vm), cdp], options);
  const rv = child(response, 'returnval');
  const errors = childrenNamed(rv, 'error').map((e) => ({ faultType: xsiType(child(e, 'fault') ?? e) ?? 'OvfFault', message: childText(e, 'localizedMessage')?.trim() ?? '' }));
  if (errors.length > 0) throw new OvfImportRejectedError(`CreateDescriptor for ${vm.value}: ${errors.map((e) => `${e.faultType}: ${e.message}`).join('; ')}`, errors);
  const descriptor = childText(rv, 'ovfDescriptor');
  if (!descriptor) throw new ProtocolError(`CreateDescriptor for ${vm.value}: reply has no ovfDescriptor`);
  return descriptor;
}

/**
 * A descriptor for `vm`: `CreateDescriptor` (with `files` as `ovfFiles`) when the server has it,
 * otherwise {@link buildOvfDescriptor} from {@link readVmHardware}, disk i in `files`' disk order.
 * The throwing form of {@link describeVm}, for the export/import (ovf-migrate.ts); rejects with an EsxiError.
 */
export async function describeVmThrowing(client: VimClient, vm: MoRef, files: readonly DescribedFile[], options: CallOptions = {}): Promise<VmDescriptor> {
  try {
    return { descriptor: await createDescriptor(client, vm, files, options), source: 'CreateDescriptor' };
  } catch (err) {
    if (!isMissingMethod(err)) throw err;
  }
  const hardware = await readVmHardware(client, vm, options);
  if (files.length > 0 && files.length !== hardware.disks.length) {
    throw new ProtocolError(`VM ${hardware.name}: ${hardware.disks.length} disks in the configuration but ${files.length} disk files to describe`);
  }
  const descriptor = buildOvfDescriptor(hardware, (_d, i) => {
    const f = files[i];
    return f ? { href: f.path, ...(f.size ? { size: f.size } : {}) } : { href: `disk-${i}.vmdk` };
  });
  return { descriptor, source: 'generated' };
}

/**
 * An OVF descriptor for `vm`: the server's `CreateDescriptor` (with `files` as `ovfFiles`) when it
 * has one, otherwise one generated from the VM's configuration (guest, CPUs, memory, disk
 * controllers and disks; disk i is `files`' i-th entry).
 */
export function describeVm(client: VimClient, vm: MoRef, files: readonly DescribedFile[] = [], options: CallOptions = {}): ResultAsync<VmDescriptor, EsxiError> {
  return ResultAsync.fromPromise(describeVmThrowing(client, vm, files, options), (e) => asEsxiError(e, `describe ${vm.value}`));
}
