//! Environment endpoints. An environment is a named place bound to one target,
//! with labels that policy reads.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use pave_core::names::{validate_labels, validate_name};
use pave_core::time::now_ms;
use pave_core::AuditDraft;
use pave_store::{Environment, WriteOp};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path};
use crate::AppState;

/// The built-in environment of the local target; it cannot be deleted.
const BUILTIN: &str = "local";

/// Body of `POST /api/v1/environments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    /// DNS-label name (`payments-staging`).
    pub name: String,
    /// Target it runs on; `local` when absent.
    #[serde(default)]
    pub target: Option<String>,
    /// Labels policy reads (`tier=production`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Body of `PATCH /api/v1/environments/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEnvironment {
    /// Labels to set (a null value removes the label).
    #[serde(default)]
    pub labels: BTreeMap<String, Option<String>>,
}

/// An environment as the API returns it.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct EnvironmentDto {
    /// Name.
    pub name: String,
    /// Target.
    pub target: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

impl From<Environment> for EnvironmentDto {
    fn from(e: Environment) -> Self {
        EnvironmentDto {
            name: e.name,
            target: e.target,
            labels: e.labels,
            created_at: e.created_at,
        }
    }
}

fn audit(actor: &Actor, verb: &str, name: &str, summary: String, details: serde_json::Value) -> WriteOp {
    WriteOp::Audit(AuditDraft {
        actor: actor.name().to_string(),
        verb: verb.to_string(),
        object: format!("environment/{name}"),
        summary,
        details,
    })
}

fn invalid(e: pave_core::CoreError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", e.to_string())
}

async fn load(state: &AppState, name: &str) -> Result<Environment, ApiError> {
    state.engine.store().get_environment(name).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("environment `{name}` not found"),
        )
    })
}

/// Creates an environment.
#[utoipa::path(post, path = "/api/v1/environments", request_body = CreateEnvironment,
    responses((status = 201, body = EnvironmentDto), (status = 401), (status = 404, description = "unknown target"),
        (status = 409, description = "name taken"), (status = 422)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Json(body): Json<CreateEnvironment>,
) -> Result<(StatusCode, Json<EnvironmentDto>), ApiError> {
    validate_name("environment", &body.name).map_err(invalid)?;
    validate_labels(&body.labels).map_err(invalid)?;
    let env = Environment {
        name: body.name,
        target: body.target.unwrap_or_else(|| "local".to_string()),
        labels: body.labels,
        created_at: now_ms(),
    };
    let summary = format!("environment {} created on target {}", env.name, env.target);
    let details = json!({ "target": env.target, "labels": env.labels });
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::InsertEnvironment(env.clone()),
            audit(&actor, "environment.create", &env.name, summary, details),
        ])
        .await?;
    Ok((StatusCode::CREATED, Json(env.into())))
}

/// Lists environments.
#[utoipa::path(get, path = "/api/v1/environments",
    responses((status = 200, body = Vec<EnvironmentDto>), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<EnvironmentDto>>, ApiError> {
    let envs = state.engine.store().list_environments().await?;
    Ok(Json(envs.into_iter().map(Into::into).collect()))
}

/// One environment.
#[utoipa::path(get, path = "/api/v1/environments/{name}", params(("name" = String, Path)),
    responses((status = 200, body = EnvironmentDto), (status = 401), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<EnvironmentDto>, ApiError> {
    Ok(Json(load(&state, &name).await?.into()))
}

/// Sets or removes labels.
#[utoipa::path(patch, path = "/api/v1/environments/{name}", params(("name" = String, Path)),
    request_body = UpdateEnvironment,
    responses((status = 200, body = EnvironmentDto), (status = 401), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    Json(body): Json<UpdateEnvironment>,
) -> Result<Json<EnvironmentDto>, ApiError> {
    let mut env = load(&state, &name).await?;
    for (k, v) in &body.labels {
        match v {
            Some(v) => env.labels.insert(k.clone(), v.clone()),
            None => env.labels.remove(k),
        };
    }
    validate_labels(&env.labels).map_err(invalid)?;
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::SetEnvironmentLabels {
                name: name.clone(),
                labels: env.labels.clone(),
            },
            audit(
                &actor,
                "environment.update",
                &name,
                format!("labels of {name} changed"),
                json!({ "labels": env.labels }),
            ),
        ])
        .await?;
    Ok(Json(env.into()))
}

/// Deletes an environment that has no unfinished actions.
#[utoipa::path(delete, path = "/api/v1/environments/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 401), (status = 404), (status = 409)), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if name == BUILTIN {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the built-in `local` environment cannot be deleted",
        ));
    }
    load(&state, &name).await?;
    let resources = state.engine.store().list_resources(Some(&name)).await?;
    if !resources.is_empty() {
        let names: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "environment `{name}` still has resources ({}); delete them first",
                names.join(", ")
            ),
        ));
    }
    let workloads = state.engine.store().list_workloads(&name).await?;
    if !workloads.is_empty() {
        let names: Vec<&str> = workloads.iter().map(|w| w.name.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "environment `{name}` still has workloads ({}); delete them first (pave workloads delete NAME --env {name})",
                names.join(", ")
            ),
        ));
    }
    let busy = state.engine.store().count_unfinished_actions(&name).await?;
    if busy > 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "environment `{name}` has {busy} unfinished action(s); wait for them or cancel them first"
            ),
        ));
    }
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::DeleteEnvironment(name.clone()),
            audit(
                &actor,
                "environment.delete",
                &name,
                format!("environment {name} deleted"),
                json!({}),
            ),
        ])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The resources of an environment, with lifecycle, health and outputs (never credentials).
#[utoipa::path(get, path = "/api/v1/environments/{name}/resources", params(("name" = String, Path)),
    responses((status = 200, body = Vec<pave_core::resource::Resource>), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn resources(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<pave_core::resource::Resource>>, ApiError> {
    load(&state, &name).await?;
    Ok(Json(state.engine.store().list_resources(Some(&name)).await?))
}

/// One resource.
#[utoipa::path(get, path = "/api/v1/environments/{name}/resources/{resource}",
    params(("name" = String, Path), ("resource" = String, Path)),
    responses((status = 200, body = pave_core::resource::Resource), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn resource(
    State(state): State<AppState>,
    Path((name, resource)): Path<(String, String)>,
) -> Result<Json<pave_core::resource::Resource>, ApiError> {
    load(&state, &name).await?;
    state
        .engine
        .store()
        .get_resource(&name, &resource)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("resource `{resource}` not found in `{name}`"),
            )
        })
}

/// A workload with its live status from the agent.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct WorkloadDto {
    /// Name.
    pub name: String,
    /// The revision that serves.
    pub current_revision: Option<i64>,
    /// Desired replicas of the desired revision.
    pub desired: u32,
    /// Ready replicas of the desired revision.
    pub ready: u32,
    /// Every replica: index, revision, port, state, ready, restart_count, …
    #[schema(value_type = Vec<Object>)]
    pub replicas: Vec<serde_json::Value>,
    /// The live status as the target reports it (null when the agent could not be asked).
    #[schema(value_type = Object)]
    pub status: serde_json::Value,
    /// Why there is no live status.
    pub status_error: Option<String>,
    /// The revisions, oldest first (only for one workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub revisions: Option<Vec<pave_store::RevisionRecord>>,
}

async fn workload_dto(state: &AppState, w: pave_store::WorkloadRecord) -> WorkloadDto {
    let (status, status_error) = match state.engine.workload_status(&w.env, &w.name).await {
        Ok(s) => (s, None),
        Err(e) => (serde_json::Value::Null, Some(e)),
    };
    WorkloadDto {
        name: w.name,
        current_revision: w.current_revision,
        desired: status["desired"].as_u64().unwrap_or(0) as u32,
        ready: status["ready"].as_u64().unwrap_or(0) as u32,
        replicas: status["replicas"].as_array().cloned().unwrap_or_default(),
        status,
        status_error,
        revisions: None,
    }
}

/// The workloads of an environment, with live status from its target's agent.
#[utoipa::path(get, path = "/api/v1/environments/{name}/workloads", params(("name" = String, Path)),
    responses((status = 200, body = Vec<WorkloadDto>), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn workloads(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<WorkloadDto>>, ApiError> {
    load(&state, &name).await?;
    let mut out = Vec::new();
    for w in state.engine.store().list_workloads(&name).await? {
        out.push(workload_dto(&state, w).await);
    }
    Ok(Json(out))
}

async fn load_workload(
    state: &AppState,
    env: &str,
    name: &str,
) -> Result<pave_store::WorkloadRecord, ApiError> {
    load(state, env).await?;
    state
        .engine
        .store()
        .get_workload(env, name)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("workload `{name}` not found in `{env}`"),
            )
        })
}

/// One workload, with its live status and its revisions.
#[utoipa::path(get, path = "/api/v1/environments/{name}/workloads/{workload}",
    params(("name" = String, Path), ("workload" = String, Path)),
    responses((status = 200, body = WorkloadDto), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn workload(
    State(state): State<AppState>,
    Path((name, workload)): Path<(String, String)>,
) -> Result<Json<WorkloadDto>, ApiError> {
    let w = load_workload(&state, &name, &workload).await?;
    let revisions = state.engine.store().list_revisions(&name, &workload).await?;
    let mut dto = workload_dto(&state, w).await;
    dto.revisions = Some(revisions);
    Ok(Json(dto))
}

/// Query of the workload log endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct WorkloadLogsQuery {
    /// One replica (default: every replica of the current revision).
    pub replica: Option<u32>,
    /// How many lines (default 100).
    pub tail: Option<usize>,
}

/// The last lines of a workload's output.
#[utoipa::path(get, path = "/api/v1/environments/{name}/workloads/{workload}/logs",
    params(("name" = String, Path), ("workload" = String, Path), WorkloadLogsQuery),
    responses((status = 200, body = Vec<String>), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn workload_logs(
    State(state): State<AppState>,
    Path((name, workload)): Path<(String, String)>,
    crate::error::Query(q): crate::error::Query<WorkloadLogsQuery>,
) -> Result<Json<Vec<String>>, ApiError> {
    load_workload(&state, &name, &workload).await?;
    state
        .engine
        .workload_logs(&name, &workload, q.replica, q.tail.unwrap_or(100).min(10_000))
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "agent_failed", e))
}
