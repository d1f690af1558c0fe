//! Header rewriting: hop-by-hop stripping, `X-Forwarded-*`, `X-Request-Id`, and the request host.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Request;

use crate::snapshot::normalize_host;

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), besides those the
/// `Connection` header names.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Why a request names no usable host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    #[error("missing host")]
    Missing,
    #[error("invalid host {0:?}")]
    Invalid(String),
}

/// The normalized host a request is for: the URI's authority (HTTP/2, absolute-form) or the
/// `Host` header.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<String, HostError> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => match req.headers().get(header::HOST) {
            None => return Err(HostError::Missing),
            Some(v) => v
                .to_str()
                .map_err(|_| HostError::Invalid(String::from_utf8_lossy(v.as_bytes()).into()))?
                .to_string(),
        },
    };
    normalize_host(&raw).ok_or(HostError::Invalid(raw))
}

/// The `Upgrade` header's value when the request asks for a protocol upgrade (HTTP/1.1 only).
/// `h2c` is not tunnelled: an HTTP/2 connection pinned to one backend would defeat per-request
/// balancing, so such a request is served as plain HTTP/1.1 (RFC 9110 lets a server ignore it).
pub(crate) fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE).filter(|_| asks)?;
    let h2c = protocol
        .to_str()
        .map(|p| p.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
        .unwrap_or(false);
    (!h2c).then(|| protocol.clone())
}

/// Removes hop-by-hop headers. `TE: trailers` survives (gRPC needs it end to end); an upgrade
/// keeps `Connection: upgrade` and its `Upgrade` header.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // Most messages carry none of them: one pass over the names instead of a lookup for each.
    let any = |k: &HeaderName| *k == header::UPGRADE || HOP_BY_HOP.contains(k);
    if upgrade.is_none() && !headers.keys().any(any) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

/// The client's `X-Request-Id` when it sent a usable one, else a new random (v4) UUID. Its bits
/// come from the per-thread generator: an id must be unique, not secret, and asking the OS for
/// randomness costs a system call per request.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
        _ => {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&crate::rng::next_u64().to_le_bytes());
            bytes[8..].copy_from_slice(&crate::rng::next_u64().to_le_bytes());
            let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut buf).as_bytes())
                .unwrap_or(HeaderValue::from_static("-"))
        }
    }
}

/// What the router adds to a request on its way to a backend.
pub(crate) struct Forwarded<'a> {
    pub client_ip: IpAddr,
    pub https: bool,
    pub host: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
}

/// Appends the client to `X-Forwarded-For`, sets `X-Forwarded-Proto`, `X-Forwarded-Host` and
/// `X-Request-Id`.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    let mut chain = String::new();
    for v in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        chain.push_str(v);
        chain.push_str(", ");
    }
    // Writing into a String cannot fail.
    let _ = write!(chain, "{}", f.client_ip);
    // From the String's own bytes: no second copy.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(chain)) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    let proto = if f.https { "https" } else { "http" };
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(&X_FORWARDED_HOST, f.host.clone());
    headers.insert(&X_REQUEST_ID, f.request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        v.sort();
        v
    }

    fn check_strip(input: &[(&str, &str)], want: &[&str]) {
        let mut h = map(input);
        let upgrade = upgrade_of(&h);
        strip_hop_by_hop(&mut h, upgrade.as_ref());
        assert_eq!(names(&h), want, "{input:?}");
    }

    #[test]
    fn strips_hop_by_hop_headers() {
        check_strip(
            &[
                ("connection", "keep-alive, X-Secret"),
                ("keep-alive", "timeout=5"),
                ("x-secret", "1"),
                ("transfer-encoding", "chunked"),
                ("proxy-authorization", "basic x"),
                ("accept", "*/*"),
            ],
            &["accept: */*"],
        );
        check_strip(&[("te", "trailers, deflate;q=0.5")], &["te: trailers"]);
        check_strip(&[("te", "gzip")], &[]);
        check_strip(&[("upgrade", "websocket")], &[]);
        check_strip(
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAA"),
            ],
            &[],
        );
        check_strip(
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "k"),
            ],
            &[
                "connection: upgrade",
                "sec-websocket-key: k",
                "upgrade: websocket",
            ],
        );
    }

    #[test]
    fn adds_forwarding_headers() {
        let id = HeaderValue::from_static("abc");
        let host = HeaderValue::from_static("web.test");
        let f = Forwarded {
            client_ip: "127.0.0.1".parse().unwrap(),
            https: true,
            host: &host,
            request_id: &id,
        };
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "http"),
        ]);
        add_forwarded(&mut h, &f);
        assert_eq!(
            names(&h),
            [
                "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1",
                "x-forwarded-host: web.test",
                "x-forwarded-proto: https",
                "x-request-id: abc",
            ]
        );
    }

    #[test]
    fn keeps_or_makes_a_request_id() {
        assert_eq!(request_id(&map(&[("x-request-id", "r-1")])), "r-1");
        for h in [map(&[]), map(&[("x-request-id", "")])] {
            let id = request_id(&h);
            assert!(
                uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok(),
                "{id:?}"
            );
        }
    }

    #[test]
    fn finds_the_request_host() {
        let req = |uri: &str, host: Option<&str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(
            request_host(&req("/", Some("Web.Test:8080"))),
            Ok("web.test".into())
        );
        assert_eq!(
            request_host(&req("http://h2.test/x", Some("other"))),
            Ok("h2.test".into())
        );
        assert_eq!(request_host(&req("/", None)), Err(HostError::Missing));
        assert_eq!(
            request_host(&req("/", Some("a b"))),
            Err(HostError::Invalid("a b".into()))
        );
    }
}
