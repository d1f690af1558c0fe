//! JSON merge patch (RFC 7386), as served for `application/merge-patch+json`.

use serde_json::Value;

/// Applies `patch` to `target`: objects merge key by key, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let Value::Object(target_map) = target else {
                return;
            };
            for (k, v) in patch_map {
                if v.is_null() {
                    target_map.remove(k);
                } else {
                    merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(target: Value, patch: Value, expected: Value) {
        let mut t = target;
        merge_patch(&mut t, &patch);
        assert_eq!(t, expected);
    }

    #[test]
    fn rfc7386_examples() {
        check(json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"}));
        check(
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        );
        check(json!({"a": "b"}), json!({"a": null}), json!({}));
        check(
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        );
        check(
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        );
        check(json!(["a"]), json!({"a": "b"}), json!({"a": "b"}));
        check(
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        );
    }
}
