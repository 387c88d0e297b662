# tsfs managed plugin: build, install, test, demo.
#   make demo            one-command tour (throwaway sshd, plugin, 8-container array job)
#   make test            everything the CI runs (unit, integration and Docker end-to-end)
#   make all enable      build the plugin from this tree and enable it as $(PLUGIN_NAME):$(PLUGIN_TAG)
PLUGIN_NAME ?= tsfs
PLUGIN_TAG ?= latest
PLUGIN := $(PLUGIN_NAME):$(PLUGIN_TAG)
# The image whose filesystem becomes plugin/rootfs.
ROOTFS_IMAGE ?= $(PLUGIN_NAME)-rootfs:$(PLUGIN_TAG)
BASE_IMAGE ?= node:20-bookworm-slim
# The legacy builder uses a local $(BASE_IMAGE) as is; BuildKit may try to
# resolve it on a registry, which an offline machine cannot reach.
export DOCKER_BUILDKIT ?= 0

.PHONY: all clean rootfs create enable disable push test demo offline-base deps clean-images

all: clean rootfs create

clean:
	@echo "### rm ./plugin"
	@rm -rf ./plugin

rootfs: offline-base
	@echo "### docker build: $(ROOTFS_IMAGE)"
	@docker build -q -t $(ROOTFS_IMAGE) . >/dev/null
	@echo "### export $(ROOTFS_IMAGE) into ./plugin/rootfs"
	@rm -rf ./plugin/rootfs && mkdir -p ./plugin/rootfs
	@id=$$(docker create $(ROOTFS_IMAGE)) && \
	  { docker export "$$id" | tar -x -C ./plugin/rootfs; rc=$$?; docker rm -vf "$$id" >/dev/null; exit $$rc; }
	@echo "### copy config.json to ./plugin/"
	@cp config.json ./plugin/

create:
	@echo "### remove existing plugin $(PLUGIN) if it exists"
	@docker plugin rm -f $(PLUGIN) >/dev/null 2>&1 || true
	@echo "### create plugin $(PLUGIN) from ./plugin"
	@docker plugin create $(PLUGIN) ./plugin

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

# The rootfs image (kept between builds as a layer cache).
clean-images:
	@docker image rm $(ROOTFS_IMAGE) >/dev/null 2>&1 || true

offline-base:
	@BASE_IMAGE=$(BASE_IMAGE) scripts/ensure-deps.sh base

deps:
	@scripts/ensure-deps.sh all

test: deps
	npm run build
	npm test

demo: deps
	npm run build
	PLUGIN_NAME=$(PLUGIN_NAME) PLUGIN_TAG=$(PLUGIN_TAG) scripts/demo.sh
