/**
 * `upload` and `readFile` for transports that only run commands (ssh2, OpenSSH): both are one
 * remote command fed or read as a stream, so they work on any POSIX destination without SFTP.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ReadFileOptions, UploadOptions, UploadResult } from '../spec/transport.js';
import { asTransportError, TransportError } from './errors.js';
import { resolveRemotePath } from './remote-command.js';
import type { RawExec, RawResult } from './run-process.js';

export type { RawExec } from './run-process.js';

/** Default cap for {@link readFileViaExec}. */
export const DEFAULT_MAX_READ = 16 * 1024 * 1024;

// Exit codes our small scripts use to say what went wrong.
const NOT_A_FILE = 66;

/** argv that writes stdin to `temp` (mode 0600 from the umask); exported for the quoting tests. */
export function uploadWriteArgv(temp: string): string[] {
  return ['/bin/sh', '-c', 'umask 077 && exec cat > "$1"', 'sh', temp];
}

/** argv that checks `temp` holds `bytes` bytes, then chmods it and renames it to `path`. */
export function uploadPublishArgv(temp: string, path: string, mode: string, bytes: number): string[] {
  const publish = '[ "$(wc -c < "$1")" -eq "$4" ] || { echo "size differs from the $4 bytes sent" >&2; exit 65; }; chmod "$3" "$1" && mv -f -- "$1" "$2"';
  return ['/bin/sh', '-c', publish, 'sh', temp, path, mode, String(bytes)];
}

/** argv that prints at most `limit` bytes of `path`, exit 66 when it is not a regular file. */
export function readFileArgv(path: string, limit: number): string[] {
  return ['/bin/sh', '-c', `[ -f "$1" ] || exit ${NOT_A_FILE}; exec head -c "$2" -- "$1"`, 'sh', path, String(limit)];
}

/**
 * Write `source` to a temp name beside `path`, then (a second command, only after every byte
 * arrived and the size checks out) chmod and rename it: a reader never sees a half file, and an
 * abort or a cut connection, which hands the remote `cat` an EOF, never publishes one.
 */
export async function uploadViaExec(exec: RawExec, source: Readable, path: string, options: UploadOptions = {}): Promise<UploadResult> {
  const mode = (options.mode ?? 0o600).toString(8);
  const temp = `${path}.ap-migrate-part-${randomBytes(6).toString('hex')}`;
  let bytes = 0;
  const removeTemp = () => exec(['rm', '-f', '--', temp], {}).catch(() => undefined);
  const failed = (raw: RawResult, what: string) =>
    new TransportError('UPLOAD_FAILED', `Cannot ${what} ${path}: ${raw.stderr.toString('utf8').trim() || `exit ${raw.code ?? raw.signal}`}`, {
      details: { path },
    });
  try {
    const written = await exec(uploadWriteArgv(temp), {
      stdin: source,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      onProgress: (p) => {
        bytes = p.bytes;
        options.onProgress?.({ operation: 'upload', bytes: p.bytes });
      },
    });
    if (written.code !== 0) throw failed(written, 'write');
    const published = await exec(uploadPublishArgv(temp, path, mode, bytes), {});
    if (published.code !== 0) throw failed(published, 'publish');
  } catch (error) {
    await removeTemp();
    throw error;
  }
  return { remotePath: path, bytes };
}

/** Read at most `maxBytes` of `path`; more is `FILE_TOO_LARGE`, missing is `FILE_NOT_FOUND`. */
export async function readFileViaExec(exec: RawExec, path: string, options: ReadFileOptions = {}): Promise<Buffer> {
  const max = options.maxBytes ?? DEFAULT_MAX_READ;
  const raw = await exec(readFileArgv(path, max + 1), {
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    // One byte more than allowed tells "too large" apart from "exactly max".
    maxOutputBytes: max + 1,
  });
  if (raw.code === NOT_A_FILE) throw new TransportError('FILE_NOT_FOUND', `${path} does not exist or is not a regular file`, { details: { path } });
  if (raw.code !== 0) {
    throw new TransportError('EXEC_FAILED', `Cannot read ${path}: ${raw.stderr.toString('utf8').trim() || `exit ${raw.code ?? raw.signal}`}`, {
      details: { path },
    });
  }
  if (raw.stdout.length > max) throw new TransportError('FILE_TOO_LARGE', `${path} is larger than ${max} bytes`, { details: { path, maxBytes: max } });
  return raw.stdout;
}

/** `upload` and `readFile` of a command-only transport, as {@link Transport} methods. */
export interface CommandFileMethods {
  upload(source: Readable, path: string, options?: UploadOptions): ResultAsync<UploadResult, ApMigrateError>;
  readFile(path: string, options?: ReadFileOptions): ResultAsync<Buffer, ApMigrateError>;
}

/**
 * The `upload` and `readFile` methods of a transport that only runs commands, with relative
 * paths resolved against `root`. `readExec` may differ from `uploadExec` (OpenSSH does not track
 * a read's PID: a read never leaves a half-written file behind).
 */
export function commandFileMethods(root: string, uploadExec: RawExec, readExec: RawExec = uploadExec): CommandFileMethods {
  return {
    upload: (source, path, options = {}) =>
      ResultAsync.fromPromise(uploadViaExec(uploadExec, source, resolveRemotePath(root, path), options), (e) => asTransportError(e, 'UPLOAD_FAILED')),
    readFile: (path, options = {}) => ResultAsync.fromPromise(readFileViaExec(readExec, resolveRemotePath(root, path), options), (e) => asTransportError(e)),
  };
}
