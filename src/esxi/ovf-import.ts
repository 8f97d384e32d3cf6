/**
 * Import a VM from an OVF descriptor and its files: `OvfManager.CreateImportSpec` turns the
 * descriptor into a server-specific import spec, `ResourcePool.ImportVApp` creates the VM and
 * an `HttpNfcLease`, each file is streamed to the lease URL whose `importKey` matches the spec's
 * `fileItem.deviceId`, then `HttpNfcLeaseComplete`. On any failure or abort the lease is aborted
 * and the VM the import created is destroyed, so nothing is left at the destination.
 *
 * The import spec goes back to the server as the XML it sent (with `xsi:type`s re-resolved by
 * namespace), not through a typed model: this client has no WSDL (docs/decisions/0301).
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { XMLValidator } from 'fast-xml-parser';
import { ResultAsync } from 'neverthrow';
import { z } from 'zod';
import { callThrowing, readRef, type VimClient } from './client.js';
import { AlreadyExistsError, EsxiAbortedError, EsxiError, InvalidStateError, ObjectNotFoundError, ProtocolError, asEsxiError } from './errors.js';
import { getHostInventory, listVms, type HostInventory } from './inventory.js';
import { abortLease, completeLease, percentOf, readLeaseInfo, startProgressTicker, uploadToLeaseUrl, waitLeaseReady, type ProgressTicker } from './nfc-lease.js';
import { destroyEntity, powerOffVm, powerOnVm } from './operations.js';
import { retrieveProperties, traversal } from './properties.js';
import { el, refEl, textEl, type MoRef } from './soap.js';
import { child, childText, childrenNamed, escapeXml, xsiType, XSI_NS, type XmlElement } from './xml.js';
import { ApMigrateError, InvalidInputError, type ApMigrateErrorOptions } from '../errors.js';

/** One file named in the descriptor's `References`, as the caller provides it. */
export interface OvfFileSource {
  /** Exact size in bytes (sent as Content-Length and checked); undefined only for internal streaming callers. */
  size: number | undefined;
  /** Open the file's bytes as a stream; called once, just before its upload. */
  open(): Promise<Readable>;
}

/** What to import. */
export interface ImportOvfInput {
  /** The OVF descriptor (XML). */
  descriptor: string;
  /** Name of the new VM. */
  name: string;
  /** Datastore name at the destination (default: the host's first datastore). */
  datastore?: string;
  /** OVF network name -> destination network name. Unmapped networks get the server's default. */
  networkMapping?: Record<string, string>;
  /** OVF `DeploymentOption` id (default: the descriptor's default). */
  deploymentOption?: string;
  /** The file for a `References/File/@href` path, or undefined when there is none. */
  files: (path: string) => OvfFileSource | undefined;
}

/** Options of an import. */
export interface ImportOvfOptions {
  /** Abort the import: the lease is aborted and the created VM destroyed. */
  signal?: AbortSignal;
  /** Called with the total bytes uploaded so far. */
  onBytes?: (bytes: number) => void;
  /** How often to call HttpNfcLeaseProgress (default 5000 ms). */
  progressIntervalMs?: number;
  /** Power the VM on after the import completed (default false). */
  powerOn?: boolean;
  /** Give up if the lease is not ready within this many milliseconds (default 5 minutes). */
  readyTimeoutMs?: number;
}

/** A problem the server reported about the descriptor (`OvfCreateImportSpecResult.error`/`warning`). */
export interface OvfProblem {
  /** The vim25 fault type, e.g. `OvfUnsupportedType`. */
  faultType: string;
  /** The server's message. */
  message: string;
}

/** One uploaded file. */
export interface ImportedFile {
  /** Path from the descriptor's References. */
  path: string;
  /** The import spec's device id for it. */
  deviceId: string;
  bytes: number;
}

/** What an import did. */
export interface ImportOvfReport {
  /** The new VM. */
  vm: MoRef;
  /** Bytes uploaded in total. */
  bytes: number;
  files: ImportedFile[];
  /** Warnings the server gave about the descriptor (the import went ahead). */
  warnings: OvfProblem[];
}

/** The server refused an OVF descriptor (`CreateImportSpec` or `CreateDescriptor` returned `error` entries). Nothing was created. */
export class OvfImportRejectedError extends EsxiError {
  static {
    ApMigrateError.markClass(this, 'ap-migrate.error.OvfImportRejectedError');
  }

  /** Whether `value` is an OvfImportRejectedError from any copy of the package (see {@link ApMigrateError.isInstance}). */
  static override isInstance(value: unknown): value is OvfImportRejectedError {
    return ApMigrateError.hasMarker(value, 'ap-migrate.error.OvfImportRejectedError');
  }

  /** Every error the server listed. */
  readonly problems: readonly OvfProblem[];

  constructor(message: string, problems: readonly OvfProblem[], options: ApMigrateErrorOptions = {}) {
    super('ESXI_OVF_REJECTED', message, { ...options, faultType: problems[0]?.faultType, details: { ...options.details, problems } });
    this.problems = problems;
  }
}

const isFunction = (v: unknown): boolean => typeof v === 'function';

/** Schema of {@link ImportOvfInput}. */
export const ImportOvfInputSchema = z.object({
  descriptor: z.string().min(1, 'descriptor is empty').max(16 * 1024 * 1024, 'descriptor larger than 16 MiB'),
  // vSphere caps entity names at 80 characters; control characters make no sense in one.
  name: z.string().min(1).max(80).refine((s) => !/[\u0000-\u001f\u007f]/.test(s), 'name contains control characters'),
  datastore: z.string().min(1).optional(),
  networkMapping: z.record(z.string().min(1), z.string().min(1)).optional(),
  deploymentOption: z.string().min(1).optional(),
  files: z.custom<ImportOvfInput['files']>(isFunction, 'files must be a function (path) => { size, open }'),
});

/** Schema of {@link ImportOvfOptions}. */
export const ImportOvfOptionsSchema = z.object({
  signal: z.instanceof(AbortSignal).optional(),
  onBytes: z.custom<(bytes: number) => void>(isFunction, 'onBytes must be a function').optional(),
  progressIntervalMs: z.number().int().min(10).max(600_000).optional(),
  powerOn: z.boolean().optional(),
  readyTimeoutMs: z.number().int().positive().optional(),
});

const FileSourceSchema = z.object({
  size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  open: z.custom<OvfFileSource['open']>(isFunction, 'open must be a function'),
});

function zodIssues(err: z.ZodError, prefix = ''): { path: string; message: string }[] {
  return err.issues.map((i) => ({ path: [prefix, ...i.path.map(String)].filter(Boolean).join('.'), message: i.message }));
}

/** `ImportVApp` accepts the spec as the server wrote it; this writes it back as request XML. */
export function importSpecToXml(element: XmlElement, name = element.name): string {
  const attrs: string[] = [];
  for (const [key, value] of Object.entries(element.attrs)) {
    if (key === `{${XSI_NS}}type`) attrs.push(`xsi:type="${escapeXml(qualifyType(value, element.scope))}"`);
    // Unqualified attributes (`type` of a MoRef) pass through; vim25 data carries no other namespaced ones.
    else if (!key.startsWith('{')) attrs.push(`${key}="${escapeXml(value)}"`);
  }
  const inner = element.children.length > 0 ? element.children.map((c) => importSpecToXml(c)).join('') : escapeXml(element.text);
  return `<${name}${attrs.map((a) => ` ${a}`).join('')}>${inner}</${name}>`;
}

/** Resolve a QName-valued `xsi:type` by namespace: XML Schema types get `xsd:`, vim25 types none. */
function qualifyType(value: string, scope: Record<string, string>): string {
  const i = value.indexOf(':');
  if (i < 0) return value;
  const uri = scope[value.slice(0, i)];
  const local = value.slice(i + 1);
  return uri === 'http://www.w3.org/2001/XMLSchema' ? `xsd:${local}` : local;
}

function readProblems(faults: XmlElement[]): OvfProblem[] {
  return faults.map((f) => {
    const fault = child(f, 'fault');
    return { faultType: (fault && xsiType(fault)) ?? 'OvfFault', message: childText(f, 'localizedMessage')?.trim() ?? '' };
  });
}

/** The parts of `OvfCreateImportSpecResult` the import needs. */
interface ImportSpecResult {
  importSpec: XmlElement;
  fileItems: { deviceId: string; path: string; create: boolean; size: number | undefined }[];
  warnings: OvfProblem[];
}

async function createImportSpec(
  client: VimClient,
  args: { descriptor: string; name: string; pool: MoRef; datastore: MoRef; networks: { name: string; network: MoRef }[]; deploymentOption?: string },
  signal: AbortSignal | undefined,
): Promise<ImportSpecResult> {
  const ovfManager = client.serviceContent.ovfManager;
  if (!ovfManager) throw new ProtocolError(`${client.endpoint.origin.host} has no OvfManager`);
  // OvfCreateImportSpecParams, fields in WSDL order (OvfManagerCommonParams first).
  const cisp = el('cisp', [
    textEl('locale', ''),
    textEl('deploymentOption', args.deploymentOption ?? ''),
    textEl('entityName', args.name),
    ...args.networks.map((n) => el('networkMapping', [textEl('name', n.name), refEl('network', n.network)])),
  ]);
  const response = await callThrowing(client, 'CreateImportSpec', ovfManager, [
    textEl('ovfDescriptor', args.descriptor),
    refEl('resourcePool', args.pool),
    refEl('datastore', args.datastore),
    cisp,
  ], { signal });
  const rv = child(response, 'returnval');
  const errors = readProblems(childrenNamed(rv, 'error'));
  if (errors.length > 0) {
    const list = errors.map((e) => `${e.faultType}: ${e.message}`).join('; ');
    throw new OvfImportRejectedError(`CreateImportSpec on ${client.endpoint.origin.host} rejected the OVF descriptor: ${list}`, errors);
  }
  const importSpec = child(rv, 'importSpec');
  if (!importSpec) throw new ProtocolError('CreateImportSpec: reply has neither importSpec nor error');
  const fileItems = childrenNamed(rv, 'fileItem').map((f) => {
    const size = childText(f, 'size');
    return {
      deviceId: childText(f, 'deviceId') ?? '',
      path: childText(f, 'path') ?? '',
      create: childText(f, 'create') === 'true',
      size: size === undefined ? undefined : Number(size),
    };
  });
  return { importSpec, fileItems, warnings: readProblems(childrenNamed(rv, 'warning')) };
}

/** Networks reachable from the root folder by name (Datacenter.networkFolder is not in the inventory traversal). */
async function listNetworks(client: VimClient, signal: AbortSignal | undefined): Promise<Map<string, MoRef>> {
  const objects = await retrieveProperties(
    client,
    [{ type: 'Network', paths: ['name'] }],
    [{
      obj: client.serviceContent.rootFolder,
      selectSet: [traversal('folder', 'Folder', 'childEntity', ['folder', 'dcNet']), traversal('dcNet', 'Datacenter', 'networkFolder', ['folder'])],
    }],
    { signal },
  );
  const byName = new Map<string, MoRef>();
  for (const o of objects) {
    const name = o.props.get('name')?.text.trim();
    if (name && o.obj.type !== 'Folder' && o.obj.type !== 'Datacenter') byName.set(name, o.obj);
  }
  return byName;
}

/** Where the import goes, looked up and checked before anything is created. */
interface ImportTarget {
  inventory: HostInventory;
  datastore: MoRef;
  networks: { name: string; network: MoRef }[];
}

/** The destination datastore and networks; refuses a taken VM name before anything exists. */
async function resolveImportTarget(client: VimClient, input: ImportOvfInput, signal: AbortSignal | undefined): Promise<ImportTarget> {
  const inventory = await getHostInventory(client, { signal });
  const datastore = input.datastore === undefined ? inventory.datastores[0] : inventory.datastores.find((d) => d.name === input.datastore);
  if (!datastore) {
    throw new ObjectNotFoundError(`No datastore ${input.datastore ? `named "${input.datastore}" ` : ''}on ${client.endpoint.origin.host}`, { details: { datastore: input.datastore } });
  }
  // Refuse before creating anything: a half-imported VM must never shadow an existing one.
  if ((await listVms(client, { signal })).some((v) => v.name === input.name)) {
    throw new AlreadyExistsError(`A VM named "${input.name}" already exists on ${client.endpoint.origin.host}`, { faultType: 'DuplicateName', details: { vmName: input.name } });
  }
  return { inventory, datastore: datastore.ref, networks: await mapNetworks(client, input.networkMapping, signal) };
}

/** OVF network name -> destination network, each target looked up by name. */
async function mapNetworks(client: VimClient, mapping: Record<string, string> | undefined, signal: AbortSignal | undefined): Promise<{ name: string; network: MoRef }[]> {
  if (!mapping || Object.keys(mapping).length === 0) return [];
  const known = await listNetworks(client, signal);
  return Object.entries(mapping).map(([ovfName, target]) => {
    const network = known.get(target);
    if (!network) throw new ObjectNotFoundError(`No network named "${target}" on ${client.endpoint.origin.host} (mapping of OVF network "${ovfName}")`, { details: { network: target } });
    return { name: ovfName, network };
  });
}

/** A file item of the import spec and the caller's source for it. */
interface ImportSource {
  item: ImportSpecResult['fileItems'][number];
  source: OvfFileSource;
}

/** Each file item of the spec with the caller's source for it (all found before ImportVApp). */
function matchSources(spec: ImportSpecResult, input: ImportOvfInput): ImportSource[] {
  return spec.fileItems.map((item) => {
    const source = input.files(item.path);
    if (!source) throw new InvalidInputError('OVF import files', [{ path: 'files', message: `no file for "${item.path}" named in the descriptor's References` }]);
    return { item, source };
  });
}

/** What the lease phase has done so far: rollback needs the entity, progress the bytes. */
interface LeaseProgress {
  entity: MoRef | undefined;
  bytes: number;
  ticker: ProgressTicker | undefined;
}

/**
 * The import itself, for callers that already built a valid input (ovf-migrate streams export
 * downloads whose size may be unknown). Public callers go through {@link importOvf}, which
 * validates first. Rejects with an EsxiError (InvalidInputError for a file it has no source for).
 */
export async function runOvfImport(client: VimClient, input: ImportOvfInput, options: ImportOvfOptions = {}): Promise<ImportOvfReport> {
  const { signal } = options;
  const target = await resolveImportTarget(client, input, signal);
  const spec = await createImportSpec(client, {
    descriptor: input.descriptor,
    name: input.name,
    pool: target.inventory.resourcePool,
    datastore: target.datastore,
    networks: target.networks,
    deploymentOption: input.deploymentOption,
  }, signal);
  const sources = matchSources(spec, input);
  const response = await callThrowing(client, 'ImportVApp', target.inventory.resourcePool, [importSpecToXml(spec.importSpec, 'spec'), refEl('folder', target.inventory.vmFolder)], { signal });
  const lease = readRef(child(response, 'returnval'));
  if (!lease) throw new ProtocolError('ImportVApp: no lease returned');
  // From here on the VM exists: any failure aborts the lease and destroys it.
  const progress: LeaseProgress = { entity: undefined, bytes: 0, ticker: undefined };
  try {
    const { vm, files } = await uploadThroughLease(client, lease, sources, options, progress);
    await completeLease(client, lease);
    // Without the signal: an abort mid-task would leave a VM powering on that rollback could not destroy.
    if (options.powerOn) await powerOnVm(client, vm);
    if (signal?.aborted) throw new EsxiAbortedError(`import of ${input.name} aborted`);
    return { vm, bytes: progress.bytes, files, warnings: spec.warnings };
  } catch (err) {
    await progress.ticker?.stop();
    const error = asEsxiError(err, `import of ${input.name}`);
    (error.details as Record<string, unknown>).rollback = await rollBack(client, lease, progress.entity);
    throw error;
  }
}

/** Wait for the lease, then stream every file to its device URL while reporting progress (the ticker is stopped on success). */
async function uploadThroughLease(
  client: VimClient,
  lease: MoRef,
  sources: readonly ImportSource[],
  options: ImportOvfOptions,
  progress: LeaseProgress,
): Promise<{ vm: MoRef; files: ImportedFile[] }> {
  const { signal } = options;
  await waitLeaseReady(client, lease, { signal, readyTimeoutMs: options.readyTimeoutMs });
  const info = await readLeaseInfo(client, lease, { signal });
  const vm = info.entity;
  progress.entity = vm;
  if (!vm) throw new ProtocolError(`HttpNfcLease ${lease.value}: info has no entity`);
  const plan = sources.map(({ item, source }) => {
    const device = info.deviceUrls.find((d) => d.importKey === item.deviceId);
    if (!device) throw new ProtocolError(`HttpNfcLease ${lease.value}: no device URL with importKey ${item.deviceId} (file ${item.path})`);
    return { item, source, device };
  });
  const total = sources.reduce((sum, s) => sum + (s.source.size ?? s.item.size ?? 0), 0);
  progress.ticker = startProgressTicker(client, lease, () => percentOf(progress.bytes, total), options.progressIntervalMs);
  const files: ImportedFile[] = [];
  for (const { item, source, device } of plan) {
    const body = await source.open();
    const sent = await uploadToLeaseUrl(client, device.url, body, {
      create: item.create,
      size: source.size,
      signal,
      onChunk: (n) => {
        progress.bytes += n;
        options.onBytes?.(progress.bytes);
      },
    });
    files.push({ path: item.path, deviceId: item.deviceId, bytes: sent });
  }
  await progress.ticker.stop();
  return { vm, files };
}

/** Abort the lease and destroy the VM the import created; each step's outcome, for `details.rollback`. */
async function rollBack(client: VimClient, lease: MoRef, known: MoRef | undefined): Promise<string[]> {
  const steps: string[] = [];
  steps.push((await abortLease(client, lease)) ? `aborted lease ${lease.value}` : `lease ${lease.value} already gone`);
  let entity = known;
  // The VM exists from ImportVApp on, even when the lease never became ready.
  entity ??= await readLeaseInfo(client, lease).then((i) => i.entity, () => undefined);
  if (!entity) {
    steps.push('no VM to destroy (lease named no entity)');
    return steps;
  }
  try {
    // A VM that got as far as powering on must be off before it can be destroyed.
    await powerOffVm(client, entity).then(
      () => steps.push(`powered off ${entity.value}`),
      (e: unknown) => {
        if (!InvalidStateError.isInstance(e)) throw e;
      },
    );
    await destroyEntity(client, entity);
    steps.push(`destroyed ${entity.value}`);
  } catch (err) {
    // A real host removes the VM itself when an import lease is aborted.
    const e = asEsxiError(err, 'destroy');
    steps.push(e.code === 'ESXI_NOT_FOUND' ? `${entity.value} already removed by the server` : `destroying ${entity.value} failed: ${e.message}`);
  }
  return steps;
}

/** The input with every field checked, and `files` checking each source it hands out; throws InvalidInputError. */
function checkedImportInput(input: ImportOvfInput, options: ImportOvfOptions): ImportOvfInput {
  const parsedInput = ImportOvfInputSchema.safeParse(input);
  if (!parsedInput.success) throw new InvalidInputError('OVF import input', zodIssues(parsedInput.error), { cause: parsedInput.error });
  const parsedOptions = ImportOvfOptionsSchema.safeParse(options);
  if (!parsedOptions.success) throw new InvalidInputError('OVF import options', zodIssues(parsedOptions.error), { cause: parsedOptions.error });
  const wellFormed = XMLValidator.validate(input.descriptor);
  if (wellFormed !== true) {
    throw new InvalidInputError('OVF descriptor', [{ path: 'descriptor', message: `not well-formed XML (line ${wellFormed.err.line}): ${wellFormed.err.msg}` }]);
  }
  const files = (path: string): OvfFileSource | undefined => {
    const source = input.files(path);
    if (source === undefined) return undefined;
    const checked = FileSourceSchema.safeParse(source);
    if (!checked.success) throw new InvalidInputError('OVF import files', zodIssues(checked.error, `files(${path})`));
    return source;
  };
  return { ...input, files };
}

/**
 * Import a VM from an OVF descriptor and its files into the host `client` is logged in to.
 * Bad input gives InvalidInputError; a descriptor the server refuses gives
 * {@link OvfImportRejectedError}; an existing VM name gives AlreadyExistsError. On any failure
 * or abort the lease is aborted and the VM the import created is destroyed.
 */
export function importOvf(client: VimClient, input: ImportOvfInput, options: ImportOvfOptions = {}): ResultAsync<ImportOvfReport, EsxiError | InvalidInputError> {
  // Inside the async function, so that bad input rejects like every other failure.
  const run = async () => runOvfImport(client, checkedImportInput(input, options), options);
  return ResultAsync.fromPromise(run(), (e) => (InvalidInputError.isInstance(e) ? e : asEsxiError(e, `import OVF as ${input.name}`)));
}
