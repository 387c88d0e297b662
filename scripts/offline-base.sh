#!/usr/bin/env bash
# Build a stand-in for the node:20-bookworm-slim image when no container
# registry is reachable: a debootstrap'ed Debian bookworm (minbase) plus this
# machine's own node, npm and Node headers. The Dockerfile then builds the
# plugin exactly as it would on the real image. Does nothing when the tag exists
# (whether it came from a registry or from an earlier run of this script).
#
# Measured: debootstrap ~35 s, import ~10 s, image ~230 MB.
set -euo pipefail

IMAGE="${BASE_IMAGE:-node:20-bookworm-slim}"
SUITE=bookworm

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "offline-base: $IMAGE already present"
  exit 0
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

NODE_BIN=$(readlink -f "$(command -v node)")
NPM_DIR="$(npm root -g)/npm"
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" = 20 ] || echo "offline-base: warning: this machine's node is $(node -v), the image is tagged $IMAGE" >&2
# node-gyp needs the Node headers; offline it cannot download them, so they
# ship in the image and the global npmrc points nodedir at them.
NODE_HEADERS=""
for d in "$(dirname "$(dirname "$NODE_BIN")")/include/node" /usr/include/node /usr/local/include/node; do
  [ -f "$d/node.h" ] && { NODE_HEADERS="$d"; break; }
done
[ -n "$NODE_HEADERS" ] || { echo "offline-base: Node headers (node.h) not found; native modules could not build" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/tsfs-base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"

echo "offline-base: debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
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

install -D -m 0755 "$NODE_BIN" "$ROOT/usr/local/bin/node"
mkdir -p "$ROOT/usr/local/lib/node_modules" "$ROOT/usr/local/include"
cp -a "$NPM_DIR" "$ROOT/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOT/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOT/usr/local/bin/npx"
cp -a "$NODE_HEADERS" "$ROOT/usr/local/include/node"

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
  --change "ENV NODE_VERSION=$(node -p process.versions.node)" \
  --change 'LABEL org.tsfs.offline-base=true' \
  --change 'CMD ["node"]' \
  - "$IMAGE" >/dev/null
docker run --rm "$IMAGE" sh -c 'node -v && npm -v' | sed 's/^/offline-base: image has /'
