#!/usr/bin/env bash
# A Docker engine for the docker make targets, on machines that have none running.
#
# Usage: scripts/docker-daemon.sh with COMMAND [ARGS...]
#   Runs COMMAND with DOCKER_HOST pointing at a reachable Docker engine and the image
#   debian:bookworm present. When no engine is reachable, it installs Debian's docker.io
#   (and debootstrap) if missing, starts a private dockerd for the duration of COMMAND and
#   stops it afterwards, also when COMMAND fails or the run is interrupted. A daemon left
#   running by a run that was killed outright (SIGKILL) is taken over and stopped by the next.
#
# The private daemon keeps its images in the build cache, outside the clone, so that a second
# run (or CI on the same machine) reuses the base image and the build layers:
#     $DEEPDREAM_CAFFE_CACHE/docker/   data/ (images), run/ (socket, pid), dockerd.log, lock
# It uses the vfs storage driver and no bridge or iptables, which work inside unprivileged
# build machines; builds then need `--network host` (scripts/docker-build.sh passes it).
#
# debian:bookworm: pulled when a registry is reachable, otherwise made locally with
# debootstrap from the Debian mirror named in the machine's own apt sources.
set -euo pipefail

cache=${DEEPDREAM_CAFFE_CACHE:-$HOME/.cache/deepdream-caffe}
root=${DEEPDREAM_DOCKER_ROOT:-$cache/docker}
sock=$root/run/docker.sock
pidfile=$root/run/dockerd.pid
log=$root/dockerd.log
say() { printf '[docker-daemon] %s\n' "$*" >&2; }
die() { printf '[docker-daemon] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_missing() {  # Debian packages for the commands named, when a command is missing
  local need=() cmd pkg
  for pair in "$@"; do
    cmd=${pair%%=*} pkg=${pair#*=}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
  done
  [ ${#need[@]} = 0 ] && return
  say "installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

reachable() { timeout 20 docker info >/dev/null 2>&1; }

ours_alive() {  # the pid file names a running dockerd
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]
}

stop_ours() {
  local pid
  ours_alive || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  say "stopping the private dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do ours_alive || break; sleep 1; done
  if ours_alive; then kill -KILL "$pid" 2>/dev/null || true; sleep 1; fi
  rm -f "$pidfile"
}

start_ours() {
  install_missing dockerd=docker.io
  mkdir -p "$root/data" "$root/run"
  # One that runs but does not answer (a run killed outright while it started): replace it.
  ours_alive && stop_ours
  rm -f "$pidfile" "$sock"
  say "starting a private dockerd (log: $log)"
  # setsid: the daemon must not get the terminal's Ctrl-C before the trap stops it in order.
  as_root setsid "$(command -v dockerd || echo /usr/sbin/dockerd)" \
      --data-root "$root/data" --exec-root "$root/run/exec" --pidfile "$pidfile" \
      --host "unix://$sock" --storage-driver vfs --iptables=false --ip-masq=false \
      --bridge=none >"$log" 2>&1 </dev/null 8>&- 9>&- &
  for _ in $(seq 90); do
    DOCKER_HOST=unix://$sock reachable && return
    sleep 1
  done
  tail -n 20 "$log" >&2
  stop_ours
  die "dockerd did not start within 90 s (log above: $log)"
}

debian_mirror() {  # the first Debian archive URI in the machine's apt sources
  local uri
  uri=$(grep -hoE '(URIs:|^deb)[[:space:]]+https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
          /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
          2>/dev/null | grep -oE 'https?://[^[:space:]]+' | head -n1) || true
  echo "${uri:-http://deb.debian.org/debian}"
}

base_image() {
  docker image inspect debian:bookworm >/dev/null 2>&1 && return
  if timeout 60 docker pull -q debian:bookworm >/dev/null 2>&1; then return; fi
  install_missing debootstrap=debootstrap
  local mirror rootfs t0
  mirror=$(debian_mirror) t0=$(date +%s)
  as_root rm -rf "$root"/rootfs-*  # left by an interrupted run
  rootfs=$(mktemp -d "$root/rootfs-XXXXXX")
  say "no registry reachable: making debian:bookworm with debootstrap from $mirror"
  as_root debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$root/debootstrap.log" 2>&1 ||
    { tail -n 20 "$root/debootstrap.log" >&2; as_root rm -rf "$rootfs"; die "debootstrap failed"; }
  local rc=0
  as_root chmod 755 "$rootfs"  # mktemp made it 0700: it becomes the image's /
  as_root tar -C "$rootfs" -c . | docker import - debian:bookworm >/dev/null || rc=$?
  as_root rm -rf "$rootfs"
  [ $rc = 0 ] || die "docker import of the debootstrap tree failed"
  say "debian:bookworm made in $(( $(date +%s) - t0 ))s"
}

finish() {  # the last run using the private daemon stops it
  exec 8>"$root/start.lock"
  flock 8
  if flock -n -x 9; then stop_ours; else say "leaving the private dockerd to the run still using it"; fi
}

on_signal() {  # stop the command (then the EXIT trap stops the daemon)
  [ -n "${child:-}" ] && kill -TERM "$child" 2>/dev/null
  exit "$1"
}

run_with() {
  [ $# -gt 0 ] || die "usage: $0 with COMMAND [ARGS...]"
  # A signal must reach the traps at once: bash runs a trap only after the foreground command
  # ends, so the command runs in the background and this script waits for it.
  child=
  trap 'on_signal 130' INT
  trap 'on_signal 143' TERM
  install_missing docker=docker.io
  if ! reachable; then
    mkdir -p "$root"
    export DOCKER_HOST=unix://$sock
    # Runs share the private daemon: each holds lock 9 shared while it works; start.lock
    # makes starting and stopping one at a time, and the last run out stops the daemon.
    exec 9>"$root/lock" 8>"$root/start.lock"
    flock -s 9
    flock 8
    trap 'finish' EXIT
    reachable || start_ours
    flock -u 8
  fi
  base_image
  "$@" &
  child=$!
  wait "$child"
}

case ${1:-} in
  with) shift; run_with "$@" ;;
  stop) stop_ours ;;
  *) die "usage: $0 with COMMAND [ARGS...] | stop" ;;
esac
