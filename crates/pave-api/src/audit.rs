//! Audit endpoints.

use axum::extract::State;
use pave_core::audit::{verify_chain, GENESIS_HASH};

use crate::dto::*;
use crate::error::{ApiError, Json, Query};
use crate::AppState;

/// Audit events, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let items = state
        .engine
        .store()
        .audit_page(q.after.unwrap_or(0), limit)
        .await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage { items, next_after }))
}

/// Recomputes the whole hash chain and names the first event that does not verify.
#[utoipa::path(get, path = "/api/v1/audit/verify",
    responses((status = 200, body = AuditVerification), (status = 401)), security(("bearer" = [])))]
pub(crate) async fn verify(State(state): State<AppState>) -> Result<Json<AuditVerification>, ApiError> {
    let mut prev = GENESIS_HASH.to_string();
    let mut next_seq = 1;
    let mut checked = 0;
    loop {
        let page = state.engine.store().audit_page(next_seq - 1, 1000).await?;
        if page.is_empty() {
            break;
        }
        match verify_chain(&prev, next_seq, &page) {
            Ok((hash, seq)) => {
                checked += page.len() as i64;
                prev = hash;
                next_seq = seq;
            }
            Err(b) => {
                checked += b.seq - next_seq;
                return Ok(Json(AuditVerification {
                    ok: false,
                    checked,
                    first_broken: Some(b.seq),
                    reason: Some(b.reason),
                }));
            }
        }
    }
    let (head_seq, head_hash) = state.engine.store().audit_head().await?;
    let last = next_seq - 1;
    if head_seq != last || (head_seq > 0 && head_hash != prev) {
        let (first_broken, reason) = if head_seq > last {
            (
                last + 1,
                format!(
                    "events {} to {head_seq} are missing from the end of the chain",
                    last + 1
                ),
            )
        } else {
            (
                head_seq + 1,
                format!("the chain's head is event {head_seq}, but events up to {last} exist"),
            )
        };
        return Ok(Json(AuditVerification {
            ok: false,
            checked,
            first_broken: Some(first_broken),
            reason: Some(reason),
        }));
    }
    Ok(Json(AuditVerification {
        ok: true,
        checked,
        first_broken: None,
        reason: None,
    }))
}
