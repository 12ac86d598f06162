#!/usr/bin/env bash
# make image-check: what can be checked of the container image without a Docker engine.
# Builds a statically linked release binary, an image FROM scratch around it with buildah
# (one file, UID 1001, ports 8444 and 9091), checks the image's configuration and contents,
# and runs the binary inside the image's root as UID 1001 (buildah's chroot isolation);
# then tries `podman run --read-only`, which some sandboxes refuse (reported, not failed).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in buildah podman; do
  command -v "$tool" >/dev/null || { echo "image-check needs $tool (Debian: apt-get install $tool)"; exit 1; }
done
TARGET_DIR="${CARGO_TARGET_DIR:-target}/static"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p packetcapture-api \
  --target x86_64-unknown-linux-gnu --target-dir "$TARGET_DIR"
BIN="$TARGET_DIR/x86_64-unknown-linux-gnu/release/packetcapture-api"
file "$BIN" | grep -q "static" || { echo "not statically linked: $(file "$BIN")"; exit 1; }
STRIPPED=$(mktemp); trap 'rm -f "$STRIPPED"; buildah rm "$CTR" >/dev/null 2>&1 || true' EXIT
strip -o "$STRIPPED" "$BIN"
CTR=$(buildah from scratch)
buildah copy --chmod 0555 "$CTR" "$STRIPPED" /usr/bin/packetcapture-api >/dev/null
buildah config --user 1001:1001 --port 8444 --port 9091 \
  --entrypoint '["/usr/bin/packetcapture-api"]' "$CTR"
IMAGE=localhost/packetcapture-api:check
buildah commit --quiet "$CTR" "$IMAGE" >/dev/null
user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")
entry=$(buildah inspect --format '{{.OCIv1.Config.Entrypoint}}' "$IMAGE")
[ "$user" = "1001:1001" ] || { echo "image user is $user, not 1001:1001"; exit 1; }
[ "$entry" = '[/usr/bin/packetcapture-api]' ] || { echo "entrypoint is $entry"; exit 1; }
ROOT=$(buildah mount "$CTR")   # as root; rootless would need `buildah unshare`
files=$(find "$ROOT" -type f | wc -l)
buildah umount "$CTR" >/dev/null
[ "$files" = 1 ] || { echo "the image holds $files files, not one"; exit 1; }
echo "image $IMAGE: user $user, entrypoint $entry, $files file, $(du -h "$STRIPPED" | cut -f1) binary"
echo "run as 1001 in the image's root: $(buildah run --isolation chroot --user 1001:1001 "$CTR" -- /usr/bin/packetcapture-api --version)"
if out=$(podman run --rm --read-only --user 1001:1001 "$IMAGE" --version 2>&1); then
  echo "podman run --read-only: $out"
else
  echo "podman run --read-only refused by this machine: $out"
fi
