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
