#!/usr/bin/env python3
"""Density benchmark in Kubernetes' kubemark style (issue #17): N hollow nodes against `kumo server`.

Usage: python3 bench/density.py [--nodes 10,100] [--stores redb,etcd] [--pods-per-node 30]
                                [--clients 4] [--kumo target/release/kumo] [--json out.json]
                                [--perf FILE] [--no-delete] [--keep]

For each store and node count: starts `kumo server` in a temp dir (redb, or a single-member etcd
this script starts on free loopback ports), makes one join token with N uses, starts
`kumo hollow-nodes` (N hollow nodes in one process: the agent's real heartbeat, pod worker and
status writes over a fake runtime), waits until every node is Ready, then creates
pods-per-node x N plain pods through the API with --clients concurrent connections. A watch on
the namespace sees each pod scheduled (spec.nodeName) and Running; a sampler meanwhile times
GET, LIST and PUT calls. Afterwards every pod is deleted (DELETE timed too).

Reported: pods/s (all pods, from the first create to the last Running), pod startup latency
(POST sent -> Running seen by the watch) percentiles and its two stages (-> scheduled ->
Running), API call latency percentiles by verb as this client sees them (the API server has no
/metrics), peak RSS of the server (and etcd), and CPU seconds each process used during the burst.
"""
import argparse, http.client, json, os, queue, random, shutil, signal, socket, ssl, subprocess, sys, tempfile, threading, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid):
    """utime + stime of a process (its threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary_ms(values):
    return {"n": len(values), "p50": pct(values, 50) * 1e3, "p90": pct(values, 90) * 1e3,
            "p99": pct(values, 99) * 1e3, "max": (max(values) * 1e3 if values else float("nan"))}


class Api:
    """One keep-alive HTTPS connection to the API server (one per thread)."""

    def __init__(self, host, port, ctx, token):
        self.host, self.port, self.ctx = host, port, ctx
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = None

    def call(self, method, path, body=None):
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=120)
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data, time.perf_counter() - t0
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise


class Cluster:
    """`kumo server` (and etcd) in a temp dir."""

    def __init__(self, kumo, store, tmp, log):
        self.procs = []
        self.etcd = None
        self.log = log
        env = dict(os.environ, HOME=tmp, KUMO_CONFIG=f"{tmp}/config", RUST_LOG="warn")
        # A cluster CIDR with a /24 for each of up to 16,384 hollow nodes (the default /16 has
        # 256): node IPAM gives every node a slice, as it would on a real cluster. (Shared
        # address space: no host here uses it; the server refuses one that overlaps.)
        cmd = [kumo, "server", "--data-dir", f"{tmp}/data", "--listen", "127.0.0.1:0",
               "--cluster-cidr", "100.64.0.0/10"]
        if store == "etcd":
            client, peer, metrics = free_port(), free_port(), free_port()
            self.etcd = subprocess.Popen(
                ["etcd", "--name=bench", f"--data-dir={tmp}/etcd",
                 f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
                 f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                 f"--initial-cluster=bench=http://127.0.0.1:{peer}", f"--listen-metrics-urls=http://127.0.0.1:{metrics}",
                 "--initial-cluster-state=new", "--log-level=warn", "--quota-backend-bytes=8589934592"],
                stdout=log, stderr=log)
            self.procs.append(self.etcd)
            deadline = time.time() + 30
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", metrics, timeout=2)
                    c.request("GET", "/health")
                    if b'"true"' in c.getresponse().read():
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("etcd did not become healthy in 30 s")
                time.sleep(0.2)
            env["KUMO_STORE"] = f"etcd://127.0.0.1:{client}"
        self.env = env
        self.server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        self.procs.append(self.server)
        self.url = None
        for line in self.server.stdout:
            if line.startswith("kumo: API server listening on "):
                self.url = line.split()[-1]
                break
        if not self.url:
            raise SystemExit("kumo server exited before listening (see the log)")
        threading.Thread(target=lambda: [None for _ in self.server.stdout], daemon=True).start()
        self.host, port = self.url.removeprefix("https://").split(":")
        self.port = int(port)
        self.ca = f"{tmp}/data/pki/ca.crt"
        self.ctx = ssl.create_default_context(cafile=self.ca)
        self.token = json.load(open(f"{tmp}/data/admin.config"))["token"]
        self.env["KUMO_CONFIG"] = f"{tmp}/data/admin.config"

    def api(self):
        return Api(self.host, self.port, self.ctx, self.token)

    def join_token(self, uses):
        out = subprocess.run([KUMO, "token", "create", "bench", "--join", "--uses", str(uses), "--ttl", "2h"],
                             env=self.env, capture_output=True, text=True, check=True).stdout
        words = out.split()
        return words[words.index("--join") + 1]

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def ready_nodes(api):
    status, data, _ = api.call("GET", "/api/v1/nodes")
    if status != 200:
        return 0
    n = 0
    for node in json.loads(data).get("items", []):
        for c in node.get("status", {}).get("conditions", []):
            if c.get("type") == "Ready" and c.get("status") == "True":
                n += 1
    return n


def run_one(args, store, nodes):
    tmp = tempfile.mkdtemp(prefix=f"kumo-density-{store}-{nodes}-")
    log = open(f"{tmp}/log.txt", "w")
    cluster = Cluster(KUMO, store, tmp, log)
    hollow = None
    result = {"store": store, "nodes": nodes, "pods": nodes * args.pods_per_node, "clients": args.clients}
    try:
        join = cluster.join_token(nodes)
        t_join = time.perf_counter()
        hollow = subprocess.Popen(
            [KUMO, "hollow-nodes", "--server", cluster.url, "--ca-file", cluster.ca, "--nodes", str(nodes),
             "--heartbeat-interval", args.heartbeat_interval],
            env=dict(cluster.env, KUMO_JOIN_TOKEN=join, RUST_LOG="warn"), stdout=subprocess.PIPE, stderr=log, text=True)
        cluster.procs.append(hollow)
        for line in hollow.stdout:
            if "hollow nodes joined" in line:
                break
        else:
            raise SystemExit("kumo hollow-nodes exited before its nodes joined (see the log)")
        threading.Thread(target=lambda: [None for _ in hollow.stdout], daemon=True).start()
        api = cluster.api()
        deadline = time.time() + 300
        while ready_nodes(api) < nodes:
            if time.time() > deadline:
                raise SystemExit(f"not all {nodes} nodes Ready in 300 s")
            time.sleep(0.5)
        result["join_ready_s"] = time.perf_counter() - t_join
        time.sleep(args.settle)  # let the first heartbeats spread out, as on a running cluster
        rss = {"server_idle_mib": rss_mib(cluster.server.pid), "hollow_idle_mib": rss_mib(hollow.pid)}
        if cluster.etcd:
            rss["etcd_idle_mib"] = rss_mib(cluster.etcd.pid)

        total = nodes * args.pods_per_node
        sent, scheduled, running = {}, {}, {}
        lock = threading.Condition()
        watch_ready = threading.Event()

        def watch():
            c = http.client.HTTPSConnection(cluster.host, cluster.port, context=cluster.ctx)
            c.request("GET", "/api/v1/namespaces/default/pods?watch=true", headers=api.headers)
            r = c.getresponse()
            watch_ready.set()
            for line in r:
                now = time.perf_counter()
                ev = json.loads(line)
                obj = ev.get("object", {})
                name = obj.get("metadata", {}).get("name")
                if obj.get("spec", {}).get("nodeName"):
                    scheduled.setdefault(name, now)
                if obj.get("status", {}).get("phase") == "Running":
                    with lock:
                        if name not in running:
                            running[name] = now
                            lock.notify_all()

        threading.Thread(target=watch, daemon=True).start()
        watch_ready.wait(30)
        lat = {"POST pod": [], "GET pod": [], "LIST pods (label)": [], "PUT pod": [], "DELETE pod": []}
        errors = []
        work = queue.Queue()
        for i in range(total):
            work.put(f"d{i}")
        burst_done = threading.Event()

        def creator():
            a = cluster.api()
            while True:
                try:
                    name = work.get_nowait()
                except queue.Empty:
                    return
                body = {"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "labels": {"bench": "density", "slot": str(int(name[1:]) % 100)}},
                        "spec": {"containers": [{"name": "c", "image": "registry.invalid/pause:3.9"}]}}
                sent[name] = time.perf_counter()
                status, data, dt = a.call("POST", "/api/v1/namespaces/default/pods", body)
                lat["POST pod"].append(dt)
                if status != 201:
                    errors.append((status, data[:200]))

        def sampler():
            a = cluster.api()
            while not burst_done.is_set():
                names = list(running)
                if names:
                    name = random.choice(names)
                    status, data, dt = a.call("GET", f"/api/v1/namespaces/default/pods/{name}")
                    lat["GET pod"].append(dt)
                    if status == 200:
                        pod = json.loads(data)
                        pod["metadata"].setdefault("annotations", {})["bench/touched"] = str(time.time())
                        status, _, dt = a.call("PUT", f"/api/v1/namespaces/default/pods/{name}", pod)
                        if status == 200:
                            lat["PUT pod"].append(dt)
                    slot = random.randrange(100)
                    _, _, dt = a.call("GET", f"/api/v1/namespaces/default/pods?labelSelector=slot%3D{slot}")
                    lat["LIST pods (label)"].append(dt)
                time.sleep(0.1)

        cpu0 = {k: cpu_seconds(p.pid) for k, p in (("server", cluster.server), ("hollow", hollow), ("etcd", cluster.etcd)) if p}
        t0 = time.perf_counter()
        driver_cpu0 = time.process_time()
        threads = [threading.Thread(target=creator) for _ in range(args.clients)]
        samp = threading.Thread(target=sampler)
        peak = dict(rss)
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-F", "99", "--call-graph", "dwarf,16384", "-p", str(cluster.server.pid),
                                     "-o", f"{args.perf}.{store}.{nodes}"], stdout=log, stderr=log)
        for t in threads:
            t.start()
        samp.start()
        for t in threads:
            t.join()
        t_created = time.perf_counter()
        deadline = time.time() + args.timeout
        with lock:
            while len(running) < total - len(errors) and time.time() < deadline:
                lock.wait(1)
                peak["server_peak_mib"] = max(peak.get("server_peak_mib", 0), rss_mib(cluster.server.pid))
                if cluster.etcd:
                    peak["etcd_peak_mib"] = max(peak.get("etcd_peak_mib", 0), rss_mib(cluster.etcd.pid))
        t_end = max(running.values()) if running else time.perf_counter()
        burst_done.set()
        samp.join()
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        cpu = {k: cpu_seconds(p.pid) - cpu0[k] for k, p in (("server", cluster.server), ("hollow", hollow), ("etcd", cluster.etcd)) if p}
        cpu["driver"] = time.process_time() - driver_cpu0
        startup = [running[n] - sent[n] for n in running if n in sent]
        to_sched = [scheduled[n] - sent[n] for n in scheduled if n in sent]
        sched_to_run = [running[n] - scheduled[n] for n in running if n in scheduled]
        result.update({
            "create_errors": len(errors), "error_sample": [str(e) for e in errors[:3]],
            "running": len(running),
            "create_s": t_created - t0, "create_rate": total / (t_created - t0),
            "burst_s": t_end - t0, "pods_per_s": len(running) / (t_end - t0),
            "startup_ms": summary_ms(startup), "to_scheduled_ms": summary_ms(to_sched),
            "scheduled_to_running_ms": summary_ms(sched_to_run),
            "rss_mib": {**peak, "server_end_mib": rss_mib(cluster.server.pid), "hollow_end_mib": rss_mib(hollow.pid)},
            "cpu_s": cpu,
        })

        # Teardown: every pod deleted, DELETE timed.
        work = queue.Queue()
        for n in sent:
            work.put(n)

        def deleter():
            a = cluster.api()
            while True:
                try:
                    name = work.get_nowait()
                except queue.Empty:
                    return
                _, _, dt = a.call("DELETE", f"/api/v1/namespaces/default/pods/{name}")
                lat["DELETE pod"].append(dt)

        threads = [threading.Thread(target=deleter) for _ in range(0 if args.no_delete else args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result["api_ms"] = {verb: summary_ms(v) for verb, v in lat.items()}
        result["log"] = f"{tmp}/log.txt"
    finally:
        cluster.stop()
        log.close()
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def show(r):
    s, st = r["startup_ms"], r["to_scheduled_ms"]
    print(f"\n== {r['store']}  {r['nodes']} nodes x {r['pods'] // r['nodes']} pods = {r['pods']} pods, {r['clients']} clients")
    print(f"  nodes joined and Ready in {r['join_ready_s']:.1f} s; {r['running']}/{r['pods']} Running, {r['create_errors']} create errors {r['error_sample']}")
    print(f"  creates: {r['create_rate']:.0f}/s; create -> Running: {r['pods_per_s']:.0f} pods/s ({r['burst_s']:.1f} s)")
    print(f"  startup ms p50 {s['p50']:.0f} p90 {s['p90']:.0f} p99 {s['p99']:.0f} max {s['max']:.0f}; "
          f"to scheduled p50 {st['p50']:.0f} p99 {st['p99']:.0f}; scheduled -> Running p50 {r['scheduled_to_running_ms']['p50']:.0f} p99 {r['scheduled_to_running_ms']['p99']:.0f}")
    for verb, v in r["api_ms"].items():
        print(f"  {verb:20s} n={v['n']:6d} p50 {v['p50']:7.1f} p90 {v['p90']:7.1f} p99 {v['p99']:7.1f} ms")
    print(f"  rss MiB {json.dumps({k: round(v) for k, v in r['rss_mib'].items()})}")
    print(f"  cpu s during the burst {json.dumps({k: round(v, 1) for k, v in r['cpu_s'].items()})}")
    sys.stdout.flush()


def main():
    global KUMO
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="10,100")
    ap.add_argument("--stores", default="redb,etcd")
    ap.add_argument("--pods-per-node", type=int, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--heartbeat-interval", default="10s")
    ap.add_argument("--settle", type=float, default=5)
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for every pod Running")
    ap.add_argument("--kumo", default="target/release/kumo")
    ap.add_argument("--json", help="append each result as a JSON line to this file")
    ap.add_argument("--perf", help="perf record the server during the burst into PERF.STORE.NODES")
    ap.add_argument("--no-delete", action="store_true", help="skip the timed DELETE of every pod at the end")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, data)")
    args = ap.parse_args()
    KUMO = os.path.abspath(args.kumo)
    for nodes in [int(n) for n in args.nodes.split(",")]:
        for store in args.stores.split(","):
            r = run_one(args, store, nodes)
            show(r)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")


KUMO = None
if __name__ == "__main__":
    main()
