/**
 * A small local HTTP server that speaks the part of vim25 the ExportVm path needs, following
 * the documented HttpNfcLease protocol (state initializing -> ready, info.deviceUrl with a `*`
 * host, HttpNfcLeaseProgress / Complete / Abort), plus a task that never finishes. vcsim lacks
 * ExportVm, so this stand-in is what those tests run against; it is not a mock of our client,
 * it is a server our client must interoperate with over real HTTP.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { child, childText, escapeXml, parseXml } from '../../src/esxi/xml.js';

/** Behaviour knobs of the stand-in. */
export interface StandinOptions {
  /** Bytes of the one exported disk. */
  diskBytes: number;
  /** Polls answered `initializing` before the lease turns `ready`. */
  initializingPolls?: number;
  /** Make the lease go to `error` instead of `ready`. */
  leaseError?: boolean;
  /** Delay between 64 KiB chunks of the disk download (lets progress reports happen). */
  chunkDelayMs?: number;
  /** Serve one VM (`vm-1`) by name for look-ups and its configuration for descriptor generation. */
  vm?: StandinVm;
  /**
   * `OvfManager.CreateDescriptor`: absent (default, `MethodNotFound` like vcsim), `NotImplemented`
   * fault, or answer with this descriptor text.
   */
  createDescriptor?: 'missing' | 'notImplemented' | { descriptor: string };
  /** Cut the disk download (destroy the socket) after this many bytes. */
  failDownloadAfterBytes?: number;
  /** The lease's `targetId` for the disk (default `disk-0.vmdk`); a hostile source may name anything. */
  targetId?: string;
  /**
   * Power tasks of the VM finish at once and change its power state (default: `PowerOffVM_Task`
   * returns a task that never finishes, for the task-waiting tests).
   */
  powerTasks?: boolean;
}

/** The VM the stand-in serves when {@link StandinOptions.vm} is set. */
export interface StandinVm {
  name: string;
  powerState?: 'poweredOff' | 'poweredOn';
  guestId?: string;
  numCPU?: number;
  memoryMB?: number;
  /** Capacity of its one disk (on an LSI Logic controller); default the exported disk's size. */
  diskCapacityBytes?: number;
}

/** A running stand-in and what it observed. */
export interface Standin {
  url: string;
  port: number;
  progress: number[];
  completed: boolean;
  aborted: boolean;
  downloadsWithoutCookie: number;
  /** Disk downloads started (with or without a cookie). */
  downloads: number;
  /** `ovfFiles` paths sent with CreateDescriptor calls. */
  createDescriptorFiles: string[][];
  /** Power-state changes made through `powerTasks`, in order (e.g. `['poweredOff', 'poweredOn']`). */
  powerChanges: string[];
  close(): Promise<void>;
}

const ENV_OPEN =
  '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>';
const ENV_CLOSE = '</soapenv:Body></soapenv:Envelope>';

/** Byte `i` of the stand-in's disk (so tests can check content without storing it). */
export function diskByte(i: number): number {
  return (i * 131 + 17) & 0xff;
}

async function readAll(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

/** Start the stand-in on a free loopback port. */
export async function startStandin(options: StandinOptions): Promise<Standin> {
  let polls = 0;
  const state: Standin = { url: '', port: 0, progress: [], completed: false, aborted: false, downloadsWithoutCookie: 0, downloads: 0, createDescriptorFiles: [], powerChanges: [], close: async () => undefined };
  let powerState = options.vm?.powerState ?? 'poweredOff';
  // With powerTasks: the (finished) task for each power call, and whether it succeeded.
  const finishedTasks = new Map<string, string | undefined>();
  const powerTask = (target: 'poweredOn' | 'poweredOff'): string => {
    const key = `task-${finishedTasks.size + 1}`;
    if (powerState === target) {
      finishedTasks.set(key, `The attempted operation cannot be performed in the current state (${powerState}).`);
    } else {
      finishedTasks.set(key, undefined);
      powerState = target;
      state.powerChanges.push(target);
    }
    return `<returnval type="Task">${key}</returnval>`;
  };
  const reply = (res: ServerResponse, body: string, status = 200, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'text/xml; charset=utf-8', ...headers });
    res.end(ENV_OPEN + body + ENV_CLOSE);
  };
  const fault = (res: ServerResponse, type: string, message: string) =>
    reply(res, `<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>${message}</faultstring><detail><${type}Fault xmlns="urn:vim25" xsi:type="${type}"></${type}Fault></detail></soapenv:Fault>`, 500);

  const soap = async (req: IncomingMessage, res: ServerResponse) => {
    const body = child(parseXml(await readAll(req)), 'Body');
    const call = body?.children[0];
    const method = call?.name ?? '';
    const authed = (req.headers.cookie ?? '').includes('vmware_soap_session=standin');
    const ok = (inner: string) => reply(res, `<${method}Response xmlns="urn:vim25">${inner}</${method}Response>`);
    switch (method) {
      case 'RetrieveServiceContent':
        return ok('<returnval><rootFolder type="Folder">root</rootFolder><propertyCollector type="PropertyCollector">pc</propertyCollector><sessionManager type="SessionManager">sm</sessionManager><ovfManager type="OvfManager">ovf</ovfManager><about><fullName>stand-in</fullName><apiType>HostAgent</apiType><apiVersion>6.7</apiVersion></about></returnval>');
      case 'Login':
        if (childText(call, 'password') !== 'pw') return fault(res, 'InvalidLogin', 'Cannot complete login due to an incorrect user name or password.');
        res.setHeader('set-cookie', 'vmware_soap_session=standin; Path=/; HttpOnly');
        return ok('<returnval><key>s</key><userName>root</userName></returnval>');
      case 'Logout':
        return ok('');
    }
    if (!authed) return fault(res, 'NotAuthenticated', 'The session is not authenticated.');
    switch (method) {
      case 'ExportVm':
        return ok('<returnval type="HttpNfcLease">lease-1</returnval>');
      case 'HttpNfcLeaseProgress':
        state.progress.push(Number(childText(call, 'percent')));
        return ok('');
      case 'HttpNfcLeaseComplete':
        state.completed = true;
        return ok('');
      case 'HttpNfcLeaseAbort':
        state.aborted = true;
        return ok('');
      case 'CreateDescriptor': {
        const mode = options.createDescriptor ?? 'missing';
        if (mode === 'missing') return fault(res, 'MethodNotFound', 'CreateDescriptor not implemented by the stand-in');
        if (mode === 'notImplemented') return fault(res, 'NotImplemented', 'CreateDescriptor is not implemented on this host');
        state.createDescriptorFiles.push((child(call, 'cdp')?.children ?? []).filter((c) => c.name === 'ovfFiles').map((f) => childText(f, 'path') ?? ''));
        return ok(`<returnval><ovfDescriptor>${escapeXml(mode.descriptor)}</ovfDescriptor><includeImageFiles>false</includeImageFiles></returnval>`);
      }
      case 'PowerOffVM_Task':
        return ok(options.powerTasks ? powerTask('poweredOff') : '<returnval type="Task">task-slow</returnval>');
      case 'PowerOnVM_Task':
        if (!options.powerTasks) return fault(res, 'MethodNotFound', 'PowerOnVM_Task not implemented by the stand-in');
        return ok(powerTask('poweredOn'));
      case 'RetrievePropertiesEx': {
        const obj = child(child(child(call, 'specSet'), 'objectSet'), 'obj');
        const paths = (child(child(call, 'specSet'), 'propSet')?.children ?? []).filter((c) => c.name === 'pathSet').map((c) => c.text);
        const type = obj?.attrs.type;
        const propType = childText(child(child(call, 'specSet'), 'propSet'), 'type');
        const vm = options.vm;
        // Declare the XSI namespace under vcsim's odd prefix to exercise namespace resolution.
        const val = (t: string, inner: string) => `<val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="${t}">${inner}</val>`;
        const props: string[] = [];
        if (type === 'HttpNfcLease') {
          polls += 1;
          const leaseState = options.leaseError ? 'error' : polls > (options.initializingPolls ?? 2) ? 'ready' : 'initializing';
          if (paths.includes('state')) props.push(`<propSet><name>state</name>${val('HttpNfcLeaseState', leaseState)}</propSet>`);
          if (paths.includes('error') && options.leaseError) {
            props.push(`<propSet><name>error</name>${val('LocalizedMethodFault', '<fault XMLSchema-instance:type="FileNotFound"><file>disk-0.vmdk</file></fault><localizedMessage>File disk-0.vmdk was not found</localizedMessage>')}</propSet>`);
          }
          if (paths.includes('info')) {
            props.push(`<propSet><name>info</name>${val('HttpNfcLeaseInfo', `<lease type="HttpNfcLease">lease-1</lease><entity type="VirtualMachine">vm-1</entity><deviceUrl><key>/vm-1/VirtualLsiLogicController0:0</key><importKey></importKey><url>http://*:${state.port}/nfc/ticket-1/disk-0.vmdk</url><sslThumbprint></sslThumbprint><disk>true</disk><targetId>${escapeXml(options.targetId ?? 'disk-0.vmdk')}</targetId><fileSize>${options.diskBytes}</fileSize></deviceUrl><totalDiskCapacityInKB>${Math.ceil(options.diskBytes / 1024)}</totalDiskCapacityInKB><leaseTimeout>300</leaseTimeout>`)}</propSet>`);
          }
        } else if (type === 'Folder' && vm && propType === 'VirtualMachine') {
          // listVms: the one VM, whatever the traversal.
          const vmProps = [
            `<propSet><name>name</name>${val('xsd:string', escapeXml(vm.name))}</propSet>`,
            `<propSet><name>runtime.powerState</name>${val('VirtualMachinePowerState', powerState)}</propSet>`,
            `<propSet><name>config.files.vmPathName</name>${val('xsd:string', `[ds1] ${escapeXml(vm.name)}/${escapeXml(vm.name)}.vmx`)}</propSet>`,
          ];
          return ok(`<returnval><objects><obj type="VirtualMachine">vm-1</obj>${vmProps.join('')}</objects></returnval>`);
        } else if (type === 'VirtualMachine' && vm) {
          const capacity = vm.diskCapacityBytes ?? options.diskBytes;
          const values: Record<string, string> = {
            name: val('xsd:string', escapeXml(vm.name)),
            'config.guestId': val('xsd:string', escapeXml(vm.guestId ?? 'otherLinux64Guest')),
            'config.hardware.numCPU': val('xsd:int', String(vm.numCPU ?? 2)),
            'config.hardware.memoryMB': val('xsd:int', String(vm.memoryMB ?? 256)),
            'config.version': val('xsd:string', 'vmx-13'),
            'config.hardware.device': val('ArrayOfVirtualDevice',
              '<VirtualDevice XMLSchema-instance:type="VirtualLsiLogicController"><key>1000</key><busNumber>0</busNumber><sharedBus>noSharing</sharedBus></VirtualDevice>' +
              '<VirtualDevice XMLSchema-instance:type="VirtualCdrom"><key>3002</key><controllerKey>201</controllerKey><unitNumber>0</unitNumber></VirtualDevice>' +
              `<VirtualDevice XMLSchema-instance:type="VirtualDisk"><key>2000</key><deviceInfo><label>Hard disk 1</label><summary>disk</summary></deviceInfo><controllerKey>1000</controllerKey><unitNumber>0</unitNumber><capacityInKB>${Math.ceil(capacity / 1024)}</capacityInKB><capacityInBytes>${capacity}</capacityInBytes></VirtualDevice>`),
          };
          for (const p of paths) if (values[p]) props.push(`<propSet><name>${p}</name>${values[p]}</propSet>`);
        } else if (type === 'Task' && finishedTasks.has(obj?.text ?? '')) {
          const failure = finishedTasks.get(obj?.text ?? '');
          const info = failure === undefined
            ? `<key>${obj?.text}</key><state>success</state>`
            : `<key>${obj?.text}</key><state>error</state><error><fault XMLSchema-instance:type="InvalidPowerState"></fault><localizedMessage>${escapeXml(failure)}</localizedMessage></error>`;
          props.push(`<propSet><name>info</name>${val('TaskInfo', info)}</propSet>`);
        } else if (type === 'Task') {
          props.push(`<propSet><name>info</name>${val('TaskInfo', '<key>task-slow</key><state>running</state><progress>10</progress>')}</propSet>`);
        }
        return ok(`<returnval><objects><obj type="${type}">${obj?.text}</obj>${props.join('')}</objects></returnval>`);
      }
      default:
        return fault(res, 'MethodNotFound', `${method} not implemented by the stand-in`);
    }
  };

  const download = async (req: IncomingMessage, res: ServerResponse) => {
    state.downloads += 1;
    if (!(req.headers.cookie ?? '').includes('vmware_soap_session=standin')) {
      state.downloadsWithoutCookie += 1;
      res.writeHead(403).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': options.diskBytes });
    const chunk = 64 * 1024;
    for (let off = 0; off < options.diskBytes; off += chunk) {
      const n = Math.min(chunk, options.diskBytes - off);
      const buf = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) buf[i] = diskByte(off + i);
      if (!res.write(buf)) await new Promise((r) => res.once('drain', r));
      if (options.chunkDelayMs) await sleep(options.chunkDelayMs);
      if (options.failDownloadAfterBytes !== undefined && off + n >= options.failDownloadAfterBytes) {
        res.destroy();
        return;
      }
      if (res.destroyed) return;
    }
    res.end();
  };

  const server: Server = createServer((req, res) => {
    const run = req.method === 'POST' && req.url === '/sdk' ? soap(req, res) : req.method === 'GET' && req.url?.startsWith('/nfc/ticket-1/') ? download(req, res) : Promise.resolve(void res.writeHead(404).end());
    run.catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  state.port = typeof address === 'object' && address ? address.port : 0;
  state.url = `http://127.0.0.1:${state.port}/sdk`;
  state.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return state;
}
