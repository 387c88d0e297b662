# tsfs managed plugin: build, install, test, demo.
#   make demo            one-command tour (throwaway sshd, plugin, 8-container array job)
#   make test            everything the CI runs (unit, integration and Docker end-to-end)
#   make all enable      build the plugin from this tree and enable it as $(PLUGIN_NAME):$(PLUGIN_TAG)
#   make storm           N = 64, 128, 256 volumes mounted at once against a stock sshd, then 32, 64, 128 containers through dockerd (benchmark)
#   make all PLATFORM=linux/arm64   the arm64 plugin, as $(PLUGIN_NAME):$(PLUGIN_TAG)-arm64
#   make push            both architectures to the registry in PLUGIN_NAME (README: Install)
#   make test-upgrade    install from a local registry and upgrade with volumes in use (slow)
#   make test-arm64      the arm64 plugin under qemu-user emulation, make push of both (slow)
PLUGIN_NAME ?= tsfs
PLUGIN_TAG ?= latest
HOST_ARCH := $(shell uname -m | sed -e s/x86_64/amd64/ -e s/aarch64/arm64/)
# linux/amd64 or linux/arm64; another architecture than the machine's builds
# under qemu-user emulation (scripts/ensure-deps.sh qemu sets it up). The
# base image's content decides the architecture: no `docker build --platform`,
# which dockerd 20.10's legacy builder answers with a registry pull when the
# local image's recorded platform differs (offline-base.sh).
PLATFORM ?= linux/$(HOST_ARCH)
ARCH := $(PLATFORM:linux/%=%)
# A plugin for another architecture gets its own tag, so it never replaces
# the machine's own: tsfs:latest-arm64 on an amd64 machine.
ARCH_SUFFIX := $(if $(filter $(HOST_ARCH),$(ARCH)),,-$(ARCH))
PLUGIN := $(PLUGIN_NAME):$(PLUGIN_TAG)$(ARCH_SUFFIX)
# The image whose filesystem becomes plugin/rootfs.
ROOTFS_IMAGE ?= $(PLUGIN_NAME)-rootfs:$(PLUGIN_TAG)$(ARCH_SUFFIX)
# The build stage, tagged so that it stays as the layer cache of the next
# build while the stages it supersedes are pruned.
BUILD_IMAGE ?= $(PLUGIN_NAME)-build:$(PLUGIN_TAG)$(ARCH_SUFFIX)
# One local tag holds one architecture: the foreign one's base has its own.
BASE_IMAGE ?= $(if $(ARCH_SUFFIX),tsfs-base:node24-bookworm-slim-$(ARCH),node:24-bookworm-slim)
# Extra flags for the build stage's `docker build`, e.g. BUILD_FLAGS=--no-cache
# for a cold build (the rootfs stage then reuses that fresh build stage).
BUILD_FLAGS ?=
# What `make push` builds and pushes, each as $(PLUGIN_NAME):$(PLUGIN_TAG)-<arch>,
# and the machine's own also as $(PLUGIN_NAME):$(PLUGIN_TAG).
PUSH_PLATFORMS ?= linux/amd64 linux/arm64
# Where the plugin bundle (config.json + rootfs/) is assembled.
PLUGIN_DIR ?= ./plugin
# The legacy builder uses a local $(BASE_IMAGE) as is; BuildKit may try to
# resolve it on a registry, which an offline machine cannot reach.
export DOCKER_BUILDKIT ?= 0

.PHONY: all clean rootfs create enable disable push push-one check-replace test demo offline-base deps clean-images storm test-upgrade test-arm64

# check-replace first: a refusal must come before minutes of building.
all: check-replace clean rootfs create

# Refuses (unless FORCE=1) when $(PLUGIN) is enabled and running containers
# use its volumes: replacing it would kill their mounts.
check-replace:
	@scripts/plugin-replace.sh check $(PLUGIN)

clean:
	@echo "### rm $(PLUGIN_DIR)"
	@rm -rf $(PLUGIN_DIR)

rootfs: offline-base
	@echo "### docker build: $(BUILD_IMAGE), $(ROOTFS_IMAGE)"
	@docker build -q $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TSFS_BUILD=$(PLUGIN) --target build -t $(BUILD_IMAGE) . >/dev/null
	@docker build -q --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TSFS_BUILD=$(PLUGIN) -t $(ROOTFS_IMAGE) . >/dev/null
	@docker image prune -f --filter label=org.tsfs.stage=build >/dev/null
	@docker image prune -f --filter label=org.tsfs.stage=rootfs >/dev/null
	@echo "### export $(ROOTFS_IMAGE) into $(PLUGIN_DIR)/rootfs"
	@rm -rf $(PLUGIN_DIR)/rootfs && mkdir -p $(PLUGIN_DIR)/rootfs
	@id=$$(docker create $(ROOTFS_IMAGE)) && \
	  { docker export "$$id" | tar -x -C $(PLUGIN_DIR)/rootfs; rc=$$?; docker rm -vf "$$id" >/dev/null; exit $$rc; }
	@echo "### copy config.json to $(PLUGIN_DIR)/"
	@cp config.json $(PLUGIN_DIR)/

# Replaces an existing $(PLUGIN), carrying over its settings (state.source,
# sshkey.source, env) and saying so.
create:
	@scripts/plugin-replace.sh create $(PLUGIN) $(PLUGIN_DIR)

# Docker refuses to enable a plugin whose bind-mount sources are missing:
# create them (state: /var/lib/tsfs, sshkey: /root/.ssh by default, or what
# `docker plugin set ... state.source=` chose).
enable:
	@for d in $$(docker plugin inspect -f '{{range .Settings.Mounts}}{{.Source}} {{end}}' $(PLUGIN)); do \
	  [ -d "$$d" ] || { echo "### mkdir -m 0700 $$d"; mkdir -p -m 0700 "$$d"; }; done
	@echo "### enable plugin $(PLUGIN)"
	@docker plugin enable $(PLUGIN)

disable:
	@docker plugin disable $(PLUGIN)

# Plugins have no multi-architecture manifests: one tag per architecture.
push:
	@for p in $(PUSH_PLATFORMS); do $(MAKE) --no-print-directory push-one PLATFORM=$$p || exit 1; done

# dockerd 20.10 refuses to create a second plugin whose rootfs it already
# holds ("content sha256:... already exists"): the machine's architecture is
# pushed as <tag>-<arch>, removed, then created and pushed again as <tag>.
push-one: check-replace clean rootfs
	@if [ -z "$(ARCH_SUFFIX)" ]; then \
	  scripts/plugin-replace.sh check $(PLUGIN)-$(ARCH) && scripts/plugin-replace.sh create $(PLUGIN)-$(ARCH) $(PLUGIN_DIR) && \
	  echo "### push plugin $(PLUGIN)-$(ARCH)" && docker plugin push $(PLUGIN)-$(ARCH) && docker plugin rm $(PLUGIN)-$(ARCH) >/dev/null; fi
	@scripts/plugin-replace.sh create $(PLUGIN) $(PLUGIN_DIR)
	@echo "### push plugin $(PLUGIN)"
	@docker plugin push $(PLUGIN)

# The images `rootfs` leaves as layer cache.
clean-images:
	@docker image rm $(ROOTFS_IMAGE) $(BUILD_IMAGE) >/dev/null 2>&1 || true

offline-base:
	@$(if $(ARCH_SUFFIX),scripts/ensure-deps.sh qemu &&) BASE_IMAGE=$(BASE_IMAGE) PLATFORM=$(PLATFORM) scripts/ensure-deps.sh base

deps:
	@scripts/ensure-deps.sh all

test: deps
	npm run build
	npm run typecheck
	npm test

# Many volumes mounted at once against a stock sshd (docs/scaling.md): a
# benchmark, not a test; one at a time on a shared machine. deps: on a
# fresh clone it installs node_modules and starts dockerd (for the
# containers part) as make test does.
storm: deps
	flock /tmp/tsfs-bench.lock npm run storm

# The slow end-to-end suites, not part of `make test` (README: Development).
# Install from a local registry, upgrade with volumes in use, safe rebuilds.
test-upgrade: deps
	@scripts/ensure-deps.sh registry
	TSFS_E2E_UPGRADE=1 npx vitest run test/e2e/upgrade.test.ts
# The arm64 plugin built and enabled here under qemu-user emulation, and
# `make push` of both architectures to a local registry, each tag installed.
test-arm64: deps
	@scripts/ensure-deps.sh registry
	TSFS_E2E_ARM64=1 npx vitest run test/e2e/arm64.test.ts

demo:
	@scripts/ensure-deps.sh packages node dockerd base
	@PLUGIN_NAME=$(PLUGIN_NAME) PLUGIN_TAG=$(PLUGIN_TAG) scripts/demo.sh
