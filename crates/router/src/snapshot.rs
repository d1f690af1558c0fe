//! The route table compiled for lookups: host → routes by descending prefix length, with the
//! endpoints' shared state carried over from the previous snapshot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::balance::EndpointState;
use crate::metrics::{AppMetrics, Metrics};
use crate::table::{BackendProtocol, RouteTable};

/// One route, ready to serve.
#[derive(Debug)]
pub(crate) struct Target {
    pub app: Arc<str>,
    /// The app's metric series, looked up once here rather than per request.
    pub metrics: Arc<AppMetrics>,
    /// Normalized: starts with `/`, no trailing `/`; empty for "every path".
    prefix: String,
    pub protocol: BackendProtocol,
    pub timeout: Duration,
    /// Endpoints that get new requests (draining ones are left out).
    pub endpoints: Vec<Arc<EndpointState>>,
}

impl Target {
    fn matches(&self, path: &str) -> bool {
        self.prefix.is_empty()
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

type StateKey = (SocketAddr, String);

/// The routes of one host.
#[derive(Debug)]
struct Host {
    /// The host as a header value, for `X-Forwarded-Host` without a copy per request.
    header: HeaderValue,
    targets: Vec<Arc<Target>>,
}

/// A matched route and the host it was found under.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub host: HeaderValue,
    pub target: Arc<Target>,
}

#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    hosts: HashMap<String, Host>,
    /// Every endpoint named by the table, draining ones included.
    states: HashMap<StateKey, Arc<EndpointState>>,
}

impl Snapshot {
    /// Compiles `table`, reusing the state of endpoints that `previous` already knew.
    pub fn build(table: &RouteTable, previous: &Snapshot, metrics: &Arc<Metrics>) -> Snapshot {
        let mut states: HashMap<StateKey, Arc<EndpointState>> = HashMap::new();
        let mut state_of = |e: &crate::table::Endpoint| {
            let key = (e.addr, e.id.clone());
            states
                .entry(key.clone())
                .or_insert_with(|| {
                    previous
                        .states
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(EndpointState::new(e.clone())))
                })
                .clone()
        };
        let mut hosts: HashMap<String, Host> = HashMap::new();
        for route in &table.routes {
            for e in &route.draining {
                state_of(e);
            }
            let mut endpoints: Vec<Arc<EndpointState>> = Vec::new();
            for e in &route.endpoints {
                let draining = route.draining.contains(e);
                let state = state_of(e);
                if !draining && !endpoints.iter().any(|s| Arc::ptr_eq(s, &state)) {
                    endpoints.push(state);
                }
            }
            let target = Arc::new(Target {
                app: Arc::from(route.app.as_str()),
                metrics: metrics.app(&route.app),
                prefix: normalize_prefix(route.path_prefix.as_deref()),
                protocol: route.protocol,
                timeout: route.timeout,
                endpoints,
            });
            for host in &route.hosts {
                let Some(host) = normalize_host(host) else {
                    tracing::warn!(app = %route.app, host = %host, "ignoring an invalid route host");
                    continue;
                };
                let Ok(header) = HeaderValue::from_str(&host) else {
                    continue;
                };
                let targets = &mut hosts
                    .entry(host.clone())
                    .or_insert_with(|| Host {
                        header,
                        targets: Vec::new(),
                    })
                    .targets;
                if targets.iter().any(|t| t.prefix == target.prefix) {
                    tracing::warn!(app = %route.app, host = %host, "ignoring a duplicate route (the first one wins)");
                    continue;
                }
                targets.push(target.clone());
            }
        }
        for host in hosts.values_mut() {
            // Stable: among equal lengths the table's order stays.
            host.targets
                .sort_by_key(|t| std::cmp::Reverse(t.prefix.len()));
        }
        Snapshot { hosts, states }
    }

    /// The route for a normalized host and a request path: the longest matching prefix.
    pub fn find(&self, host: &str, path: &str) -> Option<Found> {
        let h = self.hosts.get(host)?;
        let target = h.targets.iter().find(|t| t.matches(path))?;
        Some(Found {
            host: h.header.clone(),
            target: target.clone(),
        })
    }
}

fn normalize_prefix(prefix: Option<&str>) -> String {
    let p = prefix.unwrap_or("").trim_end_matches('/');
    if p.is_empty() || p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// A host (from a route, a Host header or an `:authority`) without port, trailing dot or case;
/// `None` when it is not a valid authority.
pub(crate) fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    match plain_host(raw) {
        Some(host) => Some(host.to_string()),
        None => parsed_host(raw),
    }
}

fn parsed_host(raw: &str) -> Option<String> {
    let authority: http::uri::Authority = raw.trim().parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// The common case without parsing a URI authority: a lower-case DNS name or IPv4 address,
/// maybe with a port, is its own normalized host less the port and a trailing dot.
fn plain_host(raw: &str) -> Option<&str> {
    let (host, port) = match raw.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (raw, None),
    };
    let port_ok =
        port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let host = host.trim_end_matches('.');
    (port_ok && host_ok && !host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Endpoint, Route};

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new())
    }

    fn route(app: &str, hosts: &[&str], prefix: Option<&str>) -> Route {
        Route {
            app: app.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path_prefix: prefix.map(str::to_string),
            protocol: BackendProtocol::Http1,
            endpoints: vec![],
            timeout: Duration::ZERO,
            draining: vec![],
        }
    }

    fn check(table: &RouteTable, host: &str, path: &str, want: Option<&str>) {
        let snap = Snapshot::build(table, &Snapshot::default(), &metrics());
        let got = normalize_host(host)
            .and_then(|h| snap.find(&h, path).map(|f| f.target.app.to_string()));
        assert_eq!(got.as_deref(), want, "{host} {path}");
    }

    #[test]
    fn host_and_longest_prefix() {
        let table = RouteTable {
            routes: vec![
                route("web", &["Web.Example.test"], None),
                route("api", &["web.example.test"], Some("/api")),
                route("v2", &["web.example.test:8080"], Some("/api/v2/")),
                route("dup", &["web.example.test"], Some("api")),
                route("bad", &["a b"], None),
            ],
        };
        check(&table, "web.example.test", "/", Some("web"));
        check(&table, "WEB.example.test:80", "/x", Some("web"));
        check(&table, "web.example.test.", "/api", Some("api"));
        check(&table, "web.example.test", "/api/users", Some("api"));
        check(&table, "web.example.test", "/apix", Some("web"));
        check(&table, "web.example.test", "/api/v2/x", Some("v2"));
        check(&table, "web.example.test", "/api/v2", Some("v2"));
        check(&table, "other.test", "/", None);
        check(&table, "a b", "/", None);
        check(&table, "[::1]:8080", "/", None);
    }

    #[test]
    fn normalizes_hosts() {
        for (raw, want) in [
            ("Example.TEST", Some("example.test")),
            ("example.test:8080", Some("example.test")),
            ("[::1]:80", Some("[::1]")),
            ("user@example.test", None),
            ("", None),
            ("exa mple", None),
            (":80", None),
            ("example.test.:80", Some("example.test")),
            ("...", None),
            ("10.0.0.1:8080", Some("10.0.0.1")),
        ] {
            assert_eq!(normalize_host(raw).as_deref(), want, "{raw:?}");
        }
        // The shortcut agrees with the parser wherever it answers.
        for raw in [
            "a.test",
            "a.test:80",
            "a.test.",
            "a.test:",
            "a.test:80:80",
            "a.test:123456",
            "a.test:65535",
            "a-b.test:0",
            "1.2.3.4",
            ".",
            "a..test",
            "-a.test",
            "a.test:8o",
        ] {
            if let Some(host) = plain_host(raw) {
                assert_eq!(Some(host.to_string()), parsed_host(raw), "{raw:?}");
            }
        }
    }

    #[test]
    fn endpoint_state_survives_a_swap_and_draining_is_not_picked() {
        let a = Endpoint::new("127.0.0.1:1".parse().unwrap(), "a");
        let b = Endpoint::new("127.0.0.1:2".parse().unwrap(), "b");
        let mut r = route("web", &["w.test"], None);
        r.endpoints = vec![a.clone(), b.clone()];
        let first = Snapshot::build(
            &RouteTable {
                routes: vec![r.clone()],
            },
            &Snapshot::default(),
            &metrics(),
        );
        r.endpoints = vec![b.clone()];
        r.draining = vec![a.clone()];
        let second = Snapshot::build(&RouteTable { routes: vec![r] }, &first, &metrics());
        let t1 = first.find("w.test", "/").unwrap().target;
        let t2 = second.find("w.test", "/").unwrap().target;
        assert_eq!(t2.endpoints.len(), 1);
        assert!(Arc::ptr_eq(&t1.endpoints[1], &t2.endpoints[0]));
        assert!(second.states.contains_key(&(a.addr, a.id)));
    }
}
