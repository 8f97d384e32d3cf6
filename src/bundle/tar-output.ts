/**
 * The packer's output: a Readable the packer writes tar bytes into directly. Headers and small
 * files are gathered into shared batch buffers (a small file is read straight into its place in
 * the batch), large chunks are passed through without a copy, and `room()` gives backpressure.
 *
 * @module
 */
import { Readable } from 'node:stream';
import { BundleError } from './errors.js';

/** Batch buffers are allocated this large; data larger than a batch is read in several regions. */
const BATCH_BYTES = 1024 * 1024;
/** Gathered bytes are handed to the stream once this many are waiting. */
const FLUSH_BYTES = 128 * 1024;
/** A batch with less room than this is handed on rather than filled with a sliver of a file. */
const MIN_REGION = 4096;

/** Tar bytes going out, with backpressure. */
export class TarOutput {
  /** The tar stream for the consumer. */
  readonly stream: Readable;
  /** Bytes written so far (handed to the stream or waiting in the batch). */
  bytes = 0;
  private batch = Buffer.allocUnsafe(0);
  /** Start of the part of `batch` not yet handed to the stream. */
  private start = 0;
  /** End of the filled part of `batch`. */
  private used = 0;
  private waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private failure: unknown;
  private readonly highWaterMark: number;

  constructor(highWaterMark: number) {
    this.highWaterMark = highWaterMark;
    this.stream = new Readable({
      highWaterMark,
      read: () => this.wake(),
      destroy: (error, callback) => {
        this.failure ??= error ?? new BundleError('BUNDLE_IO', 'The bundle stream was closed before its end');
        for (const waiter of this.waiters.splice(0)) waiter.reject(this.failure);
        callback(error);
      },
    });
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter.resolve();
  }

  /** Throws the failure (consumer gone, abort) once the stream is destroyed. */
  checkOpen(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Resolve once the consumer wants more; rejects if the stream is destroyed meanwhile. */
  async room(): Promise<void> {
    this.checkOpen();
    if (this.stream.readableLength < this.highWaterMark) return;
    this.flush();
    await new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** `bytes` bytes of batch space to fill, then {@link commit}. */
  reserve(bytes: number): Buffer {
    if (this.batch.length - this.used < bytes) {
      this.flush();
      this.batch = Buffer.allocUnsafe(Math.max(BATCH_BYTES, bytes));
      this.start = 0;
      this.used = 0;
    }
    return this.batch.subarray(this.used, this.used + bytes);
  }

  /**
   * Batch space for up to `bytes` bytes (at least 1, fewer when the batch is nearly full), to fill
   * completely and then {@link commit}; large data is read in several such regions.
   */
  reserveUpTo(bytes: number): Buffer {
    const room = this.batch.length - this.used;
    if (room >= bytes || room >= MIN_REGION) return this.reserve(Math.min(bytes, room));
    return this.reserve(Math.min(bytes, BATCH_BYTES));
  }

  /** Mark `bytes` reserved bytes as written. */
  commit(bytes: number): void {
    this.used += bytes;
    this.bytes += bytes;
    if (this.used - this.start >= FLUSH_BYTES) this.flush();
  }

  /** Write `data`: copied into the batch when small, handed on as it is when large. */
  write(data: Buffer): void {
    if (data.length >= FLUSH_BYTES) {
      this.flush();
      this.checkOpen();
      this.bytes += data.length;
      this.stream.push(data);
      return;
    }
    data.copy(this.reserve(data.length));
    this.commit(data.length);
  }

  /** Write `count` zero bytes (padding). */
  zeros(count: number): void {
    if (count === 0) return;
    this.reserve(count).fill(0);
    this.commit(count);
  }

  /** Hand the gathered bytes to the stream. */
  flush(): void {
    if (this.used === this.start) return;
    this.checkOpen();
    this.stream.push(this.batch.subarray(this.start, this.used));
    this.start = this.used;
  }

  /** Write the end-of-archive blocks and end the stream. */
  end(): void {
    this.zeros(1024);
    this.flush();
    this.checkOpen();
    this.stream.push(null);
  }
}
