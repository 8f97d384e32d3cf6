/**
 * Transfer-size estimates: how many bytes each method would send for a profile, with a breakdown
 * that says which figures were measured and which are defaults. Linear in the number of files.
 *
 * @module
 */
import type { FileUse, ResourceProfile } from './profile.js';
import type { IsolationMethod } from './methods.js';
import { isPseudoPath } from './paths.js';

export { isPseudoPath };

/** Whether a file use's contents travel in a bundle (regular, existed before, not under a pseudo path). */
export function isTransferable(file: FileUse): boolean {
  return file.kind === 'regular' && !file.created && !isPseudoPath(file.path);
}

/** One line of an estimate. */
export interface EstimateItem {
  /** What this is, e.g. `program and files (12 files)`. */
  label: string;
  bytes: number;
  /** `measured` from the profile or a user-supplied measurement; `default` from a published figure. */
  source: 'measured' | 'default';
  /** Where a default comes from, or which override supplied a measurement. */
  basis?: string;
}

/** An estimate of the bytes a method sends. */
export interface TransferEstimate {
  totalBytes: number;
  items: EstimateItem[];
  /** True when every item is measured. */
  measured: boolean;
}

/** Destination facts and measurements that change estimates. */
export interface EstimateContext {
  /** Things the destination already has, e.g. `freebsd-base-userland`. */
  destinationProvides: ReadonlySet<string>;
  /** Measured sizes by `sizeKey`, e.g. `{ 'vm-image': 3_221_225_472 }`. */
  sizes: Readonly<Record<string, number>>;
}

/** Byte totals of a profile, split the way transfer components need them. */
export interface ProfileSizes {
  programAndFilesBytes: number;
  fileCount: number;
  sharedLibraryBytes: number;
  sharedLibraryCount: number;
}

/** Sum the sizes a profile's transfer components need. Each path counts once. */
export function measureProfile(profile: ResourceProfile): ProfileSizes {
  const seen = new Set<string>([profile.executable]);
  let programAndFilesBytes = profile.executableSize;
  let fileCount = 0;
  let sharedLibraryBytes = 0;
  let sharedLibraryCount = 0;
  for (const file of profile.files) {
    if (seen.has(file.path) || !isTransferable(file)) continue;
    seen.add(file.path);
    if (file.sharedLibrary) {
      sharedLibraryBytes += file.size;
      sharedLibraryCount += 1;
    } else {
      programAndFilesBytes += file.size;
      fileCount += 1;
    }
  }
  return { programAndFilesBytes, fileCount, sharedLibraryBytes, sharedLibraryCount };
}

/** Estimate what `method` sends for a profile whose sizes are `sizes`. */
export function estimateTransfer(method: IsolationMethod, sizes: ProfileSizes, context: EstimateContext): TransferEstimate {
  const items: EstimateItem[] = [];
  const programItem = (): EstimateItem => ({
    label: `program and files (${sizes.fileCount} file${sizes.fileCount === 1 ? '' : 's'})`,
    bytes: sizes.programAndFilesBytes,
    source: 'measured',
    basis: 'profile',
  });
  for (const part of method.transfers) {
    switch (part.type) {
      case 'program-and-files':
        items.push(programItem());
        break;
      case 'shared-libraries':
        items.push({
          label: `shared libraries (${sizes.sharedLibraryCount})`,
          bytes: sizes.sharedLibraryBytes,
          source: 'measured',
          basis: 'profile',
        });
        break;
      case 'fixed': {
        if (part.omitWhenDestinationProvides && context.destinationProvides.has(part.omitWhenDestinationProvides)) break;
        const measured = context.sizes[part.sizeKey];
        if (measured !== undefined) {
          items.push({ label: part.label, bytes: measured, source: 'measured', basis: `sizes["${part.sizeKey}"]` });
        } else {
          items.push({ label: part.label, bytes: part.defaultBytes, source: 'default', basis: part.defaultSource });
          // A default image cannot know the program's data, which must travel inside it.
          if (part.addProgramWhenDefault) items.push(programItem());
        }
        break;
      }
    }
  }
  const totalBytes = items.reduce((sum, item) => sum + item.bytes, 0);
  return { totalBytes, items, measured: items.every((i) => i.source === 'measured') };
}
