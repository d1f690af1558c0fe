//! Body types: the request body that can be re-sent until first read, and the response body
//! that settles logs, metrics and the endpoint lease when it ends.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::access::{Completion, End};
use crate::h1::H1Body;
use crate::upstream::Pooled;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any response body the router sends: a backend's (through hyper, or read inline), or one of
/// its own. An enum rather than a boxed body: no allocation per response.
pub(crate) enum ResponseBody {
    Upstream(Incoming),
    Inline(H1Body),
    Local(Full<Bytes>),
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::Local(Full::new(bytes.into()))
}

pub(crate) fn incoming(body: Incoming) -> ResponseBody {
    ResponseBody::Upstream(body)
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            ResponseBody::Inline(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Inline(b) => b.is_end_stream(),
            ResponseBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Inline(b) => b.size_hint(),
            ResponseBody::Local(b) => b.size_hint(),
        }
    }
}

/// The client's request body, shared between attempts. The first attempt that reads it takes
/// it; an attempt that never read it (its connection failed) leaves it for the next one.
pub(crate) struct RetryBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    inner: Option<Incoming>,
    taken: bool,
    hint: SizeHint,
    end: bool,
}

/// The shared slot behind [`RetryBody`]s.
#[derive(Clone)]
pub(crate) struct BodySlot {
    slot: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    end: bool,
}

impl BodySlot {
    pub fn new(body: Incoming) -> Self {
        let hint = body.size_hint();
        let end = body.is_end_stream();
        BodySlot {
            slot: Arc::new(Mutex::new(Some(body))),
            hint,
            end,
        }
    }

    /// Whether no attempt has read the body yet.
    pub fn untouched(&self) -> bool {
        self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    pub fn attempt(&self) -> RetryBody {
        RetryBody {
            slot: self.slot.clone(),
            inner: None,
            taken: false,
            hint: self.hint,
            end: self.end,
        }
    }
}

impl Body for RetryBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if !this.taken {
            this.taken = true;
            this.inner = this.slot.lock().ok().and_then(|mut s| s.take());
        }
        match this.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match (&self.inner, self.taken) {
            (Some(body), _) => body.is_end_stream(),
            (None, false) => self.end,
            (None, true) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(body) => body.size_hint(),
            None => self.hint,
        }
    }
}

/// A response body that settles its [`Completion`] when it ends, breaks or is dropped.
pub(crate) struct Observed {
    inner: ResponseBody,
    completion: Option<Completion>,
}

impl Observed {
    pub(crate) fn new(inner: ResponseBody, completion: Completion) -> Self {
        Observed {
            inner,
            completion: Some(completion),
        }
    }

    fn finish(&mut self, end: End) {
        if let Some(mut c) = self.completion.take() {
            // A body read inline holds its connection: it goes back with the completion.
            if let (End::Complete, ResponseBody::Inline(body)) = (&end, &mut self.inner) {
                c.conn = body.reusable().map(Pooled::Inline);
            }
            c.finish(end);
        }
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(End::Complete),
            Poll::Ready(Some(Err(e))) => this.finish(End::BodyError(e.to_string())),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let end = if self.inner.is_end_stream() {
            End::Complete
        } else {
            End::Dropped
        };
        self.finish(end);
    }
}
