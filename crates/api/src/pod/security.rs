//! `securityContext` of pods and containers, and the Linux capability names it may use.

use crate::validation::Errors;
use serde::{Deserialize, Serialize};

/// Pod-level security settings: defaults for every container (as in Kubernetes, only the
/// identity fields live here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// The seccomp profile of every container that sets none of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// Container-level security settings; the identity fields override the pod's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Overrides the pod's seccomp profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

/// Which seccomp filter a container runs under (Kubernetes' `SeccompProfile`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompProfile {
    #[serde(rename = "type")]
    pub type_: SeccompProfileType,
    /// With `Localhost`: a file under the node's seccomp directory (`<agent dir>/seccomp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// `RuntimeDefault` is the runtime's default filter (also what an unset profile gets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfileType {
    #[default]
    RuntimeDefault,
    Unconfined,
    Localhost,
}

impl SecurityContext {
    /// The seccomp profile in effect: the container's, else the pod's, else `RuntimeDefault`.
    pub fn effective_seccomp(
        container: Option<&SecurityContext>,
        pod: Option<&PodSecurityContext>,
    ) -> SeccompProfile {
        container
            .and_then(|c| c.seccomp_profile.clone())
            .or_else(|| pod.and_then(|p| p.seccomp_profile.clone()))
            .unwrap_or_default()
    }
}

/// Capabilities added to and dropped from the runtime's default set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// Every Linux capability, without the `CAP_` prefix (capabilities(7), Linux 5.9+).
pub const CAPABILITY_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The canonical form (`NET_ADMIN`) of a capability written `NET_ADMIN`, `CAP_NET_ADMIN` or in
/// lower case; `ALL` stands for every capability. `None` for an unknown name.
pub fn canonical_capability(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    (bare == "ALL" || CAPABILITY_NAMES.contains(&bare)).then(|| bare.to_string())
}

/// Checks a container's security context (`path` is `spec.containers[i].securityContext`).
pub fn validate_security_context(sc: &SecurityContext, path: &str, errors: &mut Errors) {
    validate_identity(sc.run_as_user, sc.run_as_group, path, errors);
    if let Some(caps) = &sc.capabilities {
        for (kind, list) in [("add", &caps.add), ("drop", &caps.drop)] {
            for (i, name) in list.iter().enumerate() {
                if canonical_capability(name).is_none() {
                    errors.add(
                        format!("{path}.capabilities.{kind}[{i}]"),
                        format!("Unsupported value: {name:?}: not a Linux capability (use a name like \"NET_ADMIN\" or \"CAP_NET_ADMIN\", or \"ALL\")"),
                    );
                }
            }
        }
    }
    if let Some(p) = &sc.seccomp_profile {
        validate_seccomp(p, &format!("{path}.seccompProfile"), errors);
    }
    if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
        errors.add(
            format!("{path}.allowPrivilegeEscalation"),
            "Invalid value: false: cannot set allowPrivilegeEscalation to false and privileged to true",
        );
    }
}

/// Checks the pod's security context.
pub fn validate_pod_security_context(sc: &PodSecurityContext, errors: &mut Errors) {
    validate_identity(
        sc.run_as_user,
        sc.run_as_group,
        "spec.securityContext",
        errors,
    );
    if let Some(p) = &sc.seccomp_profile {
        validate_seccomp(p, "spec.securityContext.seccompProfile", errors);
    }
}

/// `localhostProfile` is given exactly with `Localhost`, as a relative path that stays inside
/// the node's seccomp directory.
fn validate_seccomp(p: &SeccompProfile, path: &str, errors: &mut Errors) {
    let field = format!("{path}.localhostProfile");
    match (p.type_, p.localhost_profile.as_deref()) {
        (SeccompProfileType::Localhost, None | Some("")) => errors.add(
            field,
            "Required value: must be set when seccomp type is Localhost",
        ),
        (SeccompProfileType::Localhost, Some(file)) => {
            let bad = file.starts_with('/')
                || file.len() > 255
                || file
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
                || file.chars().any(|c| c.is_control());
            if bad {
                errors.add(
                    field,
                    format!("Invalid value: {file:?}: must be a relative path of at most 255 characters without '.' or '..' components"),
                );
            }
        }
        (_, Some(_)) => errors.add(
            field,
            "Forbidden: may only be set when seccomp type is Localhost",
        ),
        (_, None) => {}
    }
}

fn validate_identity(user: Option<i64>, group: Option<i64>, path: &str, errors: &mut Errors) {
    for (field, id) in [("runAsUser", user), ("runAsGroup", group)] {
        if let Some(id) = id {
            if !(0..=i64::from(u32::MAX - 1)).contains(&id) {
                errors.add(
                    format!("{path}.{field}"),
                    format!("Invalid value: {id}: must be between 0 and 4294967294, inclusive"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_spellings() {
        for (input, expected) in [
            ("NET_ADMIN", Some("NET_ADMIN")),
            ("CAP_NET_ADMIN", Some("NET_ADMIN")),
            ("cap_sys_time", Some("SYS_TIME")),
            ("all", Some("ALL")),
            ("CAP_ALL", Some("ALL")),
            ("NET_FLY", None),
            ("", None),
        ] {
            assert_eq!(
                canonical_capability(input).as_deref(),
                expected,
                "{input:?}"
            );
        }
    }
}
