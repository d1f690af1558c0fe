//! HTTP/1.1 toward a backend without a connection task, for requests that have no body: the
//! request head is written and the response head read by the client connection's own task,
//! and the response body is read from the backend's socket while it is written to the client.
//!
//! Why: with hyper's client connection each request crossed three tasks' worth of hand-offs
//! (the request into the connection task, the response head back through a oneshot, the body
//! through a channel), which was most of what kept the router's HTTP/1.1 keep-alive
//! throughput below nginx's (bench/RESULTS.md, "Router"). Parsing is httparse's (hyper's own
//! parser); only the framing of RFC 9112 §6 is written here. Requests with a body and
//! upgrades still go through hyper ([`crate::upstream`]), which sends a body while it reads
//! the response.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::body::BoxError;

/// The most bytes a response head (or a chunked body's trailer section) may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// The most bytes a chunk-size line may take (extensions included).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Room made in the read buffer before a connection's first read; it doubles, up to
/// [`MAX_READ`], each time a read fills it (a large body then takes fewer system calls).
const READ_CHUNK: usize = 8 * 1024;
const MAX_READ: usize = 128 * 1024;

/// A keep-alive connection to a backend, driven by whoever holds it.
#[derive(Debug)]
pub(crate) struct H1Conn {
    stream: TcpStream,
    /// What was read from the backend and not yet handed on.
    buf: BytesMut,
    /// The request head is built here; kept so that each request reuses the allocation.
    out: Vec<u8>,
    /// Room made in `buf` before each read.
    read_size: usize,
}

/// Why a response could not be had. `Unsent` means the backend cannot have seen the request.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    Unsent(io::Error),
    Sent(BoxError),
}

impl H1Conn {
    pub fn new(stream: TcpStream) -> Self {
        H1Conn {
            stream,
            buf: BytesMut::new(),
            out: Vec::new(),
            read_size: READ_CHUNK,
        }
    }

    /// Whether this idle connection can no longer carry a request: the backend closed it (or
    /// wrote to it unasked). No system call unless the socket has turned readable since.
    pub fn is_stale(&self) -> bool {
        let mut probe = [0u8; 1];
        !self.buf.is_empty()
            || !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `req`'s head (it has no body) and reads the response head.
    pub async fn exchange<B>(
        mut self,
        req: &Request<B>,
    ) -> Result<Response<H1Body>, ExchangeError> {
        encode_head(&mut self.out, req);
        if let Err(e) = self.stream.write_all(&self.out).await {
            return Err(ExchangeError::Unsent(e));
        }
        let head_only = req.method() == Method::HEAD;
        loop {
            match parse_head(&mut self.buf, head_only) {
                Ok(Some((response, framing, keep_alive))) => {
                    let body = H1Body::new(self, framing, keep_alive);
                    return Ok(response.map(|()| body));
                }
                Ok(None) => {}
                Err(e) => return Err(ExchangeError::Sent(e.into())),
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ExchangeError::Sent(head_too_large().into()));
            }
            let n = std::future::poll_fn(|cx| self.poll_fill(cx))
                .await
                .map_err(|e| ExchangeError::Sent(e.into()))?;
            if n == 0 {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response head",
                );
                return Err(ExchangeError::Sent(e.into()));
            }
        }
    }

    /// Reads what the backend has sent into the buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(self.read_size);
        let room = self.buf.capacity() - self.buf.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.buf
        ))?;
        if read == room {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        }
        Poll::Ready(Ok(read))
    }
}

fn head_too_large() -> io::Error {
    invalid(&format!("response head over {} KiB", MAX_HEAD / 1024))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid response: {what}"),
    )
}

/// Methods whose requests usually carry a body: an empty one is then said with
/// `content-length: 0` (as hyper does), which some servers insist on.
fn expects_body(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The request head in origin form; the caller has removed hop-by-hop fields.
fn encode_head<B>(out: &mut Vec<u8>, req: &Request<B>) {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if expects_body(req.method()) && !req.headers().contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited (RFC 9112 §6.3), and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes the connection.
    Close,
    Done,
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// Where one header field's name and value lie within the head (it is at most [`MAX_HEAD`]
/// bytes plus one read, so `u32` offsets will do).
type FieldAt = (u32, u32, u32, u32);

/// Parses a response head at the start of `buf`, skipping interim (1xx) responses. `None`
/// when more bytes are needed; the head's bytes leave `buf` once complete.
fn parse_head(
    buf: &mut BytesMut,
    head_only: bool,
) -> io::Result<Option<(Response<()>, Framing, bool)>> {
    loop {
        let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut fields,
        ) {
            // The limit holds however the head arrived: in one read or in many.
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(head_too_large()),
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&e.to_string())),
        };
        let code = parsed.code.unwrap_or(0);
        let version = parsed.version.unwrap_or(1);
        if code == 101 {
            return Err(invalid("switched protocols unasked"));
        }
        if (100..200).contains(&code) {
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| invalid("status code"))?;
        let base = buf.as_ptr() as usize;
        // Offsets within `buf`, whose first `len` bytes (fewer than u32::MAX) are the head.
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            (start as u32, (start + s.len()) as u32)
        };
        let count = parsed.headers.len();
        let mut ranges: [FieldAt; MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
        for (range, field) in ranges.iter_mut().zip(parsed.headers.iter()) {
            let (name, value) = (at(field.name.as_bytes()), at(field.value));
            *range = (name.0, name.1, value.0, value.1);
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for &(name_start, name_end, value_start, value_end) in &ranges[..count] {
            let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
                .map_err(|_| invalid("header name"))?;
            let value = HeaderValue::from_maybe_shared(
                head.slice(value_start as usize..value_end as usize),
            )
            .map_err(|_| invalid("header value"))?;
            headers.append(name, value);
        }
        let (framing, mut keep_alive) = framing_of(&headers, status, head_only)?;
        keep_alive &= version == 1 && !has_token(&headers, header::CONNECTION, "close");
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = if version == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        *response.headers_mut() = headers;
        return Ok(Some((response, framing, keep_alive)));
    }
}

/// The body's framing, and whether the connection may carry another request after it.
fn framing_of(
    headers: &HeaderMap,
    status: StatusCode,
    head_only: bool,
) -> io::Result<(Framing, bool)> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Done, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        // With a Content-Length beside it, the message may be a smuggling attempt: read it
        // as Transfer-Encoding says and do not reuse the connection (RFC 9112 §6.3).
        let reusable = chunked_last && !headers.contains_key(header::CONTENT_LENGTH);
        let framing = if chunked_last {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        };
        return Ok((framing, reusable));
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value
            .to_str()
            .map_err(|_| invalid("content-length"))?
            .split(',')
        {
            let n: u64 = part.trim().parse().map_err(|_| invalid("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("differing content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What the buffer gave toward the body.
enum Step {
    Frame(Frame<Bytes>),
    End,
    More,
}

impl Framing {
    /// Takes the next frame (or the end) out of `buf`, if it holds enough.
    fn step(&mut self, buf: &mut BytesMut) -> io::Result<Step> {
        loop {
            match *self {
                Framing::Done => return Ok(Step::End),
                Framing::Length(left) => {
                    let Some((data, left)) = take_data(left, buf) else {
                        return Ok(Step::More);
                    };
                    *self = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(left)
                    };
                    return Ok(Step::Frame(Frame::data(data)));
                }
                Framing::Close => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    return Ok(Step::Frame(Frame::data(buf.split().freeze())));
                }
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(invalid("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::More),
                    Err(_) => return Err(invalid("chunk size")),
                },
                Framing::Chunked(Chunk::Data(left)) => {
                    let Some((data, left)) = take_data(left, buf) else {
                        return Ok(Step::More);
                    };
                    *self = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Step::Frame(Frame::data(data)));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (used, trailers) = match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields.iter() {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| invalid("trailer name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| invalid("trailer value"))?;
                                trailers.append(name, value);
                            }
                            (used, trailers)
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                            return Err(invalid("trailer section too large"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(Step::More),
                        Err(e) => return Err(invalid(&e.to_string())),
                    };
                    buf.advance(used);
                    *self = Framing::Done;
                    if !trailers.is_empty() {
                        return Ok(Step::Frame(Frame::trailers(trailers)));
                    }
                }
            }
        }
    }
}

/// As much of the `left` bytes still due as `buf` holds, and how many are then left; `None`
/// when `buf` is empty.
fn take_data(left: u64, buf: &mut BytesMut) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let take = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
    Some((buf.split_to(take).freeze(), left - take as u64))
}

/// A backend's response body, read from its connection as it is polled. Once read to its
/// end, the connection can carry another request ([`H1Body::reusable`]).
#[derive(Debug)]
pub(crate) struct H1Body {
    conn: Option<H1Conn>,
    framing: Framing,
    keep_alive: bool,
}

impl H1Body {
    fn new(conn: H1Conn, framing: Framing, keep_alive: bool) -> Self {
        H1Body {
            conn: Some(conn),
            framing,
            keep_alive,
        }
    }

    /// The connection, if the body was read to its end and the backend may take another
    /// request on it.
    pub fn reusable(&mut self) -> Option<H1Conn> {
        if self.framing != Framing::Done || !self.keep_alive {
            return None;
        }
        let mut conn = self.conn.take().filter(|c| c.buf.is_empty())?;
        // A large body grew the reads; an idle connection (up to 512 an endpoint) keeps none
        // of that.
        if conn.buf.capacity() > READ_CHUNK {
            conn.buf = BytesMut::new();
        }
        conn.read_size = READ_CHUNK;
        Some(conn)
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.buf) {
                Ok(Step::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::More) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.keep_alive = false;
                }
                Ok(0) => {
                    this.conn = None;
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "backend closed the connection before the body's end",
                    );
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(input: &[u8], head_only: bool) -> io::Result<Option<(Response<()>, Framing, bool)>> {
        parse_head(&mut BytesMut::from(input), head_only)
    }

    /// Every frame `framing` yields from `input` delivered in pieces of `piece` bytes.
    fn frames(mut framing: Framing, input: &[u8], piece: usize) -> io::Result<Vec<Frame<Bytes>>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            match framing.step(&mut buf)? {
                Step::Frame(f) => out.push(f),
                Step::End => return Ok(out),
                Step::More if rest.is_empty() => return Err(invalid("input ended")),
                Step::More => {
                    let n = piece.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    fn data(frames: &[Frame<Bytes>]) -> Vec<u8> {
        frames
            .iter()
            .filter_map(|f| f.data_ref())
            .flat_map(|d| d.iter().copied())
            .collect()
    }

    #[test]
    fn request_heads_are_origin_form_and_say_an_empty_body_where_one_is_expected() {
        let mut out = Vec::new();
        let req = Request::get("/a/b?c=1")
            .header("host", "web.test")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .unwrap();
        encode_head(&mut out, &req);
        assert_eq!(
            out,
            b"GET /a/b?c=1 HTTP/1.1\r\nhost: web.test\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
        let req = Request::post("/form").body(()).unwrap();
        encode_head(&mut out, &req);
        assert_eq!(out, b"POST /form HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn response_heads_give_status_headers_framing_and_reuse() {
        let (r, framing, keep) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Replica: a\r\nX-Replica: b\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers().get_all("x-replica").iter().count(), 2);
        assert_eq!((framing, keep), (Framing::Length(5), true));

        let (_, framing, keep) = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((framing, keep), (Framing::Chunked(Chunk::Size), true));
        // Neither length nor chunked: until close.
        let (_, framing, keep) = head(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((framing, keep), (Framing::Close, false));
        let (_, framing, keep) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((framing, keep), (Framing::Length(3), false));
        let (_, _, keep) = head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!keep, "HTTP/1.0 is not reused");
        // HEAD, 204 and 304 have no body whatever the length says.
        for (input, head_only) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"[..], true),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
            ),
        ] {
            let (_, framing, keep) = head(input, head_only).unwrap().unwrap();
            assert_eq!((framing, keep), (Framing::Done, true));
        }
        // Transfer-Encoding beside Content-Length: chunked, never reused.
        let (_, framing, keep) = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((framing, keep), (Framing::Chunked(Chunk::Size), false));
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\nrest"[..],
        );
        let (r, framing, _) = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(framing, Framing::Done);
        assert_eq!(&buf[..], b"rest");
        assert!(head(b"HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn malformed_response_heads_are_errors() {
        for input in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"HTTP/1.1 2000 Huge\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        ] {
            let got = head(input, false);
            assert!(
                got.is_err(),
                "{:?} parsed as {got:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        huge.extend_from_slice(b"\r\n\r\n");
        let err = head(&huge, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid response: response head over 64 KiB"
        );
        // The same length said twice is one length.
        let (_, framing, _) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(framing, Framing::Length(3));
    }

    #[test]
    fn bodies_are_framed_by_length_chunks_and_trailers_in_any_pieces() {
        for piece in [1, 2, 3, 7, 1000] {
            let got = frames(Framing::Length(5), b"hello", piece).unwrap();
            assert_eq!(data(&got), b"hello");

            let chunked = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\ngrpc-status: 0\r\nx-b: 2\r\n\r\n";
            let got = frames(Framing::Chunked(Chunk::Size), chunked, piece).unwrap();
            assert_eq!(data(&got), b"hello!");
            let trailers = got.last().and_then(|f| f.trailers_ref()).unwrap();
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-b"], "2");

            let got = frames(
                Framing::Chunked(Chunk::Size),
                b"3\r\nabc\r\n0\r\n\r\n",
                piece,
            )
            .unwrap();
            assert_eq!(data(&got), b"abc");
            assert!(
                got.iter().all(|f| f.is_data()),
                "no trailers, no trailer frame"
            );
        }
        let mut framing = Framing::Length(3);
        let mut buf = BytesMut::from(&b"abcNEXT"[..]);
        let Step::Frame(f) = framing.step(&mut buf).unwrap() else {
            panic!("no frame");
        };
        assert_eq!(f.data_ref().unwrap(), "abc");
        assert_eq!(framing, Framing::Done);
        assert_eq!(&buf[..], b"NEXT", "the body takes no more than its length");
    }

    #[tokio::test]
    async fn a_connection_goes_back_only_after_a_whole_kept_body_and_without_its_large_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut conn = H1Conn::new(stream);
        conn.buf.reserve(MAX_READ);
        conn.read_size = MAX_READ;
        let mut body = H1Body::new(conn, Framing::Length(3), true);
        assert!(body.reusable().is_none(), "a body not read to its end");
        body.framing = Framing::Done;
        let conn = body.reusable().expect("a whole body on a kept connection");
        assert!(conn.buf.capacity() <= READ_CHUNK);
        assert_eq!(conn.read_size, READ_CHUNK);
        let mut closing = H1Body::new(conn, Framing::Done, false);
        assert!(closing.reusable().is_none(), "the backend said close");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for input in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"1\r\na\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                frames(Framing::Chunked(Chunk::Size), input, 1000).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let endless = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(frames(Framing::Chunked(Chunk::Size), &endless, 1000).is_err());
    }
}

#[cfg(test)]
#[path = "h1_props.rs"]
mod props;
