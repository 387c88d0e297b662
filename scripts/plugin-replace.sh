#!/usr/bin/env bash
# Safe rebuilds of a plugin tag that may already be installed (make all, make
# demo, make push). Usage:
#   scripts/plugin-replace.sh check  <plugin>          before the build: refuse to go on when
#                                                      replacing <plugin> would break running containers
#   scripts/plugin-replace.sh create <plugin> <dir>    docker plugin create from <dir>, replacing
#                                                      <plugin> and carrying over its settings
# Replacing a plugin means `docker plugin rm -f`: its FUSE mounts die, so
# every running container using one of its volumes gets "Transport endpoint
# is not connected" until restarted, and its volumes vanish from
# `docker volume ls` until a plugin with the same state.source is enabled.
# FORCE=1 skips the refusal (the settings are still carried over).
set -euo pipefail

log() { echo "### $*"; }

# Running containers that have a volume of plugin $1 mounted, as "container (volume)" lines.
users_of() {
  local vol c
  for vol in $(docker volume ls -q --filter "driver=$1"); do
    for c in $(docker ps -q --filter "volume=$vol"); do
      echo "$(docker inspect -f '{{.Name}}' "$c" | sed 's#^/##') ($vol)"
    done
  done
}

check() {
  local plugin=$1
  docker plugin inspect "$plugin" >/dev/null 2>&1 || return 0
  [ "$(docker plugin inspect -f '{{.Enabled}}' "$plugin")" = true ] || return 0
  local users
  users=$(users_of "$plugin")
  [ -n "$users" ] || return 0
  if [ "${FORCE:-}" = 1 ]; then
    log "FORCE=1: replacing $plugin although running containers use its volumes (they will get ENOTCONN):"
    echo "$users" | sed 's/^/###   /'
    return 0
  fi
  {
    echo "error: $plugin is enabled and running containers use its volumes:"
    echo "$users" | sed 's/^/  /'
    echo "Rebuilding it replaces the plugin (docker plugin rm -f): their mounts die"
    echo "(\"Transport endpoint is not connected\") until each container is restarted."
    echo "Stop those containers first, build under another tag (PLUGIN_TAG=...), or"
    echo "run again with FORCE=1 to replace it anyway (docs/deploy.md: Upgrading)."
  } >&2
  exit 1
}

create() {
  local plugin=$1 dir=$2 settings=() was_enabled=false
  if docker plugin inspect "$plugin" >/dev/null 2>&1; then
    was_enabled=$(docker plugin inspect -f '{{.Enabled}}' "$plugin")
    # What `docker plugin set` changed: the settable mount sources and the env.
    # An env variable left empty is the default already; not carried.
    mapfile -t settings < <(docker plugin inspect -f \
      '{{range .Settings.Mounts}}{{if .Name}}{{.Name}}.source={{.Source}}{{"\n"}}{{end}}{{end}}{{range .Settings.Env}}{{.}}{{"\n"}}{{end}}' \
      "$plugin" | grep -v -e '^$' -e '^[A-Za-z_][A-Za-z0-9_]*=$' || true)
    log "replace existing plugin $plugin (enabled: $was_enabled)"
    docker plugin rm -f "$plugin" >/dev/null
  fi
  log "create plugin $plugin from $dir"
  docker plugin create "$plugin" "$dir" >/dev/null
  if [ ${#settings[@]} -gt 0 ]; then
    log "carried over the replaced plugin's settings: ${settings[*]}"
    docker plugin set "$plugin" "${settings[@]}"
  fi
  if [ "$was_enabled" = true ]; then
    log "$plugin was enabled: the new one is created disabled; 'make enable' serves its volumes again"
  fi
}

case "${1:-}" in
  check) check "$2" ;;
  create) create "$2" "$3" ;;
  *) echo "usage: $0 check <plugin> | create <plugin> <dir>" >&2; exit 2 ;;
esac
