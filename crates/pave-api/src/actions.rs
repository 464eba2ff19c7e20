//! Action endpoints.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Extension;
use pave_core::{Action, ActionState};
use pave_engine::Submission;
use pave_store::ActionFilter;

use crate::auth::Actor;
use crate::dto::*;
use crate::error::{ApiError, Json, Path, Query};
use crate::AppState;

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Creates an action. With an `Idempotency-Key` header, a repeated request
/// returns the first action (200) and never runs twice.
#[utoipa::path(post, path = "/api/v1/actions", request_body = CreateAction,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to repeat")),
    responses((status = 201, body = Action), (status = 200, body = Action, description = "Replay of an idempotent request"),
        (status = 400), (status = 401), (status = 404), (status = 409), (status = 413), (status = 422)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    Json(body): Json<CreateAction>,
) -> Result<(StatusCode, Json<Action>), ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?
                .trim()
                .to_string();
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::bad_request(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
                )));
            }
            Some(key)
        }
    };
    let (action, created) = state
        .engine
        .submit(Submission {
            kind: body.kind,
            env: body.env.unwrap_or_else(|| "local".to_string()),
            input: body.input,
            principal: actor.principal.clone(),
            idempotency_key,
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(action)))
}

/// Lists actions, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/api/v1/actions", params(ListActions),
    responses((status = 200, body = ActionPage), (status = 400), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListActions>,
) -> Result<Json<ActionPage>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let state_filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(ActionState::parse(s).ok_or_else(|| {
            let all: Vec<_> = ActionState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("unknown state `{s}` (one of: {})", all.join(", ")))
        })?),
    };
    let items = state
        .engine
        .store()
        .list_actions(&ActionFilter {
            state: state_filter,
            kind: q.kind,
            env: q.env,
            before: q.cursor,
            limit: limit + 1,
        })
        .await?;
    let mut items = items;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|a| a.id.clone())
    } else {
        None
    };
    // Only the environments the caller has a role in; the cursor stays that of
    // the page read, so a page may hold fewer items and the next one follows.
    items.retain(|a| actor.principal.sees(&a.env));
    Ok(Json(ActionPage { items, next_cursor }))
}

pub(crate) async fn load(state: &AppState, id: &str) -> Result<Action, ApiError> {
    state.engine.store().get_action(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("action {id} not found"),
        )
    })
}

/// One action with its steps.
#[utoipa::path(get, path = "/api/v1/actions/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Action), (status = 401), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Action>, ApiError> {
    Ok(Json(load(&state, &id).await?))
}

/// The action's log lines.
#[utoipa::path(get, path = "/api/v1/actions/{id}/logs", params(("id" = String, Path), LogQuery),
    responses((status = 200, body = LogPage), (status = 401), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    load(&state, &id).await?;
    if let Some(tail) = q.tail {
        if !(0..=10_000).contains(&tail) || q.after.is_some() {
            return Err(ApiError::bad_request(
                "tail must be between 0 and 10000, and not combined with after",
            ));
        }
        let last_seq = state.engine.store().last_log_seq(&id).await?;
        let lines = match tail {
            0 => Vec::new(),
            n => state.engine.store().logs(&id, (last_seq - n).max(0), n).await?,
        };
        return Ok(Json(LogPage {
            items: lines.into_iter().map(Into::into).collect(),
            last_seq,
        }));
    }
    let after = q.after.unwrap_or(0);
    let lines = state.engine.store().logs(&id, after, limit).await?;
    let last_seq = lines.last().map(|l| l.seq).unwrap_or(after);
    Ok(Json(LogPage {
        items: lines.into_iter().map(Into::into).collect(),
        last_seq,
    }))
}

/// Queues a failed or cancelled action again from its failed step.
#[utoipa::path(post, path = "/api/v1/actions/{id}/retry", params(("id" = String, Path)),
    responses((status = 200, body = Action), (status = 401), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<Action>, ApiError> {
    Ok(Json(state.engine.retry(&id, &actor.principal).await?))
}

/// Cancels an action (stops its running command).
#[utoipa::path(post, path = "/api/v1/actions/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = Action), (status = 401), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<Action>, ApiError> {
    Ok(Json(state.engine.cancel(&id, &actor.principal).await?))
}

/// Rolls an action back: runs its finished steps' compensations in reverse.
#[utoipa::path(post, path = "/api/v1/actions/{id}/rollback", params(("id" = String, Path)),
    responses((status = 200, body = Action), (status = 401), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<Action>, ApiError> {
    Ok(Json(state.engine.rollback(&id, &actor.principal).await?))
}
