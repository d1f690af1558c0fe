//! Bearer-token authentication, compared in constant time.

use crate::error::{ApiError, ApiResult};
use http::{header, HeaderMap};

/// Equal-length byte strings compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `Authorization: Bearer <token>` against the accepted tokens.
pub fn authenticate(headers: &HeaderMap, tokens: &[String]) -> ApiResult<()> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized("missing bearer token"));
    };
    let presented = match value.as_bytes().split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => return Err(ApiError::unauthorized("missing bearer token")),
    };
    // Look at every token so the time taken does not tell which one came close.
    let ok = tokens.iter().fold(false, |ok, t| {
        constant_time_eq(t.as_bytes(), presented) | ok
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid bearer token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(value: Option<&str>, expected: Result<(), &str>) {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        let got = authenticate(&headers, &["s3cret".into(), "other".into()]);
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(msg)) => {
                assert_eq!(e.code(), 401);
                assert_eq!(e.0.message, msg);
                assert_eq!(e.0.reason, "Unauthorized");
            }
            (got, want) => panic!("{value:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn tokens() {
        check(Some("Bearer s3cret"), Ok(()));
        check(Some("bearer other"), Ok(()));
        check(None, Err("missing bearer token"));
        check(Some("Basic abc"), Err("missing bearer token"));
        check(Some("Bearer"), Err("missing bearer token"));
        check(Some("Bearer s3cre"), Err("invalid bearer token"));
        check(Some("Bearer s3cret2"), Err("invalid bearer token"));
        check(Some("Bearer "), Err("invalid bearer token"));
    }
}
