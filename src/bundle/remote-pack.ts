/**
 * Packing on a remote source: the packer runs on the host the program runs on (as `node
 * receiver.cjs pack`, the same self-contained file the destination runs) and its bundle streams
 * back through `Source.stream`, then on to the destination: the orchestrator relays one stream.
 * The file is installed once per content hash in a private directory of the source user.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { errAsync, type ResultAsync } from 'neverthrow';
import { MigrationError, type ApMigrateError } from '../errors.js';
import { installHelper, parseHelperReply } from '../source/remote-helper.js';
import type { PackRequest, Packed } from '../spec/packager.js';
import { BUNDLE_ERROR_CODES, BundleError, type BundleErrorCode } from './errors.js';
import type { PackOptions } from './pack.js';

/** A reply of the packer: its bundle codes keep their meaning across the hop (a file missing at the source is BUNDLE_SOURCE_MISSING here too). */
function parseReply<T>(text: string, what: string): ResultAsync<T, ApMigrateError> {
  return parseHelperReply<T>(text, what, (code, message) =>
    (BUNDLE_ERROR_CODES as readonly string[]).includes(code) ? new BundleError(code as BundleErrorCode, `${message} (on the source)`) : undefined,
  );
}

/** What of the pack options crosses to the source (no signal, no callbacks). */
function portableOptions(options: PackOptions): PackOptions {
  const { signal: _signal, onProgress: _onProgress, ...rest } = options;
  return rest;
}

function cannotStream(request: PackRequest): ApMigrateError {
  return new MigrationError('SOURCE_CANNOT_PACK', `The source ${request.source.description} cannot stream a bundle (its Source has no stream())`);
}

/** Measure and pack on a remote source. */
export const packRemotely = {
  /** Bundle bytes of whole trees, measured where they are. */
  measure(request: PackRequest, trees: readonly string[]): ResultAsync<number, ApMigrateError> {
    return installHelper(request.source)
      .andThen((helper) => request.source.executor.exec(['node', helper, 'measure-trees'], { stdin: JSON.stringify({ trees }), allowNonZeroExit: true, ...(request.signal ? { signal: request.signal } : {}) }))
      .andThen((r) => parseReply<{ bytes: number }>(r.stdout, 'measuring trees'))
      .map((report) => report.bytes);
  },
  /** The bundle streaming from the source; `done` settles with the remote packer's report. */
  pack(request: PackRequest, options: PackOptions): ResultAsync<Packed<Readable>, ApMigrateError> {
    const source = request.source;
    if (!source.stream) return errAsync(cannotStream(request));
    const stream = source.stream.bind(source);
    const body = JSON.stringify({ profile: request.profile, options: portableOptions(options) });
    return installHelper(source)
      .andThen((helper) => stream(['node', helper, 'pack'], { stdin: body, ...(request.signal ? { signal: request.signal } : {}) }))
      .map((command) => ({
        payload: command.stdout,
        done: command.exit
          .orElse((e) => {
            // A failed packer says why on stderr; that reason beats "exited with 1".
            const stderr = typeof e.details.stderr === 'string' ? e.details.stderr : '';
            return stderr ? parseReply<never>(stderr, 'packing') : errAsync(e);
          })
          .andThen((exit) => parseReply<{ totalBytes: number; manifestBytes: number; seededBytes?: number }>(exit.stderr, 'packing')),
      }));
  },
};
