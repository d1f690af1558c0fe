//! The one catch-all handler: authenticate, parse into an [`ApiRequest`], authorise, check
//! the writer, execute, answer.

use crate::authz::{Attributes, Decision};
use crate::error::{json_response, ApiResult};
use crate::request::{parse, ApiRequest};
use crate::writer_checks::{self, Write};
use crate::{
    audit, auth, bind, body, create, delete, evict, exec, log, read, serving_cert, update, watch,
    App,
};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

pub async fn healthz() -> &'static str {
    "ok"
}

/// `/readyz`, answered to anyone (as `/healthz` and `/version`): `200 ok` once the store answers
/// and the caches requests are checked from are synced, else `503` naming what is not ready.
/// The token and RBAC caches are listed before the server accepts its first request; the
/// service-account index is watched and may fall behind.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut failed = Vec::new();
    if let Some(namespaces) = crate::request::Kind::lookup("", "v1", "namespaces") {
        let key = crate::keys::object_key(&namespaces, None, kumo_api::DEFAULT_NAMESPACE);
        if let Err(e) = app.store.get(&key).await {
            failed.push(format!("store: {e}"));
        }
    }
    if let Some(sa) = &app.service_accounts {
        if !sa.accounts.synced() || !sa.pods.synced() {
            failed.push("service-account index: not synced".to_string());
        }
    }
    if failed.is_empty() {
        return (StatusCode::OK, "ok").into_response();
    }
    let text = format!("not ready: {}", failed.join("; "));
    (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
}

pub async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kumoVersion": kumo_api::VERSION, "gitVersion": format!("v{}", kumo_api::VERSION)}),
    )
}

/// Serves every API path, and records the answer in the audit log before it leaves.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    tracing::debug!(%method, %path, "request");
    let started = std::time::Instant::now();
    let received = app.audit.as_ref().map(|_| audit::Received::of(&req));
    let mut facts = audit::Facts::default();
    let (response, message) = match execute(&app, req, &mut facts).await {
        Ok(response) => {
            tracing::trace!(%method, %path, us = started.elapsed().as_micros() as u64, "answered");
            (response, String::new())
        }
        Err(e) => {
            if e.code() >= 500 {
                tracing::warn!(%method, %path, code = e.code(), error = %e, "request failed");
            } else {
                tracing::debug!(%method, %path, code = e.code(), error = %e, "request refused");
            }
            let message = e.0.message.clone();
            (e.into_response(), message)
        }
    };
    match (&app.audit, received) {
        (Some(log), Some(received)) => audit::record(log, &received, &facts, response, &message),
        _ => response,
    }
}

/// Refuses the request unless the authorizer allows what it asks. A node refused a pod its
/// authorizer has not seen bound to it yet is asked again once the pod is read from the store.
async fn authorize(app: &App, attributes: &Attributes) -> ApiResult<()> {
    match app.authorizer.authorize(attributes) {
        Decision::Allow => Ok(()),
        Decision::Deny(_)
            if crate::node_authz::learn_refused_pod(app, attributes).await
                && app.authorizer.authorize(attributes) == Decision::Allow =>
        {
            Ok(())
        }
        Decision::Deny(reason) => Err(attributes.forbidden(&reason)),
    }
}

/// A parsed request: on the data paths or the object paths.
enum Parsed {
    Data(crate::datasets::DataRequest),
    Api(ApiRequest),
}

/// The request path: authenticate, parse, authorise, then admit and store (in each handler).
/// What it learns on the way goes into `facts`, for the audit line.
async fn execute(app: &Arc<App>, req: Request, facts: &mut audit::Facts) -> ApiResult<Response> {
    let user = auth::authenticate(req.headers(), app.authenticator.as_ref());
    if let Ok(user) = &user {
        facts.user = user.clone();
    }
    // Parsed before the 401 is returned, so that a refused request is recorded with what it
    // asked; its parse error is only told to an authenticated client.
    let parsed = match crate::datasets::parse(req.method(), req.uri().path()) {
        Some(data) => data.map(Parsed::Data),
        None => parse(
            req.method(),
            req.uri().path(),
            req.uri().query(),
            req.headers(),
        )
        .map(Parsed::Api),
    };
    if let Ok(parsed) = &parsed {
        let attributes = match parsed {
            Parsed::Data(data) => Attributes::of_data_request(&facts.user, data),
            Parsed::Api(request) => Attributes::of_request(&facts.user, request),
        };
        facts.attributes = Some(attributes);
        facts.api_version = match parsed {
            Parsed::Api(
                ApiRequest::Create { kind, .. }
                | ApiRequest::Get { kind, .. }
                | ApiRequest::List { kind, .. }
                | ApiRequest::Watch { kind, .. }
                | ApiRequest::Update { kind, .. }
                | ApiRequest::Patch { kind, .. }
                | ApiRequest::Delete { kind, .. },
            ) => kind.version,
            _ => "v1",
        };
        facts.long_running = matches!(
            parsed,
            Parsed::Api(
                ApiRequest::Watch { .. }
                    | ApiRequest::Exec { .. }
                    | ApiRequest::Log { follow: true, .. }
            )
        );
    }
    let user = user?;
    let parsed = parsed?;
    facts.reason = audit::reason(req.headers())?;
    if let Some(attributes) = &facts.attributes {
        authorize(app, attributes).await?;
    }
    audit::ready(app.audit.as_deref(), facts, req.method())?;
    let request = match parsed {
        Parsed::Data(data) => {
            let (parts, body) = req.into_parts();
            return crate::data_store::serve(app, data, &parts.headers, body).await;
        }
        Parsed::Api(request) => request,
    };
    if let ApiRequest::Exec {
        ns,
        name,
        container,
        command,
        stdin,
        tty,
    } = request
    {
        let params = exec::ExecParams {
            ns,
            name,
            container,
            command,
            stdin,
            tty,
        };
        return exec::exec(app, params, req).await;
    }
    if let ApiRequest::NodeCredential { name } = &request {
        let bearer = auth::bearer(req.headers()).unwrap_or_default();
        let issued = crate::credential::issue(app, &user, bearer, name).await?;
        return Ok(json_response(StatusCode::CREATED, &issued));
    }
    let (parts, body) = req.into_parts();
    let ok = |v: serde_json::Value| json_response(StatusCode::OK, &v);
    Ok(match request {
        ApiRequest::Create { kind, ns } => {
            let value = body::read_json(&parts.headers, body).await?;
            writer_checks::check(app, &user, kind, ns.as_deref(), Write::Create(&value)).await?;
            // The name the request asks for, then the one it got (generateName).
            facts.created_name =
                crate::object::str_at(&value, &["metadata", "name"]).map(str::to_string);
            let created = create::create(app, kind, ns.as_deref(), value).await?;
            facts.created_name =
                crate::object::str_at(&created, &["metadata", "name"]).map(str::to_string);
            json_response(StatusCode::CREATED, &created)
        }
        ApiRequest::Get { kind, ns, name } => ok(read::get(app, kind, ns.as_deref(), &name).await?),
        ApiRequest::List {
            kind,
            ns,
            label_selector,
            field_selector,
        } => ok(read::list(app, kind, ns.as_deref(), &label_selector, &field_selector).await?),
        ApiRequest::Watch {
            kind,
            ns,
            label_selector,
            field_selector,
            resource_version,
            bookmarks,
            timeout,
        } => {
            watch::watch(
                app,
                watch::WatchParams {
                    kind,
                    ns,
                    label_selector,
                    field_selector,
                    resource_version,
                    bookmarks,
                    timeout,
                },
            )
            .await?
        }
        ApiRequest::Update {
            kind,
            ns,
            name,
            subresource,
        } => {
            let value = body::read_json(&parts.headers, body).await?;
            if subresource.is_none() {
                let write = Write::Update(&name, &value);
                writer_checks::check(app, &user, kind, ns.as_deref(), write).await?;
            }
            ok(update::update(app, kind, ns.as_deref(), &name, subresource, value).await?)
        }
        ApiRequest::Patch {
            kind,
            ns,
            name,
            subresource,
        } => {
            let value = body::read_json(&parts.headers, body).await?;
            if subresource.is_none() {
                let write = Write::Patch(&name, &value);
                writer_checks::check(app, &user, kind, ns.as_deref(), write).await?;
            }
            ok(update::patch(app, kind, ns.as_deref(), &name, subresource, value).await?)
        }
        ApiRequest::Delete {
            kind,
            ns,
            name,
            grace_period_seconds,
        } => {
            crate::node_authz::restrict_delete(app, &user, kind, ns.as_deref(), &name).await?;
            ok(delete::delete(app, kind, ns.as_deref(), &name, grace_period_seconds).await?)
        }
        ApiRequest::Bind { ns, name } => {
            let value = body::read_json(&parts.headers, body).await?;
            json_response(
                StatusCode::CREATED,
                &bind::bind(app, &ns, &name, value).await?,
            )
        }
        ApiRequest::Evict { ns, name } => {
            let value = body::read_json(&parts.headers, body).await?;
            json_response(
                StatusCode::CREATED,
                &evict::evict(app, &ns, &name, value).await?,
            )
        }
        ApiRequest::NodeServingCertificate { name } => {
            let value = body::read_json(&parts.headers, body).await?;
            json_response(
                StatusCode::CREATED,
                &serving_cert::issue(app, &name, value)?,
            )
        }
        ApiRequest::Log {
            ns,
            name,
            container,
            follow,
            tail_lines,
        } => {
            log::logs(
                app,
                log::LogParams {
                    ns,
                    name,
                    container,
                    follow,
                    tail_lines,
                },
            )
            .await?
        }
        ApiRequest::CreateToken { ns, name } => {
            let value = body::read_json(&parts.headers, body).await?;
            json_response(
                StatusCode::CREATED,
                &crate::service_accounts::token_request::create_token(
                    app, &user, &ns, &name, value,
                )
                .await?,
            )
        }
        ApiRequest::AccessReview { self_review } => {
            let value = body::read_json(&parts.headers, body).await?;
            json_response(
                StatusCode::CREATED,
                &crate::access_review::review(app, &user, self_review, value)?,
            )
        }
        ApiRequest::Exec { .. } | ApiRequest::NodeCredential { .. } => {
            return Err(crate::error::ApiError::internal(
                "exec and credential requests are served before the body is read",
            ))
        }
    })
}
