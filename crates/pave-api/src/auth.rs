//! Bearer-token authentication. Tokens are random secrets; only their SHA-256
//! is stored, so a leaked database does not leak usable tokens.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use pave_core::time::now_ms;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Json};
use crate::AppState;

/// Who is calling, attached to each authenticated request.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Actor {
    /// The identity the token acts as.
    pub subject: String,
    /// The token's id.
    pub token_id: String,
    /// The token's name.
    pub token_name: String,
    /// Their teams and roles.
    pub principal: pave_core::rbac::Principal,
}

impl Actor {
    /// The name written into actions and audit events.
    pub fn name(&self) -> &str {
        &self.subject
    }
}

/// SHA-256 of a token secret, hex.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token (Authorization: Bearer …)"))?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not a bearer token"))?;
    let record = state
        .engine
        .store()
        .token_by_hash(&hash_token(secret))
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
    if record.revoked_at.is_some() {
        return Err(ApiError::unauthorized("token has been revoked"));
    }
    if record.expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(ApiError::unauthorized("token has expired"));
    }
    let principal = state.engine.principal(&record.subject).await?;
    req.extensions_mut().insert(Actor {
        principal,
        subject: record.subject,
        token_id: record.id,
        token_name: record.name,
    });
    Ok(next.run(req).await)
}

/// Who the token is.
#[utoipa::path(get, path = "/api/v1/whoami", responses((status = 200, body = Actor)), security(("bearer" = [])))]
pub(crate) async fn whoami(axum::Extension(actor): axum::Extension<Actor>) -> Json<Actor> {
    Json(actor)
}
