//! Volumes: `emptyDir` (on disk and `medium: Memory`) and allow-listed `hostPath`, mounted into
//! runc containers and into process containers (through a mount namespace of their own).

use crate::harness::*;
use crate::pods::phase;
use kumo_api::PodPhase;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn logs(c: &Cluster, pod: &str) -> String {
    String::from_utf8_lossy(&c.kumo(&["logs", pod]).stdout).into_owned()
}

fn volumes(host: &str) -> String {
    format!("  volumes:\n  - name: scratch\n    emptyDir: {{medium: Memory, sizeLimit: 8Mi}}\n  - name: disk\n    emptyDir: {{}}\n  - name: shared\n    hostPath: {{path: {host}, type: Directory}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_mount_into_runc_and_process_containers() {
    let registry = kumo_image::testing::Registry::start().expect("docker-registry");
    let (image, _) = registry.push_busybox("vol:1").expect("push busybox");
    let host = tempfile::tempdir().expect("host dir");
    let shared = host.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("greeting"), "hello from the host\n").unwrap();
    let shared = shared.display().to_string();
    let c = Cluster::up(&["--allow-host-path", &shared]);
    let client = c.client();

    // runc: the mounts are in the container's own root.
    let script = "cat /host/greeting; echo w > /scratch/f && cat /scratch/f; grep ' /scratch ' /proc/mounts | cut -d' ' -f3; touch /host/x 2>/dev/null && echo host-writable || echo host-read-only; echo d > /disk/f && cat /disk/f";
    c.apply("runc.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: vol-runc\nspec:\n  restartPolicy: Never\n{}  containers:\n  - name: main\n    image: \"{image}\"\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n    volumeMounts:\n    - {{name: scratch, mountPath: /scratch}}\n    - {{name: disk, mountPath: /disk}}\n    - {{name: shared, mountPath: /host, readOnly: true}}\n",
            volumes(&shared)
        ),
    );

    // process: the same, at paths of the host's file system seen only by the container.
    let mnt = host.path().join("mnt");
    let (scratch, disk, hostmnt) = (
        mnt.join("scratch").display().to_string(),
        mnt.join("disk").display().to_string(),
        mnt.join("host").display().to_string(),
    );
    let script = format!("cat {hostmnt}/greeting; echo w > {scratch}/f && cat {scratch}/f; grep ' {scratch} ' /proc/mounts | cut -d' ' -f3; touch {hostmnt}/x 2>/dev/null && echo host-writable || echo host-read-only; echo d > {disk}/f && cat {disk}/f; exec sleep 3600");
    c.apply("proc.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: vol-proc\nspec:\n  runtimeClassName: process\n  terminationGracePeriodSeconds: 1\n{}  containers:\n  - name: main\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n    volumeMounts:\n    - {{name: scratch, mountPath: {scratch}}}\n    - {{name: disk, mountPath: {disk}}}\n    - {{name: shared, mountPath: {hostmnt}, readOnly: true}}\n",
            volumes(&shared)
        ),
    );

    let p = wait_pod(&client, "default", "vol-runc", T, |p| {
        phase(p).is_some_and(|ph| ph.is_terminal())
    })
    .await;
    assert_eq!(phase(&p), Some(PodPhase::Succeeded), "{:#?}", p.status);
    let expected = "hello from the host\nw\ntmpfs\nhost-read-only\nd\n";
    assert_eq!(logs(&c, "vol-runc"), expected);

    wait_pod(&client, "default", "vol-proc", T, pod_ready).await;
    let deadline = tokio::time::Instant::now() + T;
    while logs(&c, "vol-proc") != expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logs(&c, "vol-proc"), expected);
    // The host sees none of it: the mounts live in the container's mount namespace.
    assert!(!Path::new(&scratch).join("f").exists());
    assert!(!Path::new(&hostmnt).join("greeting").exists());
    // `kumo exec` joins that namespace.
    let o = c.kumo(&[
        "exec",
        "vol-proc",
        "--",
        "/bin/cat",
        &format!("{scratch}/f"),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "w\n");

    // Deleting the pods removes their volumes and mounts.
    for name in ["vol-runc", "vol-proc"] {
        let o = c.kumo(&["delete", "pod", name, "--wait"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let deadline = tokio::time::Instant::now() + T;
    while !pod_mounts_under(c.dir.path()).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pod_mounts_under(c.dir.path()), Vec::<String>::new());
    assert_eq!(mounts_under(host.path()), Vec::<String>::new());
}

use std::path::Path;

/// Images no pod uses are collected once the disk is over the threshold (0% here, so always);
/// an image a pod uses stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_are_collected_above_the_disk_threshold() {
    let registry = kumo_image::testing::Registry::start().expect("docker-registry");
    let (busybox, _) = registry.push_busybox("gc-used:1").expect("push busybox");
    let layout = tempfile::tempdir().unwrap();
    kumo_image::testing::write_tiny_layout(layout.path(), "1", "unused").unwrap();
    let tiny = registry
        .push_layout(layout.path(), "1", "gc-unused")
        .expect("push tiny");
    let c = Cluster::up(&[
        "--image-gc-high-threshold",
        "0",
        "--image-gc-low-threshold",
        "0",
        "--image-gc-interval",
        "300ms",
        "--image-gc-min-age",
        "0s",
    ]);
    let client = c.client();
    c.apply("used.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: used\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: \"{busybox}\"\n    command: [\"/bin/sleep\", \"3600\"]\n"),
    );
    // The tiny image has no program: its pod fails, but the image was pulled for it.
    c.apply("unused.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: unused\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: \"{tiny}\"\n    command: [\"/hello\"]\n"),
    );
    wait_pod(&client, "default", "used", T, pod_ready).await;
    wait_pod(&client, "default", "unused", T, |p| {
        phase(p).is_some_and(|ph| ph.is_terminal())
    })
    .await;
    let data = c.data_dir().display().to_string();
    let images = || {
        let o = c.kumo(&["image", "ls", "--data-dir", &data]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // While its pod exists, even a failed one, the image is in use.
    assert!(images().contains("gc-unused"), "{}", images());
    let o = c.kumo(&["delete", "pod", "unused", "--wait"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = tokio::time::Instant::now() + T;
    while images().contains("gc-unused") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = images();
    assert!(!left.contains("gc-unused"), "{left}");
    assert!(left.contains("gc-used"), "the image in use stays: {left}");
}
