/**
 * A Transport wrapper that damages data in transit, for fault tests: it flips one byte of the
 * stdin stream of the receiver command (`node .../receiver-*.cjs unpack DIR`), as a bad link or
 * a broken middlebox would. Every other call goes to the wrapped transport untouched.
 */
import { Readable, Transform } from 'node:stream';
import type { Transport, TransportExecOptions } from '../../src/spec/transport.js';

/** What the wrapper did, for assertions. */
export interface FlipRecord {
  /** Offset of the flipped byte in the receiver's stdin, once flipped. */
  flippedAt?: number;
  /** The byte before and after. */
  before?: number;
  after?: number;
  /** Bytes that went through the wrapper to the receiver. */
  bytes: number;
}

/** The receiver's `node <receiver> unpack <target> ...` inside `argv` (alone, or wrapped by the settle and decompress scripts), or undefined. */
export function receiverUnpackArgv(argv: readonly string[]): readonly string[] | undefined {
  const at = argv.findIndex((a, i) => a === 'node' && /receiver[^/]*\.cjs$/.test(argv[i + 1] ?? '') && argv[i + 2] === 'unpack');
  return at < 0 ? undefined : argv.slice(at);
}

/** Whether `argv` runs the bundle receiver. */
export function isReceiverCommand(argv: readonly string[]): boolean {
  return receiverUnpackArgv(argv) !== undefined;
}

/** A pass-through stream that XORs the byte at `offset` with `mask` (never zero, so it always changes). */
export function byteFlipper(offset: number, record: FlipRecord, mask = 0x01): Transform {
  let position = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      const start = position;
      position += chunk.length;
      record.bytes = position;
      if (offset >= start && offset < position) {
        // Copy: the chunk may be a buffer the packer still hashes or reuses.
        const copy = Buffer.from(chunk);
        const i = offset - start;
        record.before = copy[i];
        copy[i] = copy[i]! ^ mask;
        record.after = copy[i];
        record.flippedAt = offset;
        callback(null, copy);
        return;
      }
      callback(null, chunk);
    },
  });
}

/**
 * Wrap `inner` so the receiver's stdin has its byte at `offset()` flipped. `offset` is asked when
 * the receiver starts, so a test can choose it from the bundle size it expects.
 */
export function flipByteTransport(inner: Transport, offset: () => number): { transport: Transport; record: FlipRecord } {
  const record: FlipRecord = { bytes: 0 };
  const exec: Transport['exec'] = (argv, options?: TransportExecOptions) => {
    if (!(options?.stdin instanceof Readable) || !isReceiverCommand(argv)) return inner.exec(argv, options);
    const source = options.stdin;
    const flipper = byteFlipper(offset(), record);
    source.on('error', (e) => flipper.destroy(e));
    source.pipe(flipper);
    return inner.exec(argv, { ...options, stdin: flipper });
  };
  const transport: Transport = {
    kind: inner.kind,
    root: inner.root,
    description: `${inner.description} (flipping one byte of the bundle)`,
    exec,
    upload: (source, path, options) => inner.upload(source, path, options),
    readFile: (path, options) => inner.readFile(path, options),
    close: () => inner.close(),
  };
  return { transport, record };
}
