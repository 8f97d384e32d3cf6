/**
 * The health check of the Linux deployers: the program's process alive after a settle time,
 * listening again on every TCP port it listened on at the source, and *ready*: its process tree
 * has regained the long-lived roles the source's tree had (decision 0015), or a user-supplied
 * probe succeeds.
 *
 * @module
 */
import { errAsync, okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { ProcessInfo, ResourceProfile } from '../policy/profile.js';
import type { DeployContext, HealthOutcome, StartedProgram } from '../spec/deployer.js';
import { DeployError } from './deploy-error.js';
import { launchArgv } from './launch.js';

/**
 * Masks a process title the same way in the script (awk) and in TypeScript: whitespace runs become
 * one space, the ends are trimmed, and every alphanumeric run holding a digit becomes `#` (pids,
 * worker numbers, log positions, hex ids).
 */
const MASK_AWK = `
function mask(s,   out, t) {
  gsub(/[ \\t\\n]+/, " ", s); sub(/^ /, "", s); sub(/ $/, "", s)
  out = ""
  while (match(s, /[A-Za-z0-9]+/)) {
    t = substr(s, RSTART, RLENGTH)
    out = out substr(s, 1, RSTART - 1) (t ~ /[0-9]/ ? "#" : t)
    s = substr(s, RSTART + RLENGTH)
  }
  return out s
}
function fam(s,   a) { split(s, a, " "); s = a[1]; sub(/.*\\//, "", s); sub(/:$/, "", s); return s }
`;

/**
 * One poll, in one awk process (forks are what a poll costs on a busy host). Reads the program's
 * state from /proc/<root>/status, the TCP listeners from /proc/net/tcp*, and, when ROLES is set,
 * the tree under `root` (every /proc/<pid>/stat named on the command line) and each member's
 * title. ROLES are the required roles, KNOWN the other titles the program may show (its own
 * argv, the source's other titles), SEEN the previous poll's output (its `S` lines are the roles
 * seen so far); all newline-separated. Prints one line of shell assignments (`state ok miss
 * foreign grew now`), then `S role` for every role seen, `M role` for every one missing and
 * `F title` for a title of the program's family (first word) that the source's tree never had:
 * a process of a phase the source was not in.
 */
const POLL_AWK = `${MASK_AWK}
function hex(s,   i, n, c) {
  n = 0; s = toupper(s)
  for (i = 1; i <= length(s); i++) { c = index("0123456789ABCDEF", substr(s, i, 1)); if (c == 0) return -1; n = n * 16 + c - 1 }
  return n
}
function slurp(f, rs, sep,   l, all, n) {
  RS = rs; all = ""; n = 0
  while ((getline l < f) > 0) all = all (n++ ? sep : "") l
  close(f); return all
}
BEGIN {
  st = slurp("/proc/" root "/status", "\\n", "\\n"); state = "-"
  if (match(st, /State:[ \\t]+[A-Za-z]/)) state = substr(st, RSTART + RLENGTH - 1, 1)
  # When the program started, in clock ticks since boot (field 22 of its stat; the title may hold ") ").
  born = 0; RS = "\\n"
  if ((getline l < ("/proc/" root "/stat")) > 0) { sub(/^.*\\) /, "", l); split(l, x, " "); if (x[20] ~ /^[0-9]+$/) born = x[20] }
  close("/proc/" root "/stat")
  n = split(ports, want, " "); ok = 1
  if (n > 0) {
    files[1] = "/proc/net/tcp"; files[2] = "/proc/net/tcp6"; RS = "\\n"
    for (j = 1; j <= 2; j++) { while ((getline l < files[j]) > 0) { split(l, a, " "); if (a[4] == "0A") { k = a[2]; sub(/.*:/, "", k); listen[hex(k)] = 1 } } close(files[j]) }
    for (i = 1; i <= n; i++) if (!((want[i] + 0) in listen)) ok = 0
  }
  up = slurp("/proc/uptime", "\\n", " "); split(up, u, " "); split(u[1], c, ".")
  miss = 0; nf = 0; grew = 0
  if (ENVIRON["ROLES"] != "") {
    n = split(ENVIRON["ROLES"], r, "\\n"); for (i = 1; i <= n; i++) if (r[i] != "") { need[r[i]] = 1; fams[fam(r[i])] = 1 }
    n = split(ENVIRON["KNOWN"], r, "\\n"); for (i = 1; i <= n; i++) if (r[i] != "") known[r[i]] = 1
    n = split(ENVIRON["SEEN"], r, "\\n"); for (i = 1; i <= n; i++) if (substr(r[i], 1, 2) == "S ") seen[substr(r[i], 3)] = 1
    RS = "\\n"
    for (i = 1; i < ARGC; i++) {
      f = ARGV[i]
      if ((getline l < f) > 0) { p = f; sub(/^\\/proc\\//, "", p); sub(/\\/stat$/, "", p); s = l; sub(/^.*\\) /, "", s); split(s, x, " "); parent[p] = x[2] }
      close(f)
    }
    tree[root] = 1
    do { more = 0; for (p in parent) if (!(p in tree) && (parent[p] in tree)) { tree[p] = 1; more = 1 } } while (more)
    for (p in tree) {
      t = mask(slurp("/proc/" p "/cmdline", "\\0", " ")); if (t == "") continue
      if (t in need) { if (!(t in seen)) { seen[t] = 1; grew = 1 } }
      else if (!(t in known) && (fam(t) in fams) && !(t in foreign)) { foreign[t] = 1; nf++ }
    }
    for (k in need) if (!(k in seen)) miss++
  }
  # Seconds and centiseconds as read (awk would print a large product as 1.2e+09).
  print "state=" state " ok=" ok " miss=" miss " foreign=" nf " grew=" grew " secs=" c[1] " cs=" (c[2] + 0) " born=" born
  for (k in seen) print "S " k
  for (k in need) if (!(k in seen)) print "M " k
  for (k in foreign) print "F " k
  exit 0
}
`;

const HEALTH_SCRIPT = `
pid="$1"; log="$2"; wait_ms="$3"; quiet_ms="$4"; ROLES="$5"; KNOWN="$6"; nports="$7"; shift 7
ports=""; while [ "$nports" -gt 0 ]; do ports="$ports $1"; shift; nports=$((nports - 1)); done
[ "$1" = -- ] && shift
poll_awk='${POLL_AWK}'
export ROLES KNOWN
stats=""; [ -n "$ROLES" ] && stats='/proc/[0-9]*/stat'
probe() {
  if command -v timeout >/dev/null 2>&1; then timeout 5 "$@" >/dev/null 2>&1 </dev/null; else "$@" >/dev/null 2>&1 </dev/null; fi
}
finish() { echo "$1"; printf '%s\\n' "$out" | grep -E '^[MF] '; echo "--log--"; tail -c 2000 "$log" 2>/dev/null; exit "$2"; }
out=""; t0=""; quiet_since=-1; i=0
# Time counts from the program's start, not from this first poll: the start command's round trip
# back to the SDK and this one's here are time the program has already been up.
clk=$(getconf CLK_TCK 2>/dev/null); case "$clk" in ''|*[!0-9]*|0) clk=100 ;; esac
nl='
'
while :; do
  out=$(SEEN="$out" awk -v root="$pid" -v ports="$ports" "$poll_awk" $stats 2>/dev/null)
  state=?; ok=0; miss=1; foreign=0; grew=0; secs=0; cs=0; born=0
  # The first line is assignments of letters and numbers only; without it (awk failed) the poll
  # proves nothing and the next one decides.
  case "\${out%%"$nl"*}" in state=*) eval "\${out%%"$nl"*}" ;; esac
  if [ "$state" = ? ]; then
    i=$((i + 100)); [ "$i" -ge "$wait_ms" ] && finish timeout 2
    sleep 0.1; continue
  fi
  now=$((secs * 1000 + cs * 10))
  if [ -z "$t0" ]; then t0=$now; [ "$born" -gt 0 ] && [ $((born * 1000 / clk)) -le "$now" ] && t0=$((born * 1000 / clk)); fi
  i=$((now - t0))
  # A zombie still answers kill -0, so its state is read; "-": its status is gone.
  if [ "$state" = Z ] || { [ "$state" = - ] && [ ! -e "/proc/$pid/status" ]; }; then finish exited 1; fi
  # The quiet time counts from the tree's last change (a role appeared, or one the source lacked was there).
  if [ "$ok" = 0 ] || [ "$grew" = 1 ] || [ "$foreign" != 0 ]; then quiet_since=-1; elif [ "$quiet_since" -lt 0 ]; then quiet_since=$i; fi
  if [ "$ok" = 1 ] && [ "$i" -ge 300 ]; then
    if [ "$#" -gt 0 ]; then
      probe "$@" && finish healthy 0
    elif [ -z "$ROLES" ] || [ "$miss" = 0 ]; then finish healthy 0
    elif [ "$quiet_since" -ge 0 ] && [ $((i - quiet_since)) -ge "$quiet_ms" ]; then finish quiet 0
    fi
  fi
  if [ "$i" -ge "$wait_ms" ]; then
    [ "$ok" = 1 ] && [ "$#" = 0 ] && finish roles-timeout 0
    [ "$ok" = 1 ] && finish probe-timeout 2
    finish timeout 2
  fi
  sleep 0.1
done
`;

/** Masks a process title as the health script does (see {@link MASK_AWK}). */
export function maskTitle(title: string): string {
  return title
    .replace(/[ \t\n]+/g, ' ')
    .trim()
    .replace(/[A-Za-z0-9]+/g, (t) => (/[0-9]/.test(t) ? '#' : t));
}

/** True when a title names a peer: an IPv4 or IPv6 address, or an address the program was connected to. */
function namesPeer(title: string, peers: ReadonlySet<string>): boolean {
  if (/(^|[^0-9.])\d{1,3}(\.\d{1,3}){3}($|[^0-9.])/.test(title)) return true;
  // IPv6: with "::" or at least four groups (a time such as 12:30:45 has three).
  if (/(^|[\s(\[@])(?=[0-9A-Fa-f:]*::|(?:[0-9A-Fa-f]{1,4}:){3})[0-9A-Fa-f:]{2,39}($|[\s)\]%])/.test(title)) return true;
  return [...peers].some((peer) => title.includes(peer));
}

/**
 * The long-lived roles of the source's process tree: the distinct masked titles of its processes,
 * leaving out the tree's top processes (the destination starts them itself, maybe with another
 * argv), titles equal to the program's own argv, and per-connection handlers (a title naming a
 * peer address). A role counts once, however many processes had it (worker counts differ).
 */
export function readinessRoles(profile: Pick<ResourceProfile, 'argv' | 'processes' | 'sockets'>): string[] {
  const pids = new Set(profile.processes.map((p) => p.pid));
  const own = maskTitle(profile.argv.join(' '));
  const peers = new Set(profile.sockets.filter((s) => !s.listening && s.remoteAddress && !/^(0\.0\.0\.0|::|\*)$/.test(s.remoteAddress)).map((s) => s.remoteAddress!));
  const roles = new Set<string>();
  for (const p of profile.processes as readonly ProcessInfo[]) {
    if (!p.argv?.length || p.ppid === undefined || !pids.has(p.ppid)) continue;
    const raw = p.argv.join(' ');
    const role = maskTitle(raw);
    // A newline would split the role in the script's list; whitespace is masked to one space anyway.
    if (role === '' || role === own || role.length > 512 || namesPeer(raw, peers)) continue;
    roles.add(role);
  }
  return [...roles].sort();
}

/** Every title the program may show that is no sign of a phase the source was not in: the source's, and its own argv at the destination. */
function knownTitles(context: DeployContext): string[] {
  const titles = [context.profile.argv, launchArgv(context), ...context.profile.processes.map((p) => p.argv ?? [])].map((argv) => maskTitle(argv.join(' ')));
  return [...new Set(titles)].filter((t) => t !== '' && t.length <= 512);
}

/** Options of {@link healthCheckCommon}. */
export interface HealthCheckOptions {
  /** How long to wait for the program to listen and be ready (default 10 s). */
  timeoutMs?: number;
  /** How the check's argv runs at the destination (e.g. inside the program's network namespace). */
  wrap?: (argv: string[]) => string[];
  /**
   * A readiness probe: argv run at the destination (through `wrap`) until it exits 0, instead of
   * waiting for the source's process roles. The program is not healthy until it succeeds.
   */
  probe?: readonly string[];
  /**
   * How long the tree must stay unchanged, with roles still missing and none the source lacked,
   * before the check passes anyway with a warning (default 2 s): roles of the source that never
   * come back without clients (per-connection handlers whose title names no address).
   */
  quietMs?: number;
}

/**
 * Healthy means: the process is still alive 300 ms after it started (its start time as the kernel
 * keeps it, so the round trips since count), listens on every TCP port it
 * listened on at the source (read from `/proc/net/tcp*`, as seen from `netnsExec`'s namespace),
 * and is ready: `options.probe` exits 0, or else its destination tree has regained every
 * long-lived role of the source's ({@link readinessRoles}). Roles that never come back do not fail
 * the check: it passes once the tree has stayed unchanged for `quietMs` (and holds no role of the
 * program the source lacked, such as a recovery process), or at the timeout, with a warning in
 * the outcome it returns (decision 0015).
 */
export function healthCheckCommon(context: DeployContext, started: StartedProgram, options: HealthCheckOptions = {}): ResultAsync<HealthOutcome, ApMigrateError> {
  const ports = [...new Set(context.profile.sockets.filter((s) => s.listening && s.protocol === 'tcp' && s.localPort).map((s) => String(s.localPort)))];
  const probe = options.probe?.length ? [...options.probe] : [];
  const roles = probe.length ? [] : readinessRoles(context.profile);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const quietMs = options.quietMs ?? 2_000;
  const argv = ['sh', '-c', HEALTH_SCRIPT, 'ap-migrate', String(started.pid), started.logPath, String(timeoutMs), String(quietMs), bounded(roles), bounded(knownTitles(context)), String(ports.length), ...ports, '--', ...probe];
  return context.transport
    .exec(options.wrap ? options.wrap(argv) : argv, { allowNonZeroExit: true, ...(context.signal ? { signal: context.signal } : {}) })
    .mapErr((e) => new DeployError('HEALTH_CHECK_FAILED', `Health check failed: ${e.message}`, { cause: e }))
    .andThen((r) => {
      const [head = '', tail = ''] = splitOnce(r.stdout, '\n--log--\n');
      const [verdict = '', ...lines] = head.split('\n');
      const missing = lines.filter((l) => l.startsWith('M ')).map((l) => l.slice(2)).sort();
      const foreign = lines.filter((l) => l.startsWith('F ')).map((l) => l.slice(2)).sort();
      if (r.code === 0) {
        return okAsync(outcomeOf(verdict, missing, foreign, { probe: probe.length > 0, roles: roles.length > 0, quietMs, timeoutMs }));
      }
      const what =
        verdict === 'exited'
          ? 'the program exited at the destination'
          : verdict === 'probe-timeout'
            ? `the readiness probe (${probe.join(' ')}) did not succeed within ${timeoutMs} ms`
            : `the program is not listening on port(s) ${ports.join(', ')}`;
      return errAsync(new DeployError('HEALTH_CHECK_FAILED', `Health check failed: ${what}. ${tail.trim().slice(0, 600)}`.trim()));
    });
}

/** Longest list of titles passed as one argument: well below Linux's 128 KiB per argument (a profile may hold thousands). */
const MAX_TITLES_BYTES = 32 * 1024;

/** `titles` newline-separated, as many as fit in {@link MAX_TITLES_BYTES} (the rest are not waited for). */
function bounded(titles: readonly string[]): string {
  const kept: string[] = [];
  let bytes = 0;
  for (const t of titles) {
    bytes += Buffer.byteLength(t) + 1;
    if (bytes > MAX_TITLES_BYTES) break;
    kept.push(t);
  }
  return kept.join('\n');
}

function splitOnce(text: string, separator: string): [string, string] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ''] : [text.slice(0, at), text.slice(at + separator.length)];
}

function outcomeOf(verdict: string, missing: string[], foreign: string[], how: { probe: boolean; roles: boolean; quietMs: number; timeoutMs: number }): HealthOutcome {
  if (how.probe) return { readiness: 'probe', missingRoles: [], warnings: [] };
  if (verdict === 'quiet') {
    return {
      readiness: 'quiet',
      missingRoles: missing,
      warnings: [`process role(s) of the source never appeared at the destination (${missing.join('; ')}); taken as per-connection or transient after ${how.quietMs} ms without change`],
    };
  }
  if (verdict === 'roles-timeout') {
    const still = foreign.length ? `; the destination still ran ${foreign.join('; ')}, which the source did not` : '';
    return {
      readiness: 'timeout',
      missingRoles: missing,
      warnings: [`process role(s) of the source had not appeared at the destination within ${how.timeoutMs} ms (${missing.join('; ')})${still}: the program may not be ready yet, and the downtime may be understated`],
    };
  }
  return { readiness: how.roles ? 'roles' : 'listening', missingRoles: [], warnings: [] };
}
