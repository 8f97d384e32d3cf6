/**
 * The receiver (`dist/receiver.cjs`) at the destination: uploaded once per content hash, it
 * unpacks and verifies a bundle into staging and builds the program's root from it.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ExecResult } from '../spec/executor.js';
import type { DeployContext, InventoryQuery, ReceiveOptions, StagedBundle } from '../spec/deployer.js';
import type { HeldFiles } from '../spec/packager.js';
import { DEFAULT_HOST_SEED_ROOTS, HeldFilesSchema, journalPathOf } from '../bundle/seeds.js';
import { createThrottle } from '../transfer/throttle.js';
import { compressStream, decompressingArgv, decompressorFailure, type WireCodec } from '../transfer/compression.js';
import { countWireBytes, type WireCountOptions } from '../transfer/wire.js';
import { DeployError } from './deploy-error.js';
import { layoutFor } from './layout.js';
import type { RootBuildReport, RootBuildSpec } from './root-builder.js';
import { runScript } from './run-script.js';

/** Path of the built receiver (`dist/receiver.cjs`), next to this module in a build or under `dist/` from sources. */
export function locateReceiver(): string | undefined {
  const here = typeof __filename === 'string' ? dirname(__filename) : dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'receiver.cjs'), join(here, '..', '..', 'dist', 'receiver.cjs')];
  if (process.env.AP_MIGRATE_RECEIVER) candidates.unshift(process.env.AP_MIGRATE_RECEIVER);
  return candidates.find((p) => existsSync(p));
}

/** The receiver built here and where it lives at the destination (named by its content hash). */
function receiverFor(context: DeployContext): { localPath: string; remotePath: string } | undefined {
  const localPath = locateReceiver();
  if (!localPath) return undefined;
  let hash = receiverHashes.get(localPath);
  if (!hash) {
    hash = createHash('sha256').update(readFileSync(localPath)).digest('hex').slice(0, 16);
    receiverHashes.set(localPath, hash);
  }
  return { localPath, remotePath: posix.join(layoutFor(context.transport, context.name).workDir, `receiver-${hash}.cjs`) };
}
// A cache of content hashes by file (not per-migration state): the receiver is hashed once per process.
const receiverHashes = new Map<string, string>();

function receiverMissing(): DeployError {
  return new DeployError('RECEIVER_MISSING', 'dist/receiver.cjs not found: run `npm run build` (or set AP_MIGRATE_RECEIVER)');
}

/**
 * $1 = work directory, $2 = the receiver's path, $3 = its size. The receiver, gzipped, is on
 * stdin: kept when it is not there yet (checked whole, renamed into place), read and dropped
 * when it is. One round trip whichever it is, for 23% of the receiver's bytes. With $4 (a path),
 * a second line says whether anything is there ({@link LOOK_LINE}).
 */
export const ENSURE_RECEIVER_SCRIPT = `
dir="$1"; receiver="$2"; size="$3"; look="\${4-}"
answer() { echo "$1"; if [ -n "$look" ]; then if [ -e "$look" ] || [ -L "$look" ]; then echo there; else echo none; fi; fi; exit 0; }
mkdir -p "$dir" && chmod 700 "$dir" || exit 1
if [ -f "$receiver" ] && [ ! -L "$receiver" ]; then cat >/dev/null; answer present; fi
if [ -e "$receiver" ] || [ -L "$receiver" ]; then echo "ap-migrate: $receiver is there but not a regular file" >&2; exit 1; fi
umask 077; part="$receiver.part.$$"
if gzip -dc > "$part" && [ "$(wc -c < "$part")" -eq "$size" ] && mv -f -- "$part" "$receiver"; then answer uploaded; fi
rm -f -- "$part"; echo "ap-migrate: the receiver did not arrive whole" >&2; exit 1
`;

/** Where gzip is missing: $1 = work directory, $2 = the receiver's path, $3 (optional) = a path to look at, as in {@link ENSURE_RECEIVER_SCRIPT}. */
export const FIND_RECEIVER_SCRIPT = `
mkdir -p "$1" && chmod 700 "$1" || exit 1
if test -f "$2"; then echo present; else echo absent; fi
if [ -n "\${3-}" ]; then if [ -e "$3" ] || [ -L "$3" ]; then echo there; else echo none; fi; fi
`;

/** The second line of the receiver check, with a path to look at: whether anything is there. */
export const LOOK_LINE = { there: 'there', none: 'none' } as const;

/** The built receiver gzipped, once per process (it is uploaded that way where the destination has gzip). */
function gzippedReceiver(localPath: string): Buffer {
  let gz = receiverGzips.get(localPath);
  if (!gz) {
    gz = gzipSync(readFileSync(localPath), { level: 9 });
    receiverGzips.set(localPath, gz);
  }
  return gz;
}
const receiverGzips = new Map<string, Buffer>();

/**
 * Make sure the receiver is at the destination (once per content hash: its name says which);
 * from `/`, so the work directory may be new. Where pre-flight found `gzip` there, one command
 * sends it gzipped and keeps it only if absent; else it is looked for, then uploaded.
 */
function ensureReceiver(context: DeployContext, signalOpt: { signal?: AbortSignal }, tools: Readonly<Record<string, string>> = {}): ResultAsync<string, ApMigrateError> {
  return ensureReceiverAndLook(context, signalOpt, tools).map(({ remotePath }) => remotePath);
}

/**
 * {@link ensureReceiver}, and in the same round trip whether anything is at `look` (a path at the
 * destination): `lookFound` is set only when `look` was given.
 */
function ensureReceiverAndLook(
  context: DeployContext,
  signalOpt: { signal?: AbortSignal },
  tools: Readonly<Record<string, string>> = {},
  look?: string,
): ResultAsync<{ remotePath: string; lookFound?: boolean }, ApMigrateError> {
  const receiver = receiverFor(context);
  if (!receiver) return errAsync(receiverMissing());
  const { transport } = context;
  const { workDir } = layoutFor(transport, context.name);
  const lookArgs = look !== undefined ? [look] : [];
  const looked = (stdout: string): { remotePath: string; lookFound?: boolean } => {
    if (look === undefined) return { remotePath: receiver.remotePath };
    // Anything but a clear "none" counts as found: the receiver is asked, as without the look.
    return { remotePath: receiver.remotePath, lookFound: stdout.trim().split('\n').pop() !== LOOK_LINE.none };
  };
  if (tools.gzip) {
    const size = statSync(receiver.localPath).size;
    return runScript(transport, ENSURE_RECEIVER_SCRIPT, [workDir, receiver.remotePath, String(size), ...lookArgs], { cwd: '/', stdin: Readable.from([gzippedReceiver(receiver.localPath)]), ...signalOpt }).map(
      (r) => looked(r.stdout),
    );
  }
  return runScript(transport, FIND_RECEIVER_SCRIPT, [workDir, receiver.remotePath, ...lookArgs], { cwd: '/', ...signalOpt })
    .andThen((r) =>
      r.stdout.trim().split('\n')[0] === 'present'
        ? okAsync(looked(r.stdout))
        : transport.upload(createReadStream(receiver.localPath), receiver.remotePath, { ...signalOpt, mode: 0o600 }).map(() => looked(r.stdout)),
    );
}

/** Where the seeds of one migration live at the destination: its staged tree, the next round's, the files kept from a cut attempt. */
export function seedPaths(context: DeployContext, stagingDir: string): { root: string; next: string; resume: string } {
  const { workDir } = layoutFor(context.transport, context.name);
  return { root: posix.join(stagingDir, 'root'), next: posix.join(stagingDir, 'root.next'), resume: posix.join(workDir, `resume-${context.name}`) };
}

/** The receiver's unpack flags for one round: where it writes, which seeds it may take from, where a cut attempt's files are kept. */
function unpackArgs(context: DeployContext, stagingDir: string, options: ReceiveWithReceiverOptions): { target: string; flags: string[] } {
  const paths = seedPaths(context, stagingDir);
  const delta = options.round === 'delta';
  const flags = [
    ...(options.allowDevices ? ['--allow-devices'] : []),
    ...(options.setuid ? [`--setuid=${options.setuid}`] : []),
    `--seed-resume=${paths.resume}`,
    `--keep-partial=${paths.resume}`,
    ...(delta ? [`--seed-staged=${paths.root}`] : []),
    ...(options.hostSeeds ? DEFAULT_HOST_SEED_ROOTS.map((r) => `--seed-host-root=${r}`) : []),
    ...buildRootFlag(options.buildRoot),
  ];
  return { target: delta ? paths.next : paths.root, flags };
}

// Before a later attempt: the receiver of the cut one may still be keeping what it verified
// (moving it to the resume store); let it finish (killed after 10 s), then clear what is left at
// the target. Matched as the rollback matches it: by its "unpack <target>" argument, escaped.
export const CLEAR_TARGET_SCRIPT = `
target="$1"
pat=$(printf '%s' "$target" | sed 's/[][\\.*^$+?(){}|]/\\\\&/g')
i=0; while [ "$i" -lt 100 ] && pgrep -f -- "unpack '?$pat" >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
pkill -KILL -f -- "unpack '?$pat" 2>/dev/null || true
rm -rf -- "$target" "$target.journal.json"
`;
// After a verified round: the resume store served its purpose; a delta round replaces the tree it was seeded from.
export const SETTLE_ROUND_SCRIPT = `
resume="$1"; root="$2"; next="$3"
rm -rf -- "$resume" "$resume.journal.json"
if [ -n "$next" ]; then
  rm -rf -- "$root" "$root.journal.json"
  mv -- "$next" "$root" && mv -- "$next.journal.json" "$root.journal.json"
fi
`;

/**
 * $1-$3 as {@link SETTLE_ROUND_SCRIPT}'s, then the receiver's `unpack` command: the round is
 * settled only once the receiver verified it (exit 0); a settle that fails is a reply of its own.
 */
export const UNPACK_THEN_SETTLE_SCRIPT = `
settle() {
${SETTLE_ROUND_SCRIPT.trim()}
}
resume="$1"; root="$2"; next="$3"; shift 3
"$@" || exit $?
if ! settle "$resume" "$root" "$next" >&2; then
  echo '{"ok":false,"error":{"code":"RECEIVE_FAILED","message":"the round was verified but could not be settled at the destination"}}'
  exit 1
fi
`;

/** What the receiver's steps take from pre-flight: where staging is, and the tools found there (`gzip`: the receiver travels gzipped). */
export interface ReceiverPreflight {
  stagingDir: string;
  tools?: Readonly<Record<string, string>>;
}

/** The `--build-root` flag for a spec, or none when there is no spec or it is too long for a command line. */
function buildRootFlag(spec: Omit<RootBuildSpec, 'root'> | undefined): string[] {
  if (!spec) return [];
  const json = JSON.stringify(spec);
  return Buffer.byteLength(json) <= MAX_BUILD_SPEC_BYTES ? [`--build-root=${json}`] : [];
}

/** Options of {@link receiveWithReceiver}. */
export interface ReceiveWithReceiverOptions extends ReceiveOptions, WireCountOptions {
  allowDevices?: boolean;
  setuid?: 'reject' | 'strip' | 'allow';
  /** Called with the bundle's bytes read so far (before compression). */
  onBytes?: (bytes: number) => void;
  /**
   * Build the program's root right after the bundle is verified, in the same receiver process
   * (`unpack --build-root`): activation then only moves it into place. Its `root` is the unpack's
   * target, whatever is given here. Ignored when its JSON is over {@link MAX_BUILD_SPEC_BYTES}.
   */
  buildRoot?: Omit<RootBuildSpec, 'root'>;
}

/** Largest build-root spec passed on the receiver's command line (an argument may hold 128 KiB). */
export const MAX_BUILD_SPEC_BYTES = 32 * 1024;

/** Upload the receiver (once per content hash) and run it with the bundle on its stdin. */
export function receiveWithReceiver(
  context: DeployContext,
  preflight: ReceiverPreflight,
  bundle: Readable,
  options: ReceiveWithReceiverOptions = {},
): ResultAsync<StagedBundle, ApMigrateError> {
  const { transport } = context;
  const { stagingDir } = preflight;
  const signalOpt = context.signal ? { signal: context.signal } : {};
  let bytes = 0;
  bundle.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    options.onBytes?.(bytes);
  });
  bundle.pause();
  const { target, flags } = unpackArgs(context, stagingDir, options);
  const paths = seedPaths(context, stagingDir);
  // The inventory that just answered ran this receiver: it is there.
  const known = options.afterInventory ? receiverFor(context)?.remotePath : undefined;
  return (known ? okAsync<string, ApMigrateError>(known) : ensureReceiver(context, signalOpt, preflight.tools))
    .andThen((remoteReceiver) =>
      ((options.attempt ?? 1) > 1 ? runScript(transport, CLEAR_TARGET_SCRIPT, [target], { cwd: '/', ...signalOpt }).map(() => remoteReceiver) : okAsync(remoteReceiver)),
    )
    .andThen((remoteReceiver) => {
      // Settled in the same command once verified: one round trip less.
      const settled = ['sh', '-c', UNPACK_THEN_SETTLE_SCRIPT, 'ap-migrate', paths.resume, paths.root, options.round === 'delta' ? paths.next : '', 'node', remoteReceiver, 'unpack', target, ...flags];
      return transport.exec(decompressingArgv(codecOf(options), settled), { ...signalOpt, stdin: onTheWire(bundle, options), allowNonZeroExit: true });
    })
    .mapErr((e) => {
      bundle.destroy();
      return e;
    })
    .andThen((result) => {
      // A decompressor that failed explains a receiver that then saw a cut stream.
      const decompressor = decompressorFailure(codecOf(options), result, transport.description);
      return decompressor ? errAsync(decompressor) : stagedFromReply(transport.description, result, stagingDir, bytes);
    });
}

const codecOf = (options: ReceiveWithReceiverOptions): WireCodec => options.compression?.codec ?? 'none';

/**
 * The bundle as it goes on the wire: compressed, then at most `bandwidthLimit` bytes per second
 * (of wire bytes), then counted (`onWireBytes`): what the transport is given to send.
 */
function onTheWire(bundle: Readable, options: ReceiveWithReceiverOptions): Readable {
  const level = options.compression?.level;
  const compressed = codecOf(options) === 'none' ? bundle : compressStream(bundle, codecOf(options), level !== undefined ? { level } : {});
  const wire = options.bandwidthLimit === undefined ? compressed : throttled(compressed, options.bandwidthLimit);
  return options.onWireBytes ? countWireBytes(wire, options.onWireBytes) : wire;
}

function throttled(bundle: Readable, limit: number): Readable {
  const throttle = createThrottle(limit);
  // A failing throttle (never expected) fails the bundle too, so the packer stops.
  bundle.on('error', (e) => throttle.destroy(e));
  throttle.on('error', (e) => bundle.destroy(e));
  return bundle.pipe(throttle);
}

/** The staged bundle the receiver's reply describes, or the typed error it reports. */
function stagedFromReply(where: string, result: ExecResult, stagingDir: string, bytes: number): ResultAsync<StagedBundle, ApMigrateError> {
  const reply = parseReceiverReply<{ bytesRead: number; entries: number; verified: boolean; seeded?: { bytes?: number }; root?: unknown }>(result);
  if (!reply.ok) {
    const code = reply.error.code;
    const message = code === 'RECEIVE_FAILED' ? `The receiver at ${where} failed: ${reply.error.message}` : `The destination rejected the bundle: ${reply.error.message}`;
    // A cut stream is worth another attempt: what was verified is kept for it.
    const isRetryable = (reply.error.isRetryable ?? false) || code === 'BUNDLE_TRUNCATED';
    return errAsync(new DeployError(code, message, { isRetryable }));
  }
  if (!reply.report.verified) return errAsync(new DeployError('RECEIVE_FAILED', 'The destination could not verify the bundle against its manifest'));
  const seededBytes = typeof reply.report.seeded?.bytes === 'number' ? reply.report.seeded.bytes : 0;
  const prepared = reply.report.root !== undefined;
  return okAsync({ stagingDir, bytesReceived: reply.report.bytesRead || bytes, entriesVerified: reply.report.entries, seededBytes, ...(prepared ? { prepared } : {}) });
}

/** What the destination holds for a round: the files a cut attempt kept, the tree the first round staged, the host's own files. */
export function inventoryWithReceiver(context: DeployContext, preflight: ReceiverPreflight, query: InventoryQuery): ResultAsync<HeldFiles, ApMigrateError> {
  const signalOpt = context.signal ? { signal: context.signal } : {};
  const paths = seedPaths(context, preflight.stagingDir);
  const request = {
    resume: paths.resume,
    ...(query.round === 'delta' ? { staged: paths.root } : {}),
    ...(query.hostPaths?.length ? { host: { roots: [...DEFAULT_HOST_SEED_ROOTS], paths: [...query.hostPaths] } } : {}),
  };
  const clear: ResultAsync<unknown, ApMigrateError> =
    (query.attempt ?? 1) > 1 ? runScript(context.transport, CLEAR_TARGET_SCRIPT, [query.round === 'delta' ? paths.next : paths.root], { cwd: '/', ...signalOpt }) : okAsync(undefined);
  // Asked only for what a cut attempt kept: without its journal there is nothing, and the
  // receiver (a Node.js start, ~0.2 s) need not be asked. The look shares the receiver check's round trip.
  const onlyResume = request.staged === undefined && request.host === undefined;
  return clear
    .andThen(() => ensureReceiverAndLook(context, signalOpt, preflight.tools, onlyResume ? journalPathOf(paths.resume) : undefined))
    .andThen(({ remotePath, lookFound }) =>
      lookFound === false
        ? okAsync<HeldFiles, ApMigrateError>({})
        : context.transport.exec(['node', remotePath, 'inventory'], { ...signalOpt, stdin: Readable.from([JSON.stringify(request)]), allowNonZeroExit: true }).andThen(parseInventoryReply),
    );
}

/** The receiver's answer to `inventory`, checked. */
function parseInventoryReply(result: ExecResult): ResultAsync<HeldFiles, ApMigrateError> {
  const reply = parseReceiverReply<unknown>(result);
  if (!reply.ok) return errAsync(new DeployError('RECEIVE_FAILED', `The destination could not say what it holds: ${reply.error.message}`));
  const held = HeldFilesSchema.safeParse(reply.report);
  if (!held.success) return errAsync(new DeployError('RECEIVE_FAILED', 'The destination answered its inventory with something that is not one'));
  return okAsync(held.data);
}

/**
 * $1 = the receiver, $2 = a fixed script to run once `build-root` succeeded (with the rest as its
 * "$@"): one round trip for both. Its failure is a reply of its own, its stderr after it.
 */
export const BUILD_ROOT_THEN_SCRIPT = `
receiver="$1"; after="$2"; shift 2
node "$receiver" build-root || exit $?
if ! sh -c "$after" ap-migrate "$@" >&2; then
  echo '{"ok":false,"error":{"code":"AFTER_BUILD_FAILED","message":"the step after building the root failed"}}'
  exit 1
fi
`;

/**
 * Build the program's root inside staging with the receiver (`build-root`), which resolves every
 * path inside the root and copies in the destination's own libraries the program needs, found
 * from ELF headers (see `root-builder.ts`). The receiver is already there: `receive` put it.
 * `after` (a fixed script and its arguments) runs in the same command once the root is built.
 */
export function buildRootAtDestination(context: DeployContext, spec: RootBuildSpec, after?: { script: string; args: readonly string[] }): ResultAsync<RootBuildReport, ApMigrateError> {
  const receiver = receiverFor(context);
  if (!receiver) return errAsync(receiverMissing());
  const argv = after ? ['sh', '-c', BUILD_ROOT_THEN_SCRIPT, 'ap-migrate', receiver.remotePath, after.script, ...after.args] : ['node', receiver.remotePath, 'build-root'];
  return context.transport
    .exec(argv, { stdin: Readable.from([JSON.stringify(spec)]), allowNonZeroExit: true, ...(context.signal ? { signal: context.signal } : {}) })
    .andThen((result) => {
      const reply = parseReceiverReply<RootBuildReport>(result);
      if (reply.ok) return okAsync(reply.report);
      const why = reply.error.code === 'AFTER_BUILD_FAILED' ? `${reply.error.message}: ${result.stderr.trim().slice(-400)}` : reply.error.message;
      return errAsync(new DeployError(reply.error.code === 'UNSAFE_BUNDLE' ? 'UNSAFE_BUNDLE' : 'ACTIVATE_FAILED', `Could not build the program's root at ${context.transport.description}: ${why}`));
    });
}

/** The receiver's one JSON line, or a reply saying why there is none. */
function parseReceiverReply<T>(result: ExecResult): { ok: true; report: T } | { ok: false; error: { code: string; message: string; isRetryable?: boolean } } {
  const line = result.stdout.trim().split('\n').pop() ?? '';
  try {
    const reply = JSON.parse(line) as { ok?: unknown; report?: T; error?: { code?: unknown; message?: unknown; isRetryable?: unknown } };
    if (reply.ok === true && reply.report !== undefined) return { ok: true, report: reply.report };
    const code = typeof reply.error?.code === 'string' ? reply.error.code : 'RECEIVE_FAILED';
    const message = typeof reply.error?.message === 'string' ? reply.error.message : 'unknown error';
    return { ok: false, error: { code, message, isRetryable: reply.error?.isRetryable === true } };
  } catch {
    return { ok: false, error: { code: 'RECEIVE_FAILED', message: `the receiver exited with ${result.code}: ${result.stderr.trim().slice(0, 400)}` } };
  }
}
