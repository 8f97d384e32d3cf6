/**
 * The bundle packager: the {@link Packager} of every file-based method (chroot, linux-namespaces,
 * freebsd-jail). Each method decides only *what* travels (a {@link BundleSelectionOptions} from the
 * profile); how it is estimated and streamed is the same for all. Whole trees (data roots the
 * capture found, a thick jail's base) are measured on the source before packing.
 *
 * On a local source the packer runs in-process; on a remote one it runs there, through
 * `Source.stream`, as `node receiver.cjs pack` (see {@link remotePackArgv}).
 *
 * @module
 */
import type { Readable } from 'node:stream';
import { errAsync, okAsync, ResultAsync } from 'neverthrow';
import { ApMigrateError } from '../errors.js';
import type { ResourceProfile } from '../policy/profile.js';
import type { PackEstimate, Packager, PackRequest, Packed } from '../spec/packager.js';
import { estimateBundleBytes } from './estimate.js';
import { measureTrees } from './measure.js';
import { createBundleStream, type PackOptions } from './pack.js';
import type { BundleSelectionOptions } from './select.js';
import { packRemotely } from './remote-pack.js';

/** What a file-based method carries, decided from the profile. */
export type SelectBundle = (profile: ResourceProfile) => BundleSelectionOptions;

/** The selection plus the trees the capture found (data roots, config directories), which travel whole. */
export function withProfileTrees(profile: ResourceProfile, selection: BundleSelectionOptions): BundleSelectionOptions {
  const trees = profile.trees.map((t) => t.path);
  if (!trees.length) return selection;
  return { ...selection, extraTrees: [...new Set([...(selection.extraTrees ?? []), ...trees])] };
}

/** Bytes of the whole trees of `selection`, measured where the files are. */
function measuredTreeBytes(request: PackRequest, selection: BundleSelectionOptions): ResultAsync<number, ApMigrateError> {
  const trees = selection.extraTrees ?? [];
  if (!trees.length) return okAsync(0);
  if (!request.source.isLocal) {
    // The trees are on another host: the remote packer measures them the same way.
    return packRemotely.measure(request, trees);
  }
  return measureTrees(trees, request.signal ? { signal: request.signal } : {}).map((m) => m.bytes);
}

/** The pack options for this request (the plan is stored in the manifest, opaque). */
export function packOptionsFor(request: PackRequest, selection: BundleSelectionOptions, estimate: PackEstimate): PackOptions {
  return {
    ...selection,
    extraTreeBytes: estimate.measuredTreeBytes,
    plan: request.plan,
    ...(request.held ? { held: request.held } : {}),
    ...(request.signal ? { signal: request.signal } : {}),
  };
}

/** The {@link Packager} of a file-based method that carries what `select` says. */
export function createBundlePackager(select: SelectBundle): Packager<Readable> {
  const selectionOf = (profile: ResourceProfile) => withProfileTrees(profile, select(profile));
  return {
    estimate: (request) => {
      const selection = selectionOf(request.profile);
      return measuredTreeBytes(request, selection).map((treeBytes) => ({
        bytes: estimateBundleBytes(request.profile, { ...selection, extraTreeBytes: treeBytes }).bytes,
        measuredTreeBytes: treeBytes,
      }));
    },
    pack: (request, estimate): ResultAsync<Packed<Readable>, ApMigrateError> => {
      const options = packOptionsFor(request, selectionOf(request.profile), estimate);
      if (!request.source.isLocal) return packRemotely.pack(request, options);
      const bundle = createBundleStream(request.profile, options);
      if (bundle.isErr()) return errAsync(bundle.error);
      const { stream, report } = bundle.value;
      return okAsync({
        payload: stream,
        done: report.map((r) => ({ totalBytes: r.totalBytes, manifestBytes: r.manifestBytes, seededBytes: r.seeded.bytes })).mapErr((e): ApMigrateError => e),
      });
    },
  };
}
