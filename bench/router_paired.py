#!/usr/bin/env python3
"""kumo's router and another proxy under load at the same moment: HTTP/1.1 requests per proxy
CPU-second, paired window by window.

Usage (as root, after `sh bench/router/setup.sh` and `cargo build --release -p kumo`):

    python3 bench/router_paired.py [--other nginx|haproxy|kumo-base] [--kumo-base OTHER_BUILD]
        [--windows 10] [--window 10] [--connections 64] [--access-log on|off] [--nice -20]

Why: on the shared VMs this project runs on, the machine's speed swings by ±15 % between two
consecutive 10-second runs, more than the differences router_bench.py is meant to show; its
targets run one after another, so each meets a different machine. Here both proxies run on the
proxy CPU at once, each with its own wrk (the same flags as router_bench.py's http1 scenario)
on the load CPU, for each window: both meet the same machine, and the figure compared is what
each served per second of CPU it used (the kernel shares the CPU between them; a proxy that
gets less of it serves fewer requests, but not fewer per CPU-second). Setup (kumo up, the
backend Apps, the proxies and their configs) is router_bench.py's own.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading

import router_bench as rb


def wrk(port, args, seconds, out):
    argv = rb.pin(args.load_cpu) + ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency",
                                     "-H", f"Host: {rb.H1_HOST}", f"http://127.0.0.1:{port}/"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=rb.new_session)
    out.append(r.stdout + r.stderr)


def requests_of(text):
    m = re.search(r"(\d+) requests in", text)
    return int(m.group(1)) if m else 0


def errors_of(text):
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kumo", default=os.path.join(rb.ROOT, "target", "release", "kumo"))
    ap.add_argument("--other", choices=["nginx", "haproxy", "kumo-base"], default="nginx")
    ap.add_argument("--kumo-base", metavar="BINARY", help="the other build, for --other kumo-base")
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--window", type=int, default=10, help="seconds of each window")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64, help="wrk connections, for each proxy")
    ap.add_argument("--access-log", choices=["on", "off"], default="on")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--nice", type=int, default=-20 if os.geteuid() == 0 else 0)
    args = ap.parse_args()
    if args.other == "kumo-base" and not (args.kumo_base and os.path.exists(args.kumo_base)):
        sys.exit("--other kumo-base needs --kumo-base BINARY")
    for tool in ["taskset", "wrk"] + ([args.other] if args.other in ("nginx", "haproxy") else []):
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: run `sh bench/router/setup.sh` (as root) first")
    if not os.path.exists(args.kumo):
        sys.exit(f"{args.kumo} not found: run `cargo build --release -p kumo` first")
    rb.NICE = args.nice
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))

    print("building the backend (bench/router/backend)...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=rb.BACKEND_DIR, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=rb.BACKEND_TARGET))
    procs = rb.Procs()
    tmp = tempfile.mkdtemp(prefix="kumo-router-paired-")
    os.chmod(tmp, 0o755)
    kumo = None
    rows = []
    try:
        kumo = rb.Kumo(args.kumo, tmp, procs, args.load_cpu)
        h1_eps, h2_eps, _ = rb.start_backends(kumo, args.replicas, tmp)
        log = args.access_log == "on"
        ours = rb.start_kumo_router(kumo, procs, tmp, args.proxy_cpu, log)
        if args.other == "nginx":
            theirs = rb.start_nginx(procs, tmp, args.proxy_cpu, h1_eps, h2_eps, log)
        elif args.other == "haproxy":
            theirs = rb.start_haproxy(procs, tmp, args.proxy_cpu, h1_eps, h2_eps, log)
        else:
            theirs = rb.start_kumo_router(kumo, procs, tmp, args.proxy_cpu, log, binary=args.kumo_base,
                                          name="kumo-base")
        targets = [ours, theirs]
        for t in targets:
            pids = [p.pid for p in t["procs"]]
            if t.get("with_children"):
                pids += [c for p in pids for c in rb.children(p)]
            t["pids"] = pids
        print(f"proxies ready on CPU {args.proxy_cpu}: kumo (port {ours['h1']}), {theirs['name']} "
              f"(port {theirs['h1']}); {args.windows} windows of {args.window} s", file=sys.stderr)

        def window(seconds):
            outs = {t["name"]: [] for t in targets}
            before = {t["name"]: rb.cpu_seconds(t["pids"]) for t in targets}
            threads = [threading.Thread(target=wrk, args=(t["h1"], args, seconds, outs[t["name"]])) for t in targets]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return {t["name"]: (outs[t["name"]][0], rb.cpu_seconds(t["pids"]) - before[t["name"]])
                    for t in targets}

        window(args.warmup)
        for w in range(args.windows):
            got = window(args.window)
            row = {}
            for name, (out, cpu) in got.items():
                n = requests_of(out)
                row[name] = {"rps": n / args.window, "per_cpu": n / cpu if cpu > 0 else float("nan"),
                             "cpu": cpu / args.window * 100, "p99": rb.wrk_latency_ms(out, "99%"),
                             "errors": errors_of(out)}
            rows.append(row)
            k, o = row["kumo"], row[theirs["name"]]
            print(f"window {w + 1}: kumo {k['rps']:.0f} req/s, {k['cpu']:.0f}% CPU, {k['per_cpu']:.0f} req/CPU-s; "
                  f"{theirs['name']} {o['rps']:.0f} req/s, {o['cpu']:.0f}% CPU, {o['per_cpu']:.0f} req/CPU-s; "
                  f"ratio {k['per_cpu'] / o['per_cpu']:.3f}", file=sys.stderr)
    finally:
        rb.tear_down(procs, kumo, tmp)

    other = theirs["name"]
    ratios = [r["kumo"]["per_cpu"] / r[other]["per_cpu"] for r in rows]
    print()
    print(f"- **Command:** `python3 bench/router_paired.py --other {other} --windows {args.windows} "
          f"--window {args.window} --connections {args.connections} --access-log {args.access_log} --nice {args.nice}`")
    print()
    print("| window | kumo req/s | kumo p99 | kumo CPU | kumo req per CPU-s | "
          f"{other} req/s | {other} p99 | {other} CPU | {other} req per CPU-s | kumo / {other} per CPU-s | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, (r, ratio) in enumerate(zip(rows, ratios), 1):
        k, o = r["kumo"], r[other]
        print(f"| {i} | {k['rps']:.0f} | {rb.fmt_ms(k['p99'])} | {k['cpu']:.0f}% | {k['per_cpu']:.0f} | {o['rps']:.0f} "
              f"| {rb.fmt_ms(o['p99'])} | {o['cpu']:.0f}% | {o['per_cpu']:.0f} | {ratio:.3f} | {k['errors'] + o['errors']} |")
    print()
    med = {n: statistics.median(r[n]["p99"] for r in rows) for n in ("kumo", other)}
    print(f"Median p99: kumo {rb.fmt_ms(med['kumo'])}, {other} {rb.fmt_ms(med[other])}; kumo's p99 lower in "
          f"{sum(r['kumo']['p99'] < r[other]['p99'] for r in rows)} of {len(rows)} windows.")
    print(f"Median kumo / {other} requests per CPU-second: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}; kumo ahead in {sum(r > 1 for r in ratios)} of "
          f"{len(ratios)} windows)")


if __name__ == "__main__":
    sys.exit(main())
