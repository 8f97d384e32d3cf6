/**
 * The receiver: the small program the destination runs, as root, for the steps that touch what
 * came from the source. Built into one self-contained file (`dist/receiver.cjs`) that the
 * deployer uploads, so the destination needs only `node`, not the SDK.
 *
 *   node receiver.cjs unpack STAGING_DIR [--allow-devices] [--setuid=reject|strip|allow]
 *          [--seed-staged=DIR] [--seed-resume=DIR] [--seed-host-root=DIR ...] [--keep-partial=DIR]
 *          [--build-root=SPEC]
 *     unpack a bundle from stdin with every safety check and hash verification of `unpackBundle`,
 *     taking seeded entries from the seeds named here (never from anything the bundle names);
 *     with a build-root spec (JSON), then build the root in STAGING_DIR as `build-root` would;
 *   node receiver.cjs inventory   < {"staged"?:DIR,"resume"?:DIR,"host"?:{"roots":[...],"paths":[...]}}
 *     what the destination already holds for those seeds (see `bundle/seeds.ts`);
 *   node receiver.cjs build-root
 *     build the program's root from the JSON spec on stdin (see `root-builder.ts`), never
 *     following a link out of the root.
 *
 * The same file runs on a remote *source* to pack there (see `bundle/remote-pack.ts`):
 *
 *   node receiver.cjs pack            < {"profile":...,"options":...}   the bundle on stdout
 *   node receiver.cjs measure-trees   < {"trees":[...]}                 their bundle bytes
 *   node receiver.cjs profile-pid     < {"pid":N,"durationMs":D,"captureEnv":B}  a procfs profile
 *
 * Prints one JSON line: `{"ok":true,"report":{...}}` or `{"ok":false,"error":{code,message}}`, on
 * stdout, except for `pack`, whose stdout is the bundle: its reply goes to stderr.
 */
import { pipeline } from 'node:stream/promises';
import { createBundleStream, type PackOptions } from '../bundle/pack.js';
import { measureTrees } from '../bundle/measure.js';
import { unpackBundle, type UnpackOptions } from '../bundle/unpack.js';
import { InventoryRequestSchema } from '../bundle/seeds.js';
import { takeInventory } from '../bundle/seed-store.js';
import { createProcfsProfiler } from '../profilers/procfs.js';
import { buildRoot, type RootBuildSpec } from './root-builder.js';

type Reply = { ok: true; report: unknown } | { ok: false; error: { code: string; message: string; isRetryable?: boolean } };

/** Values of `--name=VALUE` flags, in order. */
const flagValues = (flags: string[], name: string): string[] => flags.filter((f) => f.startsWith(`--${name}=`)).map((f) => f.slice(name.length + 3));

/** The seeds and partial-keeping of an unpack, from its flags (absolute paths only). */
function seedOptions(flags: string[]): Pick<UnpackOptions, 'seeds' | 'keepPartialAt'> {
  const abs = (values: string[]) => values.filter((v) => v.startsWith('/'));
  const [staged] = abs(flagValues(flags, 'seed-staged'));
  const [resume] = abs(flagValues(flags, 'seed-resume'));
  const hostRoots = abs(flagValues(flags, 'seed-host-root'));
  const [keepPartialAt] = abs(flagValues(flags, 'keep-partial'));
  const seeds = { ...(staged ? { staged } : {}), ...(resume ? { resume } : {}), ...(hostRoots.length ? { hostRoots } : {}) };
  return { ...(Object.keys(seeds).length ? { seeds } : {}), ...(keepPartialAt ? { keepPartialAt } : {}) };
}

async function unpack(staging: string, flags: string[]): Promise<Reply> {
  const setuidFlag = flags.find((f) => f.startsWith('--setuid='))?.slice('--setuid='.length);
  const result = await unpackBundle(process.stdin, staging, {
    allowDevices: flags.includes('--allow-devices'),
    ...(setuidFlag ? { setuid: setuidFlag as 'reject' | 'strip' | 'allow' } : {}),
    ...seedOptions(flags),
  });
  if (result.isErr()) {
    const { code, message, isRetryable } = result.error;
    return { ok: false, error: { code, message, isRetryable } };
  }
  const r = result.value;
  const report = { stagingDir: r.stagingDir, bytesRead: r.bytesRead, dataBytes: r.dataBytes, verified: r.verified, entries: r.manifest?.entries.length ?? 0, seeded: r.seeded };
  const [buildFlag] = flagValues(flags, 'build-root');
  if (buildFlag === undefined || !r.verified) return { ok: true, report };
  // Activation's first step, in this process (no second Node.js start): the root just verified, built.
  const built = buildRootFrom(buildFlag, staging);
  return built.ok ? { ok: true, report: { ...report, root: built.report } } : built;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function isSpec(value: unknown): value is RootBuildSpec {
  const v = value as Record<string, unknown> | null;
  const strings = (a: unknown) => Array.isArray(a) && a.every((x) => typeof x === 'string');
  return (
    typeof v === 'object' && v !== null &&
    typeof v.root === 'string' && typeof v.executable === 'string' && typeof v.cwd === 'string' &&
    typeof v.wrapperSource === 'string' && strings(v.dirs) && strings(v.libraries) &&
    (v.programs === undefined || strings(v.programs)) &&
    (v.passwd === undefined || strings(v.passwd)) && (v.group === undefined || strings(v.group))
  );
}

async function buildRootCommand(): Promise<Reply> {
  return buildRootFrom(await readStdin());
}

/** Build a root from a spec in JSON; `root`, when given, is where (the unpack's target), whatever the spec says. */
function buildRootFrom(json: string, root?: string): Reply {
  let spec: unknown;
  try {
    spec = JSON.parse(json);
  } catch (e) {
    return { ok: false, error: { code: 'INVALID_INPUT', message: `build-root: the spec is not JSON: ${(e as Error).message}` } };
  }
  if (root !== undefined && typeof spec === 'object' && spec !== null) spec = { ...spec, root };
  if (!isSpec(spec)) return { ok: false, error: { code: 'INVALID_INPUT', message: 'build-root: the spec lacks root, executable, cwd, wrapperSource, dirs or libraries' } };
  try {
    return { ok: true, report: buildRoot(spec) };
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    return { ok: false, error: { code: code === 'UNSAFE_BUNDLE' ? 'UNSAFE_BUNDLE' : 'ACTIVATE_FAILED', message: (e as Error).message } };
  }
}

/** Parse the JSON request on stdin, or say why it is not one. */
async function readRequest(command: string): Promise<Record<string, unknown> | Reply> {
  try {
    const value: unknown = JSON.parse(await readStdin());
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  return { ok: false, error: { code: 'INVALID_INPUT', message: `${command}: the request on stdin is not a JSON object` } };
}

const isReply = (value: unknown): value is Reply => typeof value === 'object' && value !== null && typeof (value as { ok?: unknown }).ok === 'boolean';

/** Pack on the source: the bundle to stdout (the packer validates the profile and options). */
async function packCommand(): Promise<Reply> {
  const request = await readRequest('pack');
  if (isReply(request)) return request;
  const bundle = createBundleStream(request.profile as never, (request.options ?? {}) as PackOptions);
  if (bundle.isErr()) return { ok: false, error: { code: bundle.error.code, message: bundle.error.message } };
  const piped = pipeline(bundle.value.stream, process.stdout).then(() => undefined, (e: unknown) => e);
  const [report, pipeError] = await Promise.all([bundle.value.report, piped]);
  if (report.isErr()) return { ok: false, error: { code: report.error.code, message: report.error.message, isRetryable: report.error.isRetryable } };
  if (pipeError !== undefined) return { ok: false, error: { code: 'BUNDLE_IO', message: `writing the bundle: ${String(pipeError)}` } };
  return { ok: true, report: { totalBytes: report.value.totalBytes, manifestBytes: report.value.manifestBytes, seededBytes: report.value.seeded.bytes } };
}

/** Measure whole trees on the source, as the packer will send them. */
async function measureTreesCommand(): Promise<Reply> {
  const request = await readRequest('measure-trees');
  if (isReply(request)) return request;
  const trees = request.trees;
  if (!Array.isArray(trees) || !trees.every((t) => typeof t === 'string' && t.startsWith('/'))) {
    return { ok: false, error: { code: 'INVALID_INPUT', message: 'measure-trees: trees must be an array of absolute paths' } };
  }
  const measured = await measureTrees(request.trees as string[]);
  if (measured.isErr()) return { ok: false, error: { code: measured.error.code, message: measured.error.message } };
  return { ok: true, report: { bytes: measured.value.bytes } };
}

/** What the destination already holds for the seeds the deployer names. */
async function inventoryCommand(): Promise<Reply> {
  const request = await readRequest('inventory');
  if (isReply(request)) return request;
  const parsed = InventoryRequestSchema.safeParse(request);
  if (!parsed.success) return { ok: false, error: { code: 'INVALID_INPUT', message: `inventory: ${parsed.error.issues[0]?.message ?? 'invalid request'}` } };
  return { ok: true, report: await takeInventory(parsed.data) };
}

/** Profile a running program on the source by pid with the procfs profiler (no tracer needed there). */
async function profilePidCommand(): Promise<Reply> {
  const request = await readRequest('profile-pid');
  if (isReply(request)) return request;
  const profiler = createProcfsProfiler({ captureEnv: request.captureEnv === true });
  const durationMs = typeof request.durationMs === 'number' ? request.durationMs : 3000;
  const profiled = await profiler.profile({ pid: request.pid as number }, { durationMs });
  if (profiled.isErr()) return { ok: false, error: { code: profiled.error.code, message: profiled.error.message } };
  return { ok: true, report: profiled.value };
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'pack' && argv.length === 1) {
    const reply = await packCommand();
    process.stderr.write(`${JSON.stringify(reply)}\n`);
    return reply.ok ? 0 : 1;
  }
  const [command, staging, ...flags] = argv;
  let reply: Reply;
  if (command === 'unpack' && staging) reply = await unpack(staging, flags);
  else if (command === 'build-root' && staging === undefined) reply = await buildRootCommand();
  else if (command === 'inventory' && staging === undefined) reply = await inventoryCommand();
  else if (command === 'measure-trees' && staging === undefined) reply = await measureTreesCommand();
  else if (command === 'profile-pid' && staging === undefined) reply = await profilePidCommand();
  else reply = { ok: false, error: { code: 'INVALID_INPUT', message: 'usage: receiver unpack STAGING_DIR [flags] | inventory | build-root | pack | measure-trees | profile-pid (requests as JSON on stdin)' } };
  process.stdout.write(`${JSON.stringify(reply)}\n`);
  return reply.ok ? 0 : reply.error.code === 'INVALID_INPUT' ? 2 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    // pack's stdout is the bundle: its reply always goes to stderr.
    const out = process.argv[2] === 'pack' ? process.stderr : process.stdout;
    out.write(`${JSON.stringify({ ok: false, error: { code: 'RECEIVER_CRASHED', message: String(error) } })}\n`);
    process.exitCode = 1;
  },
);
