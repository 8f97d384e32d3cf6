#!/bin/sh
# Build the vcsim-esx test simulator from Debian's golang-github-vmware-govmomi-dev with Debian's
# golang-go. Cached: rebuilds only when main.go (or this script) is newer than the binary.
# Usage: test/vcsim/build.sh   (from anywhere; prints the binary path)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/test/.build/vcsim-esx"
if [ -x "$out" ] && [ ! "$here/main.go" -nt "$out" ] && [ ! "$here/build.sh" -nt "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$root/test/.build"
cd "$root"
# GOPATH mode: the Debian package installs govmomi sources under /usr/share/gocode/src.
GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go build -o "$out.tmp" ./test/vcsim
mv "$out.tmp" "$out"
echo "$out"
