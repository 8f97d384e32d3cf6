/**
 * What a FreeBSD destination can do for a jail: its release, whether jails can get their own
 * SysV IPC namespace (`sysvshm/sysvsem/sysvmsg=new`, FreeBSD 11 and later), and whether the
 * kernel has VIMAGE (per-jail network stacks, `vnet`).
 *
 * Facts come from `uname -r` and `sysctl -n <oid>` over an {@link Executor}. A sysctl the kernel
 * does not have is not an error: `sysctl` says `unknown oid` and exits 1, which means "no".
 * VNET is read from `kern.features.vimage` rather than `kldstat`: VIMAGE is a kernel build option,
 * never a loadable module, so `kldstat` cannot show it.
 *
 * @module
 */
import { err, errAsync, ok, okAsync, type Result, type ResultAsync } from 'neverthrow';
import { ApMigrateError, InvalidInputError } from '../errors.js';
import type { ExecResult, Executor } from '../spec/executor.js';
import { FreeBsdParseError } from '../profilers/freebsd-parsers.js';

/** Jail-relevant capabilities of a FreeBSD host. */
export interface FreeBsdHostFacts {
  /** `uname -r`, e.g. `13.2-RELEASE-p4`. */
  release: string;
  /** Major version (13 for 13.2). */
  major: number;
  /** Minor version (2 for 13.2). */
  minor: number;
  /** True when the `sysvshm`, `sysvsem` and `sysvmsg` jail parameters all exist (FreeBSD 11+). */
  sysvIpcJailParams: boolean;
  /** True when the kernel has VIMAGE, so a jail can have its own network stack (`vnet`). */
  vnet: boolean;
}

/** The SysV IPC jail parameters that must all exist for `sysvIpcJailParams`. */
export const SYSV_JAIL_PARAMS = ['security.jail.param.sysvshm', 'security.jail.param.sysvsem', 'security.jail.param.sysvmsg'] as const;
/** The sysctl that is 1 when the kernel was built with VIMAGE. */
export const VIMAGE_SYSCTL = 'kern.features.vimage';

/** The exact commands {@link detectFreeBsdHostFacts} runs, in order. */
export const FACT_COMMANDS: readonly (readonly string[])[] = [
  ['uname', '-r'],
  ...SYSV_JAIL_PARAMS.map((oid) => ['sysctl', '-n', oid]),
  ['sysctl', '-n', VIMAGE_SYSCTL],
];

/** Parse `uname -r` (`13.2-RELEASE`, `14.0-CURRENT`, `12.4-STABLE`, `13.2-RELEASE-p4`). */
export function parseUnameRelease(stdout: string): Result<{ release: string; major: number; minor: number }, FreeBsdParseError> {
  if (typeof stdout !== 'string') return err(new FreeBsdParseError('uname -r', 0, String(stdout), 'the output is not a string'));
  const lines = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const line = lines[0] ?? '';
  const m = /^(\d+)\.(\d+)-(RELEASE|STABLE|CURRENT|BETA\d*|RC\d*|ALPHA\d*|PRERELEASE)(-p\d+)?$/.exec(line);
  if (lines.length !== 1 || !m) return err(new FreeBsdParseError('uname -r', 1, line, 'not a FreeBSD release such as 13.2-RELEASE'));
  return ok({ release: line, major: Number(m[1]), minor: Number(m[2]) });
}

/** What one `sysctl -n <oid>` run said. */
export type SysctlValue = { present: false } | { present: true; value: number };

/**
 * Interpret `sysctl -n <oid>` for an integer oid: exit 0 with one integer line is its value;
 * exit 1 with `sysctl: unknown oid '<oid>'` means the kernel does not have it. Anything else is
 * a {@link FreeBsdParseError}.
 */
export function parseSysctlInteger(oid: string, result: Pick<ExecResult, 'code' | 'stdout' | 'stderr'>): Result<SysctlValue, FreeBsdParseError> {
  const command = `sysctl -n ${String(oid)}`;
  if (typeof oid !== 'string' || oid === '') return err(new FreeBsdParseError(command, 0, String(oid), 'the oid is not a non-empty string'));
  const r = result as Partial<Record<'code' | 'stdout' | 'stderr', unknown>> | null | undefined;
  if (typeof r !== 'object' || r === null || typeof r.stdout !== 'string' || typeof r.stderr !== 'string' || !(r.code === null || typeof r.code === 'number')) {
    return err(new FreeBsdParseError(command, 0, r === null ? 'null' : typeof r, 'the result is not an exec result (code, stdout, stderr)'));
  }
  if (result.code === 0) {
    const lines = result.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    if (lines.length === 1 && /^-?\d+$/.test(lines[0]!)) return ok({ present: true, value: Number(lines[0]) });
    return err(new FreeBsdParseError(command, 1, lines[0] ?? '', 'expected one integer'));
  }
  const stderr = result.stderr.trim();
  const m = /^sysctl: unknown oid '([^']+)'/.exec(stderr);
  if (m && m[1] === oid) return ok({ present: false });
  return err(new FreeBsdParseError(command, 1, stderr, `exited with ${String(result.code)} without saying "unknown oid"`));
}

/** Assemble the facts from the outputs of {@link FACT_COMMANDS} (pure; used by the detector and by tests). */
export function factsFromOutputs(outputs: {
  uname: string;
  sysvParams: ReadonlyArray<Pick<ExecResult, 'code' | 'stdout' | 'stderr'>>;
  vimage: Pick<ExecResult, 'code' | 'stdout' | 'stderr'>;
}): Result<FreeBsdHostFacts, FreeBsdParseError> {
  if (typeof outputs !== 'object' || outputs === null || !Array.isArray(outputs.sysvParams)) {
    return err(new FreeBsdParseError('uname -r', 0, '', 'the outputs are not { uname, sysvParams[], vimage }'));
  }
  const release = parseUnameRelease(outputs.uname);
  if (release.isErr()) return err(release.error);
  let sysv = outputs.sysvParams.length === SYSV_JAIL_PARAMS.length;
  for (const [i, oid] of SYSV_JAIL_PARAMS.entries()) {
    const out = outputs.sysvParams[i];
    if (!out) break;
    const value = parseSysctlInteger(oid, out);
    if (value.isErr()) return err(value.error);
    sysv &&= value.value.present;
  }
  const vimage = parseSysctlInteger(VIMAGE_SYSCTL, outputs.vimage);
  if (vimage.isErr()) return err(vimage.error);
  return ok({
    ...release.value,
    sysvIpcJailParams: sysv,
    vnet: vimage.value.present && vimage.value.value === 1,
  });
}

/**
 * Ask a FreeBSD host (through `executor`) for its jail capabilities. Never throws: an `executor`
 * without `exec`, or bad options, is an {@link InvalidInputError}.
 */
export function detectFreeBsdHostFacts(executor: Executor, options: { timeoutMs?: number } = {}): ResultAsync<FreeBsdHostFacts, ApMigrateError> {
  if (typeof (executor as Partial<Executor> | null)?.exec !== 'function') {
    return errAsync(new InvalidInputError('detectFreeBsdHostFacts arguments', [{ path: 'executor', message: 'must be an Executor (an object with exec)' }]));
  }
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    return errAsync(new InvalidInputError('detectFreeBsdHostFacts options', [{ path: '', message: 'must be an options object' }]));
  }
  if (options.timeoutMs !== undefined && !(typeof options.timeoutMs === 'number' && Number.isFinite(options.timeoutMs) && options.timeoutMs > 0)) {
    return errAsync(new InvalidInputError('detectFreeBsdHostFacts options', [{ path: 'timeoutMs', message: 'must be a positive finite number of milliseconds' }]));
  }
  const timeoutMs = options.timeoutMs ?? 15_000;
  // A foreign executor may throw instead of returning an error: keep the promise of never throwing.
  const run = (argv: readonly string[]): ResultAsync<ExecResult, ApMigrateError> => {
    try {
      return executor.exec(argv, { timeoutMs, allowNonZeroExit: true });
    } catch (cause) {
      return errAsync(ApMigrateError.isInstance(cause) ? cause : new ApMigrateError('EXEC_FAILED', `${executor.description ?? 'executor'}: ${argv.join(' ')} threw: ${String(cause)}`, { cause }));
    }
  };
  const [unameArgv, ...sysctlArgvs] = FACT_COMMANDS;
  return run(unameArgv!).andThen((uname) => {
    if (uname.code !== 0) {
      return errAsync(new FreeBsdParseError('uname -r', 0, uname.stderr.trim(), `exited with ${String(uname.code)}`));
    }
    // Not FreeBSD: say so before asking for sysctls that would only confuse the message.
    const release = parseUnameRelease(uname.stdout);
    if (release.isErr()) return errAsync(release.error);
    // One command at a time: an SSH executor may limit sessions, and five tiny commands are quick.
    const results: ExecResult[] = [];
    let chain: ResultAsync<void, ApMigrateError> = okAsync(undefined);
    for (const argv of sysctlArgvs) chain = chain.andThen(() => run(argv).map((r) => void results.push(r)));
    return chain.andThen(() => {
      const facts = factsFromOutputs({ uname: uname.stdout, sysvParams: results.slice(0, SYSV_JAIL_PARAMS.length), vimage: results[SYSV_JAIL_PARAMS.length]! });
      return facts.isOk() ? okAsync(facts.value) : errAsync(facts.error);
    });
  });
}
