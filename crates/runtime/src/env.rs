//! What a process container is given: its argv and a clean environment. Pure.

use kumo_api::pod::Container;

/// `PATH` of every process container (nothing else is inherited from the agent).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command line: `command` followed by `args`; a container without a command is refused.
pub fn argv(container: &Container) -> Result<Vec<String>, String> {
    if container.command.is_empty() {
        return Err(format!(
            "container {:?} has no command: a process container needs spec.containers[].command",
            container.name
        ));
    }
    Ok(container
        .command
        .iter()
        .chain(&container.args)
        .cloned()
        .collect())
}

/// The environment: `PATH`, `HOSTNAME` (the pod's name), then the spec's variables in order,
/// a later one replacing an earlier one of the same name.
pub fn environment(pod_name: &str, container: &Container) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOSTNAME".to_string(), pod_name.to_string()),
    ];
    for e in &container.env {
        match env.iter_mut().find(|(k, _)| *k == e.name) {
            Some(slot) => slot.1 = e.value.clone(),
            None => env.push((e.name.clone(), e.value.clone())),
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::pod::EnvVar;

    fn container(command: &[&str], args: &[&str], env: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn argv_is_command_then_args() {
        assert_eq!(
            argv(&container(&["sh", "-c"], &["echo hi"], &[])),
            Ok(vec!["sh".to_string(), "-c".into(), "echo hi".into()])
        );
        assert!(argv(&container(&[], &["echo"], &[]))
            .unwrap_err()
            .contains("needs spec.containers[].command"));
    }

    #[test]
    fn environment_is_clean_and_spec_wins() {
        let env = environment(
            "web-1",
            &container(&["x"], &[], &[("A", "1"), ("PATH", "/opt/bin"), ("A", "2")]),
        );
        let expected: Vec<(String, String)> =
            [("PATH", "/opt/bin"), ("HOSTNAME", "web-1"), ("A", "2")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(env, expected);
    }
}
