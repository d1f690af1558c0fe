//! The Token kind (`auth.kumo.dev/v1`, cluster-scoped): a bearer token the API manages. Only
//! its SHA-256 is stored (`status.tokenHash`); the secret is made by the server on create and
//! returned once, in that response (`status.token`). Pure: hashing, validation and the join
//! rules, no IO and no clock (callers pass `now`).

use crate::bounds::{check_range, check_seconds};
use crate::meta::{ObjectMeta, Time};
use crate::user::{GROUP_NODES, NODE_USER_PREFIX};
use crate::validation::Errors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The group of join tokens' users, as Kubernetes' bootstrap tokens.
pub const GROUP_BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The prefix of a join token's user: `system:bootstrap:<token name>`.
pub const BOOTSTRAP_USER_PREFIX: &str = "system:bootstrap:";
/// The most uses one join token may allow.
pub const MAX_USAGE_LIMIT: i64 = 1000;
/// The name of the token `kumo server` makes for the admin on first start.
pub const ADMIN_TOKEN: &str = "admin";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Token {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TokenSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TokenStatus>,
}

/// What a token is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenType {
    /// A person's (or a program's) API credential.
    #[default]
    Login,
    /// Exchanged by `kumo agent --join` for a node credential; counts its uses.
    Join,
    /// A node's own credential (`system:node:NAME`).
    Node,
}

impl TokenType {
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenType::Login => "login",
            TokenType::Join => "join",
            TokenType::Node => "node",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSpec {
    /// The user the token authenticates as.
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, rename = "type")]
    pub type_: TokenType,
    /// When the token stops being accepted; none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_timestamp: Option<Time>,
    /// On create: the token's life from now, in seconds; the server sets
    /// `expirationTimestamp` from it (the client's clock plays no part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// Join tokens: how many node credentials the token may be exchanged for (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_limit: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenStatus {
    /// `sha256:<hex>` of the secret.
    #[serde(default)]
    pub token_hash: String,
    /// Join tokens: how many times the token was exchanged.
    #[serde(default)]
    pub usage_count: i64,
    /// The secret: in the create response only, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `sha256:<hex>` of a secret, as `status.tokenHash` holds it.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A secret from 32 random bytes, as lower-case hex.
pub fn format_secret(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The user a join token named `name` authenticates as.
pub fn bootstrap_user(name: &str) -> String {
    format!("{BOOTSTRAP_USER_PREFIX}{name}")
}

impl Token {
    /// The uses a join token allows (1 when not set).
    pub fn usage_limit(&self) -> i64 {
        self.spec.usage_limit.unwrap_or(1)
    }

    pub fn usage_count(&self) -> i64 {
        self.status.as_ref().map_or(0, |s| s.usage_count)
    }

    pub fn token_hash(&self) -> &str {
        self.status.as_ref().map_or("", |s| s.token_hash.as_str())
    }

    pub fn is_expired(&self, now: Time) -> bool {
        self.spec.expiration_timestamp.is_some_and(|t| t <= now)
    }

    /// A join token (user and group as the join rules require).
    pub fn join(name: &str, ttl_seconds: i64, usage_limit: i64) -> Token {
        Token {
            metadata: ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            },
            spec: TokenSpec {
                user: bootstrap_user(name),
                groups: vec![GROUP_BOOTSTRAPPERS.to_string()],
                type_: TokenType::Join,
                ttl_seconds: Some(ttl_seconds),
                usage_limit: Some(usage_limit),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A node credential for `node` that expires at `expires`.
    pub fn node(name: &str, node: &str, expires: Time) -> Token {
        Token {
            metadata: ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            },
            spec: TokenSpec {
                user: format!("{NODE_USER_PREFIX}{node}"),
                groups: vec![GROUP_NODES.to_string()],
                type_: TokenType::Node,
                expiration_timestamp: Some(expires),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// Why a join token may not be exchanged (once more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("token {0} is not a join token")]
    NotJoin(String),
    #[error("join token {0} expired")]
    Expired(String),
    #[error("join token {name} is used up ({count} of {count} uses)")]
    UsedUp { name: String, count: i64 },
}

/// The join rules: a join token that has not expired and has a use left may be exchanged once
/// more; the result is the token with that use counted.
pub fn use_join_token(token: &Token, now: Time) -> Result<Token, JoinRefusal> {
    let name = &token.metadata.name;
    if token.spec.type_ != TokenType::Join {
        return Err(JoinRefusal::NotJoin(name.clone()));
    }
    if token.is_expired(now) {
        return Err(JoinRefusal::Expired(name.clone()));
    }
    let count = token.usage_count();
    if count >= token.usage_limit() {
        return Err(JoinRefusal::UsedUp {
            name: name.clone(),
            count,
        });
    }
    let mut used = token.clone();
    used.status.get_or_insert_with(Default::default).usage_count = count + 1;
    Ok(used)
}

/// Whether `g` may name a group: non-empty, at most 253 printable characters, no comma (the
/// CLI's separator) and no white space.
fn is_group_name(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 253
        && g.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != ',')
}

/// Checks a token's spec.
pub fn validate_token(t: &Token, errors: &mut Errors) {
    let spec = &t.spec;
    if spec.user.is_empty() {
        errors.add(
            "spec.user",
            "Required value: the user the token authenticates as",
        );
    } else if !is_group_name(&spec.user) {
        errors.add(
            "spec.user",
            format!("Invalid value: {:?}: must be at most 253 printable characters without white space or ','", spec.user),
        );
    }
    for (i, g) in spec.groups.iter().enumerate() {
        if !is_group_name(g) {
            errors.add(
                format!("spec.groups[{i}]"),
                format!("Invalid value: {g:?}: must be at most 253 printable characters without white space or ','"),
            );
        }
    }
    if let Some(ttl) = spec.ttl_seconds {
        check_seconds(errors, "spec.ttlSeconds", ttl, 1);
    }
    let in_group = |g: &str| spec.groups.iter().any(|x| x == g);
    match spec.type_ {
        TokenType::Join => {
            let want = bootstrap_user(&t.metadata.name);
            if spec.user != want {
                errors.add(
                    "spec.user",
                    format!(
                        "Invalid value: {:?}: a join token's user is {want:?}",
                        spec.user
                    ),
                );
            }
            if spec.groups != [GROUP_BOOTSTRAPPERS] {
                errors.add(
                    "spec.groups",
                    format!("Invalid value: a join token's groups are [{GROUP_BOOTSTRAPPERS}]"),
                );
            }
            if spec.expiration_timestamp.is_none() && spec.ttl_seconds.is_none() {
                errors.add(
                    "spec.ttlSeconds",
                    "Required value: a join token must expire (give ttlSeconds or expirationTimestamp)",
                );
            }
            if let Some(n) = spec.usage_limit {
                check_range(errors, "spec.usageLimit", n, 1, MAX_USAGE_LIMIT);
            }
        }
        TokenType::Node => {
            let node = spec.user.strip_prefix(NODE_USER_PREFIX).unwrap_or("");
            if !crate::validation::is_dns_subdomain(node) {
                errors.add(
                    "spec.user",
                    format!(
                        "Invalid value: {:?}: a node token's user is {NODE_USER_PREFIX}<node name>",
                        spec.user
                    ),
                );
            }
            if spec.groups != [GROUP_NODES] {
                errors.add(
                    "spec.groups",
                    format!("Invalid value: a node token's groups are [{GROUP_NODES}]"),
                );
            }
        }
        TokenType::Login => {
            // The node and bootstrap identities come only from their own kinds of token.
            if spec.user.starts_with(NODE_USER_PREFIX)
                || spec.user.starts_with(BOOTSTRAP_USER_PREFIX)
            {
                errors.add(
                    "spec.user",
                    format!("Invalid value: {:?}: node and bootstrap users are given only to node and join tokens", spec.user),
                );
            }
            if in_group(GROUP_NODES) || in_group(GROUP_BOOTSTRAPPERS) {
                errors.add(
                    "spec.groups",
                    format!("Invalid value: {GROUP_NODES} and {GROUP_BOOTSTRAPPERS} are given only to node and join tokens"),
                );
            }
        }
    }
    if spec.type_ != TokenType::Join && spec.usage_limit.is_some() {
        errors.add("spec.usageLimit", "Forbidden: only join tokens count uses");
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
