//! What the app verbs share: the pure edits they make to an App (config, scale, rollback) and
//! the IO of writing one and following the release it makes.

use anyhow::{anyhow, bail};
use kumo_api::app::{App, Release, ReleasePhase, ANNOTATION_CHANGED_BY, ANNOTATION_CHANGE_CAUSE};
use kumo_api::bounds::MAX_DURATION_SECONDS;
use kumo_client::{Client, ListParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// Parses `K=V` pairs; a bad one is an error naming it.
pub fn parse_pairs(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("{p:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            bail!("{p:?} has an empty key");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses `process=N` pairs and checks them against the app's processes.
pub fn parse_scale(app: &App, pairs: &[String]) -> anyhow::Result<BTreeMap<String, i32>> {
    let mut out = BTreeMap::new();
    for (process, n) in parse_pairs(pairs)? {
        if !app.spec.processes.contains_key(&process) {
            let known: Vec<&str> = app.spec.processes.keys().map(String::as_str).collect();
            bail!(
                "app {} has no process {process:?} (it has: {})",
                app.metadata.name,
                known.join(", ")
            );
        }
        let n: i32 =
            n.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                anyhow!("{process}={n}: replicas must be a whole number, 0 or more")
            })?;
        out.insert(process, n);
    }
    if out.is_empty() {
        bail!("say what to scale: kumo scale APP web=3 worker=1");
    }
    Ok(out)
}

/// The app with `release`'s image, config and process shape: what a rollback writes.
pub fn restore(app: &App, release: &Release) -> App {
    let mut app = app.clone();
    let c = &release.spec.content;
    app.spec.image = c.image.clone();
    app.spec.runtime_class_name = c.runtime_class_name.clone();
    app.spec.processes = c.processes.clone();
    app.spec.env = c.env.clone();
    app.spec.resources = c.resources.clone();
    app.spec.healthcheck = c.healthcheck.clone();
    app
}

/// Parses `v3` or `3`.
pub fn parse_version(text: &str) -> anyhow::Result<i64> {
    text.trim_start_matches('v')
        .parse()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| anyhow!("{text:?} is not a release version: write it like v3"))
}

/// The release to roll back to: the one named, else the one before the active release.
pub fn rollback_target<'a>(
    app: &App,
    releases: &'a [Release],
    version: Option<i64>,
) -> anyhow::Result<&'a Release> {
    let name = &app.metadata.name;
    match version {
        Some(v) => releases
            .iter()
            .find(|r| r.spec.version == v)
            .ok_or_else(|| anyhow!("app {name} has no release v{v} (see kumo releases {name})")),
        None => {
            let active = app
                .status
                .as_ref()
                .and_then(|s| s.active_release)
                .ok_or_else(|| anyhow!("app {name} has no active release to roll back from"))?;
            releases
                .iter()
                .filter(|r| r.spec.version < active)
                .filter(|r| r.status.as_ref().map(|s| s.phase) != Some(ReleasePhase::Abandoned))
                .max_by_key(|r| r.spec.version)
                .ok_or_else(|| anyhow!("app {name} has no release before v{active}"))
        }
    }
}

/// The app's releases, oldest first.
pub async fn releases(client: &Client, ns: &str, app: &str) -> anyhow::Result<Vec<Release>> {
    let mut items = client
        .list::<Release>(
            Some(ns),
            &ListParams::labels(&format!("{}={app}", kumo_api::app::LABEL_APP)),
        )
        .await?
        .items;
    items.retain(|r| r.spec.app == app);
    items.sort_by_key(|r| r.spec.version);
    Ok(items)
}

/// Who is making a change: `$USER@host`, as Heroku names the user.
fn who() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match host.trim() {
        "" => user,
        h => format!("{user}@{h}"),
    }
}

/// Writes `edit` to the app (retrying on conflicts), noting who made it and, when given, what
/// it is. Returns the app as it was and as stored.
pub async fn update_app(
    client: &Client,
    ns: &str,
    name: &str,
    cause: Option<&str>,
    edit: impl Fn(&App) -> anyhow::Result<App>,
) -> anyhow::Result<(App, App)> {
    for _ in 0..5 {
        let old: App = client.get(ns, name).await?;
        let mut new = edit(&old)?;
        if new.spec == old.spec {
            return Ok((old.clone(), old));
        }
        let a = &mut new.metadata.annotations;
        a.insert(ANNOTATION_CHANGED_BY.into(), who());
        match cause {
            Some(c) => a.insert(ANNOTATION_CHANGE_CAUSE.into(), c.into()),
            None => a.remove(ANNOTATION_CHANGE_CAUSE),
        };
        match client.update(&new).await {
            Ok(stored) => return Ok((old, stored)),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("app {name} kept changing under this update; try again")
}

/// Waits for the release an update made (a version above `after`) and returns it.
pub async fn wait_release(
    client: &Client,
    ns: &str,
    app: &str,
    after: i64,
) -> anyhow::Result<Release> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = releases(client, ns, app)
            .await?
            .into_iter()
            .rfind(|r| r.spec.version > after)
        {
            return Ok(r);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no release of app {app} appeared; is the app controller running?");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The latest release version an app has, 0 for none.
pub async fn latest_version(client: &Client, ns: &str, app: &str) -> anyhow::Result<i64> {
    Ok(releases(client, ns, app)
        .await?
        .last()
        .map_or(0, |r| r.spec.version))
}

/// Follows the rollout of release `version`, printing each new state; `Ok(true)` once it
/// serves, `Ok(false)` when it was abandoned.
pub async fn follow_rollout(
    client: &Client,
    ns: &str,
    app: &str,
    version: i64,
) -> anyhow::Result<bool> {
    let mut last = String::new();
    let mut deadline = None;
    loop {
        let a: App = client.get(ns, app).await?;
        // The controller abandons a release at its deadline; past that and a grace, it is down.
        // Held to the bound: an app stored before it may ask for i64::MAX seconds, and an
        // `Instant` plus that panics.
        let timeout = (a.spec.deploy.timeout_seconds()).clamp(0, MAX_DURATION_SECONDS);
        let limit = Duration::from_secs(timeout as u64 + 30);
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + limit);
        if tokio::time::Instant::now() > deadline {
            bail!("release v{version} of app {app} neither served nor was abandoned in {limit:?}; is the app controller running?");
        }
        let status = a.status.clone().unwrap_or_default();
        let rel: Option<Release> = client
            .get_opt(ns, &kumo_api::app::release_name(app, version))
            .await?;
        let phase = rel
            .as_ref()
            .and_then(|r| r.status.as_ref())
            .map(|s| s.phase);
        if phase == Some(ReleasePhase::Abandoned) {
            let why = rel
                .and_then(|r| r.status.and_then(|s| s.message))
                .unwrap_or_default();
            eprintln!("{why}");
            return Ok(false);
        }
        if status.active_release.is_some_and(|v| v >= version) {
            super::out(format!("v{version} is serving"));
            return Ok(true);
        }
        let line = status
            .message
            .unwrap_or_else(|| format!("deploying v{version}"));
        if line != last {
            super::out(&line);
            last = line;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app() -> App {
        serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"image": "a:1", "processes": {"web": {"port": 80}, "worker": {"command": ["w"]}}},
            "status": {"activeRelease": 3}}))
        .unwrap()
    }

    fn release(v: i64, abandoned: bool) -> Release {
        serde_json::from_value(json!({"metadata": {"name": format!("web-v{v}")},
            "spec": {"app": "web", "version": v, "image": format!("a:{v}"), "env": {"V": v.to_string()},
                     "processes": {"web": {"port": 80, "replicas": 2}}},
            "status": {"phase": if abandoned {"Abandoned"} else {"Superseded"}}}))
        .unwrap()
    }

    fn err<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn scale_checks_every_pair_first() {
        let a = app();
        let s = |p: &[&str]| parse_scale(&a, &p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["web=3", "worker=0"]).unwrap().len(), 2);
        assert_eq!(
            err(s(&["db=1"])),
            "app web has no process \"db\" (it has: web, worker)"
        );
        assert_eq!(
            err(s(&["web=-1"])),
            "web=-1: replicas must be a whole number, 0 or more"
        );
        assert_eq!(err(s(&["web"])), "\"web\" is not KEY=VALUE");
    }

    #[test]
    fn rollback_restores_image_config_and_processes() {
        let rels = [release(1, false), release(2, true), release(3, false)];
        let a = app();
        let target = rollback_target(&a, &rels, None).unwrap();
        assert_eq!(target.spec.version, 1, "the abandoned v2 never served");
        let restored = restore(&a, target);
        assert_eq!(restored.spec.image.as_deref(), Some("a:1"));
        assert_eq!(restored.spec.env["V"], "1");
        assert_eq!(restored.spec.processes.len(), 1);
        assert_eq!(rollback_target(&a, &rels, Some(3)).unwrap().spec.version, 3);
        assert_eq!(
            err(rollback_target(&a, &rels, Some(9))),
            "app web has no release v9 (see kumo releases web)"
        );
        assert_eq!(parse_version("v2").unwrap(), 2);
        assert_eq!(
            err(parse_version("two")),
            "\"two\" is not a release version: write it like v3"
        );
    }
}
