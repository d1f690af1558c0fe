//! Who a request comes from: the user an authenticator found, in Kubernetes' `UserInfo` shape.

use serde::{Deserialize, Serialize};

/// The group every user of `kumo up`'s first token is in; RBAC binds `cluster-admin` to it.
pub const GROUP_MASTERS: &str = "system:masters";
/// The group every authenticated request is in, as in Kubernetes.
pub const GROUP_AUTHENTICATED: &str = "system:authenticated";
/// The group of node credentials; a node's user is `system:node:NAME`.
pub const GROUP_NODES: &str = "system:nodes";
/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// An authenticated user: name, uid and groups (Kubernetes' `authentication.k8s.io/v1` UserInfo).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user in `groups` plus `system:authenticated`.
    pub fn new(username: impl Into<String>, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == GROUP_AUTHENTICATED) {
            groups.push(GROUP_AUTHENTICATED.to_string());
        }
        UserInfo {
            username: username.into(),
            uid: String::new(),
            groups,
        }
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node this user is the credential of (`system:node:NAME` in `system:nodes`).
    pub fn node_name(&self) -> Option<&str> {
        self.username
            .strip_prefix(NODE_USER_PREFIX)
            .filter(|_| self.in_group(GROUP_NODES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_users() {
        let n = UserInfo::new("system:node:n1", &[GROUP_NODES]);
        assert_eq!(n.node_name(), Some("n1"));
        assert!(n.in_group(GROUP_AUTHENTICATED));
        // The name alone does not make a node: the group must be there too.
        assert_eq!(UserInfo::new("system:node:n1", &[]).node_name(), None);
    }
}
