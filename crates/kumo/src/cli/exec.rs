//! `kumo exec POD [-c C] [-i] [-t] [--reason TEXT] -- CMD ARGS...`: runs a command in a running
//! container with its output (and with `-i`, this terminal's input) attached; exits with the
//! command's code. The reason goes into the exec's audit line.

use super::{client, kind_and_name, NamespaceArgs};
use anyhow::{anyhow, bail, Context};
use kumo_api::exec::{self as proto, ExecExit, TerminalSize};
use kumo_client::ExecParams;
use std::io::{Read, Write};
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// The pod: NAME or pod/NAME
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The container (default: the pod's only one)
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass this terminal's stdin to the command
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Run the command under a terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Why you run this, recorded with the exec in the audit log (one line, at most 1024 bytes)
    #[arg(long, value_parser = reason)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    super::finish(exec(args).await)
}

/// `--reason`: what the server accepts in `Kumo-Audit-Reason`, and not empty.
fn reason(text: &str) -> Result<String, String> {
    match kumo_api::audit::check_reason(text.as_bytes())? {
        "" => Err("must not be empty".into()),
        text => Ok(text.to_string()),
    }
}

fn pod_name(arg: &str) -> anyhow::Result<String> {
    if !arg.contains('/') {
        return super::check_name(arg);
    }
    let (kind, name) = kind_and_name(arg)?;
    if kind.kind != "Pod" {
        bail!("exec runs in pods, not {}: kumo exec pod/NAME", kind.plural);
    }
    Ok(name)
}

/// Puts a terminal in raw mode and restores it when dropped.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

fn terminal_size() -> Option<Vec<u8>> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    let size = TerminalSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    };
    serde_json::to_vec(&size).ok()
}

async fn exec(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let name = pod_name(&args.pod)?;
    if args.command.iter().all(|a| a.is_empty()) {
        bail!("a command is required after --");
    }
    let client = client(&args.connect)?;
    let params = ExecParams {
        container: args.container.clone(),
        command: args.command.clone(),
        stdin: args.stdin,
        tty: args.tty,
        reason: args.reason.clone(),
    };
    let io = client.exec(args.ns.or_default(), &name, &params).await?;
    let (mut rd, mut wr) = tokio::io::split(io);

    let local_tty = args.tty && rustix::termios::isatty(std::io::stdin());
    if args.tty && !local_tty && args.stdin {
        eprintln!("kumo exec: stdin is not a terminal; the command still gets one");
    }
    let _raw = if local_tty && args.stdin {
        RawMode::enter()
    } else {
        None
    };

    // Everything sent to the server goes through one writer task.
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    if local_tty {
        if let Some(size) = terminal_size() {
            let _ = frames_tx.send(proto::encode(proto::RESIZE, &size)).await;
        }
        let tx = frames_tx.clone();
        let mut winch =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .context("watching for terminal resizes")?;
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some(size) = terminal_size() {
                    if tx.send(proto::encode(proto::RESIZE, &size)).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
    if args.stdin {
        let tx = frames_tx.clone();
        // A plain thread: a blocked read of stdin must not keep the process from exiting.
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(n @ 1..) => {
                        if tx
                            .blocking_send(proto::encode(proto::STDIN, &buf[..n]))
                            .is_err()
                        {
                            return;
                        }
                    }
                    _ => {
                        let _ = tx.blocking_send(proto::encode(proto::STDIN, b""));
                        return;
                    }
                }
            }
        });
    }
    drop(frames_tx);

    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    let exit = 'read: loop {
        let n = rd
            .read(&mut chunk)
            .await
            .context("reading the exec stream")?;
        if n == 0 {
            break None;
        }
        buf.extend_from_slice(&chunk[..n]);
        for frame in proto::decode(&mut buf).map_err(|e| anyhow!(e))? {
            match frame.channel {
                proto::STDOUT => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&frame.payload)?;
                    out.flush()?;
                }
                proto::STDERR => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(&frame.payload)?;
                    err.flush()?;
                }
                proto::EXIT => {
                    break 'read Some(serde_json::from_slice::<ExecExit>(&frame.payload)?);
                }
                _ => {}
            }
        }
    };
    writer.abort();
    drop(_raw);
    match exit {
        Some(ExecExit {
            exit_code: Some(code),
            ..
        }) => Ok(ExitCode::from((code & 0xff) as u8)),
        Some(ExecExit {
            error: Some(message),
            ..
        }) => bail!("exec in pod {name}: {message}"),
        _ => bail!("the exec stream of pod {name} ended without an exit status"),
    }
}
