//! Authentication: the bearer token of a request, turned into a [`UserInfo`] by the server's
//! [`Authenticator`]. The one in-memory kind here, [`StaticTokens`], serves tests and a fixed
//! token list; tokens the API manages have their own.

use crate::error::{ApiError, ApiResult};
use http::{header, HeaderMap};
use kumo_api::UserInfo;

/// Turns a bearer token into its user. Called on every request (and by the connection limits
/// for every connection), so it answers from memory: no IO.
pub trait Authenticator: Send + Sync {
    /// The token's user, or why it is refused ("token expired", "token revoked", …), which the
    /// client is told in the 401.
    fn authenticate(&self, token: &str) -> Result<UserInfo, String>;
}

/// Equal-length byte strings compared without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The refusal of a token no authenticator knows.
pub const UNKNOWN_TOKEN: &str = "invalid bearer token";

/// Several authenticators, asked in order: the first that accepts the token answers. When all
/// refuse, the first refusal that says more than [`UNKNOWN_TOKEN`] ("token expired") is given.
pub struct Chain(pub Vec<std::sync::Arc<dyn Authenticator>>);

impl Authenticator for Chain {
    fn authenticate(&self, token: &str) -> Result<UserInfo, String> {
        let mut refusal = None;
        for a in &self.0 {
            match a.authenticate(token) {
                Ok(user) => return Ok(user),
                Err(e) if e != UNKNOWN_TOKEN && refusal.is_none() => refusal = Some(e),
                Err(_) => {}
            }
        }
        Err(refusal.unwrap_or_else(|| UNKNOWN_TOKEN.to_string()))
    }
}

/// A fixed list of tokens, each with its user.
pub struct StaticTokens(pub Vec<(String, UserInfo)>);

impl StaticTokens {
    /// Every token a member of `system:masters` named `admin`.
    pub fn admins(tokens: impl IntoIterator<Item = String>) -> Self {
        let admin = UserInfo::new("admin", &[kumo_api::user::GROUP_MASTERS]);
        StaticTokens(
            tokens
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(|t| (t, admin.clone()))
                .collect(),
        )
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(&self, token: &str) -> Result<UserInfo, String> {
        // Look at every token so the time taken does not tell which one came close.
        let found = self.0.iter().fold(None, |found, (t, user)| {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                Some(user)
            } else {
                found
            }
        });
        found.cloned().ok_or_else(|| UNKNOWN_TOKEN.to_string())
    }
}

/// The bearer token of `Authorization: Bearer <token>`, if the header is there and well-formed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?;
    match value.as_bytes().split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            std::str::from_utf8(rest.trim_ascii()).ok()
        }
        _ => None,
    }
}

/// The user of a request, or a 401 saying why there is none.
pub fn authenticate(headers: &HeaderMap, authenticator: &dyn Authenticator) -> ApiResult<UserInfo> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized("missing bearer token"));
    };
    authenticator
        .authenticate(token)
        .map_err(ApiError::unauthorized)
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
        let tokens = StaticTokens::admins(["s3cret".to_string(), "other".to_string()]);
        let got = authenticate(&headers, &tokens);
        match (got, expected) {
            (Ok(user), Ok(())) => {
                assert_eq!(user.username, "admin");
                assert!(user.in_group(kumo_api::user::GROUP_MASTERS));
            }
            (Err(e), Err(msg)) => {
                assert_eq!(e.code(), 401);
                assert_eq!(e.0.message, msg);
                assert_eq!(e.0.reason, "Unauthorized");
            }
            (got, want) => panic!("{value:?}: got {got:?}, want {want:?}"),
        }
    }

    struct Expired;
    impl Authenticator for Expired {
        fn authenticate(&self, token: &str) -> Result<UserInfo, String> {
            Err(if token == "old" {
                "token expired"
            } else {
                UNKNOWN_TOKEN
            }
            .to_string())
        }
    }

    #[test]
    fn a_chain_answers_with_the_first_acceptance_or_the_most_telling_refusal() {
        let chain = Chain(vec![
            std::sync::Arc::new(Expired),
            std::sync::Arc::new(StaticTokens::admins(["s3cret".to_string()])),
        ]);
        assert_eq!(chain.authenticate("s3cret").unwrap().username, "admin");
        assert_eq!(chain.authenticate("old").unwrap_err(), "token expired");
        assert_eq!(chain.authenticate("nope").unwrap_err(), UNKNOWN_TOKEN);
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
