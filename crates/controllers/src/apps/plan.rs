//! The pure rollout core: from an App, its Releases, its pods and the time, what to write.
//!
//! One pass decides one step: make the next release if the app changed; otherwise keep the
//! active release's replicas at the app's counts, bring the newest release's replicas up, switch
//! traffic when they are all ready (or abandon the release at its deadline), and remove the
//! replicas of old releases once drained.

use super::pods::{
    delete_grace, drain_until, pod_process, pod_release, replica, replica_state, ReplicaState,
};
use kumo_api::app::{
    release_name, App, AppStatus, DeployStrategy, Drain, Release, ReleaseContent, ReleasePhase,
    ReleaseSpec, ReleaseStatus,
};
use kumo_api::bounds::{MAX_DURATION_SECONDS, MAX_REPLICAS};
use kumo_api::keys::{
    ANNOTATION_CHANGED_BY, ANNOTATION_CHANGE_CAUSE, ANNOTATION_EVICTION_REQUESTED, LABEL_APP,
};
use kumo_api::meta::set_condition;
use kumo_api::{Condition, ConditionStatus, ObjectMeta, Pod, Time};
use kumo_client::{clock, EventType};
use std::collections::BTreeMap;
use std::time::Duration;

/// Everything one reconcile of an app writes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// A release to create; when set, nothing else is planned this pass.
    pub new_release: Option<Release>,
    pub create: Vec<Pod>,
    /// Pods to delete, with their grace period in seconds.
    pub delete: Vec<(String, i64)>,
    /// Serving replicas to take out of the router first, deleted at the given time.
    pub drain: Vec<(String, Time)>,
    /// New status for releases, by name.
    pub release_status: Vec<(String, ReleaseStatus)>,
    pub status: AppStatus,
    pub events: Vec<(EventType, &'static str, String)>,
    /// Look again then even if nothing changes (deadlines, drains).
    pub requeue_after: Option<Duration>,
}

/// The release to create when the app's spec no longer matches its latest release.
pub fn next_release(app: &App, latest: Option<&Release>) -> Option<Release> {
    let content = ReleaseContent::of(&app.spec);
    if latest.is_some_and(|l| l.spec.content.same_build(&content)) {
        return None;
    }
    let version = latest.map_or(1, |l| l.spec.version + 1);
    let annotations = &app.metadata.annotations;
    let description = annotations
        .get(ANNOTATION_CHANGE_CAUSE)
        .cloned()
        .unwrap_or_else(|| content.describe_change(latest.map(|l| &l.spec.content)));
    let mut release = Release {
        metadata: ObjectMeta {
            name: release_name(&app.metadata.name, version),
            namespace: Some(app.metadata.ns().to_string()),
            ..Default::default()
        },
        spec: ReleaseSpec {
            app: app.metadata.name.clone(),
            version,
            content,
            description,
            changed_by: annotations.get(ANNOTATION_CHANGED_BY).cloned(),
        },
        status: Some(ReleaseStatus::default()),
        ..Default::default()
    };
    kumo_api::Resource::set_type_meta(&mut release);
    release
        .metadata
        .labels
        .insert(LABEL_APP.into(), app.metadata.name.clone());
    Some(release)
}

/// Replicas wanted of each process of `release`: the app's current counts (scaling is not a
/// release), or the release's own for a process the app no longer has; within the API's bound
/// (an object stored before the bound existed may ask for more).
fn wanted(app: &App, release: &Release) -> BTreeMap<String, i32> {
    release
        .spec
        .content
        .processes
        .iter()
        .map(|(name, p)| {
            let n = app
                .spec
                .processes
                .get(name)
                .map_or(p.replicas, |a| a.replicas);
            (name.clone(), n.clamp(0, MAX_REPLICAS))
        })
        .collect()
}

fn phase_of(r: &Release) -> ReleasePhase {
    r.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn cond(type_: &str, ok: bool, reason: &str, message: Option<String>, now: Time) -> Condition {
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    Condition::new(type_, status, Some(reason), message, now)
}

/// How long old replicas drain, within the API's bound (as for `wanted`).
fn drain_seconds(app: &App) -> i64 {
    app.spec
        .deploy
        .drain_seconds()
        .clamp(0, MAX_DURATION_SECONDS)
}

/// `now` plus the app's drain.
fn drain_end(app: &App, now: Time) -> Time {
    clock::add_seconds(now, drain_seconds(app)).unwrap_or(now)
}

/// The replicas that count, by (release version, process): not terminating, not dead, not
/// draining out.
#[derive(Default)]
struct Replicas<'a>(BTreeMap<(i64, String), Vec<&'a Pod>>);

impl<'a> Replicas<'a> {
    fn of(&self, v: i64, process: &str) -> Vec<&'a Pod> {
        self.0
            .get(&(v, process.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    fn ready(&self, v: i64, process: &str) -> i32 {
        self.of(v, process)
            .iter()
            .filter(|p| replica_state(p) == ReplicaState::Ready)
            .count() as i32
    }

    /// `web 2/3, worker 0/1`: ready against wanted.
    fn counts(&self, v: i64, want: &BTreeMap<String, i32>) -> String {
        want.iter()
            .map(|(p, n)| format!("{p} {}/{n}", self.ready(v, p)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Sorts an app's pods: dead ones and drained ones are deleted, draining ones wait, the rest
/// are the replicas that count.
fn sort_pods<'a>(
    pods: &'a [Pod],
    now: Time,
    out: &mut Plan,
    requeue: &mut Vec<Duration>,
) -> (Replicas<'a>, Vec<&'a Pod>) {
    let mut replicas = Replicas::default();
    let mut evicting = Vec::new();
    for pod in pods {
        let (Some(v), Some(p)) = (pod_release(pod), pod_process(pod)) else {
            continue;
        };
        let state = replica_state(pod);
        if let (Some(until), ReplicaState::Ready | ReplicaState::Starting) =
            (drain_until(pod), state)
        {
            // Out of the router already: it goes once its in-flight requests had their time.
            if now >= until {
                out.delete
                    .push((pod.metadata.name.clone(), delete_grace(pod)));
            } else {
                requeue.push(clock::until(until, now));
            }
            continue;
        }
        match state {
            ReplicaState::Terminating => {}
            ReplicaState::Dead => out
                .delete
                .push((pod.metadata.name.clone(), delete_grace(pod))),
            // Evicted: it serves on but no longer counts, so a replacement is made.
            _ if pod
                .metadata
                .annotations
                .contains_key(ANNOTATION_EVICTION_REQUESTED) =>
            {
                evicting.push(pod)
            }
            _ => replicas.0.entry((v, p.to_string())).or_default().push(pod),
        }
    }
    (replicas, evicting)
}

/// Where the rollout stands after this pass.
struct Rollout<'a> {
    /// The release serving traffic.
    active: Option<&'a Release>,
    /// The release being brought up (not yet switched to, not abandoned).
    target: Option<i64>,
    draining: Option<Drain>,
    phase: &'static str,
    message: Option<String>,
    /// Release phases to record, with why.
    phases: Vec<(&'a Release, ReleasePhase, Option<String>)>,
}

/// Moves the rollout one step: switch to the target release when all its replicas are ready,
/// abandon it at its deadline, else wait for it.
fn step<'a>(
    app: &App,
    latest: &'a Release,
    active: Option<&'a Release>,
    draining: Option<Drain>,
    replicas: &Replicas,
    now: Time,
    out: &mut Plan,
) -> Rollout<'a> {
    let mut r = Rollout {
        active,
        target: None,
        draining,
        phase: "Running",
        message: None,
        phases: Vec::new(),
    };
    let is_active = Some(latest.spec.version) == active.map(|a| a.spec.version);
    if is_active {
        return r;
    }
    if phase_of(latest) == ReleasePhase::Abandoned {
        r.phase = "Abandoned";
        r.message = latest.status.as_ref().and_then(|s| s.message.clone());
        return r;
    }
    let t = latest;
    let v = t.spec.version;
    let want = wanted(app, t);
    let timeout = app.spec.deploy.timeout_seconds();
    let started = t.metadata.creation_timestamp.unwrap_or(now);
    // A deadline past the calendar's end (a timeout stored before the bound) never comes.
    let deadline = clock::add_seconds(started, timeout);
    if want.iter().all(|(p, n)| replicas.ready(v, p) >= *n) {
        if let Some(a) = active {
            r.draining = Some(Drain {
                release: a.spec.version,
                until: drain_end(app, now),
            });
            r.phases.push((a, ReleasePhase::Superseded, None));
        }
        r.phases.push((t, ReleasePhase::Active, None));
        out.events.push((
            EventType::Normal,
            "Switched",
            format!("Traffic switched to v{v}"),
        ));
        r.active = Some(t);
    } else if deadline.is_some_and(|d| now >= d) {
        let why = format!(
            "release v{v} abandoned: its replicas were not all ready within {timeout}s ({} ready){}",
            replicas.counts(v, &want),
            match active {
                Some(a) => format!("; v{} keeps serving", a.spec.version),
                None => String::new(),
            }
        );
        r.phases
            .push((t, ReleasePhase::Abandoned, Some(why.clone())));
        out.events
            .push((EventType::Warning, "ReleaseAbandoned", why.clone()));
        r.phase = "Abandoned";
        r.message = Some(why);
    } else {
        r.target = Some(v);
        r.phase = "Deploying";
        r.message = Some(format!(
            "deploying v{v}: {} ready",
            replicas.counts(v, &want)
        ));
        out.requeue_after = deadline.map(|d| clock::until(d, now));
    }
    r
}

/// Brings each release's replicas to what the rollout wants: the active and target releases at
/// their counts (Rolling: one new replica at a time, an old one out per new one ready), a
/// draining release as it is, every other release's removed. Serving replicas drain first.
fn fit_replicas(
    app: &App,
    releases: &[&Release],
    replicas: &Replicas,
    rollout: &Rollout,
    now: Time,
    out: &mut Plan,
    requeue: &mut Vec<Duration>,
) {
    let by_version = |v: i64| releases.iter().copied().find(|r| r.spec.version == v);
    let active_v = rollout.active.map(|a| a.spec.version);
    let target_v = rollout.target;
    let drain_v = rollout.draining.as_ref().map(|d| d.release);
    let drain = drain_seconds(app);
    let mut versions: Vec<i64> = replicas.0.keys().map(|(v, _)| *v).collect();
    versions.extend(active_v);
    versions.extend(target_v);
    versions.sort_unstable();
    versions.dedup();
    for v in versions {
        let keep = Some(v) == active_v || Some(v) == target_v;
        if !keep && Some(v) == drain_v {
            continue;
        }
        let mut want = match (keep, by_version(v)) {
            (true, Some(r)) => wanted(app, r),
            _ => BTreeMap::new(),
        };
        if let (DeployStrategy::Rolling, Some(t)) = (app.spec.deploy.strategy, target_v) {
            for (p, n) in want.iter_mut() {
                let new_ready = replicas.ready(t, p);
                if v == t {
                    *n = (*n).min(new_ready + 1);
                } else if Some(v) == active_v
                    && by_version(t).is_some_and(|r| r.spec.content.processes.contains_key(p))
                {
                    *n = (*n - new_ready).max(0);
                }
            }
        }
        let mut processes: Vec<String> = want.keys().cloned().collect();
        processes.extend(
            replicas
                .0
                .keys()
                .filter(|(gv, _)| *gv == v)
                .map(|(_, p)| p.clone()),
        );
        processes.sort();
        processes.dedup();
        for p in processes {
            let n = want.get(&p).copied().unwrap_or(0) as usize;
            let mut have = replicas.of(v, &p);
            if have.len() > n {
                // Remove the not-yet-ready first, then the newest names.
                have.sort_by_key(|pod| {
                    (
                        replica_state(pod) == ReplicaState::Ready,
                        std::cmp::Reverse(pod.metadata.name.clone()),
                    )
                });
                for pod in &have[..have.len() - n] {
                    let serving = Some(v) == active_v && replica_state(pod) == ReplicaState::Ready;
                    if serving && drain > 0 {
                        out.drain
                            .push((pod.metadata.name.clone(), drain_end(app, now)));
                        requeue.push(Duration::from_secs(drain as u64));
                    } else {
                        out.delete
                            .push((pod.metadata.name.clone(), delete_grace(pod)));
                    }
                }
            } else if let Some(r) = by_version(v) {
                for _ in have.len()..n {
                    out.create.push(replica(app, r, &p));
                }
            }
        }
    }
}

/// Lets evicted replicas go once their release's process has its wanted count Ready without
/// them (the replacement `fit_replicas` made is Ready elsewhere): a serving one drains out of
/// the router first. An evicted replica of a release no longer kept goes at once.
#[allow(clippy::too_many_arguments)]
fn release_evicted(
    app: &App,
    releases: &[&Release],
    replicas: &Replicas,
    rollout: &Rollout,
    evicting: &[&Pod],
    now: Time,
    out: &mut Plan,
    requeue: &mut Vec<Duration>,
) {
    let active_v = rollout.active.map(|a| a.spec.version);
    let drain = drain_seconds(app);
    for pod in evicting {
        let (Some(v), Some(p)) = (pod_release(pod), pod_process(pod)) else {
            continue;
        };
        let kept = (Some(v) == active_v || Some(v) == rollout.target)
            .then(|| releases.iter().find(|r| r.spec.version == v))
            .flatten();
        let replaced = match kept {
            Some(r) => replicas.ready(v, p) >= wanted(app, r).get(p).copied().unwrap_or(0),
            None => true,
        };
        if !replaced {
            continue;
        }
        let serving = Some(v) == active_v && replica_state(pod) == ReplicaState::Ready;
        if serving && drain > 0 {
            out.drain
                .push((pod.metadata.name.clone(), drain_end(app, now)));
            requeue.push(Duration::from_secs(drain as u64));
        } else {
            out.delete
                .push((pod.metadata.name.clone(), delete_grace(pod)));
        }
    }
}

/// The app's status after this pass, with its Available and Progressing conditions.
fn app_status(
    app: &App,
    latest: &Release,
    replicas: &Replicas,
    rollout: Rollout,
    now: Time,
) -> AppStatus {
    let active = rollout.active;
    let phase = match (active, rollout.phase) {
        (None, "Running") => "Pending",
        (_, phase) => phase,
    };
    let ready: BTreeMap<String, i32> = active
        .map(|a| {
            wanted(app, a)
                .keys()
                .map(|p| (p.clone(), replicas.ready(a.spec.version, p)))
                .collect()
        })
        .unwrap_or_default();
    let short: Vec<String> = active
        .map(|a| {
            wanted(app, a)
                .into_iter()
                .filter(|(p, n)| ready.get(p).copied().unwrap_or(0) < *n)
                .map(|(p, n)| format!("{p} {}/{n}", ready.get(&p).copied().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let available = match active {
        None => cond("Available", false, "NoActiveRelease", None, now),
        Some(_) if short.is_empty() => cond("Available", true, "ReplicasReady", None, now),
        Some(_) => cond(
            "Available",
            false,
            "ReplicasUnavailable",
            Some(format!("ready: {}", short.join(", "))),
            now,
        ),
    };
    let message = rollout.message;
    let progressing = match phase {
        "Abandoned" => cond(
            "Progressing",
            false,
            "ReleaseAbandoned",
            message.clone(),
            now,
        ),
        "Deploying" | "Pending" => cond(
            "Progressing",
            true,
            "ReleaseDeploying",
            message.clone(),
            now,
        ),
        _ => cond("Progressing", true, "ReleaseActive", None, now),
    };
    let mut conditions = app.status.clone().unwrap_or_default().conditions;
    set_condition(&mut conditions, available);
    set_condition(&mut conditions, progressing);
    AppStatus {
        active_release: active.map(|a| a.spec.version),
        latest_release: Some(latest.spec.version),
        phase: Some(phase.to_string()),
        message,
        ready,
        draining: rollout.draining,
        conditions,
    }
}

/// The plan for `app`, given its releases, its (non one-off) pods and the time.
pub fn plan(app: &App, releases: &[Release], pods: &[Pod], now: Time) -> Plan {
    let mut releases: Vec<&Release> = releases
        .iter()
        .filter(|r| r.spec.app == app.metadata.name)
        .collect();
    releases.sort_by_key(|r| r.spec.version);
    let latest = releases.last().copied();
    let mut out = Plan::default();
    if let Some(r) = next_release(app, latest) {
        out.status = app.status.clone().unwrap_or_default();
        out.events.push((
            EventType::Normal,
            "ReleaseCreated",
            format!("Release v{}: {}", r.spec.version, r.spec.description),
        ));
        out.new_release = Some(r);
        return out;
    }
    let Some(latest) = latest else {
        return out;
    };
    let old = app.status.clone().unwrap_or_default();
    let active = old
        .active_release
        .and_then(|v| releases.iter().copied().find(|r| r.spec.version == v));

    let mut requeue: Vec<Duration> = Vec::new();
    let (replicas, evicting) = sort_pods(pods, now, &mut out, &mut requeue);
    let mut rollout = step(app, latest, active, old.draining, &replicas, now, &mut out);
    // A drain ends at its time (or when its release serves again, after a rollback).
    let active_v = rollout.active.map(|a| a.spec.version);
    if let Some(d) = &rollout.draining {
        if now >= d.until || Some(d.release) == active_v {
            rollout.draining = None;
        } else {
            requeue.push(clock::until(d.until, now));
        }
    }
    fit_replicas(
        app,
        &releases,
        &replicas,
        &rollout,
        now,
        &mut out,
        &mut requeue,
    );
    release_evicted(
        app,
        &releases,
        &replicas,
        &rollout,
        &evicting,
        now,
        &mut out,
        &mut requeue,
    );

    if let Some(soonest) = requeue.into_iter().min() {
        out.requeue_after = Some(out.requeue_after.map_or(soonest, |r| r.min(soonest)));
    }
    for (r, p, why) in &rollout.phases {
        if phase_of(r) != *p {
            out.release_status.push((
                r.metadata.name.clone(),
                ReleaseStatus {
                    phase: *p,
                    message: why.clone(),
                },
            ));
        }
    }
    // Evicted replicas still serve until they go: the status counts them.
    let mut serving = Replicas(replicas.0.clone());
    for pod in &evicting {
        if let (Some(v), Some(p)) = (pod_release(pod), pod_process(pod)) {
            serving.0.entry((v, p.to_string())).or_default().push(pod);
        }
    }
    out.status = app_status(app, latest, &serving, rollout, now);
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
