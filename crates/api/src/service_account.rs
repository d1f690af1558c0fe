//! The ServiceAccount kind (`v1`): the identity of a pod's processes, and the TokenRequest
//! (`authentication.k8s.io/v1`) through which its short-lived, pod-bound tokens are issued.
//! A service account's user is `system:serviceaccount:NS:NAME`, in `system:serviceaccounts`
//! and `system:serviceaccounts:NS`, as in Kubernetes.

use crate::meta::{ObjectMeta, Time};
use crate::user::UserInfo;
use crate::validation::{check_name, Errors};
use serde::{Deserialize, Serialize};

/// The account every namespace has, and the one pods run as when they name none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The prefix of a service account's user name: `system:serviceaccount:NS:NAME`.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// The group of every service account (and, with `:NS`, of those of one namespace).
pub const GROUP_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// Where a container finds its account's `token`, `ca.crt` and `namespace`.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The environment variable naming the token directory of a `process` container, which has no
/// mount namespace of its own to see [`MOUNT_PATH`] in.
pub const ENV_DIR: &str = "KUMO_SERVICE_ACCOUNT_DIR";
/// The lifetime of a token when the request names none (one hour, as Kubernetes' default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a token may be asked for (Kubernetes' minimum).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime a token may be asked for (a day).
pub const MAX_EXPIRATION_SECONDS: i64 = 86_400;
/// The API version of TokenRequest.
pub const TOKEN_REQUEST_API_VERSION: &str = "authentication.k8s.io/v1";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccount {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Whether pods of this account get its token mounted unless they say otherwise (default
    /// true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
}

/// The user name of account `name` in namespace `ns`.
pub fn user_name(ns: &str, name: &str) -> String {
    format!("{USER_PREFIX}{ns}:{name}")
}

/// The user a token of account `name` in `ns` authenticates as.
pub fn user_info(ns: &str, name: &str, uid: &str) -> UserInfo {
    let ns_group = format!("{GROUP_SERVICE_ACCOUNTS}:{ns}");
    let mut user = UserInfo::new(user_name(ns, name), &[GROUP_SERVICE_ACCOUNTS, &ns_group]);
    user.uid = uid.to_string();
    user
}

/// The namespace and name of a service account's user name.
pub fn parse_user_name(user: &str) -> Option<(&str, &str)> {
    let (ns, name) = user.strip_prefix(USER_PREFIX)?.split_once(':')?;
    (!ns.is_empty() && !name.is_empty()).then_some((ns, name))
}

/// A request for a token of a service account (`POST .../serviceaccounts/NAME/token`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TokenRequestSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TokenRequestStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequestSpec {
    /// Who the token is for; the API server's own audience when empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// [`MIN_EXPIRATION_SECONDS`]..=[`MAX_EXPIRATION_SECONDS`], default
    /// [`DEFAULT_EXPIRATION_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_seconds: Option<i64>,
    /// The object the token lives no longer than (a Pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_object_ref: Option<BoundObjectReference>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoundObjectReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequestStatus {
    pub token: String,
    pub expiration_timestamp: Time,
}

impl TokenRequestSpec {
    /// The lifetime asked for, defaulted.
    pub fn expiration_seconds(&self) -> i64 {
        self.expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS)
    }
}

/// Checks a token request's spec; paths are relative to the request object.
pub fn validate_token_request(spec: &TokenRequestSpec, errors: &mut Errors) {
    if let Some(s) = spec.expiration_seconds {
        if !(MIN_EXPIRATION_SECONDS..=MAX_EXPIRATION_SECONDS).contains(&s) {
            errors.add(
                "spec.expirationSeconds",
                format!("Invalid value: {s}: must be between {MIN_EXPIRATION_SECONDS} and {MAX_EXPIRATION_SECONDS} seconds"),
            );
        }
    }
    for (i, a) in spec.audiences.iter().enumerate() {
        if a.is_empty() {
            errors.add(
                format!("spec.audiences[{i}]"),
                "Invalid value: \"\": must not be empty",
            );
        }
    }
    if let Some(r) = &spec.bound_object_ref {
        if r.kind != "Pod" {
            errors.add(
                "spec.boundObjectRef.kind",
                format!("Unsupported value: {:?}: supported values: \"Pod\"", r.kind),
            );
        }
        if !r.api_version.is_empty() && r.api_version != "v1" {
            errors.add(
                "spec.boundObjectRef.apiVersion",
                format!(
                    "Unsupported value: {:?}: supported values: \"v1\"",
                    r.api_version
                ),
            );
        }
        check_name(errors, "spec.boundObjectRef.name", &r.name, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: serde_json::Value, expected: &[&str]) {
        let spec: TokenRequestSpec = serde_json::from_value(spec).unwrap();
        let mut e = Errors::default();
        validate_token_request(&spec, &mut e);
        let got: Vec<String> = e
            .into_result()
            .err()
            .unwrap_or_default()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (g, want) in got.iter().zip(expected) {
            assert!(g.starts_with(want), "{g:?} does not start with {want:?}");
        }
    }

    #[test]
    fn token_requests() {
        use serde_json::json;
        check(json!({}), &[]);
        check(json!({"expirationSeconds": 600}), &[]);
        check(json!({"expirationSeconds": 86400}), &[]);
        check(
            json!({"expirationSeconds": 599}),
            &["spec.expirationSeconds"],
        );
        check(
            json!({"expirationSeconds": 86401}),
            &["spec.expirationSeconds"],
        );
        check(
            json!({"boundObjectRef": {"kind": "Pod", "name": "web", "uid": "u"}}),
            &[],
        );
        check(
            json!({"boundObjectRef": {"kind": "Secret", "name": "web"}}),
            &["spec.boundObjectRef.kind"],
        );
        check(
            json!({"boundObjectRef": {"kind": "Pod", "name": ""}, "audiences": [""]}),
            &["spec.audiences[0]", "spec.boundObjectRef.name"],
        );
        let spec = TokenRequestSpec::default();
        assert_eq!(spec.expiration_seconds(), 3600);
    }

    #[test]
    fn users() {
        let u = user_info("team-a", "builder", "u1");
        assert_eq!(u.username, "system:serviceaccount:team-a:builder");
        assert_eq!(u.uid, "u1");
        for g in [
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated",
        ] {
            assert!(u.in_group(g), "{g}");
        }
        assert_eq!(parse_user_name(&u.username), Some(("team-a", "builder")));
        assert_eq!(parse_user_name("system:serviceaccount:x"), None);
        assert_eq!(parse_user_name("alice"), None);
    }
}
