//! Secret endpoints: set, list (names and versions, never values), delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use pave_store::SecretMeta;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path};
use crate::AppState;

/// A secret as the API shows it: never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretDto {
    /// Name.
    pub name: String,
    /// Environment.
    pub env: String,
    /// Version, raised by every change.
    pub version: i64,
    /// Milliseconds since the epoch of its last change.
    pub updated_at: i64,
    /// How workloads and jobs refer to it in their environment.
    pub reference: String,
}

fn dto(m: SecretMeta) -> SecretDto {
    let name = m.name.trim_start_matches(pave_engine::SECRET_PREFIX).to_string();
    SecretDto {
        reference: format!("${{secret.{name}}}"),
        name,
        env: m.env,
        version: m.version,
        updated_at: m.created_at,
    }
}

/// Lists an environment's secrets.
#[utoipa::path(get, path = "/api/v1/environments/{name}/secrets", params(("name" = String, Path)),
    responses((status = 200, body = Vec<SecretDto>), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(env): Path<String>,
) -> Result<Json<Vec<SecretDto>>, ApiError> {
    let all = state
        .engine
        .store()
        .list_secrets(&env, pave_engine::SECRET_PREFIX)
        .await?;
    Ok(Json(all.into_iter().map(dto).collect()))
}

/// Body of `PUT /api/v1/environments/{name}/secrets/{secret}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The value (kept sealed; never returned).
    pub value: String,
}

/// Sets a secret, or a new version of it.
#[utoipa::path(put, path = "/api/v1/environments/{name}/secrets/{secret}",
    params(("name" = String, Path), ("secret" = String, Path)), request_body = SecretValue,
    responses((status = 200, body = SecretDto), (status = 401), (status = 403), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub(crate) async fn set(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path((env, name)): Path<(String, String)>,
    Json(body): Json<SecretValue>,
) -> Result<Json<SecretDto>, ApiError> {
    let meta = state
        .engine
        .set_secret(&env, &name, &body.value, actor.name())
        .await?;
    Ok(Json(dto(meta)))
}

/// Deletes a secret.
#[utoipa::path(delete, path = "/api/v1/environments/{name}/secrets/{secret}",
    params(("name" = String, Path), ("secret" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path((env, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.engine.delete_secret(&env, &name, actor.name()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Result of a master key rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rotation {
    /// How many secrets were re-wrapped with the new key.
    pub rewrapped: usize,
}

/// Replaces the vault's master key; every secret's data key is re-wrapped.
#[utoipa::path(post, path = "/api/v1/vault/rotate-master-key",
    responses((status = 200, body = Rotation), (status = 401), (status = 403), (status = 409)), security(("bearer" = [])))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<Rotation>, ApiError> {
    let rewrapped = state.engine.rotate_master_key(actor.name()).await?;
    Ok(Json(Rotation { rewrapped }))
}
