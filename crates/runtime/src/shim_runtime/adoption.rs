//! Re-adoption of the containers recorded on disk, and the polling that learns their exits.

use super::{ContainerEntry, PodEntry, RunKey, ShimRuntime, ADOPTED_POLL};
use crate::adopt::{decide, Adoption, Liveness};
use crate::error::RuntimeError;
use crate::record::{read_json, write_json, ContainerRecord, PodRecord};
use std::collections::BTreeMap;

impl ShimRuntime {
    pub(super) fn adopt_all(&self) -> Result<(), RuntimeError> {
        let pods_dir = self.layout().pods_dir();
        let entries = std::fs::read_dir(&pods_dir).map_err(|e| RuntimeError::io(&pods_dir, e))?;
        let now = chrono::Utc::now();
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            let record_path = self.layout().pod_record(&uid);
            let record: PodRecord = match read_json(&record_path) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(path = %record_path.display(), error = %e, "skipping unreadable pod record");
                    continue;
                }
            };
            let mut containers = BTreeMap::new();
            let mut to_poll = Vec::new();
            for c in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
            {
                let name = c.file_name().to_string_lossy().into_owned();
                let state_path = self.layout().state_file(&uid, &name);
                let mut rec: ContainerRecord = match read_json(&state_path) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(path = %state_path.display(), error = %e, "skipping unreadable container record");
                        continue;
                    }
                };
                let exit = self.read_exit(&uid, &name);
                let live = Liveness::probe(self.inner.sys.as_ref(), &rec);
                match decide(&rec, exit.as_ref(), live, now) {
                    Adoption::Running => {
                        tracing::info!(pod = %record.key(), container = %name, pid = ?rec.pid, "re-adopted running container");
                        to_poll.push(RunKey {
                            uid: uid.clone(),
                            container: name.clone(),
                            restart_count: rec.restart_count,
                        });
                    }
                    Adoption::Exited(t) | Adoption::Lost(t) => {
                        if rec.terminated.is_none() {
                            rec.terminated = Some(t);
                            if let Err(e) = write_json(&state_path, &rec) {
                                tracing::warn!(path = %state_path.display(), error = %e, "cannot record container exit");
                            }
                        }
                    }
                }
                containers.insert(name, ContainerEntry::new(rec));
            }
            self.lock_pods()
                .insert(uid, PodEntry { record, containers });
            for key in to_poll {
                self.spawn_task(poll_adopted(self.clone(), key));
            }
        }
        Ok(())
    }
}

/// Watches an adopted container until its exit is known.
pub(super) async fn poll_adopted(rt: ShimRuntime, key: RunKey) {
    let mut tick = tokio::time::interval(ADOPTED_POLL);
    loop {
        tick.tick().await;
        let record = {
            let pods = rt.lock_pods();
            match pods
                .get(&key.uid)
                .and_then(|p| p.containers.get(&key.container))
            {
                Some(e)
                    if e.record.restart_count == key.restart_count
                        && e.record.terminated.is_none() =>
                {
                    e.record.clone()
                }
                _ => return,
            }
        };
        let live = Liveness::probe(rt.inner.sys.as_ref(), &record);
        // Read the exit file after probing: a shim that wrote it and exited in between is seen.
        let exit = rt.read_exit(&key.uid, &key.container);
        match decide(&record, exit.as_ref(), live, chrono::Utc::now()) {
            Adoption::Running => continue,
            Adoption::Exited(t) | Adoption::Lost(t) => {
                rt.finish_run(&key, t).await;
                return;
            }
        }
    }
}
