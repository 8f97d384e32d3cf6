/**
 * Bundles: the streaming tar that carries a program's files, its packer, unpacker and size estimate.
 *
 * @module
 */
export { BUNDLE_ERROR_CODES, BundleError, type BundleErrorCode } from './errors.js';
export {
  BUNDLE_ENTRY_TYPES,
  BUNDLE_FORMAT_VERSION,
  BUNDLE_INFO_NAME,
  BUNDLE_MANIFEST_NAME,
  BUNDLE_ROOT_DIR,
  BundleCountsSchema,
  BundleInfoSchema,
  BundleManifestSchema,
  ManifestEntrySchema,
  type BundleCounts,
  type BundleEntryType,
  type BundleInfo,
  type BundleManifest,
  type ManifestEntry,
} from './manifest.js';
export { estimateBundleBytes, type BundleEstimate, type BundleEstimateOptions } from './estimate.js';
export { measureTrees, type MeasureTreesOptions, type TreeMeasurement } from './measure.js';
export { selectProfilePaths, type BundleSelectionOptions, type Selection, type SelectedPath, type SkipReason } from './select.js';
export { createBundleStream, packBundle, type BundleStream, type PackOptions, type PackProgress, type PackReport } from './pack.js';
export { unpackBundle, type UnpackOptions, type UnpackReport } from './unpack.js';
export { DEFAULT_HOST_SEED_ROOTS, InventoryRequestSchema, journalPathOf, SEED_IDS, SEED_PAX, type HeldFile, type HeldFiles, type InventoryRequest, type SeedId, type SeededTotals } from './seeds.js';
export { takeInventory } from './seed-store.js';
export { forwardSanitized, isConsumerClosed, type ForwardReport, type ForwardSanitizedOptions, type SanitizedEntry, type SanitizedForward } from './forward-sanitized.js';
