//! The agent's HTTP endpoint: `GET /containerLogs/{ns}/{pod}/{container}?follow=true&tailLines=N`.
//!
//! The apiserver proxies `pods/{name}/log` here. Who may ask is settled by the TLS handshake
//! (a client certificate of the cluster CA, as kubelet's `--client-ca-file`), not here: the
//! endpoint never sees a user's token.
//! Following polls the log file for growth every [`FOLLOW_POLL`], moves on to the next run's log
//! when the container restarts, and ends once the container has exited for good and its log is
//! drained, when the pod goes away, or when the client does.

use crate::model::ContainerRuntimeState;
use crate::plan::will_restart;
use crate::tail::tail_offset;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{header, StatusCode};
use kumo_api::{Pod, Status};
use kumo_client::Informer;
use kumo_runtime::Runtime;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// How often a followed log is checked for new data.
pub const FOLLOW_POLL: Duration = Duration::from_millis(150);

/// Finds a pod by `ns/name` (the informer's cache; a map in tests).
pub trait PodLookup: Send + Sync + 'static {
    fn pod(&self, key: &str) -> Option<Pod>;
}

impl PodLookup for Informer<Pod> {
    fn pod(&self, key: &str) -> Option<Pod> {
        self.get(key)
    }
}

/// What the endpoint serves from.
pub struct LogService {
    pub pods: Arc<dyn PodLookup>,
    pub runtime: Arc<dyn Runtime>,
    /// Turns true when the agent stops; open streams end.
    pub stop: watch::Receiver<bool>,
    /// The kumo binary, whose `nsexec` runs `kumo exec` commands (`None`: no exec).
    pub exec_helper: Option<std::path::PathBuf>,
}

/// Every request the endpoint understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRequest {
    ContainerLogs {
        namespace: String,
        pod: String,
        container: String,
        follow: bool,
        tail_lines: Option<u64>,
    },
}

/// The router of the agent's endpoint.
pub fn router(svc: Arc<LogService>) -> Router {
    Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route(
            "/exec/{ns}/{pod}/{container}",
            axum::routing::post(crate::exec::handle),
        )
        .with_state(svc)
}

/// Parses a log request's query (`follow`, `tailLines`; other parameters are ignored).
pub fn parse_log_request(
    namespace: String,
    pod: String,
    container: String,
    query: &[(String, String)],
) -> Result<AgentRequest, String> {
    let mut follow = false;
    let mut tail_lines = None;
    for (k, v) in query {
        match k.as_str() {
            "follow" => {
                follow = match v.as_str() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(format!(
                            "follow: invalid value {v:?}: must be true or false"
                        ))
                    }
                }
            }
            "tailLines" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("tailLines: invalid value {v:?}: must be an integer"))?;
                if n < 0 {
                    return Err(format!("tailLines: invalid value {n}: must be >= 0"));
                }
                tail_lines = Some(n as u64);
            }
            _ => {}
        }
    }
    Ok(AgentRequest::ContainerLogs {
        namespace,
        pod,
        container,
        follow,
        tail_lines,
    })
}

pub(crate) fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body =
        serde_json::to_vec(&Status::failure(code.as_u16(), reason, message)).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn container_logs(
    State(svc): State<Arc<LogService>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    match parse_log_request(ns, pod, container, &query) {
        Ok(req) => serve(svc, req).await,
        Err(message) => status(StatusCode::BAD_REQUEST, "BadRequest", message),
    }
}

async fn serve(svc: Arc<LogService>, req: AgentRequest) -> Response {
    let AgentRequest::ContainerLogs {
        namespace,
        pod: name,
        container,
        follow,
        tail_lines,
    } = req;
    let key = format!("{namespace}/{name}");
    let Some(pod) = svc.pods.pod(&key) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods {name:?} not found"),
        );
    };
    if !pod.spec.containers.iter().any(|c| c.name == container) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("container {container:?} is not valid for pod {name:?}"),
        );
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !follow && !svc.runtime.state(&uid).containers.contains_key(&container) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container:?} in pod {name:?} is waiting to start"),
        );
    }
    let stream = LogStream {
        svc,
        key,
        uid,
        container,
        follow,
        tail: tail_lines,
        run: None,
        finishing: false,
        buf: vec![0; 64 * 1024],
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|item| (item, s))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A container's log as a stream of chunks, following its runs when asked to.
struct LogStream {
    svc: Arc<LogService>,
    key: String,
    uid: String,
    container: String,
    follow: bool,
    /// Lines to start from in the first file opened.
    tail: Option<u64>,
    /// The run being read and its open log.
    run: Option<(i32, tokio::fs::File)>,
    /// Read to the end once more, then stop.
    finishing: bool,
    buf: Vec<u8>,
}

impl LogStream {
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            if let Some((_, file)) = &mut self.run {
                match file.read(&mut self.buf).await {
                    Ok(0) => {}
                    Ok(n) => return Some(Ok(Bytes::copy_from_slice(&self.buf[..n]))),
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.finishing || *self.svc.stop.borrow() {
                return None;
            }
            // At the end of what is written: what is the container doing?
            let pod = match self.svc.pods.pod(&self.key) {
                Some(p) if p.metadata.uid.as_deref() == Some(self.uid.as_str()) => p,
                _ => return None,
            };
            let state: Option<ContainerRuntimeState> = self
                .svc
                .runtime
                .state(&self.uid)
                .containers
                .get(&self.container)
                .cloned();
            match state {
                None if self.run.is_some() => return None,
                None if !self.follow => return None,
                None => {}
                Some(s) => {
                    if self.run.as_ref().map(|r| r.0) != Some(s.restart_count) {
                        let path =
                            self.svc
                                .runtime
                                .log_path(&self.uid, &self.container, s.restart_count);
                        match open_log(&path, self.tail.take()) {
                            Ok(f) => {
                                self.run = Some((s.restart_count, f));
                                continue;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    if !self.follow || (!s.is_running() && !will_restart(&pod, &s)) {
                        self.finishing = true;
                        continue;
                    }
                }
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

fn open_log(path: &std::path::Path, tail: Option<u64>) -> std::io::Result<tokio::fs::File> {
    let mut f = std::fs::File::open(path)?;
    if let Some(n) = tail {
        let off = tail_offset(&mut f, n)?;
        f.seek(SeekFrom::Start(off))?;
    }
    Ok(tokio::fs::File::from_std(f))
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
