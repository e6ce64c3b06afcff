#!/usr/bin/env bash
# Install the Debian packages listed in the given files (one per line), only those missing.
# Used by scripts/setup.sh (caffe/apt-packages.txt) and `make pytest` (tests/apt-packages.txt).
set -euo pipefail
say() { printf '[apt-install] %s\n' "$*" >&2; }
pkgs=()
for list in "$@"; do mapfile -t -O "${#pkgs[@]}" pkgs < <(grep -v '^\s*\(#\|$\)' "$list"); done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
say "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
