#!/usr/bin/env bash
# The one test image, used by the tests (tests/support) and the benches (bench/*.sh) alike:
# Debian's busybox-static with every applet linked in /bin, imported into Docker (no image
# registry is reachable here). Prints its name, `sutazai-busybox:<busybox version>`, which
# says what it holds; builds it only when Docker lacks it.
set -euo pipefail
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "no $busybox: install Debian's busybox-static" >&2; exit 1; }
version=$("$busybox" 2>&1 | sed -n '1s/^BusyBox v\([0-9][0-9.]*\).*/\1/p')
image="sutazai-busybox:${version:-unknown}"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/rootfs/bin"
  cp "$busybox" "$tmp/rootfs/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$tmp/rootfs/bin/$applet"
  done
  tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
  docker import "$tmp/rootfs.tar" "$image" >/dev/null
fi
echo "$image"
