# The rootfs of the tsfs managed plugin (see config.json and `make rootfs`).
# No `# syntax=` line: the build must work with the legacy builder and without
# a registry (`make offline-base` provides node:24-bookworm-slim locally).
# BASE_IMAGE: the Makefile names an arch-specific local tag for a foreign
# PLATFORM (one tag holds one architecture); it is node:24-bookworm-slim there too.
ARG BASE_IMAGE=node:24-bookworm-slim
FROM ${BASE_IMAGE} AS build
# Lets `make rootfs` prune the images a rebuild supersedes (build stage
# ~800 MB, rootfs ~300 MB) by label.
LABEL org.tsfs.stage=build
# Native modules: ssh2's crypto binding, cpu-features and packages/fuse-native
# compile with node-gyp (python3, make, g++); fuse-native builds against the
# system libfuse 3 (libfuse3-dev, found by pkg-config) and links libfuse3.so.3.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ pkg-config libfuse3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first, the sources after: a change to src/ then reuses the
# npm ci layer (native builds: ~1 min here, many under arm64 emulation).
# packages/ is the vendored fuse-native (built from source), patches/ feeds
# patch-package (a build-time tool that `npm prune` then drops).
COPY package.json package-lock.json ./
COPY packages ./packages
COPY patches ./patches
RUN npm ci --no-audit --no-fund \
 && node -e "if (!require('ssh2/lib/protocol/crypto.js').bindingAvailable) { console.error('ssh2 native crypto binding did not build'); process.exit(1) }; require('fs-ext').flockSync"
COPY . .
# The plugin reference `make` builds (e.g. myorg/tsfs:2): the daemon logs it
# at start, so an operator sees which build runs after an upgrade.
ARG TSFS_BUILD=unstamped
RUN npm run build \
 && echo "$TSFS_BUILD" > dist/BUILD \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf src test bench tsconfig.json

FROM ${BASE_IMAGE}
LABEL org.tsfs.stage=rootfs
# libfuse3-3: fuse-native's binding loads libfuse3.so.3 at run time. fuse3
# (fusermount3): fuse-native's static Fuse.unmount shells out to
# `fusermount3 -uz`, the way to drop a stale mount left by a killed daemon.
# npm and the Node headers are build tools: the plugin only runs node.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfuse3-3 fuse3 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/bin/npm /usr/local/bin/npx /usr/local/include/node \
 && mkdir -p /mnt/state /mnt/volumes /root/.ssh /run/docker/plugins \
 && chmod 0700 /root/.ssh
WORKDIR /app
COPY --from=build /app/package.json /app/package.json
COPY --from=build /app/node_modules /app/node_modules
# node_modules/fuse-native links to the vendored package: its JS and the
# compiled binding (build/Release/fuse.node) are all it needs at run time.
COPY --from=build /app/packages/fuse-native/package.json /app/packages/fuse-native/index.js /app/packages/fuse-native/
COPY --from=build /app/packages/fuse-native/build/Release/fuse.node /app/packages/fuse-native/build/Release/fuse.node
COPY --from=build /app/dist /app/dist
ENV NODE_ENV=production
# The daemon handles SIGTERM (unmounts, saves state) and reaps its children.
# The environment and node flags: src/node-flags.ts (config.json's entrypoint
# has the same). env(1) execs node, so node stays PID 1.
CMD ["/usr/bin/env", "MALLOC_ARENA_MAX=1", "node", "--initial-old-space-size=64", "--expose-gc", "--max-semi-space-size=2", "/app/dist/main.js"]
