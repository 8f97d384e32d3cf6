/**
 * The public API never throws: every fallible function exported from src/index.ts, given a
 * malformed argument (wrong type, null, undefined, NaN, Infinity, negative or huge numbers, an
 * array for an object, an empty string, a NUL byte, a `__proto__` key from JSON.parse), returns
 * an `err` with a stable code; INVALID_INPUT names the field in `issues[].path`. Nothing throws,
 * synchronously or later (ResultAsyncs are awaited; a rejection or an unhandled error fails the
 * run), and nothing hangs. Rows that would start real work (migrate with a valid destination)
 * only get inputs that fail validation before any side effect.
 */
import { Readable, Writable } from 'node:stream';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as api from '../../src/index.js';
import { ApMigrateError } from '../../src/index.js';

/** Anything: the point is calling with what the types forbid. */
type Any = never;
const any = (value: unknown): Any => value as Any;

/** A JSON document with a `__proto__` key, as an attacker would send it. */
const protoJson = (body = '') => JSON.parse(`{"__proto__": {"polluted": true, "executable": "/bin/sh", "uid": 0}${body}}`) as unknown;

const validProfile = {
  executable: '/bin/true',
  argv: ['true'],
  cwd: '/',
  uid: 1000,
  gid: 1000,
  platform: { os: 'linux', release: '6.1.0', arch: 'x86_64' },
};

let work = '';
/** A directory nothing may be created in (checked after every row). */
let untouched = '';
const sink = () =>
  new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });

interface Row {
  /** The public function called. */
  fn: string;
  /** The malformed input, in words. */
  input: string;
  call: () => unknown;
  /** The stable code expected (one of them, when several are right). */
  code: string | readonly string[];
  /** For INVALID_INPUT: the field `issues[].path` must name ('' for the whole value). */
  path?: string;
}

const profiler = {
  procfs: () => api.createProcfsProfiler(),
  strace: () => api.createStraceProfiler(),
  ebpf: () => api.createEbpfProfiler(),
  freebsd: () => api.createFreeBsdProfiler({ executor: api.createLocalExecutor() }),
};

const rows: Row[] = [
  // planMigration: the profile.
  { fn: 'planMigration', input: 'undefined', call: () => api.planMigration(undefined), code: 'INVALID_INPUT', path: '' },
  { fn: 'planMigration', input: 'null', call: () => api.planMigration(null), code: 'INVALID_INPUT', path: '' },
  { fn: 'planMigration', input: 'NaN', call: () => api.planMigration(Number.NaN), code: 'INVALID_INPUT', path: '' },
  { fn: 'planMigration', input: 'an array', call: () => api.planMigration([validProfile]), code: 'INVALID_INPUT', path: '' },
  { fn: 'planMigration', input: 'an empty string', call: () => api.planMigration(''), code: 'INVALID_INPUT', path: '' },
  { fn: 'planMigration', input: '__proto__ JSON', call: () => api.planMigration(protoJson()), code: 'INVALID_INPUT', path: 'executable' },
  { fn: 'planMigration', input: '__proto__ JSON text', call: () => api.planMigration('{"__proto__": {"executable": "/bin/sh"}}'), code: 'INVALID_INPUT', path: 'executable' },
  { fn: 'planMigration', input: 'uid -1', call: () => api.planMigration({ ...validProfile, uid: -1 }), code: 'INVALID_INPUT', path: 'uid' },
  { fn: 'planMigration', input: 'uid NaN', call: () => api.planMigration({ ...validProfile, uid: Number.NaN }), code: 'INVALID_INPUT', path: 'uid' },
  { fn: 'planMigration', input: 'uid Infinity', call: () => api.planMigration({ ...validProfile, uid: Number.POSITIVE_INFINITY }), code: 'INVALID_INPUT', path: 'uid' },
  { fn: 'planMigration', input: 'uid 2^60', call: () => api.planMigration({ ...validProfile, uid: 2 ** 60 }), code: 'INVALID_INPUT', path: 'uid' },
  { fn: 'planMigration', input: 'argv a string', call: () => api.planMigration({ ...validProfile, argv: 'true' }), code: 'INVALID_INPUT', path: 'argv' },
  { fn: 'planMigration', input: 'executable with NUL', call: () => api.planMigration({ ...validProfile, executable: '/bin/tr\0ue' }), code: 'INVALID_INPUT', path: 'executable' },
  // planMigration: the options.
  { fn: 'planMigration options', input: 'null', call: () => api.planMigration(validProfile, any(null)), code: 'INVALID_INPUT', path: '' },
  { fn: 'planMigration options', input: 'a string', call: () => api.planMigration(validProfile, any('chroot')), code: 'INVALID_INPUT', path: '' },
  { fn: 'planMigration options', input: 'an array', call: () => api.planMigration(validProfile, any([])), code: 'INVALID_INPUT', path: '' },
  { fn: 'planMigration options', input: "methods: 'x'", call: () => api.planMigration(validProfile, any({ methods: 'x' })), code: 'INVALID_INPUT', path: 'methods' },
  { fn: 'planMigration options', input: 'methods: {}', call: () => api.planMigration(validProfile, any({ methods: {} })), code: 'INVALID_INPUT', path: 'methods' },
  { fn: 'planMigration options', input: 'methods: [null]', call: () => api.planMigration(validProfile, any({ methods: [null] })), code: 'INVALID_INPUT', path: 'methods.0' },
  { fn: 'planMigration options', input: "allowedMethods: 'chroot'", call: () => api.planMigration(validProfile, any({ allowedMethods: 'chroot' })), code: 'INVALID_INPUT', path: 'allowedMethods' },
  { fn: 'planMigration options', input: 'sizes -1', call: () => api.planMigration(validProfile, { sizes: { 'vm-image': -1 } }), code: 'INVALID_INPUT', path: 'sizes.vm-image' },
  { fn: 'planMigration options', input: 'sizes Infinity', call: () => api.planMigration(validProfile, { sizes: { 'vm-image': Number.POSITIVE_INFINITY } }), code: 'INVALID_INPUT', path: 'sizes.vm-image' },
  { fn: 'planMigration options', input: 'sizes NaN', call: () => api.planMigration(validProfile, { sizes: { 'vm-image': Number.NaN } }), code: 'INVALID_INPUT', path: 'sizes.vm-image' },
  { fn: 'planMigration options', input: 'destination.platform null', call: () => api.planMigration(validProfile, any({ destination: { platform: null } })), code: 'INVALID_INPUT', path: 'destination.platform' },
  { fn: 'planMigration options', input: 'an unknown method', call: () => api.planMigration(validProfile, { forbiddenMethods: ['teleport'] }), code: 'UNKNOWN_METHOD' },
  // defineIsolationMethod.
  { fn: 'defineIsolationMethod', input: 'null', call: () => api.defineIsolationMethod(null), code: 'INVALID_INPUT', path: '' },
  { fn: 'defineIsolationMethod', input: 'an array', call: () => api.defineIsolationMethod([]), code: 'INVALID_INPUT', path: '' },
  { fn: 'defineIsolationMethod', input: '__proto__ JSON', call: () => api.defineIsolationMethod(protoJson()), code: 'INVALID_INPUT', path: 'id' },
  // unpackBundle.
  { fn: 'unpackBundle', input: 'input null', call: () => api.unpackBundle(any(null), join(work, 'u1')), code: 'INVALID_INPUT', path: 'input' },
  { fn: 'unpackBundle', input: 'input undefined', call: () => api.unpackBundle(any(undefined), join(work, 'u2')), code: 'INVALID_INPUT', path: 'input' },
  { fn: 'unpackBundle', input: 'input a string', call: () => api.unpackBundle(any('bundle.tar'), join(work, 'u3')), code: 'INVALID_INPUT', path: 'input' },
  { fn: 'unpackBundle', input: 'input a number', call: () => api.unpackBundle(any(3), join(work, 'u4')), code: 'INVALID_INPUT', path: 'input' },
  { fn: 'unpackBundle', input: 'input {}', call: () => api.unpackBundle(any({}), join(work, 'u5')), code: 'INVALID_INPUT', path: 'input' },
  { fn: 'unpackBundle', input: 'stagingDir null', call: () => api.unpackBundle(Readable.from([]), any(null)), code: 'INVALID_INPUT', path: 'stagingDir' },
  { fn: 'unpackBundle', input: 'stagingDir empty', call: () => api.unpackBundle(Readable.from([]), ''), code: 'INVALID_INPUT', path: 'stagingDir' },
  { fn: 'unpackBundle', input: 'stagingDir with NUL', call: () => api.unpackBundle(Readable.from([]), `${work}/a\0b`), code: 'INVALID_INPUT', path: 'stagingDir' },
  { fn: 'unpackBundle', input: 'options null', call: () => api.unpackBundle(Readable.from([]), join(work, 'u6'), any(null)), code: 'INVALID_INPUT', path: '' },
  { fn: 'unpackBundle', input: 'maxMetadataBytes Infinity', call: () => api.unpackBundle(Readable.from([]), join(work, 'u7'), { maxMetadataBytes: Number.POSITIVE_INFINITY }), code: 'INVALID_INPUT', path: 'maxMetadataBytes' },
  { fn: 'unpackBundle', input: 'an empty stream', call: () => api.unpackBundle(Readable.from([]), join(work, 'u8')), code: 'BUNDLE_TRUNCATED' },
  // packBundle and createBundleStream.
  { fn: 'packBundle', input: 'profile null', call: () => api.packBundle(any(null), sink()), code: 'INVALID_INPUT', path: '' },
  { fn: 'packBundle', input: 'profile an array', call: () => api.packBundle(any([]), sink()), code: 'INVALID_INPUT', path: '' },
  { fn: 'packBundle', input: 'profile __proto__ JSON', call: () => api.packBundle(any(protoJson()), sink()), code: 'INVALID_INPUT', path: 'executable' },
  { fn: 'packBundle', input: 'output null', call: () => api.packBundle(any(validProfile), any(null)), code: 'INVALID_INPUT', path: 'output' },
  { fn: 'packBundle', input: 'output a string', call: () => api.packBundle(any(validProfile), any('/tmp/bundle.tar')), code: 'INVALID_INPUT', path: 'output' },
  { fn: 'packBundle', input: 'output an array', call: () => api.packBundle(any(validProfile), any([])), code: 'INVALID_INPUT', path: 'output' },
  { fn: 'createBundleStream', input: 'profile undefined', call: () => api.createBundleStream(any(undefined)), code: 'INVALID_INPUT', path: '' },
  { fn: 'createBundleStream', input: 'profile a number', call: () => api.createBundleStream(any(42)), code: 'INVALID_INPUT', path: '' },
  { fn: 'createBundleStream', input: 'options null', call: () => api.createBundleStream(any(validProfile), any(null)), code: 'INVALID_INPUT', path: '' },
  { fn: 'createBundleStream', input: "signal 'x'", call: () => api.createBundleStream(any(validProfile), any({ signal: 'x' })), code: 'INVALID_INPUT', path: 'signal' },
  { fn: 'createBundleStream', input: "extraTrees '/usr'", call: () => api.createBundleStream(any(validProfile), any({ extraTrees: '/usr' })), code: 'INVALID_INPUT', path: 'extraTrees' },
  { fn: 'measureTrees', input: 'undefined', call: () => api.measureTrees(any(undefined)), code: 'INVALID_INPUT', path: '' },
  { fn: 'measureTrees', input: 'a string', call: () => api.measureTrees(any('/usr')), code: 'INVALID_INPUT', path: '' },
  { fn: 'measureTrees', input: '[42]', call: () => api.measureTrees(any([42])), code: 'INVALID_INPUT', path: '0' },
  { fn: 'measureTrees', input: 'options null', call: () => api.measureTrees(['/nonexistent'], any(null)), code: 'INVALID_INPUT', path: '' },
  // The profilers' profile().
  ...(['procfs', 'strace', 'ebpf', 'freebsd'] as const).flatMap((name): Row[] => [
    { fn: `${name}.profile`, input: 'undefined', call: () => profiler[name]().profile(any(undefined)), code: 'INVALID_INPUT', path: '' },
    { fn: `${name}.profile`, input: 'null', call: () => profiler[name]().profile(any(null)), code: 'INVALID_INPUT', path: '' },
    { fn: `${name}.profile`, input: "command: 'ls'", call: () => profiler[name]().profile(any({ command: 'ls' })), code: 'INVALID_INPUT', path: 'command' },
    { fn: `${name}.profile`, input: 'pid NaN', call: () => profiler[name]().profile({ pid: Number.NaN }), code: 'INVALID_INPUT', path: 'pid' },
  ]),
  { fn: 'procfs.profile', input: 'an array', call: () => profiler.procfs().profile(any([1])), code: 'INVALID_INPUT', path: '' },
  { fn: 'procfs.profile', input: '__proto__ JSON', call: () => profiler.procfs().profile(any(protoJson())), code: 'INVALID_INPUT', path: '' },
  { fn: 'procfs.profile', input: 'pid -1', call: () => profiler.procfs().profile({ pid: -1 }), code: 'INVALID_INPUT', path: 'pid' },
  { fn: 'procfs.profile', input: 'pid Infinity', call: () => profiler.procfs().profile({ pid: Number.POSITIVE_INFINITY }), code: 'INVALID_INPUT', path: 'pid' },
  { fn: 'procfs.profile', input: 'pid 2^53', call: () => profiler.procfs().profile({ pid: 2 ** 53 }), code: 'INVALID_INPUT', path: 'pid' },
  { fn: 'procfs.profile', input: 'an argument with NUL', call: () => profiler.procfs().profile({ command: ['true', 'a\0b'] }), code: 'INVALID_INPUT', path: 'command.1' },
  { fn: 'procfs.profile', input: 'an empty program name', call: () => profiler.procfs().profile({ command: [''] }), code: 'INVALID_INPUT', path: 'command' },
  { fn: 'strace.profile', input: 'relative cwd', call: () => profiler.strace().profile({ command: ['true'], cwd: 'tmp' }), code: 'INVALID_INPUT', path: 'cwd' },
  { fn: 'strace.profile', input: 'env value a number', call: () => profiler.strace().profile(any({ command: ['true'], env: { HOME: 1 } })), code: 'INVALID_INPUT', path: 'env.HOME' },
  { fn: 'ebpf.profile', input: 'durationMs -1', call: () => profiler.ebpf().profile({ pid: 1 }, { durationMs: -1 }), code: 'INVALID_INPUT', path: 'durationMs' },
  { fn: 'ebpf.profile', input: 'options null', call: () => profiler.ebpf().profile({ pid: 1 }, any(null)), code: 'INVALID_INPUT', path: '' },
  { fn: 'strace.profile', input: 'signal {}', call: () => profiler.strace().profile({ pid: 1 }, any({ signal: {} })), code: 'INVALID_INPUT', path: 'signal' },
  { fn: 'createFreeBsdProfiler', input: 'undefined, then profile()', call: () => api.createFreeBsdProfiler(any(undefined)).profile({ pid: 1 }), code: 'INVALID_INPUT', path: 'executor' },
  { fn: 'createProcfsProfiler', input: 'intervalMs NaN, then profile()', call: () => api.createProcfsProfiler({ intervalMs: Number.NaN }).profile({ pid: 1 }), code: 'INVALID_INPUT', path: 'intervalMs' },
  { fn: 'createStraceProfiler', input: 'null, then profile()', call: () => api.createStraceProfiler(any(null)).profile({ pid: 1 }), code: 'INVALID_INPUT', path: '' },
  // migrate: validation happens before anything runs.
  { fn: 'migrate', input: 'undefined', call: () => api.migrate(any(undefined)), code: 'INVALID_INPUT', path: '' },
  { fn: 'migrate', input: 'null', call: () => api.migrate(any(null)), code: 'INVALID_INPUT', path: '' },
  { fn: 'migrate', input: 'an array', call: () => api.migrate(any([])), code: 'INVALID_INPUT', path: '' },
  { fn: 'migrate', input: '{}', call: () => api.migrate(any({})), code: 'INVALID_INPUT', path: 'target' },
  { fn: 'migrate', input: '__proto__ JSON', call: () => api.migrate(any(protoJson())), code: 'INVALID_INPUT', path: 'target' },
  { fn: 'migrate', input: 'target null', call: () => api.migrate(any({ target: null })), code: 'INVALID_INPUT', path: 'target' },
  { fn: 'migrate', input: 'a pid and no profiler', call: () => api.migrate({ target: { pid: 1 } }), code: 'INVALID_INPUT', path: 'profiler' },
  { fn: 'migrate', input: 'pid -1', call: () => api.migrate({ target: { pid: -1 }, profiler: profiler.procfs() }), code: 'INVALID_INPUT', path: 'target.pid' },
  { fn: 'migrate', input: "command: 'ls'", call: () => api.migrate(any({ target: { command: 'ls' }, profiler: profiler.procfs() })), code: 'INVALID_INPUT', path: 'target.command' },
  { fn: 'migrate', input: 'profile __proto__ JSON', call: () => api.migrate({ target: { profile: any(protoJson()) } }), code: 'INVALID_INPUT', path: 'executable' },
  { fn: 'migrate', input: 'profileDurationMs NaN', call: () => api.migrate({ target: { profile: validProfile }, profileDurationMs: Number.NaN }), code: 'INVALID_INPUT', path: 'profileDurationMs' },
  { fn: 'migrate', input: "sourcePolicy 'kill'", call: () => api.migrate({ target: { profile: validProfile }, sourcePolicy: any('kill') }), code: 'INVALID_INPUT', path: 'sourcePolicy' },
  { fn: 'migrate', input: 'name with NUL', call: () => api.migrate({ target: { profile: validProfile }, name: 'a\0b', destination: api.createLocalTransport({ root: untouched }) }), code: 'INVALID_INPUT', path: 'name' },
  { fn: 'migrate', input: "destination 'x'", call: () => api.migrate({ target: { profile: validProfile }, destination: any('/tmp/x') }), code: 'INVALID_INPUT', path: 'destination' },
  { fn: 'migrate', input: 'signal {}', call: () => api.migrate({ target: { profile: validProfile }, signal: any({ aborted: false }) }), code: 'INVALID_INPUT', path: 'signal' },
  // Transports (src/transports is fixed apart from this table).
  { fn: 'parseDestination', input: 'undefined', call: () => api.parseDestination(undefined), code: 'INVALID_INPUT', path: '' },
  { fn: 'parseDestination', input: 'null', call: () => api.parseDestination(null), code: 'INVALID_INPUT', path: '' },
  { fn: 'parseDestination', input: 'a number', call: () => api.parseDestination(22), code: 'INVALID_INPUT', path: '' },
  { fn: 'parseDestination', input: 'an empty string', call: () => api.parseDestination(''), code: 'INVALID_INPUT', path: '' },
  { fn: 'parseDestination', input: '__proto__ JSON', call: () => api.parseDestination(protoJson()), code: 'INVALID_INPUT', path: '' },
  { fn: 'parseDestination', input: 'port 99999', call: () => api.parseDestination('ssh://user@host:99999/srv'), code: 'INVALID_INPUT', path: 'port' },
  { fn: 'parseDestination', input: 'port 0', call: () => api.parseDestination('ssh://user@host:0/srv'), code: 'INVALID_INPUT', path: 'port' },
  { fn: 'parseDestination', input: 'port -1', call: () => api.parseDestination('ssh://user@host:-1/srv'), code: 'INVALID_INPUT', path: 'port' },
  { fn: 'parseDestination', input: 'path with NUL', call: () => api.parseDestination('/srv/a\0b'), code: 'INVALID_INPUT', path: 'root' },
  { fn: 'createTransport', input: 'undefined', call: () => api.createTransport(any(undefined)), code: 'INVALID_INPUT' },
  { fn: 'createTransport', input: '{}', call: () => api.createTransport(any({})), code: 'INVALID_INPUT', path: 'kind' },
  { fn: 'createTransport', input: 'port 70000', call: () => api.createTransport('ssh://user@127.0.0.1:70000/srv'), code: 'INVALID_INPUT', path: 'port' },
  { fn: 'createTransport', input: 'port NaN', call: () => api.createTransport(any({ kind: 'ssh', username: 'u', host: '127.0.0.1', port: Number.NaN, root: '/' })), code: 'INVALID_INPUT', path: 'port' },
  { fn: 'createTransport', input: 'options null', call: () => api.createTransport('ssh://user@127.0.0.1:9/srv', any(null)), code: 'INVALID_INPUT', path: '' },
  { fn: 'createTransport', input: "implementation 'telnet'", call: () => api.createTransport('ssh://user@127.0.0.1:9/srv', any({ implementation: 'telnet' })), code: 'INVALID_INPUT', path: 'implementation' },
  { fn: 'createSshTransport', input: 'undefined', call: () => api.createSshTransport(any(undefined)), code: 'INVALID_INPUT', path: '' },
  { fn: 'createSshTransport', input: 'port 70000', call: () => api.createSshTransport({ host: '127.0.0.1', username: 'u', port: 70000 }), code: 'INVALID_INPUT', path: 'port' },
  { fn: 'createSshTransport', input: 'port Infinity', call: () => api.createSshTransport({ host: '127.0.0.1', username: 'u', port: Number.POSITIVE_INFINITY }), code: 'INVALID_INPUT', path: 'port' },
  { fn: 'createOpenSshTransport', input: "port '22'", call: () => api.createOpenSshTransport(any({ host: '127.0.0.1', username: 'u', port: '22' })), code: 'INVALID_INPUT', path: 'port' },
  { fn: 'createOpenSshTransport', input: 'host empty', call: () => api.createOpenSshTransport({ host: '', username: 'u' }), code: 'INVALID_INPUT', path: 'host' },
  // Executors.
  { fn: 'createLocalExecutor().exec', input: 'argv a string', call: () => api.createLocalExecutor().exec(any('ls -l')), code: 'INVALID_INPUT', path: 'argv' },
  { fn: 'createLocalExecutor().exec', input: 'argv null', call: () => api.createLocalExecutor().exec(any(null)), code: 'INVALID_INPUT', path: 'argv' },
  // Jails and FreeBSD facts.
  { fn: 'renderJailConf', input: 'null', call: () => api.renderJailConf(any(null)), code: 'INVALID_INPUT', path: '' },
  { fn: 'renderJailConf', input: '{}', call: () => api.renderJailConf(any({})), code: 'INVALID_INPUT', path: 'name' },
  { fn: 'execStartCommand', input: 'argv null', call: () => api.execStartCommand(any(null), '/'), code: 'INVALID_INPUT', path: 'argv' },
  { fn: 'parseUnameRelease', input: 'undefined', call: () => api.parseUnameRelease(any(undefined)), code: ['PARSE_FAILED', 'INVALID_INPUT'] },
  { fn: 'parseSysctlInteger', input: 'result null', call: () => api.parseSysctlInteger('kern.osreldate', any(null)), code: ['PARSE_FAILED', 'INVALID_INPUT'] },
  { fn: 'measureFreeBsdBase', input: 'executor null', call: () => api.measureFreeBsdBase(any(null)), code: 'INVALID_INPUT', path: 'executor' },
  { fn: 'detectFreeBsdHostFacts', input: 'executor {}', call: () => api.detectFreeBsdHostFacts(any({})), code: 'INVALID_INPUT', path: 'executor' },
  // ESXi entry points that take plain objects (nothing is contacted: the input is refused first).
  { fn: 'measureHostingVm', input: 'undefined', call: () => api.measureHostingVm(any(undefined)), code: 'INVALID_INPUT', path: '' },
  { fn: 'measureHostingVm', input: '{}', call: () => api.measureHostingVm(any({})), code: 'INVALID_INPUT', path: 'source' },
  { fn: 'importOvf', input: 'input null', call: () => api.importOvf(any({}), any(null)), code: 'INVALID_INPUT', path: '' },
  { fn: 'importOvf', input: 'input __proto__ JSON', call: () => api.importOvf(any({}), any(protoJson())), code: 'INVALID_INPUT', path: 'descriptor' },
];

/** Call `row`, awaiting a promise-like result (bounded): what it threw, rejected with, or returned. */
async function settle(row: Row): Promise<{ threw: unknown } | { rejected: unknown } | { hung: true } | { value: unknown }> {
  let value: unknown;
  try {
    value = row.call();
  } catch (e) {
    return { threw: e };
  }
  if (typeof (value as PromiseLike<unknown> | null)?.then !== 'function') return { value };
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve(value as PromiseLike<unknown>).then((v) => ({ value: v })),
      new Promise<{ hung: true }>((resolve) => {
        timer = setTimeout(() => resolve({ hung: true }), 10_000);
      }),
    ]);
  } catch (e) {
    return { rejected: e };
  } finally {
    clearTimeout(timer);
  }
}

function describeThrown(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ap-malformed-'));
  untouched = join(work, 'untouched');
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('every public function refuses malformed input with a typed error and never throws', () => {
  it('has about 80 rows, over every group of entry points', () => {
    expect(rows.length).toBeGreaterThanOrEqual(80);
    expect(new Set(rows.map((r) => `${r.fn}|${r.input}`)).size).toBe(rows.length);
  });

  it.each(rows.map((row) => [`${row.fn}(${row.input})`, row] as const))('%s', async (_name, row) => {
    const outcome = await settle(row);
    if ('threw' in outcome) expect.fail(`threw ${describeThrown(outcome.threw)}`);
    if ('rejected' in outcome) expect.fail(`its promise rejected: ${describeThrown(outcome.rejected)}`);
    if ('hung' in outcome) expect.fail('did not settle within 10 s');
    const result = outcome.value as { isErr?: () => boolean; isOk?: () => boolean; error?: unknown; value?: unknown };
    expect(typeof result?.isErr, 'returns a neverthrow Result').toBe('function');
    expect(result.isErr!(), result.isOk!() ? `returned ok: ${JSON.stringify(result.value)?.slice(0, 200)}` : '').toBe(true);
    const error = result.error;
    expect(error, 'the error is an ApMigrateError').toBeInstanceOf(ApMigrateError);
    const { code, message } = error as ApMigrateError;
    const codes = typeof row.code === 'string' ? [row.code] : row.code;
    expect(codes, message).toContain(code);
    if (row.path !== undefined) {
      const issues = (error as { issues?: ReadonlyArray<{ path: string }> }).issues;
      expect(Array.isArray(issues), `INVALID_INPUT with issues[] (an InvalidInputError): ${message}`).toBe(true);
      expect(issues!.map((i) => i.path), message).toContain(row.path);
    }
    // Validation failed before any side effect: nothing was created.
    expect(await readdir(work)).toEqual([]);
  });

  // formatPlan renders text rather than returning a Result: for a value that is not a plan it
  // never throws and returns one line saying the plan is invalid.
  it('formatPlan does not throw on a value that is not a plan, and says it is invalid', () => {
    const broken = { classes: [], evidence: [], candidates: [null], concerns: [], source: {}, destination: {}, chosen: 'x' };
    for (const value of [undefined, null, {}, 'plan', [], Number.NaN, broken]) {
      let text: unknown;
      expect(() => (text = api.formatPlan(any(value))), String(value)).not.toThrow();
      expect(text, String(value)).toMatch(/^invalid migration plan: /);
    }
  });

  it('no __proto__ key above reached Object.prototype', () => {
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });
});
