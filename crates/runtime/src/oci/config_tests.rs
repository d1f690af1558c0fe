//! `oci_config` as data: pods in, runtime configs out.

use super::*;
use crate::fixtures::pod;
use kumo_api::pod::{Capabilities, EnvVar, PodSecurityContext, SecurityContext, VolumeMount};
use kumo_api::{Quantity, RestartPolicy};
use oci_spec::runtime::LinuxNamespaceType;

fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
    ImageConfig {
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/image/bin".into(), "LANG=C.UTF-8".into()],
        working_dir: Some("/srv".into()),
        user: None,
    }
}

fn sandbox() -> Sandbox {
    Sandbox {
        rootfs: "/d/rootfs".into(),
        netns: Some("/run/kumo/netns/uid-1".into()),
        etc_files: vec![("/etc/hosts".into(), "/d/etc/hosts".into())],
        volumes: [("data".to_string(), PathBuf::from("/d/volumes/data"))].into(),
        cgroups_path: "/kumo/uid-1/c".into(),
        passwd: "root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/:/bin/sh\n".into(),
        group: "root:x:0:\n".into(),
        allow_privileged: false,
        localhost_seccomp: None,
    }
}

fn oci_pod(edit: impl FnOnce(&mut Container)) -> Pod {
    let mut p = pod(RestartPolicy::Never, &["c"]);
    p.spec.runtime_class_name = None;
    let c = &mut p.spec.containers[0];
    c.command.clear();
    c.image = Some("busybox".into());
    edit(c);
    p
}

fn config(p: &Pod, img: &ImageConfig) -> Spec {
    oci_config(p, 0, img, &sandbox()).expect("config")
}

fn refusal(p: &Pod, img: &ImageConfig, sb: &Sandbox) -> String {
    oci_config(p, 0, img, sb).expect_err("refused").0
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn command_and_args_follow_kubernetes_rules() {
    let img = image(&["/entry"], &["--cmd"]);
    let cases: [(&[&str], &[&str], &[&str]); 4] = [
        (&[], &[], &["/entry", "--cmd"]),
        (&[], &["--arg"], &["/entry", "--arg"]),
        (&["/bin/sh"], &[], &["/bin/sh"]),
        (&["/bin/sh"], &["-c", "x"], &["/bin/sh", "-c", "x"]),
    ];
    for (command, args, expected) in cases {
        let p = oci_pod(|c| {
            c.command = strings(command);
            c.args = strings(args);
        });
        let spec = config(&p, &img);
        let got = spec.process().as_ref().and_then(|p| p.args().clone());
        assert_eq!(got, Some(strings(expected)), "{command:?} {args:?}");
    }
    let p = oci_pod(|_| {});
    assert!(refusal(&p, &image(&[], &[]), &sandbox()).starts_with("no command specified"));
}

#[test]
fn env_is_image_then_path_then_hostname_then_pod() {
    let p = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.env = vec![
            EnvVar {
                name: "LANG".into(),
                value: "en".into(),
            },
            EnvVar {
                name: "X".into(),
                value: "1".into(),
            },
        ];
    });
    let spec = config(&p, &image(&[], &[]));
    assert_eq!(
        spec.process().as_ref().and_then(|p| p.env().clone()),
        Some(strings(&[
            "PATH=/image/bin",
            "LANG=en",
            "HOSTNAME=p",
            "X=1"
        ]))
    );
    let mut bare = image(&[], &[]);
    bare.env.clear();
    let spec = config(&p, &bare);
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
}

#[test]
fn working_dir_user_and_hostname() {
    let p = oci_pod(|c| c.command = strings(&["sh"]));
    let spec = config(&p, &image(&[], &[]));
    let process = spec.process().clone().expect("process");
    assert_eq!(process.cwd(), &PathBuf::from("/srv"));
    assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
    assert_eq!(spec.hostname().as_deref(), Some("p"));

    let p = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.working_dir = Some("/work".into());
    });
    let mut img = image(&[], &[]);
    img.user = Some("web".into());
    let process = config(&p, &img).process().clone().expect("process");
    assert_eq!(process.cwd(), &PathBuf::from("/work"));
    assert_eq!((process.user().uid(), process.user().gid()), (1000, 1000));

    // The pod's context applies; the container's wins.
    let mut p = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.security_context = Some(SecurityContext {
            run_as_group: Some(7),
            ..Default::default()
        });
    });
    p.spec.security_context = Some(PodSecurityContext {
        run_as_user: Some(4242),
        run_as_group: Some(5),
        ..Default::default()
    });
    let process = config(&p, &img).process().clone().expect("process");
    assert_eq!((process.user().uid(), process.user().gid()), (4242, 7));
}

#[test]
fn run_as_non_root_refuses_a_root_image() {
    let mut p = oci_pod(|c| c.command = strings(&["sh"]));
    p.spec.security_context = Some(PodSecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    assert_eq!(
        refusal(&p, &image(&[], &[]), &sandbox()),
        "container has runAsNonRoot and image will run as root (pod: \"default/p\", container: c)"
    );
    let mut img = image(&[], &[]);
    img.user = Some("1000".into());
    assert!(oci_config(&p, 0, &img, &sandbox()).is_ok());
    img.user = Some("ghost".into());
    assert_eq!(
        refusal(&p, &img, &sandbox()),
        "unable to find user ghost: no matching entries in passwd file"
    );
}

fn caps_of(p: &Pod) -> Vec<String> {
    let spec = config(p, &image(&[], &[]));
    let caps = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .expect("capabilities");
    let mut names: Vec<String> = caps
        .effective()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_string())
        .collect();
    names.sort();
    assert_eq!(caps.bounding(), caps.effective());
    assert_eq!(caps.inheritable().as_ref().map(|s| s.len()), Some(0));
    names
}

fn with_caps(add: &[&str], drop: &[&str]) -> Pod {
    oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.security_context = Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: strings(add),
                drop: strings(drop),
            }),
            ..Default::default()
        });
    })
}

#[test]
fn capabilities_are_the_default_set_adjusted() {
    let defaults = caps_of(&oci_pod(|c| c.command = strings(&["sh"])));
    assert_eq!(defaults.len(), 14);
    assert!(defaults.contains(&"NET_RAW".to_string()));
    assert!(!defaults.contains(&"SYS_ADMIN".to_string()));

    let got = caps_of(&with_caps(
        &["NET_ADMIN", "cap_sys_time"],
        &["NET_RAW", "CAP_KILL"],
    ));
    assert_eq!(got.len(), 14);
    assert!(got.contains(&"NET_ADMIN".to_string()) && got.contains(&"SYS_TIME".to_string()));
    assert!(!got.contains(&"NET_RAW".to_string()) && !got.contains(&"KILL".to_string()));

    assert_eq!(
        caps_of(&with_caps(&["NET_BIND_SERVICE"], &["ALL"])),
        strings(&["NET_BIND_SERVICE"])
    );
    assert_eq!(caps_of(&with_caps(&[], &["ALL"])), Vec::<String>::new());
    let all_but_chown = caps_of(&with_caps(&["ALL"], &["CHOWN"]));
    assert_eq!(all_but_chown.len(), CAPABILITY_NAMES.len() - 1);
    assert!(!all_but_chown.contains(&"CHOWN".to_string()));
}

#[test]
fn no_new_privs_readonly_root_and_privileged() {
    let p = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        });
    });
    let spec = config(&p, &image(&[], &[]));
    assert_eq!(
        spec.process().as_ref().and_then(|p| p.no_new_privileges()),
        Some(true)
    );
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
    let plain = config(&oci_pod(|c| c.command = strings(&["sh"])), &image(&[], &[]));
    assert_eq!(
        plain.process().as_ref().and_then(|p| p.no_new_privileges()),
        Some(false)
    );
    assert_eq!(
        plain.root().as_ref().and_then(|r| r.readonly()),
        Some(false)
    );
    let linux = plain.linux().clone().expect("linux");
    assert!(linux.seccomp().is_some());
    assert_eq!(
        linux.masked_paths().as_ref().map(Vec::len),
        Some(MASKED_PATHS.len())
    );
    assert_eq!(
        linux.readonly_paths().as_ref().map(Vec::len),
        Some(READONLY_PATHS.len())
    );

    let privileged = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
    });
    assert_eq!(
        refusal(&privileged, &image(&[], &[]), &sandbox()),
        "container \"c\" is privileged, and this node does not allow privileged containers (start the agent with --allow-privileged)"
    );
    let sb = Sandbox {
        allow_privileged: true,
        ..sandbox()
    };
    let spec = oci_config(&privileged, 0, &image(&[], &[]), &sb).expect("allowed");
    let linux = spec.linux().clone().expect("linux");
    assert!(linux.seccomp().is_none());
    assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(0));
}

#[test]
fn namespaces_mounts_and_volumes() {
    let p = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.volume_mounts = vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            read_only: true,
        }];
    });
    let spec = config(&p, &image(&[], &[]));
    let linux = spec.linux().clone().expect("linux");
    let ns: Vec<(LinuxNamespaceType, Option<PathBuf>)> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect();
    assert_eq!(
        ns,
        vec![
            (LinuxNamespaceType::Pid, None),
            (LinuxNamespaceType::Ipc, None),
            (LinuxNamespaceType::Uts, None),
            (LinuxNamespaceType::Mount, None),
            (
                LinuxNamespaceType::Network,
                Some("/run/kumo/netns/uid-1".into())
            ),
        ]
    );
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(std::path::Path::new("/kumo/uid-1/c"))
    );
    let mounts: Vec<(String, Option<String>, Vec<String>)> = spec
        .mounts()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m.destination().display().to_string(),
                m.source().as_ref().map(|s| s.display().to_string()),
                m.options().clone().unwrap_or_default(),
            )
        })
        .collect();
    let dests: Vec<&str> = mounts.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hosts",
            "/data"
        ]
    );
    assert!(mounts[5].2.contains(&"ro".to_string()), "/sys is read-only");
    assert_eq!(
        mounts[8],
        (
            "/data".to_string(),
            Some("/d/volumes/data".to_string()),
            strings(&["rbind", "rprivate", "ro"])
        )
    );

    let unknown = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.volume_mounts = vec![VolumeMount {
            name: "nope".into(),
            mount_path: "/x".into(),
            read_only: false,
        }];
    });
    assert_eq!(
        refusal(&unknown, &image(&[], &[]), &sandbox()),
        "volumeMounts[0]: volume \"nope\" is not prepared on this node"
    );
}

#[test]
fn resources_become_linux_resources() {
    let p = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.resources
            .limits
            .insert("memory".into(), Quantity::parse("32Mi").expect("q"));
        c.resources
            .limits
            .insert("cpu".into(), Quantity::parse("500m").expect("q"));
        c.resources
            .requests
            .insert("cpu".into(), Quantity::parse("250m").expect("q"));
    });
    let spec = config(&p, &image(&[], &[]));
    let res = spec
        .linux()
        .clone()
        .and_then(|l| l.resources().clone())
        .expect("resources");
    assert_eq!(
        res.memory().as_ref().and_then(|m| m.limit()),
        Some(32 << 20)
    );
    let cpu = res.cpu().clone().expect("cpu");
    assert_eq!(
        (cpu.quota(), cpu.period(), cpu.shares()),
        (Some(50_000), Some(100_000), Some(256))
    );
    assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(PIDS_LIMIT));

    let none = config(&oci_pod(|c| c.command = strings(&["sh"])), &image(&[], &[]));
    let res = none
        .linux()
        .clone()
        .and_then(|l| l.resources().clone())
        .expect("resources");
    assert!(res.memory().is_none() && res.cpu().is_none());
}

#[test]
fn a_memory_limit_too_small_to_start_is_refused() {
    let tiny = oci_pod(|c| {
        c.command = strings(&["sh"]);
        c.resources
            .limits
            .insert("memory".into(), Quantity::parse("1Mi").expect("q"));
    });
    assert_eq!(
        refusal(&tiny, &image(&[], &[]), &sandbox()),
        "container \"c\": memory limit 1Mi is below the 6Mi an OCI container needs to start"
    );
}

#[test]
fn host_namespaces_need_a_node_that_allows_them() {
    let mut p = oci_pod(|c| c.command = strings(&["sh"]));
    p.spec.host_network = Some(true);
    p.spec.host_pid = Some(true);
    assert_eq!(
        refusal(&p, &image(&[], &[]), &sandbox()),
        "the pod shares the host's namespaces (hostNetwork, hostPID), and this node does not allow host access (start the agent with --allow-privileged)"
    );
    let sb = Sandbox {
        allow_privileged: true,
        ..sandbox()
    };
    let spec = oci_config(&p, 0, &image(&[], &[]), &sb).expect("allowed");
    let types: Vec<LinuxNamespaceType> = spec
        .linux()
        .clone()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .map(|n| n.typ())
        .collect();
    // The host's network, PID and UTS namespaces; the pod's own IPC and mount namespaces.
    assert_eq!(types, [LinuxNamespaceType::Ipc, LinuxNamespaceType::Mount]);
    assert_eq!(spec.hostname(), &None);
}

#[test]
fn seccomp_profile_types() {
    use kumo_api::pod::{PodSecurityContext, SeccompProfile, SeccompProfileType};
    let profile = |t, file: Option<&str>| SeccompProfile {
        type_: t,
        localhost_profile: file.map(str::to_string),
    };
    let with = |pod_level: Option<SeccompProfile>, own: Option<SeccompProfile>| {
        let mut p = oci_pod(|c| {
            c.command = strings(&["sh"]);
            c.security_context = Some(SecurityContext {
                seccomp_profile: own,
                ..Default::default()
            });
        });
        p.spec.security_context = Some(PodSecurityContext {
            seccomp_profile: pod_level,
            ..Default::default()
        });
        p
    };
    let seccomp = |p: &Pod, sb: &Sandbox| {
        oci_config(p, 0, &image(&[], &[]), sb)
            .map(|s| s.linux().clone().and_then(|l| l.seccomp().clone()))
    };
    // Unset and RuntimeDefault: the default profile; Unconfined (the container's own setting
    // winning over the pod's): none.
    let default = seccomp(&with(None, None), &sandbox()).unwrap();
    assert!(default.is_some());
    assert_eq!(
        seccomp(
            &with(
                None,
                Some(profile(SeccompProfileType::RuntimeDefault, None))
            ),
            &sandbox()
        )
        .unwrap(),
        default
    );
    let unconfined = with(
        Some(profile(SeccompProfileType::RuntimeDefault, None)),
        Some(profile(SeccompProfileType::Unconfined, None)),
    );
    assert_eq!(seccomp(&unconfined, &sandbox()).unwrap(), None);
    // Localhost: the file the driver read, or a refusal when it has none.
    let local = with(
        Some(profile(SeccompProfileType::Localhost, Some("audit.json"))),
        None,
    );
    assert_eq!(
        seccomp(&local, &sandbox()).unwrap_err().0,
        "container \"c\": the Localhost seccomp profile \"audit.json\" was not loaded"
    );
    let file: oci_spec::runtime::LinuxSeccomp =
        serde_json::from_str(r#"{"defaultAction": "SCMP_ACT_LOG"}"#).unwrap();
    let sb = Sandbox {
        localhost_seccomp: Some(file.clone()),
        ..sandbox()
    };
    assert_eq!(seccomp(&local, &sb).unwrap(), Some(file));
}
