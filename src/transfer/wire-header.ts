/**
 * The wire header: one line before the bundle's bytes that names their codec, so the receiver can
 * be started before the codec is chosen (its start-up then overlaps the link sample, instead of
 * leaving the link idle after it; decision 0203, fifth amendment). The receiver reads the line and
 * decodes the rest itself: `none` as it is, `zstd` and `gzip` through the destination's own
 * decompressor, with the failure rules of the shell wrapper ({@link DECOMPRESSOR_FAILED_STATUS}).
 *
 * Small and free of the SDK's other modules: the receiver bundles it.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { PassThrough, type Readable } from 'node:stream';

/** Exit status of a destination command whose decompressor (not the command) failed. */
export const DECOMPRESSOR_FAILED_STATUS = 125;

/** Start of the stderr line printed when the decompressor failed. */
export const DECOMPRESSOR_FAILED_LINE = 'ap-migrate: the decompressor';

/** The codecs a header may name. */
export type HeaderCodec = 'none' | 'zstd' | 'gzip';

const PREFIX = 'ap-migrate-wire ';
/** Longest header line read (the prefix and the longest codec name fit well within it). */
const MAX_HEADER_BYTES = 64;

/** The destination's decompressor of each codec, as argv (fixed: never built from input). */
const DECODER_ARGV: Record<'zstd' | 'gzip', readonly string[]> = { zstd: ['zstd', '-dcq'], gzip: ['gzip', '-dc'] };

/** The header line for `codec`. */
export function wireHeader(codec: HeaderCodec): Buffer {
  return Buffer.from(`${PREFIX}${codec}\n`, 'latin1');
}

/**
 * Read the header line from `input` and leave the stream just after it (the rest is unshifted).
 * The codec, or why there is none: the input ended first (`ended`), or its first line is no header.
 */
export function readWireHeader(input: Readable): Promise<{ codec: HeaderCodec } | { problem: string; ended?: true }> {
  return new Promise((resolve) => {
    let got: Buffer = Buffer.alloc(0);
    const done = (answer: { codec: HeaderCodec } | { problem: string; ended?: true }) => {
      input.off('readable', onReadable);
      input.off('end', onEnd);
      input.off('error', onError);
      resolve(answer);
    };
    const onEnd = () => done({ problem: 'the input ended before its wire header', ended: true });
    const onError = (e: Error) => done({ problem: `the input failed before its wire header: ${e.message}` });
    const onReadable = () => {
      for (let chunk: Buffer | null = input.read(); chunk !== null; chunk = input.read()) {
        got = got.length ? Buffer.concat([got, chunk]) : chunk;
        const newline = got.indexOf(0x0a);
        if (newline < 0 && got.length <= MAX_HEADER_BYTES) continue;
        if (newline < 0 || newline > MAX_HEADER_BYTES) return done({ problem: 'the input does not start with a wire header' });
        const rest = got.subarray(newline + 1);
        input.off('readable', onReadable);
        if (rest.length) input.unshift(rest);
        return done(codecOf(got.subarray(0, newline).toString('latin1')));
      }
    };
    input.on('readable', onReadable);
    input.on('end', onEnd);
    input.on('error', onError);
  });
}

function codecOf(line: string): { codec: HeaderCodec } | { problem: string } {
  const codec = line.startsWith(PREFIX) ? line.slice(PREFIX.length) : undefined;
  if (codec === 'none' || codec === 'zstd' || codec === 'gzip') return { codec };
  return { problem: `unknown wire header "${line.slice(0, 40).replace(/[^\x20-\x7e]/g, '?')}"` };
}

/** A decoded input, and how its decoder ended. */
export interface DecodedInput {
  /** The bundle's own bytes. */
  stream: Readable;
  /**
   * Once the consumer is done (`consumed`: it read the bundle to its end and succeeded): the
   * decoder's failure line, or undefined. A consumer that succeeded lets the decoder check the
   * stream to its end; one that failed stops it, and then only a decoder that had failed on its
   * own is reported (its failure explains the consumer's).
   */
  settle(consumed: boolean): Promise<string | undefined>;
}

/** The bytes after the header, decoded by `codec`'s decompressor (`none`: as they are). */
export function decodeWireInput(input: Readable, codec: HeaderCodec): DecodedInput {
  if (codec === 'none') return { stream: input, settle: async () => undefined };
  const [command, ...args] = DECODER_ARGV[codec];
  const child = spawn(command!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  let stoppedByUs = false;
  let spawnError: string | undefined;
  child.stderr.on('data', (chunk: Buffer) => void (stderr = (stderr + chunk.toString('utf8')).slice(-2000)));
  // A decoder that died makes writes to it fail (EPIPE): its exit status says why.
  child.stdin.on('error', () => undefined);
  child.on('error', (e) => void (spawnError = e.message));
  input.pipe(child.stdin);
  // The consumer sees the end only once the decoder's status is settled (as the shell wrapper's
  // FIFO does): a decoder that failed on a cut stream has exited by the time the consumer fails.
  const output = new PassThrough();
  child.stdout.pipe(output, { end: false });
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      output.end();
      resolve(code);
    }),
  );
  const name = `${command} ${args.join(' ')}`;
  return {
    stream: output,
    async settle(consumed) {
      if (consumed) output.resume();
      else {
        // The sender must not wait for a reader that is gone.
        input.unpipe(child.stdin);
        input.destroy();
        if (child.exitCode === null) {
          stoppedByUs = true;
          child.kill('SIGTERM');
        }
      }
      const code = await exited;
      if (spawnError) return `${DECOMPRESSOR_FAILED_LINE} (${name}) could not start: ${spawnError}`;
      if (code === 0 || (stoppedByUs && code === null)) return undefined;
      const why = stderr.trim().split('\n').pop() ?? '';
      return `${DECOMPRESSOR_FAILED_LINE} (${name}) failed with status ${String(code)}: the compressed stream is corrupt or truncated${why ? ` (${why})` : ''}`;
    },
  };
}
