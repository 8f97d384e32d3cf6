/**
 * Transfer-size estimates: how many bytes each method would send for a profile, with a breakdown
 * that says which figures were measured and which are defaults. Linear in the number of files.
 * With compression on the wire, each figure also has its bytes after compression (`wireBytes`),
 * from a ratio per content class (measured by the caller, or the defaults of decision 0203).
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

/**
 * What a file's bytes are like to a compressor, which decides the ratio they are counted at:
 * `text` (sources, configuration, logs), `machine-code` (executables, shared libraries),
 * `compressed` (already-compressed archives, images, media: counted at ratio 1), `other`
 * (anything else, e.g. database pages).
 */
export const CONTENT_CLASSES = ['text', 'machine-code', 'compressed', 'other'] as const;
/** One of {@link CONTENT_CLASSES}. */
export type ContentClass = (typeof CONTENT_CLASSES)[number];

/** A codec the bundle can be compressed with on the wire (`none` is: no compression input). */
export type CompressionCodec = 'zstd' | 'gzip';

/** Output bytes per input byte of every content class. */
export type CompressionRatios = Record<ContentClass, number>;

/** Default level of each codec, as `migrate()` uses it (`DEFAULT_LEVEL` of the transfer module). */
export const DEFAULT_COMPRESSION_LEVEL: Readonly<Record<CompressionCodec, number>> = { zstd: 1, gzip: 1 };

/**
 * Output/input ratios measured by codec and level (decision 0203, docs/compression.md): `text`
 * on 110 MiB of C headers and scripting-language sources, `machine-code` on 41 MiB of a server's
 * executables and libraries, `other` on a 233 MiB tar mixing machine code, `.gz` docs, sources
 * and random data; `compressed` is 1 (random data: 1.000 with every codec). zstd with the `zstd` CLI
 * (`-T0`); gzip level 1 through `compressStream` (`node:zlib`, as built), level 6 with `gzip -6`.
 */
export const MEASURED_COMPRESSION_RATIOS: Readonly<Record<CompressionCodec, Readonly<Record<number, Readonly<CompressionRatios>>>>> = {
  zstd: {
    1: { text: 0.214, 'machine-code': 0.532, compressed: 1, other: 0.558 },
    3: { text: 0.138, 'machine-code': 0.471, compressed: 1, other: 0.518 },
  },
  gzip: {
    1: { text: 0.235, 'machine-code': 0.545, compressed: 1, other: 0.575 },
    6: { text: 0.193, 'machine-code': 0.507, compressed: 1, other: 0.551 },
  },
};

/**
 * The default ratios of `codec` at `level`: the measured level nearest at or below it (a higher
 * level compresses at least as well, so the lower level's figure is an upper bound), and where
 * they come from.
 */
export function defaultCompressionRatios(codec: CompressionCodec, level: number = DEFAULT_COMPRESSION_LEVEL[codec]): { ratios: CompressionRatios; level: number; basis: string } {
  const table = MEASURED_COMPRESSION_RATIOS[codec];
  const levels = Object.keys(table).map(Number).sort((a, b) => a - b);
  const measured = levels.filter((l) => l <= level).pop() ?? levels[0]!;
  return { ratios: { ...table[measured]! }, level: measured, basis: `decision 0203 (${codec} level ${measured}, measured on a 2-core Debian 12 machine)` };
}

// Names ending in these are stored compressed already: archives, packages, images, media, fonts.
const COMPRESSED_EXTENSIONS = new Set([
  'gz', 'tgz', 'xz', 'txz', 'bz2', 'tbz', 'tbz2', 'zst', 'tzst', 'lz4', 'lzma', 'lz', 'z', 'br', '7z', 'rar', 'zip', 'jar', 'war', 'ear',
  'apk', 'deb', 'rpm', 'whl', 'egg', 'gem', 'xpi', 'cab', 'squashfs', 'jpg', 'jpeg', 'png', 'gif', 'webp', 'avif', 'heic', 'jxl',
  'mp3', 'mp4', 'm4a', 'm4v', 'aac', 'ogg', 'oga', 'ogv', 'opus', 'flac', 'mkv', 'webm', 'mov', 'avi', 'woff', 'woff2', 'pdf',
  'docx', 'xlsx', 'pptx', 'odt', 'ods', 'odp', 'epub',
]);
// Names ending in these are text: sources, configuration, markup, data in words, logs.
const TEXT_EXTENSIONS = new Set([
  'txt', 'text', 'md', 'rst', 'adoc', 'c', 'h', 'cc', 'cpp', 'cxx', 'hh', 'hpp', 'py', 'pyi', 'rb', 'pl', 'pm', 'php', 'lua', 'tcl',
  'js', 'mjs', 'cjs', 'ts', 'mts', 'cts', 'jsx', 'tsx', 'java', 'go', 'rs', 'swift', 'kt', 'scala', 'cs', 'sh', 'bash', 'zsh',
  'json', 'yaml', 'yml', 'toml', 'ini', 'conf', 'cfg', 'cnf', 'properties', 'env', 'xml', 'xsd', 'xsl', 'html', 'htm', 'xhtml',
  'css', 'scss', 'less', 'svg', 'csv', 'tsv', 'sql', 'log', 'tex', 'po', 'pot', 'mo', 'map', 'service', 'socket', 'timer', 'rules',
]);
// Object code (a versioned `.so.N` is recognised apart).
const MACHINE_CODE_EXTENSIONS = new Set(['so', 'a', 'o', 'ko', 'node', 'dll', 'exe', 'dylib']);

/**
 * The content class of a file from its name (the profile knows no file's magic bytes): shared
 * libraries and object code are `machine-code`, known compressed formats `compressed`, known
 * text formats `text`, everything else `other`. Pure; case-insensitive.
 */
export function contentClassOf(path: string, sharedLibrary = false): ContentClass {
  if (sharedLibrary) return 'machine-code';
  const base = (path.split('/').pop() ?? '').toLowerCase();
  if (/\.so(\.\d+)+$/.test(base)) return 'machine-code';
  const dot = base.lastIndexOf('.');
  if (dot <= 0) return 'other';
  const ext = base.slice(dot + 1);
  if (COMPRESSED_EXTENSIONS.has(ext)) return 'compressed';
  if (MACHINE_CODE_EXTENSIONS.has(ext)) return 'machine-code';
  if (TEXT_EXTENSIONS.has(ext)) return 'text';
  return 'other';
}

/** Compression on the wire, resolved: the codec, its level, and the ratio of every content class. */
export interface WireCompression {
  codec: CompressionCodec;
  level: number;
  ratios: CompressionRatios;
  /** Classes whose ratio the caller measured; the others are defaults. */
  measured: ContentClass[];
  /** Where the default ratios come from. */
  basis: string;
}

/** One line of an estimate. */
export interface EstimateItem {
  /** What this is, e.g. `program and files (12 files)`. */
  label: string;
  bytes: number;
  /** With compression on the wire: the bytes after compression (see {@link WireCompression}). */
  wireBytes?: number;
  /** `measured` from the profile or a user-supplied measurement; `default` from a published figure. */
  source: 'measured' | 'default';
  /** Where a default comes from, or which override supplied a measurement. */
  basis?: string;
}

/** An estimate of the bytes a method sends. */
export interface TransferEstimate {
  /** Bytes before compression. */
  totalBytes: number;
  /**
   * With compression on the wire: the bytes after compression, the sum of the items'. Equal to
   * `totalBytes` for a method that moves the hosting VM (its files are copied as they are).
   */
  wireBytes?: number;
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
  /** Compression on the wire (absent: none): each item then carries its `wireBytes`. */
  compression?: WireCompression;
}

/** Byte totals of a profile, split the way transfer components need them. */
export interface ProfileSizes {
  programAndFilesBytes: number;
  fileCount: number;
  /**
   * `programAndFilesBytes` by content class (the executable is `machine-code`). Absent (a
   * hand-made figure): all of it counts as `other`.
   */
  programAndFilesByClass?: Record<ContentClass, number>;
  sharedLibraryBytes: number;
  sharedLibraryCount: number;
}

/** Sum the sizes a profile's transfer components need. Each path counts once. */
export function measureProfile(profile: ResourceProfile): ProfileSizes {
  const seen = new Set<string>([profile.executable]);
  let programAndFilesBytes = profile.executableSize;
  const programAndFilesByClass: Record<ContentClass, number> = { text: 0, 'machine-code': profile.executableSize, compressed: 0, other: 0 };
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
      programAndFilesByClass[contentClassOf(file.path)] += file.size;
      fileCount += 1;
    }
  }
  return { programAndFilesBytes, fileCount, programAndFilesByClass, sharedLibraryBytes, sharedLibraryCount };
}

/** Estimate what `method` sends for a profile whose sizes are `sizes` (with `context.compression`: its bytes on the wire too). */
export function estimateTransfer(method: IsolationMethod, sizes: ProfileSizes, context: EstimateContext): TransferEstimate {
  const items: EstimateItem[] = [];
  const compression = context.compression;
  // A method that moves the hosting VM copies its files as they are: nothing is compressed.
  const ratioOf = (cls: ContentClass): number => (method.movesHostingVm || !compression ? 1 : compression.ratios[cls]);
  const wire = (bytes: number, cls: ContentClass): { wireBytes?: number } => (compression ? { wireBytes: Math.round(bytes * ratioOf(cls)) } : {});
  const programWire = (): { wireBytes?: number } => {
    const byClass = sizes.programAndFilesByClass;
    if (!compression || !byClass) return wire(sizes.programAndFilesBytes, 'other');
    return { wireBytes: CONTENT_CLASSES.reduce((sum, cls) => sum + Math.round(byClass[cls] * ratioOf(cls)), 0) };
  };
  const programItem = (): EstimateItem => ({
    label: `program and files (${sizes.fileCount} file${sizes.fileCount === 1 ? '' : 's'})`,
    bytes: sizes.programAndFilesBytes,
    ...programWire(),
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
          ...wire(sizes.sharedLibraryBytes, 'machine-code'),
          source: 'measured',
          basis: 'profile',
        });
        break;
      case 'fixed': {
        if (part.omitWhenDestinationProvides && context.destinationProvides.has(part.omitWhenDestinationProvides)) break;
        const measured = context.sizes[part.sizeKey];
        // What a fixed part holds is not known here: it counts as `other`.
        if (measured !== undefined) {
          items.push({ label: part.label, bytes: measured, ...wire(measured, 'other'), source: 'measured', basis: `sizes["${part.sizeKey}"]` });
        } else {
          items.push({ label: part.label, bytes: part.defaultBytes, ...wire(part.defaultBytes, 'other'), source: 'default', basis: part.defaultSource });
          // A default image cannot know the program's data, which must travel inside it.
          if (part.addProgramWhenDefault) items.push(programItem());
        }
        break;
      }
    }
  }
  const totalBytes = items.reduce((sum, item) => sum + item.bytes, 0);
  const measured = items.every((i) => i.source === 'measured');
  if (!compression) return { totalBytes, items, measured };
  return { totalBytes, wireBytes: items.reduce((sum, item) => sum + (item.wireBytes ?? item.bytes), 0), items, measured };
}
