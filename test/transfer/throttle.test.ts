/**
 * The bandwidth cap (src/transfer/throttle.ts): rate held from a faster source, bytes intact,
 * backpressure kept, abort and invalid limits reported without throwing. Rates are checked as
 * ratios of bytes over elapsed time, which a loaded machine can only push down, never up.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../src/errors.js';
import { checkBandwidthLimit, createThrottle, MIN_BANDWIDTH_LIMIT, throttleSchema } from '../../src/transfer/index.js';
import { TransportError } from '../../src/transports/errors.js';

const MiB = 1024 * 1024;

/** `total` random bytes in 256 KiB chunks, as fast as they are read. */
function fastSource(total: number): { stream: Readable; hash: string } {
  const data = randomBytes(total);
  const chunks: Buffer[] = [];
  for (let at = 0; at < total; at += 256 * 1024) chunks.push(data.subarray(at, at + 256 * 1024));
  return { stream: Readable.from(chunks), hash: createHash('sha256').update(data).digest('hex') };
}

/** A sink recording when each byte arrived, and the hash of everything. */
function recordingSink() {
  const hash = createHash('sha256');
  const arrivals: Array<[number, number]> = [];
  let bytes = 0;
  const stream = new Writable({
    write(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      arrivals.push([performance.now(), chunk.length]);
      cb();
    },
  });
  return { stream, arrivals, digest: () => hash.digest('hex'), bytes: () => bytes };
}

describe('createThrottle', () => {
  it('holds a 2 MiB/s cap over ~3 s within 5%, with the bytes intact', async () => {
    const rate = 2 * MiB;
    const source = fastSource(6 * MiB);
    const sink = recordingSink();
    const started = performance.now();
    await pipeline(source.stream, createThrottle(rate), sink.stream);
    const seconds = (performance.now() - started) / 1000;
    const ratio = sink.bytes() / seconds / rate;
    console.log(`throttle: ${sink.bytes()} B in ${seconds.toFixed(2)} s = ${ratio.toFixed(3)} of the 2 MiB/s cap`);
    expect(seconds).toBeGreaterThan(2.5);
    expect(ratio).toBeGreaterThan(0.95);
    expect(ratio).toBeLessThan(1.05);
    expect(sink.digest()).toBe(source.hash);

    // Every 1 s window (starting at each arrival) stays under the cap plus 5%.
    const { arrivals } = sink;
    for (let i = 0, j = 0, inWindow = 0; i < arrivals.length; i++) {
      while (j < arrivals.length && arrivals[j]![0] - arrivals[i]![0] <= 1000) inWindow += arrivals[j++]![1];
      expect(inWindow).toBeLessThanOrEqual(rate * 1.05);
      inWindow -= arrivals[i]![1];
    }
  }, 20_000);

  it('splits chunks larger than the bucket', async () => {
    const sink = recordingSink();
    await pipeline(Readable.from([Buffer.alloc(256 * 1024, 1)]), createThrottle(1 * MiB, { burstBytes: 16 * 1024 }), sink.stream);
    expect(sink.bytes()).toBe(256 * 1024);
    expect(Math.max(...sink.arrivals.map(([, n]) => n))).toBeLessThanOrEqual(16 * 1024);
  });

  it('keeps backpressure: an unread throttle stops taking writes', async () => {
    const throttle = createThrottle(1000 * MiB);
    const chunk = Buffer.alloc(64 * 1024);
    let accepted = 0;
    while (throttle.write(chunk)) {
      accepted += chunk.length;
      if (accepted > 64 * MiB) break;
    }
    await new Promise((r) => setTimeout(r, 100));
    // Both buffers (16 KiB each by default) plus the chunk in hand: nowhere near the 64 MiB offered.
    expect(accepted).toBeLessThan(MiB);
    expect(throttle.writableLength + throttle.readableLength).toBeLessThan(MiB);
    let drained = false;
    throttle.once('drain', () => (drained = true));
    throttle.resume();
    await new Promise((r) => setTimeout(r, 100));
    expect(drained).toBe(true);
    throttle.destroy();
  });

  it('an abort destroys the stream with a TransportError ABORTED', async () => {
    const controller = new AbortController();
    const source = fastSource(4 * MiB);
    const throttle = createThrottle(MiB, { signal: controller.signal });
    setTimeout(() => controller.abort(), 200);
    const failure = await pipeline(source.stream, throttle, recordingSink().stream).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(TransportError.isInstance(failure)).toBe(true);
    expect((failure as TransportError).code).toBe('ABORTED');
    expect(throttle.destroyed).toBe(true);
  });

  it('a signal aborted already fails the stream at once', async () => {
    const throttle = createThrottle(MiB, { signal: AbortSignal.abort() });
    const error = await new Promise<unknown>((resolve) => throttle.once('error', resolve));
    expect((error as TransportError).code).toBe('ABORTED');
  });

  it('refuses invalid limits with an InvalidInputError, never a throw', async () => {
    for (const bad of [0, -1, 1023, Number.NaN, Number.POSITIVE_INFINITY, '2048', undefined, null]) {
      const checked = checkBandwidthLimit(bad);
      expect(checked.isErr()).toBe(true);
      const error = checked._unsafeUnwrapErr();
      expect(InvalidInputError.isInstance(error)).toBe(true);
      expect(error.code).toBe('INVALID_INPUT');
      expect(throttleSchema.safeParse(bad).success).toBe(false);
    }
    expect(checkBandwidthLimit(MIN_BANDWIDTH_LIMIT)._unsafeUnwrap()).toBe(1024);
    expect(checkBandwidthLimit(2.5 * MiB)._unsafeUnwrap()).toBe(2.5 * MiB);

    for (const [rate, options] of [
      [0, {}],
      [MiB, { burstBytes: 0 }],
      [MiB, { burstBytes: 1.5 }],
      [MiB, { signal: 'no' }],
    ] as const) {
      let stream: ReturnType<typeof createThrottle> | undefined;
      expect(() => (stream = createThrottle(rate, options as never))).not.toThrow();
      const error = await new Promise<unknown>((resolve) => stream!.once('error', resolve));
      expect(InvalidInputError.isInstance(error)).toBe(true);
    }
  });
});
