#!/usr/bin/env bash
# Builds the `bini:<tag>` container image from what this machine has — no base image or registry
# needed: the `bini` binary, the shared libraries it links (from `ldd`), CA certificates and a
# minimal /etc, imported as a single-layer image. Usage: docker/build-image.sh [TAG] (default:
# the workspace version).
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --workspace --all-targets
bin="$target/debug/bini"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/var/lib/bini"
cp "$bin" "$root/usr/local/bin/bini"
# The dynamic loader and every library the binary needs, at the same paths.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
[ -d /etc/ssl/certs ] && mkdir -p "$root/etc/ssl" && cp -rL /etc/ssl/certs "$root/etc/ssl/"
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"

tar -C "$root" -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/bini"]' \
  --change 'WORKDIR /var/lib/bini' \
  --change 'EXPOSE 26257 8080' \
  - "bini:$tag" >/dev/null
echo "bini:$tag"
