#!/usr/bin/env bash
# `make demo`: the whole story in one command.
#   1. a throwaway central store: OpenSSH sshd on 127.0.0.1:<free port>, keys
#      made for this run, serving a local folder;
#   2. the tsfs plugin built from this tree and enabled (make all enable);
#   3. one volume on the store, and the ML array job: 8 containers started at
#      once, each saving /storage/<index>/model/model.h5 (written, reopened
#      read+write, seeked, rewritten, extended: what HDF5 does);
#   4. where each model landed, with size and sha256 read on the store itself.
# Cleanup (also on failure or Ctrl-C): containers, volume, sshd and keys go;
# the store folder stays for you to look at; the plugin stays installed as
# $PLUGIN_NAME:$PLUGIN_TAG, enabled, with sshkey.source back at /root/.ssh.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

PLUGIN_NAME="${PLUGIN_NAME:-tsfs}"
PLUGIN_TAG="${PLUGIN_TAG:-latest}"
PLUGIN="$PLUGIN_NAME:$PLUGIN_TAG"
JOBS="${JOBS:-8}"
IMAGE="${IMAGE:-node:24-bookworm-slim}"
VOLUME="tsfs-demo-models"
LABEL="org.tsfs.demo=1"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

WORK=$(mktemp -d /tmp/tsfs-demo.XXXXXX)
chmod 0755 "$WORK"
STORE="$WORK/store"
KEYS="$WORK/keys"
mkdir -p "$STORE" "$KEYS" /run/sshd
chmod 0700 "$KEYS"
SSHD_PID=""
PLUGIN_READY=""

cleanup() {
  local rc=$?
  set +e
  say "cleaning up"
  local ids
  ids=$(docker ps -aq --filter "label=$LABEL")
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  docker volume rm -f "$VOLUME" >/dev/null 2>&1
  if [ -n "$PLUGIN_READY" ]; then
    # Point the plugin back at the host's own keys: the demo keys go away now.
    docker plugin disable -f "$PLUGIN" >/dev/null 2>&1
    mkdir -p -m 0700 /root/.ssh
    docker plugin set "$PLUGIN" sshkey.source=/root/.ssh >/dev/null 2>&1
    docker plugin enable "$PLUGIN" >/dev/null 2>&1 && echo "plugin $PLUGIN stays installed (sshkey.source=/root/.ssh); remove it with: docker plugin rm -f $PLUGIN"
  fi
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null && wait "$SSHD_PID" 2>/dev/null
  rm -rf "$KEYS" "$WORK/sshd_config" "$WORK"/host_ed25519*
  echo "store kept at $STORE (rm -rf $WORK when done)"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "1/4 central store: sshd on 127.0.0.1 serving $STORE"
ssh-keygen -q -t ed25519 -N '' -C tsfs-demo-host -f "$WORK/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C tsfs-demo-user -f "$KEYS/id_ed25519"
cp "$KEYS/id_ed25519.pub" "$WORK/authorized_keys"
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat >"$WORK/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_ed25519
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
MaxStartups 100:30:200
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
/usr/sbin/sshd -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
SSHD_PID=$!
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
echo "sshd pid $SSHD_PID, port $PORT, host key $(ssh-keygen -l -f "$WORK/host_ed25519.pub" | cut -d' ' -f2)"

say "2/4 plugin: make all enable (PLUGIN_NAME=$PLUGIN_NAME PLUGIN_TAG=$PLUGIN_TAG)"
START=$(date +%s)
# Assembled under $WORK, not ./plugin: dockerd keeps its own copy once created.
make --no-print-directory all PLUGIN_NAME="$PLUGIN_NAME" PLUGIN_TAG="$PLUGIN_TAG" PLUGIN_DIR="$WORK/plugin" 2>&1 |
  grep -v -e DEPRECATED -e 'BuildKit is currently disabled' -e 'environment-variable' -e '^ *$'
rm -rf "$WORK/plugin"
PLUGIN_READY=1
docker plugin set "$PLUGIN" sshkey.source="$KEYS"
make --no-print-directory enable PLUGIN_NAME="$PLUGIN_NAME" PLUGIN_TAG="$PLUGIN_TAG"
echo "built and enabled in $(( $(date +%s) - START )) s"

say "3/4 volume and array job ($JOBS containers at once)"
echo "+ docker volume create -d $PLUGIN -o sshcmd=root@127.0.0.1:$STORE -o port=$PORT $VOLUME"
docker volume create -d "$PLUGIN" -o sshcmd="root@127.0.0.1:$STORE" -o port="$PORT" "$VOLUME" >/dev/null
START=$(date +%s)
ids=()
for i in $(seq 0 $((JOBS - 1))); do
  ids+=("$(docker create --label "$LABEL" -e AWS_BATCH_JOB_ARRAY_INDEX="$i" \
    -v "$VOLUME:/storage" -v "$REPO/test/e2e:/job:ro" "$IMAGE" node /job/array-job.cjs)")
done
# Created first, started together: all of them open the volume at once.
docker start "${ids[@]}" >/dev/null
failed=0
for i in "${!ids[@]}"; do
  code=$(docker wait "${ids[$i]}")
  if [ "$code" != 0 ]; then
    failed=1
    echo "job $i exited $code:"; docker logs "${ids[$i]}" 2>&1 | tail -n 20
  fi
done
echo "$JOBS jobs finished in $(( $(date +%s) - START )) s"
[ "$failed" = 0 ] || { echo "some jobs failed; plugin log: grep plugin= ${DOCKERD_LOG:-/var/log/dockerd.log} | tail"; exit 1; }

say "4/4 models on the store (read from $STORE, not through tsfs)"
printf '%-5s %-52s %10s  %s\n' index path bytes sha256
bad=0
for i in $(seq 0 $((JOBS - 1))); do
  f="$STORE/$i/model/model.h5"
  size=$(stat -c %s "$f")
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  want=$(node -e 'const j=require(process.argv[1]);console.log(j.sha256(j.expected(Number(process.argv[2]))))' "$REPO/test/e2e/array-job.cjs" "$i")
  mark=ok; [ "$sum" = "$want" ] || { mark="MISMATCH (expected $want)"; bad=1; }
  printf '%-5s %-52s %10s  %s %s\n' "$i" "$f" "$size" "$sum" "$mark"
done
[ "$bad" = 0 ] && say "demo passed: $JOBS models, byte-exact on the store"
exit "$bad"
