//! The one catch-all handler: authenticate, parse into an [`ApiRequest`], authorise, execute,
//! answer.

use crate::authz::{Attributes, Decision};
use crate::error::{json_response, ApiResult};
use crate::request::{parse, ApiRequest};
use crate::{auth, bind, body, create, delete, exec, log, read, serving_cert, update, watch, App};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kumoVersion": kumo_api::VERSION, "gitVersion": format!("v{}", kumo_api::VERSION)}),
    )
}

/// Serves every API path.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    tracing::debug!(%method, %path, "request");
    let started = std::time::Instant::now();
    match execute(&app, req).await {
        Ok(response) => {
            tracing::trace!(%method, %path, us = started.elapsed().as_micros() as u64, "answered");
            response
        }
        Err(e) => {
            if e.code() >= 500 {
                tracing::warn!(%method, %path, code = e.code(), error = %e, "request failed");
            } else {
                tracing::debug!(%method, %path, code = e.code(), error = %e, "request refused");
            }
            e.into_response()
        }
    }
}

/// Refuses the request unless the authorizer allows what it asks.
fn authorize(app: &App, attributes: &Attributes) -> ApiResult<()> {
    match app.authorizer.authorize(attributes) {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(attributes.forbidden(&reason)),
    }
}

/// The request path: authenticate, parse, authorise, then admit and store (in each handler).
async fn execute(app: &Arc<App>, req: Request) -> ApiResult<Response> {
    let user = auth::authenticate(req.headers(), app.authenticator.as_ref())?;
    if let Some(data) = crate::datasets::parse(req.method(), req.uri().path()) {
        let data = data?;
        authorize(app, &Attributes::of_data_request(&user, &data))?;
        let (parts, body) = req.into_parts();
        return crate::data_store::serve(app, data, &parts.headers, body).await;
    }
    let request = parse(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
    )?;
    authorize(app, &Attributes::of_request(&user, &request))?;
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
    let (parts, body) = req.into_parts();
    let ok = |v: serde_json::Value| json_response(StatusCode::OK, &v);
    Ok(match request {
        ApiRequest::Create { kind, ns } => {
            let value = body::read_json(&parts.headers, body).await?;
            json_response(
                StatusCode::CREATED,
                &create::create(app, kind, ns.as_deref(), value).await?,
            )
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
            ok(update::update(app, kind, ns.as_deref(), &name, subresource, value).await?)
        }
        ApiRequest::Patch {
            kind,
            ns,
            name,
            subresource,
        } => {
            let value = body::read_json(&parts.headers, body).await?;
            ok(update::patch(app, kind, ns.as_deref(), &name, subresource, value).await?)
        }
        ApiRequest::Delete {
            kind,
            ns,
            name,
            grace_period_seconds,
        } => ok(delete::delete(app, kind, ns.as_deref(), &name, grace_period_seconds).await?),
        ApiRequest::Bind { ns, name } => {
            let value = body::read_json(&parts.headers, body).await?;
            json_response(
                StatusCode::CREATED,
                &bind::bind(app, &ns, &name, value).await?,
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
        ApiRequest::Exec { .. } => {
            return Err(crate::error::ApiError::internal(
                "exec requests are served before the body is read",
            ))
        }
    })
}
