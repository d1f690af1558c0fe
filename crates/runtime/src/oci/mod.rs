//! The OCI runtimes (`runc`, `runsc`): a [`Driver`] that writes a bundle per container run —
//! the image's root filesystem and a `config.json` from [`config::oci_config`] — and has the
//! shim `create` and `start` it; kills go through the runtime's `kill`.
//!
//! Per run, under the pod's directory of the runtime:
//!
//! ```text
//! <container>/rootfs/           where the image's root filesystem is mounted (kumo-image: overlay)
//! <container>/bundle/config.json
//! <container>/bundle/runtime.log the runtime's own log (its errors become StartError messages)
//! ```
//!
//! The runtime's container id is `<uid>_<container>_<restart count>` and its state lives under
//! `<data dir>/state` (`--root`), so a restarted agent finds its containers and no one else's.

pub mod cdi;
pub mod cli;
pub mod config;
pub mod gpu_devices;
pub mod seccomp;
pub mod user;

use super::driver::{Driver, Launch, Refusal, RunPaths};
use super::env::DEFAULT_PATH;
use super::RuntimeEvent;
use crate::cgroup::{memory_dir, remove_pod_everywhere};
use crate::cgroup_parent::CgroupParent;
use crate::error::RuntimeError;
use crate::gpus::GpuDevices;
use crate::gpus::CUDA_VISIBLE_DEVICES;
use crate::layout::Layout;
use crate::mounts::{remove_tree, unmount_all_under};
use crate::record::ContainerRecord;
use crate::rootfs::RootfsMounter;
use crate::sandbox::PodSandboxes;
use crate::shim::ShimArgs;
use crate::shim_runtime::{ShimCommand, ShimRuntime};
use crate::sys::Sys;
use cli::{container_id, is_of_pod, OciCli};
use config::{oci_config, Sandbox};
use kumo_api::Pod;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What an OCI runtime of the node needs.
pub struct OciRuntimeConfig {
    /// `runc` or `runsc`.
    pub class: &'static str,
    /// This runtime's directory (`<agent data dir>/<class>`).
    pub data_dir: PathBuf,
    /// The runtime binary and its global arguments; `root` is set from `data_dir`.
    pub binary: PathBuf,
    pub extra_args: Vec<String>,
    pub shim: ShimCommand,
    pub sys: Arc<dyn Sys>,
    pub images: Arc<dyn RootfsMounter>,
    pub sandboxes: Arc<dyn PodSandboxes>,
    pub allow_privileged: bool,
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The cgroup the pods' cgroups go under (`--cgroup-parent`).
    pub cgroup_parent: CgroupParent,
    /// The node's GPUs (their UUIDs name devices in CDI specs and `CUDA_VISIBLE_DEVICES`).
    pub gpus: Arc<dyn GpuDevices>,
    /// Where CDI specs are read, lowest priority first.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

/// Opens the OCI runtime, re-adopting the containers recorded under its data dir.
pub fn open(
    config: OciRuntimeConfig,
    events: mpsc::UnboundedSender<RuntimeEvent>,
) -> Result<ShimRuntime, RuntimeError> {
    let root = config.data_dir.join("state");
    std::fs::create_dir_all(&root).map_err(|e| RuntimeError::io(&root, e))?;
    // The seccomp profile is made once, reading the kernel's symbol table (about 50 ms of
    // system time): now, rather than in the first container's start.
    std::thread::spawn(|| {
        let _ = seccomp::default_profile();
    });
    let driver = OciDriver {
        class: config.class,
        layout: Layout::new(&config.data_dir),
        cli: OciCli {
            binary: config.binary,
            root,
            extra_args: config.extra_args,
        },
        images: config.images,
        sandboxes: config.sandboxes,
        allow_privileged: config.allow_privileged,
        cgroup_root: config.cgroup_root,
        cgroup_parent: config.cgroup_parent,
        sys: config.sys.clone(),
        gpus: config.gpus,
        cdi_spec_dirs: config.cdi_spec_dirs,
        seccomp_dir: config
            .data_dir
            .parent()
            .unwrap_or(&config.data_dir)
            .join("seccomp"),
    };
    ShimRuntime::with_driver(
        &config.data_dir,
        config.shim,
        config.sys,
        Arc::new(driver),
        events,
    )
}

pub struct OciDriver {
    class: &'static str,
    layout: Layout,
    cli: OciCli,
    images: Arc<dyn RootfsMounter>,
    sandboxes: Arc<dyn PodSandboxes>,
    allow_privileged: bool,
    cgroup_root: PathBuf,
    cgroup_parent: CgroupParent,
    /// Cgroups and mounts go through it.
    sys: Arc<dyn Sys>,
    gpus: Arc<dyn GpuDevices>,
    cdi_spec_dirs: Vec<PathBuf>,
    /// `Localhost` seccomp profiles: `<agent data dir>/seccomp`.
    seccomp_dir: PathBuf,
}

/// Reads a small file of the container's root filesystem, refusing symlinks (an image must not
/// make the agent read host files).
fn read_rootfs_file(rootfs: &Path, rel: &str) -> String {
    let path = rootfs.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() < 4 << 20 => {
            std::fs::read_to_string(&path).unwrap_or_default()
        }
        _ => String::new(),
    }
}

impl OciDriver {
    /// Gives the container its GPUs: what an installed CDI spec says for them, else their
    /// `/dev/nvidia*` nodes; and `CUDA_VISIBLE_DEVICES` as their UUIDs, which name the same
    /// devices whether CUDA numbers the container's GPUs from 0 or as the host does.
    fn add_gpus(&self, spec: &mut oci_spec::runtime::Spec, indices: &[u32]) -> Result<(), Refusal> {
        if indices.is_empty() {
            return Ok(());
        }
        let known = self.gpus.discover();
        let uuid = |i: u32| known.iter().find(|g| g.index == i).map(|g| g.uuid.clone());
        let names: Vec<Vec<String>> = indices
            .iter()
            .map(|&i| std::iter::once(i.to_string()).chain(uuid(i)).collect())
            .collect();
        let (specs, skipped) = cdi::load(&self.cdi_spec_dirs);
        for s in &skipped {
            tracing::warn!("{s}; skipped");
        }
        let resolved = cdi::resolve(&specs, &names).map_err(Refusal::StartError)?;
        match resolved {
            Some(r) => cdi::apply(spec, &r.edits).map_err(|e| {
                let files: Vec<String> = r.files.iter().map(|f| f.display().to_string()).collect();
                Refusal::StartError(format!("CDI spec {}: {e}", files.join(", ")))
            })?,
            None => {
                let wanted = gpu_devices::wanted_paths(indices);
                gpu_devices::add_devices(spec, &gpu_devices::host_nodes(&wanted))
                    .map_err(Refusal::StartError)?;
            }
        }
        let uuids: Option<Vec<String>> = indices.iter().map(|&i| uuid(i)).collect();
        if let (Some(uuids), Some(process)) = (uuids, spec.process_mut().as_mut()) {
            let env = process.env_mut().get_or_insert_with(Vec::new);
            let var = format!("{CUDA_VISIBLE_DEVICES}={}", uuids.join(","));
            cdi::set_env(env, var);
        }
        Ok(())
    }

    /// Writes, into the run's bundle, the container's own process spec with `command` as its
    /// arguments and a terminal; returns its path.
    fn terminal_process_spec(&self, bundle: &Path, command: &[String]) -> Result<PathBuf, String> {
        let config: serde_json::Value = std::fs::read(bundle.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the container's bundle has no readable config.json")?;
        let mut process = config
            .get("process")
            .cloned()
            .ok_or("the container's config.json has no process")?;
        process["args"] = serde_json::json!(command);
        process["terminal"] = serde_json::json!(true);
        let path = bundle.join(format!("exec-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, serde_json::to_vec(&process).unwrap_or_default())
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path)
    }

    fn rootfs_target(&self, uid: &str, container: &str) -> PathBuf {
        self.layout.container_dir(uid, container).join("rootfs")
    }

    fn bundle_dir(&self, uid: &str, container: &str) -> PathBuf {
        self.layout.container_dir(uid, container).join("bundle")
    }

    /// Unmounts and removes a run's root filesystem and bundle.
    async fn release_run(&self, uid: &str, container: &str) -> Result<(), String> {
        let target = self.rootfs_target(uid, container);
        let t0 = std::time::Instant::now();
        let mut first = self.images.unmount(&target).await.err();
        let t1 = t0.elapsed();
        for dir in [target, self.bundle_dir(uid, container)] {
            if let Err(e) = remove_tree(&*self.sys, &dir) {
                first.get_or_insert(e);
            }
        }
        tracing::debug!(
            uid,
            container,
            unmount_ms = t1.as_secs_f64() * 1000.0,
            total_ms = t0.elapsed().as_secs_f64() * 1000.0,
            "released"
        );
        first.map_or(Ok(()), Err)
    }

    async fn build(&self, pod: &Pod, index: usize, p: &RunPaths) -> Result<Launch, Refusal> {
        let c = &pod.spec.containers[index];
        let image = c
            .image
            .as_deref()
            .ok_or_else(|| Refusal::Config(format!("container {:?} has no image", c.name)))?;
        // Refusals that need nothing made come first.
        if self.class == kumo_api::pod::RUNTIME_RUNSC && !pod.spec.host_namespaces().is_empty() {
            return Err(Refusal::Config(format!(
                "runsc (gVisor) does not share the host's namespaces ({}); use runtimeClassName runc",
                pod.spec.host_namespaces().join(", ")
            )));
        }
        let localhost_seccomp =
            read_localhost_seccomp(&self.seccomp_dir, pod, c).map_err(Refusal::Config)?;
        let sandbox = self.sandboxes.get(&p.uid).ok_or_else(|| {
            Refusal::StartError("the pod's sandbox (network, volumes) is not ready".into())
        })?;
        let target = self.rootfs_target(&p.uid, &p.container);
        std::fs::create_dir_all(&target)
            .map_err(|e| Refusal::StartError(format!("create {}: {e}", target.display())))?;
        let rootfs = self.images.mount(image, &target).await.map_err(|e| {
            Refusal::StartError(format!("cannot make the root filesystem of {image:?}: {e}"))
        })?;
        let sb = Sandbox {
            localhost_seccomp,
            netns: sandbox.netns_path.clone(),
            etc_files: sandbox.etc_files.clone(),
            volumes: sandbox.volumes.clone(),
            cgroups_path: self.cgroup_parent.oci_path(&p.uid, &p.container),
            passwd: read_rootfs_file(&rootfs.path, "etc/passwd"),
            group: read_rootfs_file(&rootfs.path, "etc/group"),
            allow_privileged: self.allow_privileged,
            rootfs: rootfs.path,
        };
        let mut spec =
            oci_config(pod, index, &rootfs.config, &sb).map_err(|e| Refusal::Config(e.0))?;
        if self.class == kumo_api::pod::RUNTIME_RUNC {
            // gVisor reaches GPUs only through its nvproxy, which kumo does not set up.
            self.add_gpus(&mut spec, &gpu_devices::visible_devices(c))?;
        }
        let bundle = self.bundle_dir(&p.uid, &p.container);
        remove_tree(&*self.sys, &bundle).map_err(Refusal::StartError)?;
        std::fs::create_dir_all(&bundle)
            .map_err(|e| Refusal::StartError(format!("create {}: {e}", bundle.display())))?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| Refusal::StartError(format!("write the bundle's config.json: {e}")))?;
        let id = container_id(&p.uid, &p.container, p.restart_count);
        // A run of this id left behind by a crash would make `run` fail. Asking the runtime's
        // state directory first spares a runtime process per start when there is none.
        if self.cli.ids().contains(&id) {
            let _ = self.cli.delete(&id).await;
        }
        Ok(Launch {
            shim: ShimArgs {
                exit_file: p.exit_file.clone(),
                log_file: p.log_file.clone(),
                pid_file: p.pid_file.clone(),
                cgroups: vec![memory_dir(
                    &*self.sys,
                    &self.cgroup_root,
                    &self.cgroup_parent,
                    &p.uid,
                    &p.container,
                )],
                runtime: Some(self.cli.binary.clone()),
                runtime_args: self.cli.global_args(),
                bundle: Some(bundle),
                id: Some(id.clone()),
                // One runc process instead of two; runsc keeps create/start (its `run` differs).
                run_detached: self.class == kumo_api::pod::RUNTIME_RUNC,
                binds: Vec::new(),
                command: Vec::new(),
            },
            env: vec![("PATH".to_string(), DEFAULT_PATH.to_string())],
            cwd: p.container_dir.clone(),
            runtime_id: Some(format!("{}://{id}", self.class)),
            oom_kills_at_start: None,
        })
    }
}

#[async_trait::async_trait]
impl Driver for OciDriver {
    fn class(&self) -> &'static str {
        self.class
    }

    async fn prepare(&self, pod: &Pod, index: usize, p: &RunPaths) -> Result<Launch, Refusal> {
        if index >= pod.spec.containers.len() {
            return Err(Refusal::StartError(format!("no container {index}")));
        }
        let built = self.build(pod, index, p).await;
        if built.is_err() {
            // Bad input leaves no half-made bundle or mount behind.
            if let Err(e) = self.release_run(&p.uid, &p.container).await {
                tracing::warn!(uid = %p.uid, container = %p.container, error = %e, "cannot undo a half-made bundle");
            }
        }
        built
    }

    async fn signal(&self, record: &ContainerRecord, signal: Signal) {
        let Some(id) = record
            .runtime_id
            .as_deref()
            .and_then(|r| r.split_once("://"))
            .map(|(_, id)| id)
        else {
            return;
        };
        if let Err(e) = self.cli.kill(id, signal.as_str()).await {
            tracing::debug!(id, error = %e, "runtime kill failed (the container may have exited)");
        }
    }

    fn exec(
        &self,
        pod: &Pod,
        index: usize,
        record: &ContainerRecord,
        _work_dir: &Path,
        command: &[String],
        tty: bool,
    ) -> Result<crate::ExecSpec, String> {
        let id = record
            .runtime_id
            .as_deref()
            .and_then(|r| r.split_once("://"))
            .map(|(_, id)| id.to_string())
            .ok_or("the container has no runtime id")?;
        // The runtime runs the command with the container's own environment, user and cwd.
        let mut argv = vec![self.cli.binary.display().to_string()];
        argv.extend(self.cli.global_args());
        argv.push("exec".into());
        if tty && self.class == kumo_api::pod::RUNTIME_RUNSC {
            // runsc's exec has no --tty: a process spec with `terminal: true` makes it use its
            // own stdin (the session's terminal) as the process's terminal.
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let container = pod
                .spec
                .containers
                .get(index)
                .map(|c| c.name.as_str())
                .unwrap_or_default();
            let file = self.terminal_process_spec(&self.bundle_dir(uid, container), command)?;
            argv.push("--process".into());
            argv.push(file.display().to_string());
            argv.push(id);
        } else {
            if tty {
                argv.push("--tty".into());
            }
            argv.push(id);
            argv.extend(command.iter().cloned());
        }
        Ok(crate::ExecSpec {
            argv,
            ..Default::default()
        })
    }

    async fn release(&self, uid: &str, container: &str) {
        if let Err(e) = self.release_run(uid, container).await {
            tracing::warn!(uid, container, error = %e, "cannot release a container's root filesystem");
        }
    }

    async fn cleanup(&self, uid: &str) -> Result<(), RuntimeError> {
        let mut first: Option<String> = None;
        // The shim runs `delete` detached once a container ended; one may still be running, and
        // the runtime removes the container's cgroups only when it is done. Wait for the
        // runtime's records of this pod to go (deleting again, which is idempotent), so the
        // pod's cgroups can be removed below.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let left: Vec<String> = self
                .cli
                .ids()
                .into_iter()
                .filter(|id| is_of_pod(id, uid))
                .collect();
            if left.is_empty() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                first.get_or_insert(format!("{} still holds {left:?} after delete", self.class));
                break;
            }
            for id in &left {
                if let Err(e) = self.cli.delete(id).await {
                    tracing::debug!(id, error = %e, "runtime delete");
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let pod_dir = self.layout.pod_dir(uid);
        for entry in std::fs::read_dir(&pod_dir).into_iter().flatten().flatten() {
            let target = entry.path().join("rootfs");
            if target.exists() {
                if let Err(e) = self.images.unmount(&target).await {
                    first.get_or_insert(e);
                }
            }
        }
        if pod_dir.exists() {
            if let Err(e) = unmount_all_under(&*self.sys, &pod_dir) {
                first.get_or_insert(e);
            }
        }
        remove_pod_everywhere(&*self.sys, &self.cgroup_root, &self.cgroup_parent, uid);
        match first {
            None => Ok(()),
            Some(e) => Err(RuntimeError::Shim(e)),
        }
    }
}

/// The node's seccomp file a container's `Localhost` profile names (`<agent dir>/seccomp/<name>`,
/// an OCI `linux.seccomp` object), if its profile is one; else why it cannot be had.
fn read_localhost_seccomp(
    dir: &std::path::Path,
    pod: &Pod,
    c: &kumo_api::pod::Container,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, String> {
    let profile = kumo_api::pod::SecurityContext::effective_seccomp(
        c.security_context.as_ref(),
        pod.spec.security_context.as_ref(),
    );
    let Some(name) = profile
        .localhost_profile
        .filter(|_| profile.type_ == kumo_api::pod::SeccompProfileType::Localhost)
    else {
        return Ok(None);
    };
    // Validation keeps the name relative and free of '..'; the directory is the node's.
    let path = dir.join(&name);
    let text = std::fs::read(&path).map_err(|e| {
        format!(
            "seccomp profile {name:?}: cannot read {}: {e}",
            path.display()
        )
    })?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        format!(
            "seccomp profile {name:?} ({}) is not an OCI seccomp object: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod localhost_seccomp_tests {
    use super::*;

    #[test]
    fn localhost_profiles_are_read_from_the_nodes_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("log.json"),
            r#"{"defaultAction": "SCMP_ACT_LOG"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.json"), "not json").unwrap();
        let read = |profile: serde_json::Value| {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i",
                         "securityContext": {"seccompProfile": profile}}]}}))
            .unwrap();
            read_localhost_seccomp(dir.path(), &pod, &pod.spec.containers[0])
                .map(|s| s.map(|s| s.default_action()))
                .map_err(|e| e.replace(&dir.path().display().to_string(), "D"))
        };
        use oci_spec::runtime::LinuxSeccompAction;
        assert_eq!(
            read(serde_json::json!({"type": "RuntimeDefault"})),
            Ok(None)
        );
        assert_eq!(
            read(serde_json::json!({"type": "Localhost", "localhostProfile": "log.json"})),
            Ok(Some(LinuxSeccompAction::ScmpActLog))
        );
        let missing =
            read(serde_json::json!({"type": "Localhost", "localhostProfile": "none.json"}));
        assert!(
            missing
                .as_ref()
                .unwrap_err()
                .starts_with("seccomp profile \"none.json\": cannot read D/none.json:"),
            "{missing:?}"
        );
        let bad = read(serde_json::json!({"type": "Localhost", "localhostProfile": "bad.json"}));
        assert!(
            bad.as_ref().unwrap_err().starts_with(
                "seccomp profile \"bad.json\" (D/bad.json) is not an OCI seccomp object:"
            ),
            "{bad:?}"
        );
    }
}
