//! Query-string parsing: percent-decoding and the typed parameters the API understands.

use crate::error::{ApiError, ApiResult};
use kumo_api::{FieldSelector, LabelSelector};
use kumo_store::Revision;

/// Every query parameter the API accepts, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    pub watch: bool,
    pub resource_version: Option<Revision>,
    pub allow_watch_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
    pub grace_period_seconds: Option<i64>,
    pub follow: bool,
    pub tail_lines: Option<i64>,
    pub container: Option<String>,
    /// `exec`: the command and its arguments, one `command=` each.
    pub command: Vec<String>,
    /// `exec`: attach the caller's stdin.
    pub stdin: bool,
    /// `exec`: run under a terminal.
    pub tty: bool,
}

/// Parameters Kubernetes clients send that kumo accepts and ignores (all optional hints).
const IGNORED: &[&str] = &[
    "pretty",
    "timeout",
    "limit",
    "continue",
    "fieldManager",
    "fieldValidation",
    "propagationPolicy",
    "orphanDependents",
    "resourceVersionMatch",
];

/// Decodes `%XX` escapes and `+` (as a space); `None` on a bad escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                // Two hex digits, checked here: `from_str_radix` alone takes `%+1` as 0x01.
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn invalid(param: &str, value: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("{param}: invalid value {value:?}: {why}"))
}

fn parse_bool(param: &str, value: &str) -> ApiResult<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(invalid(param, value, "must be true or false")),
    }
}

fn parse_non_negative(param: &str, value: &str) -> ApiResult<i64> {
    match value.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(invalid(param, value, "must be a non-negative integer")),
    }
}

impl Query {
    /// Parses a raw query string (without the `?`).
    pub fn parse(raw: Option<&str>) -> ApiResult<Query> {
        let mut q = Query::default();
        let Some(raw) = raw else { return Ok(q) };
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k)
                .ok_or_else(|| ApiError::bad_request(format!("invalid query parameter {k:?}")))?;
            let value =
                percent_decode(v).ok_or_else(|| invalid(&key, v, "bad percent-encoding"))?;
            q.set(&key, &value)?;
        }
        Ok(q)
    }

    fn set(&mut self, key: &str, value: &str) -> ApiResult<()> {
        match key {
            "labelSelector" => {
                self.label_selector = LabelSelector::parse(value)
                    .map_err(|e| ApiError::bad_request(format!("labelSelector: {e}")))?
            }
            "fieldSelector" => {
                self.field_selector = FieldSelector::parse(value)
                    .map_err(|e| ApiError::bad_request(format!("fieldSelector: {e}")))?
            }
            "watch" => self.watch = parse_bool(key, value)?,
            "allowWatchBookmarks" => self.allow_watch_bookmarks = parse_bool(key, value)?,
            "follow" => self.follow = parse_bool(key, value)?,
            "resourceVersion" => {
                self.resource_version = if value.is_empty() {
                    None
                } else {
                    Some(value.parse().map_err(|_| {
                        invalid(key, value, "must be a resource version from this server")
                    })?)
                }
            }
            "timeoutSeconds" => self.timeout_seconds = Some(parse_non_negative(key, value)? as u64),
            "gracePeriodSeconds" => {
                self.grace_period_seconds = Some(parse_non_negative(key, value)?)
            }
            "tailLines" => self.tail_lines = Some(parse_non_negative(key, value)?),
            "container" => {
                if value.is_empty() {
                    return Err(invalid(key, value, "must not be empty"));
                }
                self.container = Some(value.to_string())
            }
            "command" => self.command.push(value.to_string()),
            "stdin" => self.stdin = parse_bool(key, value)?,
            "tty" => self.tty = parse_bool(key, value)?,
            "dryRun" => {
                return Err(ApiError::bad_request(
                    "dryRun: dry-run requests are not supported",
                ))
            }
            k if IGNORED.contains(&k) => {}
            k => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {k:?}"
                )))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_and_plus() {
        assert_eq!(percent_decode("a%3Db+c").as_deref(), Some("a=b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%-1"), None);
        assert_eq!(percent_decode("%C3%A9"), Some("é".to_string()));
    }

    fn check(raw: &str, expected: Result<Query, &str>) {
        match (Query::parse(Some(raw)), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw}"),
            (Err(e), Err(msg)) => {
                assert_eq!(e.code(), 400, "{raw}");
                assert!(e.0.message.contains(msg), "{raw}: {}", e.0.message);
            }
            (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parameters_as_data() {
        check(
            "labelSelector=app%3Dweb&watch=1&resourceVersion=7&allowWatchBookmarks=true",
            Ok(Query {
                label_selector: LabelSelector::parse("app=web").unwrap(),
                watch: true,
                resource_version: Some(7),
                allow_watch_bookmarks: true,
                ..Default::default()
            }),
        );
        check(
            "fieldSelector=spec.nodeName%3Dn1&limit=500&pretty=true",
            Ok(Query {
                field_selector: FieldSelector::parse("spec.nodeName=n1").unwrap(),
                ..Default::default()
            }),
        );
        check(
            "follow=true&tailLines=10&container=c",
            Ok(Query {
                follow: true,
                tail_lines: Some(10),
                container: Some("c".into()),
                ..Default::default()
            }),
        );
        check("watch=yes", Err("watch: invalid value \"yes\""));
        check("resourceVersion=abc", Err("resourceVersion: invalid value"));
        check(
            "gracePeriodSeconds=-1",
            Err("gracePeriodSeconds: invalid value"),
        );
        check("tailLines=x", Err("tailLines: invalid value"));
        check("labelSelector=%3Dx", Err("labelSelector: invalid selector"));
        check(
            "fieldSelector=nonsense",
            Err("fieldSelector: invalid selector"),
        );
        check("bogus=1", Err("unknown query parameter \"bogus\""));
        check("dryRun=All", Err("dryRun"));
        check("container=", Err("container: invalid value"));
    }
}
