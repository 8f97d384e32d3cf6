/**
 * Facts read on the source host through an {@link Executor} (local or SSH): file types and sizes,
 * real paths, small text files, package ownership, accounts. Each is one POSIX sh script run with
 * its data as positional arguments, so a path never becomes shell syntax, and one round trip
 * answers many paths.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { okAsync, type ResultAsync } from 'neverthrow';
import type { ApMigrateError } from '../errors.js';
import type { Executor } from '../spec/executor.js';

/** What `stat` says of one path (`l` link, `d` directory, `f` regular file, `o` other). */
export interface PathFacts {
  type: 'f' | 'd' | 'l' | 'o';
  size: number;
  /** `readlink -f`: the path with every link resolved. */
  real: string;
}

/** Arguments per script run: well under any ARG_MAX. */
const BATCH = 500;

function runSh(executor: Executor, script: string, args: readonly string[], maxOutputBytes?: number): ResultAsync<string, ApMigrateError> {
  return executor.exec(['sh', '-c', script, 'ap-migrate', ...args], { allowNonZeroExit: true, ...(maxOutputBytes ? { maxOutputBytes } : {}) }).map((r) => r.stdout);
}

/** Run `one` over `items` in batches and join the outputs. */
function batched(items: readonly string[], one: (batch: string[]) => ResultAsync<string, ApMigrateError>): ResultAsync<string, ApMigrateError> {
  let acc: ResultAsync<string, ApMigrateError> = okAsync('');
  for (let i = 0; i < items.length; i += BATCH) {
    const batch = items.slice(i, i + BATCH);
    acc = acc.andThen((out) => one(batch).map((more) => out + more));
  }
  return acc;
}

const STAT_SCRIPT = `
few="$1"; shift
# One stat for the whole batch (GNU, then BSD format); links, and every path of a small batch, get their real path.
if stat -c %s / >/dev/null 2>&1; then out=$(stat -c '%F	%s	%n' -- "$@" 2>/dev/null); else out=$(stat -f '%HT	%z	%N' -- "$@" 2>/dev/null); fi
printf '%s\n' "$out" | while IFS='	' read -r type size path; do
  [ -n "$path" ] || continue
  case "$type" in [Rr]egular*) t=f ;; [Dd]irectory) t=d ;; [Ss]ymbolic*) t=l ;; *) t=o ;; esac
  r=$path
  if [ "$t" = l ] || [ "$few" = 1 ]; then r=$(readlink -f -- "$path" 2>/dev/null || printf '%s' "$path"); fi
  printf '%s\t%s\t%s\t%s\n' "$t" "$size" "$r" "$path"
done
`;

/** Type, size and real path of each path that exists (paths with a newline or tab are skipped). */
export function statPaths(executor: Executor, paths: readonly string[]): ResultAsync<Map<string, PathFacts>, ApMigrateError> {
  const clean = [...new Set(paths)].filter((p) => !/[\n\t]/.test(p));
  return batched(clean, (batch) => runSh(executor, STAT_SCRIPT, [batch.length <= 20 ? '1' : '0', ...batch])).map((out) => {
    const facts = new Map<string, PathFacts>();
    for (const line of out.split('\n')) {
      const [type, size, real, ...rest] = line.split('\t');
      const path = rest.join('\t');
      if (!path || !type) continue;
      facts.set(path, { type: type as PathFacts['type'], size: Number(size) || 0, real: real || path });
    }
    return facts;
  });
}

const READ_SCRIPT = `
mark="$1"; max="$2"; shift 2
for p in "$@"; do
  [ -f "$p" ] || continue
  printf '%s %s\\n' "$mark" "$p"
  head -c "$max" -- "$p" 2>/dev/null
  printf '\\n%s\\n' "$mark"
done
`;

/** The first `maxBytes` of each regular file (text or not: the caller decides). */
export function readSmallFiles(executor: Executor, paths: readonly string[], maxBytes = 256 * 1024): ResultAsync<Map<string, string>, ApMigrateError> {
  const mark = `--ap-migrate-${randomBytes(8).toString('hex')}--`;
  const clean = [...new Set(paths)].filter((p) => !/[\n]/.test(p));
  return batched(clean, (batch) => runSh(executor, READ_SCRIPT, [mark, String(maxBytes), ...batch], 64 * 1024 * 1024)).map((out) => {
    const files = new Map<string, string>();
    const parts = out.split(`\n${mark}\n`);
    for (const part of parts) {
      const at = part.indexOf(`${mark} `);
      if (at < 0) continue;
      const nl = part.indexOf('\n', at);
      if (nl < 0) continue;
      files.set(part.slice(at + mark.length + 1, nl), part.slice(nl + 1));
    }
    return files;
  });
}

const PACKAGE_SCRIPT = `
# Prints "pkg NAME" for the packages owning the given paths, then "dep NAME" for their direct
# dependencies, "src NAME SOURCE" for the source package each was built from (dpkg), then
# "file PKG PATH" for every file of each. dpkg first, then rpm, then FreeBSD pkg.
owners=""
if command -v dpkg-query >/dev/null 2>&1; then
  owners=$(for p in "$@"; do
    dpkg-query -S -- "$p" 2>/dev/null | grep -v '^diversion' | sed 's/: .*//' | tr ',' '\\n' | sed 's/^ *//; s/:.*//'
  done | sort -u)
  deps=""
  for o in $owners; do
    echo "pkg $o"
    deps="$deps $(dpkg-query -W -f='\${Depends}' "$o" 2>/dev/null | tr ',' '\\n' | sed 's/|.*//; s/(.*//; s/:.*//; s/ //g')"
  done
  installed=""
  for d in $(printf '%s\\n' $deps | sort -u); do
    dpkg-query -W -f='\${Status}' "$d" 2>/dev/null | grep -q ' installed$' && echo "dep $d" && installed="$installed $d"
  done
  for o in $owners $installed; do
    echo "src $o $(dpkg-query -W -f='\${source:Package}' "$o" 2>/dev/null)"
  done
  for o in $owners $(printf '%s\\n' $deps | sort -u); do
    dpkg-query -L "$o" 2>/dev/null | sed "s|^|file $o |"
  done
elif command -v rpm >/dev/null 2>&1; then
  for p in "$@"; do rpm -qf --qf '%{NAME}\\n' -- "$p" 2>/dev/null; done | sort -u | while read -r o; do
    echo "pkg $o"; rpm -ql "$o" 2>/dev/null | sed "s|^|file $o |"
  done
elif command -v pkg >/dev/null 2>&1; then
  for p in "$@"; do pkg which -q -- "$p" 2>/dev/null; done | sort -u | while read -r o; do
    echo "pkg $o"; pkg info -l "$o" 2>/dev/null | sed -n 's|^[[:space:]]*/|/|p' | sed "s|^|file $o |"
  done
fi
exit 0
`;

/** Packages owning `paths`, their direct dependencies, and every file of each. */
export interface PackageFacts {
  owners: string[];
  dependencies: string[];
  /** The source package each owner and dependency was built from, where the package manager says (dpkg). */
  sources: Map<string, string>;
  /** Files by package. */
  files: Map<string, string[]>;
}

/** Ask the source's package manager (dpkg, rpm or FreeBSD pkg) who owns `paths`. */
export function packageFacts(executor: Executor, paths: readonly string[]): ResultAsync<PackageFacts, ApMigrateError> {
  return runSh(executor, PACKAGE_SCRIPT, paths, 128 * 1024 * 1024).map((out) => {
    const facts: PackageFacts = { owners: [], dependencies: [], sources: new Map(), files: new Map() };
    for (const line of out.split('\n')) {
      if (line.startsWith('pkg ')) facts.owners.push(line.slice(4));
      else if (line.startsWith('dep ')) facts.dependencies.push(line.slice(4));
      else if (line.startsWith('src ')) {
        const [pkg, source] = line.slice(4).split(' ');
        if (pkg && source) facts.sources.set(pkg, source);
      }
      else if (line.startsWith('file ')) {
        const rest = line.slice(5);
        const sp = rest.indexOf(' ');
        if (sp < 0) continue;
        const pkg = rest.slice(0, sp);
        const path = rest.slice(sp + 1);
        if (!path.startsWith('/') || path === '/.') continue;
        let list = facts.files.get(pkg);
        if (!list) facts.files.set(pkg, (list = []));
        list.push(path);
      }
    }
    return facts;
  });
}

const TREE_SCRIPT = `
for d in "$@"; do
  [ -d "$d" ] || continue
  kb=$(du -sk -- "$d" 2>/dev/null | awk '{print $1}')
  n=$(find "$d" 2>/dev/null | wc -l | tr -d ' ')
  printf '%s\\t%s\\t%s\\n' "\${kb:-0}" "\${n:-0}" "$d"
done
`;

/** Approximate bytes (from `du -k`) and entries of each directory tree. */
export function measureSourceTrees(executor: Executor, dirs: readonly string[]): ResultAsync<Map<string, { bytes: number; files: number }>, ApMigrateError> {
  return runSh(executor, TREE_SCRIPT, dirs).map((out) => {
    const sizes = new Map<string, { bytes: number; files: number }>();
    for (const line of out.split('\n')) {
      const [kb, n, ...rest] = line.split('\t');
      const dir = rest.join('\t');
      if (dir) sizes.set(dir, { bytes: Number(kb) * 1024 || 0, files: Number(n) || 0 });
    }
    return sizes;
  });
}

/** The source's account databases (`getent` when present, else the files). */
export function accountDatabases(executor: Executor): ResultAsync<{ passwd: string; group: string }, ApMigrateError> {
  const script = `
if command -v getent >/dev/null 2>&1; then getent passwd; echo '--ap-migrate-group--'; getent group
else cat /etc/passwd; echo '--ap-migrate-group--'; cat /etc/group; fi
`;
  return runSh(executor, script, []).map((out) => {
    const [passwd = '', group = ''] = out.split('--ap-migrate-group--\n');
    return { passwd, group };
  });
}
