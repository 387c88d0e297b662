#!/usr/bin/env bash
# Install and start what `make test` and `make demo` need, only when missing:
# idempotent, quiet when everything is there. Usage:
#   scripts/ensure-deps.sh [packages|node-modules|dockerd|base|all]...   (default: all)
# dockerd is started in the background with its log in $DOCKERD_LOG and is
# left running; `.ci/run` stops it when it was the one that started it.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server/sshfs/rclone/gesftpserver: the tests' real SFTP peers;
# libfuse2/fuse3: FUSE for fuse-native and for the sshfs comparison;
# debootstrap: the offline base image; docker.io: the engine the e2e tests use;
# passwd/procps: chpasswd for the password-auth test user, pkill in test helpers;
# make: .ci/run and the README drive everything through the Makefile.
PACKAGES=(make openssh-server libfuse2 fuse3 sshfs docker.io debootstrap rclone gesftpserver passwd procps ca-certificates)
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

log() { echo "ensure-deps: $*" >&2; }

need_root() {
  [ "$(id -u)" = 0 ] || { log "$1 needs root (run as root or with sudo)"; exit 1; }
}

ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root "installing ${missing[*]}"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_node() {
  command -v node >/dev/null || { log "node is missing: install Node.js 20 (the project's engines field)"; exit 1; }
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" = 20 ] || log "warning: node $(node -v); tsfs is built and tested on Node 20"
}

# npm ci when node_modules is missing or older than the lockfile (npm writes
# node_modules/.package-lock.json on every install).
ensure_node_modules() {
  ensure_node
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
    [ package.json -nt node_modules/.package-lock.json ]; then
    log "npm ci"
    npm ci --no-audit --no-fund
  fi
}

ensure_fuse() {
  [ -c /dev/fuse ] && return 0
  modprobe fuse 2>/dev/null || true
  [ -c /dev/fuse ] || { log "/dev/fuse is missing: load the fuse kernel module (modprobe fuse)"; exit 1; }
}

ensure_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  need_root "starting dockerd"
  if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the engine must not die with the shell (or make) that started it.
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  local i
  for i in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "dockerd did not answer within 60 s; last lines of $DOCKERD_LOG:"
  tail -n 20 "$DOCKERD_LOG" >&2 || true
  exit 1
}

ensure_base() {
  ensure_dockerd
  scripts/offline-base.sh
}

[ $# -eq 0 ] && set -- all
for what in "$@"; do
  case "$what" in
    packages) ensure_packages ;;
    node-modules) ensure_node_modules ;;
    dockerd) ensure_packages; ensure_fuse; ensure_dockerd ;;
    base) ensure_packages; ensure_base ;;
    all) ensure_packages; ensure_fuse; ensure_node_modules; ensure_dockerd; ensure_base ;;
    *) log "unknown target $what (packages|node-modules|dockerd|base|all)"; exit 2 ;;
  esac
done
