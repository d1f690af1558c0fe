#!/usr/bin/env bash
# Installs what the tests need, then runs the whole suite: format, lints, unit and end-to-end tests.
# Run as root on Debian: the agent's tests create cgroups and processes as a real node would.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(procps runc runsc containernetworking-plugins iproute2 iptables busybox-static docker-registry skopeo umoci python3 python3-pip python3-grpcio curl protobuf-compiler etcd-server)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# A real S3-compatible server for the blob store's tests (kumo_blob::test_s3 starts moto_server).
command -v moto_server >/dev/null 2>&1 || python3 -m pip install -q --break-system-packages 'moto[server]==5.2.1'

# The OCI runtimes, CNI plugins, a tiny static busybox for test images, a real registry and the
# OCI image tools are listed above: the tests use the real things.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
