//! Property tests of the backend response parsers: any bytes give a head, a body or an error,
//! never a panic; how the bytes are cut into reads never changes the result; chunked bodies
//! and their trailers come back as they were sent.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    Config::with_cases(384)
}

/// What a parse came to, comparable across runs.
#[derive(Debug, PartialEq)]
enum Outcome {
    Head {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        framing: Framing,
        keep_alive: bool,
    },
    /// The input ended before a whole head.
    Partial,
    Error,
}

fn outcome(result: io::Result<Option<(Response<()>, Framing, bool)>>) -> Outcome {
    match result {
        Ok(Some((response, framing, keep_alive))) => Outcome::Head {
            status: response.status().as_u16(),
            headers: response
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            framing,
            keep_alive,
        },
        Ok(None) => Outcome::Partial,
        Err(_) => Outcome::Error,
    }
}

/// Parses `input` delivered in reads of `piece` bytes, as [`H1Conn::exchange`] does; with
/// what was read past the head.
fn head_in_pieces(input: &[u8], piece: usize, head_only: bool) -> (Outcome, Vec<u8>) {
    let mut buf = BytesMut::new();
    for part in input.chunks(piece.max(1)) {
        buf.extend_from_slice(part);
        match parse_head(&mut buf, head_only) {
            Ok(None) => {}
            other => return (outcome(other), buf.to_vec()),
        }
    }
    (outcome(parse_head(&mut buf, head_only)), buf.to_vec())
}

/// Every frame `framing` yields from `input` delivered in reads of `piece` bytes, or why not.
fn body_in_pieces(
    mut framing: Framing,
    input: &[u8],
    piece: usize,
) -> Result<Vec<Frame<Bytes>>, String> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    loop {
        match framing.step(&mut buf).map_err(|e| e.to_string())? {
            Step::Frame(f) => out.push(f),
            Step::End => return Ok(out),
            Step::More if rest.is_empty() => return Err("input ended".into()),
            Step::More => {
                let n = piece.max(1).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
}

fn body_data(frames: &[Frame<Bytes>]) -> Vec<u8> {
    frames
        .iter()
        .filter_map(|f| f.data_ref())
        .flat_map(|d| d.iter().copied())
        .collect()
}

/// Bytes that look like a response head often enough to reach past the status line.
fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        prop::sample::select(vec![
            "HTTP/1.1 ",
            "HTTP/1.0 ",
            "HTTP/2 ",
            "200",
            "100",
            "101",
            "103",
            "204",
            "304",
            "999",
            "0",
            " OK",
            "\r\n",
            "\n",
            "\r\n\r\n",
            ": ",
            ":",
            "Content-Length",
            "5",
            "-1",
            "18446744073709551616",
            "1,1",
            "1, 2",
            "Transfer-Encoding",
            "chunked",
            "gzip, chunked",
            "chunked, gzip",
            "Connection",
            "close",
            "keep-alive",
            " ",
            "\t",
            "x-a",
            "\u{0}",
            "\u{7f}",
            "é",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(part, 0..24).prop_map(|parts| parts.concat())
}

/// A header field as a backend may send it: a token name and printable value.
fn field() -> impl Strategy<Value = (String, String)> {
    let name = prop::collection::vec(
        prop::sample::select("abcxyz-019".chars().collect::<Vec<_>>()),
        1..8,
    )
    .prop_map(|c| format!("x-{}", String::from_iter(c)));
    let value = prop::collection::vec(
        prop::sample::select("abc XYZ019;=,/".chars().collect::<Vec<_>>()),
        0..12,
    )
    .prop_map(|c| String::from_iter(c).trim().to_string());
    (name, value)
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes: a head, more wanted, or an error; the same however they arrive.
    #[test]
    fn response_heads_parse_the_same_in_any_pieces(
        input in head_bytes(), piece in 1..64usize, head_only in any::<bool>(),
    ) {
        let (whole, _) = head_in_pieces(&input, input.len().max(1), head_only);
        let (pieces, _) = head_in_pieces(&input, piece, head_only);
        prop_assert_eq!(&pieces, &whole, "{:?} in pieces of {}", String::from_utf8_lossy(&input), piece);
    }

    /// A generated head comes back with its status, fields and framing.
    #[test]
    fn generated_heads_round_trip(
        status in 200..600u16,
        fields in prop::collection::vec(field(), 0..8),
        length in prop::option::of(0..1_000_000u64),
        chunked in any::<bool>(),
        close in any::<bool>(),
        piece in 1..40usize,
    ) {
        let mut head = format!("HTTP/1.1 {status} Whatever\r\n");
        for (n, v) in &fields {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        } else if let Some(l) = length {
            head.push_str(&format!("Content-Length: {l}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\nBODY");
        let (Outcome::Head { status: got, headers, framing, keep_alive }, rest) =
            head_in_pieces(head.as_bytes(), piece, false)
        else {
            return Err(TestCaseError::fail(format!("{head:?} did not parse")));
        };
        prop_assert_eq!(got, status);
        for (n, v) in &fields {
            prop_assert!(headers.contains(&(n.clone(), v.as_bytes().to_vec())), "{n}: {v}");
        }
        let bodiless = status == 204 || status == 304;
        let want = match (bodiless, chunked, length) {
            (true, _, _) => Framing::Done,
            (false, true, _) => Framing::Chunked(Chunk::Size),
            (false, false, Some(0)) => Framing::Done,
            (false, false, Some(l)) => Framing::Length(l),
            (false, false, None) => Framing::Close,
        };
        prop_assert_eq!(framing, want);
        let kept = bodiless || chunked || length.is_some();
        prop_assert_eq!(keep_alive, kept && !close);
        // The head ends where the body starts, at most a piece's worth of which was read.
        prop_assert!(b"BODY".starts_with(&rest), "{rest:?}");
    }

    /// A chunked body, with any chunk sizes, extensions and trailers, decodes to what was sent,
    /// however it is cut into reads.
    #[test]
    fn chunked_bodies_round_trip(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..6),
        ext in any::<bool>(),
        upper in any::<bool>(),
        trailers in prop::collection::vec(field(), 0..3),
        piece in 1..50usize,
    ) {
        let mut wire = Vec::new();
        for c in &chunks {
            let size = if upper { format!("{:X}", c.len()) } else { format!("{:x}", c.len()) };
            wire.extend_from_slice(size.as_bytes());
            if ext {
                wire.extend_from_slice(b";name=value");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        for (n, v) in &trailers {
            wire.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\nNEXT");
        let frames = body_in_pieces(Framing::Chunked(Chunk::Size), &wire, piece).unwrap();
        prop_assert_eq!(body_data(&frames), chunks.concat());
        let got: Vec<(String, String)> = frames
            .iter()
            .filter_map(|f| f.trailers_ref())
            .flat_map(|t| t.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string())))
            .collect();
        prop_assert_eq!(got, trailers);
    }

    /// Any bytes under any framing: frames, an end, or an error; never a panic, never more
    /// data than a length allows.
    #[test]
    fn bodies_of_any_bytes_never_panic(
        input in prop_oneof![
            head_bytes(),
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(prop::sample::select(b"0123456789abcdefABCDEF;=\r\n x".to_vec()), 0..80),
        ],
        framing in prop_oneof![
            Just(Framing::Chunked(Chunk::Size)),
            Just(Framing::Chunked(Chunk::Trailers)),
            Just(Framing::Chunked(Chunk::DataEnd)),
            (0..u64::MAX).prop_map(|n| Framing::Chunked(Chunk::Data(n))),
            (0..300u64).prop_map(Framing::Length),
            Just(Framing::Length(u64::MAX)),
        ],
        piece in 1..64usize,
    ) {
        let limit = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        if let Ok(frames) = body_in_pieces(framing, &input, piece) {
            if let Some(limit) = limit {
                prop_assert!(body_data(&frames).len() as u64 <= limit);
            }
        }
    }
}
