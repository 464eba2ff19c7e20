//! Blueprint endpoints: the catalog (built-in, from files, registered here)
//! and registration of new versions. Applying one is an action
//! (`blueprint.apply`, through `POST /api/v1/actions`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use pave_core::blueprint::{Blueprint, BlueprintEntry};
use serde::Deserialize;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path, Query};
use crate::AppState;

/// Query of `GET /api/v1/blueprints/{name}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BlueprintQuery {
    /// A version (default: the newest).
    pub version: Option<u32>,
}

/// Lists every blueprint version.
#[utoipa::path(get, path = "/api/v1/blueprints",
    responses((status = 200, body = Vec<Object>), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<BlueprintEntry>>, ApiError> {
    Ok(Json(state.engine.blueprints().await?))
}

/// One blueprint: its parameters (JSON Schema) and templates.
#[utoipa::path(get, path = "/api/v1/blueprints/{name}", params(("name" = String, Path), BlueprintQuery),
    responses((status = 200, body = Object), (status = 401), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<BlueprintQuery>,
) -> Result<Json<BlueprintEntry>, ApiError> {
    Ok(Json(state.engine.blueprint(&name, q.version).await?))
}

/// Registers a blueprint version, sent as YAML (`application/yaml`) or JSON.
#[utoipa::path(post, path = "/api/v1/blueprints", request_body(content = String, content_type = "application/yaml"),
    responses((status = 201, body = Object), (status = 401), (status = 409, description = "that version exists"),
        (status = 415), (status = 422)), security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<BlueprintEntry>), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if !matches!(
        mime,
        "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml"
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the blueprint as application/yaml or application/json",
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let bp = Blueprint::from_yaml(text)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", e.to_string()))?;
    let entry = state.engine.register_blueprint(bp, actor.name()).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}
