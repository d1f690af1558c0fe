#!/usr/bin/env bash
# Installs what kumo needs, builds it, and starts `kumo up` (run as root on Debian).
# Flags after the script name go to `kumo up` (e.g. --fake-gpus 2 --data-dir /var/lib/kumo).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages kumo uses at run time: the OCI runtimes (runc, gVisor's runsc) and the CNI
# plugins with the tools they call (iproute2, iptables).
PACKAGES=(procps runc runsc containernetworking-plugins iproute2 iptables protobuf-compiler)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --bin kumo
install -m 0755 target/release/kumo /usr/local/bin/kumo
exec /usr/local/bin/kumo up "$@"
