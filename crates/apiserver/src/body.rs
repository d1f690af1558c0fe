//! Reading request bodies: JSON only, at most 3 MiB.

use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use http::{header, HeaderMap};
use http_body_util::BodyExt;
use serde_json::Value;

/// The largest body accepted.
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// How much of an oversized body is read and thrown away before answering 413, so that a client
/// still sending it can read the answer instead of seeing a broken pipe (as nginx does).
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads the body and parses it as JSON.
pub async fn read_json(headers: &HeaderMap, body: Body) -> ApiResult<Value> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        drain(&mut body, 0).await;
        return Err(ApiError::too_large(BODY_LIMIT));
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > BODY_LIMIT {
                drain(&mut body, (bytes.len() + data.len()) as u64).await;
                return Err(ApiError::too_large(BODY_LIMIT));
            }
            bytes.extend_from_slice(&data);
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid json in the request body: {e}")))
}

/// Reads and discards the rest of a body, up to `DRAIN_LIMIT` bytes in all.
async fn drain(body: &mut Body, mut seen: u64) {
    while seen <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(body: Body, declared: Option<usize>, expected: Result<Value, (u16, &str)>) {
        let mut headers = HeaderMap::new();
        if let Some(n) = declared {
            headers.insert(header::CONTENT_LENGTH, n.into());
        }
        match (read_json(&headers, body).await, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err((code, msg))) => {
                assert_eq!(e.code(), code);
                assert!(e.0.message.contains(msg), "{}", e.0.message);
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    fn chunked(total: usize) -> Body {
        let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
        let chunks = std::iter::repeat_n(chunk, total / (64 * 1024)).map(Ok::<_, std::io::Error>);
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn limits_and_json() {
        let too_large = Err((413, "request body too large (limit 3145728 bytes)"));
        // Declared too large: refused before reading.
        check(Body::empty(), Some(BODY_LIMIT + 1), too_large.clone()).await;
        // Streamed without a length: cut off at the limit.
        check(chunked(4 * 1024 * 1024), None, too_large).await;
        check(
            Body::from("{\"a\": 1}"),
            None,
            Ok(serde_json::json!({"a": 1})),
        )
        .await;
        check(
            Body::from("{\"a\": "),
            None,
            Err((400, "invalid json in the request body")),
        )
        .await;
        check(Body::empty(), None, Err((400, "EOF while parsing"))).await;
    }
}
