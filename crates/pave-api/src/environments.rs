//! Environment endpoints. An environment is a named place bound to one target,
//! with labels that policy reads.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use pave_core::names::{validate_labels, validate_name};
use pave_core::time::now_ms;
use pave_core::AuditDraft;
use pave_engine::Submission;
use pave_store::{Environment, WriteOp};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path};
use crate::AppState;

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
    /// On a Kubernetes target: the namespace (default: the environment's name).
    #[serde(default)]
    pub namespace: Option<String>,
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
    /// On a Kubernetes target: its namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl From<Environment> for EnvironmentDto {
    fn from(e: Environment) -> Self {
        EnvironmentDto {
            name: e.name,
            target: e.target,
            labels: e.labels,
            created_at: e.created_at,
            namespace: e.namespace,
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
        namespace: body.namespace,
    };
    if state.engine.store().get_environment(&env.name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("environment `{}` already exists", env.name),
        ));
    }
    // On a cluster the environment is a namespace: made (with its labels)
    // before the environment is recorded, so a cluster that refuses leaves
    // nothing behind.
    state.engine.ensure_namespace(&env).await?;
    let summary = format!("environment {} created on target {}", env.name, env.target);
    let details = json!({ "target": env.target, "labels": env.labels, "namespace": env.namespace });
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
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<Vec<EnvironmentDto>>, ApiError> {
    let envs = state.engine.store().list_environments().await?;
    Ok(Json(
        envs.into_iter()
            .filter(|e| actor.principal.sees(&e.name))
            .map(Into::into)
            .collect(),
    ))
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

/// Deletes an environment as an action (`env.delete`): its workloads, then its
/// resources (servers stopped, data removed), then the environment.
#[utoipa::path(delete, path = "/api/v1/environments/{name}", params(("name" = String, Path)),
    responses((status = 202, body = pave_core::Action), (status = 401), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<pave_core::Action>), ApiError> {
    load(&state, &name).await?;
    let (action, _) = state
        .engine
        .submit(Submission {
            kind: "env.delete".into(),
            env: name,
            input: json!({}),
            principal: actor.principal.clone(),
            idempotency_key: None,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(action)))
}

/// Body of `POST /api/v1/environments/{name}/clone`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneEnvironment {
    /// Name of the new environment.
    pub name: String,
    /// Labels to set on the new one, over the source's.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Creates an environment like this one: new resources of the same specs
/// (fresh credentials, none of the data) and the same revisions, as one
/// `env.clone` action running in the new environment.
#[utoipa::path(post, path = "/api/v1/environments/{name}/clone", params(("name" = String, Path)),
    request_body = CloneEnvironment,
    responses((status = 202, body = pave_core::Action), (status = 401), (status = 404), (status = 409),
        (status = 422)), security(("bearer" = [])))]
pub(crate) async fn clone(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(source): Path<String>,
    Json(body): Json<CloneEnvironment>,
) -> Result<(StatusCode, Json<pave_core::Action>), ApiError> {
    let src = load(&state, &source).await?;
    validate_name("environment", &body.name).map_err(invalid)?;
    let mut labels = src.labels.clone();
    labels.extend(body.labels);
    validate_labels(&labels).map_err(invalid)?;
    let env = Environment {
        name: body.name.clone(),
        target: src.target.clone(),
        labels,
        created_at: now_ms(),
        namespace: None,
    };
    state.engine.ensure_namespace(&env).await?;
    let summary = format!("environment {} created as a clone of {source}", env.name);
    let details = json!({ "target": env.target, "labels": env.labels, "source": source });
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::InsertEnvironment(env.clone()),
            audit(&actor, "environment.create", &env.name, summary, details),
        ])
        .await?;
    let submitted = state
        .engine
        .submit(Submission {
            kind: "env.clone".into(),
            env: env.name.clone(),
            input: json!({ "source": source }),
            principal: actor.principal.clone(),
            idempotency_key: None,
        })
        .await;
    match submitted {
        Ok((action, _)) => Ok((StatusCode::ACCEPTED, Json(action))),
        Err(e) => {
            // Nothing was cloned: the new environment goes again, so that the
            // request changed nothing.
            state
                .engine
                .writer()
                .write(vec![
                    WriteOp::DeleteEnvironment(env.name.clone()),
                    audit(
                        &actor,
                        "environment.delete",
                        &env.name,
                        format!("environment {} removed: its clone was refused", env.name),
                        json!({ "error": e.to_string() }),
                    ),
                ])
                .await?;
            Err(e.into())
        }
    }
}

/// An environment with every resource and workload and their live state.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct EnvironmentStatus {
    /// The environment.
    pub environment: EnvironmentDto,
    /// Its resources.
    #[schema(value_type = Vec<Object>)]
    pub resources: Vec<pave_core::resource::Resource>,
    /// Its workloads with live status (each replica with its `port`).
    pub workloads: Vec<WorkloadDto>,
}

/// The live state of everything in an environment.
#[utoipa::path(get, path = "/api/v1/environments/{name}/status", params(("name" = String, Path)),
    responses((status = 200, body = EnvironmentStatus), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<EnvironmentStatus>, ApiError> {
    let env = load(&state, &name).await?;
    let resources = state.engine.store().list_resources(Some(&name)).await?;
    let mut workloads = Vec::new();
    for w in state.engine.store().list_workloads(&name).await? {
        workloads.push(workload_dto(&state, w).await);
    }
    Ok(Json(EnvironmentStatus {
        environment: env.into(),
        resources,
        workloads,
    }))
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
    /// On a Kubernetes target: how the live Deployment differs from what pave
    /// applied, as the last drift sweep found it (absent: no drift).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub drift: Option<serde_json::Value>,
}

async fn workload_dto(state: &AppState, w: pave_store::WorkloadRecord) -> WorkloadDto {
    let (status, status_error) = match state.engine.workload_status(&w.env, &w.name).await {
        Ok(s) => (s, None),
        Err(e) => (serde_json::Value::Null, Some(e)),
    };
    let drift = state.engine.known_drift(&w.env, &w.name);
    WorkloadDto {
        name: w.name,
        current_revision: w.current_revision,
        desired: status["desired"].as_u64().unwrap_or(0) as u32,
        ready: status["ready"].as_u64().unwrap_or(0) as u32,
        replicas: status["replicas"].as_array().cloned().unwrap_or_default(),
        status,
        status_error,
        revisions: None,
        drift,
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
#[serde(deny_unknown_fields)]
pub struct WorkloadLogsQuery {
    /// One replica (default: every replica of the current revision).
    pub replica: Option<u32>,
    /// How many lines (default 100).
    pub tail: Option<usize>,
    /// Keep the response open and send each new line as it is written
    /// (`text/plain`, one line each), until the replicas are gone.
    pub follow: Option<bool>,
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
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    load_workload(&state, &name, &workload).await?;
    let tail = q.tail.unwrap_or(100).min(10_000);
    let agent_failed = |e| ApiError::new(StatusCode::BAD_GATEWAY, "agent_failed", e);
    // A replica may print what it was given: its environment's secrets are redacted.
    let secrets = state.engine.secret_values(&name).await;
    if q.follow != Some(true) {
        let lines = state
            .engine
            .workload_logs(&name, &workload, q.replica, tail)
            .await
            .map_err(agent_failed)?;
        let lines: Vec<String> = lines.iter().map(|l| pave_engine::redact(l, &secrets)).collect();
        return Ok(Json(lines).into_response());
    }
    let follow = state
        .engine
        .follow_workload_logs(&name, &workload, q.replica, tail)
        .await
        .map_err(agent_failed)?;
    // The stream owns the follow: when the client goes, it is dropped and
    // the agent stops reading.
    let lines = futures::stream::unfold((follow, secrets), |(mut f, secrets)| async move {
        match f.next_line().await {
            Ok(Some(line)) => {
                let line = pave_engine::redact(&line, &secrets);
                Some((
                    Ok::<_, std::convert::Infallible>(format!("{line}\n")),
                    (f, secrets),
                ))
            }
            Ok(None) => None,
            Err(e) => Some((Ok(format!("pave: following stopped: {e}\n")), (f, secrets))),
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}
