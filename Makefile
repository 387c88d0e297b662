# tsfs managed plugin: build, install, test, demo.
#   make demo            one-command tour (throwaway sshd, plugin, 8-container array job)
#   make test            everything the CI runs (unit, integration and Docker end-to-end)
#   make all enable      build the plugin from this tree and enable it as $(PLUGIN_NAME):$(PLUGIN_TAG)
#   make storm           N = 64, 128, 256 volumes mounted at once against a stock sshd (benchmark)
PLUGIN_NAME ?= tsfs
PLUGIN_TAG ?= latest
PLUGIN := $(PLUGIN_NAME):$(PLUGIN_TAG)
# The image whose filesystem becomes plugin/rootfs.
ROOTFS_IMAGE ?= $(PLUGIN_NAME)-rootfs:$(PLUGIN_TAG)
# The build stage, tagged so that it stays as the layer cache of the next
# build while the stages it supersedes are pruned.
BUILD_IMAGE ?= $(PLUGIN_NAME)-build:$(PLUGIN_TAG)
BASE_IMAGE ?= node:24-bookworm-slim
# Where the plugin bundle (config.json + rootfs/) is assembled.
PLUGIN_DIR ?= ./plugin
# The legacy builder uses a local $(BASE_IMAGE) as is; BuildKit may try to
# resolve it on a registry, which an offline machine cannot reach.
export DOCKER_BUILDKIT ?= 0

.PHONY: all clean rootfs create enable disable push test demo offline-base deps clean-images storm

all: clean rootfs create

clean:
	@echo "### rm $(PLUGIN_DIR)"
	@rm -rf $(PLUGIN_DIR)

rootfs: offline-base
	@echo "### docker build: $(BUILD_IMAGE), $(ROOTFS_IMAGE)"
	@docker build -q --target build -t $(BUILD_IMAGE) . >/dev/null
	@docker build -q -t $(ROOTFS_IMAGE) . >/dev/null
	@docker image prune -f --filter label=org.tsfs.stage=build >/dev/null
	@docker image prune -f --filter label=org.tsfs.stage=rootfs >/dev/null
	@echo "### export $(ROOTFS_IMAGE) into $(PLUGIN_DIR)/rootfs"
	@rm -rf $(PLUGIN_DIR)/rootfs && mkdir -p $(PLUGIN_DIR)/rootfs
	@id=$$(docker create $(ROOTFS_IMAGE)) && \
	  { docker export "$$id" | tar -x -C $(PLUGIN_DIR)/rootfs; rc=$$?; docker rm -vf "$$id" >/dev/null; exit $$rc; }
	@echo "### copy config.json to $(PLUGIN_DIR)/"
	@cp config.json $(PLUGIN_DIR)/

create:
	@echo "### remove existing plugin $(PLUGIN) if it exists"
	@docker plugin rm -f $(PLUGIN) >/dev/null 2>&1 || true
	@echo "### create plugin $(PLUGIN) from $(PLUGIN_DIR)"
	@docker plugin create $(PLUGIN) $(PLUGIN_DIR)

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

push: clean rootfs create
	@echo "### push plugin $(PLUGIN)"
	@docker plugin push $(PLUGIN)

# The images `rootfs` leaves as layer cache.
clean-images:
	@docker image rm $(ROOTFS_IMAGE) $(BUILD_IMAGE) >/dev/null 2>&1 || true

offline-base:
	@BASE_IMAGE=$(BASE_IMAGE) scripts/ensure-deps.sh base

deps:
	@scripts/ensure-deps.sh all

test: deps
	npm run build
	npm run typecheck
	npm test

# Many volumes mounted at once against a stock sshd (docs/scaling.md): a
# benchmark, not a test; one at a time on a shared machine.
storm:
	flock /tmp/tsfs-bench.lock npm run storm

demo:
	@scripts/ensure-deps.sh packages node dockerd base
	@PLUGIN_NAME=$(PLUGIN_NAME) PLUGIN_TAG=$(PLUGIN_TAG) scripts/demo.sh
