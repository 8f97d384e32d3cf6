/**
 * Write-behind for one file: the unpacker hands chunks over and goes on hashing and parsing the
 * next ones while earlier chunks are written in libuv's thread pool. One write is in flight at a
 * time (the file is written in order, like `write(2)` in a loop); what arrives meanwhile is
 * coalesced into the next `writev` (no copy), and at most `limitBytes` are held: past that, `push`
 * returns a promise to wait on, so memory stays bounded whatever the file's size.
 *
 * The defaults are small on purpose (64 KiB batches, 1 MiB held): measured on the unpack bench,
 * 1 MiB batches and 4 MiB held were slower (the data left the CPU caches between being hashed
 * and being copied into the page cache) than writing each chunk soon after hashing it. Small chunks (a slow pipe
 * can deliver a few bytes at a time) are copied into a 64 KiB buffer first: a `writev` of
 * thousands of tiny buffers would cost more than the copy, and a small slice must not keep its
 * whole input buffer alive.
 *
 * @module
 */
import type { FileHandle } from 'node:fs/promises';

/** Sizes of a {@link WriteBehind}. */
export interface WriteBehindOptions {
  /** Start a write once this many bytes are pending and none is in flight (default 64 KiB). */
  batchBytes?: number;
  /** Most bytes held (pending plus in flight) before `push` asks its caller to wait (default 1 MiB). */
  limitBytes?: number;
}

const DEFAULT_BATCH = 64 * 1024;
const DEFAULT_LIMIT = 1024 * 1024;
/** Chunks below this are copied into {@link COALESCE_BYTES} buffers. */
const SMALL_CHUNK = 16 * 1024;
const COALESCE_BYTES = 64 * 1024;

/**
 * Writes a file through `handle` in order, behind its caller. Errors of a write surface from the
 * next `push` or from `flush`; call `settle` before closing the handle (also on error paths) so
 * no write is still running on it.
 */
export class WriteBehind {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Buffer small chunks are copied into, and how much of it is filled; counted in `pendingBytes`. */
  private tail: Buffer | undefined;
  private tailUsed = 0;
  private inFlightBytes = 0;
  /** The running write; it never rejects (its error is kept in `error`). */
  private inFlight: Promise<void> | undefined;
  private error: unknown;
  private failed = false;
  private readonly batchBytes: number;
  private readonly limitBytes: number;

  constructor(
    private readonly handle: FileHandle,
    options: WriteBehindOptions = {},
  ) {
    this.batchBytes = options.batchBytes ?? DEFAULT_BATCH;
    this.limitBytes = Math.max(options.limitBytes ?? DEFAULT_LIMIT, this.batchBytes);
  }

  /** Bytes held now (pending and in flight): what this writer costs in memory. */
  get heldBytes(): number {
    return this.pendingBytes + this.inFlightBytes;
  }

  /**
   * Queue `chunk` (kept, not copied: the caller must not reuse it). Returns a promise when the
   * caller should wait before pushing more (over the limit), otherwise undefined. Throws the error
   * of an earlier write.
   */
  push(chunk: Buffer): Promise<void> | undefined {
    if (this.failed) throw this.error;
    if (chunk.length === 0) return undefined;
    if (chunk.length < SMALL_CHUNK) this.copyIntoTail(chunk);
    else {
      this.closeTail();
      this.pending.push(chunk);
    }
    this.pendingBytes += chunk.length;
    if (!this.inFlight && this.pendingBytes >= this.batchBytes) this.startWrite();
    if (this.heldBytes <= this.limitBytes) return undefined;
    return this.waitBelowLimit();
  }

  /** Write everything pending and wait for it; throws the first write error. */
  async flush(): Promise<void> {
    while (!this.failed && (this.inFlight || this.pendingBytes > 0)) {
      if (!this.inFlight) this.startWrite();
      await this.inFlight;
    }
    if (this.failed) throw this.error;
  }

  /** Wait for the write in flight, ignoring errors and dropping what is pending: call before closing the handle. */
  async settle(): Promise<void> {
    this.pending = [];
    this.pendingBytes = 0;
    this.tail = undefined;
    this.tailUsed = 0;
    while (this.inFlight) await this.inFlight;
  }

  private async waitBelowLimit(): Promise<void> {
    while (!this.failed && this.heldBytes > this.limitBytes && this.inFlight) await this.inFlight;
    if (this.failed) throw this.error;
  }

  private copyIntoTail(chunk: Buffer): void {
    let from = 0;
    while (from < chunk.length) {
      if (!this.tail || this.tailUsed === this.tail.length) {
        this.closeTail();
        this.tail = Buffer.allocUnsafe(COALESCE_BYTES);
      }
      const copied = chunk.copy(this.tail, this.tailUsed, from);
      this.tailUsed += copied;
      from += copied;
    }
  }

  /** Move the filled part of the tail into `pending`. */
  private closeTail(): void {
    if (this.tail && this.tailUsed > 0) this.pending.push(this.tail.subarray(0, this.tailUsed));
    this.tail = undefined;
    this.tailUsed = 0;
  }

  private startWrite(): void {
    this.closeTail();
    const buffers = this.pending;
    this.inFlightBytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    this.inFlight = this.writeAll(buffers).then(
      () => {
        this.inFlight = undefined;
        this.inFlightBytes = 0;
        // Keep the disk busy while the caller keeps up: the next batch may be ready already.
        if (!this.failed && this.pendingBytes >= this.batchBytes) this.startWrite();
      },
      (e: unknown) => {
        this.inFlight = undefined;
        this.inFlightBytes = 0;
        this.failed = true;
        this.error = e;
      },
    );
  }

  /** One `writev`, repeated for what a short write left. */
  private async writeAll(buffers: Buffer[]): Promise<void> {
    let rest = buffers;
    while (rest.length > 0) {
      const { bytesWritten } = await this.handle.writev(rest);
      let skip = bytesWritten;
      let index = 0;
      while (index < rest.length && skip >= (rest[index] as Buffer).length) {
        skip -= (rest[index] as Buffer).length;
        index++;
      }
      rest = rest.slice(index);
      if (skip > 0 && rest.length > 0) rest[0] = (rest[0] as Buffer).subarray(skip);
      if (bytesWritten === 0 && rest.length > 0) throw Object.assign(new Error('writev wrote nothing'), { code: 'EIO' });
    }
  }
}
