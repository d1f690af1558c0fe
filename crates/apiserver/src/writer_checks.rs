//! The checks on who writes, after authorisation and before admission: NodeRestriction (a
//! node writes only its own Node, never its spec or restricted labels) and RBAC's escalation
//! check (one grants only what one holds). Writes of status subresources pass: they change no
//! spec, label or grant.

use crate::error::ApiResult;
use crate::request::Kind;
use crate::{escalation, node_authz, App};
use kumo_api::UserInfo;
use serde_json::Value;

/// A write as the client sent it.
pub enum Write<'a> {
    Create(&'a Value),
    /// A whole new object for `name`.
    Update(&'a str, &'a Value),
    /// A merge patch of `name`.
    Patch(&'a str, &'a Value),
}

pub async fn check(
    app: &App,
    user: &UserInfo,
    kind: Kind,
    ns: Option<&str>,
    write: Write<'_>,
) -> ApiResult<()> {
    match write {
        Write::Create(value) => {
            node_authz::restrict_create(user, kind, value)?;
            escalation::check(app, user, kind, ns, value).await
        }
        Write::Update(name, value) => {
            escalation::check(app, user, kind, ns, value).await?;
            node_authz::restrict_update(app, user, kind, name, |_| value.clone()).await
        }
        Write::Patch(name, patch) => {
            escalation::check_patch(app, user, kind, ns, name, patch).await?;
            node_authz::restrict_update(app, user, kind, name, |old| {
                let mut new = old.clone();
                kumo_api::patch::merge_patch(&mut new, patch);
                new
            })
            .await
        }
    }
}
