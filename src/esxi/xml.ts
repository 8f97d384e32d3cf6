/**
 * Namespace-aware reading and writing of the little XML vim25 needs.
 *
 * Replies are parsed with fast-xml-parser (order preserved), then every element and attribute
 * name is resolved to `{namespace URI, local name}` using the `xmlns` declarations in scope.
 * Matching on URIs rather than prefixes matters: vcsim writes `XMLSchema-instance:type` where
 * ESXi writes `xsi:type`; both are the same attribute once resolved.
 *
 * @module
 */
import { XMLParser } from 'fast-xml-parser';

/** The XML Schema instance namespace (home of the `type` attribute on polymorphic values). */
export const XSI_NS = 'http://www.w3.org/2001/XMLSchema-instance';
/** The SOAP 1.1 envelope namespace. */
export const SOAPENV_NS = 'http://schemas.xmlsoap.org/soap/envelope/';
/** The vim25 namespace. */
export const VIM25_NS = 'urn:vim25';

/** One element with its names resolved. */
export interface XmlElement {
  /** Local name (no prefix). */
  name: string;
  /** Namespace URI ('' when none). */
  ns: string;
  /** Attributes keyed by `{uri}local` (or just `local` when unqualified); values decoded. */
  attrs: Record<string, string>;
  /** Child elements in document order. */
  children: XmlElement[];
  /** Concatenated text content directly inside this element. */
  text: string;
  /** Namespace declarations in scope, prefix -> URI ('' = default namespace). */
  scope: Record<string, string>;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  preserveOrder: true,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  processEntities: true,
  // Go's encoder (vcsim) and ESXi write numeric character references such as &#34;.
  htmlEntities: true,
});

type RawNode = Record<string, unknown>;

function splitQName(qname: string): [string, string] {
  const i = qname.indexOf(':');
  return i < 0 ? ['', qname] : [qname.slice(0, i), qname.slice(i + 1)];
}

function convert(raw: RawNode, parentScope: Record<string, string>): XmlElement | undefined {
  const tag = Object.keys(raw).find((k) => k !== ':@');
  if (tag === undefined || tag === '#text' || tag.startsWith('?')) return undefined;
  const rawAttrs = (raw[':@'] ?? {}) as Record<string, string>;
  const scope = { ...parentScope };
  for (const [k, v] of Object.entries(rawAttrs)) {
    if (k === 'xmlns') scope[''] = v;
    else if (k.startsWith('xmlns:')) scope[k.slice(6)] = v;
  }
  const attrs: Record<string, string> = {};
  for (const [k, v] of Object.entries(rawAttrs)) {
    if (k === 'xmlns' || k.startsWith('xmlns:')) continue;
    const [prefix, local] = splitQName(k);
    // Unprefixed attributes have no namespace (XML Namespaces 1.0, section 6.2).
    attrs[prefix ? `{${scope[prefix] ?? prefix}}${local}` : local] = v;
  }
  const [prefix, local] = splitQName(tag);
  const element: XmlElement = { name: local, ns: scope[prefix] ?? '', attrs, children: [], text: '', scope };
  for (const child of (raw[tag] ?? []) as RawNode[]) {
    if ('#text' in child) element.text += String(child['#text']);
    else {
      const converted = convert(child, scope);
      if (converted) element.children.push(converted);
    }
  }
  return element;
}

/** Parse an XML document; returns its root element. Throws on malformed XML. */
export function parseXml(xml: string): XmlElement {
  const top = parser.parse(xml) as RawNode[];
  for (const raw of top) {
    const element = convert(raw, { xml: 'http://www.w3.org/XML/1998/namespace' });
    if (element) return element;
  }
  throw new Error('no root element');
}

/** First child with that local name (any namespace: vim25 payloads use one namespace). */
export function child(element: XmlElement | undefined, name: string): XmlElement | undefined {
  return element?.children.find((c) => c.name === name);
}

/** Every child with that local name. */
export function childrenNamed(element: XmlElement | undefined, name: string): XmlElement[] {
  return element ? element.children.filter((c) => c.name === name) : [];
}

/** Text of the first child with that local name, or undefined. */
export function childText(element: XmlElement | undefined, name: string): string | undefined {
  return child(element, name)?.text;
}

/**
 * The `xsi:type` of an element, resolved by namespace, as a local type name (`xsd:string` ->
 * `string`, `VirtualMachinePowerState` -> itself). Undefined when absent.
 */
export function xsiType(element: XmlElement): string | undefined {
  const value = element.attrs[`{${XSI_NS}}type`];
  return value === undefined ? undefined : splitQName(value)[1];
}

/** Escape text for element content or a double-quoted attribute. */
export function escapeXml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}
