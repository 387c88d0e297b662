#!/usr/bin/env bash
# Install and start what `make test` and `make demo` need, only when missing:
# idempotent, quiet when everything is there. Usage:
#   scripts/ensure-deps.sh [packages|node|node-modules|dockerd|base|qemu|registry|all]...   (default: all)
# registry (not part of all): Debian's docker-registry and openssl, for the
# install/upgrade test (make test-upgrade).
# qemu (not part of all): qemu-user-static and binfmt_misc, to build and run
# the plugin of the other architecture (make all PLATFORM=linux/arm64).
# dockerd is started in the background with its log in $DOCKERD_LOG and is
# left running; `.ci/run` stops it when it was the one that started it.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server/sshfs/rclone/gesftpserver: the tests' real SFTP peers;
# libfuse3-dev/pkg-config: what packages/fuse-native builds and links against;
# fuse3: fusermount3 (unmounts) and the sshfs comparison;
# debootstrap: the offline base image; docker.io: the engine the e2e tests use;
# passwd/procps: chpasswd for the password-auth test user, pkill in test helpers;
# make: .ci/run and the README drive everything through the Makefile.
PACKAGES=(make pkg-config openssh-server libfuse3-dev fuse3 sshfs docker.io debootstrap rclone gesftpserver passwd procps ca-certificates)
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

# Node.js: the project's runtime is Node 24 LTS (package.json engines). A
# machine whose node is another major gets the npm registry's node-linux-<arch>
# binary package (node + headers, what node-gyp builds native modules against)
# unpacked under /usr/local, ahead of /usr/bin on root's PATH, the layout of
# the official tarballs and images. npm is the machine's own, run by that node;
# its global config moves with the prefix, so /usr/local/etc/npmrc carries the
# machine's settings with nodedir pointing at the new headers.
NODE_VERSION="${TSFS_NODE_VERSION:-24.22.3}"
node_arch() {
  case "$(uname -m)" in
    x86_64) echo x64 ;;
    aarch64) echo arm64 ;;
    *) log "no Node.js package for $(uname -m)"; exit 1 ;;
  esac
}
ensure_node() {
  local major=""
  command -v node >/dev/null && major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" = "${NODE_VERSION%%.*}" ] && return 0
  command -v npm >/dev/null || { log "npm is missing: install Node.js ${NODE_VERSION%%.*} with npm"; exit 1; }
  need_root "installing Node.js $NODE_VERSION"
  log "installing Node.js $NODE_VERSION under /usr/local (node-linux-$(node_arch) from the npm registry; found ${major:-none})"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "node-linux-$(node_arch)@$NODE_VERSION" >/dev/null && tar xzf ./*.tgz)
  install -D -m 0755 "$tmp/package/bin/node" /usr/local/bin/node
  rm -rf /usr/local/include/node && mkdir -p /usr/local/include && cp -a "$tmp/package/include/node" /usr/local/include/node
  rm -rf "$tmp"
  mkdir -p /usr/local/etc
  { [ -f /usr/etc/npmrc ] && grep -v '^nodedir=' /usr/etc/npmrc; echo "nodedir=/usr/local"; } >/usr/local/etc/npmrc.tmp
  mv /usr/local/etc/npmrc.tmp /usr/local/etc/npmrc
  # A user-level nodedir (this machine image sets one) wins over the global
  # file; left pointing at the old headers, native modules would build for
  # the wrong ABI (ssh2's nan binding then silently falls back to JS crypto).
  if [ -f "$HOME/.npmrc" ] && grep -q '^nodedir=' "$HOME/.npmrc"; then
    sed -i 's#^nodedir=.*#nodedir=/usr/local#' "$HOME/.npmrc"
  fi
  hash -r
  log "node $(node -v) at $(command -v node)"
}

# npm ci when node_modules is missing, older than the lockfile (npm writes
# node_modules/.package-lock.json on every install), or built by another node
# (native modules are compiled for one ABI).
ensure_node_modules() {
  ensure_node
  local stamp=node_modules/.tsfs-built-with
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
    [ package.json -nt node_modules/.package-lock.json ] || [ "$(cat "$stamp" 2>/dev/null)" != "$(node -v)" ]; then
    log "npm ci (node $(node -v))"
    npm ci --no-audit --no-fund
    node -v >"$stamp"
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

# Foreign binaries run through the kernel's binfmt_misc and Debian's
# qemu-user-static, whose handlers carry the F (fix binary) flag: the kernel
# opens the emulator once, so it also runs inside containers and debootstrap
# chroots that do not have it. Needs a binfmt_misc the machine lets us mount
# (a privileged container or a host); says so and fails where it cannot.
ensure_qemu() {
  local want=aarch64 p
  [ "$(uname -m)" = aarch64 ] && want=x86_64
  grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$want" 2>/dev/null && return 0
  need_root "setting up qemu-user-static and binfmt_misc"
  for p in qemu-user-static binfmt-support; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' && continue
    log "installing qemu-user-static binfmt-support"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-user-static binfmt-support >/dev/null
    break
  done
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || {
      log "cannot mount binfmt_misc (this machine does not allow it): no $want emulation"; exit 1; }
  fi
  update-binfmts --enable "qemu-$want" >/dev/null 2>&1 || true
  grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$want" 2>/dev/null || {
    log "qemu-$want is not registered in binfmt_misc: no $want emulation"; exit 1; }
  log "qemu-$want registered (binfmt_misc, $(sed -n 's/^flags: //p' "/proc/sys/fs/binfmt_misc/qemu-$want"))"
}

[ $# -eq 0 ] && set -- all
for what in "$@"; do
  case "$what" in
    packages) ensure_packages ;;
    node) ensure_node ;;
    node-modules) ensure_node_modules ;;
    dockerd) ensure_packages; ensure_fuse; ensure_dockerd ;;
    base) ensure_packages; ensure_base ;;
    qemu) ensure_qemu ;;
    registry) PACKAGES=(docker-registry openssl); ensure_packages ;;
    all) ensure_packages; ensure_fuse; ensure_node_modules; ensure_dockerd; ensure_base ;;
    *) log "unknown target $what (packages|node|node-modules|dockerd|base|qemu|registry|all)"; exit 2 ;;
  esac
done
