/**
 * A bandwidth cap for any byte stream: {@link createThrottle} is a pass-through `Transform` that
 * lets bytes out no faster than a given average rate, so a migration over a shared link leaves
 * room for the link's other users.
 *
 * A token bucket: tokens accrue at the rate, up to `burstBytes`, and each byte out spends one.
 * Chunks go out in pieces of an eighth of the bucket, so no single write overshoots. With the
 * default bucket (1/25 s of the rate) the bytes out in any window of W seconds stay under
 * `rate * W + rate / 25`: within 4% of the cap over one second, and a timer firing up to 35 ms
 * late (a loaded machine) costs no throughput. Waits are timed from the clock, not from timer counts, so
 * late timers make the stream slower for a moment but never faster on average.
 *
 * @module
 */
import { Transform, type TransformCallback } from 'node:stream';
import { err, ok, type Result } from 'neverthrow';
import { z } from 'zod';
import { InvalidInputError } from '../errors.js';
import { issuesFromZod } from '../policy/validate.js';
import { TransportError } from '../transports/errors.js';

/** The lowest cap accepted, in bytes per second: below it a transfer of any real size never ends. */
export const MIN_BANDWIDTH_LIMIT = 1024;

/** A bandwidth limit in bytes per second: a finite number of at least {@link MIN_BANDWIDTH_LIMIT}. */
export const throttleSchema = z
  .number({ error: 'must be a number of bytes per second' })
  .finite('must be finite')
  .gte(MIN_BANDWIDTH_LIMIT, `must be at least ${MIN_BANDWIDTH_LIMIT} bytes per second`);

const throttleOptionsSchema = z
  .object({
    burstBytes: z.number().int('must be an integer').positive('must be positive').max(2 ** 31, 'must be at most 2 GiB').optional(),
    signal: z.instanceof(AbortSignal, { message: 'must be an AbortSignal' }).optional(),
  })
  .optional();

/** Options for {@link createThrottle}. */
export interface ThrottleOptions {
  /**
   * Most bytes let through at once after an idle spell (default: 1/25 s of the rate, at least
   * 1 KiB); pieces pushed are an eighth of it. Over a window of W seconds the stream may exceed
   * the rate by `burstBytes / W`.
   */
  burstBytes?: number;
  /** Aborting destroys the stream with a `TransportError` whose code is `ABORTED`. */
  signal?: AbortSignal;
}

/** Check a bandwidth limit (bytes per second) before handing it to {@link createThrottle}. */
export function checkBandwidthLimit(value: unknown): Result<number, InvalidInputError> {
  const parsed = throttleSchema.safeParse(value);
  return parsed.success ? ok(parsed.data) : err(new InvalidInputError('bandwidth limit', issuesFromZod(parsed.error)));
}

function checkThrottleArguments(bytesPerSecond: unknown, options: unknown): InvalidInputError | undefined {
  const rate = throttleSchema.safeParse(bytesPerSecond);
  if (!rate.success) return new InvalidInputError('bandwidth limit', issuesFromZod(rate.error));
  const opts = throttleOptionsSchema.safeParse(options);
  if (!opts.success) return new InvalidInputError('throttle options', issuesFromZod(opts.error));
  return undefined;
}

/** The token bucket itself, with no stream in it (the clock is injected for the stream's sake only). */
class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
    readonly capacity: number,
    private readonly now: () => number,
  ) {
    this.tokens = capacity;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) / 1000) * this.rate);
    this.last = t;
  }

  /** Spend `n` tokens if the bucket holds them; all or nothing. */
  tryTake(n: number): boolean {
    this.refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Milliseconds until `n` tokens are there (`n` at most the capacity). */
  waitMs(n: number): number {
    this.refill();
    const missing = n - this.tokens;
    return missing <= 0 ? 0 : Math.ceil((missing / this.rate) * 1000);
  }
}

class Throttle extends Transform {
  private timer: NodeJS.Timeout | undefined;
  /**
   * Bytes per push: an eighth of the bucket. Whole pieces only, never what a few microseconds
   * earned (that would spin the loop pushing a byte at a time), and a bucket of eight pieces
   * absorbs a timer firing up to seven pieces late without losing the time.
   */
  private readonly piece: number;

  constructor(private readonly bucket: TokenBucket) {
    super();
    this.piece = Math.max(1, Math.floor(bucket.capacity / 8));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.send(chunk, 0, callback);
  }

  /** Push what the bucket allows from `offset`, then wait for the rest. */
  private send(chunk: Buffer, offset: number, callback: TransformCallback): void {
    this.timer = undefined;
    if (this.destroyed) return;
    let at = offset;
    for (let n = Math.min(this.piece, chunk.length - at); at < chunk.length && this.bucket.tryTake(n); n = Math.min(this.piece, chunk.length - at)) {
      this.push(chunk.subarray(at, at + n));
      at += n;
    }
    if (at >= chunk.length) return callback();
    const wait = this.bucket.waitMs(Math.min(this.piece, chunk.length - at));
    this.timer = setTimeout(() => this.send(chunk, at, callback), Math.max(1, wait));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    callback(error);
  }
}

/**
 * A pass-through stream capped at `bytesPerSecond` on average (see the module notes). Throws
 * nothing: invalid arguments give a stream that is already failing with an `InvalidInputError`
 * (use {@link checkBandwidthLimit} first to find out without a stream).
 */
export function createThrottle(bytesPerSecond: number, options: ThrottleOptions = {}): Transform {
  const problem = checkThrottleArguments(bytesPerSecond, options);
  if (problem) {
    const failed = new Transform({ transform: (_c, _e, cb) => cb() });
    process.nextTick(() => failed.destroy(problem));
    return failed;
  }
  const capacity = options.burstBytes ?? Math.max(1024, Math.floor(bytesPerSecond / 25));
  const throttle = new Throttle(new TokenBucket(bytesPerSecond, capacity, () => performance.now()));
  const signal = options.signal;
  if (signal) {
    const onAbort = () => throttle.destroy(new TransportError('ABORTED', 'The throttled transfer was aborted by the caller', { cause: signal.reason }));
    if (signal.aborted) process.nextTick(onAbort);
    else {
      signal.addEventListener('abort', onAbort, { once: true });
      throttle.once('close', () => signal.removeEventListener('abort', onAbort));
    }
  }
  return throttle;
}
