#!/usr/bin/env python3
"""kumo's router against nginx and HAProxy: requests/s and p99 latency (issue #4, "Benchmark").

Usage (as root, after `sh bench/router/setup.sh` and `cargo build --release -p kumo`):

    python3 bench/router_bench.py [--duration 10] [--warmup 3] [--rounds 1] [--replicas 3]
        [--scenarios http1,h2,h2-h1,grpc] [--targets direct,kumo,nginx,haproxy]
        [--access-log on|off] [--nice -20] [--proxy-cpu 1] [--load-cpu 0] [--kumo target/release/kumo]
        [--kumo-base OTHER_BUILD]

`--kumo-base` measures a second kumo build's router too (target `kumo-base`, right after `kumo`
in every round): a change against the build before it, in the same rounds.

What it does, in one run:
- builds the backend (bench/router/backend: one hyper thread per replica answering HTTP/1.1,
  h2c and gRPC unary) into target/bench-router;
- starts `kumo up` in a temp dir, pinned to the load core, and creates two process-runtime Apps
  whose `web` process is that backend on `$PORT`, N replicas each: `bench-h1` (protocol http1,
  host h1.bench) and `bench-h2` (protocol h2c, host h2.bench). Their Ready replicas' ports (pod
  IP + annotation `kumo.dev/assigned-port`, as kumo's router reads them) are the backends of
  every proxy;
- starts each proxy pinned to the proxy core (`taskset -c PROXY_CPU`) with one worker: `kumo
  router --server URL --listen ADDR` with KUMO_TOKEN (its tokio runtime starts one worker per CPU it
  may use, so one), nginx `worker_processes 1`, HAProxy `nbthread 1`;
- runs the same client, pinned to the load core with the backends, against each target for each
  scenario: a warm-up, then a fixed-duration measured run:
    http1  wrk -t1 -c64, HTTP/1.1 keep-alive; proxies speak HTTP/1.1 keep-alive upstream;
    h2     h2load -t1 -c4 -m32, h2c GET; upstream h2c (nginx: grpc_pass, its only HTTP/2
           upstream, one request per upstream connection; HAProxy: `proto h2`; kumo: h2c pool);
    h2-h1  the same client, routed to the HTTP/1.1 backends (all three proxies speak HTTP/1.1
           upstream);
    grpc   h2load -t1 -c4 -m32, gRPC unary POST /bench.Echo/Call with a pre-encoded 12-byte
           body (one uncompressed message), content-type application/grpc, te: trailers;
           upstream h2c as for h2; the backend echoes the message with grpc-status 0;
  "direct" is the client against one backend replica with no proxy: the ceiling (the client
  and that backend share the load core, as the client and the backends do behind a proxy);
  each proxy routes by Host among the same replicas, adds X-Forwarded-For/-Proto and
  X-Request-Id as kumo's router does, and writes an access log unless `--access-log off`.
  nginx 1.22 cannot serve HTTP/1.1 and h2c on one plain port, so it gets two; HAProxy has two
  binds; kumo's router detects the protocol on its one port;
- checks each proxy first (a request per protocol, and a real gRPC call with python3-grpcio
  when it is installed), and counts non-2xx answers and errors during the runs;
- prints the machine, the versions and a Markdown table for bench/RESULTS.md.

p99: wrk's `--latency` percentile; for h2load, the 99th percentile of the per-request times it
writes with `--log-file` (h2load prints no percentiles). "proxy CPU" is the CPU time the proxy's
processes used during the measured run over its duration (100% = the whole proxy core; well
under 100% means the proxy was not what limited the run, or that something else on the machine
took its core). "req per proxy CPU-s" (requests/s over proxy CPU) is the proxy's cost per
request, the figure that stays comparable when the machine is not quiet. Everything the
benchmark starts runs at `--nice` (-20 as root, the same for all targets; each process in its own
session whose scheduling autogroup gets the same value, since with autogroups a plain nice only
counts inside the group) so that other work on the machine takes less of the two CPUs; the load
average before the run is printed, and each run's line on stderr says how busy each CPU was.
With `--rounds N` the table shows the median of the N rounds.

Everything it starts (kumo up and its backends, the router, nginx, HAProxy, the clients) is
stopped on exit, failure included, and the temp dir removed.
"""
import argparse, glob, http.client, json, os, platform, re, shutil, signal, socket, ssl, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "bench", "router")
BACKEND_DIR = os.path.join(HERE, "backend")
BACKEND_TARGET = os.path.join(ROOT, "target", "bench-router")
BACKEND_BIN = os.path.join(BACKEND_TARGET, "release", "kumo-bench-backend")

H1_HOST, H2_HOST = "h1.bench", "h2.bench"
GRPC_PATH = "/bench.Echo/Call"
# One gRPC message: not compressed, length 5, protobuf field 1 (string) = "bench".
GRPC_MESSAGE = b"\x0a\x05bench"
GRPC_FRAME = b"\x00" + len(GRPC_MESSAGE).to_bytes(4, "big") + GRPC_MESSAGE

SCENARIOS = {
    # name: (client, host, what the client speaks, what each proxy speaks upstream)
    "http1": ("wrk", H1_HOST, "HTTP/1.1 keep-alive",
              {"kumo": "HTTP/1.1", "nginx": "HTTP/1.1", "haproxy": "HTTP/1.1", "direct": "-"}),
    "h2": ("h2load", H2_HOST, "h2c",
           {"kumo": "h2c", "nginx": "h2c (grpc_pass)", "haproxy": "h2c", "direct": "-"}),
    "h2-h1": ("h2load", H1_HOST, "h2c",
              {"kumo": "HTTP/1.1", "nginx": "HTTP/1.1", "haproxy": "HTTP/1.1", "direct": "- (h2c)"}),
    "grpc": ("h2load-grpc", H2_HOST, "gRPC unary (h2c)",
             {"kumo": "h2c", "nginx": "h2c (grpc_pass)", "haproxy": "h2c", "direct": "-"}),
}


NICE = 0  # --nice: the scheduling priority of everything the benchmark starts


def pin(cpu):
    """The prefix that runs a command on one CPU (and at the benchmark's priority)."""
    prefix = ["nice", "-n", str(NICE)] if NICE else []
    return prefix + ["taskset", "-c", str(cpu)]


def set_group_nice(pid):
    """With autogroup scheduling (Linux's default) a nice value only counts inside its session's
    group: give the group of `pid` the benchmark's priority too."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(NICE))
    except OSError:
        pass


def new_session():
    """In the child before exec: its own session (away from the terminal's signals, stopped by
    this script) and scheduling group at the benchmark's priority."""
    os.setsid()
    if NICE:
        set_group_nice("self")


class Procs:
    """Processes this script started, stopped in reverse order on exit."""

    def __init__(self):
        self.items = []

    def start(self, name, argv, **kw):
        p = subprocess.Popen(argv, preexec_fn=new_session, **kw)
        self.items.append((name, p))
        return p

    def stop(self, p, timeout=30):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self):
        for name, p in reversed(self.items):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                print(f"warning: stopping {name} (pid {p.pid}): {e}", file=sys.stderr)
        self.items.clear()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def http_get(port, host, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def run_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


def cpu_seconds(pids):
    """utime + stime of these processes (all their threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def cpu_times():
    """(busy, total) jiffies of each CPU, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0].startswith("cpu") and parts[0] != "cpu":
                v = list(map(int, parts[1:]))
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out[int(parts[0][3:])] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def busy_percent(before, after, cpu):
    b0, t0 = before.get(cpu, (0, 0))
    b1, t1 = after.get(cpu, (0, 0))
    return (b1 - b0) / (t1 - t0) * 100 if t1 > t0 else float("nan")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def threads(pid):
    out = []
    try:
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out.append(f.read().strip())
    except OSError:
        pass
    return out


def backend_processes(tmp):
    """Pids of the backend replicas of this run: the agent started them, through shims whose
    command lines name this run's temp dir."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{d}/exe") != BACKEND_BIN:
                continue
        except OSError:
            continue
        ppid = parent(int(d))
        if ppid and tmp in cmdline(ppid):
            out.append(int(d))
    return out


def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def affinity(pid):
    try:
        return sorted(os.sched_getaffinity(pid))
    except OSError:
        return []


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def wrk_latency_ms(text, label):
    m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


# ---------------------------------------------------------------- kumo: control plane and Apps


class Kumo:
    def __init__(self, binary, tmp, procs, load_cpu):
        self.binary, self.tmp, self.procs = binary, tmp, procs
        self.env = dict(os.environ, KUMO_CONFIG=f"{tmp}/config", HOME=tmp, RUST_LOG="warn")
        self.up = procs.start(
            "kumo up",
            pin(load_cpu) + [binary, "up", "--data-dir", f"{tmp}/data",
             "--listen", "127.0.0.1:0", "--node-name", "bench"],
            env=self.env, stdout=subprocess.PIPE, stderr=open(f"{tmp}/kumo-up.log", "w"), text=True)
        self.url = None
        deadline = time.monotonic() + 60
        for line in self.up.stdout:
            if line.startswith("kumo: API server listening on "):
                self.url = line.split()[-1]
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            raise RuntimeError(f"kumo up did not start; see {tmp}/kumo-up.log")
        threading.Thread(target=lambda: [None for _ in self.up.stdout], daemon=True).start()
        self.host, port = self.url.removeprefix("https://").split(":")
        self.tls = ssl.create_default_context(cafile=f"{tmp}/data/pki/ca.crt")  # the cluster CA
        self.port = int(port)
        self.token = __import__("json").load(open(f"{tmp}/data/admin.config"))["token"]

    def api(self, method, path, body=None):
        c = http.client.HTTPSConnection(self.host, self.port, timeout=30, context=self.tls)
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {data[:500]!r}")
            return json.loads(data) if data else None
        finally:
            c.close()

    def create_app(self, name, protocol, domain, replicas, command):
        self.api("POST", "/apis/kumo.dev/v1/namespaces/default/apps", {
            "apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": name},
            "spec": {"runtimeClassName": "process",
                     "processes": {"web": {"command": command, "replicas": replicas, "protocol": protocol}},
                     "domains": [domain],
                     "deploy": {"strategy": "BlueGreen", "drainSeconds": 1, "timeoutSeconds": 60}}})

    def remove_apps(self, apps, timeout=20):
        """Deletes the apps and their pods (stopping `kumo up` leaves pods running, to be
        re-adopted), waits for the backends to exit, then kills any left and removes their
        cgroups."""
        pods = []
        for app in apps:
            try:
                self.api("DELETE", f"/apis/kumo.dev/v1/namespaces/default/apps/{app}")
            except Exception as e:
                print(f"warning: deleting app {app}: {e}", file=sys.stderr)
            try:
                listed = self.api("GET", "/api/v1/namespaces/default/pods?labelSelector=kumo.dev/app%3D" + app)
                pods += [(p["metadata"]["name"], p["metadata"].get("uid")) for p in listed.get("items", [])]
            except Exception as e:
                print(f"warning: listing pods of {app}: {e}", file=sys.stderr)
        for name, _ in pods:
            try:
                self.api("DELETE", f"/api/v1/namespaces/default/pods/{name}")
            except Exception:
                pass  # already gone with its app
        deadline = time.monotonic() + timeout
        while backend_processes(self.tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in backend_processes(self.tmp):
            shim = parent(pid)
            print(f"warning: killing backend {pid} left running", file=sys.stderr)
            kill(pid)
            if shim and self.tmp in cmdline(shim):
                kill(shim)
        time.sleep(0.2)
        for _, uid in pods:
            for top in glob.glob(f"/sys/fs/cgroup/*/kumo/{uid}") if uid else []:
                for sub in glob.glob(f"{top}/*/"):
                    try:
                        os.rmdir(sub)
                    except OSError:
                        pass
                try:
                    os.rmdir(top)
                except OSError:
                    pass

    def ready_endpoints(self, app):
        """(ip, port) of the app's Ready web replicas, the way kumo's router reads them."""
        pods = self.api("GET", "/api/v1/namespaces/default/pods?labelSelector=kumo.dev/app%3D" + app)
        out = []
        for p in pods.get("items", []):
            meta, status = p["metadata"], p.get("status") or {}
            if meta.get("deletionTimestamp") or meta.get("labels", {}).get("kumo.dev/process") != "web":
                continue
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions", []))
            port = meta.get("annotations", {}).get("kumo.dev/assigned-port")
            if ready and port and status.get("podIP"):
                out.append((status["podIP"], int(port)))
        return sorted(out)

    def wait_endpoints(self, app, n, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            eps = self.ready_endpoints(app)
            if len(eps) >= n:
                return eps
            time.sleep(0.3)
        raise RuntimeError(f"app {app}: {len(self.ready_endpoints(app))}/{n} replicas ready after {timeout}s")


# ---------------------------------------------------------------- proxies


def start_backends(kumo, replicas, tmp):
    """The two bench Apps, their Ready replicas' (host, port) lists, and the replicas' pids, at the
    benchmark's priority."""
    kumo.create_app("bench-h1", "http1", H1_HOST, replicas, [BACKEND_BIN])
    kumo.create_app("bench-h2", "h2c", H2_HOST, replicas, [BACKEND_BIN])
    h1_eps = kumo.wait_endpoints("bench-h1", replicas)
    h2_eps = kumo.wait_endpoints("bench-h2", replicas)
    pids = backend_processes(tmp)
    for pid in pids:
        if NICE:
            os.setpriority(os.PRIO_PROCESS, pid, NICE)
            set_group_nice(pid)
    return h1_eps, h2_eps, pids


def tear_down(procs, kumo, tmp):
    """The proxies and clients first, then the apps' backends, then kumo up, then the temp dir."""
    for name, p in reversed(procs.items):
        if name != "kumo up":
            procs.stop(p)
    if kumo is not None:
        kumo.remove_apps(["bench-h1", "bench-h2"])
    procs.stop_all()
    shutil.rmtree(tmp, ignore_errors=True)


def render(template, fields):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for k, v in fields.items():
        text = text.replace(f"@@{k}@@", str(v))
    left = re.findall(r"@@\w+@@", text)
    if left:
        raise RuntimeError(f"{template}: unfilled {left}")
    return text


def start_kumo_router(kumo, procs, tmp, cpu, access_log, binary=None, name="kumo"):
    port = free_port()
    env = dict(kumo.env, KUMO_TOKEN=kumo.token,
               RUST_LOG="info" if access_log else "info,kumo_router::access=off")
    p = procs.start(f"{name} router",
                    pin(cpu) + [binary or kumo.binary, "router", "--server", kumo.url,
                     "--listen", f"127.0.0.1:{port}"],
                    env=env, stdout=open(f"{tmp}/{name}-router.out", "w"),
                    stderr=open(f"{tmp}/{name}-router.log", "w"))
    wait_port(port, p)
    # The route table follows watches: wait until both hosts are routed to ready replicas.
    deadline = time.monotonic() + 30
    while True:
        try:
            if http_get(port, H1_HOST)[0] == 200 and h2_get_ok(port, H2_HOST):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} router does not route the bench apps; see {tmp}/{name}-router.log")
        time.sleep(0.2)
    return {"name": name, "procs": [p], "h1": port, "h2": port}


def start_nginx(procs, tmp, cpu, h1_eps, h2_eps, access_log):
    d = f"{tmp}/nginx"
    os.makedirs(d)
    ph1, ph2 = free_port(), free_port()
    conf = render("nginx.conf.tmpl", {
        "DIR": d, "PORT_H1": ph1, "PORT_H2": ph2,
        "ACCESS_LOG": f"{d}/access.log" if access_log else "off",
        "H1_SERVERS": "\n".join(f"        server {ip}:{port};" for ip, port in h1_eps),
        "H2_SERVERS": "\n".join(f"        server {ip}:{port};" for ip, port in h2_eps),
    })
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(conf)
    p = procs.start("nginx", pin(cpu) + ["nginx", "-c", f"{d}/nginx.conf", "-p", d,
                              "-e", f"{d}/nginx-error.log", "-g", "daemon off;"],
                    stdout=subprocess.DEVNULL, stderr=open(f"{d}/stderr.log", "w"))
    wait_port(ph1, p)
    wait_port(ph2, p)
    return {"name": "nginx", "procs": [p], "h1": ph1, "h2": ph2, "with_children": True}


def start_haproxy(procs, tmp, cpu, h1_eps, h2_eps, access_log):
    d = f"{tmp}/haproxy"
    os.makedirs(d)
    ph1, ph2 = free_port(), free_port()
    cfg = render("haproxy.cfg.tmpl", {
        "PORT_H1": ph1, "PORT_H2": ph2,
        "GLOBAL_LOG": "    log stdout format raw local0" if access_log else "",
        "DEFAULTS_LOG": "    log global\n    option httplog" if access_log else "",
        "H1_SERVERS": "\n".join(f"    server s{i} {ip}:{port}" for i, (ip, port) in enumerate(h1_eps)),
        "H2_SERVERS": "\n".join(f"    server s{i} {ip}:{port} proto h2" for i, (ip, port) in enumerate(h2_eps)),
    })
    with open(f"{d}/haproxy.cfg", "w") as f:
        f.write(cfg)
    p = procs.start("haproxy", pin(cpu) + ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"],
                    stdout=open(f"{d}/access.log", "w"), stderr=open(f"{d}/stderr.log", "w"))
    wait_port(ph1, p)
    wait_port(ph2, p)
    return {"name": "haproxy", "procs": [p], "h1": ph1, "h2": ph2}


# ---------------------------------------------------------------- checks


def h2_get_ok(port, host):
    r = subprocess.run(["h2load", "-n", "1", "-c", "1", "-H", f":authority: {host}",
                        f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=20)
    return "1 succeeded" in r.stdout and "1 2xx" in r.stdout


def grpc_check(port, host):
    """A real gRPC unary call through the target, with Debian's python3-grpcio if present."""
    code = (
        "import grpc,sys\n"
        f"ch=grpc.insecure_channel('127.0.0.1:{port}',options=[('grpc.default_authority','{host}')])\n"
        f"f=ch.unary_unary('{GRPC_PATH}',request_serializer=lambda b:b,response_deserializer=lambda b:b)\n"
        f"r=f({GRPC_MESSAGE!r},timeout=5)\n"
        f"sys.exit(0 if r=={GRPC_MESSAGE!r} else 3)\n")
    for py in ("/usr/bin/python3", sys.executable):
        if subprocess.run([py, "-c", "import grpc"], capture_output=True).returncode == 0:
            r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=30)
            return "ok" if r.returncode == 0 else f"FAILED: {r.stderr.strip()[-300:]}"
    return "skipped (no python3-grpcio)"


def check_target(t, scenarios):
    problems = []
    if "http1" in scenarios:
        status, body = http_get(t["h1"], H1_HOST)
        if status != 200:
            problems.append(f"HTTP/1.1 GET answered {status} {body[:100]!r}")
    for host in ([H2_HOST] if "h2" in scenarios else []) + ([H1_HOST] if "h2-h1" in scenarios else []):
        if not h2_get_ok(t["h2"], host):
            problems.append(f"h2c GET for {host} failed")
    if "grpc" in scenarios:
        g = grpc_check(t["h2"], H2_HOST)
        if g.startswith("FAILED"):
            problems.append(f"gRPC call {g}")
        t["grpc_check"] = g
    if problems:
        raise RuntimeError(f"{t['name']}: " + "; ".join(problems))


# ---------------------------------------------------------------- load


def load_argv(scenario, port, args, duration, log_file=None):
    client, host, _, _ = SCENARIOS[scenario]
    url = f"http://127.0.0.1:{port}/"
    if client == "wrk":
        return pin(args.load_cpu) + ["wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--latency",
                      "-H", f"Host: {host}", url]
    argv = pin(args.load_cpu) + ["h2load", "-t1", f"-c{args.h2_clients}", f"-m{args.h2_streams}",
                  "-D", str(duration), "-H", f":authority: {host}"]
    if log_file:
        argv += ["--log-file", log_file]
    if client == "h2load-grpc":
        argv += ["-d", args.grpc_body, "-H", "content-type: application/grpc", "-H", "te: trailers",
                 f"http://127.0.0.1:{port}{GRPC_PATH}"]
    else:
        argv += [url]
    return argv


def measure(scenario, target, args, tmp):
    port = target["h1"] if SCENARIOS[scenario][0] == "wrk" else target["h2"]
    # Warm-up: connections, pools and caches; its figures are dropped.
    subprocess.run(load_argv(scenario, port, args, args.warmup), capture_output=True, text=True,
                   timeout=args.warmup + 60, preexec_fn=new_session)
    pids = list(target.get("pids", []))
    log_file = f"{tmp}/h2load-{scenario}-{target['name']}.log"
    cpu0, t0, stat0 = cpu_seconds(pids), time.monotonic(), cpu_times()
    r = subprocess.run(load_argv(scenario, port, args, args.duration, log_file),
                       capture_output=True, text=True, timeout=args.duration + 60, preexec_fn=new_session)
    wall, stat1 = time.monotonic() - t0, cpu_times()
    cpu = (cpu_seconds(pids) - cpu0) / wall * 100 if pids else float("nan")
    out = r.stdout + r.stderr
    res = {"cpu": cpu, "raw": out, "load_core": busy_percent(stat0, stat1, args.load_cpu),
           "proxy_core": busy_percent(stat0, stat1, args.proxy_cpu)}
    if SCENARIOS[scenario][0] == "wrk":
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        res["rps"] = float(m.group(1)) if m else float("nan")
        res["p50"] = wrk_latency_ms(out, "50%")
        res["p99"] = wrk_latency_ms(out, "99%")
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        res["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    else:
        m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
        res["rps"] = float(m.group(1)) if m else float("nan")
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        res["errors"] = (int(m.group(5)) + int(m.group(6)) + int(m.group(7)) if m else 0) + \
            (int(codes.group(3)) + int(codes.group(4)) if codes else 0)
        lat = []
        try:
            with open(log_file) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        lat.append(int(parts[2]) / 1000)
            os.remove(log_file)
        except OSError:
            pass
        res["p50"] = statistics.median(lat) if lat else float("nan")
        res["p99"] = pct(lat, 99) if lat else float("nan")
    if r.returncode != 0 or res["rps"] != res["rps"]:
        res["errors"] = res.get("errors", 0) or -1
        print(f"warning: {scenario} against {target['name']} exited {r.returncode}:\n{out[-2000:]}", file=sys.stderr)
    return res


# ---------------------------------------------------------------- report


def machine_facts(args, kumo_bin):
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError):
        pass
    osname = "?"
    try:
        with open("/etc/os-release") as f:
            osname = dict(l.rstrip().split("=", 1) for l in f if "=" in l).get("PRETTY_NAME", "?").strip('"')
    except OSError:
        pass
    return {
        "machine": f"{os.cpu_count()} CPUs ({cpu_model}), {mem}, {osname}, kernel {platform.release()}",
        "kumo": run_out([kumo_bin, "version", "--client"]).splitlines()[0] if os.path.exists(kumo_bin) else "?",
        "nginx": run_out(["nginx", "-v"]).splitlines()[0],
        "haproxy": run_out(["haproxy", "-v"]).splitlines()[0],
        "wrk": run_out(["wrk", "-v"]).splitlines()[0],
        "h2load": run_out(["h2load", "--version"]).splitlines()[0],
    }


def fmt_ms(v):
    return "n/a" if v != v else f"{v:.2f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kumo", default=os.path.join(ROOT, "target", "release", "kumo"))
    ap.add_argument("--duration", type=int, default=10, help="seconds of each measured run")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each run")
    ap.add_argument("--rounds", type=int, default=1, help="repeat everything; the table shows medians")
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64, help="wrk connections")
    ap.add_argument("--h2-clients", type=int, default=4, help="h2load connections")
    ap.add_argument("--h2-streams", type=int, default=32, help="h2load concurrent streams per connection")
    ap.add_argument("--scenarios", default="http1,h2,h2-h1,grpc")
    ap.add_argument("--targets", default="direct,kumo,nginx,haproxy")
    ap.add_argument("--access-log", choices=["on", "off"], default="on",
                    help="access logs of all three proxies (kumo: stderr to a file; nginx, HAProxy: a file)")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0, help="CPU of the client, the backends and kumo up")
    ap.add_argument("--nice", type=int, default=-20 if os.geteuid() == 0 else 0,
                    help="nice value of the proxies, backends, kumo and clients (the same for all; -20 keeps "
                         "other work on the machine from taking their CPUs; 0 to leave it)")
    ap.add_argument("--kumo-base", metavar="BINARY",
                    help="another kumo build whose router is measured too, as target kumo-base, right after "
                         "kumo in every round (to compare a change with the build before it)")
    ap.add_argument("--keep-raw", action="store_true", help="print every client's raw output")
    args = ap.parse_args()
    global NICE
    NICE = args.nice
    # SIGTERM and SIGHUP unwind like Ctrl-C, through the cleanup below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    scenarios = [s for s in args.scenarios.split(",") if s]
    targets = [t for t in args.targets.split(",") if t]
    if args.kumo_base:
        if not os.path.exists(args.kumo_base):
            sys.exit(f"{args.kumo_base} not found")
        if "kumo-base" not in targets:
            targets.insert(targets.index("kumo") + 1 if "kumo" in targets else len(targets), "kumo-base")
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    for t in targets:
        if t == "kumo-base" and not args.kumo_base:
            sys.exit("target kumo-base needs --kumo-base BINARY (another kumo build)")
        if t not in ("direct", "kumo", "kumo-base", "nginx", "haproxy"):
            sys.exit(f"unknown target {t}; known: direct, kumo, kumo-base, nginx, haproxy")
    missing = [tool for tool in ["taskset", "wrk", "h2load"] + [t for t in ("nginx", "haproxy") if t in targets]
               if not shutil.which(tool)]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `sh bench/router/setup.sh` (as root) first")
    if not os.path.exists(args.kumo):
        sys.exit(f"{args.kumo} not found: run `cargo build --release -p kumo` first")
    if max(args.proxy_cpu, args.load_cpu) >= os.cpu_count() or args.proxy_cpu == args.load_cpu:
        sys.exit(f"--proxy-cpu and --load-cpu must be two different CPUs of the {os.cpu_count()} here")

    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    print("building the backend (bench/router/backend)...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=BACKEND_DIR, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=BACKEND_TARGET))

    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="kumo-router-bench-")
    os.chmod(tmp, 0o755)
    args.grpc_body = f"{tmp}/grpc-request.bin"
    with open(args.grpc_body, "wb") as f:
        f.write(GRPC_FRAME)
    results = {}  # (scenario, target) -> [res per round]
    notes = {}
    kumo = None
    try:
        kumo = Kumo(args.kumo, tmp, procs, args.load_cpu)
        h1_eps, h2_eps, backend_pids = start_backends(kumo, args.replicas, tmp)
        notes["backends"] = f"h1 {h1_eps}, h2c {h2_eps}"
        print(f"backends: {notes['backends']}", file=sys.stderr)

        live = []
        for name in targets:
            if name == "direct":
                t = {"name": "direct", "procs": [], "h1": h1_eps[0][1], "h2": h2_eps[0][1]}
            elif name == "kumo":
                t = start_kumo_router(kumo, procs, tmp, args.proxy_cpu, args.access_log == "on")
            elif name == "kumo-base":
                t = start_kumo_router(kumo, procs, tmp, args.proxy_cpu, args.access_log == "on",
                                      binary=args.kumo_base, name="kumo-base")
            elif name == "nginx":
                t = start_nginx(procs, tmp, args.proxy_cpu, h1_eps, h2_eps, args.access_log == "on")
            else:
                t = start_haproxy(procs, tmp, args.proxy_cpu, h1_eps, h2_eps, args.access_log == "on")
            pids = [p.pid for p in t["procs"]]
            if t.get("with_children"):
                pids += [c for p in pids for c in children(p)]
            t["pids"] = pids
            check_target(t, scenarios)
            if pids:
                t["threads"] = {pid: threads(pid) for pid in pids}
                t["affinity"] = {pid: affinity(pid) for pid in pids}
            live.append(t)
            print(f"{name}: ready (h1 port {t['h1']}, h2 port {t['h2']}, gRPC check: "
                  f"{t.get('grpc_check', '-')}, threads {t.get('threads', '-')}, CPUs {t.get('affinity', '-')})",
                  file=sys.stderr)

        for rnd in range(args.rounds):
            for s in scenarios:
                for t in live:
                    res = measure(s, t, args, tmp)
                    results.setdefault((s, t["name"]), []).append(res)
                    print(f"round {rnd + 1} {s:6} {t['name']:8} {res['rps']:>10.0f} req/s  p50 {fmt_ms(res['p50'])}"
                          f"  p99 {fmt_ms(res['p99'])}  proxy CPU {res['cpu']:.0f}%"
                          f"  {res['rps'] / (res['cpu'] / 100) if res['cpu'] > 0 else float('nan'):>6.0f} req/CPU-s"
                          f"  errors {res['errors']}"
                          f"  (whole machine: CPU {args.load_cpu} {res['load_core']:.0f}% busy, "
                          f"CPU {args.proxy_cpu} {res['proxy_core']:.0f}% busy)",
                          file=sys.stderr)
                    if args.keep_raw:
                        print(res["raw"], file=sys.stderr)
        # The backends' affinity, read at the end: they must have shared the load CPU.
        notes["backend CPUs"] = sorted({c for p in backend_pids for c in affinity(p)})
        notes["kumo router threads"] = next((t.get("threads") for t in live if t["name"] == "kumo"), None)
    finally:
        tear_down(procs, kumo, tmp)

    facts = machine_facts(args, args.kumo)
    print()
    print(f"- **Machine:** {facts['machine']}")
    print(f"- **Versions:** {facts['kumo']}; {facts['nginx']}; {facts['haproxy']}; {facts['wrk']}; {facts['h2load']}")
    print(f"- **Command:** `python3 bench/router_bench.py --duration {args.duration} --warmup {args.warmup} "
          f"--rounds {args.rounds} --replicas {args.replicas} --access-log {args.access_log} --nice {args.nice}`")
    print(f"- **Setup:** {args.replicas} backend replicas per App (bench/router/backend, one thread each), "
          f"the client and the backends on CPU {args.load_cpu} (backends' affinity: {notes.get('backend CPUs')}), "
          f"each proxy alone on CPU {args.proxy_cpu} with one worker (kumo router threads: "
          f"{notes.get('kumo router threads')}); wrk -t1 -c{args.connections}; h2load -t1 -c{args.h2_clients} "
          f"-m{args.h2_streams}; {args.duration} s per run after {args.warmup} s of warm-up; access logs {args.access_log}; "
          f"nice {args.nice}; load average before the run {load_before}.")
    print()
    print("| protocol (client → proxy) | target | proxy → backends | req/s | p50 | p99 | req/s vs nginx | proxy CPU | req per proxy CPU-s | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    verdicts = []
    for s in scenarios:
        _, _, client_proto, upstream = SCENARIOS[s]
        label = {"http1": "HTTP/1.1 keep-alive (wrk)", "h2": "HTTP/2 h2c (h2load)",
                 "h2-h1": "HTTP/2 h2c to the HTTP/1.1 app (h2load)", "grpc": "gRPC unary (h2load)"}[s]
        med = {}
        for t in targets:
            rs = results.get((s, t), [])
            if rs:
                med[t] = {k: statistics.median([r[k] for r in rs]) for k in ("rps", "p50", "p99", "cpu")}
                med[t]["errors"] = sum(r["errors"] for r in rs)
        for t in targets:
            if t not in med:
                continue
            m = med[t]
            vs = f"{m['rps'] / med['nginx']['rps'] * 100:.0f}%" if "nginx" in med and t != "direct" else "-"
            cpu = "-" if t == "direct" else f"{m['cpu']:.0f}%"
            per_cpu = "-" if t == "direct" or not m["cpu"] > 0 else f"{m['rps'] / (m['cpu'] / 100):.0f}"
            name = "direct (ceiling)" if t == "direct" else t
            print(f"| {label} | {name} | {upstream['kumo' if t == 'kumo-base' else t]} | {m['rps']:.0f} | {fmt_ms(m['p50'])} | {fmt_ms(m['p99'])} "
                  f"| {vs} | {cpu} | {per_cpu} | {m['errors']} |")
        if "kumo" in med and "nginx" in med:
            k, n = med["kumo"], med["nginx"]
            ok = k["rps"] >= n["rps"] and k["p99"] <= n["p99"]
            verdicts.append(f"{s}: kumo {k['rps']:.0f} req/s p99 {fmt_ms(k['p99'])} vs nginx {n['rps']:.0f} req/s "
                            f"p99 {fmt_ms(n['p99'])}: {'met' if ok else 'NOT met'}")
    if verdicts:
        print()
        print("Target (at least nginx's throughput, at no worse p99):")
        for v in verdicts:
            print(f"- {v}")


if __name__ == "__main__":
    sys.exit(main())
