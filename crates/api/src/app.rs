//! The App and Release kinds (`kumo.dev/v1`): a Heroku-style app (image or command, processes,
//! config, domains) and the immutable releases every change to it makes.

use crate::bounds::{check_range, check_seconds, MAX_RELEASE_VERSION, MAX_REPLICAS};
use crate::meta::{Condition, ObjectMeta};
use crate::quantity::Quantity;
use crate::validation::{is_dns_label, is_dns_subdomain, Errors, FieldError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// The app's keys, defined in `keys`.
pub use crate::keys::{
    ANNOTATION_ASSIGNED_PORT, ANNOTATION_CHANGED_BY, ANNOTATION_CHANGE_CAUSE,
    ANNOTATION_DRAIN_UNTIL, ANNOTATION_PORT, ANNOTATION_PROTOCOL, LABEL_APP, LABEL_ONE_OFF,
    LABEL_PROCESS, LABEL_RELEASE,
};
/// The process the router sends traffic to.
pub const WEB_PROCESS: &str = "web";
/// Seconds old replicas keep serving in-flight requests after a switch.
pub const DEFAULT_DRAIN_SECONDS: i64 = 30;
/// Seconds a release gets for all its replicas to become ready before it is abandoned.
pub const DEFAULT_DEPLOY_TIMEOUT_SECONDS: i64 = 120;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AppSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AppStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "AppResources::is_empty")]
    pub resources: AppResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(default)]
    pub deploy: DeploySpec,
}

/// One process type: a command run by `replicas` pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessSpec {
    /// Without a command, the image's entrypoint runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default = "one")]
    pub replicas: i32,
    /// The port the process listens on (`PORT`); with the process runtime the agent picks a
    /// free host port instead and this is only a default for OCI runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

impl Default for ProcessSpec {
    fn default() -> Self {
        ProcessSpec {
            command: Vec::new(),
            replicas: 1,
            port: None,
            protocol: None,
        }
    }
}

fn one() -> i32 {
    1
}

/// What a process speaks on its port, and so what the router speaks to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http1,
    /// HTTP/2 without TLS (gRPC).
    H2c,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
        }
    }
}

/// Per replica.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl AppResources {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

/// Readiness: `GET path` answered 2xx/3xx within the timeout; without a path, a TCP connect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployStrategy {
    #[default]
    BlueGreen,
    Rolling,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploySpec {
    #[serde(default)]
    pub strategy: DeployStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<i64>,
    /// How long a release may take to become ready before it is abandoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
}

impl DeploySpec {
    pub fn drain_seconds(&self) -> i64 {
        self.drain_seconds.unwrap_or(DEFAULT_DRAIN_SECONDS)
    }

    pub fn timeout_seconds(&self) -> i64 {
        self.timeout_seconds
            .unwrap_or(DEFAULT_DEPLOY_TIMEOUT_SECONDS)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppStatus {
    /// The release the router sends traffic to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_release: Option<i64>,
    /// The newest release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_release: Option<i64>,
    /// `Deploying`, `Running`, `Abandoned` (the latest release), or `Pending` (nothing yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ready replicas of the active release, by process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ready: BTreeMap<String, i32>,
    /// The release that served before the last switch, kept until its in-flight work drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<Drain>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Old replicas get no new requests after a switch and are removed at `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Drain {
    pub release: i64,
    pub until: crate::meta::Time,
}

/// An immutable snapshot of what an app runs; named `{app}-v{version}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Release {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ReleaseSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReleaseStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
// No deny_unknown_fields: serde cannot combine it with the flattened content.
#[serde(rename_all = "camelCase")]
pub struct ReleaseSpec {
    #[serde(default)]
    pub app: String,
    #[serde(default)]
    pub version: i64,
    #[serde(flatten)]
    pub content: ReleaseContent,
    /// What changed from the release before (`Deploy 127.0.0.1:5000/web:2`, `Set FOO`).
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

/// The part of an app a release freezes: everything but domains and the deploy policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "AppResources::is_empty")]
    pub resources: AppResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

impl ReleaseContent {
    /// What an app's spec says a release should hold.
    pub fn of(spec: &AppSpec) -> Self {
        ReleaseContent {
            image: spec.image.clone(),
            runtime_class_name: spec.runtime_class_name.clone(),
            processes: spec.processes.clone(),
            env: spec.env.clone(),
            resources: spec.resources.clone(),
            healthcheck: spec.healthcheck.clone(),
        }
    }

    /// Whether `other` differs in anything but replica counts: scaling is not a release
    /// (as on Heroku), everything else is.
    pub fn same_build(&self, other: &ReleaseContent) -> bool {
        let shape = |c: &ReleaseContent| {
            let mut c = c.clone();
            for p in c.processes.values_mut() {
                p.replicas = 0;
            }
            c
        };
        shape(self) == shape(other)
    }

    /// A one-line account of what changed from `old` (none for the first release).
    pub fn describe_change(&self, old: Option<&ReleaseContent>) -> String {
        let Some(old) = old else {
            return match &self.image {
                Some(i) => format!("Deploy {i}"),
                None => "Initial release".to_string(),
            };
        };
        let mut parts = Vec::new();
        if self.image != old.image {
            parts.push(format!(
                "Deploy {}",
                self.image.as_deref().unwrap_or("(no image)")
            ));
        }
        let set: Vec<&str> = self
            .env
            .iter()
            .filter(|(k, v)| old.env.get(*k) != Some(*v))
            .map(|(k, _)| k.as_str())
            .collect();
        if !set.is_empty() {
            parts.push(format!("Set {}", set.join(", ")));
        }
        let unset: Vec<&str> = old
            .env
            .keys()
            .filter(|k| !self.env.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !unset.is_empty() {
            parts.push(format!("Unset {}", unset.join(", ")));
        }
        if self.runtime_class_name != old.runtime_class_name {
            parts.push(format!(
                "Run on {}",
                self.runtime_class_name
                    .as_deref()
                    .unwrap_or("the default runtime")
            ));
        }
        let shape = |p: &ProcessSpec| ProcessSpec {
            replicas: 0,
            ..p.clone()
        };
        for (name, p) in &self.processes {
            match old.processes.get(name) {
                None => parts.push(format!("Add process {name}")),
                Some(o) if shape(o) != shape(p) => parts.push(format!("Change process {name}")),
                Some(_) => {}
            }
        }
        for name in old.processes.keys() {
            if !self.processes.contains_key(name) {
                parts.push(format!("Remove process {name}"));
            }
        }
        if self.resources != old.resources {
            parts.push("Change resources".to_string());
        }
        if self.healthcheck != old.healthcheck {
            parts.push("Change healthcheck".to_string());
        }
        if parts.is_empty() {
            "No change".to_string()
        } else {
            parts.join("; ")
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleasePhase {
    /// Its replicas are starting.
    #[default]
    Deploying,
    /// It serves traffic.
    Active,
    /// A newer release took over.
    Superseded,
    /// Its replicas did not all become ready in time; it never served.
    Abandoned,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseStatus {
    #[serde(default)]
    pub phase: ReleasePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The name of an app's release `version`.
pub fn release_name(app: &str, version: i64) -> String {
    format!("{app}-v{version}")
}

/// Room for `-v{N}-` (up to six digits) and the five-character random suffix in a replica's
/// name, which must be a DNS label (63 characters).
pub const MAX_APP_AND_PROCESS_NAME: usize = 63 - 16;

/// Checks an app (`app_name` is its name); every problem with its field path.
pub fn validate_app_spec(app_name: &str, spec: &AppSpec, errors: &mut Errors) {
    let process = spec.runtime_class_name.as_deref() == Some(crate::pod::RUNTIME_PROCESS);
    if let Some(rc) = &spec.runtime_class_name {
        if !is_dns_label(rc) {
            errors.add(
                "spec.runtimeClassName",
                format!("Invalid value: {rc:?}: must be a DNS label"),
            );
        }
    }
    if let Some(i) = &spec.image {
        if i.trim().is_empty() {
            errors.add("spec.image", "Required value: image is empty");
        }
    } else if !process {
        errors.add(
            "spec.image",
            "Required value: an image is required unless runtimeClassName is \"process\"",
        );
    }
    if spec.processes.is_empty() {
        errors.add(
            "spec.processes",
            "Required value: an app needs at least one process",
        );
    }
    for (name, p) in &spec.processes {
        let path = format!("spec.processes.{name}");
        if !is_dns_label(name) {
            errors.add(
                &path,
                format!("Invalid value: {name:?}: a process name must be a DNS label"),
            );
        } else if app_name.len() + name.len() > MAX_APP_AND_PROCESS_NAME {
            errors.add(
                &path,
                format!("Invalid value: {name:?}: the app's and the process's names together must be at most {MAX_APP_AND_PROCESS_NAME} characters (replicas are named {{app}}-v{{N}}-{{process}}-{{random}})"),
            );
        }
        if p.command.is_empty() && spec.image.is_none() {
            errors.add(
                format!("{path}.command"),
                "Required value: a process needs a command when the app has no image",
            );
        }
        validate_process_numbers(&path, p, errors);
        if name == WEB_PROCESS && p.port.is_none() && !process {
            errors.add(
                format!("{path}.port"),
                "Required value: the web process of an image app needs a port",
            );
        }
    }
    for k in spec.env.keys() {
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            errors.add(
                format!("spec.env.{k}"),
                format!("Invalid value: {k:?}: must be a C identifier"),
            );
        }
    }
    // Memory is whole bytes; cpu may be fractional (500m).
    if let Some(q) = spec
        .resources
        .memory
        .as_ref()
        .filter(|q| q.millis() % 1000 != 0)
    {
        errors.add(
            "spec.resources.memory",
            format!("Invalid value: {:?}: must be a whole number", q.as_str()),
        );
    }
    if let Some(h) = &spec.healthcheck {
        if let Some(p) = &h.path {
            if !p.starts_with('/') {
                errors.add(
                    "spec.healthcheck.path",
                    format!("Invalid value: {p:?}: must start with '/'"),
                );
            }
        }
    }
    validate_healthcheck_numbers(spec.healthcheck.as_ref(), errors);
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in spec.domains.iter().enumerate() {
        let path = format!("spec.domains[{i}]");
        if !is_dns_subdomain(d) {
            errors.add(
                path,
                format!("Invalid value: {d:?}: must be a lower-case DNS name (a-z, 0-9, '-', '.')"),
            );
        } else if !seen.insert(d.as_str()) {
            errors.add(path, format!("Duplicate value: {d:?}"));
        }
    }
    if let Some(d) = spec.deploy.drain_seconds {
        check_seconds(errors, "spec.deploy.drainSeconds", d, 0);
    }
    if let Some(t) = spec.deploy.timeout_seconds {
        check_seconds(errors, "spec.deploy.timeoutSeconds", t, 1);
    }
}

/// The numbers of one process (at `path`), shared by apps and releases.
fn validate_process_numbers(path: &str, p: &ProcessSpec, errors: &mut Errors) {
    check_range(
        errors,
        format!("{path}.replicas"),
        p.replicas,
        0,
        MAX_REPLICAS,
    );
    if let Some(port) = p.port {
        check_range(errors, format!("{path}.port"), port, 1, 65535);
    }
}

/// The numbers of a healthcheck, shared by apps and releases.
fn validate_healthcheck_numbers(h: Option<&Healthcheck>, errors: &mut Errors) {
    if let Some(t) = h.and_then(|h| h.timeout_seconds) {
        check_seconds(errors, "spec.healthcheck.timeoutSeconds", t, 1);
    }
}

/// Checks a release's spec.
pub fn validate_release(release: &Release, errors: &mut Errors) {
    if !is_dns_label(&release.spec.app) {
        errors.add(
            "spec.app",
            format!("Invalid value: {:?}: must name an app", release.spec.app),
        );
    }
    check_range(
        errors,
        "spec.version",
        release.spec.version,
        1,
        MAX_RELEASE_VERSION,
    );
    // A release's replica counts and healthcheck reach the controller as an app's do.
    for (name, p) in &release.spec.content.processes {
        validate_process_numbers(&format!("spec.processes.{name}"), p, errors);
    }
    validate_healthcheck_numbers(release.spec.content.healthcheck.as_ref(), errors);
}

/// Releases are immutable: only metadata and status may change.
pub fn release_update(old: &serde_json::Value, new: &serde_json::Value) -> Vec<FieldError> {
    if old.get("spec") != new.get("spec") {
        vec![FieldError::new(
            "spec",
            "Forbidden: a release is immutable; change the app to make a new release",
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
