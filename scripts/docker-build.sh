#!/usr/bin/env bash
# Build one of the images: scripts/docker-build.sh cpu|cuda [extra docker build flags...]
#   cpu   docker/Dockerfile.cpu  -> deepdream-caffe:cpu
#   cuda  docker/Dockerfile.cuda -> deepdream-caffe:cuda
# Needs a reachable Docker engine (make docker runs this under scripts/docker-daemon.sh).
# CUDA_ARCH_BIN and CUDA_ARCH_PTX, when set, become build arguments of the CUDA image.
# Uses BuildKit (for the build secret): `docker buildx` where installed, else the classic
# client with DOCKER_BUILDKIT=1 (Debian's docker.io). When the machine's pip uses a CA bundle
# (PIP_CERT or pip's `cert` setting), it is passed as the build secret `pip_cert`, which is
# mounted during the pip installs only and stays out of the image.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '[docker-build] %s\n' "$*" >&2; }
die() { printf '[docker-build] error: %s\n' "$*" >&2; exit 1; }

variant=${1:-}
case $variant in
  cpu|cuda) shift ;;
  *) die "usage: $0 cpu|cuda [docker build flags...]" ;;
esac
tag=${DOCKER_TAG:-deepdream-caffe:$variant}

build_cmd() {  # a docker client that builds with BuildKit
  local c
  for c in docker /usr/bin/docker; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" buildx version >/dev/null 2>&1; then echo "$c buildx build --load"; return; fi
    # Clients before 23.0 build with BuildKit themselves when DOCKER_BUILDKIT=1.
    case $("$c" version --format '{{.Client.Version}}' 2>/dev/null) in
      1[0-9].*|20.*|21.*|22.*) echo "env DOCKER_BUILDKIT=1 $c build"; return ;;
    esac
  done
  die "no docker client that builds with BuildKit: install docker-buildx (or Debian's docker.io)"
}

pip_cert() {  # the CA bundle the machine's pip uses, if any
  local cert=${PIP_CERT:-}
  [ -n "$cert" ] || cert=$(python3 -m pip config get global.cert 2>/dev/null || true)
  [ -n "$cert" ] && [ -f "$cert" ] && echo "$cert"
}

# The build cache makes the next build of the same Caffe quick; it must not fill the disk.
# Overlay drivers store layers as differences and docker's own count is right: the least
# recently used cache beyond 20 GB goes. The vfs driver (the private daemon's) stores every
# layer whole, so docker's count means little (a cache it counted as 8.6 GB took 75 GB here
# and filled the disk): there a build leaves DEEPDREAM_DOCKER_FREE_GB (default 30) free on the
# data root's disk, dropping the whole cache when it would not, and the next build is cold.
# Not --filter unused-for: dockerd 20.10 counts a record never reused as unused for ever, so
# it pruned the build just made. Pruning is best effort: dockerd 20.10 sometimes fails it
# ("lease not found") and that is harmless.
keep_free=${DEEPDREAM_DOCKER_FREE_GB:-30}
[[ $keep_free =~ ^[0-9]+$ ]] || die "DEEPDREAM_DOCKER_FREE_GB=$(printf %q "$keep_free"): give a whole number of GB"

vfs_root() {  # the data root, when the engine stores layers with vfs
  [ "$(docker info -f '{{.Driver}}' 2>/dev/null)" = vfs ] && docker info -f '{{.DockerRootDir}}'
}
free_gb() {  # free GB on the disk of a folder; nothing when df cannot tell
  df -Pk "$1" 2>/dev/null | awk 'NR==2 {printf "%d", $4/1048576}' || true
}
cache_records() {
  docker system df --format '{{.Type}} {{.TotalCount}}' | awk '/^Build Cache/ {print $3}'
}

room_for_build() {  # a cold build on vfs peaks at this much disk (measured here, rounded up)
  local need dir free
  need=$([ "$variant" = cuda ] && echo 35 || echo 15)
  dir=$(vfs_root) && free=$(free_gb "$dir") && [ -n "$free" ] && [ "$free" -lt "$need" ] || return 0
  [ "$(cache_records)" = 0 ] || return 0  # some of the cache may be reused: let it try
  die "only $free GB free on the disk of $dir, and a cold $variant build on vfs takes up to $need GB: free disk space (docker image rm ...) and build again"
}

keep_cache() {  # unknown free space on vfs counts as too little
  local dir free
  if dir=$(vfs_root); then
    free=$(free_gb "$dir")
    [ -z "$free" ] || [ "$free" -lt "$keep_free" ] || return 0
    say "${free:-unknown} GB left free on the disk of $dir (under DEEPDREAM_DOCKER_FREE_GB=$keep_free): the build cache is dropped, the next build is cold"
    docker builder prune -af >/dev/null 2>&1 || say "(build cache not pruned)"
  else
    docker builder prune -f --keep-storage 20GB >/dev/null 2>&1 || say "(build cache not pruned)"
  fi
}

room_for_build
flags=(--network host -f "$here/docker/Dockerfile.$variant" -t "$tag")
# CUDA_ARCH_BIN / CUDA_ARCH_PTX (e.g. "90"): fewer GPU architectures, a faster CUDA build.
for arg in CUDA_ARCH_BIN CUDA_ARCH_PTX; do
  if [ "$variant" = cuda ] && [ -n "${!arg:-}" ]; then flags+=(--build-arg "$arg=${!arg}"); fi
done
if cert=$(pip_cert); then
  flags+=(--secret "id=pip_cert,src=$cert")
  say "pip CA bundle $cert passed as the build secret pip_cert"
fi
t0=$(date +%s)
say "building $tag (docker/Dockerfile.$variant)"
# shellcheck disable=SC2046  # build_cmd is a command line on purpose
$(build_cmd) "${flags[@]}" "$@" "$here"
say "built $tag in $(( $(date +%s) - t0 ))s; size $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
# The build record inside the image (`info` works without a GPU, also in the CUDA image).
record=$(docker run --rm --network none "$tag" info | grep -E '^caffe_(variant|build_seconds|cache_key) ') ||
  die "$tag does not run \`deepdream-caffe info\`"
printf '%s\n' "$record" | sed 's/^/[docker-build]   /' >&2
printf '%s\n' "$record" | grep -qE "^caffe_variant +$variant\$" || die "$tag holds no $variant build of Caffe"
# vfs keeps every layer whole: drop the untagged images earlier builds of this tag left.
docker image prune -f --filter label=org.opencontainers.image.title=deepdream-caffe >/dev/null
keep_cache
