/**
 * Compression on the wire, negotiated with what both ends have (decision 0203, docs/compression.md).
 *
 * The bundle is one tar stream: {@link compressStream} compresses it here (zstd with the local
 * `zstd`, gzip with `node:zlib`), and {@link decompressingArgv} wraps the destination command
 * (the receiver) so that it reads the decompressed stream on its stdin and the whole command fails,
 * with a stderr line naming the decompressor, when the compressed stream is corrupt or truncated.
 * {@link chooseCodec} picks the codec from what both ends have and, given a measured link
 * ({@link measureLinkThroughput}), turns compression off where it would slow the transfer.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { PassThrough, Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gzip as gzipCallback } from 'node:zlib';
import { err, errAsync, ok, okAsync, ResultAsync, type Result } from 'neverthrow';
import { ApMigrateError, InvalidInputError, type InputIssue } from '../errors.js';
import { DeployError } from '../destination/deploy-error.js';
import { createLocalExecutor, ExecError } from '../exec/local.js';
import type { ExecResult } from '../spec/executor.js';
import type { Transport } from '../spec/transport.js';
import { describeArgv } from '../transports/quote.js';
import { collectBounded } from '../transports/run-process.js';
import { errorMessage } from '../transports/errors.js';

/** A codec the bundle can travel in. */
export type WireCodec = 'zstd' | 'gzip' | 'none';
/** What the caller asks for: a codec, or `auto` (the best both ends have, none where it would not pay). */
export type CompressionRequest = 'auto' | WireCodec;

/** Which codecs one host can use. */
export interface HostCodecs {
  zstd: boolean;
  gzip: boolean;
}

/** Runs argv on one host (an `Executor`'s or a `Transport`'s `exec`, narrowed). */
export type CommandRunner = (argv: string[]) => ResultAsync<{ stdout: string }, ApMigrateError>;

/** Default compression level of each codec (decision 0203: chosen by measurement on a 2-core machine). */
export const DEFAULT_LEVEL = { zstd: 1, gzip: 1 } as const;

/**
 * Below this measured link speed (bytes/s) {@link chooseCodec} picks zstd level 3: it sends 7-35%
 * fewer bytes than level 1 and, at about half a core on the least compressible data measured, still
 * outruns the link. Above it, level 3's cost would make the compressor the bottleneck.
 */
export const ZSTD_LEVEL_3_BELOW_BYTES_PER_SECOND = 25e6;

/**
 * Input throughput (bytes/s) of each codec's compressor at its default level that {@link chooseCodec}
 * assumes when the caller has no measurement of its own: one core's worth on the least compressible
 * data measured (machine code), Node's side included, on a 2-core machine (decision 0203). The
 * other core is left to the packer, the hashing and the SSH cipher.
 */
export const DEFAULT_COMPRESSOR_BYTES_PER_SECOND = { zstd: 90e6, gzip: 60e6 } as const;

/** Exit status of the {@link decompressingArgv} wrapper when the decompressor (not the command) failed. */
export const DECOMPRESSOR_FAILED_STATUS = 125;

/** Start of the stderr line the wrapper prints when the decompressor failed. */
export const DECOMPRESSOR_FAILED_LINE = 'ap-migrate: the decompressor';

/** The destination's decompressor of each codec (fixed text: never built from input). */
const DECOMPRESSOR: Record<'zstd' | 'gzip', string> = { zstd: 'zstd -dcq', gzip: 'gzip -dc' };

// ---------------------------------------------------------------------------------------------
// Probing

/**
 * Tool names are positional parameters, never script text. Prints the ones on PATH, one a line;
 * always exits 0 (a missing tool is an answer, not a failure).
 */
const PROBE_SCRIPT = 'for t in "$@"; do command -v "$t" >/dev/null 2>&1 && echo "$t"; done; exit 0';

/**
 * Which of zstd and gzip a host has, with one `sh -c` probe run by `run`. A codec counts only
 * when `mkfifo` and `mktemp` are there too: the destination's wrapper ({@link decompressingArgv})
 * needs them. Over a transport: `probeCodecs((argv) => transport.exec(argv))`.
 */
export function probeCodecs(run: CommandRunner): ResultAsync<HostCodecs, ApMigrateError> {
  return run(['sh', '-c', PROBE_SCRIPT, 'ap-migrate-probe', 'zstd', 'gzip', 'mkfifo', 'mktemp']).map(({ stdout }) => {
    const found = new Set(stdout.split('\n').map((line) => line.trim()));
    const wrapper = found.has('mkfifo') && found.has('mktemp');
    return { zstd: wrapper && found.has('zstd'), gzip: wrapper && found.has('gzip') };
  });
}

/**
 * What this machine can compress with, for {@link chooseCodec}'s `sourceHas`: the same probe run
 * here, and gzip always (it is `node:zlib`, no tool needed).
 */
export function localCompressors(): ResultAsync<HostCodecs, ApMigrateError> {
  const local = createLocalExecutor();
  return probeCodecs((argv) => local.exec(argv)).map((has) => ({ ...has, gzip: true }));
}

// ---------------------------------------------------------------------------------------------
// Choosing

/** What {@link chooseCodec} decides from. */
export interface CodecChoiceInput {
  requested: CompressionRequest;
  /** What this machine can compress with ({@link localCompressors}). */
  sourceHas: HostCodecs;
  /** What the destination can decompress with ({@link probeCodecs} over its transport). */
  destinationHas: HostCodecs;
  /** Measured link throughput ({@link measureLinkThroughput}); without it, `auto` always compresses. */
  linkBytesPerSecond?: number;
  /**
   * Input throughput of the compressor `auto` would pick, if measured; default
   * {@link DEFAULT_COMPRESSOR_BYTES_PER_SECOND} of that codec.
   */
  compressorBytesPerSecond?: number;
}

/** The codec to use, its level, and why, in words (for the report). */
export interface CodecChoice {
  codec: WireCodec;
  /** Level for {@link compressStream}; absent for `none`. */
  level?: number;
  reason: string;
}

/** Problems with a {@link CodecChoiceInput}, each naming its field. */
function choiceIssues(input: CodecChoiceInput): InputIssue[] {
  const issues: InputIssue[] = [];
  if (!['auto', 'zstd', 'gzip', 'none'].includes(input.requested as string)) {
    issues.push({ path: 'requested', message: `must be auto, zstd, gzip or none, got ${JSON.stringify(input.requested)}` });
  }
  for (const side of ['sourceHas', 'destinationHas'] as const) {
    const has = input[side] as unknown as Record<string, unknown> | undefined;
    if (typeof has?.zstd !== 'boolean' || typeof has.gzip !== 'boolean') issues.push({ path: side, message: 'must be { zstd: boolean, gzip: boolean }' });
  }
  for (const field of ['linkBytesPerSecond', 'compressorBytesPerSecond'] as const) {
    const value = input[field];
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value > 0)) {
      issues.push({ path: field, message: 'must be a positive finite number of bytes per second' });
    }
  }
  return issues;
}

const mbps = (bytesPerSecond: number): string => `${Number((bytesPerSecond / 1e6).toFixed(bytesPerSecond < 100e6 ? 1 : 0))} MB/s`;

/**
 * Pick the codec. An explicit codec needs its tool on both ends (else `TOOL_MISSING`, naming the
 * side that lacks it) and is used whatever the link. `auto` picks zstd when both ends have it,
 * else gzip, else none; and none when the measured link is at least as fast as that compressor,
 * since the stream would then wait for the compressor rather than for the link. Pure.
 */
export function chooseCodec(input: CodecChoiceInput): Result<CodecChoice, InvalidInputError | DeployError> {
  const issues = choiceIssues(input);
  if (issues.length > 0) return err(new InvalidInputError('compression choice', issues));
  const { requested, sourceHas, destinationHas } = input;
  if (requested === 'none') return ok({ codec: 'none', reason: 'compression was turned off' });
  if (requested !== 'auto') {
    const lacking = [...(sourceHas[requested] ? [] : ['source']), ...(destinationHas[requested] ? [] : ['destination'])];
    if (lacking.length > 0) {
      const message = `Compression with ${requested} was requested, but the ${lacking.join(' and the ')} lack${lacking.length > 1 ? '' : 's'} ${requested}`;
      return err(new DeployError('TOOL_MISSING', message, { details: { codec: requested, missing: [requested], sides: lacking } }));
    }
    return ok(withLevel(requested, input.linkBytesPerSecond, `${requested} was requested and both ends have it`));
  }
  const codec = (['zstd', 'gzip'] as const).find((c) => sourceHas[c] && destinationHas[c]);
  if (!codec) return ok({ codec: 'none', reason: 'no codec both ends have (zstd or gzip)' });
  const found = codec === 'zstd' ? 'both ends have zstd' : `both ends have gzip${sourceHas.zstd || destinationHas.zstd ? `, only the ${sourceHas.zstd ? 'source' : 'destination'} has zstd` : ''}`;
  const link = input.linkBytesPerSecond;
  const compressor = input.compressorBytesPerSecond ?? DEFAULT_COMPRESSOR_BYTES_PER_SECOND[codec];
  if (link !== undefined && link >= compressor) {
    return ok({ codec: 'none', reason: `${found}, but the link (${mbps(link)}) is at least as fast as the ${codec} compressor (${mbps(compressor)}): compressing would slow the transfer` });
  }
  const versus = link !== undefined ? `, faster than the link (${mbps(link)})` : '';
  return ok(withLevel(codec, link, `${found}; its compressor (${mbps(compressor)})${versus}`));
}

/** The choice of `codec` with its level for this link, the level's reason appended. */
function withLevel(codec: 'zstd' | 'gzip', link: number | undefined, reason: string): CodecChoice {
  if (codec === 'zstd' && link !== undefined && link < ZSTD_LEVEL_3_BELOW_BYTES_PER_SECOND) {
    return { codec, level: 3, reason: `${reason}; level 3: the link is under ${mbps(ZSTD_LEVEL_3_BELOW_BYTES_PER_SECOND)}, where the stronger level costs no time` };
  }
  return { codec, level: DEFAULT_LEVEL[codec], reason: `${reason}; level ${DEFAULT_LEVEL[codec]}` };
}

// ---------------------------------------------------------------------------------------------
// Measuring the link

/** Default size of the {@link measureLinkThroughput} sample: 8 MiB. */
export const LINK_SAMPLE_BYTES = 8 * 1024 * 1024;

/** `bytes` of incompressible data (one random MiB, repeated: farther apart than any window). */
function randomish(bytes: number): Readable {
  const block = randomBytes(Math.min(bytes, 1024 * 1024));
  const chunks: Buffer[] = [];
  for (let at = 0; at < bytes; at += block.length) chunks.push(block.subarray(0, Math.min(block.length, bytes - at)));
  return Readable.from(chunks, { objectMode: false });
}

/**
 * A first sample is believed only when its transfer took at least this long on top of the
 * command's start-up, and at least twice that start-up: below, the time between two remote
 * commands (tens of ms, and ~100 ms through a slow proxy) is most of what it measures.
 */
export const LINK_SAMPLE_ENOUGH_MS = 250;

/** The second sample is sized to take about this long at the speed the first one showed. */
const SECOND_SAMPLE_MS = 600;

/**
 * Bytes of the second link sample: what takes about 600 ms at the speed the first sample
 * (`first` bytes in `firstNetMs`) showed, at least `first`, at most `max`. Pure.
 */
export function secondLinkSample(first: number, firstNetMs: number, max: number): number {
  return Math.min(max, Math.max(first, Math.round((first / Math.max(firstNetMs, 0.001)) * SECOND_SAMPLE_MS)));
}

/** Options of {@link measureLinkThroughput}. */
export interface LinkMeasureOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  cwd?: string;
  /**
   * A first sample that reads below this (bytes/s) is the answer, however short it was: a short
   * sample reads a link slower than it is (start-up, TCP slow start), so a longer one could only
   * read it faster, and a caller whose choices all lie above this value would choose the same
   * either way unless the link is faster than it showed. {@link chooseCodec}'s lowest threshold
   * (25 MB/s, where zstd drops to level 3) is what `migrate()` passes.
   */
  enoughBelow?: number;
  /**
   * The samples wait for this to settle (the empty baseline command does not): the caller's own
   * commands that would otherwise share the link with the first sample and slow it down, such
   * as a pre-flight script whose answer queues behind the sample's bytes. Its outcome is ignored.
   */
  samplesAfter?: PromiseLike<unknown>;
}

/** Whether a first link sample's reading settles the question (see {@link LinkMeasureOptions.enoughBelow}). Pure. */
export function firstIsEnough(bytesPerSecond: number, enoughBelow: number | undefined): boolean {
  return enoughBelow !== undefined && bytesPerSecond < enoughBelow;
}

/**
 * The link's throughput (bytes/s) to where `transport` runs commands: the time of one
 * `cat >/dev/null` fed incompressible data, less the time of the same command fed nothing (the
 * command's start-up and round trips), which is run first. The first sample is an eighth of
 * `bytes`; when it took long enough to be believed (250 ms and twice the start-up) that is the
 * answer. Else a second sample is sent, sized to take about 600 ms at the speed the first showed
 * (which, start-up included, is below the link's), at most `bytes`: a slow link (10 Mbit/s: 0.8 s
 * for the first sample, 6.7 s for the full one) pays only the first, a 100 Mbit/s one about 0.5 s
 * more (not the whole 8 MiB), a fast one the whole sample, which costs it little. With
 * `enoughBelow`, a first sample that reads slower than that is the answer (no second sample). Any transport.
 */
export function measureLinkThroughput(
  transport: Pick<Transport, 'exec'>,
  bytes: number = LINK_SAMPLE_BYTES,
  options: LinkMeasureOptions = {},
): ResultAsync<number, ApMigrateError> {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    return errAsync(new InvalidInputError('link measurement', [{ path: 'bytes', message: 'must be a positive integer' }]));
  }
  const argv = ['sh', '-c', 'cat >/dev/null'];
  const timed = (n: number): ResultAsync<number, ApMigrateError> => {
    const started = performance.now();
    return transport.exec(argv, { ...options, stdin: n > 0 ? randomish(n) : '' }).map(() => performance.now() - started);
  };
  // Subtract at most half: the baseline is start-up latency, never most of a real sample.
  const netMs = (elapsedMs: number, baselineMs: number) => Math.max(elapsedMs - baselineMs, elapsedMs / 2, 0.001);
  const first = Math.max(1, Math.floor(bytes / 8));
  const waited = (): ResultAsync<void, ApMigrateError> => {
    const after = options.samplesAfter;
    if (!after) return okAsync(undefined);
    return ResultAsync.fromSafePromise(Promise.resolve(after).then(() => undefined, () => undefined));
  };
  return timed(0).andThen((baselineMs) =>
    waited().andThen(() => timed(first)).andThen((firstMs) => {
      const ms = netMs(firstMs, baselineMs);
      const speed = first / (ms / 1000);
      if ((ms >= LINK_SAMPLE_ENOUGH_MS && ms >= 2 * baselineMs) || first === bytes || firstIsEnough(speed, options.enoughBelow)) return okAsync(speed);
      const second = secondLinkSample(first, ms, bytes);
      return timed(second).map((elapsedMs) => second / (netMs(elapsedMs, baselineMs) / 1000));
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Compressing

/** Options for {@link compressStream}. */
export interface CompressOptions {
  /** zstd 1-19, gzip 1-9 (default {@link DEFAULT_LEVEL}). */
  level?: number;
  /** Abort: the output is destroyed with `ABORTED`, the compressor stopped, the input destroyed. */
  signal?: AbortSignal;
}

/** Why a level is refused, or undefined. */
function levelIssue(codec: 'zstd' | 'gzip', level: number): InputIssue | undefined {
  const max = codec === 'zstd' ? 19 : 9;
  return Number.isInteger(level) && level >= 1 && level <= max ? undefined : { path: 'level', message: `${codec} levels are 1 to ${max}, got ${String(level)}` };
}

/** A stream that fails at once with `error` (the input is released: nobody will read it). */
function failedStream(input: Readable, error: ApMigrateError): Readable {
  input.destroy();
  const output = new PassThrough();
  output.destroy(error);
  return output;
}

/** The input's own error when it is the SDK's, else one saying reading it failed. */
function inputFailure(cause: unknown): ApMigrateError {
  if (ApMigrateError.isInstance(cause)) return cause;
  return new ExecError('EXEC_FAILED', `Reading the data to compress failed: ${errorMessage(cause)}`, { cause });
}

/**
 * The compressed bytes of `input` as a Readable. `zstd` runs the local `zstd -c -q -T0 -<level>`;
 * `gzip` uses `node:zlib` (no tool, several cores); `none` returns `input` itself. A failure
 * (the compressor cannot start or exits non-zero, the input fails, the signal fires) destroys the
 * output with a typed error and never ends it cleanly; destroying the output stops the compressor
 * (the child is killed) and destroys the input. The output owns the input from now on.
 */
export function compressStream(input: Readable, codec: WireCodec, options: CompressOptions = {}): Readable {
  if (codec === 'none') return input;
  if (codec !== 'zstd' && codec !== 'gzip') {
    return failedStream(input, new InvalidInputError('compression', [{ path: 'codec', message: `must be zstd, gzip or none, got ${JSON.stringify(codec)}` }]));
  }
  const level = options.level ?? DEFAULT_LEVEL[codec];
  const issue = levelIssue(codec, level);
  if (issue) return failedStream(input, new InvalidInputError('compression options', [issue]));
  if (options.signal?.aborted) return failedStream(input, new ExecError('ABORTED', `Aborted before compressing with ${codec}`));
  return codec === 'zstd' ? zstdStream(input, level, options.signal) : gzipStream(input, level, options.signal);
}

/** The local `zstd` as a stream; see {@link compressStream}. */
function zstdStream(input: Readable, level: number, signal: AbortSignal | undefined): Readable {
  const argv = ['zstd', '-c', '-q', '-T0', `-${level}`];
  const shown = describeArgv(argv);
  const output = new PassThrough({ highWaterMark: 1024 * 1024 });
  const child = spawn('zstd', argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr = collectBounded(child.stderr, 64 * 1024, () => undefined);
  let settled = false;
  const stop = (): void => {
    signal?.removeEventListener('abort', onAbort);
    input.unpipe(child.stdin);
    if (!input.destroyed) input.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const fail = (error: ApMigrateError): void => {
    if (settled) return;
    settled = true;
    stop();
    output.destroy(error);
  };
  const onAbort = (): void => fail(new ExecError('ABORTED', `Aborted: ${shown}`));
  signal?.addEventListener('abort', onAbort, { once: true });
  child.on('error', (cause) => fail(new ExecError('EXEC_FAILED', `Cannot run ${shown}: ${cause.message}`, { cause })));
  // Ends only once the exit status is known to be 0: a truncated output never looks complete.
  child.once('close', (code, signalName) => {
    if (settled) return;
    if (code !== 0) {
      const text = stderr().toString('utf8').trim().slice(0, 500);
      return fail(new ExecError('EXEC_NONZERO', `${shown} exited with ${code ?? signalName}${text ? `: ${text}` : ''}`, { details: { argv, code, signal: signalName, stderr: text } }));
    }
    settled = true;
    signal?.removeEventListener('abort', onAbort);
    output.end();
  });
  // The consumer gave up: stop the child and release the input.
  output.once('close', () => {
    if (!settled) {
      settled = true;
      stop();
    }
  });
  child.stdin.on('error', () => {}); // zstd that died closes its stdin: its exit status speaks
  child.stdout.pipe(output, { end: false });
  input.on('error', (cause) => fail(inputFailure(cause)));
  input.pipe(child.stdin);
  return output;
}

/** gzip's input is cut into blocks of this size, each its own gzip member (decision 0203). */
export const GZIP_BLOCK_BYTES = 1024 * 1024;

/**
 * Whether a block looks incompressible: the order-0 entropy of 8192 bytes sampled evenly across it
 * is above 7.96 bits a byte. Random, encrypted and already-compressed data measure 7.97-7.98 with
 * this sample; text 4-5, machine code 5.5-7.3; blocks mixing both below 7.96 (decision 0203).
 * Such a block is stored (gzip level 0) instead of being searched for matches in vain.
 */
export function looksIncompressible(block: Uint8Array): boolean {
  const samples = 8192;
  if (block.length < samples) return false;
  const step = Math.floor(block.length / samples);
  const counts = new Uint32Array(256);
  for (let n = 0, i = 0; n < samples; n++, i += step) counts[block[i] as number]! += 1;
  let bits = 0;
  for (const count of counts) {
    if (count > 0) bits -= (count / samples) * Math.log2(count / samples);
  }
  return bits > 7.96;
}

/** `input` re-cut into blocks of at least `size` bytes (the last one may be smaller). */
async function* blocksOf(input: AsyncIterable<Buffer | string>, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let length = 0;
  for await (const chunk of input) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    pending.push(bytes);
    length += bytes.length;
    if (length >= size) {
      yield pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, length);
      pending = [];
      length = 0;
    }
  }
  if (length > 0) yield Buffer.concat(pending, length);
}

const gzipAsync = promisify(gzipCallback);

/**
 * gzip with `node:zlib`: each block its own gzip member (`gzip -d` reads concatenated members),
 * compressed on libuv's thread pool, as many at once as there are cores but at most 3 (the pool has
 * 4 threads by default: one stays free for the packer's file reads), yielded in order.
 */
async function* gzipMembers(input: Readable, level: number): AsyncGenerator<Buffer> {
  const parallel = Math.max(1, Math.min(availableParallelism(), 3));
  const inflight: Promise<Buffer>[] = [];
  try {
    for await (const block of blocksOf(input, GZIP_BLOCK_BYTES)) {
      // 128 KiB output chunks: zlib's default 16 KiB makes allocation, not deflate, the cost (decision 0203).
      const member = gzipAsync(block, { level: looksIncompressible(block) ? 0 : level, chunkSize: 128 * 1024 });
      member.catch(() => undefined); // awaited below, in order; never an unhandled rejection
      inflight.push(member);
      if (inflight.length >= parallel) yield await (inflight.shift() as Promise<Buffer>);
    }
    while (inflight.length > 0) yield await (inflight.shift() as Promise<Buffer>);
  } catch (error) {
    if (input.errored) throw inputFailure(input.errored);
    throw new ExecError('EXEC_FAILED', `gzip compression failed: ${errorMessage(error)}`, { cause: error });
  } finally {
    if (!input.destroyed) input.destroy();
  }
}

/**
 * {@link gzipMembers} as a Readable that pulls a member only when the consumer wants more.
 * Destroying it (the consumer, or the signal with `ABORTED`) destroys the input at once.
 */
function gzipStream(input: Readable, level: number, signal: AbortSignal | undefined): Readable {
  const members = gzipMembers(input, level);
  input.on('error', () => {}); // seen by gzipMembers' iteration; never an unhandled 'error' after it
  let pulling = false;
  const onAbort = (): void => {
    output.destroy(new ExecError('ABORTED', 'Aborted: gzip compression'));
  };
  const pump = async (): Promise<void> => {
    try {
      for (;;) {
        const next = await members.next();
        if (output.destroyed) return;
        if (next.done) return void output.push(null);
        if (!output.push(next.value)) return;
      }
    } catch (error) {
      output.destroy(ApMigrateError.isInstance(error) ? error : inputFailure(error));
    } finally {
      pulling = false;
    }
  };
  const output: Readable = new Readable({
    highWaterMark: 1024 * 1024,
    read() {
      if (pulling) return;
      pulling = true;
      void pump();
    },
    destroy(error, callback) {
      signal?.removeEventListener('abort', onAbort);
      if (!input.destroyed) input.destroy();
      members.return(undefined).catch(() => undefined);
      callback(error);
    },
  });
  signal?.addEventListener('abort', onAbort, { once: true });
  return output;
}

// ---------------------------------------------------------------------------------------------
// Decompressing at the destination

/**
 * The wrapper, in POSIX sh (dash has no `pipefail`), with the command as "$@".
 * - The decompressor runs in a background group whose stdout is a FIFO; the command reads the FIFO.
 *   The group holds the FIFO open until the decompressor has exited, so the command sees the end
 *   of its input only once the decompressor's status is settled (the group's exit status).
 * - The shell itself holds a reader (fd 4): a command that exits early never makes the
 *   decompressor fail with a broken pipe, so a decompressor failure is always its own.
 * - Command failed: the shell stops the group (TERM: it kills the decompressor and exits 143) and
 *   the command's status is the answer, unless the group had already failed by itself.
 *   Command succeeded: the shell drains the rest, so the decompressor checks the stream to its end.
 * - A decompressor failure: a stderr line naming it, and status 125.
 * The FIFO's directory is removed as soon as both ends are open. `@DECOMPRESS@` is replaced by
 * a fixed command of {@link DECOMPRESSOR}, never by input.
 */
const WRAPPER_SCRIPT = [
  'd="@DECOMPRESS@"',
  '[ "$#" -gt 0 ] || { echo "ap-migrate: no command to run after $d" >&2; exit 125; }',
  't=$(mktemp -d "${TMPDIR:-/tmp}/ap-migrate-z.XXXXXX") || exit 125',
  'mkfifo "$t/f" || { rm -rf "$t"; exit 125; }',
  'exec 3<&0',
  '{',
  `  trap '[ -z "\${p-}" ] || kill "$p" 2>/dev/null; exit 143' TERM`,
  '  @DECOMPRESS@ <&3 3<&- &',
  '  p=$!',
  '  exec 3<&-',
  '  wait "$p"',
  '} >"$t/f" &',
  'z=$!',
  'exec 4<"$t/f" 3<&-',
  'rm -rf "$t"',
  '"$@" <&4 4<&-',
  'r=$?',
  'if [ "$r" -eq 0 ]; then cat <&4 >/dev/null; else kill "$z" 2>/dev/null; fi',
  'wait "$z"',
  's=$?',
  'exec 4<&-',
  '[ "$s" -eq 0 ] && exit "$r"',
  '[ "$r" -ne 0 ] && [ "$s" -eq 143 ] && exit "$r"',
  `echo "${DECOMPRESSOR_FAILED_LINE} ($d) failed with status $s (the command exited with $r): the compressed stream is corrupt or truncated" >&2`,
  `exit ${DECOMPRESSOR_FAILED_STATUS}`,
].join('\n');

/**
 * The destination command that decompresses its stdin (`codec`) and runs `argv` with the
 * decompressed stream on its stdin: `['sh', '-c', <wrapper>, 'ap-migrate-decompress', ...argv]`.
 * Every argv element is a positional parameter, never script text. Exit status: the command's;
 * or {@link DECOMPRESSOR_FAILED_STATUS} with a stderr line starting {@link DECOMPRESSOR_FAILED_LINE}
 * when the decompressor failed (corrupt, truncated or not that codec). `none` returns `argv`.
 */
export function decompressingArgv(codec: WireCodec, argv: readonly string[]): string[] {
  if (codec === 'none') return [...argv];
  const decompress = DECOMPRESSOR[codec];
  if (decompress === undefined) return ['sh', '-c', `echo "ap-migrate: unknown codec" >&2; exit ${DECOMPRESSOR_FAILED_STATUS}`];
  return ['sh', '-c', WRAPPER_SCRIPT.replaceAll('@DECOMPRESS@', decompress), 'ap-migrate-decompress', ...argv];
}

/**
 * The error for a {@link decompressingArgv} command whose decompressor failed (`RECEIVE_FAILED`,
 * the stderr line in the message), or undefined when it did not. Check it before reading the
 * command's own reply: the command saw a truncated stream and its complaint is only a consequence.
 */
export function decompressorFailure(codec: WireCodec, result: ExecResult, where = 'the destination'): DeployError | undefined {
  if (codec === 'none' || result.code !== DECOMPRESSOR_FAILED_STATUS) return undefined;
  const lines = result.stderr.split('\n').map((line) => line.trim()).filter(Boolean);
  const line = lines.find((l) => l.startsWith(DECOMPRESSOR_FAILED_LINE)) ?? lines.slice(-3).join(' / ');
  return new DeployError('RECEIVE_FAILED', `Decompressing the bundle (${codec}) at ${where} failed: ${line}`, {
    details: { codec, status: result.code, stderr: result.stderr.slice(-2000) },
  });
}
