//! The app controller's loop: App, Release and Pod informers feed a queue of app keys; each
//! reconcile acts out `plan` through the API and says when to look again. It runs on the
//! client's controller runtime: a reconcile that fails or panics for one app is logged,
//! counted and retried with back-off; the others go on.

use super::plan::{plan, Plan};
use crate::replica_failure;
use kumo_api::app::{App, Release};
use kumo_api::keys::{format_time, ANNOTATION_DRAIN_UNTIL, LABEL_APP, LABEL_ONE_OFF};
use kumo_api::{Pod, Time};
use kumo_client::{
    Client, ClientError, Controller, EventRecorder, Failure, Informer, ListParams, Retry,
};
use std::future::Future;
use std::time::Duration;

/// The pure core a loop acts out (`plan`; tests put one in that panics for an app).
pub(crate) type PlanFn = fn(&App, &[Release], &[Pod], Time) -> Plan;

/// First retry of a failed reconcile; it doubles per consecutive failure up to `RETRY_MAX`.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long a reconcile waits for the informers to show its own writes.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Waits until the informers show what this reconcile wrote, so the next pass plans from it
/// (and never, say, creates a replica twice because the first is not in the cache yet).
async fn caught_up(seen: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    while !seen() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the app controller until `shutdown` completes.
pub async fn run(client: Client, shutdown: impl Future<Output = ()> + Send) {
    run_with(client, plan, shutdown).await
}

pub(crate) async fn run_with(
    client: Client,
    plan: PlanFn,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (apps, app_changes) = Informer::<App>::start(client.clone(), None, ListParams::default());
    let (releases, release_changes) =
        Informer::<Release>::start(client.clone(), None, ListParams::default());
    let (pods, pod_changes) =
        Informer::<Pod>::start(client.clone(), None, ListParams::labels(LABEL_APP));
    let recorder = EventRecorder::new(client.clone(), "app-controller", None);
    let all_apps = apps.clone();
    let controller = Controller::new(RETRY_BASE, RETRY_MAX)
        .watches(&apps, app_changes, |a: &App| {
            Some(kumo_client::cache_key(a))
        })
        .watches(&releases, release_changes, |r: &Release| {
            Some(format!("{}/{}", r.metadata.ns(), r.spec.app))
        })
        .watches(&pods, pod_changes, |p: &Pod| {
            let app = p.metadata.labels.get(LABEL_APP)?;
            Some(format!("{}/{app}", p.metadata.ns()))
        })
        .initial(move || all_apps.list().iter().map(kumo_client::cache_key).collect());
    let (client, recorder) = (&client, &recorder);
    let informers = (&apps, &releases, &pods);
    let each =
        |key: String| async move { reconcile(client, recorder, informers, plan, &key).await };
    controller.run(each, report, shutdown).await
}

/// How a failed reconcile is logged.
fn report(key: &String, failure: &Failure<ClientError>, retry: &Retry) {
    let (delay, failures) = (retry.delay, retry.total);
    match failure {
        // Another writer came first: routine, the retry reads the new version.
        Failure::Error(e) if e.is_conflict() => {
            tracing::debug!(app = %key, error = %failure, retry_in = ?delay, failures, "app reconcile failed")
        }
        Failure::Error(_) => {
            tracing::warn!(app = %key, error = %failure, retry_in = ?delay, failures, "app reconcile failed")
        }
        Failure::Panic(_) => {
            tracing::error!(app = %key, error = %failure, retry_in = ?delay, failures, "app reconcile panicked")
        }
    }
}

/// An app that is gone takes its replicas, one-off pods and releases with it.
async fn remove_app(
    client: &Client,
    releases: &Informer<Release>,
    pods: &Informer<Pod>,
    key: &str,
) -> Result<Option<Duration>, ClientError> {
    let Some((ns, name)) = key.split_once('/') else {
        return Ok(None);
    };
    let mine = |meta: &kumo_api::ObjectMeta| {
        meta.ns() == ns && meta.labels.get(LABEL_APP).map(String::as_str) == Some(name)
    };
    for p in pods.list().iter().filter(|p| mine(&p.metadata)) {
        if p.metadata.deletion_timestamp.is_none() {
            match client
                .delete::<Pod>(
                    ns,
                    &p.metadata.name,
                    Some(super::pods::REPLICA_GRACE_SECONDS),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    for r in releases.list().iter().filter(|r| mine(&r.metadata)) {
        match client.delete::<Release>(ns, &r.metadata.name, None).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

async fn reconcile(
    client: &Client,
    recorder: &EventRecorder,
    (apps, releases, pods): (&Informer<App>, &Informer<Release>, &Informer<Pod>),
    plan: PlanFn,
    key: &str,
) -> Result<Option<Duration>, ClientError> {
    let Some(app) = apps
        .get(key)
        .filter(|a| a.metadata.deletion_timestamp.is_none())
    else {
        return remove_app(client, releases, pods, key).await;
    };
    let ns = app.metadata.ns().to_string();
    let name = app.metadata.name.clone();
    let rels: Vec<Release> = releases
        .list()
        .into_iter()
        .filter(|r| r.metadata.ns() == ns && r.spec.app == name)
        .collect();
    let app_pods: Vec<Pod> = pods
        .list()
        .into_iter()
        .filter(|p| {
            p.metadata.ns() == ns
                && p.metadata.labels.get(LABEL_APP) == Some(&name)
                && !p.metadata.labels.contains_key(LABEL_ONE_OFF)
        })
        .collect();
    let p = plan(&app, &rels, &app_pods, chrono::Utc::now());
    if let Some(r) = &p.new_release {
        match client.create(r).await {
            Ok(created) => {
                let key = kumo_client::cache_key(&created);
                caught_up(|| releases.get(&key).is_some()).await;
            }
            // Made by an earlier pass the informer has not shown yet.
            Err(e) if e.is_conflict() => return Ok(Some(Duration::from_millis(200))),
            Err(e) => return Err(e),
        }
    }
    // Release status first: an abandoned release must be marked before its pods go.
    for (rname, status) in &p.release_status {
        if let Some(mut r) = releases.get(&format!("{ns}/{rname}")) {
            r.status = Some(status.clone());
            let stored = client.update_status(&r).await?;
            let rv = stored.metadata.revision();
            caught_up(|| {
                releases
                    .get(&format!("{ns}/{rname}"))
                    .is_some_and(|r| r.metadata.revision() >= rv)
            })
            .await;
        }
    }
    if app.status.as_ref() != Some(&p.status) && p.new_release.is_none() {
        let mut updated = app.clone();
        updated.status = Some(p.status.clone());
        let stored = client.update_status(&updated).await?;
        let rv = stored.metadata.revision();
        caught_up(|| apps.get(key).is_some_and(|a| a.metadata.revision() >= rv)).await;
    }
    for pod in &p.create {
        let created = match client.create(pod).await {
            Ok(created) => created,
            Err(e) => {
                // Say so where the user looks; the reconcile is retried with back-off.
                let message = format!("cannot create a replica: {e}");
                if replica_failure::is_refusal(&e) {
                    replica_failure::mark(client, apps, key, Some(&message)).await;
                }
                recorder
                    .record(
                        &app,
                        kumo_client::EventType::Warning,
                        "FailedCreate",
                        message,
                    )
                    .await;
                return Err(e);
            }
        };
        let key = kumo_client::cache_key(&created);
        caught_up(|| pods.get(&key).is_some()).await;
    }
    if !p.create.is_empty() {
        replica_failure::mark(client, apps, key, None).await;
    }
    for (pname, until) in &p.drain {
        let stamp = format_time(*until);
        let patch =
            serde_json::json!({"metadata": {"annotations": {ANNOTATION_DRAIN_UNTIL: stamp}}});
        match client.patch::<Pod>(&ns, pname, &patch).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
        let key = format!("{ns}/{pname}");
        caught_up(|| {
            pods.get(&key)
                .is_none_or(|p| super::pods::drain_until(&p).is_some())
        })
        .await;
    }
    for (pname, grace) in &p.delete {
        match client.delete::<Pod>(&ns, pname, Some(*grace)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let key = format!("{ns}/{pname}");
        caught_up(|| {
            pods.get(&key)
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        })
        .await;
    }
    // Events once what they tell has happened.
    for (type_, reason, message) in &p.events {
        recorder.record(&app, *type_, reason, message.clone()).await;
    }
    Ok(p.requeue_after)
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
