//! RBAC's escalation check (Kubernetes' model): a user writes a Role or ClusterRole only with
//! permissions it holds itself (or the `escalate` verb on it), and binds a role only when it
//! holds every permission of that role where the binding grants it (or the `bind` verb on it).
//! So a namespace admin hands out `edit` or `ml-engineer` in its namespace, never
//! `cluster-admin`.

use crate::access_review::known_verb;
use crate::authz::{Attributes, Decision};
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, object_key};
use crate::request::Kind;
use crate::App;
use kumo_api::patch::merge_patch;
use kumo_api::rbac::{PolicyRule, GROUP};
use kumo_api::UserInfo;
use serde_json::Value;

fn allowed(
    app: &App,
    user: &UserInfo,
    verb: &'static str,
    resource: &str,
    ns: &str,
    name: &str,
) -> bool {
    let a = Attributes {
        user: user.clone(),
        verb,
        api_group: GROUP.into(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: ns.into(),
        name: name.into(),
    };
    app.authorizer.authorize(&a) == Decision::Allow
}

/// The permissions of `rules` that `user` does not hold in `ns` (empty for the cluster),
/// each as `verb "v" on resource "r" in API group "g"`. A wildcard is held only as the same
/// wildcard, as in Kubernetes.
fn not_held(app: &App, user: &UserInfo, ns: &str, rules: &[PolicyRule]) -> Vec<String> {
    let mut missing = Vec::new();
    for rule in rules {
        if !rule.non_resource_urls.is_empty() {
            missing.push(format!("nonResourceURLs {:?}", rule.non_resource_urls));
            continue;
        }
        let names: Vec<&str> = if rule.resource_names.is_empty() {
            vec![""]
        } else {
            rule.resource_names.iter().map(String::as_str).collect()
        };
        for verb in &rule.verbs {
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    for name in &names {
                        let (res, sub) = resource.split_once('/').unwrap_or((resource, ""));
                        let held = known_verb(verb).is_some_and(|verb| {
                            let a = Attributes {
                                user: user.clone(),
                                verb,
                                api_group: group.clone(),
                                resource: res.into(),
                                subresource: sub.into(),
                                namespace: ns.into(),
                                name: name.to_string(),
                            };
                            app.authorizer.authorize(&a) == Decision::Allow
                        });
                        if !held {
                            missing.push(format!(
                                "verb {verb:?} on resource {resource:?} in API group {group:?}"
                            ));
                        }
                    }
                }
            }
        }
    }
    missing
}

fn rules_of(v: &Value) -> Vec<PolicyRule> {
    v.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

fn refuse(kind: &Kind, name: &str, user: &UserInfo, missing: &[String]) -> ApiError {
    const SHOWN: usize = 5;
    let mut list = missing
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > SHOWN {
        list.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    ApiError::forbidden(format!(
        "{}.{GROUP} {name:?} is forbidden: user {:?} is attempting to grant RBAC permissions not currently held: {list}",
        kind.plural, user.username
    ))
}

/// Checks an RBAC object about to be written by `user` (other kinds pass).
pub async fn check(
    app: &App,
    user: &UserInfo,
    kind: Kind,
    ns: Option<&str>,
    object: &Value,
) -> ApiResult<()> {
    if kind.group != GROUP {
        return Ok(());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = if kind.namespaced {
        ns.unwrap_or_default()
    } else {
        ""
    };
    match kind.plural {
        "roles" | "clusterroles" => {
            if allowed(app, user, "escalate", kind.plural, ns, name) {
                return Ok(());
            }
            let missing = not_held(app, user, ns, &rules_of(object));
            if missing.is_empty() {
                Ok(())
            } else {
                Err(refuse(&kind, name, user, &missing))
            }
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_kind = object
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role_name = object
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let (plural, role_ns) = match role_kind {
                "Role" => ("roles", Some(ns)),
                // Admission reports any other kind with its field path.
                _ => ("clusterroles", None),
            };
            if allowed(app, user, "bind", plural, ns, role_name) {
                return Ok(());
            }
            let role_type = Kind::lookup(GROUP, "v1", plural)
                .ok_or_else(|| ApiError::internal("the rbac kinds are not registered"))?;
            let key = object_key(&role_type, role_ns, role_name);
            let rules = match app.store.get(&key).await.map_err(ApiError::store)? {
                Some(kv) => rules_of(&decode(&app.transformer, &kv)?),
                None => {
                    return Err(ApiError::forbidden(format!(
                        "{}.{GROUP} {name:?} is forbidden: {role_kind} {role_name:?} not found: only who may bind it may bind a role that does not exist yet",
                        kind.plural
                    )))
                }
            };
            let missing = not_held(app, user, ns, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(refuse(&kind, name, user, &missing))
            }
        }
        _ => Ok(()),
    }
}

/// [`check`] on the object a merge patch would make of the stored one.
pub async fn check_patch(
    app: &App,
    user: &UserInfo,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
    patch: &Value,
) -> ApiResult<()> {
    if kind.group != GROUP {
        return Ok(());
    }
    let key = object_key(&kind, ns, name);
    let Some(kv) = app.store.get(&key).await.map_err(ApiError::store)? else {
        return Ok(()); // the patch answers 404
    };
    let mut object = decode(&app.transformer, &kv)?;
    merge_patch(&mut object, patch);
    check(app, user, kind, ns, &object).await
}
