//! The one cross-object rule of Apps: a domain routes to one app only, so an App naming a
//! domain another App already has is refused (422 naming the field and the other app).

use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, prefix};
use crate::request::Kind;
use crate::App;
use kumo_api::FieldError;
use serde_json::Value;

/// Refuses `obj` (an App about to be stored over `old`, if any) if one of its domains belongs
/// to another App. Other kinds, and updates that keep the domains (status writes), pass untouched.
pub async fn check_unique(
    app: &App,
    kind: &Kind,
    old: Option<&Value>,
    obj: &Value,
) -> ApiResult<()> {
    if !kind.is("kumo.dev", "apps") {
        return Ok(());
    }
    if domains(obj).is_empty() || old.is_some_and(|o| domains(o) == domains(obj)) {
        return Ok(());
    }
    let (kvs, _) = app
        .store
        .list(&prefix(kind, None))
        .await
        .map_err(ApiError::store)?;
    let others = kvs
        .iter()
        .map(|kv| decode(&app.transformer, kv))
        .collect::<ApiResult<Vec<Value>>>()?;
    let errors = conflicts(obj, &others);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, crate::object::name(obj), &errors))
    }
}

fn domains(obj: &Value) -> Vec<&str> {
    obj.pointer("/spec/domains")
        .and_then(Value::as_array)
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn identity(obj: &Value) -> (String, String) {
    let meta = |f: &str| {
        obj.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (meta("namespace"), meta("name"))
}

/// The domains of `obj` that one of `others` (the stored Apps, `obj`'s old self included)
/// already routes.
pub fn conflicts(obj: &Value, others: &[Value]) -> Vec<FieldError> {
    let me = identity(obj);
    let mut errors = Vec::new();
    for (i, d) in domains(obj).into_iter().enumerate() {
        let owner = others
            .iter()
            .filter(|o| identity(o) != me)
            .find(|o| domains(o).contains(&d));
        if let Some(owner) = owner {
            let (ns, name) = identity(owner);
            errors.push(FieldError::new(
                format!("spec.domains[{i}]"),
                format!("Duplicate value: {d:?}: already routed to app {ns}/{name}"),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(ns: &str, name: &str, domains: &[&str]) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}, "spec": {"domains": domains}})
    }

    #[test]
    fn a_domain_belongs_to_one_app() {
        let stored = [
            app("default", "a", &["a.test"]),
            app("team", "b", &["b.test"]),
        ];
        let check = |obj: Value| kumo_api::validation::join_errors(&conflicts(&obj, &stored));
        assert_eq!(check(app("default", "c", &["c.test"])), "");
        // An app keeps its own domains across updates.
        assert_eq!(check(app("default", "a", &["a.test", "x.test"])), "");
        assert_eq!(
            check(app("default", "c", &["c.test", "b.test"])),
            "spec.domains[1]: Duplicate value: \"b.test\": already routed to app team/b"
        );
        // The same name in another namespace is another app.
        assert_eq!(
            check(app("team", "a", &["a.test"])),
            "spec.domains[0]: Duplicate value: \"a.test\": already routed to app default/a"
        );
    }
}
