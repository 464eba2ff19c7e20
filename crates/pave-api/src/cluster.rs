//! Reads of a Kubernetes environment's objects and Helm releases, and the
//! server-side dry run of an apply. Changes are actions (`object.*`,
//! `helm.*` through `POST /api/v1/actions`), so they pass policy, approvals
//! and the audit log like any other.

use axum::extract::State;
use pave_agent::protocol::HelmOp;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{ApiError, Json, Path};
use crate::AppState;

/// Body of `POST /api/v1/environments/{name}/objects/dry-run`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    /// The objects, YAML or JSON (several documents).
    pub yaml: String,
}

/// Secret values never leave the cluster through pave: each becomes its size.
fn redact_secrets(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        Value::Object(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("Secret") {
                for field in ["data", "stringData"] {
                    if let Some(Value::Object(data)) = map.get_mut(field) {
                        for value in data.values_mut() {
                            let len = value.as_str().map_or(0, str::len);
                            *value = Value::String(format!("(redacted, {len} bytes)"));
                        }
                    }
                }
            }
            for key in ["items", "changes", "before", "after"] {
                if let Some(inner) = map.get_mut(key) {
                    redact_secrets(inner);
                }
            }
        }
        _ => {}
    }
}

fn diffs_of_secrets(v: &mut Value) {
    if let Some(changes) = v["changes"].as_array_mut() {
        for c in changes {
            if c["kind"] == "Secret" {
                c["diff"] = Value::String("(a Secret: its diff is not shown)".into());
            }
        }
    }
}

/// Objects of one kind in the environment's namespace.
#[utoipa::path(get, path = "/api/v1/environments/{name}/objects/{kind}",
    params(("name" = String, Path), ("kind" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 422), (status = 502)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path((name, kind)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut out = state.engine.get_objects(&name, &kind, None).await?;
    redact_secrets(&mut out);
    Ok(Json(out))
}

/// One object of the environment's namespace.
#[utoipa::path(get, path = "/api/v1/environments/{name}/objects/{kind}/{object}",
    params(("name" = String, Path), ("kind" = String, Path), ("object" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 502)),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path((name, kind, object)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut out = state.engine.get_objects(&name, &kind, Some(&object)).await?;
    redact_secrets(&mut out);
    Ok(Json(out))
}

/// What an apply would change (a server-side dry run; nothing changes).
#[utoipa::path(post, path = "/api/v1/environments/{name}/objects/dry-run", params(("name" = String, Path)),
    request_body = DryRun,
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 502)),
    security(("bearer" = [])))]
pub(crate) async fn dry_run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<DryRun>,
) -> Result<Json<Value>, ApiError> {
    if body.yaml.len() > pave_core::cluster_plan::MAX_OBJECTS_YAML {
        return Err(ApiError::bad_request("`yaml` is larger than 1 MiB"));
    }
    let mut out = state.engine.dry_run_apply(&name, &body.yaml).await?;
    diffs_of_secrets(&mut out);
    redact_secrets(&mut out);
    Ok(Json(out))
}

/// Helm releases in the environment's namespace.
#[utoipa::path(get, path = "/api/v1/environments/{name}/helm", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 502)),
    security(("bearer" = [])))]
pub(crate) async fn helm_list(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.engine.helm_query(&name, HelmOp::List).await?))
}

/// A Helm release's status.
#[utoipa::path(get, path = "/api/v1/environments/{name}/helm/{release}",
    params(("name" = String, Path), ("release" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 502)),
    security(("bearer" = [])))]
pub(crate) async fn helm_status(
    State(state): State<AppState>,
    Path((name, release)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    pave_core::cluster_plan::validate_release(&release).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(
        state.engine.helm_query(&name, HelmOp::Status { release }).await?,
    ))
}

/// A Helm release's revisions.
#[utoipa::path(get, path = "/api/v1/environments/{name}/helm/{release}/history",
    params(("name" = String, Path), ("release" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 502)),
    security(("bearer" = [])))]
pub(crate) async fn helm_history(
    State(state): State<AppState>,
    Path((name, release)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    pave_core::cluster_plan::validate_release(&release).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(
        state
            .engine
            .helm_query(&name, HelmOp::History { release })
            .await?,
    ))
}

/// How a workload's live Deployment differs from what pave applied for its
/// current revision (asked now, not the last sweep's finding).
#[utoipa::path(get, path = "/api/v1/environments/{name}/workloads/{workload}/drift",
    params(("name" = String, Path), ("workload" = String, Path)),
    responses((status = 200, body = Object), (status = 401), (status = 403), (status = 404), (status = 502)),
    security(("bearer" = [])))]
pub(crate) async fn drift(
    State(state): State<AppState>,
    Path((name, workload)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.engine.workload_drift(&name, &workload).await?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_values_never_leave_through_a_read_or_a_dry_run() {
        let mut read = json!({ "items": [
            { "kind": "Secret", "data": { "password": "czNjcjN0" }, "stringData": { "token": "abc" } },
            { "kind": "ConfigMap", "data": { "mode": "fast" } },
        ] });
        redact_secrets(&mut read);
        assert_eq!(read["items"][0]["data"]["password"], "(redacted, 8 bytes)");
        assert_eq!(read["items"][0]["stringData"]["token"], "(redacted, 3 bytes)");
        assert_eq!(read["items"][1]["data"]["mode"], "fast", "only Secrets");

        let mut dry = json!({ "changes": [{ "kind": "Secret", "diff": "+  password: czNjcjN0",
            "before": null, "after": { "kind": "Secret", "data": { "password": "czNjcjN0" } } }] });
        diffs_of_secrets(&mut dry);
        redact_secrets(&mut dry);
        let text = dry.to_string();
        assert!(!text.contains("czNjcjN0"), "{text}");
    }
}
