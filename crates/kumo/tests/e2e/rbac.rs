//! RBAC in the daemon: the built-in roles are there, a RoleBinding applied with the CLI takes
//! effect within a second, and `kumo auth can-i` answers yes/no (exit 0/1) as kubectl does,
//! for oneself and, through a SubjectAccessReview, for another user (`--as`).

use crate::harness::*;
use std::time::{Duration, Instant};

fn out(o: &std::process::Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

/// Runs `kumo auth can-i ARGS` and returns (exit 0, stdout, stderr).
fn can_i(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    out(&c.kumo(&all))
}

#[test]
fn can_i_answers_from_the_rbac_policy() {
    let c = Cluster::start_with(vec!["server".to_string()]);
    // The admin's token is in system:masters.
    assert_eq!(
        can_i(&c, &["create", "mltasks", "-n", "team-a"]),
        (true, "yes".into(), String::new())
    );
    assert_eq!(can_i(&c, &["*", "*"]).1, "yes");
    // The built-in policy is there, labelled as Kubernetes labels it.
    let (ok, roles, err) = out(&c.kumo(&["get", "clusterroles"]));
    assert!(ok, "{err}");
    for role in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "ml-engineer",
        "app-developer",
    ] {
        assert!(
            roles.lines().any(|l| l.starts_with(&format!("{role} "))),
            "{role}: {roles}"
        );
    }

    // Alice may do nothing yet: "no" and exit 1, with what would allow it.
    let (ok, answer, _) = can_i(&c, &["create", "mltasks", "-n", "team-a", "--as", "alice"]);
    assert!(!ok);
    assert!(
        answer.starts_with("no - no RBAC policy matched"),
        "{answer}"
    );

    c.apply(
        "alice.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: alice-ml\n  namespace: team-a\n\
         subjects:\n- kind: User\n  name: alice\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: ml-engineer\n",
    );
    // The binding takes effect within a second, with no restart.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (ok, answer, err) = can_i(&c, &["create", "mltasks", "-n", "team-a", "--as", "alice"]);
        if ok {
            assert_eq!(answer, "yes");
            break;
        }
        assert!(Instant::now() < deadline, "still {answer:?} {err}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let alice = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--as", "alice"]);
        can_i(&c, &all).0
    };
    assert!(alice(&["get", "pods/log", "-n", "team-a"]));
    assert!(alice(&[
        "delete",
        "mltasks.kumo.dev",
        "train",
        "-n",
        "team-a"
    ]));
    assert!(!alice(&["create", "pods/exec", "-n", "team-a"]));
    assert!(!alice(&["create", "mltasks", "-n", "team-b"]));
    assert!(!alice(&["get", "secrets", "-n", "team-a"]));
    // Datasets are cluster-scoped: the namespace binding does not reach them.
    assert!(!alice(&["get", "datasets"]));
    // As with kubectl's --as, the user is in system:authenticated (system:basic-user's group).
    assert!(alice(&["create", "selfsubjectaccessreviews"]));
    // Groups count: bob in system:masters may do anything.
    assert_eq!(
        can_i(
            &c,
            &[
                "delete",
                "nodes",
                "--as",
                "bob",
                "--as-group",
                "system:masters"
            ]
        )
        .1,
        "yes"
    );

    // The example of a team's bindings: the ml-team group and bob, each with their role.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/roles.yaml");
    let (ok, _, err) = out(&c.kumo(&["apply", "-f", example]));
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(1);
    while !can_i(
        &c,
        &["get", "datasets", "--as", "carol", "--as-group", "ml-team"],
    )
    .0
    {
        assert!(
            Instant::now() < deadline,
            "the example's bindings took more than a second"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ml = ["-n", "team-a", "--as", "carol", "--as-group", "ml-team"];
    let bob = ["-n", "team-a", "--as", "bob"];
    let cases: &[(&[&str], &[&str], bool)] = &[
        (&["create", "mltasks"], &ml, true),
        (&["update", "datasets"], &ml, true),
        (&["create", "apps"], &ml, false),
        (&["patch", "apps", "web"], &bob, true),
        (&["get", "pods/log"], &bob, true),
        (&["create", "mltasks"], &bob, false),
        (&["get", "datasets"], &bob, false),
    ];
    for (ask, who, want) in cases {
        let args = [*ask, *who].concat();
        assert_eq!(can_i(&c, &args).0, *want, "{args:?}");
    }
    let (ok, table, err) = out(&c.kumo(&["get", "rolebindings", "-n", "team-a", "-o", "wide"]));
    assert!(ok, "{err}");
    assert!(
        table.lines().any(|l| l.starts_with("web-devs ")
            && l.contains("ClusterRole/app-developer")
            && l.contains("bob")),
        "{table}"
    );

    // Bad input is an error naming the field, never a "no".
    let (ok, answer, err) = can_i(&c, &["fly", "pods"]);
    assert!(!ok && answer.is_empty(), "{answer}");
    assert!(
        err.contains("spec.resourceAttributes.verb: Unsupported value: \"fly\""),
        "{err}"
    );
    let (ok, _, err) = can_i(&c, &["get", "pods", "--as-group", "x"]);
    assert!(!ok && err.contains("--as-group needs --as"), "{err}");
}
