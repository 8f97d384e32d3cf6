/**
 * The receiver (`dist/receiver.cjs`) at the destination: uploaded once per content hash, it
 * unpacks and verifies a bundle into staging and builds the program's root from it.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ExecResult } from '../spec/executor.js';
import type { DeployContext, StagedBundle } from '../spec/deployer.js';
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

/** Upload the receiver (once per content hash) and run it with the bundle on its stdin. */
export function receiveWithReceiver(
  context: DeployContext,
  preflight: { stagingDir: string },
  bundle: Readable,
  options: { allowDevices?: boolean; setuid?: 'reject' | 'strip' | 'allow'; onBytes?: (bytes: number) => void } = {},
): ResultAsync<StagedBundle, ApMigrateError> {
  const { transport } = context;
  const receiver = receiverFor(context);
  if (!receiver) {
    bundle.destroy();
    return errAsync(receiverMissing());
  }
  const { localPath: receiverPath, remotePath: remoteReceiver } = receiver;
  const layout = layoutFor(transport, context.name);
  const { stagingDir } = preflight;
  const signalOpt = context.signal ? { signal: context.signal } : {};
  let bytes = 0;
  bundle.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    options.onBytes?.(bytes);
  });
  bundle.pause();
  const flags = [...(options.allowDevices ? ['--allow-devices'] : []), ...(options.setuid ? [`--setuid=${options.setuid}`] : [])];
  // From `/`: this creates the root directory when it does not exist yet.
  return runScript(transport, 'mkdir -p "$1" && chmod 700 "$1" && test -f "$2" && echo present || echo absent', [layout.workDir, remoteReceiver], { cwd: '/', ...signalOpt })
    .andThen((r) => (r.stdout.trim() === 'present' ? okAsync(undefined) : transport.upload(createReadStream(receiverPath), remoteReceiver, { ...signalOpt, mode: 0o600 }).map(() => undefined)))
    .andThen(() => transport.exec(['node', remoteReceiver, 'unpack', posix.join(stagingDir, 'root'), ...flags], { ...signalOpt, stdin: bundle, allowNonZeroExit: true }))
    .mapErr((e) => {
      bundle.destroy();
      return e;
    })
    .andThen((result) => {
      const reply = parseReceiverReply<{ bytesRead: number; entries: number; verified: boolean }>(result);
      if (!reply.ok) {
        const code = reply.error.code;
        const message = code === 'RECEIVE_FAILED' ? `The receiver at ${transport.description} failed: ${reply.error.message}` : `The destination rejected the bundle: ${reply.error.message}`;
        return errAsync(new DeployError(code, message, { isRetryable: reply.error.isRetryable ?? false }));
      }
      if (!reply.report.verified) return errAsync(new DeployError('RECEIVE_FAILED', 'The destination could not verify the bundle against its manifest'));
      return okAsync<StagedBundle, ApMigrateError>({ stagingDir, bytesReceived: reply.report.bytesRead || bytes, entriesVerified: reply.report.entries });
    });
}

/**
 * Build the program's root inside staging with the receiver (`build-root`), which resolves every
 * path inside the root and copies in the destination's own libraries the program needs, found
 * from ELF headers (see `root-builder.ts`). The receiver is already there: `receive` put it.
 */
export function buildRootAtDestination(context: DeployContext, spec: RootBuildSpec): ResultAsync<RootBuildReport, ApMigrateError> {
  const receiver = receiverFor(context);
  if (!receiver) return errAsync(receiverMissing());
  return context.transport
    .exec(['node', receiver.remotePath, 'build-root'], { stdin: Readable.from([JSON.stringify(spec)]), allowNonZeroExit: true, ...(context.signal ? { signal: context.signal } : {}) })
    .andThen((result) => {
      const reply = parseReceiverReply<RootBuildReport>(result);
      if (reply.ok) return okAsync(reply.report);
      return errAsync(new DeployError(reply.error.code === 'UNSAFE_BUNDLE' ? 'UNSAFE_BUNDLE' : 'ACTIVATE_FAILED', `Could not build the program's root at ${context.transport.description}: ${reply.error.message}`));
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
