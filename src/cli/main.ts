/**
 * The `ap-migrate` command line.
 *
 *   ap-migrate profile [--profiler ebpf|strace|procfs] [--duration SECONDS] [--json] (--pid N | -- COMMAND...)
 *   ap-migrate plan PROFILE.json [--to-os freebsd --to-release 11.4-RELEASE --to-arch amd64] [--method M]... [--compress zstd|gzip [--ratio R|CLASS=R]...] [--json]
 *   ap-migrate migrate --to URL (--pid N | --profile FILE [--pid N] | -- COMMAND...) [--dry-run] [--method M] [--json]
 *                      [--allow-root] [--include PATH]... [--exclude PATH]... [--no-capture]
 *   ap-migrate detect
 *   ap-migrate COMMAND --help | ap-migrate --help | ap-migrate --version
 *
 * Every command rejects options it does not know. Exit codes: 0 success (also --help and
 * --version), 1 the operation failed, 2 bad usage.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApMigrateError, InvalidInputError } from '../errors.js';
import { parseArgs } from 'node:util';
import { CONTENT_CLASSES, formatPlan, planMigration, type CompressionOption } from '../policy/index.js';
import { formatBytes } from '../policy/plan.js';
import type { ResourceProfile } from '../policy/profile.js';
import { detectProfilers } from '../profilers/detect.js';
import { migrate, type MigrateOptions, type MigrationReport, type SourcePolicy } from '../migrate.js';
import { summarizeReasons } from '../capture/summary.js';
import type { ProfileTarget } from '../spec/profiler.js';
import type { CaptureOptions } from '../capture/capture.js';
import { chooseProfiler } from './profilers.js';
import { createProgressLine, progressBar } from './progress.js';
import { openDestination } from './transport.js';

/** Each command's usage, printed by `ap-migrate COMMAND --help` and with its usage errors. */
const COMMAND_USAGE = {
  profile: `  ap-migrate profile [--profiler ebpf|strace|procfs] [--duration SECONDS] [--json] (--pid N | -- COMMAND...)`,
  migrate: `  ap-migrate migrate --to ssh://user@host[:port]/path|/local/path (--pid N | --profile FILE [--pid N] | -- COMMAND...)
                     [--name NAME] [--method ID] [--profiler ebpf|strace|procfs] [--duration SECONDS]
                     [--dry-run] [--json] [--stop-source] [--allow-root] [--cutover copy|stop-and-copy|pre-copy]
                     [--include PATH]... [--exclude PATH]... [--no-capture] [--no-dedup] [--attempts N] [--bwlimit BYTES/S] [--compress auto|zstd|gzip|none]
                     [--identity KEY] [--known-hosts FILE] [--trust-host-key SHA256:...] [--ssh-client auto|openssh|ssh2]
    --cutover MODE    copy (default: copy while it runs, keep it running) or stop-and-copy (freeze it, copy,
                      start and check the copy, then stop the source; thawed on any failure; the downtime is printed)
                      or pre-copy (copy while it runs, then freeze it and send only what changed: shortest downtime)
    --no-dedup        send every file, even those the destination host already has (same path and SHA-256)
    --attempts N      try a cut transfer up to N times, resuming from what the destination verified (default 1)
    --bwlimit RATE    send at most RATE bytes per second (a K, M or G suffix multiplies by 1024s)
    --compress CODEC  compress on the wire: none (default), zstd, gzip, or auto (what both ends have; none on a fast link)
    --allow-root      start the program even though its profile says uid or gid 0 (it runs as root on the destination)
    --include PATH    also carry this absolute path from the source (a directory travels whole); repeatable
    --exclude PATH    leave this absolute path (a directory: everything under it) out of the capture; repeatable
    --no-capture      carry only what the profile lists, no package/config/data-root/account capture (the default for --profile without --include/--exclude)`,
  detect: `  ap-migrate detect`,
  plan: `  ap-migrate plan PROFILE.json [--json] [--method ID]... [--forbid ID]...
                  [--to-os OS --to-release RELEASE --to-arch ARCH] [--size KEY=BYTES]...
                  [--compress zstd|gzip [--level N] [--ratio R | --ratio CLASS=R]...]
    --compress CODEC  rank the methods by their estimates after compression with CODEC (both numbers are printed)
    --ratio R         a measured output/input ratio of the program's data (every class but compressed), or
                      CLASS=R for one class: text, machine-code, compressed, other (default: measured figures, decision 0203)`,
} as const;
type CommandName = keyof typeof COMMAND_USAGE;

const USAGE = `usage:
${COMMAND_USAGE.profile}
${COMMAND_USAGE.migrate}
${COMMAND_USAGE.detect}
${COMMAND_USAGE.plan}
  ap-migrate COMMAND --help | ap-migrate --help | ap-migrate --version`;

/** The usage of one command (or of all). */
function usageOf(command?: CommandName): string {
  return command ? `usage:\n${COMMAND_USAGE[command]}` : USAGE;
}

/** Bad command-line usage: printed with the usage text (of `command` when known), exit code 2. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: CommandName,
  ) {
    super(message);
  }
}

type ParseConfig = NonNullable<Parameters<typeof parseArgs>[0]>;

/**
 * parseArgs for one command: `--help`/`-h` anywhere before `--` prints the command's usage
 * (`undefined` is returned, the caller exits 0); an unknown option, a missing value or an
 * unexpected argument is a {@link UsageError} naming the command.
 */
function parseCommandArgs<T extends ParseConfig>(command: CommandName, config: T): ReturnType<typeof parseArgs<T>> | undefined {
  const loose = parseArgs({ ...config, options: { ...config.options, help: { type: 'boolean', short: 'h' } }, strict: false, tokens: true });
  if ((loose.tokens ?? []).some((t) => t.kind === 'option' && t.name === 'help')) {
    console.log(usageOf(command));
    return undefined;
  }
  try {
    return parseArgs(config);
  } catch (e) {
    if (isUsageError(e)) throw new UsageError(`ap-migrate ${command}: ${(e as Error).message}`, command);
    throw e;
  }
}

/** Print an error as `error [CODE]: message` (each input issue on its own line), or as JSON on stdout. */
function printError(error: ApMigrateError, json: boolean): void {
  if (json) {
    console.log(JSON.stringify({ error: error.toJSON() }, null, 2));
    return;
  }
  console.error(`error [${error.code}]: ${error.message}`);
  if (InvalidInputError.isInstance(error) && error.issues.length > 1) {
    for (const issue of error.issues) console.error(`  ${issue.path || '(whole value)'}: ${issue.message}`);
  }
}

/** Read a file the user named; a missing or unreadable file is a typed error, not a crash. */
async function readInputFile(path: string, what: string): Promise<{ text: string } | { error: ApMigrateError }> {
  try {
    return { text: path === '-' ? await readStdin() : await readFile(path, 'utf8') };
  } catch (e) {
    return { error: new InvalidInputError(what, [{ path, message: `cannot read it: ${(e as Error).message}` }], { cause: e }) };
  }
}

/** `--duration SECONDS` as milliseconds; anything but a positive number is a usage error. */
function durationMs(value: string, command: CommandName): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new UsageError(`--duration must be a positive number of seconds, got "${value}"`, command);
  return seconds * 1000;
}

async function planCommand(args: string[]): Promise<number> {
  const parsed = parseCommandArgs('plan', {
    args,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      method: { type: 'string', multiple: true },
      forbid: { type: 'string', multiple: true },
      'to-os': { type: 'string' },
      'to-release': { type: 'string' },
      'to-arch': { type: 'string' },
      size: { type: 'string', multiple: true },
      compress: { type: 'string' },
      level: { type: 'string' },
      ratio: { type: 'string', multiple: true },
    },
  });
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const file = positionals[0];
  if (!file) throw new UsageError('ap-migrate plan: give the profile file (PROFILE.json, or - for stdin)', 'plan');
  if (positionals.length > 1) throw new UsageError(`ap-migrate plan: takes one profile file, got ${positionals.length}: ${positionals.join(' ')}`, 'plan');
  const read = await readInputFile(file, 'profile file');
  if ('error' in read) {
    printError(read.error, values.json);
    return 1;
  }
  const text = read.text;
  const sizes: Record<string, number> = {};
  for (const pair of values.size ?? []) {
    const [key, bytes] = pair.split('=');
    if (!key || bytes === undefined || !/^[0-9]+$/.test(bytes)) throw new UsageError(`--size takes KEY=BYTES, got "${pair}"`, 'plan');
    sizes[key] = Number(bytes);
  }
  const toPlatform =
    values['to-os'] || values['to-release'] || values['to-arch']
      ? { os: values['to-os'] ?? '', release: values['to-release'] ?? '', arch: values['to-arch'] ?? '' }
      : undefined;
  const compression = planCompressionFlags(values.compress, values.level, values.ratio);
  const result = planMigration(text, {
    ...(values.method ? { allowedMethods: values.method } : {}),
    forbiddenMethods: values.forbid ?? [],
    destination: { ...(toPlatform ? { platform: toPlatform } : {}), provides: [] },
    sizes,
    ...(compression ? { compression } : {}),
  });
  if (result.isErr()) {
    printError(result.error, values.json);
    return 1;
  }
  console.log(values.json ? JSON.stringify(result.value, null, 2) : formatPlan(result.value));
  return 0;
}

function targetFrom(pid: string | undefined, command: string[]): ProfileTarget | string {
  if (pid !== undefined && command.length) return 'give either --pid or a command after --, not both';
  if (pid !== undefined) {
    const n = Number(pid);
    return Number.isInteger(n) && n > 0 ? { pid: n } : `--pid must be a positive integer, got "${pid}"`;
  }
  return command.length ? { command } : 'give --pid N or a command after --';
}

function summarizeProfile(profile: ResourceProfile): string {
  const lines = [`executable: ${profile.executable}  argv: ${JSON.stringify(profile.argv)}  uid/gid: ${profile.uid}/${profile.gid}`];
  lines.push(`platform: ${profile.platform.os} ${profile.platform.release} ${profile.platform.arch}`);
  lines.push(`files (${profile.files.length}):`);
  for (const f of profile.files) {
    lines.push(`  ${f.access.join(',').padEnd(15)} ${f.kind.padEnd(11)} ${String(f.size).padStart(10)}  ${f.path}${f.sharedLibrary ? '  [lib]' : ''}${f.created ? '  [created]' : ''}`);
  }
  lines.push(`sockets (${profile.sockets.length}):`);
  for (const s of profile.sockets) {
    lines.push(`  ${s.family} ${s.protocol} ${s.localAddress ?? ''}${s.localPort !== undefined ? `:${s.localPort}` : ''}${s.path ? ` ${s.path}` : ''}${s.remoteAddress ? ` -> ${s.remoteAddress}:${s.remotePort}` : ''}${s.listening ? ' (listening)' : ''}`);
  }
  lines.push(`ipc (${profile.ipc.length}):`);
  for (const u of profile.ipc) lines.push(`  ${u.kind} ${u.name ?? ''}${u.key !== undefined ? ` key=0x${(u.key >>> 0).toString(16)}` : ''}${u.id !== undefined ? ` id=${u.id}` : ''}`);
  if (!profile.completeness.complete) lines.push(`incomplete: ${profile.completeness.notes.join(' ')}`);
  return lines.join('\n');
}

function splitAtDashes(args: string[]): [string[], string[]] {
  const i = args.indexOf('--');
  return i < 0 ? [args, []] : [args.slice(0, i), args.slice(i + 1)];
}

async function profileCommand(args: string[]): Promise<number> {
  const [flags, command] = splitAtDashes(args);
  const parsed = parseCommandArgs('profile', {
    args: flags,
    options: {
      profiler: { type: 'string' },
      duration: { type: 'string', default: '5' },
      pid: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (!parsed) return 0;
  const { values } = parsed;
  const target = targetFrom(values.pid, command);
  if (typeof target === 'string') throw new UsageError(target, 'profile');
  const duration = durationMs(values.duration, 'profile');
  const chosen = await chooseProfiler(values.profiler, 'pid' in target);
  if (!chosen.profiler) {
    console.error(`error [PROFILER_UNAVAILABLE]: ${chosen.reason}`);
    return 1;
  }
  const line = createProgressLine();
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  const result = await chosen.profiler.profile(target, {
    durationMs: duration,
    signal: controller.signal,
    onProgress: (p) => line.update(`${chosen.profiler!.name}: ${p.events} events, ${(p.elapsedMs / 1000).toFixed(1)} s`),
  });
  line.done();
  if (result.isErr()) {
    printError(result.error, values.json);
    return 1;
  }
  console.log(values.json ? JSON.stringify(result.value, null, 2) : summarizeProfile(result.value));
  return 0;
}

const MIGRATE_FLAGS = {
  to: { type: 'string' },
  pid: { type: 'string' },
  profile: { type: 'string' },
  profiler: { type: 'string' },
  duration: { type: 'string', default: '3' },
  name: { type: 'string' },
  method: { type: 'string' },
  'dry-run': { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
  'stop-source': { type: 'boolean', default: false },
  identity: { type: 'string' },
  'known-hosts': { type: 'string' },
  'trust-host-key': { type: 'string' },
  'ssh-client': { type: 'string' },
  'allow-root': { type: 'boolean', default: false },
  cutover: { type: 'string' },
  include: { type: 'string', multiple: true },
  exclude: { type: 'string', multiple: true },
  'no-capture': { type: 'boolean', default: false },
  'no-dedup': { type: 'boolean', default: false },
  attempts: { type: 'string' },
  bwlimit: { type: 'string' },
  compress: { type: 'string' },
} as const;

type MigrateFlags = NonNullable<ReturnType<typeof parseMigrateFlags>>['values'];

function parseMigrateFlags(flags: string[]) {
  return parseCommandArgs('migrate', { args: flags, options: MIGRATE_FLAGS });
}

/**
 * The capture option from the flags: the library's default (on when profiling here, off for
 * --profile) unless a flag says otherwise; --include/--exclude turn it on for --profile too.
 * Paths are checked (absolute, present) by the capture.
 */
function captureFromFlags(values: MigrateFlags): CaptureOptions | false | undefined {
  if (values['no-capture'] && (values.include?.length || values.exclude?.length)) {
    throw new UsageError('--no-capture turns the capture off: it cannot be combined with --include or --exclude', 'migrate');
  }
  if (values['no-capture']) return false;
  if (!values.include?.length && !values.exclude?.length) return undefined;
  return { ...(values.include?.length ? { include: values.include } : {}), ...(values.exclude?.length ? { exclude: values.exclude } : {}) };
}

/** The migrate target from --profile (with an optional --pid), --pid or a command; a typed error for a bad profile file. */
async function migrateTarget(values: MigrateFlags, command: string[]): Promise<MigrateOptions['target'] | ApMigrateError> {
  if (!values.profile) {
    const t = targetFrom(values.pid, command);
    if (typeof t === 'string') throw new UsageError(t, 'migrate');
    return t;
  }
  if (command.length) throw new UsageError('give either --profile or a command after --, not both', 'migrate');
  const pid = values.pid === undefined ? undefined : targetFrom(values.pid, []);
  if (typeof pid === 'string') throw new UsageError(pid, 'migrate');
  const read = await readInputFile(values.profile, 'profile file');
  if ('error' in read) return read.error;
  try {
    return { profile: JSON.parse(read.text) as never, ...(pid && 'pid' in pid ? { pid: pid.pid } : {}) };
  } catch (e) {
    return new InvalidInputError('profile file', [{ path: values.profile, message: `not JSON: ${(e as Error).message}` }]);
  }
}

/** `plan --compress CODEC [--level N] [--ratio R | --ratio CLASS=R]...`: the plan's compression option (values are checked by the planner). */
function planCompressionFlags(codec: string | undefined, level: string | undefined, ratios: string[] | undefined): CompressionOption | undefined {
  if (codec === undefined) {
    if (level !== undefined || ratios?.length) throw new UsageError('--level and --ratio need --compress zstd|gzip', 'plan');
    return undefined;
  }
  if (codec === 'none') return undefined;
  if (codec !== 'zstd' && codec !== 'gzip') throw new UsageError(`--compress must be zstd, gzip or none, got "${codec}"`, 'plan');
  const number = (text: string, flag: string): number => {
    if (!/^[0-9]+(\.[0-9]+)?$/.test(text)) throw new UsageError(`${flag} takes a number, got "${text}"`, 'plan');
    return Number(text);
  };
  let ratio: CompressionOption['ratio'];
  for (const text of ratios ?? []) {
    const eq = text.indexOf('=');
    if (eq < 0) {
      if (ratio !== undefined) throw new UsageError('--ratio R (every class) cannot be combined with other --ratio flags', 'plan');
      ratio = number(text, '--ratio');
      continue;
    }
    if (typeof ratio === 'number') throw new UsageError('--ratio R (every class) cannot be combined with other --ratio flags', 'plan');
    const cls = text.slice(0, eq);
    if (!(CONTENT_CLASSES as readonly string[]).includes(cls)) throw new UsageError(`--ratio CLASS=R: CLASS is one of ${CONTENT_CLASSES.join(', ')}, got "${cls}"`, 'plan');
    ratio = { ...ratio, [cls]: number(text.slice(eq + 1), '--ratio') };
  }
  return { codec, ...(level !== undefined ? { level: number(level, '--level') } : {}), ...(ratio !== undefined ? { ratio } : {}) };
}

/** The migration's outcome for people. */
function printMigrationReport(r: MigrationReport): void {
  console.log(formatPlan(r.plan));
  console.log(`\n${r.dryRun ? 'dry run: nothing sent' : `migrated ${r.name} with ${r.method}`}`);
  console.log(`estimated ${formatBytes(r.estimatedBytes)} (bundle ${formatBytes(r.bundleEstimatedBytes)}), sent ${formatBytes(r.bytesSent)} incl. manifest ${formatBytes(r.manifestBytes)}`);
  const compressed = r.compression !== undefined && r.compression.codec !== 'none';
  if (compressed) {
    const estimate = r.estimatedWireBytes !== undefined ? `estimated ${formatBytes(r.estimatedWireBytes)} on the wire` : '';
    const level = r.compression!.level !== undefined ? ` level ${r.compression!.level}` : '';
    const sent = r.dryRun ? '' : `${estimate ? ', ' : ''}${formatBytes(r.wireBytes)} on the wire for ${formatBytes(r.bytesSent)} of bundle${r.bytesSent > 0 ? ` (ratio ${(r.wireBytes / r.bytesSent).toFixed(3)})` : ''}`;
    console.log(`compression ${r.compression!.codec}${level}: ${estimate}${sent}`);
  }
  for (const p of r.phases) console.log(`  ${p.phase.padEnd(10)} ${p.ms.toFixed(0).padStart(7)} ms`);
  if (r.destination) console.log(`destination: ${r.destination.installDir} pid ${r.destination.pid} ${r.destination.endpoints.join(' ')}`);
  console.log(`source: ${r.source.action}${r.source.pid ? ` (pid ${r.source.pid})` : ''}`);
  const reasons = Object.entries(summarizeReasons(r.profile)).filter(([, v]) => v.files > 0);
  if (reasons.length) console.log(`carried, by reason: ${reasons.map(([k, v]) => `${k} ${v.files} files ${formatBytes(v.bytes)}`).join(', ')}`);
  console.log(`cutover: ${r.cutover.mode}${r.cutover.downtimeMs !== undefined ? `, downtime ${r.cutover.downtimeMs.toFixed(0)} ms` : ''}; total ${r.totalMs.toFixed(0)} ms`);
  for (const round of r.rounds) {
    const tries = round.attempts > 1 ? `, ${round.attempts} attempts (${round.bytesSentBefore} bytes before the last${compressed ? `, ${round.wireBytesBefore} on the wire` : ''})` : '';
    const wire = compressed ? ` (${round.wireBytes} on the wire)` : '';
    console.log(`round ${round.round}: ${round.bytesSent} bytes sent${wire}, ${round.seededBytes} bytes the destination already had${tries}`);
  }
}

/** `--compress`: one of the codecs, or auto. */
function compressionFlag(text: string): 'auto' | 'zstd' | 'gzip' | 'none' {
  if (text === 'auto' || text === 'zstd' || text === 'gzip' || text === 'none') return text;
  throw new UsageError(`--compress must be auto, zstd, gzip or none, got "${text}"`);
}

/** `--bwlimit`: bytes per second, with an optional K, M or G (powers of 1024). */
function bytesPerSecond(text: string): number {
  const match = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(text.trim());
  if (!match) throw new UsageError(`--bwlimit must be a number of bytes per second (e.g. 12M), got "${text}"`);
  const scale = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[(match[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Math.floor(Number(match[1]) * scale);
}

/** The options of `migrate()` the flags say, apart from target, destination and profiler. */
function migrateOptionsFromFlags(values: MigrateFlags): Omit<MigrateOptions, 'target' | 'destination' | 'profiler'> {
  const cutover = values.cutover ?? 'copy';
  if (cutover !== 'copy' && cutover !== 'stop-and-copy' && cutover !== 'pre-copy') throw new UsageError(`--cutover must be copy, stop-and-copy or pre-copy, got "${cutover}"`);
  const attempts = values.attempts === undefined ? undefined : Number(values.attempts);
  if (attempts !== undefined && !(Number.isInteger(attempts) && attempts >= 1 && attempts <= 20)) throw new UsageError(`--attempts must be a whole number from 1 to 20, got "${values.attempts}"`);
  const capture = captureFromFlags(values);
  const sourcePolicy: SourcePolicy = values['stop-source'] ? 'stop' : 'keep-running';
  return {
    cutover,
    profileDurationMs: durationMs(values.duration, 'migrate'),
    ...(values.name ? { name: values.name } : {}),
    ...(values.method ? { method: values.method } : {}),
    dryRun: values['dry-run'],
    ...(values['allow-root'] ? { allowRoot: true } : {}),
    ...(capture !== undefined ? { capture } : {}),
    ...(values['no-dedup'] ? { dedup: false } : {}),
    ...(attempts !== undefined ? { transferAttempts: attempts } : {}),
    ...(values.bwlimit !== undefined ? { bandwidthLimit: bytesPerSecond(values.bwlimit) } : {}),
    ...(values.compress !== undefined ? { compression: compressionFlag(values.compress) } : {}),
    sourcePolicy,
  };
}

async function migrateCommand(args: string[]): Promise<number> {
  const [flags, command] = splitAtDashes(args);
  const parsed = parseMigrateFlags(flags);
  if (!parsed) return 0;
  const { values } = parsed;
  if (!values.to) throw new UsageError('--to is required', 'migrate');
  if (values['ssh-client'] !== undefined && !['auto', 'openssh', 'ssh2'].includes(values['ssh-client'])) {
    throw new UsageError(`--ssh-client must be auto, openssh or ssh2, got "${values['ssh-client']}"`, 'migrate');
  }
  const options = migrateOptionsFromFlags(values);
  const target = await migrateTarget(values, command);
  if (ApMigrateError.isInstance(target)) {
    printError(target, values.json);
    return 1;
  }
  const chosen = 'profile' in target ? {} : await chooseProfiler(values.profiler, 'pid' in target);
  if (!('profile' in target) && !chosen.profiler) {
    console.error(`error [PROFILER_UNAVAILABLE]: ${chosen.reason}`);
    return 1;
  }
  const transport = await openDestination(values.to, {
    ...(values.identity ? { identity: values.identity } : {}),
    ...(values['known-hosts'] ? { knownHosts: values['known-hosts'] } : {}),
    ...(values['trust-host-key'] ? { trustHostKey: values['trust-host-key'] } : {}),
    ...(values['ssh-client'] ? { client: values['ssh-client'] } : {}),
  });
  if (transport.isErr()) {
    printError(transport.error, values.json);
    return 1;
  }
  const line = createProgressLine();
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  const result = await migrate({
    ...options,
    target,
    destination: transport.value,
    ...(chosen.profiler ? { profiler: chosen.profiler } : {}),
    signal: controller.signal,
    onProgress: (p) =>
      line.update(p.phase === 'transfer' && p.bytesTotal ? `transfer ${progressBar(p.bytesSent ?? 0, p.bytesTotal)} ${formatBytes(p.bytesSent ?? 0)}` : `${p.phase}...`),
  });
  line.done();
  await transport.value.close();
  if (result.isErr()) {
    printError(result.error, values.json);
    return 1;
  }
  if (values.json) console.log(JSON.stringify(result.value, null, 2));
  else printMigrationReport(result.value);
  return 0;
}

async function detectCommand(args: string[]): Promise<number> {
  if (!parseCommandArgs('detect', { args, options: {} })) return 0;
  for (const p of await detectProfilers()) console.log(`${p.name.padEnd(8)} ${p.available ? 'available' : 'unavailable'}${p.reason ? `: ${p.reason}` : ''}`);
  return 0;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The version in the package.json of the installed package: the first package.json named
 * `ap-migrate` above this file (dist/cli.js, or src/cli/main.ts when run from sources).
 */
function packageVersion(): string | undefined {
  let dir: string;
  try {
    dir = dirname(fileURLToPath(import.meta.url));
  } catch {
    return undefined;
  }
  for (let depth = 0; depth < 6; depth++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'ap-migrate' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // no (readable) package.json here: look further up
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}

function isCommand(name: string | undefined): name is CommandName {
  return name !== undefined && Object.hasOwn(COMMAND_USAGE, name);
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'plan':
      return planCommand(rest);
    case 'profile':
      return profileCommand(rest);
    case 'migrate':
      return migrateCommand(rest);
    case 'detect':
      return detectCommand(rest);
    case undefined:
      console.error(USAGE);
      return 2;
    case '-h':
    case '--help':
    case 'help': {
      const about = rest[0];
      if (about !== undefined && !isCommand(about)) throw new UsageError(`unknown command "${about}"`);
      if (rest.length > 1) throw new UsageError(`${command} takes at most one command name`);
      console.log(usageOf(about));
      return 0;
    }
    case '--version': {
      if (rest.length > 0) throw new UsageError('--version takes no arguments');
      const version = packageVersion();
      if (!version) {
        console.error('error [INTERNAL]: the package.json of ap-migrate was not found next to the program');
        return 1;
      }
      console.log(version);
      return 0;
    }
    default:
      throw new UsageError(command.startsWith('-') ? `unknown option "${command}" (options go after the command)` : `unknown command "${command}"`);
  }
}

/** parseArgs rejects unknown options and missing values with these codes: bad usage. */
function isUsageError(error: unknown): boolean {
  if (error instanceof UsageError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_');
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    if (isUsageError(error)) {
      console.error(`${message}\n${usageOf(error instanceof UsageError ? error.command : undefined)}`);
      process.exitCode = 2;
    } else {
      console.error(`error [INTERNAL]: ${message}`);
      process.exitCode = 1;
    }
  },
);
