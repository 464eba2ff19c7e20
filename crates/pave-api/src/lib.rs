//! pave's REST API under `/api/v1`: JSON in and out, bearer-token
//! authentication on everything but health, live progress over SSE, and an
//! OpenAPI document generated from the handlers.

mod access;
mod actions;
mod approvals;
mod audit;
mod auth;
mod blueprints;
mod cluster;
mod dto;
mod environments;
mod error;
mod events;
mod health;
mod incidents;
mod openapi;
mod people;
mod policies;
mod secrets;
mod targets;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use pave_engine::Engine;

pub use access::{Access, TABLE as ACCESS_TABLE};
pub use auth::{hash_token, Actor};
pub use error::ApiError;

/// Largest request body accepted; larger ones get 413 and change nothing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The action engine (and through it, the store).
    pub engine: Engine,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    /// Set once the engine's worker loop is running.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/actions", post(actions::create).get(actions::list))
        .route("/actions/{id}", get(actions::get))
        .route("/actions/{id}/logs", get(actions::logs))
        .route("/actions/{id}/events", get(events::stream))
        .route("/actions/{id}/retry", post(actions::retry))
        .route("/actions/{id}/cancel", post(actions::cancel))
        .route("/actions/{id}/rollback", post(actions::rollback))
        .route(
            "/environments",
            post(environments::create).get(environments::list),
        )
        .route(
            "/environments/{name}",
            get(environments::get)
                .patch(environments::update)
                .delete(environments::delete),
        )
        .route("/environments/{name}/clone", post(environments::clone))
        .route("/environments/{name}/status", get(environments::status))
        .route("/blueprints", post(blueprints::create).get(blueprints::list))
        .route("/blueprints/{name}", get(blueprints::get))
        .route("/environments/{name}/secrets", get(secrets::list))
        .route(
            "/environments/{name}/secrets/{secret}",
            axum::routing::put(secrets::set).delete(secrets::delete),
        )
        .route("/environments/{name}/resources", get(environments::resources))
        .route(
            "/environments/{name}/resources/{resource}",
            get(environments::resource),
        )
        .route("/environments/{name}/workloads", get(environments::workloads))
        .route(
            "/environments/{name}/workloads/{workload}",
            get(environments::workload),
        )
        .route(
            "/environments/{name}/workloads/{workload}/logs",
            get(environments::workload_logs),
        )
        .route("/targets", get(targets::list).post(targets::add))
        .route("/targets/{name}", get(targets::get).delete(targets::remove))
        .route("/targets/{name}/revoke-agent", post(targets::revoke))
        .route("/targets/{name}/enrollments", post(targets::enrollment))
        .route("/targets/{name}/discovery", get(targets::discover))
        .route("/environments/{name}/objects/dry-run", post(cluster::dry_run))
        .route("/environments/{name}/objects/{kind}", get(cluster::list))
        .route("/environments/{name}/objects/{kind}/{object}", get(cluster::get))
        .route(
            "/environments/{name}/workloads/{workload}/drift",
            get(cluster::drift),
        )
        .route("/environments/{name}/helm", get(cluster::helm_list))
        .route("/environments/{name}/helm/{release}", get(cluster::helm_status))
        .route(
            "/environments/{name}/helm/{release}/history",
            get(cluster::helm_history),
        )
        .route("/users", get(people::list_users).post(people::create_user))
        .route("/teams", get(people::list_teams).post(people::create_team))
        .route("/teams/{name}/members", post(people::add_member))
        .route(
            "/teams/{name}/members/{user}",
            axum::routing::delete(people::remove_member),
        )
        .route("/tokens", get(people::list_tokens).post(people::create_token))
        .route("/tokens/{id}/revoke", post(people::revoke_token))
        .route(
            "/role-bindings",
            get(people::list_bindings)
                .post(people::bind)
                .delete(people::unbind),
        )
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", get(approvals::get))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/reject", post(approvals::reject))
        .route("/vault/rotate-master-key", post(secrets::rotate))
        .route("/policies", get(policies::list))
        .route("/policies/eval", post(policies::eval))
        .route("/policies/test", post(policies::test))
        .route(
            "/policies/{name}",
            axum::routing::put(policies::apply).delete(policies::delete),
        )
        .route("/incidents", get(incidents::list))
        .route("/incidents/{id}", get(incidents::get))
        .route("/incidents/{id}/apply", post(incidents::apply))
        .route("/incidents/{id}/dismiss", post(incidents::dismiss))
        .route("/incidents/{id}/keep", post(incidents::keep))
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .route("/whoami", get(auth::whoami))
        .route("/openapi.json", get(openapi::document))
        .fallback(error::not_found);
    let authed = Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::authorize))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .merge(authed)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
