#!/bin/sh
# Installs the Debian packages the test suite and the examples use (Go for the
# interop peer, nghttp2's tools, protoc, curl, iproute2/nftables for --netns).
# Does nothing when they are all present; needs root (or sudo) otherwise.
set -eu
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
