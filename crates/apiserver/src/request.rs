//! The closed set of API requests, and the pure function that turns an HTTP request into one.
//!
//! Every way into the API is a variant of [`ApiRequest`]; handlers never look at paths.

use crate::error::{ApiError, ApiResult};
use crate::query::Query;
use http::{header, HeaderMap, Method};
use kumo_api::{kind_by_plural, FieldSelector, KindInfo, LabelSelector};
use kumo_store::Revision;
use std::fmt;
use std::time::Duration;

/// A served kind; compares by identity in the registry.
#[derive(Clone, Copy)]
pub struct Kind(pub &'static KindInfo);

impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.kind)
    }
}

impl std::ops::Deref for Kind {
    type Target = KindInfo;
    fn deref(&self) -> &KindInfo {
        self.0
    }
}

impl Kind {
    /// The kind at `group/version/plural`, if served.
    pub fn lookup(group: &str, version: &str, plural: &str) -> Option<Kind> {
        kind_by_plural(group, version, plural).map(Kind)
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.0.group == group && self.0.plural == plural
    }

    pub fn is_pod(&self) -> bool {
        self.is("", "pods")
    }

    pub fn is_namespace(&self) -> bool {
        self.is("", "namespaces")
    }
}

/// A part of an object served at its own path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Status,
}

/// One API request, parsed. `ns` is `None` for cluster-scoped kinds and all-namespace lists.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    Create {
        kind: Kind,
        ns: Option<String>,
    },
    Get {
        kind: Kind,
        ns: Option<String>,
        name: String,
    },
    List {
        kind: Kind,
        ns: Option<String>,
        label_selector: LabelSelector,
        field_selector: FieldSelector,
    },
    Watch {
        kind: Kind,
        ns: Option<String>,
        label_selector: LabelSelector,
        field_selector: FieldSelector,
        /// `None` (or 0 on the wire): start with the current objects as ADDED events.
        resource_version: Option<Revision>,
        bookmarks: bool,
        timeout: Option<Duration>,
    },
    Update {
        kind: Kind,
        ns: Option<String>,
        name: String,
        subresource: Option<Subresource>,
    },
    /// A JSON merge patch (RFC 7386).
    Patch {
        kind: Kind,
        ns: Option<String>,
        name: String,
        subresource: Option<Subresource>,
    },
    Delete {
        kind: Kind,
        ns: Option<String>,
        name: String,
        grace_period_seconds: Option<i64>,
    },
    Bind {
        ns: String,
        name: String,
    },
    /// `POST pods/{name}/eviction`: a `policy/v1` Eviction.
    Evict {
        ns: String,
        name: String,
    },
    Log {
        ns: String,
        name: String,
        container: Option<String>,
        follow: bool,
        tail_lines: Option<i64>,
    },
    /// `POST nodes/{name}/servingcertificate`: the cluster CA signs the node agent's serving
    /// certificate for its endpoint.
    NodeServingCertificate {
        name: String,
    },
    /// `POST nodes/{name}/credential`: a new node credential, for a join token or the node.
    NodeCredential {
        name: String,
    },
    /// `POST serviceaccounts/{name}/token`: an `authentication.k8s.io/v1` TokenRequest.
    CreateToken {
        ns: String,
        name: String,
    },
    /// `POST pods/{name}/exec`, upgraded to the `kumo-exec.v1` stream.
    Exec {
        ns: String,
        name: String,
        container: Option<String>,
        command: Vec<String>,
        stdin: bool,
        tty: bool,
    },
    /// `POST /apis/authorization.k8s.io/v1/{self,}subjectaccessreviews`: not stored.
    AccessReview {
        self_review: bool,
    },
}

/// Where a path points.
enum Target<'a> {
    Collection {
        kind: Kind,
        ns: Option<&'a str>,
    },
    Object {
        kind: Kind,
        ns: Option<&'a str>,
        name: &'a str,
        sub: Option<&'a str>,
    },
}

fn parse_path(path: &str) -> ApiResult<Target<'_>> {
    let not_found = || ApiError::no_route(path);
    let trimmed = path.strip_prefix('/').ok_or_else(not_found)?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segs: Vec<&str> = trimmed.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(not_found());
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let lookup = |plural: &str| Kind::lookup(group, version, plural).ok_or_else(not_found);
    match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" => {
            let kind = lookup(plural)?;
            if !kind.namespaced {
                return Err(not_found());
            }
            let ns = Some(*ns);
            match tail {
                [] => Ok(Target::Collection { kind, ns }),
                [name] => Ok(Target::Object {
                    kind,
                    ns,
                    name,
                    sub: None,
                }),
                [name, sub] => Ok(Target::Object {
                    kind,
                    ns,
                    name,
                    sub: Some(sub),
                }),
                _ => Err(not_found()),
            }
        }
        [plural] => Ok(Target::Collection {
            kind: lookup(plural)?,
            ns: None,
        }),
        [plural, name, sub @ ..] if sub.len() <= 1 => {
            let kind = lookup(plural)?;
            if kind.namespaced {
                return Err(not_found());
            }
            Ok(Target::Object {
                kind,
                ns: None,
                name,
                sub: sub.first().copied(),
            })
        }
        _ => Err(not_found()),
    }
}

/// The media type of the body, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let text = value.to_str().unwrap_or("?");
    let base = text.split(';').next().unwrap_or("").trim();
    Some(base.to_ascii_lowercase())
}

fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    match media_type(headers).as_deref() {
        None | Some("application/json") => Ok(()),
        Some(other) => Err(ApiError::unsupported_media_type(format!(
            "unsupported media type {other:?}: the body must be application/json"
        ))),
    }
}

fn require_merge_patch(headers: &HeaderMap) -> ApiResult<()> {
    match media_type(headers).as_deref() {
        Some("application/merge-patch+json" | "application/strategic-merge-patch+json") => Ok(()),
        Some("application/json-patch+json") => Err(ApiError::unsupported_media_type(
            "json patch is not supported: use application/merge-patch+json",
        )),
        Some(other) => Err(ApiError::unsupported_media_type(format!(
            "unsupported patch type {other:?}: use application/merge-patch+json"
        ))),
        None => Err(ApiError::unsupported_media_type(
            "a patch needs the content type application/merge-patch+json",
        )),
    }
}

/// Parses method, path, raw query and headers into a request, or the 4xx that answers it.
pub fn parse(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<ApiRequest> {
    let review = path
        .strip_prefix("/apis/authorization.k8s.io/v1/")
        .map(|rest| rest.strip_suffix('/').unwrap_or(rest));
    if let Some(self_review @ ("selfsubjectaccessreviews" | "subjectaccessreviews")) = review {
        if *method != Method::POST {
            return Err(ApiError::method_not_allowed(method, path));
        }
        require_json(headers)?;
        return Ok(ApiRequest::AccessReview {
            self_review: self_review == "selfsubjectaccessreviews",
        });
    }
    let target = parse_path(path)?;
    let q = Query::parse(query)?;
    let not_allowed = || ApiError::method_not_allowed(method, path);
    let owned = |s: Option<&str>| s.map(str::to_string);
    match target {
        Target::Collection { kind, ns } => match *method {
            Method::GET if q.watch => Ok(ApiRequest::Watch {
                kind,
                ns: owned(ns),
                label_selector: q.label_selector,
                field_selector: q.field_selector,
                resource_version: q.resource_version.filter(|rv| *rv != 0),
                bookmarks: q.allow_watch_bookmarks,
                // As in Kubernetes, 0 means the server's default: no timeout here.
                timeout: q
                    .timeout_seconds
                    .filter(|t| *t > 0)
                    .map(Duration::from_secs),
            }),
            Method::GET => Ok(ApiRequest::List {
                kind,
                ns: owned(ns),
                label_selector: q.label_selector,
                field_selector: q.field_selector,
            }),
            Method::POST if !kind.namespaced || ns.is_some() => {
                require_json(headers)?;
                Ok(ApiRequest::Create {
                    kind,
                    ns: owned(ns),
                })
            }
            _ => Err(not_allowed()),
        },
        Target::Object {
            kind,
            ns,
            name,
            sub,
        } => {
            let (ns, name) = (owned(ns), name.to_string());
            let subresource = match sub {
                None => None,
                Some("status") if kind.has_status => Some(Subresource::Status),
                Some("log") if kind.is_pod() => {
                    return match *method {
                        Method::GET => Ok(ApiRequest::Log {
                            ns: ns.unwrap_or_default(),
                            name,
                            container: q.container,
                            follow: q.follow,
                            tail_lines: q.tail_lines,
                        }),
                        _ => Err(not_allowed()),
                    }
                }
                Some("exec") if kind.is_pod() => {
                    return match *method {
                        Method::POST | Method::GET => {
                            if q.command.is_empty() {
                                return Err(ApiError::bad_request(
                                    "command: Required value: at least one command= parameter",
                                ));
                            }
                            let upgrade = headers
                                .get(http::header::UPGRADE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("");
                            if !upgrade.eq_ignore_ascii_case(kumo_api::exec::PROTOCOL) {
                                return Err(ApiError::bad_request(format!(
                                    "exec needs an upgrade to {}: send Connection: Upgrade and Upgrade: {}",
                                    kumo_api::exec::PROTOCOL,
                                    kumo_api::exec::PROTOCOL
                                )));
                            }
                            Ok(ApiRequest::Exec {
                                ns: ns.unwrap_or_default(),
                                name,
                                container: q.container,
                                command: q.command,
                                stdin: q.stdin,
                                tty: q.tty,
                            })
                        }
                        _ => Err(not_allowed()),
                    };
                }
                Some("credential") if kind.is("", "nodes") => {
                    return match *method {
                        Method::POST => Ok(ApiRequest::NodeCredential { name }),
                        _ => Err(not_allowed()),
                    }
                }
                Some("servingcertificate") if kind.is("", "nodes") => {
                    return match *method {
                        Method::POST => {
                            require_json(headers)?;
                            Ok(ApiRequest::NodeServingCertificate { name })
                        }
                        _ => Err(not_allowed()),
                    }
                }
                Some("binding") if kind.is_pod() => {
                    return match *method {
                        Method::POST => {
                            require_json(headers)?;
                            Ok(ApiRequest::Bind {
                                ns: ns.unwrap_or_default(),
                                name,
                            })
                        }
                        _ => Err(not_allowed()),
                    }
                }
                Some("eviction") if kind.is_pod() => {
                    return match *method {
                        Method::POST => {
                            require_json(headers)?;
                            Ok(ApiRequest::Evict {
                                ns: ns.unwrap_or_default(),
                                name,
                            })
                        }
                        _ => Err(not_allowed()),
                    }
                }
                Some("token") if kind.is("", "serviceaccounts") => {
                    return match *method {
                        Method::POST => {
                            require_json(headers)?;
                            Ok(ApiRequest::CreateToken {
                                ns: ns.unwrap_or_default(),
                                name,
                            })
                        }
                        _ => Err(not_allowed()),
                    }
                }
                Some(_) => return Err(ApiError::no_route(path)),
            };
            match *method {
                Method::GET if q.watch => Err(ApiError::bad_request(
                    "watch: watching one object by path is not supported, watch the collection with fieldSelector=metadata.name=NAME",
                )),
                Method::GET => Ok(ApiRequest::Get { kind, ns, name }),
                Method::PUT => {
                    require_json(headers)?;
                    Ok(ApiRequest::Update {
                        kind,
                        ns,
                        name,
                        subresource,
                    })
                }
                Method::PATCH => {
                    require_merge_patch(headers)?;
                    Ok(ApiRequest::Patch {
                        kind,
                        ns,
                        name,
                        subresource,
                    })
                }
                Method::DELETE if subresource.is_none() => Ok(ApiRequest::Delete {
                    kind,
                    ns,
                    name,
                    grace_period_seconds: q.grace_period_seconds,
                }),
                _ => Err(not_allowed()),
            }
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "request_props.rs"]
mod props;
