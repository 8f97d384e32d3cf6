#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, and prepares the kernel interfaces
# (tracefs) that bpftrace uses. Idempotent; run as root.
set -euo pipefail
PACKAGES=(bpftrace strace openssh-server openssh-client golang-go golang-github-vmware-govmomi-dev
  libarchive-tools iproute2 util-linux procps psmisc curl gcc libc6-dev sqlite3 python3 tar coreutils tcsh zstd rsync
  postgresql-15 postgresql-client-15 nginx memcached)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ! -e /sys/kernel/tracing/trace_pipe ] && [ -d /sys/kernel/tracing ]; then
  mount -t tracefs nodev /sys/kernel/tracing || true
fi
