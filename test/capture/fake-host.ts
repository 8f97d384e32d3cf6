/**
 * A fake source host for the capture's unit tests: a directory that stands for `/`, with its own
 * files, a small dpkg database and account databases, reached through an {@link Executor} that
 * runs the capture's real scripts on this machine with every absolute path argument moved under
 * the directory and the directory taken out of what they print. `dpkg-query` and `getent` are
 * small shell stand-ins (first on PATH) that answer from the fake database and the fake
 * `/etc/passwd` and `/etc/group`; `stat`, `readlink`, `head`, `du` and `find` are the real ones.
 * No root, no daemon, no installed package involved.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createLocalExecutor, type Executor } from '../../src/index.js';

/** One package of the fake dpkg database. */
export interface FakePackage {
  /** Source package it was built from (dpkg's `${source:Package}`); none: an empty answer. */
  source?: string;
  depends?: string[];
  /** Its files (absolute, as on the fake host): created with their content, `null` for a directory. */
  files: Record<string, string | null>;
}

/** What the fake host holds. */
export interface FakeHostSpec {
  packages: Record<string, FakePackage>;
  /** Files that belong to no package (`null`: a directory). */
  files?: Record<string, string | null>;
  passwd: string;
  group: string;
}

export interface FakeHost {
  executor: Executor;
  /** The directory that stands for `/`. */
  root: string;
  /** Change (or add) a package's database entry after creation. */
  setSource(pkg: string, source: string): void;
  remove(): void;
}

const FAKE_DPKG_QUERY = `#!/bin/sh
# dpkg-query -S PATH | -W -f=FORMAT PKG | -L PKG, from $FAKE_DB (PKG.list, PKG.depends, PKG.source).
db=$FAKE_DB
case "$1" in
  -S)
    p=$2; [ "$p" = -- ] && p=$3
    p=\${p#"$FAKE_ROOT"}
    found=1
    for l in "$db"/*.list; do
      grep -qxF -- "$p" "$l" && { printf '%s: %s\\n' "$(basename "$l" .list)" "$p"; found=0; }
    done
    exit $found ;;
  -W)
    f=\${2#-f=}; pkg=$3
    [ -f "$db/$pkg.list" ] || exit 1
    case "$f" in
      '\${Depends}') cat "$db/$pkg.depends" 2>/dev/null ;;
      '\${Status}') printf 'install ok installed' ;;
      '\${source:Package}') cat "$db/$pkg.source" 2>/dev/null ;;
      *) exit 2 ;;
    esac ;;
  -L)
    [ -f "$db/$2.list" ] || exit 1
    cat "$db/$2.list" ;;
  *) exit 2 ;;
esac
`;

const FAKE_GETENT = `#!/bin/sh
case "$1" in
  passwd) cat "$FAKE_ROOT/etc/passwd" ;;
  group) cat "$FAKE_ROOT/etc/group" ;;
  *) exit 2 ;;
esac
`;

function put(root: string, path: string, content: string | null): void {
  const at = join(root, path);
  if (content === null) mkdirSync(at, { recursive: true });
  else {
    mkdirSync(dirname(at), { recursive: true });
    writeFileSync(at, content);
  }
}

/** Build the fake host in a new temporary directory. */
export function createFakeHost(spec: FakeHostSpec): FakeHost {
  const base = mkdtempSync(join(tmpdir(), 'apm-capture-'));
  const root = join(base, 'root');
  const db = join(base, 'dpkg');
  const bin = join(base, 'bin');
  for (const d of [root, db, bin]) mkdirSync(d, { recursive: true });
  for (const [name, pkg] of Object.entries(spec.packages)) {
    for (const [path, content] of Object.entries(pkg.files)) put(root, path, content);
    // dpkg lists every parent directory too (`/.`, `/etc`, ...).
    const listed = new Set<string>(['/.']);
    for (const path of Object.keys(pkg.files)) {
      for (let d = dirname(path); d !== '/'; d = dirname(d)) listed.add(d);
      listed.add(path);
    }
    writeFileSync(join(db, `${name}.list`), `${[...listed].sort().join('\n')}\n`);
    writeFileSync(join(db, `${name}.depends`), (pkg.depends ?? []).join(', '));
    writeFileSync(join(db, `${name}.source`), pkg.source ?? '');
  }
  for (const [path, content] of Object.entries(spec.files ?? {})) put(root, path, content);
  put(root, '/etc/passwd', spec.passwd);
  put(root, '/etc/group', spec.group);
  writeFileSync(join(bin, 'dpkg-query'), FAKE_DPKG_QUERY);
  writeFileSync(join(bin, 'getent'), FAKE_GETENT);
  chmodSync(join(bin, 'dpkg-query'), 0o755);
  chmodSync(join(bin, 'getent'), 0o755);

  const local = createLocalExecutor();
  const env = { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`, FAKE_ROOT: root, FAKE_DB: db };
  const executor: Executor = {
    description: `fake host at ${root}`,
    exec(argv, options = {}) {
      // The capture runs `sh -c SCRIPT NAME ARGS...`: its arguments are paths on the source host.
      const moved = argv[0] === 'sh' && argv[1] === '-c' ? [...argv.slice(0, 4), ...argv.slice(4).map((a) => (a.startsWith('/') ? join(root, a) : a))] : [...argv];
      return local.exec(moved, { ...options, env: { ...options.env, ...env } }).map((r) => ({ ...r, stdout: r.stdout.split(root).join('') }));
    },
  };
  return {
    executor,
    root,
    setSource: (pkg, source) => writeFileSync(join(db, `${pkg}.source`), source),
    remove: () => rmSync(base, { recursive: true, force: true }),
  };
}
