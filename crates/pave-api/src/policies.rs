//! Policy endpoints: the modules in force, applying and removing modules,
//! evaluating a request without running it, and the Rego unit tests.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use pave_engine::Submission;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path};
use crate::AppState;

/// A module in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyModule {
    /// `builtin/…`, a file path, or `api/NAME`.
    pub name: String,
    /// Its Rego source.
    pub source: String,
}

/// Lists the modules in force.
#[utoipa::path(get, path = "/api/v1/policies", responses((status = 200, body = Vec<PolicyModule>), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<PolicyModule>>, ApiError> {
    let modules = state.engine.policy_modules().await?;
    Ok(Json(
        modules
            .into_iter()
            .map(|m| PolicyModule {
                name: m.name,
                source: m.source,
            })
            .collect(),
    ))
}

/// Body of `PUT /api/v1/policies/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySource {
    /// Rego source of the module.
    pub source: String,
}

/// Adds or replaces a module; one that does not compile is refused (422, with
/// the line and message) and the set in force stays.
#[utoipa::path(put, path = "/api/v1/policies/{name}", params(("name" = String, Path)), request_body = PolicySource,
    responses((status = 204), (status = 401), (status = 403), (status = 422)), security(("bearer" = [])))]
pub(crate) async fn apply(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    Json(body): Json<PolicySource>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .apply_policy(&name, &body.source, actor.name())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a module applied through the API.
#[utoipa::path(delete, path = "/api/v1/policies/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_policy(&name, actor.name()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/v1/policies/eval`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    /// Action kind.
    pub kind: String,
    /// Environment (default `local`).
    #[serde(default)]
    pub env: Option<String>,
    /// The action's input.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
    /// Evaluate as this user (admins only; default: the caller).
    #[serde(default)]
    pub user: Option<String>,
}

/// What policy decides on a request and the input document it saw.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvalResult {
    /// `allow`, `deny` (with reasons) or `require_approval` (with reasons and approver).
    #[schema(value_type = Object)]
    pub decision: pave_engine::Decision,
    /// The document the policies were given.
    #[schema(value_type = Object)]
    pub input: Value,
}

/// What would happen to a request, without running it.
#[utoipa::path(post, path = "/api/v1/policies/eval", request_body = EvalRequest,
    responses((status = 200, body = EvalResult), (status = 401), (status = 403), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub(crate) async fn eval(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Json(body): Json<EvalRequest>,
) -> Result<Json<EvalResult>, ApiError> {
    let principal = match &body.user {
        Some(u) if *u != actor.principal.user => {
            if !actor.principal.has_global(pave_core::rbac::Role::Admin) {
                return Err(ApiError::forbidden(
                    "only admins evaluate requests as someone else",
                ));
            }
            state.engine.principal(u).await?
        }
        _ => actor.principal.clone(),
    };
    let (decision, input) = state
        .engine
        .evaluate_request(Submission {
            kind: body.kind,
            env: body.env.unwrap_or_else(|| "local".into()),
            input: body.input,
            principal,
            idempotency_key: None,
        })
        .await?;
    Ok(Json(EvalResult { decision, input }))
}

/// Runs the Rego unit tests (rules named `test_*`) of the modules in force.
#[utoipa::path(post, path = "/api/v1/policies/test", responses((status = 200, body = Vec<Object>), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub(crate) async fn test(
    State(state): State<AppState>,
) -> Result<Json<Vec<pave_policy::TestOutcome>>, ApiError> {
    let set = pave_policy::PolicySet::new(state.engine.policy_modules().await?)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", e.to_string()))?;
    Ok(Json(set.run_tests()))
}
