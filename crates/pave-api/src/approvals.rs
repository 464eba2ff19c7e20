//! Approval endpoints: what waits for a decision, and the decisions. Who may
//! decide is the engine's call (not the requester; the role policy named).

use axum::extract::State;
use axum::Extension;
use pave_core::Action;
use pave_store::ApprovalRecord;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path, Query};
use crate::AppState;

/// Query of `GET /api/v1/approvals`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListApprovals {
    /// Also the decided ones (default: pending only).
    pub all: Option<bool>,
}

/// Lists approval requests of the environments the caller sees, newest first.
#[utoipa::path(get, path = "/api/v1/approvals", params(ListApprovals),
    responses((status = 200, body = Vec<Object>), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListApprovals>,
) -> Result<Json<Vec<ApprovalRecord>>, ApiError> {
    let all = state.engine.store().list_approvals(q.all != Some(true)).await?;
    Ok(Json(
        all.into_iter().filter(|a| actor.principal.sees(&a.env)).collect(),
    ))
}

/// One approval request.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalRecord>, ApiError> {
    Ok(Json(state.engine.approval(&id).await?))
}

/// Body of `POST /api/v1/approvals/{id}/approve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Changes to the input, as a JSON merge patch (`{"replicas": 3}`); the
    /// amended input is evaluated by policy again and is what runs.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub amend: Option<serde_json::Value>,
    /// A comment for the record.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Approves a held action (not one's own).
#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", params(("id" = String, Path)), request_body = ApproveBody,
    responses((status = 200, body = pave_core::Action), (status = 401), (status = 403), (status = 404), (status = 409),
        (status = 422)), security(("bearer" = [])))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(body): Json<ApproveBody>,
) -> Result<Json<Action>, ApiError> {
    let action = state
        .engine
        .approve(&id, &actor.principal, body.amend, body.comment)
        .await?;
    Ok(Json(action))
}

/// Body of `POST /api/v1/approvals/{id}/reject`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why (required).
    pub comment: String,
}

/// Rejects a held action.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/reject", params(("id" = String, Path)), request_body = RejectBody,
    responses((status = 200, body = pave_core::Action), (status = 401), (status = 403), (status = 404), (status = 409),
        (status = 422)), security(("bearer" = [])))]
pub(crate) async fn reject(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(body): Json<RejectBody>,
) -> Result<Json<Action>, ApiError> {
    Ok(Json(
        state.engine.reject(&id, &actor.principal, body.comment).await?,
    ))
}
