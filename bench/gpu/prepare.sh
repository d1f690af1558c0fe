#!/bin/sh
# Gathers what check.sh needs on a GPU machine that reaches no package registry: the kumo
# release binary, runc and its libseccomp, busybox and an OCI layout of it.  Run from the repo
# root after `cargo build --release -p kumo`:  sh bench/gpu/prepare.sh .devcheck
set -eu
D=${1:-.devcheck}
rm -rf "$D" && mkdir -p "$D"
cp target/release/kumo "$D/kumo" && strip "$D/kumo"
cp "$(command -v runc)" "$D/runc"
cp -L /lib/x86_64-linux-gnu/libseccomp.so.2 "$D/libseccomp.so.2"
python3 bench/gpu/busybox_layout.py /bin/busybox "$D/busybox-layout" 1
du -sh "$D"
