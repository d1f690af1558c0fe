//! The agent's exec endpoint, `POST /exec/{ns}/{pod}/{container}?command=..&stdin=..&tty=..`:
//! checks the request, has the container's runtime say how to run the command inside it, answers
//! the upgrade to `kumo-exec.v1`, and runs the session: the command's stdio (pipes, or a
//! terminal) carried as frames over the upgraded connection, then its exit code.

use crate::logs::{status, LogService};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use http::{header, StatusCode};
use hyper_util::rt::TokioIo;
use kumo_api::exec::{self as proto, ExecExit, TerminalSize};
use kumo_runtime::nsexec::NsExecArgs;
use kumo_runtime::{ExecRefusal, ExecSpec};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long a command gets after SIGTERM (its client went away) before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long output may keep flowing after the command exited (from processes it left behind
/// holding its stdout) before the session ends anyway.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// What an exec request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub tty: bool,
}

/// Parses an exec request's query.
pub fn parse_exec_query(query: &[(String, String)]) -> Result<ExecRequest, String> {
    let flag = |k: &str, v: &str| match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{k}: invalid value {v:?}: must be true or false")),
    };
    let mut req = ExecRequest {
        command: Vec::new(),
        stdin: false,
        tty: false,
    };
    for (k, v) in query {
        match k.as_str() {
            "command" => req.command.push(v.clone()),
            "stdin" => req.stdin = flag(k, v)?,
            "tty" => req.tty = flag(k, v)?,
            _ => {}
        }
    }
    if req.command.is_empty() {
        return Err("command: Required value: at least one command= parameter".into());
    }
    Ok(req)
}

/// The endpoint's handler.
pub async fn handle(
    State(svc): State<Arc<LogService>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !upgrade.eq_ignore_ascii_case(proto::PROTOCOL) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("exec needs an upgrade to {}", proto::PROTOCOL),
        );
    }
    let ask = match parse_exec_query(&query) {
        Ok(ask) => ask,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let Some(p) = svc.pods.pod(&format!("{ns}/{pod}")) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod {pod} is not on this node"),
        );
    };
    let Some(index) = p.spec.containers.iter().position(|c| c.name == container) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container} is not valid for pod {pod}"),
        );
    };
    let spec = match svc.runtime.exec_command(&p, index, &ask.command, ask.tty) {
        Ok(spec) => spec,
        Err(ExecRefusal::NotRunning(m)) => return status(StatusCode::CONFLICT, "Conflict", m),
        Err(ExecRefusal::Unsupported(m)) => {
            return status(StatusCode::BAD_REQUEST, "BadRequest", m)
        }
    };
    let Some(helper) = svc.exec_helper.clone() else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "this agent cannot exec (no helper binary)".into(),
        );
    };
    let command = helper_command(&helper, &spec, ask.tty);
    tracing::info!(pod = %format!("{ns}/{pod}"), container, command = ?ask.command, tty = ask.tty, "exec");
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(io) => session(TokioIo::new(io), command, ask.stdin, ask.tty).await,
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, proto::PROTOCOL)
        .body(Body::empty())
        .unwrap_or_default()
}

/// `<kumo> nsexec ... -- argv`, with the spec's environment.
fn helper_command(helper: &std::path::Path, spec: &ExecSpec, tty: bool) -> tokio::process::Command {
    let args = NsExecArgs {
        cgroups: spec.cgroups.clone(),
        mount_ns_of: spec.mount_ns_of,
        cwd: spec.cwd.clone(),
        tty,
        command: spec.argv.clone(),
    };
    let mut cmd = tokio::process::Command::new(helper);
    cmd.arg("nsexec").args(args.to_args());
    if let Some(env) = &spec.env {
        cmd.env_clear().envs(env.iter().cloned());
    }
    if !tty {
        // Its own process group, so that stopping it reaches what it started.
        cmd.process_group(0);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Output of the command on its way to the client.
type Out = mpsc::Sender<(u8, Vec<u8>)>;

/// Runs one exec session over `io` and closes it.
async fn session<IO>(io: IO, cmd: tokio::process::Command, stdin: bool, tty: bool)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let writer = tokio::spawn(async move {
        while let Some((channel, data)) = out_rx.recv().await {
            if wr.write_all(&proto::encode(channel, &data)).await.is_err() {
                break;
            }
            if channel == proto::EXIT {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let exit = match start(cmd, stdin, tty, out_tx.clone()) {
        Ok(running) => running.serve(&mut rd).await,
        Err(message) => ExecExit {
            exit_code: None,
            error: Some(message),
        },
    };
    let payload = serde_json::to_vec(&exit).unwrap_or_default();
    let _ = out_tx.send((proto::EXIT, payload)).await;
    drop(out_tx);
    let _ = writer.await;
}

/// A started command and where its input goes.
struct Running {
    child: tokio::process::Child,
    input: Input,
    /// Finishes when all of the command's output has been forwarded.
    output_done: tokio::task::JoinSet<()>,
}

enum Input {
    Pipe(Option<tokio::process::ChildStdin>),
    Terminal(Option<std::sync::mpsc::Sender<Vec<u8>>>, OwnedFd),
    None,
}

/// Starts the command; `cmd` is consumed so that no copy of the terminal's slave side stays
/// open here (the master reads EOF only once every holder closed it).
fn start(
    mut cmd: tokio::process::Command,
    stdin: bool,
    tty: bool,
    out: Out,
) -> Result<Running, String> {
    let mut output_done = tokio::task::JoinSet::new();
    if tty {
        let (master, slave) = open_pty().map_err(|e| format!("allocate a terminal: {e}"))?;
        let stdio = |fd: &OwnedFd| -> Result<Stdio, String> {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(|e| format!("terminal: {e}"))
        };
        cmd.stdin(stdio(&slave)?)
            .stdout(stdio(&slave)?)
            .stderr(stdio(&slave)?);
        let child = cmd.spawn().map_err(|e| format!("start: {e}"))?;
        drop(cmd);
        drop(slave);
        let mut reader =
            std::fs::File::from(master.try_clone().map_err(|e| format!("terminal: {e}"))?);
        let mut writer =
            std::fs::File::from(master.try_clone().map_err(|e| format!("terminal: {e}"))?);
        // A terminal's master is read and written with blocking calls on threads of their own.
        output_done.spawn_blocking(move || {
            let mut buf = vec![0u8; 32 * 1024];
            // EIO once every holder of the other side has closed it.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if out
                    .blocking_send((proto::STDOUT, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        });
        let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            while let Ok(data) = in_rx.recv() {
                if writer.write_all(&data).is_err() {
                    break;
                }
            }
        });
        Ok(Running {
            child,
            input: Terminal(Some(in_tx), master),
            output_done,
        })
    } else {
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("start: {e}"))?;
        if let Some(o) = child.stdout.take() {
            output_done.spawn(forward(o, proto::STDOUT, out.clone()));
        }
        if let Some(e) = child.stderr.take() {
            output_done.spawn(forward(e, proto::STDERR, out));
        }
        let input = match child.stdin.take() {
            Some(i) => Input::Pipe(Some(i)),
            None => Input::None,
        };
        Ok(Running {
            child,
            input,
            output_done,
        })
    }
}

use Input::Terminal;

async fn forward(mut from: impl AsyncRead + Unpin, channel: u8, out: Out) {
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if out.send((channel, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
}

impl Running {
    /// Feeds the client's frames to the command until it exits; a client that goes away gets
    /// the command stopped (SIGTERM, then SIGKILL).
    async fn serve<R: AsyncRead + Unpin>(mut self, rd: &mut R) -> ExecExit {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 32 * 1024];
        let mut client_open = true;
        let status = loop {
            tokio::select! {
                status = self.child.wait() => break status,
                n = rd.read(&mut chunk), if client_open => match n {
                    Ok(n @ 1..) => {
                        buf.extend_from_slice(&chunk[..n]);
                        match proto::decode(&mut buf) {
                            Ok(frames) => {
                                for f in frames {
                                    self.input(f).await;
                                }
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "bad exec stream; stopping the command");
                                client_open = false;
                                self.stop().await;
                            }
                        }
                    }
                    _ => {
                        client_open = false;
                        self.stop().await;
                    }
                },
            }
        };
        // Output still in the pipes is forwarded; output held open by leftovers is not waited for.
        let drain = async { while self.output_done.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await.is_err() {
            self.output_done.abort_all();
        }
        match status {
            Ok(s) => ExecExit {
                exit_code: Some(exit_code(s)),
                error: None,
            },
            Err(e) => ExecExit {
                exit_code: None,
                error: Some(format!("wait for the command: {e}")),
            },
        }
    }

    async fn input(&mut self, frame: proto::Frame) {
        match (frame.channel, &mut self.input) {
            (proto::STDIN, Input::Pipe(pipe)) => {
                if frame.payload.is_empty() {
                    *pipe = None;
                } else if let Some(p) = pipe {
                    if p.write_all(&frame.payload).await.is_err() {
                        *pipe = None;
                    }
                }
            }
            (proto::STDIN, Terminal(tx, _)) => {
                // End of input on a terminal is its EOF character.
                let data = if frame.payload.is_empty() {
                    vec![4u8]
                } else {
                    frame.payload
                };
                if let Some(t) = tx {
                    if t.send(data).is_err() {
                        *tx = None;
                    }
                }
            }
            (proto::RESIZE, Terminal(_, master)) => {
                if let Ok(size) = serde_json::from_slice::<TerminalSize>(&frame.payload) {
                    let ws = rustix::termios::Winsize {
                        ws_row: size.rows,
                        ws_col: size.cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // The kernel tells the terminal's foreground process group (SIGWINCH).
                    let _ = rustix::termios::tcsetwinsize(&*master, ws);
                }
            }
            _ => {}
        }
    }

    async fn stop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(KILL_GRACE, self.child.wait())
            .await
            .is_err()
        {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.start_kill();
        }
    }
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .or_else(|| s.signal().map(|sig| 128 + sig))
        .unwrap_or(-1)
}

/// A new terminal: (master, slave).
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
    Ok((master, OwnedFd::from(slave)))
}

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn queries() {
        assert_eq!(
            parse_exec_query(&q(&[("command", "ls"), ("command", "-l"), ("tty", "true")])),
            Ok(ExecRequest {
                command: vec!["ls".into(), "-l".into()],
                stdin: false,
                tty: true
            })
        );
        assert!(parse_exec_query(&q(&[("stdin", "1")]))
            .unwrap_err()
            .contains("command: Required value"));
        assert!(parse_exec_query(&q(&[("command", "ls"), ("tty", "yes")]))
            .unwrap_err()
            .contains("tty: invalid value"));
    }

    /// Runs a session against a real process over an in-memory stream.
    async fn run(cmd: &[&str], stdin: bool, tty: bool, input: Vec<u8>) -> (Vec<proto::Frame>,) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut command = tokio::process::Command::new(cmd[0]);
        command.args(&cmd[1..]).kill_on_drop(true);
        if !tty {
            command.process_group(0);
        }
        let task = tokio::spawn(session(server, command, stdin, tty));
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(&input).await.unwrap();
        let mut all = Vec::new();
        rd.read_to_end(&mut all).await.unwrap();
        task.await.unwrap();
        (proto::decode(&mut all).unwrap(),)
    }

    fn text(frames: &[proto::Frame], channel: u8) -> String {
        frames
            .iter()
            .filter(|f| f.channel == channel)
            .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
            .collect()
    }

    fn exit(frames: &[proto::Frame]) -> ExecExit {
        let last = frames.last().expect("an exit frame");
        assert_eq!(last.channel, proto::EXIT);
        serde_json::from_slice(&last.payload).unwrap()
    }

    #[tokio::test]
    async fn pipes_carry_stdin_stdout_stderr_and_the_exit_code() {
        let mut input = proto::encode(proto::STDIN, b"hello\n");
        input.extend(proto::encode(proto::STDIN, b""));
        let (frames,) = run(
            &["sh", "-c", "read x; echo out:$x; echo err >&2; exit 7"],
            true,
            false,
            input,
        )
        .await;
        assert_eq!(text(&frames, proto::STDOUT), "out:hello\n");
        assert_eq!(text(&frames, proto::STDERR), "err\n");
        assert_eq!(exit(&frames).exit_code, Some(7));
    }

    #[tokio::test]
    async fn a_terminal_is_a_tty_of_the_asked_size() {
        let mut input = proto::encode(
            proto::RESIZE,
            &serde_json::to_vec(&TerminalSize { cols: 91, rows: 17 }).unwrap(),
        );
        input.extend(proto::encode(proto::STDIN, b"go\n"));
        let (frames,) = run(
            &["sh", "-c", "read x; test -t 0 && stty size; exit 3"],
            true,
            true,
            input,
        )
        .await;
        let out = text(&frames, proto::STDOUT);
        assert!(out.contains("17 91"), "{out:?}");
        assert_eq!(exit(&frames).exit_code, Some(3));
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_says_why() {
        let (frames,) = run(&["/nonexistent/binary"], false, false, Vec::new()).await;
        let e = exit(&frames);
        assert_eq!(e.exit_code, None);
        assert!(e.error.unwrap().contains("start:"));
    }
}
