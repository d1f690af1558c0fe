//! Property tests of the request parser: any method, path, query and headers give a request or
//! a 4xx, never a panic or a 5xx; paths built for a kind parse back to it; query values survive
//! percent-encoding.

use super::*;
use crate::query::percent_decode;
use http::HeaderValue;
use kumo_api::object::collection_path;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    Config::with_cases(384)
}

fn text_of(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 0..=max).prop_map(String::from_iter)
}

fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::from_bytes(b"PROPFIND").unwrap(),
    ])
}

/// Paths from the API's own words (so that many reach deep into the parser) and junk.
fn path() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        4 => prop::sample::select(vec![
            "api", "apis", "v1", "v2", "kumo.dev", "namespaces", "default", "pods", "nodes",
            "mltasks", "apps", "releases", "queues", "secrets", "events", "status", "log",
            "exec", "binding", "serviceaccounts", "token", "web", "", ".", "..", "%2F", "a b",
        ])
        .prop_map(str::to_string),
        1 => any_text(6),
    ];
    (
        prop::collection::vec(word, 0..8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segs, lead, trail)| {
            let mut p = segs.join("/");
            if lead {
                p.insert(0, '/');
            }
            if trail {
                p.push('/');
            }
            p
        })
}

fn query() -> impl Strategy<Value = Option<String>> {
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "labelSelector", "fieldSelector", "watch", "allowWatchBookmarks", "follow",
            "resourceVersion", "timeoutSeconds", "gracePeriodSeconds", "tailLines",
            "container", "command", "stdin", "tty", "dryRun", "limit", "pretty", "bogus",
        ])
        .prop_map(str::to_string),
        1 => any_text(6),
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "",
            "1",
            "0",
            "true",
            "false",
            "yes",
            "-1",
            "18446744073709551615",
            "9223372036854775807",
            "99999999999999999999",
            "app%3Dweb",
            "a+b",
            "%",
            "%4",
            "%zz",
            "%+1",
            "%C3%A9",
            "%ff",
            "env+in+(a,b)",
            "spec.nodeName%3Dn1",
        ])
        .prop_map(str::to_string),
        text_of("abc019%=+&!(),. -", 12),
        any_text(8),
    ];
    let pair = (key, prop::option::of(value)).prop_map(|(k, v)| match v {
        Some(v) => format!("{k}={v}"),
        None => k,
    });
    prop::option::of(prop::collection::vec(pair, 0..5).prop_map(|p| p.join("&")))
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    let content_type = prop::option::of(prop::sample::select(vec![
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "text/plain",
        "",
        ";",
    ]));
    let upgrade = prop::option::of(prop::sample::select(vec![
        kumo_api::exec::PROTOCOL,
        "websocket",
        "",
    ]));
    let raw = prop::option::of(prop::collection::vec(any::<u8>(), 0..12));
    (content_type, upgrade, raw).prop_map(|(ct, up, raw)| {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        if let Some(up) = up {
            h.insert(header::UPGRADE, HeaderValue::from_static(up));
        }
        // A content type that is not text (obs-text bytes), as a client may send.
        if let Some(v) = raw.and_then(|r| HeaderValue::from_bytes(&r).ok()) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h
    })
}

/// Percent-encodes every byte but unreserved ones, as clients do for query values.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_request_is_parsed_or_a_4xx(m in method(), p in path(), q in query(), h in headers()) {
        if let Err(e) = parse(&m, &p, q.as_deref(), &h) {
            prop_assert!((400..500).contains(&e.code()), "{m} {p}?{q:?}: {} {}", e.code(), e.0.message);
        }
    }

    #[test]
    fn built_paths_parse_to_their_kind(
        which in any::<prop::sample::Index>(),
        ns in text_of("abcz019-", 10).prop_filter("a segment", |s| !s.is_empty()),
        name in text_of("abcz019-.", 12).prop_filter("a segment", |s| !s.is_empty() && s != "." && s != ".."),
    ) {
        let kind = which.get(kumo_api::kinds());
        let ns = kind.namespaced.then_some(ns.as_str());
        let collection = collection_path(kind.group, kind.version, kind.plural, ns);
        let headers = HeaderMap::new();
        match parse(&Method::GET, &collection, None, &headers) {
            Ok(ApiRequest::List { kind: k, ns: got_ns, .. }) => {
                prop_assert_eq!(k.kind, kind.kind);
                prop_assert_eq!(got_ns.as_deref(), ns);
            }
            other => prop_assert!(false, "{collection}: {other:?}"),
        }
        let object = format!("{collection}/{name}");
        match parse(&Method::DELETE, &object, Some("gracePeriodSeconds=3"), &headers) {
            Ok(ApiRequest::Delete { kind: k, name: got, grace_period_seconds, .. }) => {
                prop_assert_eq!(k.kind, kind.kind);
                prop_assert_eq!(got, name);
                prop_assert_eq!(grace_period_seconds, Some(3));
            }
            other => prop_assert!(false, "{object}: {other:?}"),
        }
    }

    #[test]
    fn percent_decoding_undoes_encoding(s in any_text(24)) {
        prop_assert_eq!(percent_decode(&encode(&s)), Some(s));
    }

    #[test]
    fn percent_decoding_never_panics(s in text_of("%0aF+é\u{0}zZ9", 16)) {
        let _ = percent_decode(&s);
    }

    /// A selector sent percent-encoded arrives as the selector it was.
    #[test]
    fn selectors_in_queries_arrive_intact(
        key in text_of("abcxyz", 4), value in text_of("abcxyz019", 5), neq in any::<bool>(),
        container in any_text(8).prop_filter("not empty", |s| !s.is_empty()),
    ) {
        let selector = format!("k{key}{}{value}", if neq { "!=" } else { "=" });
        let raw = format!("labelSelector={}&container={}&watch=true", encode(&selector), encode(&container));
        let q = Query::parse(Some(&raw)).unwrap();
        prop_assert_eq!(q.label_selector, LabelSelector::parse(&selector).unwrap());
        prop_assert_eq!(q.container, Some(container));
        prop_assert!(q.watch);
    }
}
