/**
 * Counting what crosses the wire: the bytes a transport reads from the stream it sends, after
 * compression and the bandwidth cap (`onTheWire` of the receiver), as opposed to the bundle's own
 * bytes before compression.
 *
 * @module
 */
import type { Readable } from 'node:stream';

/**
 * What a file-based deployer's `receive` passes on to {@link countWireBytes} (the receiver does,
 * when its options carry it): `migrate()` sets it in the receive options of every round, so
 * `report.rounds[i].wireBytes` says what the transport was given.
 */
export interface WireCountOptions {
  /** Called with the bytes written to the transport so far, after compression and the bandwidth cap. */
  onWireBytes?: (bytes: number) => void;
}

/**
 * Count the bytes read from `stream`, by whatever means it is read (piped, iterated, `read()`),
 * calling `onBytes` with the running total. The stream's flow is not changed: it stays paused
 * until its consumer starts reading. Returns `stream` itself.
 */
export function countWireBytes<S extends Readable>(stream: S, onBytes: (bytes: number) => void): S {
  let bytes = 0;
  stream.on('data', (chunk: Buffer | string) => {
    bytes += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    try {
      onBytes(bytes);
    } catch {
      // A counter that throws must not break the transfer it counts.
    }
  });
  // Adding a 'data' listener set the stream flowing: hold it until the transport pipes it.
  stream.pause();
  return stream;
}
