/**
 * Pure generation of a FreeBSD `jail.conf(5)` stanza for one migrated program.
 *
 * The quoting follows the jail(8) lexer (`usr.sbin/jail/jaillex.l`): inside a double-quoted value
 * a backslash starts a C-style escape (`\\`, `\"`, `\n`, octal `\ooo`) and an unescaped `$`
 * starts a variable, so `\`, `"` and `$` are always escaped and control characters are written
 * as escapes. `exec.start` is a single string jail(8) hands to the jail's `/bin/sh -c` (it has
 * shell metacharacters), so each argument is first single-quoted for sh, then the whole command
 * is quoted for jail.conf: two layers, each exact.
 *
 * @module
 */
import { err, ok, type Result } from 'neverthrow';
import { InvalidInputError, type InputIssue } from '../../errors.js';
import { envProblems, normalizeAbsolutePath } from '../../policy/safe-input.js';
import { shellQuote } from '../../transports/quote.js';

/** devfs ruleset 4 is `devfsrules_jail` in FreeBSD's default `/etc/defaults/devfs.rules`. */
export const DEFAULT_DEVFS_RULESET = 4;

/** How the jail reaches the network. */
export type JailNetwork =
  /** No network at all: `ip4 = disable; ip6 = disable` (files-only programs). */
  | { mode: 'none' }
  /** Addresses on a host interface (`ip4.addr = "em0|192.0.2.10/32"`); jail(8) adds and removes the aliases. */
  | { mode: 'ip4'; interface: string; addresses: readonly string[] }
  /** A network stack of its own (VIMAGE) with one epair end moved in (`vnet.interface`). */
  | { mode: 'vnet'; interface: string };

/** Everything {@link renderJailConf} needs. */
export interface JailConfSpec {
  /** Jail name: letters, digits, `_`, `-`; not all digits (jail(8) would read a number as a jid). */
  name: string;
  /** Host path of the jail's root directory. */
  path: string;
  /** `host.hostname` inside the jail (default: the name). */
  hostname?: string;
  network: JailNetwork;
  /** devfs ruleset for the jail's `/dev` (default {@link DEFAULT_DEVFS_RULESET}); 0 (no rules) is refused. */
  devfsRuleset?: number;
  /** Give the jail its own SysV IPC namespace (`sysvshm/sysvsem/sysvmsg = new`, FreeBSD 11+). */
  sysvIpc?: boolean;
  /** The program's argv; `argv[0]` is the path of the executable inside the jail. */
  argv: readonly string[];
  /** Working directory inside the jail. */
  cwd: string;
  /** Extra environment variables exported before the program starts. */
  env?: Readonly<Record<string, string>>;
  /** User the program runs as (`exec.jail_user`), looked up in the host's passwd (`exec.system_jail_user`). */
  jailUser: string;
  /** User for commands run on the host side (`exec.system_user`); unset means the caller (root). */
  systemUser?: string;
  /** Host file receiving the program's stdout and stderr (`exec.consolelog`). */
  consoleLog: string;
  /** Commands run on the host after the jail is created (`exec.created`), as argv arrays. */
  created?: ReadonlyArray<readonly string[]>;
  /** Keep the jail when no process runs in it (default true), so a crash is seen, not hidden. */
  persist?: boolean;
}

const NAME = /^(?![0-9]+$)[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const INTERFACE = /^[a-z][a-z0-9_.]{0,14}$/;
const IPV4_CIDR = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}(\/([0-9]|[12][0-9]|3[0-2]))?$/;
const USER = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/;

/**
 * Quote `value` as one double-quoted jail.conf string. `\`, `"` and `$` are escaped (an unescaped
 * `$` would start a variable), newline, tab and CR become `\n`, `\t`, `\r`, other control
 * characters a three-digit octal escape. NUL cannot be represented and must be refused earlier.
 */
export function quoteJailConfString(value: string): string {
  let out = '"';
  for (const ch of value) {
    const code = ch.codePointAt(0)!;
    if (ch === '\\' || ch === '"' || ch === '$') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    // Always three digits: the lexer reads up to three octal digits, so a following digit is safe.
    else if (code < 0x20 || code === 0x7f) out += `\\${code.toString(8).padStart(3, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** A plain object (not null, not an array). */
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** A string the regex accepts (a non-string never does, instead of being coerced to "undefined"). */
const matches = (re: RegExp, v: unknown): v is string => typeof v === 'string' && re.test(v);

/**
 * Problems with what `exec.start` is built from: every environment name must be portable (it is
 * written into shell text, where `A=1; touch /x; B` would be a command), no value may hold NUL or
 * exceed what execve takes, the working directory must be absolute without `..`, and argv must
 * be a non-empty list of strings without NUL. Any value is accepted as input: nothing here throws.
 */
function execStartIssues(argv: unknown, cwd: unknown, env: unknown): InputIssue[] {
  const issues: InputIssue[] = [];
  const where = normalizeAbsolutePath(cwd);
  if (!where.ok) issues.push({ path: 'cwd', message: where.reason });
  if (!Array.isArray(argv)) issues.push({ path: 'argv', message: 'must be an array of strings' });
  else {
    if (argv.length === 0) issues.push({ path: 'argv', message: 'empty command' });
    argv.forEach((a: unknown, i) => {
      if (typeof a !== 'string') issues.push({ path: `argv.${i}`, message: 'must be a string' });
      else if (a.includes('\0')) issues.push({ path: `argv.${i}`, message: 'must not contain NUL' });
    });
  }
  if (!isRecord(env)) issues.push({ path: 'env', message: 'must be an object of strings' });
  else for (const p of envProblems(env)) issues.push({ path: p.name ? `env.${p.name}` : 'env', message: p.reason });
  return issues;
}

/**
 * The shell command `exec.start` runs in the jail: export the environment, change to the working
 * directory, and replace the shell with the program, in the background (`&`) so `jail -c` returns
 * once it is launched instead of waiting for a server that never exits. stdin is `/dev/null`
 * (from the jail's devfs); stdout and stderr go to `exec.consolelog`. Every name is checked to be
 * a portable variable name and every value single-quoted, so nothing in the environment can
 * become shell syntax; `INVALID_INPUT` otherwise. jail(8) runs it inside the jail, after
 * dropping to `exec.jail_user`.
 */
export function execStartCommand(argv: readonly string[], cwd: string, env: Readonly<Record<string, string>> = {}): Result<string, InvalidInputError> {
  const issues = execStartIssues(argv, cwd, env ?? {});
  if (issues.length) return err(new InvalidInputError('exec.start command', issues));
  const exports = Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)}`);
  const prefix = exports.length ? `export ${exports.join(' ')}; ` : '';
  return ok(`${prefix}cd ${shellQuote(cwd)} && exec ${argv.map(shellQuote).join(' ')} </dev/null &`);
}

/** The argv of an `exec.created` command as one sh command line (jail(8) runs it with `/bin/sh -c` when quoted). */
function commandLine(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** Whether `name` can name a jail: letters, digits, `_`, `-`; not all digits; no dots (jail(8) reads them as a hierarchy). */
export function isValidJailName(name: string): boolean {
  return matches(NAME, name);
}

/** Whether `name` can be a user name in `exec.jail_user` / `exec.system_user` (never starts with `-`). */
export function isValidJailUser(name: string): boolean {
  return matches(USER, name);
}

function validate(spec: JailConfSpec): InputIssue[] {
  if (!isRecord(spec)) return [{ path: '', message: 'must be an object' }];
  const issues: InputIssue[] = [];
  if (!matches(NAME, spec.name)) issues.push({ path: 'name', message: 'use letters, digits, "_" and "-" (max 63, not all digits, no dots)' });
  const hostname: unknown = spec.hostname ?? spec.name;
  if (!matches(HOSTNAME, hostname) || hostname.length > 255) issues.push({ path: 'hostname', message: 'not a valid host name' });
  for (const [field, value] of [['path', spec.path], ['consoleLog', spec.consoleLog]] as const) {
    const n = normalizeAbsolutePath(value);
    if (!n.ok) issues.push({ path: field, message: n.reason });
  }
  if (typeof spec.path === 'string' && (spec.path === '/' || /(^|\/)\.\.?(\/|$)/.test(spec.path))) issues.push({ path: 'path', message: 'must be a normalised directory other than /' });
  if (Array.isArray(spec.argv)) {
    const exe = normalizeAbsolutePath(spec.argv[0]);
    if (!exe.ok || exe.path === '/') issues.push({ path: 'argv.0', message: `argv[0] must be the absolute path of the executable${exe.ok ? '' : ` (${exe.reason})`}` });
  }
  issues.push(...execStartIssues(spec.argv, spec.cwd, spec.env ?? {}).filter((i) => !(i.path === 'argv' && Array.isArray(spec.argv))));
  if (!matches(USER, spec.jailUser)) issues.push({ path: 'jailUser', message: 'not a valid user name' });
  if (spec.systemUser !== undefined && !matches(USER, spec.systemUser)) issues.push({ path: 'systemUser', message: 'not a valid user name' });
  const ruleset = spec.devfsRuleset ?? DEFAULT_DEVFS_RULESET;
  if (!Number.isInteger(ruleset) || ruleset < 1 || ruleset > 65535) {
    issues.push({ path: 'devfsRuleset', message: 'must be a ruleset number from 1 (0 would expose every host device)' });
  }
  const net: unknown = spec.network;
  if (!isRecord(net) || !['none', 'ip4', 'vnet'].includes(net.mode as string)) issues.push({ path: 'network', message: 'must be { mode: "none" | "ip4" | "vnet", ... }' });
  else if (net.mode === 'ip4') {
    if (!matches(INTERFACE, net.interface)) issues.push({ path: 'network.interface', message: 'not an interface name' });
    if (!Array.isArray(net.addresses) || net.addresses.length === 0) issues.push({ path: 'network.addresses', message: 'at least one IPv4 address is needed' });
    else {
      net.addresses.forEach((a: unknown, i) => {
        if (!matches(IPV4_CIDR, a)) issues.push({ path: `network.addresses.${i}`, message: 'not an IPv4 address (optionally /prefix)' });
      });
    }
  } else if (net.mode === 'vnet') {
    if (!matches(INTERFACE, net.interface)) issues.push({ path: 'network.interface', message: 'not an interface name' });
  }
  const created: unknown = spec.created ?? [];
  if (!Array.isArray(created)) issues.push({ path: 'created', message: 'must be an array of argv arrays' });
  else {
    created.forEach((argv: unknown, i) => {
      if (!Array.isArray(argv) || argv.length === 0) issues.push({ path: `created.${i}`, message: 'must be a non-empty argv array' });
      else {
        argv.forEach((a: unknown, j) => {
          if (typeof a !== 'string' || a.includes('\0')) issues.push({ path: `created.${i}.${j}`, message: 'must be a string without NUL' });
        });
      }
    });
  }
  return issues;
}

/**
 * Render the jail.conf stanza for `spec`. Secure defaults: no network unless asked, devfs with a
 * restrictive ruleset, `enforce_statfs = 2` (the jail sees only its own mounts), no child jails,
 * and the program run as `jailUser`, never as the caller.
 */
export function renderJailConf(spec: JailConfSpec): Result<string, InvalidInputError> {
  const issues = validate(spec);
  if (issues.length) return err(new InvalidInputError('jail.conf spec', issues));
  const start = execStartCommand(spec.argv, spec.cwd, spec.env);
  if (start.isErr()) return err(start.error);
  const q = quoteJailConfString;
  const lines: string[] = [
    `# Generated by ap-migrate for "${spec.name}". Removed with the jail on rollback.`,
    `${spec.name} {`,
    `\tpath = ${q(spec.path)};`,
    `\thost.hostname = ${q(spec.hostname ?? spec.name)};`,
  ];
  const net = spec.network;
  if (net.mode === 'none') {
    lines.push('\tip4 = "disable";', '\tip6 = "disable";');
  } else if (net.mode === 'ip4') {
    lines.push(`\tip4.addr = ${net.addresses.map((a) => q(`${net.interface}|${a}`)).join(', ')};`, '\tip6 = "disable";');
  } else {
    lines.push('\tvnet;', `\tvnet.interface = ${q(net.interface)};`);
  }
  lines.push(
    '\tmount.devfs;',
    `\tdevfs_ruleset = ${spec.devfsRuleset ?? DEFAULT_DEVFS_RULESET};`,
    '\tenforce_statfs = 2;',
    '\tchildren.max = 0;',
  );
  if (spec.sysvIpc) lines.push('\tsysvshm = "new";', '\tsysvsem = "new";', '\tsysvmsg = "new";');
  if (spec.systemUser !== undefined) lines.push(`\texec.system_user = ${q(spec.systemUser)};`);
  lines.push('\texec.system_jail_user;', `\texec.jail_user = ${q(spec.jailUser)};`, `\texec.consolelog = ${q(spec.consoleLog)};`);
  for (const [i, argv] of (spec.created ?? []).entries()) lines.push(`\texec.created ${i === 0 ? '=' : '+='} ${q(commandLine(argv))};`);
  lines.push(`\texec.start = ${q(start.value)};`);
  if (spec.persist ?? true) lines.push('\tpersist;');
  lines.push('}', '');
  return ok(lines.join('\n'));
}
