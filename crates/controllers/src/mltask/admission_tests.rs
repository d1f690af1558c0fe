//! Admission decisions as data: tasks, queues and nodes in; admitted, preempted, waiting out.

use super::admission::*;
use chrono::TimeZone;
use kumo_api::keys::ANNOTATION_DEADLINE;
use kumo_api::{Node, Pod, Time};
use kumo_scheduler::{NodeView, Resources};
use serde_json::json;

fn t(secs: i64) -> Time {
    chrono::Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn node(name: &str, gpus: i64) -> NodeView {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": gpus.to_string()},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    NodeView::new(&n)
}

fn replica(gpus: i64, deadline: Option<i64>) -> Pod {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "r"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus.to_string(), "cpu": "1"}}}]}
    }))
    .unwrap();
    if let Some(d) = deadline {
        p.metadata
            .annotations
            .insert(ANNOTATION_DEADLINE.into(), d.to_string());
    }
    p
}

struct Task {
    name: &'static str,
    queue: &'static str,
    priority: i32,
    created: i64,
    replicas: usize,
    gpus: i64,
    deadline: Option<i64>,
    /// Nodes of its replicas when it already runs.
    holding: Option<Vec<&'static str>>,
    ends_by: Option<i64>,
}

fn task(name: &'static str, queue: &'static str, replicas: usize, gpus: i64) -> Task {
    Task {
        name,
        queue,
        priority: 0,
        created: 0,
        replicas,
        gpus,
        deadline: None,
        holding: None,
        ends_by: None,
    }
}

impl Task {
    fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }
    fn created(mut self, c: i64) -> Self {
        self.created = c;
        self
    }
    fn deadline(mut self, d: i64) -> Self {
        self.deadline = Some(d);
        self
    }
    fn running_on(mut self, nodes: Vec<&'static str>, ends_by: Option<i64>) -> Self {
        self.holding = Some(nodes);
        self.ends_by = ends_by;
        self
    }
}

/// Runs admission; running tasks' pods are counted on their nodes first.
fn run(tasks: Vec<Task>, queues: &[(&str, Option<i64>)], mut nodes: Vec<NodeView>) -> Decision {
    let views: Vec<TaskView> = tasks
        .into_iter()
        .map(|x| {
            let replicas: Vec<Pod> = (0..x.replicas)
                .map(|_| replica(x.gpus, x.deadline))
                .collect();
            let state = match x.holding {
                Some(on) => {
                    for (pod, n) in replicas.iter().zip(&on) {
                        let v = nodes.iter_mut().find(|v| v.name == *n).unwrap();
                        v.requested.add(&Resources::of_pod(pod));
                    }
                    TaskState::Holding {
                        nodes: on.iter().map(|s| s.to_string()).collect(),
                        ends_by: x.ends_by.map(t),
                        preempting: false,
                    }
                }
                None => TaskState::Pending,
            };
            TaskView {
                key: format!("default/{}", x.name),
                queue: x.queue.into(),
                priority: x.priority,
                created: t(x.created),
                replicas: replicas.into_iter().map(std::sync::Arc::new).collect(),
                state,
            }
        })
        .collect();
    let queues: Vec<QueueView> = queues
        .iter()
        .map(|(n, q)| QueueView {
            name: n.to_string(),
            gpu_quota: *q,
        })
        .collect();
    admit(&views, &queues, &nodes, t(0))
}

fn waiting(d: &Decision, name: &str) -> (u32, String) {
    let w = &d.waiting[&format!("default/{name}")];
    (w.position, w.reason.clone())
}

fn admitted(d: &Decision) -> Vec<String> {
    d.admit
        .iter()
        .map(|k| k.trim_start_matches("default/").to_string())
        .collect()
}

#[test]
fn a_third_two_gpu_task_waits_first_in_line_with_its_reason() {
    let d = run(
        vec![
            task("a", "default", 1, 2).created(1),
            task("b", "default", 1, 2).created(2),
            task("c", "default", 1, 2).created(3),
        ],
        &[("default", None)],
        vec![node("n1", 4)],
    );
    assert_eq!(admitted(&d), ["a", "b"]);
    assert_eq!(waiting(&d, "c"), (1, "needs 1×2 GPUs; free: n1 0".into()));
}

#[test]
fn gangs_span_nodes_or_wait_whole() {
    let d = run(
        vec![task("span", "default", 2, 2)],
        &[("default", None)],
        vec![node("a", 3), node("b", 3)],
    );
    assert_eq!(admitted(&d), ["span"]);
    assert_eq!(d.placements["default/span"], ["a", "b"]);
    let d = run(
        vec![task("big", "default", 2, 4)],
        &[("default", None)],
        vec![node("a", 3), node("b", 3)],
    );
    assert!(d.admit.is_empty());
    assert_eq!(
        waiting(&d, "big"),
        (1, "needs 2×4 GPUs, but no node has 4 GPUs (the largest has 3): it cannot start until such a node joins".into())
    );
}

#[test]
fn priority_then_age_orders_the_queue() {
    let d = run(
        vec![
            task("running", "default", 1, 4).running_on(vec!["n1"], None),
            task("old-low", "default", 1, 2).created(1),
            task("new-high", "default", 1, 2).created(5).priority(20),
            task("mid", "default", 1, 2).created(2).priority(5),
        ],
        &[("default", None)],
        vec![node("n1", 4)],
    );
    assert!(d.admit.is_empty());
    assert_eq!(waiting(&d, "new-high").0, 1);
    assert_eq!(
        waiting(&d, "mid"),
        (
            2,
            "needs 1×2 GPUs; free: n1 0; waiting behind new-high (priority 20)".into()
        )
    );
    assert_eq!(waiting(&d, "old-low").0, 3);
}

#[test]
fn idle_gpus_are_borrowed_then_reclaimed_lowest_priority_first() {
    // `batch` has no quota: it may use idle GPUs but gives them back.
    let queues = [("research", Some(4)), ("batch", None)];
    let d = run(
        vec![task("borrower", "batch", 1, 4)],
        &queues,
        vec![node("n1", 4)],
    );
    assert_eq!(admitted(&d), ["borrower"]);

    let d = run(
        vec![
            task("cheap", "batch", 1, 2)
                .priority(1)
                .running_on(vec!["n1"], None),
            task("dear", "batch", 1, 2)
                .priority(9)
                .running_on(vec!["n1"], None),
            task("owner", "research", 1, 2).created(10),
        ],
        &queues,
        vec![node("n1", 4)],
    );
    assert!(
        d.admit.is_empty(),
        "the owner starts once the GPUs are actually free"
    );
    assert_eq!(
        d.preempt,
        [(
            "default/cheap".to_string(),
            "preempted: queue \"research\" needs its quota back for owner".to_string()
        )]
    );
    assert_eq!(
        waiting(&d, "owner").1,
        "needs 1×2 GPUs within queue \"research\"'s quota; reclaiming them from cheap"
    );
}

#[test]
fn backfill_never_delays_the_head() {
    let queues = [("default", None)];
    // `head` needs all 4 GPUs of n1; `long` holds 2 until t=100, so the head is reserved n1 at 100.
    let base = || {
        vec![
            task("long", "default", 1, 2).running_on(vec!["n1"], Some(100)),
            task("head", "default", 1, 4).created(1),
        ]
    };
    let mut tasks = base();
    tasks.push(task("forever", "default", 1, 2).created(2));
    let d = run(tasks, &queues, vec![node("n1", 4), node("n2", 0)]);
    assert!(
        d.admit.is_empty(),
        "a task without a deadline on the head's GPUs could delay it"
    );
    assert!(
        waiting(&d, "forever").1.contains("would delay head"),
        "{:?}",
        d.waiting
    );

    let mut tasks = base();
    tasks.push(task("quick", "default", 1, 2).created(2).deadline(50));
    let d = run(tasks, &queues, vec![node("n1", 4)]);
    assert_eq!(
        admitted(&d),
        ["quick"],
        "ends at 50, before the head's reserved start at 100"
    );

    let mut tasks = base();
    tasks.push(task("elsewhere", "default", 1, 2).created(2));
    let d = run(tasks, &queues, vec![node("n1", 4), node("n2", 2)]);
    assert_eq!(
        admitted(&d),
        ["elsewhere"],
        "n2 is not part of the head's reservation"
    );
    assert_eq!(waiting(&d, "head").0, 1);
}

#[test]
fn unknown_queue_is_a_reason_not_a_block() {
    let d = run(
        vec![
            task("lost", "nope", 1, 1).created(1),
            task("fine", "default", 1, 1).created(2),
        ],
        &[("default", None)],
        vec![node("n1", 1)],
    );
    assert_eq!(admitted(&d), ["fine"]);
    assert_eq!(
        waiting(&d, "lost").1,
        "queue \"nope\" does not exist: create it or submit to another queue"
    );
}

#[test]
fn reclaimed_gpus_go_to_the_task_they_were_reclaimed_for() {
    // `cheap` was preempted for `owner` and has stopped; though its priority is higher, it
    // would borrow again, and `owner` is within its queue's quota: `owner` goes first.
    let queues = [("research", Some(2)), ("batch", None)];
    let d = run(
        vec![
            task("cheap", "batch", 1, 2).priority(5).created(0),
            task("owner", "research", 1, 2).created(10),
        ],
        &queues,
        vec![node("n1", 2)],
    );
    assert_eq!(admitted(&d), ["owner"]);
    assert_eq!(waiting(&d, "cheap").0, 1);
}
