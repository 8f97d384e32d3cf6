/**
 * PropertyCollector reads: RetrievePropertiesEx, following `token` with
 * ContinueRetrievePropertiesEx when the server pages its answer.
 *
 * @module
 */
import { callThrowing, readRef, type CallOptions, type VimClient } from './client.js';
import { ProtocolError } from './errors.js';
import { el, refEl, textEl, type MoRef } from './soap.js';
import { child, childText, childrenNamed, type XmlElement } from './xml.js';

/** One object's requested properties: path -> `<val>` element. */
export interface ObjectContent {
  obj: MoRef;
  props: Map<string, XmlElement>;
}

/** Which properties of which type to read. */
export interface PropertySpec {
  type: string;
  paths: readonly string[];
}

/** Where to start and how to walk the inventory (already-built `<selectSet>` elements). */
export interface ObjectSpec {
  obj: MoRef;
  skip?: boolean;
  selectSet?: readonly string[];
}

/** A TraversalSpec element for `selectSet`. */
export function traversal(name: string, type: string, path: string, next: readonly string[] = []): string {
  return el('selectSet', [textEl('name', name), textEl('type', type), textEl('path', path), textEl('skip', false), ...next.map((n) => el('selectSet', [textEl('name', n)]))], 'TraversalSpec');
}

/** Traversal from the root folder to every VM, datastore, host and compute resource of a standalone host or vCenter. */
export const INVENTORY_TRAVERSAL: readonly string[] = [
  traversal('folder', 'Folder', 'childEntity', ['folder', 'dcVm', 'dcHost', 'dcDs', 'cr']),
  traversal('dcVm', 'Datacenter', 'vmFolder', ['folder']),
  traversal('dcHost', 'Datacenter', 'hostFolder', ['folder']),
  traversal('dcDs', 'Datacenter', 'datastore'),
  traversal('cr', 'ComputeResource', 'host'),
];

function readObjects(returnval: XmlElement | undefined, into: ObjectContent[]): string | undefined {
  for (const o of childrenNamed(returnval, 'objects')) {
    const obj = readRef(child(o, 'obj'));
    if (!obj) throw new ProtocolError('RetrievePropertiesEx: object without obj reference');
    const props = new Map<string, XmlElement>();
    for (const p of childrenNamed(o, 'propSet')) {
      const name = childText(p, 'name');
      const val = child(p, 'val');
      if (name !== undefined && val) props.set(name, val);
    }
    into.push({ obj, props });
  }
  return childText(returnval, 'token');
}

/** Read properties; follows pagination tokens until the server has sent everything. */
export async function retrieveProperties(
  client: VimClient,
  propSets: readonly PropertySpec[],
  objectSets: readonly ObjectSpec[],
  options: CallOptions & { maxObjects?: number } = {},
): Promise<ObjectContent[]> {
  const pc = client.serviceContent.propertyCollector;
  const spec = el('specSet', [
    ...propSets.map((p) => el('propSet', [textEl('type', p.type), textEl('all', false), ...p.paths.map((x) => textEl('pathSet', x))])),
    ...objectSets.map((o) => el('objectSet', [refEl('obj', o.obj), textEl('skip', o.skip ?? false), ...(o.selectSet ?? [])])),
  ]);
  const opts = el('options', options.maxObjects ? [textEl('maxObjects', options.maxObjects)] : []);
  const out: ObjectContent[] = [];
  const first = await callThrowing(client, 'RetrievePropertiesEx', pc, [spec, opts], options);
  let token = readObjects(child(first, 'returnval'), out);
  while (token) {
    const next = await callThrowing(client, 'ContinueRetrievePropertiesEx', pc, [textEl('token', token)], options);
    token = readObjects(child(next, 'returnval'), out);
  }
  return out;
}

/** Read some properties of one object. */
export async function getProperties(client: VimClient, obj: MoRef, paths: readonly string[], options: CallOptions = {}): Promise<Map<string, XmlElement>> {
  const [content] = await retrieveProperties(client, [{ type: obj.type, paths }], [{ obj }], options);
  return content?.props ?? new Map();
}
