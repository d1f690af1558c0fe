//! Get and list, with label and field selectors.

use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, object_key, prefix};
use crate::object::labels;
use crate::request::Kind;
use crate::App;
use kumo_api::{FieldSelector, LabelSelector};
use serde_json::{json, Value};

/// Whether an object passes both selectors.
pub fn matches(
    obj: &Value,
    label_selector: &LabelSelector,
    field_selector: &FieldSelector,
) -> bool {
    (label_selector.is_empty() || label_selector.matches(&labels(obj)))
        && field_selector.matches(obj)
}

pub async fn get(app: &App, kind: Kind, ns: Option<&str>, name: &str) -> ApiResult<Value> {
    let kv = app
        .store
        .get(&object_key(&kind, ns, name))
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(&kind, name))?;
    decode(&app.transformer, &kv)
}

/// The `{Kind}List` of matching objects, at the revision the store read them.
pub async fn list(
    app: &App,
    kind: Kind,
    ns: Option<&str>,
    label_selector: &LabelSelector,
    field_selector: &FieldSelector,
) -> ApiResult<Value> {
    let (kvs, revision) = app
        .store
        .list(&prefix(&kind, ns))
        .await
        .map_err(ApiError::store)?;
    let mut items = Vec::with_capacity(kvs.len());
    for kv in &kvs {
        // One object that cannot be read (a Secret under a key no longer configured) is logged
        // by `decode` and left out; the others are still listed.
        let Ok(obj) = decode(&app.transformer, kv) else {
            continue;
        };
        if matches(&obj, label_selector, field_selector) {
            items.push(obj);
        }
    }
    Ok(json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    }))
}
