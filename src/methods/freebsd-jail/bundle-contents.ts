/**
 * What a jail bundle carries: thin (the program, its files and libraries; the destination's base
 * userland is shared) or thick (plus the base userland trees), and how big it should be.
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import { InvalidInputError, type ApMigrateError } from '../../errors.js';
import { estimateBundleBytes } from '../../bundle/estimate.js';
import type { BundleSelectionOptions } from '../../bundle/select.js';
import { PAPER_JAIL_BASE_BYTES } from '../../policy/methods.js';
import type { ResourceProfile } from '../../policy/profile.js';
import { normalizeAbsolutePath } from '../../policy/safe-input.js';
import type { Executor } from '../../spec/executor.js';
import { DeployError } from '../../destination/deploy-error.js';

/**
 * The base userland a thick bundle carries. `/etc` is left out on purpose: it holds the source
 * host's secrets (master.passwd, SSH host keys); the program's own `/etc` files come with its profile.
 */
export const FREEBSD_BASE_DIRS = [
  '/bin',
  '/sbin',
  '/lib',
  '/libexec',
  '/usr/bin',
  '/usr/sbin',
  '/usr/lib',
  '/usr/libexec',
  '/usr/share/locale',
  '/usr/share/zoneinfo',
  '/usr/share/misc',
] as const;

/** Sizes of the base userland directories measured on a FreeBSD source. */
export interface FreeBsdBaseMeasurement {
  /** Sum over the directories found (hard links counted once, as `du` does across its arguments). */
  bytes: number;
  /** Bytes per directory. */
  byDirectory: Record<string, number>;
  /** Directories that do not exist on the host. */
  missing: string[];
}

/** Parse `du -sk DIR...`: lines `KB<TAB>DIR`; `No such file or directory` on stderr marks a missing one. */
export function parseDuSk(stdout: string, stderr: string, dirs: readonly string[]): FreeBsdBaseMeasurement | DeployError {
  const byDirectory: Record<string, number> = {};
  for (const line of stdout.split('\n')) {
    if (!line.trim()) continue;
    const m = /^(\d+)\t(\/.*)$/.exec(line);
    if (!m) return new DeployError('PARSE_FAILED', `Cannot parse du -sk output line ${JSON.stringify(line.slice(0, 200))}`);
    byDirectory[m[2]!] = Number(m[1]) * 1024;
  }
  const missing = dirs.filter((d) => byDirectory[d] === undefined);
  const unexplained = missing.filter((d) => !stderr.includes(`${d}: No such file or directory`));
  if (unexplained.length) return new DeployError('PARSE_FAILED', `du -sk printed nothing for ${unexplained.join(', ')}: ${stderr.trim().slice(0, 300)}`);
  return { bytes: Object.values(byDirectory).reduce((a, b) => a + b, 0), byDirectory, missing };
}

/** Measure the base userland a thick bundle would carry, with `du -sk` on the (FreeBSD) source. */
export function measureFreeBsdBase(executor: Executor, dirs: readonly string[] = FREEBSD_BASE_DIRS): ResultAsync<FreeBsdBaseMeasurement, ApMigrateError> {
  if (typeof (executor as Partial<Executor> | null)?.exec !== 'function') {
    return errAsync(new InvalidInputError('measureFreeBsdBase arguments', [{ path: 'executor', message: 'must be an Executor (an object with exec)' }]));
  }
  if (!Array.isArray(dirs) || !dirs.every((d) => normalizeAbsolutePath(d).ok)) {
    return errAsync(new InvalidInputError('measureFreeBsdBase arguments', [{ path: 'dirs', message: 'must be an array of absolute paths' }]));
  }
  return executor.exec(['du', '-sk', '--', ...dirs], { allowNonZeroExit: true, timeoutMs: 300_000 }).andThen((r) => {
    const parsed = parseDuSk(r.stdout, r.stderr, dirs);
    if (DeployError.isInstance(parsed)) return errAsync(parsed);
    if (r.code !== 0 && parsed.missing.length === 0) return errAsync(new DeployError('PREFLIGHT_FAILED', `du -sk exited with ${r.code}: ${r.stderr.trim().slice(0, 300)}`));
    return okAsync(parsed);
  });
}

/** What a jail bundle carries and how big it should be. */
export interface JailBundleContents {
  /** `thin`: program, files and library closure; `thick`: plus the base userland. */
  kind: 'thin' | 'thick';
  /** Selection options for the packer and `estimateBundleBytes`. */
  selection: BundleSelectionOptions;
  /** Whole directory trees the packer must add (thick only). The packer needs an `extraTrees` option for this. */
  extraTrees: string[];
  estimate: {
    /** The program, its files (and for thin bundles its libraries), as the bundle estimate computes. */
    programBytes: number;
    /** The base userland (0 for thin bundles). */
    baseBytes: number;
    /** Where `baseBytes` comes from. */
    baseSource: 'not-sent' | 'measured' | 'paper-default';
    totalBytes: number;
    /** A sentence saying which bundle and which base size. */
    note: string;
  };
  /** Planner options that make `planMigration` estimate the same bundle. */
  planOptions: { destination: { provides: string[] }; sizes: Record<string, number> };
}

/**
 * What a jail bundle of `profile` carries. Thin (default): the program, its files and its shared
 * libraries; the destination's base supplies `/bin/sh` and the loader. Thick: the libraries come
 * inside the base userland trees ({@link FREEBSD_BASE_DIRS}), sized by `measuredBaseBytes`
 * (from {@link measureFreeBsdBase}) when known, else the paper's 1108 MB.
 */
export function jailBundleContents(profile: ResourceProfile, options: { thick?: boolean; measuredBaseBytes?: number } = {}): JailBundleContents {
  if (!options.thick) {
    const selection = { includeSharedLibraries: true };
    const programBytes = estimateBundleBytes(profile, selection).bytes;
    return {
      kind: 'thin',
      selection,
      extraTrees: [],
      estimate: { programBytes, baseBytes: 0, baseSource: 'not-sent', totalBytes: programBytes, note: 'thin bundle: program, files and shared libraries; the destination base userland is shared' },
      planOptions: { destination: { provides: ['freebsd-base-userland'] }, sizes: {} },
    };
  }
  const selection = { includeSharedLibraries: false };
  const programBytes = estimateBundleBytes(profile, selection).bytes;
  const measured = options.measuredBaseBytes;
  const baseBytes = measured ?? PAPER_JAIL_BASE_BYTES;
  const source = measured !== undefined ? 'measured' : 'paper-default';
  const mb = (baseBytes / 1048576).toFixed(0);
  return {
    kind: 'thick',
    selection,
    extraTrees: [...FREEBSD_BASE_DIRS],
    estimate: {
      programBytes,
      baseBytes,
      baseSource: source,
      totalBytes: programBytes + baseBytes,
      note:
        source === 'measured'
          ? `thick bundle: program and files plus the base userland, measured at ${mb} MB with du -sk on the source`
          : `thick bundle: program and files plus the base userland, at the paper's default of ${mb} MB (Table 2); measure it with measureFreeBsdBase`,
    },
    planOptions: { destination: { provides: [] }, sizes: measured !== undefined ? { 'jail-base-userland': measured } : {} },
  };
}

/** The bundle selection of `profile` (what the packager sends): the contents' selection plus its whole trees. */
export function jailBundleSelection(profile: ResourceProfile, thick: boolean): BundleSelectionOptions {
  const contents = jailBundleContents(profile, { thick });
  return { ...contents.selection, ...(contents.extraTrees.length ? { extraTrees: contents.extraTrees } : {}) };
}
