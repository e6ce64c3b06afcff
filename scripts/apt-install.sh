#!/usr/bin/env bash
# Install the named Debian packages that are missing, with apt-get (sudo when not root).
# Used by setup.sh (caffe/apt-packages.txt) and by `make lint` (shellcheck).
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0
sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
printf '[apt-install] installing Debian packages: %s\n' "${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
