//! Incident endpoints: what the detectors found, its analysis and proposals,
//! and applying or dismissing them.

use axum::extract::State;
use axum::Extension;
use pave_store::IncidentRecord;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path, Query};
use crate::AppState;

/// Query of `GET /api/v1/incidents`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListIncidents {
    /// Only this environment.
    pub env: Option<String>,
    /// Also the ended ones (resolved, escalated, dismissed); default: all.
    pub active: Option<bool>,
}

/// Lists incidents of the environments the caller sees, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", params(ListIncidents),
    responses((status = 200, body = Vec<Object>), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListIncidents>,
) -> Result<Json<Vec<IncidentRecord>>, ApiError> {
    let all = state
        .engine
        .store()
        .list_incidents(q.active == Some(true))
        .await?;
    Ok(Json(
        all.into_iter()
            .filter(|i| actor.principal.sees(&i.env) && q.env.as_ref().is_none_or(|e| *e == i.env))
            .collect(),
    ))
}

async fn load(state: &AppState, actor: &Actor, id: &str) -> Result<IncidentRecord, ApiError> {
    let inc = state.engine.store().get_incident(id).await?;
    match inc {
        Some(i) if actor.principal.sees(&i.env) => Ok(i),
        Some(i) => Err(ApiError::forbidden(format!(
            "{} has no role in `{}`",
            actor.principal.user, i.env
        ))),
        None => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("incident {id} not found"),
        )),
    }
}

/// One incident: evidence, analysis, proposals, timeline.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<IncidentRecord>, ApiError> {
    Ok(Json(load(&state, &actor, &id).await?))
}

/// Body of `POST /api/v1/incidents/{id}/apply`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyProposal {
    /// Which proposal (default 0, the first).
    #[serde(default)]
    pub proposal: usize,
    /// Makes the fix temporary: it reverts by itself after this long unless
    /// kept (`30m`, `90s`); default: the proposal's own (a scale-up: 30 min).
    #[serde(default)]
    pub ttl: Option<String>,
}

/// Applies a proposal as an action of the caller (RBAC, policy, approvals apply).
#[utoipa::path(post, path = "/api/v1/incidents/{id}/apply", params(("id" = String, Path)), request_body = ApplyProposal,
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub(crate) async fn apply(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Json(body): Json<ApplyProposal>,
) -> Result<Json<IncidentRecord>, ApiError> {
    let ttl = match body.ttl.as_deref() {
        None => None,
        Some(t) => Some(
            humantime::parse_duration(t)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("ttl `{t}` is not a duration such as 30m or 90s"))
                })?,
        ),
    };
    load(&state, &actor, &id).await?;
    Ok(Json(
        state
            .engine
            .apply_proposal(&id, body.proposal, ttl, &actor.principal)
            .await?,
    ))
}

/// Keeps a temporary fix: it no longer reverts when its time is up.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/keep", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub(crate) async fn keep(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<IncidentRecord>, ApiError> {
    load(&state, &actor, &id).await?;
    Ok(Json(state.engine.keep_incident(&id, &actor.principal).await?))
}

/// Closes an incident without acting.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/dismiss", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub(crate) async fn dismiss(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<IncidentRecord>, ApiError> {
    load(&state, &actor, &id).await?;
    Ok(Json(state.engine.dismiss_incident(&id, &actor.principal).await?))
}
