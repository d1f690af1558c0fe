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

/// The largest number of seconds a query may ask for (a year): more than any timeout or grace
/// period needs, and small enough that no deadline computed from it can overflow.
pub const MAX_SECONDS: i64 = 365 * 24 * 3600;

fn parse_non_negative(param: &str, value: &str) -> ApiResult<i64> {
    match value.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(invalid(param, value, "must be a non-negative integer")),
    }
}

/// A number of seconds from 0 to [`MAX_SECONDS`].
fn parse_seconds(param: &str, value: &str) -> ApiResult<i64> {
    match value.parse::<i64>() {
        Ok(n) if (0..=MAX_SECONDS).contains(&n) => Ok(n),
        _ => Err(invalid(
            param,
            value,
            &format!("must be a whole number of seconds from 0 to {MAX_SECONDS}"),
        )),
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
            "timeoutSeconds" => {
                self.timeout_seconds = Some(parse_seconds(key, value)?.unsigned_abs())
            }
            "gracePeriodSeconds" => self.grace_period_seconds = Some(parse_seconds(key, value)?),
            // Lists are answered whole; a page size is still checked, as Kubernetes does.
            "limit" => {
                parse_non_negative(key, value)?;
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

    /// Numbers out of their bounds, each a 400 naming the parameter (and the bound where there
    /// is one), never a panic or a wrapped value.
    #[test]
    fn numbers_out_of_bounds() {
        let seconds = "must be a whole number of seconds from 0 to 31536000";
        for (raw, message) in [
            ("timeoutSeconds=9223372036854775807", seconds),
            ("timeoutSeconds=9223372036854775808", seconds),
            ("timeoutSeconds=31536001", seconds),
            ("timeoutSeconds=-1", seconds),
            ("timeoutSeconds=-9223372036854775808", seconds),
            ("timeoutSeconds=1e3", seconds),
            ("timeoutSeconds=", seconds),
            ("gracePeriodSeconds=9223372036854775807", seconds),
            ("gracePeriodSeconds=-1", seconds),
            (
                "tailLines=-1",
                "tailLines: invalid value \"-1\": must be a non-negative integer",
            ),
            ("tailLines=9223372036854775808", "tailLines: invalid value"),
            (
                "limit=-1",
                "limit: invalid value \"-1\": must be a non-negative integer",
            ),
            ("limit=99999999999999999999", "limit: invalid value"),
            (
                "resourceVersion=18446744073709551616",
                "resourceVersion: invalid value",
            ),
            ("resourceVersion=-1", "resourceVersion: invalid value"),
        ] {
            let param = raw.split('=').next().unwrap();
            check(raw, Err(&format!("{param}: invalid value")));
            check(raw, Err(message));
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
        check(
            "timeoutSeconds=31536000",
            Ok(Query {
                timeout_seconds: Some(31_536_000),
                ..Default::default()
            }),
        );
        check(
            "gracePeriodSeconds=0",
            Ok(Query {
                grace_period_seconds: Some(0),
                ..Default::default()
            }),
        );
        check(
            "tailLines=9223372036854775807",
            Ok(Query {
                tail_lines: Some(i64::MAX),
                ..Default::default()
            }),
        );
        check("limit=9223372036854775807", Ok(Query::default()));
        check("dryRun=All", Err("dryRun"));
        check("container=", Err("container: invalid value"));
    }
}
