//! Pod Security Standards: the `privileged`, `baseline` and `restricted` levels a namespace
//! enforces through its `pod-security.kubernetes.io/enforce` label, checked at pod admission
//! with the standard's own rules (Kubernetes 1.32, "latest"), plus kumo's `process` runtime,
//! which is host access and is allowed only at `privileged`. Pure.

use crate::pod::{
    canonical_capability, Container, PodSpec, SeccompProfileType, SecurityContext, RUNTIME_PROCESS,
};
use crate::validation::{Errors, FieldError};
use std::collections::BTreeMap;
use std::fmt;

/// The namespace label that sets the level pods there are held to.
pub const LABEL_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
/// The namespace label naming the standard's version; kumo knows only `latest`.
pub const LABEL_ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";

/// A Pod Security Standards level, from most to least permissive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    /// What a namespace without the label gets.
    #[default]
    Baseline,
    Restricted,
}

impl Level {
    pub const NAMES: [&'static str; 3] = ["privileged", "baseline", "restricted"];

    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        Level::NAMES[self as usize]
    }

    /// The level a namespace with these labels enforces (`baseline` without the label; a bad
    /// value cannot be stored, see [`validate_namespace_labels`], but reads as `restricted`).
    pub fn of_namespace(labels: &BTreeMap<String, String>) -> Level {
        match labels.get(LABEL_ENFORCE) {
            None => Level::Baseline,
            Some(v) => Level::parse(v).unwrap_or(Level::Restricted),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pod-security labels of a namespace are values the standard knows.
pub fn validate_namespace_labels(labels: &BTreeMap<String, String>, errors: &mut Errors) {
    for mode in ["enforce", "audit", "warn"] {
        let key = format!("pod-security.kubernetes.io/{mode}");
        if let Some(v) = labels.get(&key) {
            if Level::parse(v).is_none() {
                errors.add(
                    format!("metadata.labels.{key}"),
                    format!("Unsupported value: {v:?}: supported values: \"privileged\", \"baseline\", \"restricted\""),
                );
            }
        }
        let key = format!("{key}-version");
        if let Some(v) = labels.get(&key) {
            if v != "latest" && !is_k8s_version(v) {
                errors.add(
                    format!("metadata.labels.{key}"),
                    format!("Invalid value: {v:?}: must be \"latest\" or a version like \"v1.32\""),
                );
            }
        }
    }
}

fn is_k8s_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("v1.") else {
        return false;
    };
    !rest.is_empty() && rest.len() <= 3 && rest.bytes().all(|b| b.is_ascii_digit())
}

/// Capabilities a `baseline` container may add (the standard's list).
pub const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Every rule of `level` the pod breaks, each with its field path; empty when it may run.
pub fn check(spec: &PodSpec, level: Level) -> Vec<FieldError> {
    let mut out = Errors::default();
    if level == Level::Privileged {
        return Vec::new();
    }
    baseline(spec, &mut out);
    if level == Level::Restricted {
        restricted(spec, &mut out);
    }
    out.0
}

/// The message of a refusal, in Kubernetes' words: `violates PodSecurity "baseline:latest":
/// spec.hostNetwork: host namespaces (hostNetwork=true); ...`.
pub fn refusal(level: Level, violations: &[FieldError]) -> String {
    let list: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.path, v.message))
        .collect();
    format!(
        "violates PodSecurity \"{level}:latest\": {} (the namespace's {LABEL_ENFORCE} label sets the level)",
        list.join("; ")
    )
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = (String, &Container)> {
    spec.containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.containers[{i}]"), c))
}

fn baseline(spec: &PodSpec, out: &mut Errors) {
    if spec.runtime_class_name.as_deref() == Some(RUNTIME_PROCESS) {
        out.add(
            "spec.runtimeClassName",
            "host process runtime (runtimeClassName \"process\" runs containers as host processes with the node agent's privileges)",
        );
    }
    for (field, on) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if on == Some(true) {
            out.add(
                format!("spec.{field}"),
                format!("host namespaces ({field}=true)"),
            );
        }
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        if v.host_path.is_some() {
            out.add(
                format!("spec.volumes[{i}].hostPath"),
                format!("hostPath volumes (volume {:?})", v.name),
            );
        }
    }
    let pod_sc = spec.security_context.as_ref();
    if pod_sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .is_some_and(|p| p.type_ == SeccompProfileType::Unconfined)
    {
        out.add(
            "spec.securityContext.seccompProfile.type",
            "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
        );
    }
    for (path, c) in containers(spec) {
        let name = &c.name;
        let sc = c.security_context.as_ref();
        if sc.and_then(|s| s.privileged) == Some(true) {
            out.add(
                format!("{path}.securityContext.privileged"),
                format!(
                    "privileged (container {name:?} must not set securityContext.privileged=true)"
                ),
            );
        }
        if let Some(caps) = sc.and_then(|s| s.capabilities.as_ref()) {
            for (j, cap) in caps.add.iter().enumerate() {
                let canonical = canonical_capability(cap).unwrap_or_else(|| cap.clone());
                if !BASELINE_CAPABILITIES.contains(&canonical.as_str()) {
                    out.add(
                        format!("{path}.securityContext.capabilities.add[{j}]"),
                        format!("non-default capabilities (container {name:?} must not include {cap:?} in securityContext.capabilities.add)"),
                    );
                }
            }
        }
        for (j, p) in c.ports.iter().enumerate() {
            if let Some(port) = p.host_port.filter(|p| *p != 0) {
                out.add(
                    format!("{path}.ports[{j}].hostPort"),
                    format!("hostPort (container {name:?} uses hostPort {port})"),
                );
            }
        }
        if sc
            .and_then(|s| s.seccomp_profile.as_ref())
            .is_some_and(|p| p.type_ == SeccompProfileType::Unconfined)
        {
            out.add(
                format!("{path}.securityContext.seccompProfile.type"),
                format!("seccompProfile (container {name:?} must not set securityContext.seccompProfile.type to \"Unconfined\")"),
            );
        }
    }
}

fn restricted(spec: &PodSpec, out: &mut Errors) {
    // Volumes: only emptyDir of kumo's kinds is allowed; hostPath is already refused above.
    let pod_sc = spec.security_context.as_ref();
    let pod_non_root = pod_sc.and_then(|s| s.run_as_non_root);
    if pod_sc.and_then(|s| s.run_as_user) == Some(0) {
        out.add(
            "spec.securityContext.runAsUser",
            "runAsUser=0 (pod must not set runAsUser=0)",
        );
    }
    if pod_non_root == Some(false) {
        out.add(
            "spec.securityContext.runAsNonRoot",
            "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)",
        );
    }
    for (path, c) in containers(spec) {
        let name = &c.name;
        let sc = c.security_context.as_ref();
        if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            out.add(
                format!("{path}.securityContext.allowPrivilegeEscalation"),
                format!("allowPrivilegeEscalation != false (container {name:?} must set securityContext.allowPrivilegeEscalation=false)"),
            );
        }
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let drops_all = caps.is_some_and(|c| {
            c.drop
                .iter()
                .any(|d| canonical_capability(d).as_deref() == Some("ALL"))
        });
        if !drops_all {
            out.add(
                format!("{path}.securityContext.capabilities.drop"),
                format!("unrestricted capabilities (container {name:?} must set securityContext.capabilities.drop=[\"ALL\"])"),
            );
        }
        for (j, cap) in caps
            .map(|c| c.add.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let canonical = canonical_capability(cap).unwrap_or_else(|| cap.clone());
            // Anything but NET_BIND_SERVICE outside the baseline list was reported there.
            if canonical != "NET_BIND_SERVICE"
                && BASELINE_CAPABILITIES.contains(&canonical.as_str())
            {
                out.add(
                    format!("{path}.securityContext.capabilities.add[{j}]"),
                    format!("unrestricted capabilities (container {name:?} must not include {cap:?} in securityContext.capabilities.add)"),
                );
            }
        }
        match sc.and_then(|s| s.run_as_non_root).or(pod_non_root) {
            Some(true) => {}
            Some(false) if sc.and_then(|s| s.run_as_non_root).is_none() => {}
            Some(false) => out.add(
                format!("{path}.securityContext.runAsNonRoot"),
                format!("runAsNonRoot != true (container {name:?} must not set securityContext.runAsNonRoot=false)"),
            ),
            None => out.add(
                format!("{path}.securityContext.runAsNonRoot"),
                format!("runAsNonRoot != true (pod or container {name:?} must set securityContext.runAsNonRoot=true)"),
            ),
        }
        if sc.and_then(|s| s.run_as_user) == Some(0) {
            out.add(
                format!("{path}.securityContext.runAsUser"),
                format!("runAsUser=0 (container {name:?} must not set runAsUser=0)"),
            );
        }
        let seccomp = SecurityContext::effective_seccomp(sc, pod_sc);
        let set = sc.and_then(|s| s.seccomp_profile.as_ref()).is_some()
            || pod_sc.and_then(|s| s.seccomp_profile.as_ref()).is_some();
        // Unconfined was reported by baseline; restricted wants the profile set explicitly.
        if !set && seccomp.type_ == SeccompProfileType::RuntimeDefault {
            out.add(
                format!("{path}.securityContext.seccompProfile"),
                format!("seccompProfile (pod or container {name:?} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"),
            );
        }
    }
}

#[cfg(test)]
#[path = "pod_security_tests.rs"]
mod tests;
