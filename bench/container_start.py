#!/usr/bin/env python3
"""Apply -> container exited for a trivial busybox pod under runc and runsc, against raw
`runc run` / `runsc run` of the same root filesystem (the floor).

Usage: python3 bench/container_start.py [--pods 50] [--kumo target/release/kumo]

Builds a busybox OCI image with umoci (from /bin/busybox of busybox-static), imports it into a
fresh `kumo up` (temp dir, free port, own bridge and pod CIDR), creates pods one at a time
through the API (`/bin/busybox true`, restartPolicy Never, imagePullPolicy Never) and times each
from the POST until a watch reports phase Succeeded. The floor runs the unpacked bundle of the
same image directly with the runtime's CLI, the same number of times. A second runc floor runs
the same rootfs with kumo's own config.json for the pod (captured from a sleeping pod's bundle:
the default seccomp profile, masked paths, cgroup limits; a fresh network namespace instead of
the pod network), to tell the cost of kumo's path from the cost of its secure defaults.
"""
import argparse, glob, http.client, json, os, shutil, signal, ssl, statistics, subprocess, tempfile, threading, time


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def sh(*args, **kw):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, **kw)


def build_image(tmp):
    oci = f"{tmp}/oci"
    sh("umoci", "init", "--layout", oci)
    sh("umoci", "new", "--image", f"{oci}:bb")
    sh("umoci", "unpack", "--image", f"{oci}:bb", f"{tmp}/bundle")
    os.makedirs(f"{tmp}/bundle/rootfs/bin", exist_ok=True)
    shutil.copy("/bin/busybox", f"{tmp}/bundle/rootfs/bin/busybox")
    sh("umoci", "repack", "--image", f"{oci}:bb", f"{tmp}/bundle")
    # The floor's bundle: the same rootfs, running `busybox true`, no terminal.
    cfg = json.load(open(f"{tmp}/bundle/config.json"))
    cfg["process"]["args"] = ["/bin/busybox", "true"]
    cfg["process"]["terminal"] = False
    json.dump(cfg, open(f"{tmp}/bundle/config.json", "w"))
    return oci


def floor(runtime, bundle, n, extra, config=None):
    """`runtime run` of the bundle n times; with `config`, that config.json instead of umoci's."""
    if config is not None:
        os.makedirs(f"{bundle}-k", exist_ok=True)
        config = dict(config, root={"path": os.path.abspath(f"{bundle}/rootfs"), "readonly": False})
        json.dump(config, open(f"{bundle}-k/config.json", "w"))
        bundle = f"{bundle}-k"
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        subprocess.run([runtime, *extra, "--root", f"{bundle}/../{os.path.basename(runtime)}-root", "run",
                        "--bundle", bundle, f"floor-{i}{'-k' if config else ''}"], check=True,
                       stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def capture_config(api, headers, tmp):
    """kumo's own OCI config for the benchmark's pod (bundles go when containers exit: a pod
    that sleeps is created, its config.json read, the pod deleted), made runnable by plain
    `runc run`: the rootfs of the umoci bundle, a fresh network namespace instead of the pod's,
    no cgroup path, no pod files (/etc/hosts...)."""
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "capture"},
            "spec": {"runtimeClassName": "runc", "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "local/bb:1", "imagePullPolicy": "Never",
                                     "command": ["/bin/busybox", "sleep", "60"]}]}}
    api.request("POST", "/api/v1/namespaces/default/pods", body=json.dumps(body), headers=headers)
    r = api.getresponse(); r.read()
    assert r.status == 201, r.status
    pattern = f"{tmp}/data/agent/runc/pods/*/c/bundle/config.json"
    deadline = time.time() + 60
    while not glob.glob(pattern) and time.time() < deadline:
        time.sleep(0.05)
    cfg = json.load(open(glob.glob(pattern)[0]))
    api.request("DELETE", "/api/v1/namespaces/default/pods/capture", headers=headers)
    api.getresponse().read()
    cfg["process"] = dict(cfg["process"], args=["/bin/busybox", "true"], terminal=False)
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if "path" not in n] + [{"type": "network"}]
    cfg["linux"].pop("cgroupsPath", None)
    cfg["mounts"] = [m for m in cfg["mounts"] if not m.get("source", "").startswith(tmp)]
    while glob.glob(pattern) and time.time() < deadline:
        time.sleep(0.05)
    return cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--kumo", default="target/release/kumo")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kumo-bench-")
    oci = build_image(tmp)
    env = dict(os.environ, KUMO_CONFIG=f"{tmp}/config", HOME=tmp, RUST_LOG="warn")
    sh(args.kumo, "image", "import", oci, "--name", "local/bb:1", "--data-dir", f"{tmp}/data", env=env)
    proc = subprocess.Popen([args.kumo, "up", "--data-dir", f"{tmp}/data", "--listen", "127.0.0.1:0",
                             "--node-name", "bench", "--pod-bridge", "kbench", "--pod-cidr", "10.126.0.0/16"],
                            env=env, stdout=subprocess.PIPE, text=True)
    url = next(l.split()[-1] for l in proc.stdout if l.startswith("kumo: API server listening on "))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    host, port = url.removeprefix("https://").split(":")
    tls = ssl.create_default_context(cafile=f"{tmp}/data/pki/ca.crt")  # the cluster CA
    headers = {"Authorization": "Bearer " + __import__("json").load(open(f"{tmp}/data/admin.config"))["token"],
               "Content-Type": "application/json"}
    done, cond = {}, threading.Condition()

    def watch():
        c = http.client.HTTPSConnection(host, int(port), context=tls)
        c.request("GET", "/api/v1/namespaces/default/pods?watch=true", headers=headers)
        for line in c.getresponse():
            obj = json.loads(line)["object"]
            if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                with cond:
                    done.setdefault(obj["metadata"]["name"], (time.perf_counter(), obj["status"]["phase"]))
                    cond.notify_all()

    threading.Thread(target=watch, daemon=True).start()
    api = http.client.HTTPSConnection(host, int(port), context=tls)
    kumo_config = capture_config(api, headers, tmp)
    results = {}
    for rc in ["runc", "runsc"]:
        lat = []
        for i in range(args.pods):
            name = f"{rc}-{i}"
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                    "spec": {"runtimeClassName": rc, "restartPolicy": "Never",
                             "containers": [{"name": "c", "image": "local/bb:1", "imagePullPolicy": "Never",
                                             "command": ["/bin/busybox", "true"]}]}}
            t0 = time.perf_counter()
            api.request("POST", "/api/v1/namespaces/default/pods", body=json.dumps(body), headers=headers)
            r = api.getresponse(); r.read()
            assert r.status == 201, r.status
            with cond:
                cond.wait_for(lambda: name in done, timeout=120)
            t1, phase = done[name]
            assert phase == "Succeeded", (name, phase)
            lat.append((t1 - t0) * 1000)
            api.request("DELETE", f"/api/v1/namespaces/default/pods/{name}", headers=headers)
            api.getresponse().read()
        results[rc] = lat
    # The agent tears a deleted pod down once it sees it gone: let it finish before stopping kumo
    # (a stopped agent leaves its pods' sandboxes for its next start, which never comes here).
    deadline = time.time() + 60
    while time.time() < deadline and [
            f for f in glob.glob(f"{tmp}/data/agent/net/pods/*.json") if "/warm-" not in f]:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    floors = {"runc": floor("runc", f"{tmp}/bundle", args.pods, []),
              "runsc": floor("runsc", f"{tmp}/bundle", args.pods, ["--platform=ptrace", "--network=host"])}
    same_config = floor("runc", f"{tmp}/bundle", args.pods, [], kumo_config)
    for rc in ["runc", "runsc"]:
        k, f = results[rc], floors[rc]
        print(f"{rc}: kumo apply->exited median {statistics.median(k):.0f} ms p99 {pct(k, 99):.0f} ms | "
              f"raw {rc} run median {statistics.median(f):.0f} ms p99 {pct(f, 99):.0f} ms | "
              f"ratio of medians {statistics.median(k) / statistics.median(f):.2f}x")
    f = same_config
    print(f"runc with kumo's own config.json (seccomp profile, mounts, cgroup limits; no pod network): "
          f"raw median {statistics.median(f):.0f} ms p99 {pct(f, 99):.0f} ms | kumo/raw "
          f"{statistics.median(results['runc']) / statistics.median(f):.2f}x")
    subprocess.run(["ip", "link", "del", "kbench"], stderr=subprocess.DEVNULL)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
