#!/bin/bash
# EC2 launch template user data for an AWS Batch compute environment (ECS-
# optimized AMI, or any AMI with Docker): install tsfs, create the volume and
# expose it at the host path the job definition names (/mnt/tsfs/models).
# AWS Batch job definitions only take host paths (no dockerVolumeConfiguration),
# so a small holder container keeps the volume mounted, and a symlink gives its
# mountpoint a stable name.
set -euo pipefail
PLUGIN_REPO="${PLUGIN_REPO:-registry.example.com/tsfs:latest}"

# The key that the central store accepts, fetched from your secret store.
install -d -m 0700 /etc/tsfs/ssh
aws secretsmanager get-secret-value --secret-id ml/store-ssh-key \
  --query SecretString --output text >/etc/tsfs/ssh/id_ed25519
chmod 0600 /etc/tsfs/ssh/id_ed25519
install -d -m 0700 /var/lib/tsfs

docker plugin install --grant-all-permissions --alias tsfs "$PLUGIN_REPO" \
  sshkey.source=/etc/tsfs/ssh state.source=/var/lib/tsfs

docker volume create -d tsfs \
  -o sshcmd=ml@store.internal:/srv/models \
  -o host_key=SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s \
  -o StrictHostKeyChecking=yes \
  -o reconnect_timeout=120 \
  models

# Any small image your instances can pull; it only holds the mount open.
docker run -d --name tsfs-holder --restart unless-stopped -v models:/models \
  public.ecr.aws/docker/library/busybox:stable sleep 2147483647

PLUGIN_ID=$(docker plugin inspect -f '{{.Id}}' tsfs)
DOCKER_ROOT=$(docker info -f '{{.DockerRootDir}}')
install -d /mnt/tsfs
ln -sfn "$DOCKER_ROOT/plugins/$PLUGIN_ID/propagated-mount/models" /mnt/tsfs/models
