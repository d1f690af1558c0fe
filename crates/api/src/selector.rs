//! Label selectors (`app=web,tier!=db,env in (a,b),!canary`) and field selectors (`spec.nodeName=n1`).

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Why a selector did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

fn split_top_level(s: &str) -> Vec<&str> {
    // Commas inside `in (a,b)` do not separate requirements.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let err = |reason: &str| SelectorError {
            selector: text.to_string(),
            reason: reason.to_string(),
        };
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top_level(text) {
            let part = part.trim();
            let check_key = |k: &str| {
                if crate::validation::is_qualified_name(k) {
                    Ok(k.to_string())
                } else {
                    Err(err(&format!("{k:?} is not a valid label key")))
                }
            };
            let req = if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(check_key(k.trim())?)
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(check_key(k.trim())?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(check_key(k.trim())?, v.trim().to_string())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(
                    check_key(k.trim())?,
                    parse_set(rest).ok_or_else(|| err("expected (a,b) after notin"))?,
                )
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(
                    check_key(k.trim())?,
                    parse_set(rest).ok_or_else(|| err("expected (a,b) after in"))?,
                )
            } else if part.is_empty() {
                return Err(err("empty requirement"));
            } else {
                Requirement::Exists(check_key(part)?)
            };
            if let Requirement::Equals(_, v) | Requirement::NotEquals(_, v) = &req {
                if !crate::validation::is_label_value(v) {
                    return Err(err(&format!("{v:?} is not a valid label value")));
                }
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Builds an equality selector from a map (`a=1,b=2`).
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        LabelSelector(
            map.iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
                .collect(),
        )
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_set(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// The selector's text, as a client sends it (`app=web,tier!=db,env in (a,b),!canary`); it
/// parses back to the same selector.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(","))?,
                Requirement::Exists(k) => f.write_str(k)?,
                Requirement::NotExists(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

/// A parsed field selector: `path=value` or `path!=value` over the object's JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for part in text.split(',') {
            let (path, eq, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (p, true, v)
            } else {
                return Err(SelectorError {
                    selector: text.to_string(),
                    reason: format!("{part:?} is not path=value"),
                });
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(SelectorError {
                    selector: text.to_string(),
                    reason: "empty field path".into(),
                });
            }
            reqs.push((path, eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Matches against an object's JSON; a missing field reads as the empty string.
    pub fn matches(&self, object: &serde_json::Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let mut v = object;
            let mut found = true;
            for seg in path {
                match v.get(seg) {
                    Some(next) => v = next,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            let actual = match (found, v) {
                (false, _) | (true, serde_json::Value::Null) => String::new(),
                (true, serde_json::Value::String(s)) => s.clone(),
                (true, other) => other.to_string(),
            };
            (actual == *want) == *eq
        })
    }
}

/// The selector's text (`spec.nodeName=n1,status.phase!=Failed`).
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (path, eq, value)) in self.0.iter().enumerate() {
            let op = if *eq { "=" } else { "!=" };
            let sep = if i > 0 { "," } else { "" };
            write!(f, "{sep}{}{op}{value}", path.join("."))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(selector: &str, set: &[(&str, &str)], expected: bool) {
        let s = LabelSelector::parse(selector).unwrap();
        assert_eq!(s.matches(&labels(set)), expected, "{selector} on {set:?}");
    }

    #[test]
    fn label_selectors() {
        check("", &[], true);
        check("app=web", &[("app", "web")], true);
        check("app==web", &[("app", "web")], true);
        check("app=web", &[("app", "db")], false);
        check("app!=web", &[], true);
        check("app=web,tier=fe", &[("app", "web")], false);
        check("env in (a, b)", &[("env", "b")], true);
        check("env in (a,b),app", &[("env", "b")], false);
        check("env notin (a,b)", &[("env", "c")], true);
        check("env notin (a,b)", &[], true);
        check("!canary", &[("canary", "1")], false);
        check("canary", &[("canary", "1")], true);
    }

    #[test]
    fn bad_label_selectors() {
        for bad in ["a=b=c d", "=x", "env in a", "-bad-=1"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors_print_as_they_parse() {
        let check = |text: &str, printed: &str| {
            assert_eq!(LabelSelector::parse(text).unwrap().to_string(), printed);
        };
        check("", "");
        check("app=web", "app=web");
        check("app==web", "app=web");
        check(" env in (a, b) , tier!=db", "env in (a,b),tier!=db");
        check("env notin (c),canary,!x", "env notin (c),canary,!x");
        let field = FieldSelector::parse("spec.nodeName==n1, status.phase!=Failed").unwrap();
        assert_eq!(field.to_string(), "spec.nodeName=n1,status.phase!=Failed");
    }

    #[test]
    fn field_selectors() {
        let pod = serde_json::json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
        assert!(m("spec.nodeName=n1"));
        assert!(!m("spec.nodeName=n2"));
        assert!(m("spec.nodeName!=n2,status.phase=Running"));
        assert!(m("metadata.name="));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
