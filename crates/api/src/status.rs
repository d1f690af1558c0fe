//! Wire envelopes: `Status` errors, lists and watch events.

use crate::validation::FieldError;
use serde::{Deserialize, Serialize};

/// The body of every API error, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    /// `Success` or `Failure`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, `Unauthorized`, `Gone`, ...
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    pub field: String,
    pub message: String,
}

impl Status {
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code,
            details: None,
        }
    }

    /// A 422 naming every offending field: `Pod "x" is invalid: spec.containers[0].name: ...`.
    pub fn invalid(kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let what = if name.is_empty() {
            kind.to_string()
        } else {
            format!("{kind} {name:?}")
        };
        let mut s = Status::failure(
            422,
            "Invalid",
            format!(
                "{what} is invalid: {}",
                crate::validation::join_errors(errors)
            ),
        );
        s.details = Some(StatusDetails {
            name: Some(name.to_string()).filter(|n| !n.is_empty()),
            kind: Some(kind.to_string()),
            causes: errors
                .iter()
                .map(|e| StatusCause {
                    field: e.path.clone(),
                    message: e.message.clone(),
                })
                .collect(),
        });
        s
    }
}

/// A list of objects with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList<T> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    pub items: Vec<T>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent<T> {
    #[serde(rename = "type")]
    pub type_: WatchEventType,
    pub object: T,
}
