//! Image layers on a node: containers of any user run from layers only root can reach, and no
//! local user reaches an image's files through the store or a running container's root.

use crate::harness::*;
use crate::pods::phase;
use kumo_api::PodPhase;
use kumo_image::testing::Registry;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn pod(name: &str, image: &str, runtime: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  runtimeClassName: {runtime}\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  securityContext: {{runAsUser: 1000, runAsGroup: 1000}}\n  containers:\n  - name: main\n    image: \"{image}\"\n    command: [\"/bin/busybox\", \"sh\", \"-c\", \"echo uid=$(id -u); /bin/busybox true && echo ran; exec sleep 60\"]\n"
    )
}

/// `stat PATH` as nobody (uid/gid 65534, no supplementary groups): Ok or its stderr.
fn stat_as_nobody(path: &Path) -> Result<(), String> {
    let out = std::process::Command::new("stat")
        .arg(path)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("stat");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_root_containers_run_from_layers_nobody_on_the_host_can_reach() {
    let registry = Registry::start().expect("docker-registry");
    let (image, _) = registry.push_busybox("layers:1").expect("push busybox");
    let c = Cluster::up(&[]);
    // The cluster's temp dir is 0700 on its own; open it up as /var/lib is, so that only the
    // store's own modes stand between a local user and the layers.
    std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let client = c.client();
    for (name, runtime) in [("as-user-runc", "runc"), ("as-user-gvisor", "runsc")] {
        c.apply(&format!("{name}.yaml"), &pod(name, &image, runtime));
    }
    for name in ["as-user-runc", "as-user-gvisor"] {
        let p = wait_pod(&client, "default", name, T, |p| {
            phase(p).is_some_and(|ph| ph == PodPhase::Running || ph.is_terminal())
        })
        .await;
        assert_eq!(
            phase(&p),
            Some(PodPhase::Running),
            "{name}: {:#?}",
            p.status
        );
        let deadline = Instant::now() + T;
        let mut out = String::new();
        while Instant::now() < deadline && !out.contains("ran\n") {
            out = String::from_utf8_lossy(&c.kumo(&["logs", name]).stdout).into_owned();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(out, "uid=1000\nran\n", "{name}");
    }

    // On the host: the data dir is open, the layers and the containers' roots are not.
    let data = c.data_dir();
    assert_eq!(
        stat_as_nobody(&data),
        Ok(()),
        "the control: nobody can stat the data dir"
    );
    let layers: Vec<PathBuf> = std::fs::read_dir(data.join("agent/images/layers"))
        .expect("the node's layers")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("bin/busybox").exists())
        .collect();
    let merged: Vec<PathBuf> = mounts_under(&data)
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.ends_with("merged"))
        .collect();
    assert!(!layers.is_empty(), "busybox's layer is in the store");
    assert_eq!(
        merged.len(),
        2,
        "one overlay root per container: {merged:?}"
    );
    for root in layers.iter().chain(&merged) {
        let busybox = root.join("bin/busybox");
        assert!(busybox.is_file(), "root sees {}", busybox.display());
        let e = stat_as_nobody(&busybox).unwrap_err();
        assert!(
            e.contains("Permission denied"),
            "{}: {e}",
            busybox.display()
        );
    }
}
