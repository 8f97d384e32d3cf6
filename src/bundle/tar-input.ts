/**
 * The input side of a bundle reader: the byte stream fed to tar-stream's extractor, and what its
 * failures mean. `unpackBundle` and `forwardSanitized` read bundles the same way and must classify
 * a cut or damaged stream with the same codes; this is that one place.
 */
import type { Readable } from 'node:stream';
import type * as tar from 'tar-stream';
import { BundleError, errnoOf, toBundleError } from './errors.js';

/** streamx's error for "destroyed without a reason", which tar-stream's entry streams reject with when the archive is cut. */
export function isStreamDestroyed(e: unknown): boolean {
  return errnoOf(e) === 'STREAM_DESTROYED';
}

/** Header fields tar-stream decodes, with the PAX records it keeps. */
export type DecodedHeader = tar.Header & { pax?: Record<string, string> | null };

/** One entry's data stream, as tar-stream's extract yields it. */
export type EntryStream = AsyncIterable<Buffer> & { header: tar.Header };

/** A zod schema, as far as {@link parseBundleMetadata} needs one (kept structural: this module imports no zod). */
type MetadataSchema<T> = { safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } } };

/** The bundle's info or manifest entry (`name`), parsed and validated; BUNDLE_MANIFEST_INVALID otherwise. */
export function parseBundleMetadata<T>(schema: MetadataSchema<T>, text: string, name: string): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new BundleError('BUNDLE_MANIFEST_INVALID', `${name} is not valid JSON`, { cause: e });
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new BundleError('BUNDLE_MANIFEST_INVALID', `${name} is not valid${issue ? ` at ${issue.path.map(String).join('.')}: ${issue.message}` : ''}`, {
      details: { issues: parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })) },
    });
  }
  return parsed.data;
}

/** A metadata entry's text, refused when its header says it is larger than `limit` bytes. */
export async function readSmallEntry(entry: EntryStream, name: string, limit: number): Promise<string> {
  if (entry.header.size !== undefined && entry.header.size > limit) throw new BundleError('BUNDLE_MANIFEST_INVALID', `${name} is larger than ${limit} bytes`);
  const chunks: Buffer[] = [];
  for await (const chunk of entry) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** Read an entry's data and drop it (the extractor moves on only once it is read). */
export async function drainEntry(entry: EntryStream): Promise<void> {
  for await (const chunk of entry) void chunk;
}

export class TarInput {
  /** Bundle bytes read from the input so far. */
  bytesRead = 0;
  private ended = false;
  private extractError: unknown;

  constructor(private readonly input: Readable) {}

  /** Feed the input to the extractor, counting bytes, and turn an input closed early into BUNDLE_TRUNCATED. */
  connect(extract: ReturnType<typeof tar.extract>): void {
    const input = this.input;
    // Counted as the chunks go by rather than through a Transform: one stream hop less per chunk.
    input.on('data', (chunk: Buffer) => {
      this.bytesRead += chunk.length;
    });
    input.on('error', (e) => extract.destroy(e));
    input.once('end', () => {
      this.ended = true;
    });
    // A stream destroyed without an error (a producer that gave up) never ends the extractor: it
    // would wait forever. It ended before the archive did.
    const closedEarly = () => extract.destroy(new BundleError('BUNDLE_TRUNCATED', 'The bundle stream was closed before its end', { details: { bytesRead: this.bytesRead } }));
    input.once('close', () => {
      if (!this.ended) closedEarly();
    });
    // Closed before we got here (while staging was prepared): its 'close' has already gone by.
    if (input.destroyed && !input.readableEnded) queueMicrotask(closedEarly);
    extract.on('error', (e: unknown) => {
      this.extractError ??= e;
    });
    input.pipe(extract as unknown as NodeJS.WritableStream);
  }

  /** A failure while reading, as a BundleError: the caller's abort, a cut stream, a damaged header, or I/O (`doing` says what was being done). */
  classify(error: unknown, aborted: BundleError | undefined, doing: string): BundleError {
    if (aborted) return aborted;
    if (BundleError.isInstance(error)) return error;
    // An entry's data stream is destroyed without a reason when the extractor fails (e.g. the input
    // ended inside that entry): the extractor's own error says what happened.
    const e = isStreamDestroyed(error) && this.extractError !== undefined && !isStreamDestroyed(this.extractError) ? this.extractError : error;
    if (BundleError.isInstance(e)) return e;
    const message = e instanceof Error ? e.message : String(e);
    if (/Unexpected end of data/.test(message) || (isStreamDestroyed(e) && this.ended)) {
      return new BundleError('BUNDLE_TRUNCATED', 'The bundle stream ended in the middle of an entry', { cause: e });
    }
    if (/Invalid tar header|Header exceeds max size|Invalid header|unknown format/.test(message)) {
      return new BundleError('BUNDLE_CORRUPT', `A tar header is damaged: ${message}`, { cause: e });
    }
    return toBundleError(e, 'BUNDLE_IO', doing);
  }
}
