//! [`MultiNode`]: a cluster of several machines on this one. The control plane (`kumo server`)
//! runs on the host; each agent runs in a network namespace of its own, plugged into a
//! "datacenter" bridge the test makes, with its own address, data dir, hostname (a UTS
//! namespace) and node name, cgroup parent, pod bridge and pod CIDR. Every node reaches the
//! others only over that bridge.
//!
//! Layout for test network slot N (the flock'd slot of [`TestNet`]):
//!
//! ```text
//! host:   bridge kdN, 10.125.N.1/24; kumo server on 10.125.N.1
//! node i: netns kumo-tN-node<i>, veth kdNn<i> (host) <-> eth0, 10.125.N.(10+i)/24, default
//!         via 10.125.N.1; kumo agent --cgroup-parent kumo-tN-node<i>, pod bridge ktNn<i>,
//!         pod CIDR 10.124.N.(64*i)/26
//! ```
//!
//! Agents are started with `nsenter --net=` rather than `ip netns exec`: the latter also
//! unshares the mount namespace and remounts /sys, which hides the cgroup hierarchies from the
//! agent and keeps its mounts from the host (where `kumo down` and the leak checks look).

use crate::harness::*;
use kumo_api::Node;
use kumo_runtime::cgroup_parent::CgroupParent;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The image every node has in its store (imported, no registry needed): busybox.
pub const BUSYBOX: &str = "kumo.test/busybox:1";

/// One node: its namespace, address and agent.
pub struct NodeSpec {
    pub name: String,
    pub netns: String,
    /// The host side of its link to the datacenter bridge.
    pub host_veth: String,
    pub address: String,
    pub data_dir: PathBuf,
    pub cgroup_parent: CgroupParent,
    pub pod_bridge: String,
    pub pod_cidr: String,
    agent: Option<Child>,
}

impl NodeSpec {
    /// `kumo down`'s flags for this node.
    pub fn down_args(&self) -> Vec<String> {
        [
            "down",
            "--data-dir",
            &self.data_dir.to_string_lossy(),
            "--cgroup-parent",
            self.cgroup_parent.as_str(),
            "--pod-bridge",
            &self.pod_bridge,
            "--pod-cidr",
            &self.pod_cidr,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The node's agent process id, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Forgets the agent process (it was ended by other means, e.g. `kumo down`).
    pub fn reap_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A control plane on the host and `n` agents in network namespaces.
pub struct MultiNode {
    pub cluster: Cluster,
    pub slot: u32,
    pub bridge: String,
    pub nodes: Vec<NodeSpec>,
    options: Options,
}

/// How to start a [`MultiNode`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Flags added to `kumo server`.
    pub server_args: Vec<String>,
    /// Flags added to every `kumo agent`.
    pub agent_args: Vec<String>,
    /// Give each agent its own `--pod-cidr` (a /26 of `10.124.N.0/24`); off when the control
    /// plane assigns the nodes' pod CIDRs.
    pub pod_cidr_per_node: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            server_args: Vec::new(),
            agent_args: Vec::new(),
            pod_cidr_per_node: true,
        }
    }
}

/// Runs `cmd args`; panics with its stderr when it fails.
fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd args`, ignoring how it went (teardown of what may be gone already).
fn sh_quiet(cmd: &str, args: &[&str]) {
    let _ = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `cmd args` in network namespace `netns`.
pub fn in_netns(netns: &str, cmd: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(cmd)
        .args(args)
        .output()
        .expect("nsenter")
}

/// A `kumo router` the test started, on the host or in a node's namespace; killed when dropped.
pub struct Router {
    /// Where it listens (a port of its choosing).
    pub addr: std::net::SocketAddr,
    child: Child,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MultiNode {
    /// Starts `kumo router` in node `i`'s namespace, as an operator on that machine would,
    /// listening on the node's address.
    pub fn start_node_router(&self, i: usize) -> Router {
        let node = &self.nodes[i];
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", node.netns))
            .arg("--")
            .arg(kumo_exe());
        self.spawn_router(cmd, &format!("{}:0", node.address))
    }

    /// Starts `kumo router` on the host, listening on loopback.
    pub fn start_router(&self) -> Router {
        self.spawn_router(Command::new(kumo_exe()), "127.0.0.1:0")
    }

    /// Runs `kumo router` (`cmd`, the binary or what execs it) against the control plane with
    /// the admin token, and waits for its listening line.
    fn spawn_router(&self, mut cmd: Command, listen: &str) -> Router {
        use std::io::BufRead;
        let c = &self.cluster;
        let mut child = cmd
            .args(["router", "--server", &c.url])
            .args(["--ca-file", c.ca_file().to_str().unwrap()])
            .args(["--listen", listen])
            .env("KUMO_TOKEN", &c.token)
            .env("RUST_LOG", "warn")
            .env("HOME", c.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn kumo router");
        let stdout = child.stdout.take().unwrap();
        // The guard ends the router even if the line below is not what is expected (nsenter
        // execs it: the child is the router itself).
        let mut router = Router {
            addr: "0.0.0.0:0".parse().unwrap(),
            child,
        };
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        // Whatever it prints later is read and dropped: a closed pipe would fail its writes.
        std::thread::spawn(move || lines.for_each(drop));
        router.addr = line
            .trim()
            .strip_prefix("kumo: router listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("kumo router printed {line:?}"));
        router
    }
}

impl MultiNode {
    /// Starts the datacenter bridge, the control plane and `n` (at most 3) agents, and waits
    /// until every node is Ready.
    pub async fn start(n: usize) -> MultiNode {
        Self::start_with(n, Options::default()).await
    }

    /// [`MultiNode::start`] with more flags for the server and the agents.
    pub async fn start_with(n: usize, options: Options) -> MultiNode {
        assert!((1..=3).contains(&n), "MultiNode holds 1 to 3 nodes");
        let net = TestNet::next();
        let slot = net.slot;
        let bridge = format!("kd{slot}");
        let host = format!("10.125.{slot}.1");
        // The previous user of the slot may have crashed: clear its leftovers first.
        remove_fabric(slot, &bridge, 3);
        // A bridge whose MAC is not set takes the lowest of its ports' and changes as nodes
        // are plugged in: a node that resolved the gateway before the change sends to a MAC
        // the host then drops (seen as a node never Ready, its request unacknowledged). A
        // MAC of its own keeps it.
        let mac = format!("02:6b:64:00:00:{:02x}", slot % 256);
        sh(
            "ip",
            &["link", "add", &bridge, "address", &mac, "type", "bridge"],
        );
        sh(
            "ip",
            &["addr", "add", &format!("{host}/24"), "dev", &bridge],
        );
        sh("ip", &["link", "set", &bridge, "up"]);
        let mut server: Vec<String> = ["server", "--tls-san", host.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        server.extend(options.server_args.iter().cloned());
        let cluster = Cluster::start_on(server, &format!("{host}:0"));
        let mut mn = MultiNode {
            cluster,
            slot,
            bridge,
            nodes: Vec::new(),
            options,
        };
        let layout = mn.cluster.dir.path().join("busybox-layout");
        kumo_image::testing::write_busybox_layout(&layout, "1").expect("busybox layout");
        for i in 0..n {
            mn.add_node(i, &layout);
        }
        for node in &mn.nodes {
            wait_node_ready(&mn.cluster.client(), &node.name, Duration::from_secs(60)).await;
        }
        if !mn.options.pod_cidr_per_node {
            // The control plane gave each node its pod CIDR: `kumo down` must name that one.
            let client = mn.cluster.client();
            for node in &mut mn.nodes {
                let got: Node = client.get("", &node.name).await.expect("node");
                node.pod_cidr = got
                    .spec
                    .pod_cidr()
                    .expect("a Ready node has its pod CIDR")
                    .to_string();
            }
        }
        mn
    }

    fn add_node(&mut self, i: usize, layout: &Path) {
        let slot = self.slot;
        let netns = format!("kumo-t{slot}-node{i}");
        let host_veth = format!("kd{slot}n{i}");
        let address = format!("10.125.{slot}.{}", 10 + i);
        sh("ip", &["netns", "add", &netns]);
        sh(
            "ip",
            &[
                "link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        );
        sh(
            "ip",
            &["link", "set", &host_veth, "master", &self.bridge, "up"],
        );
        let ns = |args: &[&str]| {
            let mut argv = vec!["-n", netns.as_str()];
            argv.extend_from_slice(args);
            sh("ip", &argv)
        };
        ns(&["link", "set", "lo", "up"]);
        ns(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        ns(&["link", "set", "eth0", "up"]);
        ns(&[
            "route",
            "add",
            "default",
            "via",
            &format!("10.125.{slot}.1"),
        ]);
        let data_dir = self.cluster.dir.path().join(format!("node{i}"));
        // The node's image store holds busybox before its agent starts.
        kumo_image::ImageStore::open(&data_dir.join("images"))
            .expect("image store")
            .import(layout, Some(BUSYBOX))
            .expect("import busybox");
        let mut node = NodeSpec {
            name: format!("node{i}"),
            netns,
            host_veth,
            address,
            data_dir,
            cgroup_parent: CgroupParent::parse(&format!("kumo-t{slot}-node{i}")).unwrap(),
            pod_bridge: format!("kt{slot}n{i}"),
            pod_cidr: format!("10.124.{slot}.{}/26", 64 * i),
            agent: None,
        };
        node.agent = Some(self.spawn_agent(&node));
        self.nodes.push(node);
    }

    fn spawn_agent(&self, node: &NodeSpec) -> Child {
        let c = &self.cluster;
        let join = c.join_token();
        // Its own hostname too (a UTS namespace), as a machine has: `sh` sets it and becomes
        // the agent, so the child is the agent itself.
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.netns))
            .args(["--", "unshare", "--uts", "--", "sh", "-c"])
            .arg("hostname \"$0\" && exec \"$@\"")
            .arg(&node.name)
            .arg(kumo_exe())
            .args(["agent", "--server", &c.url, "--join", &join])
            .args(["--ca-file", c.ca_file().to_str().unwrap()])
            .args(["--node-name", &node.name])
            .args(["--data-dir", node.data_dir.to_str().unwrap()])
            .args(["--listen", &format!("{}:10250", node.address)])
            .args(["--advertise-address", &node.address])
            .args(["--cgroup-parent", node.cgroup_parent.as_str()])
            .args(["--pod-bridge", &node.pod_bridge])
            .args(
                ["--pod-cidr", node.pod_cidr.as_str()]
                    .into_iter()
                    .filter(|_| self.options.pod_cidr_per_node),
            )
            .args(["--backoff-base", "200ms", "--heartbeat-interval", "1s"])
            .args(&self.options.agent_args)
            .env("RUST_LOG", "warn")
            .env("HOME", c.dir.path())
            .env_remove("KUMO_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn kumo agent")
    }

    /// Runs `kumo down` for node `i` in its namespace, as a person on that machine would.
    pub fn down(&mut self, i: usize) -> Output {
        let node = &self.nodes[i];
        let args = node.down_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = in_netns(&node.netns, kumo_exe().to_str().unwrap(), &args);
        // `kumo down` killed the agent (its command line names the data dir).
        self.nodes[i].reap_agent();
        out
    }
}

/// Waits until node `name` is Ready, polling the API (no watch on nodes in the client helper)
/// until a deadline.
pub async fn wait_node_ready(client: &kumo_client::Client, name: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(node)) = client.get_opt::<Node>("", name).await {
            let ready = node.status.as_ref().is_some_and(|s| {
                kumo_api::meta::find_condition(&s.conditions, "Ready")
                    .is_some_and(|c| c.status == kumo_api::ConditionStatus::True)
            });
            if ready {
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let node = client.get_opt::<Node>("", name).await;
            panic!("node {name} not Ready within {timeout:?}: {node:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes slot `slot`'s namespaces, their host veths and the datacenter bridge.
fn remove_fabric(slot: u32, bridge: &str, nodes: usize) {
    for i in 0..nodes {
        sh_quiet("ip", &["link", "del", &format!("kd{slot}n{i}")]);
        sh_quiet("ip", &["netns", "del", &format!("kumo-t{slot}-node{i}")]);
    }
    sh_quiet("ip", &["link", "del", bridge]);
}

impl Drop for MultiNode {
    fn drop(&mut self) {
        // The agents first (they would remake what is removed), then each node as `kumo down`
        // takes it (its processes, networks in its namespace, mounts, cgroups), then the
        // fabric; the control plane last, with the temp dir (Cluster's drop).
        for node in &mut self.nodes {
            node.reap_agent();
        }
        for node in &self.nodes {
            let args = node.down_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if Path::new(&format!("/run/netns/{}", node.netns)).exists() {
                let out = in_netns(&node.netns, kumo_exe().to_str().unwrap(), &args);
                if !out.status.success() {
                    eprintln!(
                        "kumo down for {}: {}",
                        node.name,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        for node in &self.nodes {
            sh_quiet("ip", &["link", "del", &node.host_veth]);
            sh_quiet("ip", &["netns", "del", &node.netns]);
        }
        // Every node the slot may hold: a start that failed half-way made more than it kept.
        remove_fabric(self.slot, &self.bridge, 3);
    }
}

/// How [`MultiNode::cut`] stops a node's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCut {
    /// SIGSTOP: the agent hangs, and goes on where it was when continued.
    Frozen,
    /// SIGKILL: the agent dies, and a new one starts from the node's data dir.
    Killed,
}

impl MultiNode {
    /// Cuts node `i` off, as a machine whose agent hangs or dies and whose network fails: its
    /// agent is stopped (`Frozen`: SIGSTOP; `Killed`: SIGKILL) while its containers run on, and
    /// its link to the datacenter bridge goes down. [`MultiNode::restore`] undoes both.
    pub fn cut(&mut self, i: usize, how: AgentCut) {
        let node = &mut self.nodes[i];
        match how {
            AgentCut::Frozen => {
                let pid = node.agent_pid().expect("the node's agent runs");
                sh("kill", &["-STOP", &pid.to_string()]);
            }
            AgentCut::Killed => node.reap_agent(),
        }
        sh("ip", &["link", "set", &node.host_veth, "down"]);
    }

    /// Brings node `i` back after [`MultiNode::cut`]: its link up, its agent continued (or
    /// started again, as before, when it was killed).
    pub fn restore(&mut self, i: usize) {
        sh("ip", &["link", "set", &self.nodes[i].host_veth, "up"]);
        match self.nodes[i].agent_pid() {
            Some(pid) => sh("kill", &["-CONT", &pid.to_string()]),
            None => {
                let agent = self.spawn_agent(&self.nodes[i]);
                self.nodes[i].agent = Some(agent);
            }
        }
    }

    /// Routes each node's pod CIDR on the host via the node's address (host-gw on the
    /// datacenter's gateway), so that the host (a router running there) reaches every pod.
    /// The routes go with the datacenter bridge. Needs a pod CIDR per agent.
    pub fn route_pods_from_host(&self) {
        assert!(self.options.pod_cidr_per_node, "needs a pod CIDR per agent");
        for node in &self.nodes {
            sh(
                "ip",
                &["route", "replace", &node.pod_cidr, "via", &node.address],
            );
        }
    }
}

impl MultiNode {
    /// Stops node `i`'s agent and starts it again as before (its data dir, credential, cgroup
    /// parent and bridge) but with `extra` flags in place of its `--pod-cidr`, expecting it to
    /// refuse to start; its stderr. Fails if it still runs after 30 s. The node is left without
    /// an agent.
    pub fn refused_restart(&mut self, i: usize, extra: &[&str]) -> String {
        self.nodes[i].reap_agent();
        let c = &self.cluster;
        let node = &self.nodes[i];
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.netns))
            .arg("--")
            .arg(kumo_exe())
            .args(["agent", "--server", &c.url, "--join", &c.join_token()])
            .args(["--ca-file", c.ca_file().to_str().unwrap()])
            .args(["--node-name", &node.name])
            .args(["--data-dir", node.data_dir.to_str().unwrap()])
            .args(["--listen", &format!("{}:10250", node.address)])
            .args(["--advertise-address", &node.address])
            .args(["--cgroup-parent", node.cgroup_parent.as_str()])
            .args(["--pod-bridge", &node.pod_bridge])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env("HOME", c.dir.path())
            .env_remove("KUMO_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kumo agent");
        expect_refusal(child, &format!("the agent with {extra:?}"))
    }
}
