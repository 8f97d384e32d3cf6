/**
 * Builders for vim25 SOAP request envelopes. Each call in this client writes its own small body
 * with these helpers instead of generating code from the multi-megabyte WSDL (see
 * docs/decisions/0301-vim25-without-wsdl.md). Parameters must be written in WSDL order.
 *
 * @module
 */
import { escapeXml } from './xml.js';

/** A managed object reference, e.g. `{ type: 'VirtualMachine', value: 'vm-9' }`. */
export interface MoRef {
  /** Managed object type. */
  type: string;
  /** Server-side id. */
  value: string;
}

/** `<name>value</name>` with the value escaped; empty string when value is undefined. */
export function textEl(name: string, value: string | number | boolean | undefined): string {
  return value === undefined ? '' : `<${name}>${escapeXml(String(value))}</${name}>`;
}

/** `<name type="T">id</name>` for a managed object reference; empty string when undefined. */
export function refEl(name: string, ref: MoRef | undefined): string {
  return ref === undefined ? '' : `<${name} type="${escapeXml(ref.type)}">${escapeXml(ref.value)}</${name}>`;
}

/** `<name>...children</name>`, optionally with an `xsi:type` for polymorphic parameters. */
export function el(name: string, children: readonly string[], xsiType?: string): string {
  const attr = xsiType ? ` xsi:type="${escapeXml(xsiType)}"` : '';
  return `<${name}${attr}>${children.join('')}</${name}>`;
}

/** A whole request envelope for `method` on `self` with already-built parameter elements. */
export function envelope(method: string, self: MoRef, params: readonly string[]): string {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"' +
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
    `<soapenv:Body><${method} xmlns="urn:vim25">${refEl('_this', self)}${params.join('')}</${method}>` +
    '</soapenv:Body></soapenv:Envelope>'
  );
}
