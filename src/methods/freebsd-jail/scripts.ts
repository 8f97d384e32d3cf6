/**
 * The fixed parts of the jail deployer: the tools and paths it relies on at the destination, and
 * the POSIX sh scripts it runs there. Scripts take their data as positional arguments ("$@"),
 * never spliced into their text.
 *
 * @module
 */

/** Tools the destination needs (on top of `sh`): jail(8) and friends, and the root builder's. The receiver's (`node`, or the POSIX receiver's) are checked apart. */
export const JAIL_TOOLS = ['jail', 'jls', 'jexec', 'pgrep', 'sockstat', 'ldd', 'cp', 'mv', 'mkdir', 'mount', 'umount', 'df', 'awk', 'env', 'id', 'tail'];

/** PATH given to `jail -c` (run under `env -i`, so nothing from the SSH session leaks into the jail). */
export const JAIL_PATH = '/sbin:/bin:/usr/sbin:/usr/bin';

/** Host files copied into a thin jail's root unless the bundle brought them: the loader and the shell `exec.start` needs. */
export const JAIL_HOST_FILES = ['/libexec/ld-elf.so.1', '/bin/sh'];

/**
 * The host's statically linked ifconfig (rescue(8)). A VNET jail's interfaces are configured from
 * `exec.created` with `jexec`, which runs as root *inside* the jail: the bundle's own
 * `/sbin/ifconfig`, loader or libc must never run there as root, so this static copy, which
 * loads nothing from the jail's root, is what runs.
 */
export const RESCUE_IFCONFIG = '/rescue/ifconfig';

/** Where activation puts the copy of {@link RESCUE_IFCONFIG} inside a VNET jail (a directory only root can enter). */
export const JAIL_VNET_IFCONFIG = '/.ap-migrate/ifconfig';

/**
 * Name collision (`jls -j`) and the user to run as (`id`), with its uid (a user that resolves to
 * uid 0 is refused unless the caller named it or passed `allowRoot`). Args: name uid user-or-empty
 */
export const JAIL_PREFLIGHT_SCRIPT = `
name="$1"; uid="$2"; user="$3"
if jls -j "$name" jid >/dev/null 2>&1; then echo "jail_exists=1"; else echo "jail_exists=0"; fi
if [ -z "$user" ]; then user=$(id -un "$uid" 2>/dev/null) || user=""; fi
if [ -n "$user" ] && u=$(id -u "$user" 2>/dev/null); then echo "user=$user"; echo "user_uid=$u"; fi
exit 0
`;

/**
 * Complete the root inside staging: directories jail(8) and the program need, the loader and
 * `/bin/sh` (exec.start runs through it) with their libraries, from this host unless the bundle
 * brought them. Only the host's own binaries go through `ldd`: running `ldd` on a bundled binary
 * would run its ELF interpreter as root. Every path it writes under the root is checked first:
 * no component may be a symbolic link (the bundle's, e.g. `root/tmp -> /etc`) and none may be
 * `.` or `..`. For a VNET jail, `helper` is {@link RESCUE_IFCONFIG}, copied to
 * {@link JAIL_VNET_IFCONFIG}. Args: staging exe cwd helper-or-empty [host-file...] -- [dir...]
 */
export const JAIL_ACTIVATE_SCRIPT = `
set -e
staging="$1"; exe="$2"; cwd="$3"; helper="$4"; shift 4
root="$staging/root"
# Paths come from the program's profile: absolute, and no "." or ".." that could climb out of the root.
check_path() {
  case "$1" in /*) ;; *) echo "refusing the relative path $1" >&2; exit 4 ;; esac
  case "$1/" in */./*|*/../*) echo "refusing the path $1: it has a . or .. component" >&2; exit 4 ;; esac
}
# The root came from the bundle: never let a symbolic link in it redirect a write onto the host.
no_link() {
  [ -z "$1" ] || check_path "$1"
  p="$root"; rest="\${1#/}"
  while [ -n "$rest" ]; do
    part="\${rest%%/*}"
    if [ "$part" = "$rest" ]; then rest=""; else rest="\${rest#*/}"; fi
    p="$p/$part"
    if [ -L "$p" ]; then echo "refusing to write through the symbolic link $p" >&2; exit 4; fi
  done
}
check_path "$exe"
for dir in /dev /tmp "$cwd"; do no_link "$dir"; done
mkdir -p "$root/dev" "$root/tmp" "$root$cwd" "$staging/run"
chmod 1777 "$root/tmp"
chmod 755 "$staging" "$root"
[ -f "$root$exe" ] || { echo "the bundle has no $exe" >&2; exit 3; }
if [ -n "$helper" ]; then
  # exec.created runs it as root inside the jail: a static copy from the host, never the bundle's.
  [ -f "$helper" ] || { echo "$helper is missing: a VNET jail needs the host's statically linked ifconfig" >&2; exit 5; }
  if [ -e "$root/.ap-migrate" ] || [ -L "$root/.ap-migrate" ]; then echo "refusing a bundle that has /.ap-migrate" >&2; exit 4; fi
  mkdir -m 700 "$root/.ap-migrate"
  cp "$helper" "$root/.ap-migrate/ifconfig"
  chmod 500 "$root/.ap-migrate/ifconfig"
fi
copy_file() {
  [ -e "$1" ] || return 0
  if [ -e "$root$1" ] || [ -L "$root$1" ]; then return 0; fi
  no_link "\${1%/*}"
  mkdir -p "$root\${1%/*}"
  cp -p "$1" "$root$1"
}
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  copy_file "$1"
  ldd -f '%p\\n' "$1" 2>/dev/null | while IFS= read -r lib; do [ -z "$lib" ] || copy_file "$lib"; done
  shift
done
[ "$#" -gt 0 ] && shift
for dir in "$@"; do no_link "$dir"; mkdir -p "$root$dir"; done
exit 0
`;

/** Move the finished staging directory to the install directory with one rename (FreeBSD mv has no -T, so check first). */
export const JAIL_MOVE_SCRIPT = `
set -e
staging="$1"; install="$2"
if [ -e "$install" ] || [ -L "$install" ]; then echo "exists: $install" >&2; exit 17; fi
mv "$staging" "$install"
`;

/**
 * Remove the jail (with its config, so jail(8) also unmounts devfs and removes the address aliases
 * it added), make sure nothing is still mounted under each directory, then remove them. Refuses to
 * `rm -rf` through a live mount. Only this migration's jail is removed: one exists only once
 * activation wrote the config (`conf` is empty before), and its root must be the one next to that
 * config, so a jail of the same name someone else runs is left alone. Args: name conf dir...
 */
export const JAIL_ROLLBACK_SCRIPT = `
name="$1"; conf="$2"; shift 2
if [ -n "$conf" ] && [ "$(jls -j "$name" path 2>/dev/null)" = "\${conf%/run/jail.conf}/root" ]; then
  if [ -f "$conf" ]; then jail -f "$conf" -r "$name" || jail -R "$name" || exit 4; else jail -R "$name" || exit 4; fi
fi
for dir in "$@"; do
  [ -n "$dir" ] || continue
  if mount -p | awk -v m="$dir/root/dev" '$2 == m { f = 1 } END { exit !f }'; then umount -f "$dir/root/dev" || exit 5; fi
  if mount -p | awk -v p="$dir/" 'index($2, p) == 1 { f = 1 } END { exit !f }'; then echo "still mounted under $dir" >&2; exit 6; fi
  chflags -R noschg "$dir" 2>/dev/null || true
  rm -rf -- "$dir"
done
exit 0
`;
