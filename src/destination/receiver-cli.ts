/**
 * The receiver: the small program the destination runs, as root, for the steps that touch what
 * came from the source. Built into one self-contained file (`dist/receiver.cjs`) that the
 * deployer uploads, so the destination needs only `node`, not the SDK.
 *
 *   node receiver.cjs unpack STAGING_DIR [--allow-devices] [--setuid=reject|strip|allow]
 *     unpack a bundle from stdin with every safety check and hash verification of `unpackBundle`;
 *   node receiver.cjs build-root
 *     build the program's root from the JSON spec on stdin (see `root-builder.ts`), never
 *     following a link out of the root.
 *
 * Prints one JSON line: `{"ok":true,"report":{...}}` or `{"ok":false,"error":{code,message}}`.
 */
import { unpackBundle } from '../bundle/unpack.js';
import { buildRoot, type RootBuildSpec } from './root-builder.js';

type Reply = { ok: true; report: unknown } | { ok: false; error: { code: string; message: string; isRetryable?: boolean } };

async function unpack(staging: string, flags: string[]): Promise<Reply> {
  const setuidFlag = flags.find((f) => f.startsWith('--setuid='))?.slice('--setuid='.length);
  const result = await unpackBundle(process.stdin, staging, {
    allowDevices: flags.includes('--allow-devices'),
    ...(setuidFlag ? { setuid: setuidFlag as 'reject' | 'strip' | 'allow' } : {}),
  });
  if (result.isErr()) {
    const { code, message, isRetryable } = result.error;
    return { ok: false, error: { code, message, isRetryable } };
  }
  const r = result.value;
  return { ok: true, report: { stagingDir: r.stagingDir, bytesRead: r.bytesRead, dataBytes: r.dataBytes, verified: r.verified, entries: r.manifest?.entries.length ?? 0 } };
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
    (v.passwd === undefined || strings(v.passwd)) && (v.group === undefined || strings(v.group))
  );
}

async function buildRootCommand(): Promise<Reply> {
  let spec: unknown;
  try {
    spec = JSON.parse(await readStdin());
  } catch (e) {
    return { ok: false, error: { code: 'INVALID_INPUT', message: `build-root: the spec is not JSON: ${(e as Error).message}` } };
  }
  if (!isSpec(spec)) return { ok: false, error: { code: 'INVALID_INPUT', message: 'build-root: the spec lacks root, executable, cwd, wrapperSource, dirs or libraries' } };
  try {
    return { ok: true, report: buildRoot(spec) };
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    return { ok: false, error: { code: code === 'UNSAFE_BUNDLE' ? 'UNSAFE_BUNDLE' : 'ACTIVATE_FAILED', message: (e as Error).message } };
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, staging, ...flags] = argv;
  let reply: Reply;
  if (command === 'unpack' && staging) reply = await unpack(staging, flags);
  else if (command === 'build-root' && staging === undefined) reply = await buildRootCommand();
  else reply = { ok: false, error: { code: 'INVALID_INPUT', message: 'usage: receiver unpack STAGING_DIR [flags] | receiver build-root < spec.json' } };
  process.stdout.write(`${JSON.stringify(reply)}\n`);
  return reply.ok ? 0 : reply.error.code === 'INVALID_INPUT' ? 2 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stdout.write(`${JSON.stringify({ ok: false, error: { code: 'RECEIVER_CRASHED', message: String(error) } })}\n`);
    process.exitCode = 1;
  },
);
