/**
 * The cgroup freezer of a {@link Source}: where every process of the program's tree is in one
 * cgroup (cgroup v2, or the v1 `freezer` hierarchy) that holds nothing else, the tree is frozen
 * by that cgroup (`cgroup.freeze` = 1, or `freezer.state` = FROZEN) instead of by `SIGSTOP`: a
 * fork between listing the tree and freezing it is frozen too, and the program cannot see it.
 * The root cgroup is never frozen. Everything is read and written on the source host through its
 * executor (`sh -c` with the paths as arguments, never a local file call), so a remote source is
 * frozen on its own host. Anything unexpected means "no cgroup freeze": the caller falls back.
 *
 * @module
 */
import type { ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { Executor } from '../spec/executor.js';
import type { FreezerKind } from '../spec/source.js';

/** The two cgroup freezers. */
export type CgroupFreezerKind = Exclude<FreezerKind, 'sigstop'>;

/** A cgroup a program's tree was frozen by (its directory on the source host). */
export interface FrozenCgroup {
  kind: CgroupFreezerKind;
  dir: string;
  /** The pids frozen: the tree as it was once frozen. */
  pids: number[];
}

/** Where each hierarchy is mounted on the source host. */
export interface CgroupMounts {
  v2?: string;
  freezer?: string;
}

/** A process's cgroup in each hierarchy (paths inside the hierarchy, `/` its root). */
export interface ProcessCgroups {
  v2?: string;
  freezer?: string;
}

/** An absolute path with no `.`/`..` component, newline or NUL, or undefined. */
function cleanPath(path: string): string | undefined {
  if (!path.startsWith('/') || /[\n\0]/.test(path)) return undefined;
  return path.split('/').some((part) => part === '.' || part === '..') ? undefined : path;
}

/** Undo mountinfo's octal escapes (`\040` for a space). */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/**
 * The cgroup v2 mount and the v1 `freezer` mount from /proc/self/mountinfo text. Only mounts of
 * their hierarchy's root (field 4 is `/`) count: the paths in /proc/<pid>/cgroup are from there.
 */
export function parseCgroupMounts(mountinfo: string): CgroupMounts {
  const mounts: CgroupMounts = {};
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || fields[3] !== '/') continue;
    const mountPoint = cleanPath(unescapeMountinfo(fields[4] ?? ''));
    const [fstype, , superOptions = ''] = fields.slice(dash + 1);
    if (!mountPoint) continue;
    if (fstype === 'cgroup2') mounts.v2 ??= mountPoint;
    if (fstype === 'cgroup' && superOptions.split(',').includes('freezer')) mounts.freezer ??= mountPoint;
  }
  return mounts;
}

/** A process's v2 cgroup (`0::/path`) and v1 freezer cgroup (`N:freezer:/path`) from /proc/<pid>/cgroup text. */
export function parseProcCgroup(text: string): ProcessCgroups {
  const cgroups: ProcessCgroups = {};
  for (const line of text.split('\n')) {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!match) continue;
    const [, hierarchy, controllers = '', raw = ''] = match;
    // Outside our cgroup namespace the path reads `/../..`: cleanPath refuses it.
    const path = cleanPath(raw);
    if (!path) continue;
    if (hierarchy === '0' && controllers === '') cgroups.v2 = path;
    else if (controllers.split(',').includes('freezer')) cgroups.freezer = path;
  }
  return cgroups;
}

/** Lists the mounts and each pid's cgroups, one section per `@` line (nothing for a pid that is gone). */
const PROBE_SCRIPT = `
echo @mountinfo; cat /proc/self/mountinfo 2>/dev/null
for p; do echo "@pid $p"; cat "/proc/$p/cgroup" 2>/dev/null; done
exit 0
`;

/** Split the probe's output into the mountinfo text and each pid's cgroup text. */
function probeSections(output: string): { mountinfo: string; cgroups: Map<number, string> } {
  const cgroups = new Map<number, string>();
  let mountinfo = '';
  let current: number | 'mountinfo' | undefined;
  for (const line of output.split('\n')) {
    if (line === '') continue;
    if (line === '@mountinfo') current = 'mountinfo';
    else if (/^@pid \d+$/.test(line)) cgroups.set((current = Number(line.slice(5))), '');
    else if (current === 'mountinfo') mountinfo += `${line}\n`;
    else if (current !== undefined) cgroups.set(current, `${cgroups.get(current)}${line}\n`);
  }
  return { mountinfo, cgroups };
}

/** The one cgroup all `paths` name, unless it is the root or they differ. */
function sharedCgroup(paths: (string | undefined)[]): string | undefined {
  const first = paths[0];
  return first && first !== '/' && paths.every((p) => p === first) ? first : undefined;
}

/**
 * The cgroups `tree` could be frozen by, v2 first: those its processes all share (not the root),
 * in a hierarchy mounted on the source host. Empty when there is none (then SIGSTOP).
 */
export function freezerCandidates(probeOutput: string, tree: readonly number[]): { kind: CgroupFreezerKind; dir: string }[] {
  const { mountinfo, cgroups } = probeSections(probeOutput);
  const mounts = parseCgroupMounts(mountinfo);
  // A pid with no cgroup text ended since it was listed; the rest decide.
  const seen = tree.map((p) => parseProcCgroup(cgroups.get(p) ?? '')).filter((c) => c.v2 !== undefined || c.freezer !== undefined);
  if (seen.length === 0) return [];
  const candidates: { kind: CgroupFreezerKind; dir: string }[] = [];
  const v2 = sharedCgroup(seen.map((c) => c.v2));
  if (v2 && mounts.v2) candidates.push({ kind: 'cgroup-v2', dir: `${mounts.v2.replace(/\/$/, '')}${v2}` });
  const v1 = sharedCgroup(seen.map((c) => c.freezer));
  if (v1 && mounts.freezer) candidates.push({ kind: 'cgroup-v1', dir: `${mounts.freezer.replace(/\/$/, '')}${v1}` });
  return candidates;
}

/** The cgroups `tree` could be frozen by, read on the source host. */
export function probeFreezerCandidates(executor: Executor, tree: readonly number[]): ResultAsync<{ kind: CgroupFreezerKind; dir: string }[], ApMigrateError> {
  return executor.exec(['sh', '-c', PROBE_SCRIPT, 'ap-migrate-probe', ...tree.map(String)], { allowNonZeroExit: true }).map((r) => freezerCandidates(r.stdout, tree));
}

/** The file that freezes a cgroup of `kind`, and the values that freeze and thaw it. */
export function freezerFile(kind: CgroupFreezerKind): { file: string; frozen: string; thawed: string } {
  return kind === 'cgroup-v2' ? { file: 'cgroup.freeze', frozen: '1', thawed: '0' } : { file: 'freezer.state', frozen: 'FROZEN', thawed: 'THAWED' };
}

/**
 * `$1` kind, `$2` the cgroup directory, the rest the program's pids. Refuses (prints why, changes
 * nothing) when the cgroup or one below it holds a process that is neither listed nor a
 * descendant of one (a fork since the listing is one of ours); otherwise freezes it, waits up to
 * 5 s for the kernel to say frozen (else thaws it again), and prints `frozen` and its members.
 */
const FREEZE_SCRIPT = `
kind=$1; dir=$2; shift 2
case $kind in
  cgroup-v2) file=cgroup.freeze; on=1; off=0 ;;
  cgroup-v1) file=freezer.state; on=FROZEN; off=THAWED ;;
  *) echo bad-kind; exit 0 ;;
esac
[ -f "$dir/$file" ] || { echo no-freezer; exit 0; }
members() { find "$dir" -name cgroup.procs -exec cat {} +; }
# A member is ours when it or an ancestor is listed, or when it is gone (ended since the listing).
ours() {
  q=$1; shift; d=0
  while [ "$d" -lt 64 ] && [ "$q" -gt 1 ]; do
    for p; do [ "$p" = "$q" ] && return 0; done
    q=$(sed -n 's/.*) . \\([0-9]*\\) .*/\\1/p' "/proc/$q/stat" 2>/dev/null)
    [ -n "$q" ] || return 0
    d=$((d + 1))
  done
  return 1
}
frozen() { if [ "$kind" = cgroup-v2 ]; then grep -qx 'frozen 1' "$dir/cgroup.events"; else [ "$(cat "$dir/freezer.state")" = FROZEN ]; fi; }
list=$(members) || { echo unreadable; exit 0; }
[ -n "$list" ] || { echo empty; exit 0; }
for m in $list; do ours "$m" "$@" || { echo "foreign $m"; exit 0; }; done
echo "$on" > "$dir/$file" || { echo refused; exit 0; }
i=0
until frozen; do
  i=$((i + 1))
  [ "$i" -le 100 ] || { echo "$off" > "$dir/$file"; echo timeout; exit 0; }
  sleep 0.05
  # v1 can stay FREEZING when a task forked as the freeze began: asking again freezes it.
  [ "$kind" = cgroup-v2 ] || echo "$on" > "$dir/$file"
done
echo frozen
for m in $(members); do echo "member $m"; done
`;

/** What the freeze script did: froze the cgroup (and who is in it), or why not. */
export type FreezeAttempt = { frozen: true; members: number[] } | { frozen: false; reason: string };

/** Parse the freeze script's output. */
export function parseFreezeOutput(stdout: string): FreezeAttempt {
  const lines = stdout.split('\n').filter(Boolean);
  if (lines[0] !== 'frozen') return { frozen: false, reason: lines[0] ?? 'no answer' };
  return { frozen: true, members: lines.filter((l) => /^member \d+$/.test(l)).map((l) => Number(l.slice(7))) };
}

/** Freeze cgroup `dir` of `kind` on the source host if it holds only `tree` (and its new children). */
export function freezeCgroup(executor: Executor, kind: CgroupFreezerKind, dir: string, tree: readonly number[]): ResultAsync<FreezeAttempt, ApMigrateError> {
  return executor.exec(['sh', '-c', FREEZE_SCRIPT, 'ap-migrate-freeze', kind, dir, ...tree.map(String)], { allowNonZeroExit: true }).map((r) => parseFreezeOutput(r.stdout));
}

/** Thaw a cgroup this module froze (nothing to do when it is gone). */
export function thawCgroup(executor: Executor, cgroup: Pick<FrozenCgroup, 'kind' | 'dir'>): ResultAsync<void, ApMigrateError> {
  const { file, thawed } = freezerFile(cgroup.kind);
  return executor.exec(['sh', '-c', '[ ! -e "$1" ] || printf "%s\\n" "$2" > "$1"', 'ap-migrate-thaw', `${cgroup.dir}/${file}`, thawed], {}).map(() => undefined);
}

/** Live processes of a `ps -A -o pid= -o ppid= -o stat=` listing that are not zombies. */
export function livePids(psOutput: string): Set<number> {
  const live = new Set<number>();
  for (const line of psOutput.split('\n')) {
    const [pid, , stat = ''] = line.trim().split(/\s+/);
    if (pid && /^\d+$/.test(pid) && !stat.startsWith('Z')) live.add(Number(pid));
  }
  return live;
}

/**
 * After the freeze: the cgroup holds exactly the tree's live processes (none escaped before the
 * freeze, none foreign moved in). Zombies have left their cgroup and need no freezing.
 */
export function cgroupHoldsTree(members: readonly number[], tree: readonly number[], live: ReadonlySet<number>): boolean {
  const inCgroup = new Set(members);
  const inTree = new Set(tree);
  return tree.every((p) => !live.has(p) || inCgroup.has(p)) && members.every((m) => inTree.has(m));
}

