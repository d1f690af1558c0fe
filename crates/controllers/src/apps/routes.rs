//! The App routing policy, pure: Apps and their pods → the router's route table. Each domain
//! of an app goes to the ready `web` replicas of its active release (both releases during a
//! Rolling deploy); replicas the plan drains out (`kumo.dev/drain-until`) and those of the
//! release it replaced get no new requests. It reads the state the App plan writes (the App's
//! status, the replicas' labels and annotations); the binary's router loop feeds it.

use kumo_api::app::{App, DeployStrategy, Protocol, WEB_PROCESS};
use kumo_api::keys::{
    format_release, parse_port, ANNOTATION_ASSIGNED_PORT, ANNOTATION_DRAIN_UNTIL,
    ANNOTATION_PROTOCOL, LABEL_APP, LABEL_PROCESS, LABEL_RELEASE,
};
use kumo_api::meta::find_condition;
use kumo_api::{ConditionStatus, Pod};
use kumo_router::{BackendProtocol, Endpoint, Route, RouteTable};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Time a backend has to answer with its response head.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a ready pod of an app serves: its IP and the port the agent gave it (process
/// runtime) or its `PORT`.
pub fn pod_endpoint(pod: &Pod) -> Option<SocketAddr> {
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let port = match pod.metadata.annotations.get(ANNOTATION_ASSIGNED_PORT) {
        Some(p) => parse_port(p)?,
        None => pod
            .spec
            .containers
            .first()?
            .env
            .iter()
            .rev()
            .find(|e| e.name == "PORT")?
            .value
            .parse()
            .ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.status == ConditionStatus::True)
}

/// The routes for `apps`: each domain of an app goes to the ready `web` replicas of its active
/// release; the ready replicas of the release it replaced drain (no new requests). Also the
/// apps whose route panicked (left out of the table), as (route name, the panic's message):
/// one app never takes the others' routes with it.
pub fn route_table(apps: &[App], pods: &[Pod]) -> (RouteTable, Vec<(String, String)>) {
    let mut routes = Vec::new();
    let mut failed = Vec::new();
    for app in apps {
        match kumo_client::guard_pure(|| app_route(app, pods)) {
            Ok(Some(route)) => routes.push(route),
            Ok(None) => {}
            Err(why) => failed.push((route_name(app), why)),
        }
    }
    routes.sort_by(|a, b| a.app.cmp(&b.app));
    (RouteTable { routes }, failed)
}

/// The name of an app's route: `name` in the default namespace, else `ns/name`.
fn route_name(app: &App) -> String {
    let ns = app.metadata.ns();
    if ns == kumo_api::DEFAULT_NAMESPACE {
        app.metadata.name.clone()
    } else {
        format!("{ns}/{}", app.metadata.name)
    }
}

/// One app's route (`None`: it has no domain, or it is going).
fn app_route(app: &App, pods: &[Pod]) -> Option<Route> {
    {
        if app.spec.domains.is_empty() || app.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let ns = app.metadata.ns();
        let status = app.status.clone().unwrap_or_default();
        let web = |p: &&Pod| {
            let l = &p.metadata.labels;
            p.metadata.ns() == ns
                && l.get(LABEL_APP) == Some(&app.metadata.name)
                && l.get(LABEL_PROCESS).map(String::as_str) == Some(WEB_PROCESS)
                && is_ready(p)
        };
        // Ready web replicas of a release, but not those the controller is draining out.
        let web_of = |release: Option<i64>| -> Vec<&Pod> {
            let Some(v) = release else {
                return Vec::new();
            };
            let v = format_release(v);
            let mut out: Vec<&Pod> = pods
                .iter()
                .filter(web)
                .filter(|p| p.metadata.labels.get(LABEL_RELEASE) == Some(&v))
                .filter(|p| !p.metadata.annotations.contains_key(ANNOTATION_DRAIN_UNTIL))
                .collect();
            out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            out
        };
        let endpoints = |pods: Vec<&Pod>| -> Vec<Endpoint> {
            pods.iter()
                .filter_map(|p| Some(Endpoint::new(pod_endpoint(p)?, p.metadata.name.clone())))
                .collect()
        };
        let mut serving = web_of(status.active_release);
        // A rolling update serves from both releases while the new one comes up.
        let rolling = app.spec.deploy.strategy == DeployStrategy::Rolling
            && status.phase.as_deref() == Some("Deploying");
        if rolling && status.latest_release != status.active_release {
            serving.extend(web_of(status.latest_release));
        }
        let protocol = serving
            .first()
            .and_then(|p| p.metadata.annotations.get(ANNOTATION_PROTOCOL))
            .map(|p| p == Protocol::H2c.as_str())
            .unwrap_or_else(|| {
                app.spec.processes.get(WEB_PROCESS).and_then(|p| p.protocol) == Some(Protocol::H2c)
            });
        let mut endpoints_now = endpoints(serving);
        let mut leaving = web_of(status.draining.map(|d| d.release));
        leaving.extend(
            pods.iter()
                .filter(web)
                .filter(|p| p.metadata.annotations.contains_key(ANNOTATION_DRAIN_UNTIL)),
        );
        let mut draining = endpoints(leaving);
        // Just after a switch this router's pod cache may not show the new replicas ready yet
        // (the App's watch can run ahead of the pods'): the old ones serve until it does.
        if endpoints_now.is_empty() {
            endpoints_now = std::mem::take(&mut draining);
        }
        Some(Route {
            app: route_name(app),
            hosts: app.spec.domains.clone(),
            path_prefix: None,
            protocol: if protocol {
                BackendProtocol::H2c
            } else {
                BackendProtocol::Http1
            },
            endpoints: endpoints_now,
            timeout: ROUTE_TIMEOUT,
            draining,
        })
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
