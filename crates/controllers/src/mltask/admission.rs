//! Queue admission for MLTasks, as a pure function: which tasks start, which are preempted to
//! give a queue back its quota, and, for every task that waits, its place in line and why.
//!
//! The rules (documented in the README):
//! - Tasks are considered by priority (higher first), then by submission time, those within
//!   their queue's quota before those that would borrow. A task starts only when its whole gang
//!   fits on the free resources at once (`place_gang`).
//! - A queue's `gpuQuota` is guaranteed. A task may borrow idle GPUs beyond its queue's quota;
//!   when a task within its queue's quota does not fit, borrowing tasks of other queues are
//!   preempted, lowest priority first (newest first among equals), until it would fit.
//! - Backfill (EASY): the first task that cannot start gets a reservation: the GPUs it would use
//!   at the earliest time it can start, assuming running tasks end at their
//!   `activeDeadlineSeconds`. A later task may start ahead of it only if it fits without touching
//!   that reservation, or if its own deadline ends before the reserved start. Either way it
//!   cannot delay the first task's start.

use kumo_api::keys::{parse_seconds, ANNOTATION_DEADLINE};
use kumo_api::{Pod, Time};
use kumo_scheduler::{place_gang, NodeView, Resources, Strategy};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A task as admission sees it.
#[derive(Debug, Clone)]
pub struct TaskView {
    /// `namespace/name`.
    pub key: String,
    pub queue: String,
    pub priority: i32,
    pub created: Time,
    /// One pod per replica, as the controller would create them (requests, node selector);
    /// tasks of one shape share them.
    pub replicas: Vec<Arc<Pod>>,
    pub state: TaskState,
}

impl TaskView {
    fn gpus(&self) -> i64 {
        self.replicas
            .iter()
            .map(|p| i64::try_from(Resources::of_pod(p).gpus / 1000).unwrap_or(i64::MAX))
            .fold(0i64, i64::saturating_add)
    }

    fn per_replica_gpus(&self) -> i64 {
        self.replicas.first().map_or(0, |p| {
            i64::try_from(Resources::of_pod(p).gpus / 1000).unwrap_or(i64::MAX)
        })
    }
}

/// Where a task stands.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Waiting to be admitted.
    Pending,
    /// Admitted: its pods hold resources on these nodes (already counted in the node views)
    /// until it ends, at the latest at `ends_by` (its deadline; `None`: no deadline).
    Holding {
        nodes: Vec<String>,
        ends_by: Option<Time>,
        preempting: bool,
    },
}

/// A queue and its guaranteed GPUs (`None`: no guarantee; everything it uses is borrowed).
#[derive(Debug, Clone)]
pub struct QueueView {
    pub name: String,
    pub gpu_quota: Option<i64>,
}

/// Why a task waits and where it stands in its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub position: u32,
    pub reason: String,
}

/// What one admission pass decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Tasks to start now.
    pub admit: Vec<String>,
    /// For each admitted task, the node of each replica, in rank order.
    pub placements: BTreeMap<String, Vec<String>>,
    /// Tasks to stop (gracefully) and put back in their queue, with the reason.
    pub preempt: Vec<(String, String)>,
    /// Every task left waiting (hashed: a long queue's keys share long prefixes).
    pub waiting: HashMap<String, Waiting>,
}

/// Decides one admission pass. `nodes` already count every bound pod, including the pods of
/// tasks in `Holding`.
pub fn admit(tasks: &[TaskView], queues: &[QueueView], nodes: &[NodeView], now: Time) -> Decision {
    let quota: BTreeMap<&str, Option<i64>> = queues
        .iter()
        .map(|q| (q.name.as_str(), q.gpu_quota))
        .collect();
    let mut used: BTreeMap<&str, i64> = BTreeMap::new();
    for t in tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Holding { .. }))
    {
        let u = used.entry(t.queue.as_str()).or_default();
        *u = u.saturating_add(t.gpus());
    }
    let mut views = nodes.to_vec();
    let order: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Pending)
        .collect();
    // Tasks that fit in their queue's guaranteed quota go before tasks that would borrow: else a
    // preempted borrower of higher priority could take back the GPUs just reclaimed from it
    // before the task they were reclaimed for (and be preempted again, forever).
    let borrows = |t: &TaskView| match quota.get(t.queue.as_str()).copied().flatten() {
        Some(q) => {
            used.get(t.queue.as_str())
                .copied()
                .unwrap_or(0)
                .saturating_add(t.gpus())
                > q
        }
        None => true,
    };
    // Whether each borrows is worked out once per task, not once per comparison.
    let mut keyed: Vec<(bool, &TaskView)> = order.into_iter().map(|t| (borrows(t), t)).collect();
    keyed.sort_by(|(ab, a), (bb, b)| {
        ab.cmp(bb)
            .then(b.priority.cmp(&a.priority))
            .then(a.created.cmp(&b.created))
            .then(a.key.cmp(&b.key))
    });
    let order: Vec<&TaskView> = keyed.into_iter().map(|(_, t)| t).collect();

    let mut decision = Decision::default();
    // Tasks whose gang did not fit on `views` as they are now, and the reasons given to waiting
    // tasks: a task shaped like one of them cannot fit either and waits for the same reason.
    // A long queue of alike tasks then costs a comparison per task, not a placement. Both are
    // forgotten whenever `views` change (a task was admitted).
    let mut misfits: Vec<&TaskView> = Vec::new();
    let mut explained: Vec<(&TaskView, Option<&str>, String)> = Vec::new();
    // Each waiting task's reason, by its place in `order`.
    let mut reasons: Vec<Option<String>> = vec![None; order.len()];
    let mut reservation: Option<Reservation> = None;
    let mut preempted: BTreeSet<String> = BTreeSet::new();
    // The first waiting task of each queue, for "waiting behind" reasons.
    let mut ahead: BTreeMap<&str, &TaskView> = BTreeMap::new();

    for (at, task) in order.iter().enumerate() {
        let Some(task_quota) = quota.get(task.queue.as_str()).copied() else {
            reasons[at] = Some(format!(
                "queue {:?} does not exist: create it or submit to another queue",
                task.queue
            ));
            continue;
        };
        let members: Vec<&Pod> = task.replicas.iter().map(|p| &**p).collect();
        let need = task.gpus();
        let fits_now = if misfits.iter().any(|m| same_shape(m, task)) {
            Err(kumo_scheduler::Unschedulable {
                message: String::new(),
            })
        } else {
            place_gang(&members, &views, Strategy::BinPack)
        };
        if fits_now.is_err() && !misfits.iter().any(|m| same_shape(m, task)) {
            misfits.push(task);
        }
        // Backfill: with a reservation in place, a later task must leave it alone or end first.
        let allowed = match (&fits_now, &reservation) {
            (Ok(_), None) => fits_now.clone().ok(),
            (Ok(_), Some(r)) => {
                let around = place_gang(&members, &r.apply(&views), Strategy::BinPack).ok();
                let ends_before =
                    task_deadline(task, now).is_some_and(|end| r.start.is_some_and(|s| end <= s));
                around.or_else(|| ends_before.then(|| fits_now.clone().ok()).flatten())
            }
            (Err(_), _) => None,
        };
        if let Some(placement) = allowed {
            let names = placement.iter().map(|&i| views[i].name.clone()).collect();
            decision.placements.insert(task.key.clone(), names);
            for (pod, i) in members.iter().zip(placement) {
                views[i].requested.add(&Resources::of_pod(pod));
            }
            let u = used.entry(task.queue.as_str()).or_default();
            *u = u.saturating_add(need);
            decision.admit.push(task.key.clone());
            misfits.clear();
            explained.clear();
            continue;
        }
        let within_quota = task_quota.is_some_and(|q| {
            used.get(task.queue.as_str())
                .copied()
                .unwrap_or(0)
                .saturating_add(need)
                <= q
        });
        let reason = if fits_now.is_ok() {
            let r = reservation.as_ref().map(|r| r.owner.as_str()).unwrap_or("");
            format!("needs {}×{} GPUs; would delay {r}, which has GPUs reserved (backfill only takes what cannot delay it)", task.replicas.len(), task.per_replica_gpus())
        } else if within_quota {
            match reclaim(task, tasks, &quota, &used, &views, &preempted) {
                Some(victims) if victims.is_empty() => format!(
                    "needs {}×{} GPUs within queue {:?}'s quota; waiting for preempted tasks to stop",
                    task.replicas.len(),
                    task.per_replica_gpus(),
                    task.queue
                ),
                Some(victims) => {
                    let names: Vec<String> = victims.iter().map(|v| short(v)).collect();
                    for v in victims {
                        let why = format!(
                            "preempted: queue {:?} needs its quota back for {}",
                            task.queue,
                            short(&task.key)
                        );
                        preempted.insert(v.clone());
                        decision.preempt.push((v, why));
                    }
                    format!(
                        "needs {}×{} GPUs within queue {:?}'s quota; reclaiming them from {}",
                        task.replicas.len(),
                        task.per_replica_gpus(),
                        task.queue,
                        names.join(", ")
                    )
                }
                None => explain(task, &views, ahead.get(task.queue.as_str()).copied(), &mut explained),
            }
        } else {
            explain(
                task,
                &views,
                ahead.get(task.queue.as_str()).copied(),
                &mut explained,
            )
        };
        if reservation.is_none() && fits_now.is_err() {
            reservation = reserve(task, tasks, nodes, now);
        }
        ahead.entry(task.queue.as_str()).or_insert(task);
        reasons[at] = Some(reason);
    }

    // Positions count per queue, in admission order, among the tasks still waiting.
    let mut position: BTreeMap<&str, u32> = BTreeMap::new();
    for (task, reason) in order.iter().zip(reasons) {
        if let Some(reason) = reason {
            let p = position.entry(task.queue.as_str()).or_default();
            *p += 1;
            decision.waiting.insert(
                task.key.clone(),
                Waiting {
                    position: *p,
                    reason,
                },
            );
        }
    }
    decision
}

fn short(key: &str) -> String {
    key.rsplit('/').next().unwrap_or(key).to_string()
}

fn task_deadline(task: &TaskView, now: Time) -> Option<Time> {
    // A pending task's deadline runs from when it would start: now.
    let seconds = task
        .replicas
        .first()
        .and_then(|p| p.metadata.annotations.get(ANNOTATION_DEADLINE))
        .and_then(|s| parse_seconds(s))?;
    // Past the calendar's end (a deadline stored before the bound): no deadline.
    kumo_client::clock::add_seconds(now, seconds)
}

/// Whether placement sees the two tasks' gangs alike: as many replicas, each asking for the same
/// resources on the same kind of node (what `place_gang` reads of a pod).
fn same_shape(a: &TaskView, b: &TaskView) -> bool {
    a.replicas.len() == b.replicas.len()
        && a.replicas.iter().zip(&b.replicas).all(|(p, q)| {
            Arc::ptr_eq(p, q)
                || Resources::of_pod(p) == Resources::of_pod(q)
                    && p.spec.node_selector == q.spec.node_selector
                    && p.spec.runtime_class_name == q.spec.runtime_class_name
                    && p.spec.tolerations == q.spec.tolerations
                    && kumo_scheduler::core::spread_key(p) == kumo_scheduler::core::spread_key(q)
        })
}

/// `blocked_reason`, given again to a task shaped like one already explained on the same views
/// behind the same task.
fn explain<'a>(
    task: &'a TaskView,
    views: &[NodeView],
    ahead: Option<&'a TaskView>,
    explained: &mut Vec<(&'a TaskView, Option<&'a str>, String)>,
) -> String {
    let behind = ahead.map(|a| a.key.as_str());
    if let Some((_, _, reason)) = explained
        .iter()
        .find(|(t, b, _)| *b == behind && same_shape(t, task))
    {
        return reason.clone();
    }
    let reason = blocked_reason(task, views, ahead);
    explained.push((task, behind, reason.clone()));
    reason
}

/// "needs 4×2 GPUs; free: node-a 3, node-b 2; waiting behind resnet-old (priority 20)".
fn blocked_reason(task: &TaskView, views: &[NodeView], ahead: Option<&TaskView>) -> String {
    let per = task.per_replica_gpus();
    let largest = views
        .iter()
        .map(|v| v.allocatable.gpus / 1000)
        .max()
        .unwrap_or(0) as i64;
    if per > largest {
        return format!(
            "needs {}×{per} GPUs, but no node has {per} GPUs (the largest has {largest}): it cannot start until such a node joins",
            task.replicas.len()
        );
    }
    let free: Vec<String> = views
        .iter()
        .filter(|v| v.allocatable.gpus > 0)
        .map(|v| {
            format!(
                "{} {}",
                v.name,
                (v.allocatable.gpus - v.requested.gpus).max(0) / 1000
            )
        })
        .collect();
    let mut reason = if per > 0 {
        let mut r = format!(
            "needs {}×{per} GPUs; free: {}",
            task.replicas.len(),
            if free.is_empty() {
                "none".into()
            } else {
                free.join(", ")
            }
        );
        // When GPUs are not (only) what is missing, say what is: a GPU model, cpu, memory.
        let members: Vec<&Pod> = task.replicas.iter().map(|p| &**p).collect();
        if let Err(why) = place_gang(&members, views, Strategy::BinPack) {
            if !why.message.contains("Insufficient nvidia.com/gpu") {
                r.push_str(&format!(" ({})", why.message));
            }
        }
        r
    } else {
        let members: Vec<&Pod> = task.replicas.iter().map(|p| &**p).collect();
        match place_gang(&members, views, Strategy::BinPack) {
            Err(why) => format!("needs {} replica(s): {}", task.replicas.len(), why.message),
            Ok(_) => format!("needs {} replica(s)", task.replicas.len()),
        }
    };
    if let Some(a) = ahead {
        reason.push_str(&format!(
            "; waiting behind {} (priority {})",
            short(&a.key),
            a.priority
        ));
    }
    reason
}

/// The GPUs the first blocked task will use when it can start.
struct Reservation {
    owner: String,
    /// When it can start (`None`: only when a task without a deadline ends).
    start: Option<Time>,
    /// Per node, the resources held for it.
    held: Vec<(usize, Resources)>,
}

impl Reservation {
    /// Node views with the reserved resources taken.
    fn apply(&self, views: &[NodeView]) -> Vec<NodeView> {
        let mut v = views.to_vec();
        for (i, r) in &self.held {
            v[*i].requested.add(r);
        }
        v
    }
}

/// Finds when and where `task` could start if holding tasks ended at their deadlines, earliest first.
fn reserve(
    task: &TaskView,
    tasks: &[TaskView],
    nodes: &[NodeView],
    now: Time,
) -> Option<Reservation> {
    let members: Vec<&Pod> = task.replicas.iter().map(|p| &**p).collect();
    let mut holders: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Holding { .. }))
        .collect();
    holders.sort_by_key(|t| match &t.state {
        TaskState::Holding { ends_by, .. } => (ends_by.is_none(), *ends_by),
        TaskState::Pending => (true, None),
    });
    let mut views = nodes.to_vec();
    let mut start = Some(now);
    for holder in std::iter::once(None).chain(holders.iter().map(Some)) {
        if let Some(h) = holder {
            release(&mut views, h);
            start = match &h.state {
                TaskState::Holding { ends_by, .. } => *ends_by,
                TaskState::Pending => None,
            };
        }
        if let Ok(placement) = place_gang(&members, &views, Strategy::BinPack) {
            let held = members
                .iter()
                .zip(placement)
                .map(|(p, i)| (i, Resources::of_pod(p)))
                .collect();
            return Some(Reservation {
                owner: short(&task.key),
                start,
                held,
            });
        }
    }
    None
}

/// Takes a holding task's pods off the node views.
fn release(views: &mut [NodeView], task: &TaskView) {
    if let TaskState::Holding { nodes, .. } = &task.state {
        for (pod, node) in task.replicas.iter().zip(nodes) {
            if let Some(v) = views.iter_mut().find(|v| &v.name == node) {
                let r = Resources::of_pod(pod);
                v.requested.cpu -= r.cpu;
                v.requested.memory -= r.memory;
                v.requested.gpus -= r.gpus;
                v.requested.pods -= r.pods;
            }
        }
    }
}

/// Borrowing tasks to preempt, lowest priority first, until `task` would fit; `None` if even
/// all of them would not make room.
fn reclaim(
    task: &TaskView,
    tasks: &[TaskView],
    quota: &BTreeMap<&str, Option<i64>>,
    used: &BTreeMap<&str, i64>,
    views: &[NodeView],
    already: &BTreeSet<String>,
) -> Option<Vec<String>> {
    let over_quota =
        |q: &str| used.get(q).copied().unwrap_or(0) > quota.get(q).copied().flatten().unwrap_or(0);
    let mut candidates: Vec<&TaskView> = tasks
        .iter()
        .filter(|t| t.queue != task.queue && over_quota(&t.queue) && !already.contains(&t.key))
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Holding {
                    preempting: false,
                    ..
                }
            )
        })
        .collect();
    candidates.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.created.cmp(&a.created)));
    let members: Vec<&Pod> = task.replicas.iter().map(|p| &**p).collect();
    let mut trial = views.to_vec();
    // Tasks already on their way out free their resources too.
    for t in tasks.iter().filter(|t| {
        matches!(
            t.state,
            TaskState::Holding {
                preempting: true,
                ..
            }
        )
    }) {
        release(&mut trial, t);
    }
    if place_gang(&members, &trial, Strategy::BinPack).is_ok() {
        // Enough is already being given back: wait for it, preempt nobody else.
        return Some(Vec::new());
    }
    let mut victims = Vec::new();
    for c in candidates {
        release(&mut trial, c);
        victims.push(c.key.clone());
        if place_gang(&members, &trial, Strategy::BinPack).is_ok() {
            return Some(victims);
        }
    }
    None
}
