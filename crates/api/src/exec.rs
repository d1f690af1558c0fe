//! The `kumo-exec.v1` stream protocol of `pods/{name}/exec`: after the HTTP upgrade, both sides
//! send frames of `[channel: u8][length: u32 big-endian][payload]`.
//!
//! Client → agent: [`STDIN`] data (an empty frame closes stdin), [`RESIZE`] (JSON
//! [`TerminalSize`]). Agent → client: [`STDOUT`], [`STDERR`] data, then one [`EXIT`] frame (JSON
//! [`ExecExit`]) after which the agent closes the stream.

use serde::{Deserialize, Serialize};

/// The `Upgrade` protocol token.
pub const PROTOCOL: &str = "kumo-exec.v1";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const RESIZE: u8 = 4;
/// Frames larger than this are refused (a garbled stream, not a real payload).
pub const MAX_FRAME: usize = 1 << 20;
const HEADER: usize = 5;

/// How an exec session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecExit {
    /// The command's exit code (128 + signal when it was killed by one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the command could not run or be waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub channel: u8,
    pub payload: Vec<u8>,
}

/// Encodes one frame.
pub fn encode(channel: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(channel);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Takes the complete frames off the front of `buf`, leaving a partial one in place.
pub fn decode(buf: &mut Vec<u8>) -> Result<Vec<Frame>, String> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() - at >= HEADER {
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!(
                "exec frame of {len} bytes exceeds the limit of {MAX_FRAME}"
            ));
        }
        if buf.len() - at - HEADER < len {
            break;
        }
        frames.push(Frame {
            channel: buf[at],
            payload: buf[at + HEADER..at + HEADER + len].to_vec(),
        });
        at += HEADER + len;
    }
    buf.drain(..at);
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_partial_reads() {
        let mut wire = encode(STDOUT, b"hello");
        wire.extend(encode(STDIN, b""));
        wire.extend(encode(EXIT, br#"{"exitCode":3}"#));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            buf.extend_from_slice(chunk);
            got.extend(decode(&mut buf).unwrap());
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            vec![
                Frame {
                    channel: STDOUT,
                    payload: b"hello".to_vec()
                },
                Frame {
                    channel: STDIN,
                    payload: vec![]
                },
                Frame {
                    channel: EXIT,
                    payload: br#"{"exitCode":3}"#.to_vec()
                },
            ]
        );
        let exit: ExecExit = serde_json::from_slice(&got[2].payload).unwrap();
        assert_eq!(exit.exit_code, Some(3));
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut buf = vec![STDOUT, 0xff, 0xff, 0xff, 0xff];
        assert!(decode(&mut buf).unwrap_err().contains("exceeds the limit"));
    }
}
