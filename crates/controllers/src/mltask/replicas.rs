//! The pod of each replica of an MLTask, with the distributed-training environment. Pure.

use kumo_api::keys::{
    format_attempt, format_rank, format_seconds, parse_rank, ANNOTATION_ATTEMPT,
    ANNOTATION_DATASET, ANNOTATION_DEADLINE, ANNOTATION_OUTPUT, ANNOTATION_SCRATCH,
    LABEL_GPU_MODEL, LABEL_RANK, LABEL_TASK,
};
use kumo_api::mltask::{MLTask, DEFAULT_MASTER_PORT};
use kumo_api::pod::{
    Container, EnvVar, HostPathType, HostPathVolumeSource, PodSpec, RestartPolicy, Volume,
    VolumeMount,
};
use kumo_api::{ObjectMeta, OwnerReference, Pod, Quantity, Resource, GPU_RESOURCE};
use std::collections::BTreeMap;

/// The container of a replica pod.
pub const CONTAINER: &str = "main";
/// Where a container replica finds `spec.data` (read-only).
pub const DATA_PATH: &str = "/data";
/// How long a replica gets to stop on cancel, preemption or a gang restart.
pub const GRACE_SECONDS: i64 = 10;

/// `NAME-RANK`.
pub fn pod_name(task: &str, rank: usize) -> String {
    format!("{task}-{rank}")
}

/// The rank of a replica pod, from its label.
pub fn rank_of(pod: &Pod) -> Option<usize> {
    parse_rank(pod.metadata.labels.get(LABEL_RANK)?)
}

/// Whether `pod` is a replica of `task` (same namespace, label, and owner uid when both have one).
pub fn belongs_to(pod: &Pod, task: &MLTask) -> bool {
    let owner_ok = match (&task.metadata.uid, pod.metadata.owner_references.first()) {
        (Some(uid), Some(owner)) => &owner.uid == uid,
        _ => true,
    };
    pod.metadata.ns() == task.metadata.ns()
        && pod.metadata.labels.get(LABEL_TASK) == Some(&task.metadata.name)
        && owner_ok
}

/// The port replicas rendezvous on.
pub fn master_port(task: &MLTask) -> u16 {
    task.spec.master_port.unwrap_or(DEFAULT_MASTER_PORT)
}

/// The environment every replica gets, in this order, after the task's own variables (so these
/// win): torch's and torchrun's names for the same facts, and the task's name.
pub fn replica_env(task: &MLTask, rank: usize, master_addr: &str) -> Vec<EnvVar> {
    let world = task.spec.parallelism.max(1).to_string();
    let port = master_port(task).to_string();
    let rank = rank.to_string();
    [
        ("RANK", rank.as_str()),
        ("WORLD_SIZE", world.as_str()),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", master_addr),
        ("MASTER_PORT", port.as_str()),
        ("PET_NNODES", world.as_str()),
        ("PET_NODE_RANK", rank.as_str()),
        ("PET_MASTER_ADDR", master_addr),
        ("PET_MASTER_PORT", port.as_str()),
        ("KUMO_TASK", task.metadata.name.as_str()),
    ]
    .into_iter()
    .map(|(name, value)| EnvVar {
        name: name.to_string(),
        value: value.to_string(),
    })
    .collect()
}

/// What one replica asks for: its requests as pod resource limits.
fn limits(task: &MLTask) -> BTreeMap<String, Quantity> {
    let r = &task.spec.resources;
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        limits.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(mem) = &r.memory {
        limits.insert("memory".to_string(), mem.clone());
    }
    if r.gpus > 0 {
        if let Ok(q) = Quantity::parse(&r.gpus.to_string()) {
            limits.insert(GPU_RESOURCE.to_string(), q);
        }
    }
    limits
}

/// What placement sees of every replica of `task`, bound to `node` when given: the requests,
/// node selector, runtime class, namespace and deadline, and nothing else (no name, labels or
/// environment). Admission looks at every waiting task on every pass, so this is what it
/// builds; [`replica_pod`] starts from it, so the two cannot disagree on placement.
pub fn placement_pod(task: &MLTask, node: Option<&str>) -> Pod {
    let spec = &task.spec;
    let mut node_selector = spec.node_selector.clone();
    if let Some(model) = &spec.resources.gpu_model {
        node_selector.insert(LABEL_GPU_MODEL.to_string(), model.clone());
    }
    let mut annotations = BTreeMap::new();
    if let Some(d) = spec.active_deadline_seconds {
        annotations.insert(ANNOTATION_DEADLINE.to_string(), format_seconds(d));
    }
    Pod {
        metadata: ObjectMeta {
            namespace: Some(task.metadata.ns().to_string()),
            annotations,
            ..Default::default()
        },
        spec: PodSpec {
            containers: vec![Container {
                name: CONTAINER.to_string(),
                resources: kumo_api::pod::ResourceRequirements {
                    requests: BTreeMap::new(),
                    limits: limits(task),
                },
                ..Default::default()
            }],
            restart_policy: RestartPolicy::Never,
            node_name: node.map(str::to_string),
            node_selector,
            runtime_class_name: spec.runtime_class_name.clone(),
            termination_grace_period_seconds: Some(GRACE_SECONDS),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Whether [`placement_pod`] makes the same pod of both tasks: what it reads of them is equal.
pub fn same_placement(a: &MLTask, b: &MLTask) -> bool {
    a.metadata.ns() == b.metadata.ns()
        && a.spec.resources == b.spec.resources
        && a.spec.node_selector == b.spec.node_selector
        && a.spec.runtime_class_name == b.spec.runtime_class_name
        && a.spec.active_deadline_seconds == b.spec.active_deadline_seconds
}

/// The pod of replica `rank`, bound to `node` when given (admission placed the whole gang).
pub fn replica_pod(
    task: &MLTask,
    rank: usize,
    node: Option<&str>,
    master_addr: &str,
    attempt: i32,
) -> Pod {
    let spec = &task.spec;
    let mut pod = placement_pod(task, node);
    let mut env = spec.env.clone();
    env.extend(replica_env(task, rank, master_addr));
    let labels = &mut pod.metadata.labels;
    labels.insert(LABEL_TASK.to_string(), task.metadata.name.clone());
    labels.insert(LABEL_RANK.to_string(), format_rank(rank));
    let annotations = &mut pod.metadata.annotations;
    annotations.insert(ANNOTATION_ATTEMPT.to_string(), format_attempt(attempt));
    // Datasets, output and scratch are directories of the replica's node: the agent makes them
    // and gives them to the container (see the agent's `task_data`).
    if let Some(name) = spec.data.as_ref().and_then(|d| d.dataset.clone()) {
        annotations.insert(ANNOTATION_DATASET.to_string(), name);
    }
    if let Some(out) = &spec.output {
        annotations.insert(ANNOTATION_OUTPUT.to_string(), out.path.clone());
    }
    if let Some(scratch) = &spec.scratch {
        let limit = scratch.size_limit.as_ref().map(|q| q.to_string());
        annotations.insert(ANNOTATION_SCRATCH.to_string(), limit.unwrap_or_default());
    }
    let owner = task.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: MLTask::api_version(),
        kind: MLTask::KIND.to_string(),
        name: task.metadata.name.clone(),
        uid,
        controller: Some(true),
    });
    pod.metadata.name = pod_name(&task.metadata.name, rank);
    pod.metadata.owner_references = owner.into_iter().collect();
    // Training data from a node directory, read-only at /data (containers only: a process
    // replica sees the host's file system and is given the directory itself as DATA_DIR).
    let process = spec.runtime_class_name.as_deref() == Some(kumo_api::pod::RUNTIME_PROCESS);
    if let Some(dir) = spec.data.as_ref().and_then(|d| d.host_path.clone()) {
        let data_dir = if process {
            dir.clone()
        } else {
            pod.spec.volumes.push(Volume {
                name: "data".into(),
                empty_dir: None,
                host_path: Some(HostPathVolumeSource {
                    path: dir,
                    type_: Some(HostPathType::Directory),
                }),
                node_dir: None,
            });
            pod.spec.containers[0].volume_mounts.push(VolumeMount {
                name: "data".into(),
                mount_path: DATA_PATH.into(),
                read_only: true,
            });
            DATA_PATH.to_string()
        };
        env.push(EnvVar {
            name: "DATA_DIR".into(),
            value: data_dir,
        });
    }
    let container = &mut pod.spec.containers[0];
    container.image = spec.image.clone();
    container.command = spec.command.clone();
    container.args = spec.args.clone();
    container.env = env;
    container.working_dir = spec.working_dir.clone();
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(spec: serde_json::Value) -> MLTask {
        let v = kumo_api::object::admit::<MLTask>(
            json!({"apiVersion": "kumo.dev/v1", "kind": "MLTask",
                   "metadata": {"name": "resnet", "namespace": "ml", "uid": "u1"}, "spec": spec}),
            true,
        )
        .unwrap();
        serde_json::from_value(v).unwrap()
    }

    fn env_of(pod: &Pod) -> Vec<String> {
        pod.spec.containers[0]
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect()
    }

    #[test]
    fn tasks_of_one_placement_make_one_placement_pod() {
        let base = json!({"runtimeClassName": "process", "command": ["python3", "train.py"],
                          "parallelism": 2, "resources": {"gpus": 1, "cpu": "1", "gpuModel": "H100"},
                          "nodeSelector": {"disk": "ssd"}, "activeDeadlineSeconds": 60, "priority": 1});
        let with = |key: &str, value: serde_json::Value| {
            let mut spec = base.clone();
            spec[key] = value;
            task(spec)
        };
        let a = task(base.clone());
        // What placement does not read may differ.
        let mut renamed = with("command", json!(["sh"]));
        renamed.metadata.name = "other".into();
        renamed.spec.priority = 7;
        assert!(same_placement(&a, &renamed));
        assert_eq!(placement_pod(&a, None), placement_pod(&renamed, None));
        // Each thing it reads tells them apart.
        let mut elsewhere = task(base.clone());
        elsewhere.metadata.namespace = Some("other".into());
        for b in [
            with(
                "resources",
                json!({"gpus": 2, "cpu": "1", "gpuModel": "H100"}),
            ),
            with(
                "resources",
                json!({"gpus": 1, "cpu": "1", "gpuModel": "A100"}),
            ),
            with("nodeSelector", json!({"disk": "hdd"})),
            {
                let mut spec = base.clone();
                spec["runtimeClassName"] = json!("runc");
                spec["image"] = json!("127.0.0.1:5000/train:1");
                task(spec)
            },
            with("activeDeadlineSeconds", json!(61)),
            elsewhere,
        ] {
            assert!(!same_placement(&a, &b), "{:?}", b.spec);
            assert_ne!(placement_pod(&a, None), placement_pod(&b, None));
        }
    }

    #[test]
    fn every_replica_gets_the_distributed_environment() {
        let t = task(
            json!({"runtimeClassName": "process", "command": ["python3", "train.py"],
                            "parallelism": 4, "env": [{"name": "LR", "value": "0.1"}, {"name": "RANK", "value": "9"}],
                            "resources": {"gpus": 2, "cpu": "1", "gpuModel": "H100"}, "activeDeadlineSeconds": 60}),
        );
        let p = replica_pod(&t, 2, Some("node-b"), "10.0.0.1", 3);
        assert_eq!(p.metadata.name, "resnet-2");
        assert_eq!(p.metadata.namespace.as_deref(), Some("ml"));
        assert_eq!(p.spec.node_name.as_deref(), Some("node-b"));
        assert_eq!(p.spec.restart_policy, RestartPolicy::Never);
        assert_eq!(p.spec.node_selector["kumo.dev/gpu-model"], "H100");
        assert_eq!(p.metadata.labels[LABEL_TASK], "resnet");
        assert_eq!(rank_of(&p), Some(2));
        assert_eq!(p.metadata.annotations[ANNOTATION_DEADLINE], "60");
        assert_eq!(p.metadata.annotations[ANNOTATION_ATTEMPT], "3");
        assert_eq!(p.metadata.owner_references[0].uid, "u1");
        assert_eq!(p.spec.request_millis(GPU_RESOURCE), 2000);
        assert_eq!(
            env_of(&p),
            [
                "LR=0.1",
                "RANK=9",
                "RANK=2",
                "WORLD_SIZE=4",
                "LOCAL_RANK=0",
                "MASTER_ADDR=10.0.0.1",
                "MASTER_PORT=29500",
                "PET_NNODES=4",
                "PET_NODE_RANK=2",
                "PET_MASTER_ADDR=10.0.0.1",
                "PET_MASTER_PORT=29500",
                "KUMO_TASK=resnet",
            ],
            "the injected variables come last, so they win over the task's own"
        );
        let mut errors = kumo_api::validation::Errors::default();
        kumo_api::pod::validate_pod_spec(&p.spec, &mut errors);
        assert!(errors.into_result().is_ok());
    }

    #[test]
    fn host_path_data_is_mounted_read_only_in_containers() {
        let t = task(json!({"image": "train:1", "data": {"hostPath": "/srv/data"}}));
        let p = replica_pod(&t, 0, None, "127.0.0.1", 1);
        assert_eq!(
            p.spec.volumes[0].host_path.as_ref().unwrap().path,
            "/srv/data"
        );
        let m = &p.spec.containers[0].volume_mounts[0];
        assert_eq!((m.mount_path.as_str(), m.read_only), ("/data", true));
        assert!(env_of(&p).contains(&"DATA_DIR=/data".to_string()));
        let mut errors = kumo_api::validation::Errors::default();
        kumo_api::pod::validate_pod_spec(&p.spec, &mut errors);
        assert!(errors.into_result().is_ok());

        let t = task(
            json!({"runtimeClassName": "process", "command": ["x"], "data": {"hostPath": "/srv/data"}}),
        );
        let p = replica_pod(&t, 0, None, "127.0.0.1", 1);
        assert!(p.spec.volumes.is_empty());
        assert!(env_of(&p).contains(&"DATA_DIR=/srv/data".to_string()));
    }

    #[test]
    fn datasets_output_and_scratch_are_annotated_for_the_node() {
        let t = task(json!({"image": "train:1", "data": {"dataset": "mnist"},
            "output": {"path": "models/a"}, "scratch": {"sizeLimit": "1Gi"}}));
        let p = replica_pod(&t, 0, Some("n1"), "10.0.0.1", 1);
        let a = &p.metadata.annotations;
        assert_eq!(a[ANNOTATION_DATASET], "mnist");
        assert_eq!(a[ANNOTATION_OUTPUT], "models/a");
        assert_eq!(a[ANNOTATION_SCRATCH], "1Gi");
        // The node adds the volumes; the pod names none itself.
        assert!(p.spec.volumes.is_empty());
        let t = task(json!({"image": "train:1", "scratch": {}}));
        let p = replica_pod(&t, 0, Some("n1"), "10.0.0.1", 1);
        assert_eq!(p.metadata.annotations[ANNOTATION_SCRATCH], "");
        assert!(!p.metadata.annotations.contains_key(ANNOTATION_OUTPUT));
    }

    #[test]
    fn zero_gpus_ask_for_none_and_ports_can_be_set() {
        let t = task(json!({"image": "train:1", "masterPort": 1234}));
        let p = replica_pod(&t, 0, None, "127.0.0.1", 1);
        assert!(p.spec.containers[0].resources.limits.is_empty());
        assert!(env_of(&p).contains(&"PET_MASTER_PORT=1234".to_string()));
        assert!(belongs_to(&p, &t));
        let mut other = t.clone();
        other.metadata.uid = Some("u2".into());
        assert!(
            !belongs_to(&p, &other),
            "a namesake task created later does not adopt old pods"
        );
    }
}
