//! Responses the router makes itself (404, 503, 504, …): plain text saying what went wrong.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{full, ResponseBody};

/// A plain-text response; `message` gets a trailing newline.
pub(crate) fn text(status: StatusCode, message: impl std::fmt::Display) -> Response<ResponseBody> {
    let mut resp = Response::new(full(format!("{message}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The innermost cause of an error, which is usually the most telling (`connection refused`).
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
