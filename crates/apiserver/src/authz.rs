//! Authorisation: what a request asks to do, as Kubernetes' authorizer attributes (user, verb,
//! API group, resource, subresource, namespace, name), and the [`Authorizer`] that answers it.
//! Every request is authorised after it is authenticated and parsed, before anything is read
//! or written.

use crate::datasets::DataRequest;
use crate::error::ApiError;
use crate::request::{ApiRequest, Subresource};
use kumo_api::UserInfo;

/// What one request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// get, list, watch, create, update, patch, delete.
    pub verb: &'static str,
    pub api_group: String,
    /// The plural resource, e.g. `pods`.
    pub resource: String,
    /// `status`, `binding`, `log`, `exec`, … or empty.
    pub subresource: String,
    /// Empty for cluster-scoped resources and requests across all namespaces.
    pub namespace: String,
    /// Empty for create, list and watch.
    pub name: String,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the text says why (it follows the standard refusal in the 403's message).
    Deny(String),
}

/// Decides whether a request may go on. Called once per request: answers from memory.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, attributes: &Attributes) -> Decision;

    /// Pod `key` (its store key) is `pod` as of `revision`: this server bound it (before the
    /// binding is answered), or read it for a node it refused. An authorizer that learns of pods
    /// from a watch records it now: the node's first write of the pod's status would otherwise
    /// race the watch and be refused.
    fn pod_bound(&self, _key: &str, _pod: &serde_json::Value, _revision: u64) {}
}

/// Allows everything: for tests of other parts and embedders with a single trusted client.
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &Attributes) -> Decision {
        Decision::Allow
    }
}

impl Attributes {
    fn new(
        user: &UserInfo,
        verb: &'static str,
        api_group: &str,
        resource: &str,
        subresource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Self {
        Attributes {
            user: user.clone(),
            verb,
            api_group: api_group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        }
    }

    /// The attributes of an object request.
    pub fn of_request(user: &UserInfo, request: &ApiRequest) -> Self {
        let status = |s: &Option<Subresource>| match s {
            Some(Subresource::Status) => "status",
            None => "",
        };
        match request {
            ApiRequest::Create { kind, ns } => Self::new(
                user,
                "create",
                kind.group,
                kind.plural,
                "",
                ns.as_deref(),
                "",
            ),
            ApiRequest::Get { kind, ns, name } => Self::new(
                user,
                "get",
                kind.group,
                kind.plural,
                "",
                ns.as_deref(),
                name,
            ),
            ApiRequest::List { kind, ns, .. } => {
                Self::new(user, "list", kind.group, kind.plural, "", ns.as_deref(), "")
            }
            ApiRequest::Watch { kind, ns, .. } => Self::new(
                user,
                "watch",
                kind.group,
                kind.plural,
                "",
                ns.as_deref(),
                "",
            ),
            ApiRequest::Update {
                kind,
                ns,
                name,
                subresource,
            } => Self::new(
                user,
                "update",
                kind.group,
                kind.plural,
                status(subresource),
                ns.as_deref(),
                name,
            ),
            ApiRequest::Patch {
                kind,
                ns,
                name,
                subresource,
            } => Self::new(
                user,
                "patch",
                kind.group,
                kind.plural,
                status(subresource),
                ns.as_deref(),
                name,
            ),
            ApiRequest::Delete { kind, ns, name, .. } => Self::new(
                user,
                "delete",
                kind.group,
                kind.plural,
                "",
                ns.as_deref(),
                name,
            ),
            ApiRequest::Bind { ns, name } => {
                Self::new(user, "create", "", "pods", "binding", Some(ns), name)
            }
            ApiRequest::Evict { ns, name } => {
                Self::new(user, "create", "", "pods", "eviction", Some(ns), name)
            }
            ApiRequest::NodeServingCertificate { name } => Self::new(
                user,
                "create",
                "",
                "nodes",
                "servingcertificate",
                None,
                name,
            ),
            // Reading logs is `get pods/log`; exec is `create pods/exec`, as in Kubernetes.
            ApiRequest::Log { ns, name, .. } => {
                Self::new(user, "get", "", "pods", "log", Some(ns), name)
            }
            ApiRequest::NodeCredential { name } => {
                Self::new(user, "create", "", "nodes", "credential", None, name)
            }
            ApiRequest::Exec { ns, name, .. } => {
                Self::new(user, "create", "", "pods", "exec", Some(ns), name)
            }
            ApiRequest::AccessReview { self_review } => Self::new(
                user,
                "create",
                crate::access_review::GROUP,
                if *self_review {
                    "selfsubjectaccessreviews"
                } else {
                    "subjectaccessreviews"
                },
                "",
                None,
                "",
            ),
            ApiRequest::CreateToken { ns, name } => Self::new(
                user,
                "create",
                "",
                "serviceaccounts",
                "token",
                Some(ns),
                name,
            ),
        }
    }

    /// The attributes of a request on the data paths: blobs and datasets are `kumo.dev`'s
    /// cluster-scoped `blobs` and `datasets`; a task's output is the `output` subresource of
    /// its MLTask (`update` to write a rank's manifest, `get` to read them).
    pub fn of_data_request(user: &UserInfo, request: &DataRequest) -> Self {
        const G: &str = "kumo.dev";
        match request {
            DataRequest::PutBlob { digest } => {
                Self::new(user, "update", G, "blobs", "", None, digest)
            }
            DataRequest::GetBlob { digest } => Self::new(user, "get", G, "blobs", "", None, digest),
            DataRequest::ListDatasets => Self::new(user, "list", G, "datasets", "", None, ""),
            DataRequest::GetDataset { name } => {
                Self::new(user, "get", G, "datasets", "", None, name)
            }
            DataRequest::PutDataset { name } => {
                Self::new(user, "update", G, "datasets", "", None, name)
            }
            DataRequest::DeleteDataset { name } => {
                Self::new(user, "delete", G, "datasets", "", None, name)
            }
            DataRequest::PutOutput { ns, task, .. } => {
                Self::new(user, "update", G, "mltasks", "output", Some(ns), task)
            }
            DataRequest::GetOutput { ns, task } => {
                Self::new(user, "get", G, "mltasks", "output", Some(ns), task)
            }
        }
    }

    /// `pods/log`, or `pods` without a subresource.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The 403 of a refusal, worded as kube-apiserver's: `pods "web" is forbidden: User
    /// "alice" cannot get resource "pods" in API group "" in the namespace "team-a"`.
    pub fn forbidden(&self, reason: &str) -> ApiError {
        let object = if self.name.is_empty() {
            self.resource_path()
        } else {
            format!("{} {:?}", self.resource_path(), self.name)
        };
        let scope = if self.namespace.is_empty() {
            if self.verb == "list" || self.verb == "watch" || self.name.is_empty() {
                " at the cluster scope".to_string()
            } else {
                String::new()
            }
        } else {
            format!(" in the namespace {:?}", self.namespace)
        };
        let mut message = format!(
            "{object} is forbidden: User {:?} cannot {} resource {:?} in API group {:?}{scope}",
            self.user.username,
            self.verb,
            self.resource_path(),
            self.api_group,
        );
        if !reason.is_empty() {
            message.push_str(": ");
            message.push_str(reason);
        }
        ApiError::forbidden(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Kind;

    #[test]
    fn forbidden_messages_name_user_verb_resource_and_namespace() {
        let alice = UserInfo::new("alice", &["ml-team"]);
        let pods = Kind::lookup("", "v1", "pods").unwrap();
        let get = Attributes::of_request(
            &alice,
            &ApiRequest::Get {
                kind: pods,
                ns: Some("team-a".into()),
                name: "web".into(),
            },
        );
        let e = get.forbidden("");
        assert_eq!(e.code(), 403);
        assert_eq!(
            e.0.message,
            r#"pods "web" is forbidden: User "alice" cannot get resource "pods" in API group "" in the namespace "team-a""#
        );
        let exec = Attributes::of_request(
            &alice,
            &ApiRequest::Exec {
                ns: "team-a".into(),
                name: "web".into(),
                container: None,
                command: vec!["sh".into()],
                stdin: false,
                tty: false,
            },
        );
        assert_eq!(
            (exec.verb, exec.resource_path().as_str()),
            ("create", "pods/exec")
        );
        let token = Attributes::of_request(
            &alice,
            &ApiRequest::CreateToken {
                ns: "team-a".into(),
                name: "default".into(),
            },
        );
        assert_eq!(
            (
                token.verb,
                token.resource_path().as_str(),
                token.name.as_str()
            ),
            ("create", "serviceaccounts/token", "default")
        );
        let serving = Attributes::of_request(
            &alice,
            &ApiRequest::NodeServingCertificate { name: "n1".into() },
        );
        assert_eq!(
            (
                serving.verb,
                serving.resource_path().as_str(),
                serving.namespace.as_str(),
                serving.name.as_str()
            ),
            ("create", "nodes/servingcertificate", "", "n1")
        );
        let nodes = Kind::lookup("", "v1", "nodes").unwrap();
        let list = Attributes::of_request(
            &alice,
            &ApiRequest::List {
                kind: nodes,
                ns: None,
                label_selector: Default::default(),
                field_selector: Default::default(),
            },
        );
        assert_eq!(
            list.forbidden("").0.message,
            r#"nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
    }
}
