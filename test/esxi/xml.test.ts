/** Namespace-aware reply parsing and envelope escaping. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readFault } from '../../src/esxi/client.js';
import { InvalidStateError } from '../../src/esxi/errors.js';
import { envelope, textEl } from '../../src/esxi/soap.js';
import { child, parseXml, xsiType, SOAPENV_NS } from '../../src/esxi/xml.js';

describe('namespace resolution', () => {
  it('reads xsi:type whatever prefix the server bound the XSI namespace to', () => {
    const vcsim = parseXml('<val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="xsd:string">a</val>');
    const esxi = parseXml('<r xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><val xsi:type="xsd:string">a</val></r>');
    expect(xsiType(vcsim)).toBe('string');
    expect(xsiType(child(esxi, 'val')!)).toBe('string');
  });

  it('does not take a look-alike prefix bound to another namespace for xsi', () => {
    const fake = parseXml('<val xmlns:xsi="urn:not-xsi" xsi:type="Evil">a</val>');
    expect(xsiType(fake)).toBeUndefined();
  });

  it('resolves element namespaces from defaults and prefixes', () => {
    const doc = parseXml('<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><R xmlns="urn:vim25"><x>1</x></R></e:Body></e:Envelope>');
    expect(doc.ns).toBe(SOAPENV_NS);
    const r = child(child(doc, 'Body'), 'R')!;
    expect(r.ns).toBe('urn:vim25');
    expect(child(r, 'x')!.ns).toBe('urn:vim25');
  });

  it('decodes numeric character references (Go writes &#34;)', () => {
    expect(parseXml('<m>say &#34;hi&#34; &amp;lt;</m>').text).toBe('say "hi" &lt;');
  });

  it('maps a fault detail by its resolved xsi:type', () => {
    const doc = parseXml('<soapenv:Fault xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><faultcode>ServerFaultCode</faultcode><faultstring>The attempted operation cannot be performed in the current state (Powered off).</faultstring><detail><InvalidPowerStateFault xmlns="urn:vim25" i:type="InvalidPowerState"/></detail></soapenv:Fault>');
    const e = readFault(doc, 'PowerOffVM_Task');
    expect(e).toBeInstanceOf(InvalidStateError);
    expect(e.faultType).toBe('InvalidPowerState');
    expect(e.message).toContain('current state (Powered off)');
  });
});

describe('envelopes', () => {
  it('escape any text so it parses back unchanged', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        // XML 1.0 cannot carry most control characters; the vim25 strings we send never hold them.
        const clean = s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '').replace(/\r/g, '');
        const doc = parseXml(envelope('Login', { type: 'SessionManager', value: 'sm' }, [textEl('password', clean)]));
        const login = child(child(doc, 'Body'), 'Login');
        expect(child(login, 'password')!.text).toBe(clean);
        expect(child(login, '_this')!.attrs.type).toBe('SessionManager');
      }),
    );
  });
});
