/**
 * `planMigration`: resource profile -> allowed isolation methods -> the cheapest by estimated
 * transfer size (after compression, when `options.compression` says the bundle is compressed on
 * the wire), with every decision explained. Pure: no I/O, no `node:` imports.
 *
 * @module
 */
import { err, ok, type Result } from 'neverthrow';
import { z } from 'zod';
import { InvalidInputError, NoAllowedMethodError, UnknownMethodError, type PlanError } from '../errors.js';
import { CLASS_OF_KIND, classifyProfile, RESOURCE_KIND_LABELS, type KindEvidence, type ResourceKind } from './classify.js';
import {
  CONTENT_CLASSES,
  defaultCompressionRatios,
  estimateTransfer,
  measureProfile,
  type ContentClass,
  type TransferEstimate,
  type WireCompression,
} from './estimate.js';
import { capabilityFor, IsolationMethodSchema, BUILTIN_METHODS, MB, type Capability, type IsolationMethod } from './methods.js';
import { PlatformSchema, safeParseProfile, type Platform, type ResourceClass, type ResourceProfile } from './profile.js';
import { validateInput } from './validate.js';

/**
 * Version of the decision rules. It changes whenever a built-in capability row, default size or
 * rule changes, so a stored plan says which rules made it.
 */
export const RULES_VERSION = '2026.12.1';

/** How much a concern matters: a blocker rules a method out. */
export type ConcernSeverity = 'blocker' | 'warning' | 'info';

/** Something the planner wants a person to know about a candidate or the plan. */
export interface Concern {
  /** Stable identifier, e.g. `not-isolated:sysv-shm`, `os-mismatch`, `estimate-default`. */
  id: string;
  severity: ConcernSeverity;
  /** A sentence a person understands. */
  message: string;
  /** What to do about it, when something can be done. */
  fix?: string;
}

/** How one isolation method fares for this profile. */
export interface CandidateEvaluation {
  method: string;
  name: string;
  weight: number;
  /** True when no blocker concern applies. */
  allowed: boolean;
  /** Kinds this method isolates on the destination platform (empty when it does not run there). */
  isolates: ResourceKind[];
  /** The capability row used, when one applies. */
  capability?: Capability;
  estimate: TransferEstimate;
  concerns: Concern[];
}

/** The planner's answer. */
export interface MigrationPlan {
  rulesVersion: string;
  /** Platform the program runs on now. */
  source: Platform;
  /** Platform the methods were judged for (the destination's, or the source's when unknown). */
  destination: Platform;
  /** Resource classes the program uses (file, network, ipc). */
  classes: ResourceClass[];
  /** Finer kinds, with the evidence that put each in the set. */
  kinds: ResourceKind[];
  evidence: KindEvidence[];
  /**
   * The chosen method id: the allowed candidate with the smallest estimate; with compression on
   * the wire, the smallest estimate after compression (`estimate.wireBytes`).
   */
  chosen: string;
  /** Compression on the wire the estimates assume (absent: none, and no `wireBytes`). */
  compression?: WireCompression;
  /** Every candidate: allowed ones first, cheapest first; then rejected ones, lightest first. */
  candidates: CandidateEvaluation[];
  /** Concerns about the plan as a whole (e.g. an incomplete profile). */
  concerns: Concern[];
}

const ratioSchema = z
  .number({ error: 'must be a number (output bytes per input byte)' })
  .finite('must be finite')
  .positive('must be positive')
  .max(2, 'must be at most 2 (output bytes per input byte)');

/** Compression on the wire, as a caller states it in {@link PlanOptions}. */
export const CompressionOptionSchema = z
  .object({
    codec: z.enum(['zstd', 'gzip'], { error: 'must be zstd or gzip (leave compression out for none)' }),
    level: z.number().int('must be an integer').min(1, 'must be at least 1').max(19, 'must be at most 19').optional(),
    ratio: z
      .union([
        ratioSchema,
        z.strictObject({ text: ratioSchema.optional(), 'machine-code': ratioSchema.optional(), compressed: ratioSchema.optional(), other: ratioSchema.optional() }),
      ])
      .optional(),
  })
  .refine((c) => c.codec !== 'gzip' || c.level === undefined || c.level <= 9, { message: 'gzip levels are 1 to 9', path: ['level'] });
/** Compression on the wire for {@link PlanOptions}: the codec, its level, measured ratios. */
export type CompressionOption = z.input<typeof CompressionOptionSchema>;

/** Options that steer {@link planMigration}. All optional; validated. */
export const PlanOptionsSchema = z.object({
  /** Only these method ids may be chosen (others are evaluated but rejected). */
  allowedMethods: z.array(z.string()).optional(),
  /** These method ids may not be chosen. */
  forbiddenMethods: z.array(z.string()).default([]),
  /** Facts about the destination. */
  destination: z
    .object({
      /** Its platform; defaults to the source's. */
      platform: PlatformSchema.optional(),
      /** What it already has, e.g. `freebsd-base-userland` (a jail then sends no base). */
      provides: z.array(z.string()).default([]),
    })
    .default({ provides: [] }),
  /**
   * The VM that hosts the program. `false`: the program is known not to run in a VM we can move,
   * so VM methods are ruled out. Absent: not asked (planning in the abstract; VM methods stay
   * candidates with a default image size).
   */
  hostingVm: z.union([z.literal(false), z.object({ name: z.string().min(1), sizeBytes: z.number().int().nonnegative().optional() })]).optional(),
  /** Measured sizes that replace defaults, by size key: `jail-base-userland`, `vm-image`. */
  sizes: z.record(z.string(), z.number().int().nonnegative('sizes must not be negative')).default({}),
  /**
   * The bundle is compressed on the wire with `codec` (at `level`, default 1): every estimate then
   * carries `wireBytes`, and the cheapest method is the one with the fewest of them. `ratio` is
   * output/input measured on this program's data: one number for every class but `compressed`
   * (which stays 1), or a ratio per content class; classes not given take the measured defaults of
   * decision 0203 ({@link MEASURED_COMPRESSION_RATIOS}).
   */
  compression: CompressionOptionSchema.optional(),
});
/** Options that steer the planner, as written by a caller. */
export type PlanOptions = z.input<typeof PlanOptionsSchema> & {
  /** Methods to consider; defaults to {@link BUILTIN_METHODS}. Add your own with `[...BUILTIN_METHODS, mine]`. */
  methods?: readonly IsolationMethod[];
};

const KIND_LABEL = RESOURCE_KIND_LABELS;

// Names that mean the same machine architecture on different systems.
const ARCH_ALIASES: Record<string, string> = { amd64: 'x86_64', x64: 'x86_64', arm64: 'aarch64' };
const normalArch = (arch: string) => ARCH_ALIASES[arch] ?? arch;

function describePlatform(p: Platform): string {
  return `${p.os === 'freebsd' ? 'FreeBSD' : p.os === 'linux' ? 'Linux' : p.os} ${p.release}`;
}

function describeRange(row: Capability): string {
  if (row.minRelease && row.belowRelease) return ` ${row.minRelease} to before ${row.belowRelease}`;
  if (row.minRelease) return ` ${row.minRelease}+`;
  if (row.belowRelease) return ` before ${row.belowRelease}`;
  return '';
}

/**
 * Which methods would isolate `kind` on the destination: plainly when the destination's own
 * release does, else naming the release range (and settings) that would.
 */
function isolationHint(kind: ResourceKind, destination: Platform, methods: readonly IsolationMethod[]): string {
  const hints: string[] = [];
  for (const method of methods) {
    const current = capabilityFor(method, destination.os, destination.release);
    const row = current?.isolates.includes(kind)
      ? current
      : method.capabilities.find((r) => (r.os === destination.os || r.os === '*') && r.isolates.includes(kind));
    if (!row) continue;
    const range = row === current || row.os === '*' ? '' : describeRange(row);
    const requires = row.requires.length ? ` with ${row.requires.join(', ')}` : '';
    hints.push(`${method.id}${range}${requires}`);
  }
  return hints.length ? `use ${hints.join(' or ')}` : 'no known method isolates this; register one';
}

function isVmLike(row: Capability | undefined): boolean {
  return row?.os === '*';
}

interface Context {
  profile: ResourceProfile;
  destination: Platform;
  kinds: ResourceKind[];
  evidence: Map<ResourceKind, KindEvidence>;
  methods: readonly IsolationMethod[];
  options: z.output<typeof PlanOptionsSchema>;
  compression?: WireCompression;
}

/** Blockers from where the method runs: not on the destination's platform, or another OS or architecture. */
function platformConcerns(method: IsolationMethod, capability: Capability | undefined, ctx: Context): Concern[] {
  const { destination } = ctx;
  if (!capability) {
    const where = method.capabilities.map((r) => `${r.os}${describeRange(r)}`).join(', ');
    return [{ id: 'platform-unsupported', severity: 'blocker', message: `${method.name} is not available on ${describePlatform(destination)} (it runs on: ${where}).` }];
  }
  if (isVmLike(capability)) return [];
  const concerns: Concern[] = [];
  if (ctx.profile.platform.os !== destination.os) {
    concerns.push({
      id: 'os-mismatch',
      severity: 'blocker',
      message: `The program is built for ${ctx.profile.platform.os} but the destination runs ${destination.os}; only a VM carries its own OS.`,
    });
  }
  if (normalArch(ctx.profile.platform.arch) !== normalArch(destination.arch)) {
    concerns.push({ id: 'arch-mismatch', severity: 'blocker', message: `The program is built for ${ctx.profile.platform.arch} but the destination is ${destination.arch}.` });
  }
  return concerns;
}

/** Blockers for every resource kind the program uses that the method does not isolate there; a warning for host configuration IPC needs. */
function isolationConcerns(method: IsolationMethod, capability: Capability, ctx: Context): Concern[] {
  const { destination } = ctx;
  const concerns: Concern[] = [];
  for (const kind of ctx.kinds) {
    if (capability.isolates.includes(kind)) continue;
    const ev = ctx.evidence.get(kind)!;
    concerns.push({
      id: `not-isolated:${kind}`,
      severity: 'blocker',
      message: `The program uses ${KIND_LABEL[kind]} (${ev.detail}${ev.count > 1 ? ` and ${ev.count - 1} more` : ''}); ${method.name} on ${describePlatform(destination)} does not isolate ${KIND_LABEL[kind]}.`,
      fix: isolationHint(kind, destination, ctx.methods),
    });
  }
  const needed = capability.requires.length > 0 && ctx.kinds.some((k) => CLASS_OF_KIND[k] === 'ipc' && capability.isolates.includes(k));
  if (needed) {
    concerns.push({
      id: 'requires-host-config',
      severity: 'warning',
      message: `Isolating the program's IPC with ${method.name} needs ${capability.requires.join(', ')} at the destination.`,
      fix: 'the pre-flight check verifies the destination supports it',
    });
  }
  return concerns;
}

/** Blockers the caller's options impose: no hosting VM named, not allowed, forbidden. */
function optionConcerns(method: IsolationMethod, options: Context['options']): Concern[] {
  const concerns: Concern[] = [];
  if (method.movesHostingVm && options.hostingVm === false) {
    concerns.push({
      id: 'vm-unknown',
      severity: 'blocker',
      message: `${method.name} moves the VM that hosts the program, and no such VM was named.`,
      fix: 'name the VM (its vSphere endpoint and name) to make it a candidate',
    });
  }
  if (options.allowedMethods && !options.allowedMethods.includes(method.id)) {
    concerns.push({ id: 'not-allowed-by-options', severity: 'blocker', message: `${method.id} is not among the allowed methods.` });
  }
  if (options.forbiddenMethods.includes(method.id)) {
    concerns.push({ id: 'forbidden-by-options', severity: 'blocker', message: `${method.id} is forbidden by the options.` });
  }
  return concerns;
}

/** The compression the estimates assume: the caller's measured ratios over the defaults of its codec and level. */
export function resolveCompression(option: z.output<typeof CompressionOptionSchema>): WireCompression {
  const level = option.level ?? defaultCompressionRatios(option.codec).level;
  const defaults = defaultCompressionRatios(option.codec, level);
  const given: Partial<Record<ContentClass, number>> =
    typeof option.ratio === 'number' ? { text: option.ratio, 'machine-code': option.ratio, other: option.ratio } : { ...option.ratio };
  const measured = CONTENT_CLASSES.filter((cls) => given[cls] !== undefined);
  const ratios = { ...defaults.ratios };
  for (const cls of measured) ratios[cls] = given[cls]!;
  return { codec: option.codec, level, ratios, measured, basis: defaults.basis };
}

/** The method's transfer estimate, and an info concern for every figure that is a default rather than a measurement. */
function estimateFor(method: IsolationMethod, ctx: Context, sizes: ReturnType<typeof measureProfile>): { estimate: TransferEstimate; concerns: Concern[] } {
  const { options } = ctx;
  const vmSize = method.movesHostingVm && options.hostingVm ? options.hostingVm.sizeBytes : undefined;
  const estimate = estimateTransfer(method, sizes, {
    destinationProvides: new Set(options.destination.provides),
    // A measured VM size (from the hypervisor's file layout) replaces the image default.
    sizes: vmSize !== undefined ? { ...options.sizes, 'vm-image': vmSize } : options.sizes,
    ...(ctx.compression ? { compression: ctx.compression } : {}),
  });
  const concerns = estimate.items
    .filter((item) => item.source === 'default')
    .map((item): Concern => ({
      id: 'estimate-default',
      severity: 'info',
      message: `The ${item.label} size (${item.bytes % MB === 0 ? `${item.bytes / MB} MB` : formatBytes(item.bytes)}) is a default from ${item.basis}, not a measurement.`,
      fix: 'pass a measured size in options.sizes to replace it',
    }));
  return { estimate, concerns };
}

function evaluate(method: IsolationMethod, ctx: Context, sizes: ReturnType<typeof measureProfile>): CandidateEvaluation {
  const capability = capabilityFor(method, ctx.destination.os, ctx.destination.release);
  const { estimate, concerns: estimateConcerns } = estimateFor(method, ctx, sizes);
  const concerns = [
    ...platformConcerns(method, capability, ctx),
    ...(capability ? isolationConcerns(method, capability, ctx) : []),
    ...optionConcerns(method, ctx.options),
    ...estimateConcerns,
  ];
  return {
    method: method.id,
    name: method.name,
    weight: method.weight,
    allowed: !concerns.some((c) => c.severity === 'blocker'),
    isolates: capability ? [...capability.isolates] : [],
    ...(capability ? { capability } : {}),
    estimate,
    concerns,
  };
}

/** Format a byte count for people (binary units, as the paper's MB). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

// Cheapest first (on the wire, when compressed); equal estimates go to the lighter method, then
// by id, so plans are deterministic.
function compareAllowed(a: CandidateEvaluation, b: CandidateEvaluation): number {
  const cost = (c: CandidateEvaluation) => c.estimate.wireBytes ?? c.estimate.totalBytes;
  return cost(a) - cost(b) || a.weight - b.weight || (a.method < b.method ? -1 : a.method > b.method ? 1 : 0);
}
function compareRejected(a: CandidateEvaluation, b: CandidateEvaluation): number {
  return a.weight - b.weight || (a.method < b.method ? -1 : a.method > b.method ? 1 : 0);
}

/**
 * Decide how to move a program.
 *
 * `profile` may be a {@link ResourceProfile}, a plain object, or a JSON string; it is validated.
 * Returns the plan, or a typed error: {@link InvalidInputError} (naming the field),
 * {@link UnknownMethodError} (an option names a method nobody registered), or
 * {@link NoAllowedMethodError} (every candidate has a blocker; `details.candidates` says why).
 * Never throws.
 */
export function planMigration(profile: unknown, options: PlanOptions = {}): Result<MigrationPlan, PlanError> {
  return parsePlanInput(profile, options).andThen(({ profile: prof, options: opts, methods }) => decide(prof, opts, methods));
}

/** The parsed inputs of a plan: the profile, the options, and the method list (built-ins unless given). */
interface PlanInput {
  profile: ResourceProfile;
  options: Context['options'];
  methods: readonly IsolationMethod[];
}

/** Validate a custom method list: each method well-formed, ids unique. */
function checkMethodList(methods: readonly unknown[]): InvalidInputError | undefined {
  const ids = new Set<string>();
  for (const [i, m] of methods.entries()) {
    const check = IsolationMethodSchema.safeParse(m);
    if (!check.success) return new InvalidInputError('plan options', [{ path: `methods.${i}`, message: check.error.issues[0]?.message ?? 'invalid' }]);
    if (ids.has(check.data.id)) return new InvalidInputError('plan options', [{ path: `methods.${i}.id`, message: `duplicate method id "${check.data.id}"` }]);
    ids.add(check.data.id);
  }
  return undefined;
}

/** Validate the profile and options (never throws on any value) and resolve the method list. */
function parsePlanInput(profile: unknown, options: PlanOptions | undefined): Result<PlanInput, PlanError> {
  const parsedProfile = validateInput({ safeParse: safeParseProfile }, profile, 'resource profile');
  if (parsedProfile.isErr()) return err(parsedProfile.error);
  // By hand before zod: `null`, a string or an array here must not throw while being taken apart.
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    return err(new InvalidInputError('plan options', [{ path: '', message: `must be an object or left out, got ${options === null ? 'null' : Array.isArray(options) ? 'an array' : typeof options}` }]));
  }
  const { methods: methodsOption, ...rest } = options ?? {};
  if (methodsOption !== undefined && !Array.isArray(methodsOption)) {
    return err(new InvalidInputError('plan options', [{ path: 'methods', message: 'must be an array of isolation methods' }]));
  }
  const parsedOptions = validateInput(PlanOptionsSchema, rest, 'plan options');
  if (parsedOptions.isErr()) return err(parsedOptions.error);
  const badList = methodsOption ? checkMethodList(methodsOption) : undefined;
  if (badList) return err(badList);
  const methods = methodsOption ?? BUILTIN_METHODS;
  const known = methods.map((m) => m.id);
  for (const id of [...(parsedOptions.value.allowedMethods ?? []), ...parsedOptions.value.forbiddenMethods]) {
    if (!known.includes(id)) return err(new UnknownMethodError(id, known));
  }
  return ok({ profile: parsedProfile.value, options: parsedOptions.value, methods });
}

/** Concerns about the plan as a whole, not one method: an incomplete profile, default compression ratios. */
function planWideConcerns(prof: ResourceProfile, compression: Context['compression']): Concern[] {
  const concerns: Concern[] = [];
  if (!prof.completeness.complete) {
    concerns.push({
      id: 'profile-incomplete',
      severity: 'warning',
      message: `The profile may be incomplete: ${prof.completeness.notes.join(' ') || 'the profiler could not see every use.'}`,
      fix: 'profile the program from its start with the ebpf or strace profiler',
    });
  }
  const defaulted = compression ? CONTENT_CLASSES.filter((cls) => cls !== 'compressed' && !compression.measured.includes(cls)) : [];
  if (compression && defaulted.length > 0) {
    concerns.push({
      id: 'compression-ratio-default',
      severity: 'info',
      message: `The estimates after compression use default ratios for ${defaulted.map((cls) => `${cls} (${compression.ratios[cls]})`).join(', ')} from ${compression.basis}, not a measurement of this program's data; already-compressed files count at ${compression.ratios.compressed}.`,
      fix: 'pass measured ratios in options.compression.ratio',
    });
  }
  return concerns;
}

/** Evaluate every method for the profile and choose the cheapest allowed one. */
function decide(prof: ResourceProfile, opts: Context['options'], methods: readonly IsolationMethod[]): Result<MigrationPlan, PlanError> {
  const classification = classifyProfile(prof);
  const ctx: Context = {
    profile: prof,
    destination: opts.destination.platform ?? prof.platform,
    kinds: classification.kinds,
    evidence: new Map(classification.evidence.map((e) => [e.kind, e])),
    methods,
    options: opts,
    ...(opts.compression ? { compression: resolveCompression(opts.compression) } : {}),
  };
  const sizes = measureProfile(prof);
  const evaluations = methods.map((m) => evaluate(m, ctx, sizes));
  const allowed = evaluations.filter((c) => c.allowed).sort(compareAllowed);
  const rejected = evaluations.filter((c) => !c.allowed).sort(compareRejected);

  const compression = ctx.compression;
  const planConcerns = planWideConcerns(prof, compression);

  const best = allowed[0];
  if (!best) {
    const reasons = rejected
      .map((c) => `${c.method}: ${c.concerns.filter((x) => x.severity === 'blocker').map((x) => x.message).join(' ')}`)
      .join('; ');
    return err(
      new NoAllowedMethodError(`No isolation method is allowed for this program. ${reasons}`, {
        classes: classification.classes,
        kinds: classification.kinds,
        candidates: rejected,
      }),
    );
  }
  return ok({
    rulesVersion: RULES_VERSION,
    source: prof.platform,
    destination: ctx.destination,
    classes: classification.classes,
    kinds: classification.kinds,
    evidence: classification.evidence,
    chosen: best.method,
    ...(compression ? { compression } : {}),
    candidates: [...allowed, ...rejected],
    concerns: planConcerns,
  });
}
