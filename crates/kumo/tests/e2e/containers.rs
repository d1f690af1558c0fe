//! Real containers through `kumo up`: images from a registry on loopback, runc and gVisor,
//! pod networking over the CNI bridge, and nothing left behind.

use crate::harness::*;
use crate::pods::phase;
use kumo_api::meta::find_condition;
use kumo_api::{ConditionStatus, Pod, PodPhase};
use kumo_image::testing::Registry;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A pod running busybox from `image` under `runtime` (None: the node's default, runc).
fn image_pod(
    name: &str,
    image: &str,
    runtime: Option<&str>,
    restart: &str,
    script: &str,
) -> String {
    let rc = runtime
        .map(|r| format!("  runtimeClassName: {r}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{rc}  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: \"{image}\"\n    command: [\"/bin/busybox\", \"sh\", \"-c\", {script:?}]\n"
    )
}

fn logs(c: &Cluster, pod: &str) -> String {
    String::from_utf8_lossy(&c.kumo(&["logs", pod]).stdout).to_string()
}

pub fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .first()?
        .state
        .waiting
        .as_ref()?
        .reason
        .clone()
}

/// The message of the first container's waiting state (empty when it has none).
pub fn waiting_message(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .and_then(|c| c.state.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default()
}

/// A real registry on loopback holding a busybox image; the registry stops when dropped.
pub fn busybox_registry() -> (Registry, String) {
    let registry = Registry::start().expect("docker-registry");
    let (image, _) = registry.push_busybox("test:1").expect("push busybox");
    (registry, image)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_images_run_isolated_under_runc_and_runsc() {
    let (_registry, image) = busybox_registry();
    let c = Cluster::up(&[]);
    let client = c.client();
    let script = "echo host=$(hostname); echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); echo procs=$(ls /proc | grep -c '^[0-9]'); grep CapEff /proc/self/status; cat /proc/version";
    c.apply(
        "runc.yaml",
        &image_pod("in-runc", &image, None, "Never", script),
    );
    c.apply(
        "runsc.yaml",
        &image_pod("in-gvisor", &image, Some("runsc"), "Never", script),
    );

    for name in ["in-runc", "in-gvisor"] {
        let p = wait_pod(&client, "default", name, T, |p| {
            phase(p).is_some_and(|ph| ph.is_terminal())
        })
        .await;
        assert_eq!(
            phase(&p),
            Some(PodPhase::Succeeded),
            "{name}: {:#?}",
            p.status
        );
        let out = logs(&c, name);
        assert!(
            out.contains(&format!("host={name}\n")),
            "{name}: hostname is the pod name:\n{out}"
        );
        assert!(
            out.contains("pid1=/bin/busybox sh -c"),
            "{name}: PID 1 is the entrypoint:\n{out}"
        );
        let procs: usize = out
            .lines()
            .find_map(|l| l.strip_prefix("procs="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            procs < 10,
            "{name}: host processes must be invisible, saw {procs}"
        );
        let cap = out
            .lines()
            .find(|l| l.starts_with("CapEff"))
            .unwrap()
            .to_string();
        assert!(
            !cap.ends_with("000001ffffffffff") && !cap.ends_with("000003ffffffffff"),
            "{name}: full caps: {cap}"
        );
        let ip = p
            .status
            .as_ref()
            .unwrap()
            .pod_ip
            .clone()
            .unwrap_or_default();
        assert!(
            ip.starts_with("10.124."),
            "{name}: pod IP from the test CIDR, got {ip:?}"
        );
    }
    assert!(
        logs(&c, "in-gvisor").contains("Linux version 4.4.0"),
        "gVisor's kernel answers"
    );
    assert!(!logs(&c, "in-runc").contains("Linux version 4.4.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_and_the_host_reaches_them() {
    let (_registry, image) = busybox_registry();
    let c = Cluster::up(&[]);
    let client = c.client();
    let server = "mkdir -p /www && echo hello-from-server > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www";
    c.apply(
        "server.yaml",
        &image_pod("server", &image, None, "Always", server),
    );
    let p = wait_pod(&client, "default", "server", T, pod_ready).await;
    let ip = p.status.unwrap().pod_ip.unwrap();

    // Another pod fetches from the first over its pod IP.
    let fetch = format!("/bin/busybox wget -q -O - http://{ip}:8080/index.html");
    c.apply(
        "client.yaml",
        &image_pod("client", &image, None, "OnFailure", &fetch),
    );
    wait_pod(&client, "default", "client", T, |p| {
        phase(p) == Some(PodPhase::Succeeded)
    })
    .await;
    assert_eq!(logs(&c, "client"), "hello-from-server\n");

    // The host reaches the pod IP too.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect((ip.as_str(), 8080)).expect("host to pod");
    conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with("hello-from-server\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_readopts_a_runc_container() {
    let (_registry, image) = busybox_registry();
    let mut c = Cluster::up(&[]);
    let client = c.client();
    c.apply(
        "long.yaml",
        &image_pod(
            "long",
            &image,
            None,
            "Always",
            "echo started; exec /bin/busybox sleep 1000",
        ),
    );
    let before = wait_pod(&client, "default", "long", T, |p| {
        phase(p) == Some(PodPhase::Running)
    })
    .await;
    let id = before.status.as_ref().unwrap().container_statuses[0]
        .container_id
        .clone()
        .unwrap();
    assert!(id.starts_with("runc://"), "{id}");

    c.restart();
    let client = c.client();
    let after = wait_pod(&client, "default", "long", T, pod_ready).await;
    let cs = &after.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(
        cs.container_id.as_deref(),
        Some(id.as_str()),
        "re-adopted, not restarted"
    );
    assert_eq!(cs.restart_count, 0);
    assert_eq!(logs(&c, "long"), "started\n", "the container ran once");
    assert!(c
        .kumo(&["delete", "pod", "long", "--wait"])
        .status
        .success());
}

/// What a node holds for its pods: veths on the test bridge, netns files, mounts, shims.
fn footprint(c: &Cluster, bridge: &str) -> (usize, usize, usize, usize) {
    let veths = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .unwrap();
    let veths = String::from_utf8_lossy(&veths.stdout).lines().count();
    let netns = std::fs::read_dir(c.data_dir().join("agent/net/netns"))
        .map(|d| d.count())
        .unwrap_or(0);
    let mounts = mounts_under(c.dir.path()).len();
    let needle = c.dir.path().to_string_lossy().to_string();
    let shims = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            let cmdline = String::from_utf8_lossy(
                &std::fs::read(e.path().join("cmdline")).unwrap_or_default(),
            )
            .to_string();
            // `kumo up` itself names the temp dir too: count only shims of containers (the
            // shims started ahead for the next containers, `shim-standby`, hold none).
            cmdline.contains(&needle)
                && cmdline.contains("shim")
                && !cmdline.contains("shim-standby")
        })
        .count();
    (veths, netns, mounts, shims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_create_delete_cycles_leave_nothing_behind() {
    let (_registry, image) = busybox_registry();
    let c = Cluster::up(&[]);
    let client = c.client();
    let bridge = c.bridge();
    let mut uids = Vec::new();
    for i in 0..50 {
        let name = format!("cycle-{i}");
        c.apply(
            "cycle.yaml",
            &image_pod(&name, &image, None, "Never", "exec /bin/busybox sleep 1000"),
        );
        let pod = wait_pod(&client, "default", &name, T, |p| {
            phase(p) == Some(PodPhase::Running)
        })
        .await;
        assert!(pod.status.as_ref().unwrap().pod_ip.is_some());
        uids.push(pod.metadata.uid.clone().unwrap());
        let out = c.kumo(&["delete", "pod", &name, "--wait", "--grace-period", "0"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The agent tears a pod down after its object is gone, as a kubelet does: give it a moment.
    // What stays is the warm pool of pod networks (--pod-network-pool, 2 by default): each a
    // veth, a namespace file and its mount, none of any pod.
    let netns_dir = c.data_dir().join("agent/net/netns");
    let warm_only = |left: (usize, usize, usize, usize)| {
        let names: Vec<String> = std::fs::read_dir(&netns_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let warm = names.len();
        names.iter().all(|n| n.starts_with(kumo_net::WARM_PREFIX))
            && warm <= 2
            && left == (warm, warm, warm, 0)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut left = footprint(&c, &bridge);
    while !warm_only(left) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = footprint(&c, &bridge);
    }
    assert!(
        warm_only(left),
        "(veths, netns files, mounts, shims) left after 50 create/delete cycles: {left:?}"
    );
    // A stopping agent removes its warm networks too: then nothing at all is left.
    let mut c = c;
    c.stop();
    let left = footprint(&c, &bridge);
    let needle = c.dir.path().to_string_lossy().to_string();
    let shims: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| {
            String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ")
        })
        .filter(|c| c.contains(&needle) && c.contains("shim"))
        .collect();
    assert_eq!(
        left,
        (0, 0, 0, 0),
        "(veths, netns files, mounts, shims) left after 50 create/delete cycles; shims: {shims:#?}"
    );
    // Nor any shim started ahead: a stopped agent ends them.
    assert!(
        shims.is_empty(),
        "shims left after kumo stopped: {shims:#?}"
    );
    let leases: Vec<String> = std::fs::read_dir(c.data_dir().join("agent/net/ipam/kumo"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leases.iter().all(|l| !l.starts_with("10.")),
        "IP leases left: {leases:?}"
    );
    let nat = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    let rules: Vec<String> = String::from_utf8_lossy(&nat.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w == format!("KUMO-MASQ-{bridge}") || w == format!(":KUMO-MASQ-{bridge}"))
        })
        .map(str::to_string)
        .collect();
    assert_eq!(rules, Vec::<String>::new(), "masquerade rules left");
    let hierarchies: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    for uid in &uids {
        for h in &hierarchies {
            assert!(
                !h.join("kumo").join(uid).exists(),
                "cgroup {} of a deleted pod left",
                h.join("kumo").join(uid).display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_and_runtimes_get_clear_statuses() {
    let (_registry, image) = busybox_registry();
    let c = Cluster::up(&[]);
    let client = c.client();
    let missing_tag = image.replace(":1", ":nope");
    c.apply(
        "missing.yaml",
        &image_pod("missing", &missing_tag, None, "Never", "true"),
    );
    c.apply(
        "unreachable.yaml",
        &image_pod("unreachable", "127.0.0.1:1/test:1", None, "Never", "true"),
    );
    c.apply(
        "malformed.yaml",
        &image_pod("malformed", "Bad:Ref:", None, "Never", "true"),
    );
    for (name, text) in [
        ("missing", "manifest unknown"),
        ("unreachable", "onnection refused"),
        ("malformed", "invalid image reference"),
    ] {
        let p = wait_pod(&client, "default", name, T, |p| {
            matches!(
                waiting_reason(p).as_deref(),
                Some("ErrImagePull") | Some("ImagePullBackOff")
            )
        })
        .await;
        let msg = waiting_message(&p);
        assert!(msg.contains(text), "{name}: {msg}");
    }
    // A runtime class no node has: the scheduler says so.
    c.apply(
        "kata.yaml",
        &image_pod("kata", &image, Some("kata"), "Never", "true"),
    );
    let p = wait_pod(&client, "default", "kata", T, |p| {
        p.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "PodScheduled"))
            .is_some_and(|c| c.status == ConditionStatus::False)
    })
    .await;
    let cond = find_condition(&p.status.as_ref().unwrap().conditions, "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(
        cond.message.as_deref(),
        Some("0/1 nodes are available: 1 node(s) didn't support runtime class \"kata\"")
    );
    // A hostPath outside the node's allow-list is refused before anything is made.
    let host_path = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: peek\nspec:\n  restartPolicy: Never\n  volumes:\n  - name: etc\n    hostPath: {{path: /etc}}\n  containers:\n  - name: main\n    image: \"{image}\"\n    command: [\"/bin/busybox\", \"cat\", \"/host/passwd\"]\n    volumeMounts:\n    - {{name: etc, mountPath: /host}}\n"
    );
    c.apply("peek.yaml", &host_path);
    let p = wait_pod(&client, "default", "peek", T, |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let msg = waiting_message(&p);
    assert!(
        msg.contains("hostPath \"/etc\" of volume \"etc\" is not allowed on this node"),
        "{msg}"
    );
    // A memory limit below what the runtime needs to start is refused with the reason.
    c.apply("tiny.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: tiny\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: \"{image}\"\n    command: [\"/bin/busybox\", \"true\"]\n    resources: {{limits: {{memory: 1Mi}}}}\n"),
    );
    let p = wait_pod(&client, "default", "tiny", T, |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let msg = waiting_message(&p);
    assert!(
        msg.contains("memory limit 1Mi is below the 6Mi an OCI container needs to start"),
        "{msg}"
    );

    // A registry serving a blob whose bytes do not match its digest.
    let bad = Registry::start().expect("docker-registry");
    // An image of its own, so no layer of it is on the node already.
    let layout = tempfile::tempdir().unwrap();
    let pushed = kumo_image::testing::write_tiny_layout(layout.path(), "1", "corrupt me").unwrap();
    let corrupt = bad
        .push_layout(layout.path(), "1", "corrupt:1")
        .expect("push");
    let data = bad.blob_data_path(&pushed.layers[0]);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    c.apply(
        "corrupt.yaml",
        &image_pod("corrupt", &corrupt, None, "Never", "true"),
    );
    let p = wait_pod(&client, "default", "corrupt", T, |p| {
        matches!(
            waiting_reason(p).as_deref(),
            Some("ErrImagePull") | Some("ImagePullBackOff")
        )
    })
    .await;
    let msg = waiting_message(&p);
    assert!(msg.contains("digest mismatch"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_gpu_pods_get_their_devices_from_the_cdi_spec() {
    let (_registry, image) = busybox_registry();
    // A CDI spec for the fake GPUs, as `nvidia-ctk cdi generate` would install one: a "driver
    // library" for every GPU container, and per device a node and a file of its own.
    let cdi = tempfile::tempdir().expect("cdi dir");
    let file = |name: &str, text: &str| {
        let p = cdi.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let lib = file("libcuda.so.1", "fake driver\n");
    let dev = |i: u32| {
        let mark = file(&format!("gpu{i}"), &format!("device {i}\n"));
        format!("- name: \"{i}\"\n  containerEdits:\n    env: [DEV={i}]\n    deviceNodes: [{{path: /dev/nvidia{i}, hostPath: /dev/null}}]\n    mounts: [{{hostPath: {mark}, containerPath: /gpu/mark, options: [ro, bind]}}]\n")
    };
    file(
        "nvidia.yaml",
        &format!(
            "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ncontainerEdits:\n  env: [NVIDIA_VISIBLE_DEVICES=void, LD_LIBRARY_PATH=/usr/lib/nvidia]\n  mounts: [{{hostPath: {lib}, containerPath: /usr/lib/nvidia/libcuda.so.1, options: [ro, nosuid, nodev, bind]}}]\ndevices:\n{}{}",
            dev(0),
            dev(1)
        ),
    );
    let c = Cluster::up(&[
        "--fake-gpus",
        "2",
        "--cdi-spec-dir",
        cdi.path().to_str().unwrap(),
    ]);
    let script = "echo gpus: NVIDIA=$NVIDIA_VISIBLE_DEVICES CUDA=$CUDA_VISIBLE_DEVICES DEV=$DEV LD=$LD_LIBRARY_PATH; \
        echo files: $(cat /usr/lib/nvidia/libcuda.so.1 /gpu/mark); echo nodes: $(ls /dev | grep nvidia)";
    let manifest = format!(
        "{}    resources:\n      limits: {{nvidia.com/gpu: 1}}\n",
        image_pod("trainer", &image, None, "Never", script)
    );
    c.apply("trainer.yaml", &manifest);
    let client = c.client();
    let p = wait_pod(&client, "default", "trainer", T, |p| {
        phase(p).is_some_and(|ph| ph != PodPhase::Pending && ph != PodPhase::Running)
    })
    .await;
    let out = logs(&c, "trainer");
    assert_eq!(phase(&p), Some(PodPhase::Succeeded), "{out}");
    // The allocator recorded one device; the container got exactly its edits.
    let i = p.metadata.annotations["kumo.dev/gpu-devices"]
        .strip_prefix("main=")
        .expect("main's devices")
        .to_string();
    let line = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        line("gpus:"),
        format!("NVIDIA={i} CUDA=fake-gpu-{i} DEV={i} LD=/usr/lib/nvidia")
    );
    assert_eq!(line("files:"), format!("fake driver device {i}"));
    assert_eq!(line("nodes:"), format!("nvidia{i}"));
}
