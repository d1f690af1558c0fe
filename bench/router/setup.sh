#!/bin/sh
# Installs what bench/router_bench.py drives: the proxies it compares kumo's router with
# (Debian's nginx and HAProxy), the load generators (wrk; h2load from nghttp2-client),
# python3-grpcio (a gRPC client for the correctness check of each proxy), and util-linux for
# taskset. Run as root on Debian. The proxies are not started as services: the benchmark
# starts and stops its own instances.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nginx haproxy wrk nghttp2-client python3-grpcio util-linux
# Debian's postinst may have started the packaged services; they are not used.
for svc in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
