//! Service accounts: each namespace's `default` account, the pod's account checked at
//! admission, the TokenRequest that issues a short-lived token bound to a pod, and the
//! [`ServiceAccounts`] authenticator that turns such a token back into its account's user.
//!
//! A token is an ES256 JWT ([`jwt`]) signed with the cluster's service-account key (the daemon
//! keeps it in `<data-dir>/pki/sa.key`; every API server of a cluster loads the same one). It
//! is valid while unexpired and while the account and the bound pod it names still exist with
//! the uids it names: the [`index`] of live uids answers that from memory.

pub(crate) mod admission;
pub(crate) mod index;
pub mod jwt;
pub(crate) mod token_request;

use crate::auth::{Authenticator, UNKNOWN_TOKEN};
use index::Table;
use jwt::{Claims, KeyError, TokenError, TokenKey};
use kumo_api::service_account::{parse_user_name, user_info};
use kumo_api::UserInfo;
use std::sync::Arc;

/// The issuer (`iss`) of kumo's tokens, also the audience the API server accepts: Kubernetes'
/// default, so in-cluster clients that check it find what they expect.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The key prefix of stored service accounts and pods (see `keys`).
const ACCOUNTS_PREFIX: &str = "/registry/core/serviceaccounts/";
const PODS_PREFIX: &str = "/registry/core/pods/";

/// Issues and checks service-account tokens.
pub struct ServiceAccounts {
    key: TokenKey,
    issuer: String,
    /// What a token must be meant for to authenticate here.
    audiences: Vec<String>,
    pub(crate) accounts: Arc<Table>,
    pub(crate) pods: Arc<Table>,
}

impl std::fmt::Debug for ServiceAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAccounts({}, {:?})", self.issuer, self.key)
    }
}

impl ServiceAccounts {
    /// Tokens signed with the PEM PKCS#8 ECDSA P-256 key `key_pem`.
    pub fn new(key_pem: &str) -> Result<Self, KeyError> {
        Ok(ServiceAccounts {
            key: TokenKey::from_pem(key_pem)?,
            issuer: ISSUER.to_string(),
            audiences: vec![ISSUER.to_string()],
            accounts: Arc::new(Table::new(ACCOUNTS_PREFIX)),
            pods: Arc::new(Table::new(PODS_PREFIX)),
        })
    }

    /// A fresh key, as PEM (see [`jwt::generate_pem`]).
    pub fn generate_key() -> Result<String, KeyError> {
        jwt::generate_pem()
    }

    /// Lists the live accounts and pods, then follows them in the background until the server
    /// shuts down.
    pub(crate) async fn start_index(
        &self,
        store: &Arc<dyn kumo_store::Store>,
        t: &Arc<crate::Transformer>,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), String> {
        for table in [&self.accounts, &self.pods] {
            let revision = table.list(store.as_ref(), t).await?;
            let stop = crate::shutting_down(shutdown.clone());
            tokio::spawn(
                table
                    .clone()
                    .follow(store.clone(), t.clone(), revision, stop),
            );
        }
        Ok(())
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        self.key.sign(claims)
    }

    /// The user of a token at time `now`, or why it is refused.
    fn check(&self, token: &str, now: i64) -> Result<UserInfo, String> {
        let claims = self
            .key
            .verify(token, &self.issuer, &self.audiences, now)
            .map_err(|e| match e {
                TokenError::NotOurs => UNKNOWN_TOKEN.to_string(),
                e => e.to_string(),
            })?;
        let k = &claims.kubernetes;
        let sa = &k.serviceaccount;
        if parse_user_name(&claims.sub) != Some((k.namespace.as_str(), sa.name.as_str())) {
            return Err(
                TokenError::Malformed("sub does not name its service account".into()).to_string(),
            );
        }
        if !self.accounts.synced() || !self.pods.synced() {
            return Err(
                "service account tokens cannot be checked yet: the server is starting".into(),
            );
        }
        if self.accounts.uid(&k.namespace, &sa.name).as_deref() != Some(sa.uid.as_str()) {
            return Err(format!(
                "service account {}/{} (uid {}) of this token no longer exists",
                k.namespace, sa.name, sa.uid
            ));
        }
        if let Some(pod) = &k.pod {
            if self.pods.uid(&k.namespace, &pod.name).as_deref() != Some(pod.uid.as_str()) {
                return Err(format!(
                    "pod {}/{} (uid {}) this token is bound to no longer exists",
                    k.namespace, pod.name, pod.uid
                ));
            }
        }
        Ok(user_info(&k.namespace, &sa.name, &sa.uid))
    }
}

impl Authenticator for ServiceAccounts {
    fn authenticate(&self, token: &str) -> Result<UserInfo, String> {
        self.check(token, chrono::Utc::now().timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt::{KubernetesClaims, ObjectClaim};
    use kumo_store::{MemStore, Store};

    fn claims(pod_uid: &str, exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:a:default".into(),
            aud: vec![ISSUER.into()],
            exp,
            iat: 1000,
            nbf: 1000,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "a".into(),
                serviceaccount: ObjectClaim {
                    name: "default".into(),
                    uid: "sa-1".into(),
                },
                pod: Some(ObjectClaim {
                    name: "web".into(),
                    uid: pod_uid.into(),
                }),
            },
        }
    }

    #[tokio::test]
    async fn tokens_are_checked_against_time_and_the_live_objects() {
        let sa = ServiceAccounts::new(&ServiceAccounts::generate_key().unwrap()).unwrap();
        let token = sa.sign(&claims("pod-1", 2000)).unwrap();
        // Not listed yet: nothing can be said of the objects.
        assert!(sa.check(&token, 1500).unwrap_err().contains("starting"));
        let store = MemStore::new();
        for (key, uid) in [
            ("/registry/core/serviceaccounts/a/default", "sa-1"),
            ("/registry/core/pods/a/web", "pod-1"),
        ] {
            let value = serde_json::json!({"metadata": {"uid": uid}});
            store
                .create(key, serde_json::to_vec(&value).unwrap())
                .await
                .unwrap();
        }
        let t = crate::Transformer::identity();
        sa.accounts.list(&store, &t).await.unwrap();
        sa.pods.list(&store, &t).await.unwrap();

        let user = sa.check(&token, 1500).unwrap();
        assert_eq!(user.username, "system:serviceaccount:a:default");
        assert_eq!(user.uid, "sa-1");
        assert!(user.in_group("system:serviceaccounts:a"));
        for (token, now, refusal) in [
            (token.clone(), 2000, "service account token has expired"),
            (
                sa.sign(&claims("pod-0", 2000)).unwrap(),
                1500,
                "pod a/web (uid pod-0) this token is bound to no longer exists",
            ),
            ("not-a-jwt".to_string(), 1500, UNKNOWN_TOKEN),
        ] {
            assert_eq!(sa.check(&token, now).unwrap_err(), refusal);
        }
        let mut lying = claims("pod-1", 2000);
        lying.sub = "system:serviceaccount:kube-system:admin".into();
        let lying = sa.sign(&lying).unwrap();
        assert!(sa.check(&lying, 1500).unwrap_err().contains("sub"));
    }
}
