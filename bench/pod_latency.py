#!/usr/bin/env python3
"""Apply -> Succeeded latency of trivial process pods, and the resident memory of an idle `kumo up`.

Usage: python3 bench/pod_latency.py [--pods 200] [--kumo target/release/kumo]

Starts `kumo up` in a temp dir on a free port, creates pods one at a time through the API,
and times each from the POST until a watch reports phase Succeeded. The floor it is compared
with is the same command (/bin/true) spawned directly by this script. Prints median and p99,
and RSS (VmRSS from /proc) of the idle process before and after the run.
"""
import argparse, http.client, json, os, shutil, signal, ssl, statistics, subprocess, sys, tempfile, threading, time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--kumo", default="target/release/kumo")
    ap.add_argument("--idle-seconds", type=float, default=10)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="kumo-bench-")
    env = dict(os.environ, KUMO_CONFIG=f"{tmp}/config", HOME=tmp, RUST_LOG="warn")
    proc = subprocess.Popen(
        [args.kumo, "up", "--data-dir", f"{tmp}/data", "--listen", "127.0.0.1:0", "--node-name", "bench"],
        env=env, stdout=subprocess.PIPE, text=True)
    url = None
    for line in proc.stdout:
        if line.startswith("kumo: API server listening on "):
            url = line.split()[-1]
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    host, port = url.removeprefix("https://").split(":")
    tls = ssl.create_default_context(cafile=f"{tmp}/data/pki/ca.crt")  # the cluster CA
    token = __import__("json").load(open(f"{tmp}/data/admin.config"))["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    time.sleep(args.idle_seconds)  # a benchmark's settle time, not a test's synchronisation
    rss_idle = rss_mib(proc.pid)

    done = {}
    cond = threading.Condition()

    def watch():
        c = http.client.HTTPSConnection(host, int(port), context=tls)
        c.request("GET", "/api/v1/namespaces/default/pods?watch=true", headers=headers)
        r = c.getresponse()
        for line in r:
            ev = json.loads(line)
            obj = ev["object"]
            if obj.get("status", {}).get("phase") == "Succeeded":
                with cond:
                    done.setdefault(obj["metadata"]["name"], time.perf_counter())
                    cond.notify_all()

    threading.Thread(target=watch, daemon=True).start()
    api = http.client.HTTPSConnection(host, int(port), context=tls)
    latencies = []
    for i in range(args.pods):
        name = f"p{i}"
        body = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                           "spec": {"runtimeClassName": "process", "restartPolicy": "Never",
                                    "containers": [{"name": "c", "command": ["/bin/true"]}]}})
        t0 = time.perf_counter()
        api.request("POST", "/api/v1/namespaces/default/pods", body=body, headers=headers)
        resp = api.getresponse()
        resp.read()
        assert resp.status == 201, resp.status
        with cond:
            cond.wait_for(lambda: name in done, timeout=60)
        latencies.append((done[name] - t0) * 1000)

    floor = []
    for _ in range(args.pods):
        t0 = time.perf_counter()
        subprocess.run(["/bin/true"])
        floor.append((time.perf_counter() - t0) * 1000)

    time.sleep(args.idle_seconds)
    rss_after = rss_mib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    shutil.rmtree(tmp, ignore_errors=True)

    med, p99 = statistics.median(latencies), pct(latencies, 99)
    fmed, fp99 = statistics.median(floor), pct(floor, 99)
    print(f"pods: {args.pods}")
    print(f"apply->Succeeded  median {med:.1f} ms  p99 {p99:.1f} ms  max {max(latencies):.1f} ms")
    print(f"direct spawn floor median {fmed:.2f} ms  p99 {fp99:.2f} ms  (ratio of medians {med / fmed:.0f}x)")
    print(f"idle RSS of kumo up: {rss_idle:.1f} MiB before, {rss_after:.1f} MiB after the run")


if __name__ == "__main__":
    sys.exit(main())
