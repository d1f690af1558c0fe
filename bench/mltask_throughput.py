#!/usr/bin/env python3
"""Job throughput: N trivial single-replica jobs, first submit -> all finished, in jobs/s.
kumo (MLTask through the HTTP API) against Slurm (sbatch), with identical per-job requests.

Usage:
  python3 bench/mltask_throughput.py --tasks 1000 [--kumo target/release/kumo] [--slurm] [--no-kumo]
                                     [--runs 1] [--gpus 0] [--submitters 1] [--stall-timeout 120]
                                     [--kumo-log FILE [--kumo-log-level kumo=debug]]

--slurm needs the one-machine Slurm of bench/slurm/ running (as root: sh bench/slurm/setup.sh,
afterwards sh bench/slurm/teardown.sh); see bench/slurm/slurm.conf for its configuration.

What each side runs, and why it is fair:
- One job = one replica that runs /bin/true and asks for exactly 1 CPU (and --gpus N fake GPUs,
  0 by default): kumo `spec: {runtimeClassName: process, command: ["/bin/true"],
  parallelism: 1, resources: {cpu: "1", gpus: N}}`; Slurm `sbatch -N1 -n1 -c1 [--gres=gpu:N]
  -o /dev/null -e /dev/null --wrap=/bin/true` (Slurm runs its batch script through /bin/sh,
  which then runs /bin/true; kumo's process runtime execs /bin/true directly).
- Both offer the same number of CPUs: Slurm's node is configured with CPUs = nproc and
  allocates per CPU (select/cons_tres, CR_CPU); kumo's node advertises allocatable cpu = nproc.
  So at most nproc one-CPU jobs run at a time on either side. Both have 2 fake GPUs.
- Submission: the jobs are submitted as fast as the client allows, by --submitters threads
  (1 by default) each doing one submission after another: an `sbatch` process per Slurm job
  (that is how Slurm users submit), one POST per kumo task over a kept-alive HTTP connection.
- Completion: Slurm's jobs are seen finished through the jobcomp/filetxt log (slurmctld appends
  one line per finished job with its JobState), read every 50 ms; kumo's through a watch on
  mltasks that reports status.phase Succeeded. The time is from the start of the first
  submission to the moment the last job is seen finished.
"""
import argparse, http.client, json, os, random, re, shutil, signal, ssl, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor

NS = "default"
MLTASKS = f"/apis/kumo.dev/v1/namespaces/{NS}/mltasks"


def sh(cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def machine_facts(args):
    facts = {"nproc": os.cpu_count()}
    try:
        facts["nproc"] = int(sh(["nproc"]).strip())
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            facts["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        facts["cpu"] = "?"
    try:
        with open("/proc/meminfo") as f:
            facts["memory"] = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except Exception:
        pass
    facts["kernel"] = os.uname().release
    facts["load average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if not args.no_kumo:
        try:
            facts["kumo"] = sh([args.kumo, "--version"]).strip()
        except Exception as e:
            facts["kumo"] = f"? ({e})"
        try:
            rev = sh(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"]).strip()
            facts["kumo"] += f" (binary {args.kumo}; checkout at {rev})"
        except Exception:
            pass
    if args.slurm:
        try:
            facts["slurm"] = sh(["sinfo", "-V"]).strip()
        except Exception as e:
            facts["slurm"] = f"? ({e})"
    return facts


def rate_line(label, n, submit_s, total_s, failed):
    tail = f"; {failed} did NOT succeed" if failed else ""
    return (f"{label}: {n} jobs, submitted in {submit_s:.2f} s ({n / submit_s:.1f}/s), all finished "
            f"{total_s:.2f} s after the first submit: {n / total_s:.2f} jobs/s{tail}")


# ---------------------------------------------------------------------------------------------
# Slurm


def slurm_config_lines():
    keys = {"SchedulerType", "SchedulerParameters", "SelectType", "SelectTypeParameters",
            "ProctrackType", "TaskPlugin", "JobCompType", "JobCompLoc", "GresTypes",
            "SlurmctldHost", "MinJobAge", "MaxJobCount", "SchedulerTimeSlice", "PriorityType"}
    conf = {}
    for line in sh(["scontrol", "show", "config"]).splitlines():
        m = re.match(r"^(\S+)\s+=\s+(.*)$", line)
        if m and m.group(1) in keys:
            conf[m.group(1)] = m.group(2).strip()
    return conf


def run_slurm(args):
    r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if r.returncode != 0 or "UP" not in r.stdout:
        sys.exit("slurm: slurmctld does not answer (scontrol ping: "
                 f"{(r.stdout + r.stderr).strip()!r}); start it with: sudo sh bench/slurm/setup.sh")
    conf = slurm_config_lines()
    node = sh(["sinfo", "-h", "-N", "-o", "%N cpus=%c gres=%G state=%t"]).strip()
    print("slurm configuration (bench/slurm/slurm.conf, gres.conf):")
    for k in sorted(conf):
        print(f"  {k} = {conf[k]}")
    print(f"  node: {node}")
    if conf.get("JobCompType") != "jobcomp/filetxt":
        sys.exit("slurm: this benchmark reads the jobcomp/filetxt log; use bench/slurm/slurm.conf")
    complog = conf["JobCompLoc"]
    busy = sh(["squeue", "-h", "-o", "%i"]).split()
    if busy:
        sys.exit(f"slurm: {len(busy)} jobs are already in the queue; wait for them or scancel them first")

    work = tempfile.mkdtemp(prefix="kumo-bench-slurm-")
    os.chmod(work, 0o755)
    cmd = ["sbatch", "--parsable", "--job-name=kumo-bench", "-N1", "-n1", "-c1",
           f"--chdir={work}", "-o", "/dev/null", "-e", "/dev/null"]
    if args.gpus:
        cmd.append(f"--gres=gpu:{args.gpus}")
    cmd.append("--wrap=/bin/true")
    print(f"  per job: {' '.join(cmd)}")

    finished = {}  # job id -> (time seen, JobState)
    lock = threading.Lock()
    stop = threading.Event()
    offset = os.path.getsize(complog) if os.path.exists(complog) else 0

    def follow_log():
        nonlocal offset
        partial = ""
        while not stop.is_set():
            try:
                with open(complog) as f:
                    f.seek(offset)
                    data = f.read()
                    offset = f.tell()
            except FileNotFoundError:
                data = ""
            if data:
                now = time.perf_counter()
                lines = (partial + data).split("\n")
                partial = lines.pop()
                with lock:
                    for line in lines:
                        m = re.search(r"\bJobId=(\d+)\b.*\bJobState=(\S+)", line)
                        if m:
                            finished.setdefault(m.group(1), (now, m.group(2)))
            time.sleep(0.05)

    poller = threading.Thread(target=follow_log, daemon=True)
    poller.start()

    def submit(_):
        for attempt in range(20):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout.strip().split(";")[0]
            time.sleep(min(2.0, 0.05 * 2 ** attempt))  # slurmctld busy: back off and retry
        raise RuntimeError(f"sbatch failed 20 times: {r.stderr.strip()}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.submitters) as pool:
        ids = list(pool.map(submit, range(args.tasks)))
    t_submitted = time.perf_counter()
    want = set(ids)
    deadline = t0 + args.timeout
    last_progress, last_count = time.perf_counter(), -1
    try:
        while True:
            with lock:
                done = [finished[i] for i in want if i in finished]
            if len(done) == len(want):
                break
            now = time.perf_counter()
            if len(done) != last_count:
                last_progress, last_count = now, len(done)
            if now > deadline or now - last_progress > args.stall_timeout:
                pending = sh(["squeue", "-h", "-o", "%i %T %r"], check=False).splitlines()
                sys.exit(f"slurm: only {len(done)} of {len(want)} jobs finished "
                         f"({'deadline' if now > deadline else f'nothing finished for {args.stall_timeout:.0f} s'}); "
                         f"squeue shows {len(pending)}, e.g. {pending[:5]}")
            time.sleep(0.05)
    finally:
        stop.set()
        poller.join()
        shutil.rmtree(work, ignore_errors=True)
    t_end = max(t for t, _ in done)
    states = {}
    for _, st in done:
        states[st] = states.get(st, 0) + 1
    failed = len(want) - states.get("COMPLETED", 0)
    if failed:
        print(f"  job states: {states}")
    return t_submitted - t0, t_end - t0, failed


# ---------------------------------------------------------------------------------------------
# kumo


class Kumo:
    def __init__(self, args):
        self.tmp = tempfile.mkdtemp(prefix="kumo-bench-")
        env = dict(os.environ, KUMO_CONFIG=f"{self.tmp}/config", HOME=self.tmp,
                   RUST_LOG=args.kumo_log_level)
        # A bridge and a CIDR of its own, so as not to meet another kumo on this machine.
        n = random.randrange(16, 240)
        cmd = [args.kumo, "up", "--data-dir", f"{self.tmp}/data", "--listen", "127.0.0.1:0",
               "--node-name", "bench", "--fake-gpus", "2",
               "--pod-bridge", f"kbt{os.getpid() % 100000}", "--pod-cidr", f"10.{n}.0.0/16"]
        self.cmd = cmd
        stderr = open(args.kumo_log, "w") if args.kumo_log else None
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        url = None
        found = threading.Event()

        def read():
            nonlocal url
            for line in self.proc.stdout:
                if url is None and line.startswith("kumo: API server listening on "):
                    url = line.split()[-1]
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60) or url is None:
            self.stop()
            sys.exit(f"kumo: `kumo up` did not report its API address (exit {self.proc.poll()})")
        self.host, port = url.removeprefix("https://").split(":")
        self.tls = ssl.create_default_context(cafile=f"{self.tmp}/data/pki/ca.crt")  # the cluster CA
        self.port = int(port)
        self.token = __import__("json").load(open(f"{self.tmp}/data/admin.config"))["token"]
        self.headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    def conn(self):
        return http.client.HTTPSConnection(self.host, self.port, timeout=60, context=self.tls)

    def get(self, path):
        c = self.conn()
        c.request("GET", path, headers=self.headers)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, (json.loads(body) if body else None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_kumo(args):
    k = Kumo(args)
    try:
        return _run_kumo(args, k)
    finally:
        k.stop()


def _run_kumo(args, k):
    # The node: wait until it is Ready, and say what it offers.
    deadline = time.time() + 60
    while True:
        status, nodes = k.get("/api/v1/nodes")
        ready = [n for n in (nodes or {}).get("items", [])
                 if any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in n.get("status", {}).get("conditions", []))]
        if ready:
            break
        if time.time() > deadline:
            sys.exit("kumo: no node became Ready within 60 s")
        time.sleep(0.2)
    alloc = ready[0]["status"].get("allocatable", {})
    print(f"kumo node: {ready[0]['metadata']['name']} allocatable cpu={alloc.get('cpu')} "
          f"nvidia.com/gpu={alloc.get('nvidia.com/gpu', 0)} (fake) memory={alloc.get('memory')}")
    print(f"  kumo up: {' '.join(k.cmd[1:])}")

    status, lst = k.get(MLTASKS)
    if status == 404:
        sys.exit(f"kumo: {MLTASKS} answers 404: this kumo does not serve MLTasks")
    if status != 200:
        sys.exit(f"kumo: listing mltasks answered {status}: {lst}")
    rv = lst.get("metadata", {}).get("resourceVersion", "")

    spec = {"runtimeClassName": "process", "command": ["/bin/true"], "parallelism": 1,
            "resources": {"cpu": "1", "gpus": args.gpus}}
    print(f"  per task: spec {json.dumps(spec)}")

    phase = {}       # name -> last phase seen
    succeeded = {}   # name -> time first seen Succeeded
    failed = {}      # name -> (phase, message)
    running = set()
    peak_running = 0
    last_event = [time.perf_counter()]
    example = {}     # a recent status, to explain a stall
    cond = threading.Condition()

    def on_object(obj):
        nonlocal peak_running
        name = obj["metadata"]["name"]
        st = obj.get("status") or {}
        ph = st.get("phase")
        now = time.perf_counter()
        with cond:
            if phase.get(name) != ph:
                last_event[0] = now
            phase[name] = ph
            example["status"] = (name, st)
            if ph == "Running":
                running.add(name)
                peak_running = max(peak_running, len(running))
            else:
                running.discard(name)
            if ph == "Succeeded":
                succeeded.setdefault(name, now)
            elif ph in ("Failed", "Cancelled"):
                failed.setdefault(name, (ph, st.get("message")))
            cond.notify_all()

    stop = threading.Event()

    def watch():
        nonlocal rv
        while not stop.is_set():
            c = http.client.HTTPSConnection(k.host, k.port, context=k.tls)
            try:
                c.request("GET", f"{MLTASKS}?watch=true&resourceVersion={rv}", headers=k.headers)
                r = c.getresponse()
                if r.status == 410:  # compacted: relist and go on from there
                    _, lst = k.get(MLTASKS)
                    for obj in lst.get("items", []):
                        on_object(obj)
                    rv = lst["metadata"]["resourceVersion"]
                    continue
                for line in r:
                    ev = json.loads(line)
                    obj = ev.get("object", {})
                    if ev.get("type") in ("ADDED", "MODIFIED", "BOOKMARK"):
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev.get("type") in ("ADDED", "MODIFIED"):
                        on_object(obj)
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.1)
            finally:
                c.close()

    threading.Thread(target=watch, daemon=True).start()

    run = f"t{int(time.time()) % 100000}"
    names = [f"{run}-{i}" for i in range(args.tasks)]
    local = threading.local()

    def submit(name):
        if not hasattr(local, "c"):
            local.c = k.conn()
        body = json.dumps({"apiVersion": "kumo.dev/v1", "kind": "MLTask",
                           "metadata": {"name": name, "namespace": NS}, "spec": spec})
        for attempt in range(3):
            try:
                local.c.request("POST", MLTASKS, body=body, headers=k.headers)
                r = local.c.getresponse()
                data = r.read()
                break
            except (OSError, http.client.HTTPException):
                local.c.close()
                local.c = k.conn()
        else:
            raise RuntimeError(f"POST {name}: the connection keeps failing")
        if r.status == 409 and attempt > 0:
            return  # created by the attempt whose answer was lost
        if r.status != 201:
            try:
                msg = json.loads(data).get("message")
            except ValueError:
                msg = data[:300]
            raise RuntimeError(f"POST {MLTASKS} ({name}) answered {r.status}: {msg}")

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.submitters) as pool:
            list(pool.map(submit, names))
    except RuntimeError as e:
        sys.exit(f"kumo: {e}")
    t_submitted = time.perf_counter()
    want = set(names)
    deadline = t0 + args.timeout
    with cond:
        while True:
            done = len(want & succeeded.keys()) + len(want & failed.keys())
            if done == len(want):
                break
            now = time.perf_counter()
            if now > deadline or now - max(last_event[0], t_submitted) > args.stall_timeout:
                phases = {}
                for n in want:
                    p = phase.get(n) or "(no status)"
                    phases[p] = phases.get(p, 0) + 1
                why = "deadline" if now > deadline else f"no task changed phase for {args.stall_timeout:.0f} s"
                msg = (f"kumo: only {done} of {len(want)} tasks finished ({why}); phases: {phases}")
                if example.get("status"):
                    n, st = example["status"]
                    msg += f"; e.g. {n}: {json.dumps(st)[:400]}"
                if phases.get("(no status)") == len(want):
                    msg += ("\nkumo: no task ever got a status: the MLTask controller does not seem to run "
                            "in this build of kumo")
                sys.exit(msg)
            cond.wait(0.5)
    stop.set()
    t_end = max([succeeded[n] for n in want if n in succeeded] + [t0])
    bad = {n: failed[n] for n in want if n in failed}
    if bad:
        print(f"  not succeeded: {len(bad)}, e.g. {list(bad.items())[:3]}")
    print(f"  most tasks seen Running at once: {peak_running} (allocatable cpu {alloc.get('cpu')})")
    return t_submitted - t0, t_end - t0, len(bad)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--kumo", default="target/release/kumo")
    ap.add_argument("--slurm", action="store_true", help="also run the jobs on the Slurm of bench/slurm/")
    ap.add_argument("--kumo-log", default=None, help="write kumo's log (stderr) to this file")
    ap.add_argument("--kumo-log-level", default="warn", help="RUST_LOG for kumo (e.g. kumo=debug)")
    ap.add_argument("--no-kumo", action="store_true", help="skip the kumo part")
    ap.add_argument("--runs", type=int, default=1,
                    help="kumo runs, each on a fresh `kumo up`; prints each and their median "
                         "(this VM's speed drifts by ±20 %% between runs)")
    ap.add_argument("--gpus", type=int, default=0, help="fake GPUs each job asks for (0..2)")
    ap.add_argument("--submitters", type=int, default=1, help="concurrent submitting threads")
    ap.add_argument("--stall-timeout", type=float, default=120,
                    help="give up when no job finishes (kumo: changes phase) for this long")
    ap.add_argument("--timeout", type=float, default=None,
                    help="give up after this long in all (default: 60 s + 3 s per job)")
    args = ap.parse_args()
    if args.timeout is None:
        args.timeout = 60 + 3 * args.tasks
    if args.no_kumo and not args.slurm:
        ap.error("nothing to run: --no-kumo without --slurm")

    print("machine:")
    for k, v in machine_facts(args).items():
        print(f"  {k}: {v}")
    print(f"jobs: {args.tasks}, 1 CPU and {args.gpus} GPU(s) each, running /bin/true; "
          f"{args.submitters} submitting thread(s)")
    results = {}
    if args.slurm:
        results["slurm"] = run_slurm(args)
        print(rate_line("slurm", args.tasks, *results["slurm"]))
    if not args.no_kumo:
        runs = []
        for i in range(max(1, args.runs)):
            r = run_kumo(args)
            label = "kumo" if args.runs <= 1 else f"kumo run {i + 1}"
            print(rate_line(label, args.tasks, *r))
            runs.append(r)
        # The median run by throughput (the lower middle one for an even count).
        runs.sort(key=lambda r: r[1])
        results["kumo"] = runs[len(runs) // 2]
        if len(runs) > 1:
            rates = sorted(args.tasks / r[1] for r in runs)
            print(f"kumo: median of {len(runs)} runs {args.tasks / results['kumo'][1]:.2f} jobs/s "
                  f"(range {rates[0]:.2f}-{rates[-1]:.2f})")
    if len(results) == 2:
        ratio = results["slurm"][1] / results["kumo"][1]
        print(f"kumo / slurm throughput: {ratio:.1f}x (target: at least 100x)")
    return 1 if any(r[2] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
