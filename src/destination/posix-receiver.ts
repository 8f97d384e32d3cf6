/**
 * A receiver that needs no Node.js at the destination: only a POSIX shell and the tools present
 * on both Linux and FreeBSD (`tar`, `find`, `xargs`, `stat`, `readlink`, `cut`, `sha256sum` or
 * `sha256`). Every rule of `unpackBundle` is applied by the SDK on the stream
 * ({@link forwardSanitized}), and what landed is checked by the SDK afterwards against what it sent
 * (decision 0104):
 *
 * 1. one `sh -c` script (data as "$@", never spliced into the text) makes a fresh private
 *    directory `<target>.incoming` (0700; refused if it exists), extracts the sanitized plain tar
 *    there with the destination's `tar -x -p --numeric-owner` (its own defences against absolute
 *    names and `..` stay on), and prints a listing of exactly the paths the SDK sent (their list
 *    travels at the end of the same tar, outside the tree): type, mode, owner, size, mtime, inode
 *    of each, the SHA-256 of each regular file, the target of each symlink, and how many objects
 *    the tree really holds;
 * 2. the SDK compares the listing with what it emitted (every object present, nothing extra, type,
 *    mode, owner when the destination runs as root, size, mtime, SHA-256, link targets, hard
 *    links sharing their file's inode);
 * 3. on success a second script moves the tree to `<target>`; on any failure the incoming
 *    directory is removed and the error is the bundle error `unpackBundle` would give
 *    (`BUNDLE_UNSAFE_ENTRY`, `BUNDLE_HASH_MISMATCH`, ...), or `BUNDLE_MANIFEST_MISMATCH` /
 *    `BUNDLE_HASH_MISMATCH` with `details.at: 'destination'` when the destination holds something
 *    else than was sent.
 *
 * It takes no seeded entries (no resume, pre-copy delta or dedup) and creates no device nodes.
 *
 * @module
 */
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { err, errAsync, ok, okAsync, ResultAsync, type Result } from 'neverthrow';
import { ApMigrateError, InvalidInputError } from '../errors.js';
import { BundleError } from '../bundle/errors.js';
import { forwardSanitized, isConsumerClosed, type ForwardReport, type SanitizedEntry } from '../bundle/forward-sanitized.js';
import { noSeeded } from '../bundle/seeds.js';
import type { UnpackReport } from '../bundle/unpack.js';
import type { DeployContext, ReceiveOptions, StagedBundle } from '../spec/deployer.js';
import type { ExecResult } from '../spec/executor.js';
import type { Transport } from '../spec/transport.js';
import { compressStream, decompressingArgv, decompressorFailure, type WireCodec } from '../transfer/compression.js';
import { createThrottle } from '../transfer/throttle.js';
import { DeployError } from './deploy-error.js';
import { runScript } from './run-script.js';

/** The name a receiver is known by in reports and pre-flight. */
export type ReceiverKind = 'node' | 'posix-sh';

/** What {@link probePosixReceiver} found at the destination. */
export interface PosixReceiverProbe {
  /** The receiver pre-flight would pick: `node` when the destination has it, else `posix-sh`. */
  kind: ReceiverKind;
  /** Whether `node` is on the destination's PATH. */
  hasNode: boolean;
  /** `uname -s`: `Linux` or `FreeBSD`. */
  os: string;
  /** How files are hashed there. */
  hasher: 'sha256sum' | 'sha256';
  /** Which `stat` syntax the listing uses (`-c` on Linux, `-f` on FreeBSD). */
  statSyntax: 'stat -c' | 'stat -f';
  /** First line of `tar --version` (which tar extracts). */
  tarVersion: string;
  /** The destination's effective uid (owners are applied and checked only as 0). */
  uid: number;
  /** One line for pre-flight's report: what was picked and why. */
  summary: string;
}

/** Options of {@link receivePosix}. */
export interface PosixReceiveOptions {
  /** Files with setuid/setgid bits: `reject` (default), `strip` the bits, or `allow` them. */
  setuid?: 'reject' | 'strip' | 'allow';
  /** Stop; the incoming directory is removed and the error is `ABORTED`. */
  signal?: AbortSignal;
  /** Compress the sanitized tar on the wire (the destination needs the codec's tool). */
  compression?: { codec: WireCodec; level?: number };
  /** Send at most this many (wire) bytes per second. */
  bandwidthLimit?: number;
  /** Largest listing accepted back (default 1 GiB; about 80 bytes per object, plus names of files). */
  maxListingBytes?: number;
}

/** What {@link receivePosix} staged: the same report `unpackBundle` gives, and where it was checked. */
export interface PosixReceiveReport extends UnpackReport {
  receiver: 'posix-sh';
  /** The destination's `uname -s` and effective uid. */
  destination: { os: string; uid: number };
  /** Objects the listing checked (every one the SDK sent) and files whose SHA-256 the destination computed. */
  checked: { objects: number; files: number; symlinks: number };
  /** Bytes of the sanitized tar sent (before compression). */
  bytesSent: number;
}

/** Every tool the scripts below use (besides `sh`), and the hashers of which one must be there. */
export const POSIX_RECEIVER_TOOLS = ['tar', 'find', 'xargs', 'stat', 'readlink', 'cut', 'mkdir', 'mv', 'rm', 'rmdir', 'ls', 'dirname', 'id', 'uname'] as const;

/** What {@link probePosixReceiver} runs: the tools, the system, the hasher, Node.js, and that `tar` takes the flags. */
export const POSIX_PROBE_SCRIPT = `
echo "os=$(uname -s)"
echo "uid=$(id -u)"
for t in ${POSIX_RECEIVER_TOOLS.join(' ')}; do command -v "$t" >/dev/null 2>&1 || echo "missing=$t"; done
case "$(uname -s)" in
  Linux) command -v sha256sum >/dev/null 2>&1 && echo hasher=sha256sum ;;
  *) if command -v sha256 >/dev/null 2>&1; then echo hasher=sha256; elif command -v sha256sum >/dev/null 2>&1; then echo hasher=sha256sum; fi ;;
esac
if command -v node >/dev/null 2>&1; then echo node=yes; else echo node=no; fi
echo "tar=$(tar --version 2>/dev/null | head -n 1)"
if command -v tar >/dev/null 2>&1; then
  if (cd / && dd if=/dev/zero bs=512 count=2 2>/dev/null | tar -x -p --numeric-owner -f - >/dev/null 2>&1); then echo tarflags=ok; else echo tarflags=refused; fi
fi
`;

// Exit codes of the receive script.
const EXIT_EXISTS = 3;
const EXIT_SETUP = 4;
const EXIT_TAR = 5;
const EXIT_NO_LIST = 6;

/**
 * $1 = target. Extract into "$1.incoming" (new, 0700), then list exactly the paths named by the
 * lists the SDK put at the end of the tar (NUL-separated, relative to the incoming directory).
 * The stat and hash sections carry no names (so no name can forge a line); the symlink targets
 * come last and are split by the sizes `stat` reports.
 */
export const POSIX_RECEIVE_SCRIPT = `
target="$1"; work="$1.incoming"
# Names are UTF-8: a tar that converts names to the locale's charset must not be in the C locale.
LC_ALL=C.UTF-8; export LC_ALL
if [ -L "$target" ] || { [ -e "$target" ] && { [ ! -d "$target" ] || [ -n "$(ls -A -- "$target")" ]; }; }; then
  echo "ap-migrate: $target exists and is not an empty directory" >&2; exit ${EXIT_EXISTS}
fi
mkdir -p -- "$(dirname -- "$target")" || exit ${EXIT_SETUP}
umask 077
if ! mkdir -m 700 -- "$work" 2>/dev/null; then echo "ap-migrate: $work already exists" >&2; exit ${EXIT_EXISTS}; fi
cd -- "$work" || exit ${EXIT_SETUP}
if ! tar -x -p --numeric-owner -f -; then cd / && rm -rf -- "$work"; exit ${EXIT_TAR}; fi
if [ ! -f list/all ] || [ -L list ]; then cd / && rm -rf -- "$work"; echo "ap-migrate: the stream ended before its listing request" >&2; exit ${EXIT_NO_LIST}; fi
os=$(uname -s)
echo "APM-LISTING 1 $os $(id -u)"
case "$os" in
  Linux) xargs -0 stat -c '%f %u %g %s %Y %i' -- < list/all ;;
  *) xargs -0 stat -f '%Xp %u %g %z %m %i' -- < list/all ;;
esac
echo APM-COUNT
find root -exec sh -c 'echo $#' sh {} +
echo APM-HASHES
if [ -s list/files ]; then
  case "$os" in
    Linux) xargs -0 sha256sum -- < list/files | cut -c 1-65 ;;
    *) if command -v sha256 >/dev/null 2>&1; then xargs -0 sha256 -q -- < list/files; else xargs -0 sha256sum -- < list/files | cut -c 1-65; fi ;;
  esac
fi
echo APM-LINKS
if [ -s list/links ]; then xargs -0 readlink -- < list/links; fi
echo APM-END
`;

/** $1 = target: the verified tree takes its place. */
export const POSIX_SETTLE_SCRIPT = `
target="$1"; work="$1.incoming"
if [ -d "$target" ] && [ ! -L "$target" ]; then rmdir -- "$target" || exit 3; fi
mv -- "$work/root" "$target" && rm -rf -- "$work"
`;

/** $1 = target: what a failed receive leaves is removed. */
export const POSIX_DISCARD_SCRIPT = `rm -rf -- "$1.incoming"`;

const DEFAULT_MAX_LISTING = 1024 * 1024 * 1024;
/** How long a destination may take to stop and clean up after a refusal before its command is killed. */
const REFUSAL_GRACE_MS = 30_000;

/**
 * Whether the destination can run the POSIX receiver, and which receiver pre-flight would pick
 * (`node` when it has Node.js, else `posix-sh`). Missing tools are `TOOL_MISSING`, another system
 * than Linux or FreeBSD `PLATFORM_MISMATCH`.
 */
export function probePosixReceiver(transport: Transport, options: { signal?: AbortSignal } = {}): ResultAsync<PosixReceiverProbe, ApMigrateError> {
  return runScript(transport, POSIX_PROBE_SCRIPT, [], { cwd: '/', allowNonZeroExit: true, ...(options.signal ? { signal: options.signal } : {}) }).andThen((result) => {
    const values = new Map<string, string[]>();
    for (const line of result.stdout.split('\n')) {
      const at = line.indexOf('=');
      if (at <= 0) continue;
      const key = line.slice(0, at);
      values.set(key, [...(values.get(key) ?? []), line.slice(at + 1)]);
    }
    const one = (key: string) => values.get(key)?.[0] ?? '';
    const os = one('os');
    if (os !== 'Linux' && os !== 'FreeBSD') {
      return errAsync(new DeployError('PLATFORM_MISMATCH', `The POSIX receiver runs on Linux and FreeBSD; ${transport.description} is "${os || 'unknown'}"`));
    }
    const missing = [...(values.get('missing') ?? [])];
    const hasher = one('hasher');
    if (hasher !== 'sha256sum' && hasher !== 'sha256') missing.push(os === 'Linux' ? 'sha256sum' : 'sha256 (or sha256sum)');
    if (missing.length > 0) {
      return errAsync(new DeployError('TOOL_MISSING', `${transport.description} lacks what the POSIX receiver needs: ${missing.join(', ')}`, { details: { missing } }));
    }
    if (one('tarflags') !== 'ok') {
      return errAsync(new DeployError('TOOL_MISSING', `The tar at ${transport.description} refuses "-x -p --numeric-owner -f -" (${one('tar') || 'no version line'})`));
    }
    const hasNode = one('node') === 'yes';
    const kind: ReceiverKind = hasNode ? 'node' : 'posix-sh';
    const tarVersion = one('tar');
    const uid = Number(one('uid'));
    const statSyntax = os === 'Linux' ? 'stat -c' : 'stat -f';
    const summary = hasNode
      ? `receiver: node (Node.js found at ${transport.description}; the POSIX receiver would also work: ${os}, ${tarVersion}, ${hasher})`
      : `receiver: posix-sh (no Node.js at ${transport.description}; ${os}, ${tarVersion}, ${hasher}; checks done by the SDK)`;
    return okAsync({ kind, hasNode, os, hasher: hasher as 'sha256sum' | 'sha256', statSyntax, tarVersion, uid: Number.isSafeInteger(uid) ? uid : -1, summary } as PosixReceiverProbe);
  });
}

/** The tree's objects as named in the tar and the lists (relative to the incoming directory). */
const tarPath = (entry: SanitizedEntry) => (entry.path === '/' ? 'root' : `root${entry.path}`);

/** The three lists the listing script reads, NUL-separated. */
function listsOf(report: ForwardReport): { name: string; data: Buffer }[] {
  const list = (entries: SanitizedEntry[]) => Buffer.from(entries.map((e) => `${tarPath(e)}\0`).join(''));
  return [
    { name: 'list/all', data: list(report.entries) },
    { name: 'list/files', data: list(report.entries.filter((e) => e.type === 'file')) },
    { name: 'list/links', data: list(report.entries.filter((e) => e.type === 'symlink')) },
  ];
}

/**
 * Receive `bundle` into `target` at the destination with the POSIX receiver: the SDK sanitizes
 * and verifies the stream, the destination's `tar` extracts it, the SDK checks the listing.
 * `target` (absolute) must not exist, or be an empty directory; `<target>.incoming` must not exist.
 * Never throws; on failure nothing is left at either path and the bundle stream is destroyed.
 */
export function receivePosix(transport: Transport, bundle: Readable, target: string, options: PosixReceiveOptions = {}): ResultAsync<PosixReceiveReport, ApMigrateError> {
  if (typeof target !== 'string' || !target.startsWith('/') || target.includes('\0') || posix.normalize(target) === '/' || target.split('/').includes('..')) {
    bundle.destroy();
    return errAsync(new InvalidInputError('receivePosix arguments', [{ path: 'target', message: 'must be an absolute path below / without ".." or NUL' }]));
  }
  return ResultAsync.fromPromise(receive(transport, bundle, posix.normalize(target), options), (e) =>
    ApMigrateError.isInstance(e) ? e : new BundleError('BUNDLE_IO', `receiving the bundle: ${String(e)}`, { cause: e }),
  );
}

async function receive(transport: Transport, bundle: Readable, target: string, options: PosixReceiveOptions): Promise<PosixReceiveReport> {
  const internal = new AbortController();
  const codec: WireCodec = options.compression?.codec ?? 'none';
  // A refusal (or the caller's abort) ends the sanitized tar where it is: the destination's script
  // sees a stream without its listing request, removes what it extracted and exits, so nothing of
  // it can run on after us. Only a destination that does not stop within the grace period is killed.
  const forward = forwardSanitized(bundle, { ...(options.setuid ? { setuid: options.setuid } : {}), ...(options.signal ? { signal: options.signal } : {}), trailer: listsOf, onRefusal: 'end' });
  let grace: NodeJS.Timeout | undefined;
  const forwarded: Promise<Result<ForwardReport, BundleError | InvalidInputError>> = (async () => {
    const r = await forward.done;
    if (r.isErr() && !isConsumerClosed(r.error)) grace = setTimeout(() => internal.abort(), REFUSAL_GRACE_MS);
    return r;
  })();
  const signal = internal.signal;
  const level = options.compression?.level;
  const compressed = codec === 'none' ? forward.stream : compressStream(forward.stream, codec, level !== undefined ? { level } : {});
  const wire = options.bandwidthLimit === undefined ? compressed : throttled(compressed, options.bandwidthLimit);
  const executed = await transport.exec(decompressingArgv(codec, ['sh', '-c', POSIX_RECEIVE_SCRIPT, 'ap-migrate', target]), {
    cwd: '/',
    stdin: wire,
    signal,
    allowNonZeroExit: true,
    maxOutputBytes: options.maxListingBytes ?? DEFAULT_MAX_LISTING,
  });
  // The destination is done reading: a forwarder still waiting to write learns it.
  if (!forward.stream.readableEnded) forward.stream.destroy();
  const result = await forwarded;
  clearTimeout(grace);
  const discard = async (error: ApMigrateError): Promise<never> => {
    await runScript(transport, POSIX_DISCARD_SCRIPT, [target], { cwd: '/' });
    throw error;
  };
  if (options.signal?.aborted) return discard(new BundleError('ABORTED', 'Receiving the bundle was aborted by the caller'));
  // A refusal of the bundle is the answer, whatever the destination made of the cut stream.
  if (result.isErr() && !isConsumerClosed(result.error)) return discard(result.error);
  if (executed.isErr()) return discard(executed.error);
  const run = executed.value;
  const failed = receiveScriptFailure(run, result, codec, transport.description, target);
  if (failed?.code === 'BUNDLE_STAGING_NOT_EMPTY') throw failed; // nothing of ours was made: leave what is there alone
  if (failed) return discard(failed);
  if (result.isErr()) return discard(result.error);
  const checked = checkListing(run.stdout, result.value.entries);
  if (checked.isErr()) return discard(checked.error);
  const settled = await runScript(transport, POSIX_SETTLE_SCRIPT, [target], { cwd: '/', allowNonZeroExit: true });
  if (settled.isErr() || settled.value.code !== 0) {
    return discard(new BundleError('BUNDLE_IO', `Could not move the verified tree into ${target} at ${transport.description}: ${settled.isErr() ? settled.error.message : settled.value.stderr.trim()}`));
  }
  return receivedReport(result.value, checked.value, target);
}

/** Why the destination's receive script (or its decompressor) failed, as the error to report; undefined when it did not. */
function receiveScriptFailure(run: ExecResult, forwarded: Result<ForwardReport, BundleError | InvalidInputError>, codec: WireCodec, where: string, target: string): ApMigrateError | undefined {
  const decompressor = decompressorFailure(codec, run, where);
  if (decompressor) return decompressor;
  if (run.code === 0) return undefined;
  const stderr = run.stderr.trim().slice(-2000);
  if (run.code === EXIT_EXISTS) {
    return new BundleError('BUNDLE_STAGING_NOT_EMPTY', `The staging directory ${target} (or ${target}.incoming) at ${where} must be new or an empty directory`, { details: { stagingDir: target, stderr } });
  }
  if (/No space left|Disk quota exceeded/i.test(stderr)) return new BundleError('NO_SPACE', `No space left at ${where} while extracting the bundle: ${stderr}`, { details: { stderr } });
  const what = run.code === EXIT_TAR ? "the destination's tar failed" : run.code === EXIT_NO_LIST ? 'the stream ended before its end' : `the receive script exited with ${String(run.code ?? run.signal)}`;
  return new BundleError(forwarded.isErr() && BundleError.isInstance(forwarded.error) ? forwarded.error.code : 'BUNDLE_IO', `Receiving at ${where}: ${what}: ${stderr}`, { details: { status: run.code, stderr } });
}

function receivedReport(report: ForwardReport, checked: PosixListingCheck, target: string): PosixReceiveReport {
  return {
    stagingDir: target,
    isBundle: true,
    info: report.info,
    manifest: report.manifest,
    counts: report.counts,
    dataBytes: report.dataBytes,
    bytesRead: report.bytesRead,
    strippedSetuid: report.strippedSetuid,
    verified: true,
    seeded: noSeeded(),
    receiver: 'posix-sh',
    destination: checked.destination,
    checked: checked.checked,
    bytesSent: report.bytesWritten,
  };
}

function throttled(stream: Readable, limit: number): Readable {
  const throttle = createThrottle(limit);
  stream.on('error', (e) => throttle.destroy(e));
  throttle.on('error', (e) => stream.destroy(e));
  return stream.pipe(throttle);
}

/** What the listing check found at the destination. */
export type PosixListingCheck = { destination: { os: string; uid: number }; checked: { objects: number; files: number; symlinks: number } };

const TYPE_BITS = 0o170000;
const TYPE_OF: Record<SanitizedEntry['type'], number> = { directory: 0o040000, file: 0o100000, link: 0o100000, symlink: 0o120000, fifo: 0o010000 };

/**
 * Compare the destination's listing (see {@link POSIX_RECEIVE_SCRIPT}) with the objects sent.
 * Exported for tests; `entries` is {@link ForwardReport.entries}.
 */
export function checkListing(stdout: string, entries: readonly SanitizedEntry[]): Result<PosixListingCheck, BundleError> {
  try {
    return ok(parseAndCompare(stdout, entries));
  } catch (e) {
    return err(BundleError.isInstance(e) ? e : new BundleError('BUNDLE_MANIFEST_MISMATCH', `The destination's listing could not be read: ${String(e)}`, { details: { at: 'destination' } }));
  }
}

const differs = (message: string, details: Record<string, unknown> = {}) =>
  new BundleError('BUNDLE_MANIFEST_MISMATCH', `The destination holds something else than was sent: ${message}`, { details: { at: 'destination', ...details } });

/** The listing's sections: one stat line per object, the per-directory counts, the file hashes, the symlink targets. */
interface ListingSections {
  os: string;
  uid: number;
  statLines: string[];
  counts: string[];
  hashLines: string[];
  linkText: string;
}

function splitListing(stdout: string): ListingSections {
  const header = /^APM-LISTING 1 (\S+) (\d+)\n/.exec(stdout);
  if (!header) throw differs('its listing does not start as expected');
  const os = header[1] as string;
  const uid = Number(header[2]);
  const countAt = stdout.indexOf('\nAPM-COUNT\n');
  const hashesAt = stdout.indexOf('\nAPM-HASHES\n', countAt);
  const linksAt = stdout.indexOf('\nAPM-LINKS\n', hashesAt);
  if (countAt < 0 || hashesAt < 0 || linksAt < 0 || !stdout.endsWith('APM-END\n')) throw differs('its listing is incomplete');
  const lines = (from: number, to: number) => (to > from ? stdout.slice(from, to).split('\n').filter((l) => l !== '') : []);
  const statLines = lines(header[0].length, countAt + 1);
  const counts = lines(countAt + '\nAPM-COUNT\n'.length, hashesAt + 1);
  const hashLines = lines(hashesAt + '\nAPM-HASHES\n'.length, linksAt + 1);
  const linkStart = linksAt + '\nAPM-LINKS\n'.length;
  const linkText = stdout.slice(linkStart, stdout.length - 'APM-END\n'.length);
  return { os, uid, statLines, counts, hashLines, linkText };
}

function parseAndCompare(stdout: string, entries: readonly SanitizedEntry[]): PosixListingCheck {
  const { os, uid, statLines, counts, hashLines, linkText } = splitListing(stdout);
  if (statLines.length !== entries.length) throw differs(`${statLines.length} of the ${entries.length} objects sent are there`, { expected: entries.length, found: statLines.length });
  const held = counts.reduce((sum, n) => sum + Number(n), 0);
  if (held !== entries.length) throw differs(`the tree holds ${held} objects, ${entries.length} were sent`, { expected: entries.length, found: held });

  const inodes = new Map<string, string>();
  const stats = statLines.map((line, i) => {
    const entry = entries[i] as SanitizedEntry;
    const fields = line.trim().split(/\s+/);
    if (fields.length !== 6) throw differs(`an unreadable listing line for ${entry.path}`, { path: entry.path });
    const [modeText, uidText, gidText, sizeText, mtimeText, inode] = fields as [string, string, string, string, string, string];
    const mode = parseInt(modeText.replace(/^0x/i, ''), 16);
    inodes.set(entry.path, inode);
    return { entry, mode, uid: Number(uidText), gid: Number(gidText), size: Number(sizeText), mtime: Number(mtimeText), inode };
  });
  for (const s of stats) compareStat(s, inodes, uid === 0);
  const files = entries.filter((e) => e.type === 'file');
  compareHashes(files, hashLines);
  const symlinks = entries.filter((e) => e.type === 'symlink');
  compareSymlinks(symlinks, linkText);
  return { destination: { os, uid }, checked: { objects: entries.length, files: files.length, symlinks: symlinks.length } };
}

interface ListedStat {
  entry: SanitizedEntry;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  inode: string;
}

/** One object's type, mode, owner (when the listing ran as root), size and mtime against what was sent. */
function compareStat(s: ListedStat, inodes: ReadonlyMap<string, string>, ownersCount: boolean): void {
  const { entry } = s;
  const path = entry.path;
  if ((s.mode & TYPE_BITS) !== TYPE_OF[entry.type]) throw differs(`${path} is not the ${entry.type} that was sent`, { path, mode: s.mode.toString(8) });
  if (entry.type === 'link') {
    if (s.inode !== inodes.get(entry.linkTarget ?? '')) throw differs(`${path} is not a hard link to ${String(entry.linkTarget)}`, { path });
    return;
  }
  if (entry.type !== 'symlink' && (s.mode & 0o7777) !== entry.mode) throw differs(`${path} has mode ${(s.mode & 0o7777).toString(8)}, ${entry.mode.toString(8)} was sent`, { path });
  if (ownersCount && entry.type !== 'symlink' && (s.uid !== entry.uid || s.gid !== entry.gid)) throw differs(`${path} is owned by ${s.uid}:${s.gid}, ${entry.uid}:${entry.gid} was sent`, { path });
  if (entry.type === 'file' && s.size !== entry.size) {
    throw new BundleError('BUNDLE_HASH_MISMATCH', `${path} at the destination has ${s.size} bytes, ${entry.size} were sent`, { details: { at: 'destination', path } });
  }
  if (entry.type === 'symlink' && s.size !== Buffer.byteLength(entry.linkTarget ?? '')) throw differs(`${path} does not link to what was sent`, { path });
  if ((entry.type === 'file' || entry.type === 'fifo' || (entry.type === 'directory' && !entry.implicit)) && s.mtime !== entry.mtime) {
    throw differs(`${path} has mtime ${s.mtime}, ${entry.mtime} was sent`, { path });
  }
}

function compareHashes(files: readonly SanitizedEntry[], hashLines: readonly string[]): void {
  if (hashLines.length !== files.length) throw differs(`${hashLines.length} of the ${files.length} files sent could be hashed`, { expected: files.length, found: hashLines.length });
  files.forEach((file, i) => {
    const hash = /^\\?([0-9a-f]{64})/.exec(hashLines[i] as string)?.[1];
    if (hash !== file.sha256) {
      throw new BundleError('BUNDLE_HASH_MISMATCH', `${file.path} at the destination does not match its manifest SHA-256`, { details: { at: 'destination', path: file.path, expected: file.sha256, actual: hash } });
    }
  });
}

function compareSymlinks(symlinks: readonly SanitizedEntry[], linkText: string): void {
  const expectedLinks = symlinks.map((e) => `${e.linkTarget ?? ''}\n`).join('');
  if (linkText !== expectedLinks) {
    // Split by the sizes stat reported to name the first that differs.
    let at = 0;
    const bytes = Buffer.from(linkText);
    for (const link of symlinks) {
      const size = Buffer.byteLength(link.linkTarget ?? '');
      const got = bytes.subarray(at, at + size).toString();
      if (got !== link.linkTarget) throw differs(`${link.path} links to "${got}", "${String(link.linkTarget)}" was sent`, { path: link.path });
      at += size + 1;
    }
    throw differs('the symlink targets differ from what was sent');
  }
}

/** Options of {@link receiveWithPosixReceiver}: those of the Node receiver's `receiveWithReceiver` that apply. */
export interface ReceiveWithPosixOptions extends ReceiveOptions {
  allowDevices?: boolean;
  setuid?: 'reject' | 'strip' | 'allow';
  /** Called with the bundle bytes read so far. */
  onBytes?: (bytes: number) => void;
}

/**
 * The deployers' receive step with the POSIX receiver: the same signature and result as the Node
 * receiver's `receiveWithReceiver`, into `<stagingDir>/root`. Refuses what it cannot do (a pre-copy
 * delta round, dedup from host files, device nodes) with `RECEIVE_FAILED` before any byte is
 * sent; bundle errors keep their code (a cut stream, `BUNDLE_TRUNCATED`, is retryable).
 */
export function receiveWithPosixReceiver(
  context: DeployContext,
  preflight: { stagingDir: string },
  bundle: Readable,
  options: ReceiveWithPosixOptions = {},
): ResultAsync<StagedBundle, ApMigrateError> {
  const unsupported = options.round === 'delta' ? 'a pre-copy delta round (it takes no seeded entries)' : options.hostSeeds ? 'dedup from host files (it takes no seeded entries)' : options.allowDevices ? 'device nodes' : undefined;
  if (unsupported) {
    bundle.destroy();
    return errAsync(new DeployError('RECEIVE_FAILED', `The POSIX receiver (no Node.js at ${context.transport.description}) cannot do ${unsupported}`));
  }
  let bytes = 0;
  if (options.onBytes) {
    const onBytes = options.onBytes;
    bundle.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      onBytes(bytes);
    });
    bundle.pause();
  }
  const target = posix.join(preflight.stagingDir, 'root');
  const signalOpt = context.signal ? { signal: context.signal } : {};
  const clear: ResultAsync<unknown, ApMigrateError> =
    (options.attempt ?? 1) > 1 ? runScript(context.transport, 'rm -rf -- "$1" "$1.incoming"', [target], { cwd: '/', ...signalOpt }) : okAsync(undefined);
  return clear
    .andThen(() =>
      receivePosix(context.transport, bundle, target, {
        ...signalOpt,
        ...(options.setuid ? { setuid: options.setuid } : {}),
        ...(options.compression ? { compression: options.compression } : {}),
        ...(options.bandwidthLimit !== undefined ? { bandwidthLimit: options.bandwidthLimit } : {}),
      }),
    )
    .map((report): StagedBundle => ({ stagingDir: preflight.stagingDir, bytesReceived: report.bytesRead, entriesVerified: report.manifest?.entries.length ?? 0, seededBytes: 0 }))
    .mapErr((e) => {
      if (!BundleError.isInstance(e)) return e;
      return new DeployError(e.code, `The destination rejected the bundle: ${e.message}`, { isRetryable: e.code === 'BUNDLE_TRUNCATED', cause: e, details: e.details });
    });
}
