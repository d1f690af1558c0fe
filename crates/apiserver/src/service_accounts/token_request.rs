//! `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`: an `authentication.k8s.io/v1`
//! TokenRequest, answered with a signed token of the account, bound to a pod when the request
//! names one (the agent asks one per pod it runs). A node may ask only tokens bound to a pod
//! bound to it, as Kubernetes' NodeRestriction admits.

use super::jwt::{Claims, KubernetesClaims, ObjectClaim};
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, object_key};
use crate::object::{name, str_at};
use crate::request::Kind;
use crate::App;
use kumo_api::service_account::{
    user_name, validate_token_request, TokenRequest, TokenRequestStatus, TOKEN_REQUEST_API_VERSION,
};
use kumo_api::validation::Errors;
use kumo_api::UserInfo;
use serde_json::Value;

fn kind(plural: &str) -> ApiResult<Kind> {
    Kind::lookup("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("the {plural} kind is not registered")))
}

/// Reads object `plural/name` of `ns` with its uid and revision, or the 404 naming it.
async fn read(app: &App, plural: &str, ns: &str, name: &str) -> ApiResult<(Value, String, u64)> {
    let kind = kind(plural)?;
    let kv = app
        .store
        .get(&object_key(&kind, Some(ns), name))
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(&kind, name))?;
    let obj = decode(&app.transformer, &kv)?;
    let uid = str_at(&obj, &["metadata", "uid"])
        .unwrap_or_default()
        .to_string();
    Ok((obj, uid, kv.mod_revision))
}

fn invalid(name: &str, errors: &[kumo_api::FieldError]) -> ApiError {
    ApiError(Box::new(kumo_api::Status::invalid(
        "TokenRequest",
        name,
        errors,
    )))
}

/// Issues a token of account `account` in `ns` to `user`.
pub async fn create_token(
    app: &App,
    user: &UserInfo,
    ns: &str,
    account: &str,
    body: Value,
) -> ApiResult<Value> {
    let Some(sa) = app.service_accounts.as_ref() else {
        return Err(ApiError::unavailable(
            "service account tokens are not served: this server has no signing key",
        ));
    };
    let mut request: TokenRequest =
        kumo_api::validation::decode(body).map_err(|e| invalid(account, &[e]))?;
    for (field, got, want) in [
        (
            "apiVersion",
            &request.api_version,
            TOKEN_REQUEST_API_VERSION,
        ),
        ("kind", &request.kind, "TokenRequest"),
    ] {
        if !got.is_empty() && got != want {
            return Err(ApiError::bad_request(format!(
                "{field}: {got:?} does not match {want:?}, the {field} served at this path"
            )));
        }
    }
    let mut errors = Errors::default();
    validate_token_request(&request.spec, &mut errors);
    errors.into_result().map_err(|e| invalid(account, &e))?;

    let (_, sa_uid, sa_rev) = read(app, "serviceaccounts", ns, account).await?;
    let node = user.node_name();
    if node.is_some() && request.spec.bound_object_ref.is_none() {
        return Err(ApiError::forbidden(
            "node requested token not bound to a pod",
        ));
    }
    let mut pod_claim = None;
    if let Some(r) = &request.spec.bound_object_ref {
        let (pod, uid, rev) = read(app, "pods", ns, &r.name).await?;
        if !r.uid.is_empty() && r.uid != uid {
            return Err(ApiError::conflict(format!(
                "the UID in the bound object reference ({}) does not match the UID in record ({uid}): the object might have been deleted and then recreated",
                r.uid
            )));
        }
        if let Some(node) = node {
            if str_at(&pod, &["spec", "nodeName"]) != Some(node) {
                return Err(ApiError::forbidden(format!(
                    "node {node:?} requested token bound to a pod scheduled on a different node"
                )));
            }
        }
        let runs_as = str_at(&pod, &["spec", "serviceAccountName"]).unwrap_or_default();
        if runs_as != account {
            return Err(ApiError::bad_request(format!(
                "cannot bind a token of service account {account:?} to pod {:?}, which runs as service account {runs_as:?}",
                name(&pod)
            )));
        }
        sa.pods.observe(ns, &r.name, &uid, rev);
        pod_claim = Some(ObjectClaim {
            name: r.name.clone(),
            uid,
        });
    }
    sa.accounts.observe(ns, account, &sa_uid, sa_rev);

    let now = chrono::Utc::now().timestamp();
    let lifetime = request.spec.expiration_seconds();
    if request.spec.audiences.is_empty() {
        request.spec.audiences = vec![sa.issuer().to_string()];
    }
    let claims = Claims {
        iss: sa.issuer().to_string(),
        sub: user_name(ns, account),
        aud: request.spec.audiences.clone(),
        exp: now + lifetime,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: KubernetesClaims {
            namespace: ns.to_string(),
            serviceaccount: ObjectClaim {
                name: account.to_string(),
                uid: sa_uid,
            },
            pod: pod_claim,
        },
    };
    let token = sa
        .sign(&claims)
        .map_err(|e| ApiError::internal(format!("signing the token failed: {e}")))?;
    request.api_version = TOKEN_REQUEST_API_VERSION.to_string();
    request.kind = "TokenRequest".to_string();
    request.metadata.name = account.to_string();
    request.metadata.namespace = Some(ns.to_string());
    request.spec.expiration_seconds = Some(lifetime);
    request.status = Some(TokenRequestStatus {
        token,
        expiration_timestamp: chrono::DateTime::from_timestamp(claims.exp, 0)
            .unwrap_or_else(chrono::Utc::now),
    });
    serde_json::to_value(&request)
        .map_err(|e| ApiError::internal(format!("encoding the token request: {e}")))
}
