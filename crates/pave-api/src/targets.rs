//! Targets and their agents: add (with an enrollment token), list, get (the
//! agent's connection), remove, revoke, new enrollment tokens. Changing them
//! is for admins (see [`crate::access`]); the engine audits every change.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use pave_engine::TargetView;
use pave_store::TargetRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path};
use crate::AppState;

/// Longest enrollment token lifetime accepted.
const MAX_ENROLL_SECS: u64 = 7 * 24 * 3600;

/// Body of `POST /api/v1/targets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTarget {
    /// DNS-label name.
    pub name: String,
    /// `local` (a host) or `kubernetes` (a cluster).
    pub kind: String,
    /// For `kubernetes` without `agent`: the kubeconfig's text (its file
    /// references inlined); its credentials go into the vault.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// The kubeconfig's context to use (default: its current one).
    #[serde(default)]
    pub context: Option<String>,
    /// Served by a remote agent (`pave agent`), which enrolls with the token returned.
    #[serde(default)]
    pub agent: bool,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How long the enrollment token is valid, in seconds (default 3600).
    #[serde(default)]
    pub enrollment_ttl_secs: Option<u64>,
}

/// Body of `POST /api/v1/targets/{name}/enrollments`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollment {
    /// How long the token is valid, in seconds (default 3600).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A target just added, with its single-use enrollment token (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct AddedTarget {
    /// The target.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub target: TargetRecord,
    /// Single-use; give it to `pave agent --enroll`.
    pub enrollment_token: Option<String>,
    /// Milliseconds since the epoch.
    pub enrollment_expires_at: Option<i64>,
    /// A cluster reached directly: its version and what the credentials may do.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub cluster: Option<serde_json::Value>,
}

fn ttl(secs: Option<u64>) -> Result<Duration, ApiError> {
    match secs.unwrap_or(3600) {
        0 => Err(ApiError::bad_request(
            "an enrollment token lives at least 1 second",
        )),
        s if s > MAX_ENROLL_SECS => Err(ApiError::bad_request(format!(
            "an enrollment token lives at most {MAX_ENROLL_SECS} s"
        ))),
        s => Ok(Duration::from_secs(s)),
    }
}

/// Lists targets.
#[utoipa::path(get, path = "/api/v1/targets", responses((status = 200, body = Vec<Object>), (status = 401)),
    security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<TargetRecord>>, ApiError> {
    Ok(Json(state.engine.store().list_targets().await?))
}

/// Adds a target; one served by a remote agent comes with its enrollment token.
#[utoipa::path(post, path = "/api/v1/targets", request_body = NewTarget,
    responses((status = 201, body = AddedTarget), (status = 401), (status = 403), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub(crate) async fn add(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Json(body): Json<NewTarget>,
) -> Result<(StatusCode, Json<AddedTarget>), ApiError> {
    let ttl = ttl(body.enrollment_ttl_secs)?;
    if body.kind == pave_engine::KUBERNETES && !body.agent {
        let Some(kubeconfig) = body.kubeconfig.as_deref() else {
            return Err(ApiError::bad_request(
                "a Kubernetes target needs `kubeconfig` (or `agent`: an agent in the cluster serves it)",
            ));
        };
        let (target, info) = state
            .engine
            .add_cluster_target(
                &body.name,
                kubeconfig,
                body.context.as_deref(),
                body.labels,
                &actor.principal,
            )
            .await?;
        return Ok((
            StatusCode::CREATED,
            Json(AddedTarget {
                target,
                enrollment_token: None,
                enrollment_expires_at: None,
                cluster: Some(info),
            }),
        ));
    }
    if body.kubeconfig.is_some() || body.context.is_some() {
        return Err(ApiError::bad_request(
            "`kubeconfig` and `context` are for a Kubernetes target reached directly (kind kubernetes, no agent)",
        ));
    }
    let (target, token) = state
        .engine
        .add_target(
            &body.name,
            &body.kind,
            body.agent,
            body.labels,
            ttl,
            &actor.principal,
        )
        .await?;
    let expires = token.as_ref().map(|_| target.created_at + ttl.as_millis() as i64);
    Ok((
        StatusCode::CREATED,
        Json(AddedTarget {
            target,
            enrollment_token: token,
            enrollment_expires_at: expires,
            cluster: None,
        }),
    ))
}

/// One target, with its agent's connection, versions, capabilities and commands in flight.
#[utoipa::path(get, path = "/api/v1/targets/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view: TargetView = state.engine.target_view(&name).await?;
    let mut out = serde_json::to_value(&view)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    if view.target.kind == pave_engine::KUBERNETES {
        // A cluster that does not answer is a fact about the target, not an
        // error of this read.
        out["cluster"] = match state.engine.cluster_info(&name).await {
            Ok(info) => info,
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
    }
    Ok(Json(out))
}

/// Deployments, StatefulSets and Helm releases of a cluster that pave does not manage.
#[utoipa::path(get, path = "/api/v1/targets/{name}/discovery", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 502)),
    security(("bearer" = [])))]
pub(crate) async fn discover(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(state.engine.discover(&name, &actor.principal).await?))
}

/// Removes a target no environment uses (its agents are disconnected).
#[utoipa::path(delete, path = "/api/v1/targets/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.remove_target(&name, &actor.principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the target's agent credentials: the agent is disconnected and refused from now on.
#[utoipa::path(post, path = "/api/v1/targets/{name}/revoke-agent", params(("name" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.revoke_agent(&name, &actor.principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new single-use enrollment token for the target's agent.
#[utoipa::path(post, path = "/api/v1/targets/{name}/enrollments", params(("name" = String, Path)),
    request_body = NewEnrollment,
    responses((status = 201, body = Object), (status = 401), (status = 403), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub(crate) async fn enrollment(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    Json(body): Json<NewEnrollment>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let ttl = ttl(body.ttl_secs)?;
    let token = state.engine.new_enrollment(&name, ttl, &actor.principal).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "enrollment_token": token,
            "enrollment_expires_at": pave_core::time::now_ms() + ttl.as_millis() as i64,
        })),
    ))
}
