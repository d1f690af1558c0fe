//! `kumo exec`: commands in running containers under runc, runsc and the process runtime, with
//! output, stdin, a terminal and the command's exit code carried through the API server.

use crate::harness::*;
use std::process::Output;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sleeper(name: &str, image: &str, runtime: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  runtimeClassName: {runtime}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: \"{image}\"\n    env: [{{name: GREETING, value: hello-{name}}}]\n    command: [\"/bin/busybox\", \"sleep\", \"3600\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_commands_inside_containers() {
    let registry = kumo_image::testing::Registry::start().expect("docker-registry");
    let (image, _) = registry.push_busybox("exec:1").expect("push busybox");
    let c = Cluster::up(&[]);
    let client = c.client();
    c.apply("runc.yaml", &sleeper("in-runc", &image, "runc"));
    c.apply("runsc.yaml", &sleeper("in-gvisor", &image, "runsc"));
    c.apply("proc.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: in-process\nspec:\n  runtimeClassName: process\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    env: [{name: GREETING, value: hello-in-process}]\n    command: [\"/bin/sleep\", \"3600\"]\n",
    );
    for name in ["in-runc", "in-gvisor", "in-process"] {
        wait_pod(&client, "default", name, T, pod_ready).await;
        let sh = "/bin/sh";

        // Output, environment of the container, and the exit code.
        let o = c.kumo(&[
            "exec",
            name,
            "--",
            sh,
            "-c",
            "echo out=$GREETING; echo oops >&2; exit 3",
        ]);
        assert_eq!(o.status.code(), Some(3), "{name}: {}", err(&o));
        assert_eq!(out(&o), format!("out=hello-{name}\n"), "{name}");
        assert!(err(&o).contains("oops"), "{name}: {}", err(&o));

        // Stdin, passed through and closed.
        let o = c.kumo_stdin(
            &[
                "exec",
                "-i",
                name,
                "--",
                sh,
                "-c",
                "read x; echo got:$x; grep -c ''",
            ],
            Some("line1\nline2\nline3\n"),
        );
        assert!(o.status.success(), "{name}: {}", err(&o));
        let text = out(&o);
        assert!(text.starts_with("got:line1\n"), "{name}: {text:?}");
        assert_eq!(
            text.lines().nth(1).map(str::trim),
            Some("2"),
            "{name}: {text:?}"
        );

        // A terminal when asked for one.
        let o = c.kumo(&[
            "exec",
            "-t",
            name,
            "--",
            sh,
            "-c",
            "test -t 1 && echo is-a-tty",
        ]);
        assert!(o.status.success(), "{name}: {}", err(&o));
        assert!(out(&o).contains("is-a-tty"), "{name}: {:?}", out(&o));
    }

    // Inside runc the command sees the container, not the host.
    let o = c.kumo(&["exec", "in-runc", "--", "/bin/busybox", "hostname"]);
    assert_eq!(out(&o).trim(), "in-runc");
    let o = c.kumo(&[
        "exec",
        "in-gvisor",
        "--",
        "/bin/busybox",
        "cat",
        "/proc/version",
    ]);
    assert!(out(&o).contains("Linux version 4.4.0"), "{}", out(&o));

    // A command that does not exist, a container that does not, a pod that does not.
    let o = c.kumo(&["exec", "in-process", "--", "/no/such/binary"]);
    assert_eq!(o.status.code(), Some(127), "{}", err(&o));
    assert!(err(&o).contains("/no/such/binary"), "{}", err(&o));
    let o = c.kumo(&["exec", "in-runc", "-c", "nope", "--", "true"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("container nope is not valid for pod in-runc"),
        "{}",
        err(&o)
    );
    let o = c.kumo(&["exec", "ghost", "--", "true"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("not found"), "{}", err(&o));

    // A container that is no longer running.
    c.apply("done.yaml", &process_pod("finished", "Never", "exit 0"));
    wait_pod(&client, "default", "finished", T, |p| {
        crate::pods::phase(p).is_some_and(|ph| ph.is_terminal())
    })
    .await;
    let o = c.kumo(&["exec", "finished", "--", "true"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("is not running"), "{}", err(&o));
}
