//! The gate every authenticated request passes: one table of route × the
//! role it needs, checked in one middleware. Requests that make or steer an
//! action are decided by the engine (which every action goes through, so a
//! new kind is covered by construction); the table says so.
//!
//! A route that is not in the table is refused, so forgetting a rule fails
//! closed; a test checks that every route of the router has one.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use pave_core::rbac::{forbidden, Role};

use crate::auth::Actor;
use crate::error::ApiError;
use crate::AppState;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A valid token.
    Authenticated,
    /// At least this role in the environment named by the path's `{name}`.
    Env(Role),
    /// At least this role in the environment of the action named by `{id}`.
    ActionEnv(Role),
    /// At least this role in every environment.
    Global(Role),
    /// The engine decides, by the action's kind and environment.
    Engine,
}

/// Every route under `/api/v1` (and `/metrics`) with what it needs.
pub const TABLE: &[(&str, &str, Access)] = &[
    ("POST", "/api/v1/actions", Access::Engine),
    ("GET", "/api/v1/actions", Access::Authenticated),
    ("GET", "/api/v1/actions/{id}", Access::ActionEnv(Role::Viewer)),
    (
        "GET",
        "/api/v1/actions/{id}/logs",
        Access::ActionEnv(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/actions/{id}/events",
        Access::ActionEnv(Role::Viewer),
    ),
    ("POST", "/api/v1/actions/{id}/retry", Access::Engine),
    ("POST", "/api/v1/actions/{id}/cancel", Access::Engine),
    ("POST", "/api/v1/actions/{id}/rollback", Access::Engine),
    ("GET", "/api/v1/targets", Access::Authenticated),
    ("POST", "/api/v1/targets", Access::Global(Role::Admin)),
    ("GET", "/api/v1/targets/{name}", Access::Authenticated),
    (
        "GET",
        "/api/v1/targets/{name}/discovery",
        Access::Global(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/environments/{name}/objects/dry-run",
        Access::Env(Role::Operator),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/objects/{kind}",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/objects/{kind}/{object}",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/workloads/{workload}/drift",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/helm",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/helm/{release}",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/helm/{release}/history",
        Access::Env(Role::Viewer),
    ),
    ("DELETE", "/api/v1/targets/{name}", Access::Global(Role::Admin)),
    (
        "POST",
        "/api/v1/targets/{name}/revoke-agent",
        Access::Global(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/targets/{name}/enrollments",
        Access::Global(Role::Admin),
    ),
    ("POST", "/api/v1/environments", Access::Global(Role::Operator)),
    ("GET", "/api/v1/environments", Access::Authenticated),
    ("GET", "/api/v1/environments/{name}", Access::Env(Role::Viewer)),
    // Labels are what policy reads (tier=production): only admins change them.
    (
        "PATCH",
        "/api/v1/environments/{name}",
        Access::Global(Role::Admin),
    ),
    ("DELETE", "/api/v1/environments/{name}", Access::Engine),
    (
        "POST",
        "/api/v1/environments/{name}/clone",
        Access::Global(Role::Operator),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/status",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/secrets",
        Access::Env(Role::Developer),
    ),
    (
        "PUT",
        "/api/v1/environments/{name}/secrets/{secret}",
        Access::Env(Role::Operator),
    ),
    (
        "DELETE",
        "/api/v1/environments/{name}/secrets/{secret}",
        Access::Env(Role::Operator),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/resources",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/resources/{resource}",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/workloads",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/workloads/{workload}",
        Access::Env(Role::Viewer),
    ),
    (
        "GET",
        "/api/v1/environments/{name}/workloads/{workload}/logs",
        Access::Env(Role::Viewer),
    ),
    ("GET", "/api/v1/blueprints", Access::Authenticated),
    ("GET", "/api/v1/blueprints/{name}", Access::Authenticated),
    ("POST", "/api/v1/blueprints", Access::Global(Role::Admin)),
    ("GET", "/api/v1/users", Access::Global(Role::Admin)),
    ("POST", "/api/v1/users", Access::Global(Role::Admin)),
    ("GET", "/api/v1/teams", Access::Global(Role::Admin)),
    ("POST", "/api/v1/teams", Access::Global(Role::Admin)),
    (
        "POST",
        "/api/v1/teams/{name}/members",
        Access::Global(Role::Admin),
    ),
    (
        "DELETE",
        "/api/v1/teams/{name}/members/{user}",
        Access::Global(Role::Admin),
    ),
    ("GET", "/api/v1/tokens", Access::Global(Role::Admin)),
    ("POST", "/api/v1/tokens", Access::Global(Role::Admin)),
    ("POST", "/api/v1/tokens/{id}/revoke", Access::Global(Role::Admin)),
    ("GET", "/api/v1/role-bindings", Access::Global(Role::Admin)),
    ("POST", "/api/v1/role-bindings", Access::Global(Role::Admin)),
    ("DELETE", "/api/v1/role-bindings", Access::Global(Role::Admin)),
    (
        "POST",
        "/api/v1/vault/rotate-master-key",
        Access::Global(Role::Admin),
    ),
    ("GET", "/api/v1/policies", Access::Global(Role::Viewer)),
    ("PUT", "/api/v1/policies/{name}", Access::Global(Role::Admin)),
    ("DELETE", "/api/v1/policies/{name}", Access::Global(Role::Admin)),
    ("POST", "/api/v1/policies/eval", Access::Authenticated),
    ("POST", "/api/v1/policies/test", Access::Global(Role::Viewer)),
    // Incidents are checked against their environment by the handlers (the
    // id is not an action's); applying is an action the engine decides on.
    ("GET", "/api/v1/incidents", Access::Authenticated),
    ("GET", "/api/v1/incidents/{id}", Access::Authenticated),
    ("POST", "/api/v1/incidents/{id}/apply", Access::Engine),
    ("POST", "/api/v1/incidents/{id}/dismiss", Access::Engine),
    ("POST", "/api/v1/incidents/{id}/keep", Access::Engine),
    ("GET", "/api/v1/approvals", Access::Authenticated),
    ("GET", "/api/v1/approvals/{id}", Access::ActionEnv(Role::Viewer)),
    ("POST", "/api/v1/approvals/{id}/approve", Access::Engine),
    ("POST", "/api/v1/approvals/{id}/reject", Access::Engine),
    ("GET", "/api/v1/audit", Access::Global(Role::Viewer)),
    ("GET", "/api/v1/audit/verify", Access::Global(Role::Viewer)),
    ("GET", "/api/v1/whoami", Access::Authenticated),
    ("GET", "/api/v1/openapi.json", Access::Authenticated),
    ("GET", "/metrics", Access::Authenticated),
];

/// The rule of a route, if it has one.
pub fn rule(method: &Method, route: &str) -> Option<Access> {
    TABLE
        .iter()
        .find(|(m, r, _)| *m == method.as_str() && *r == route)
        .map(|(_, _, a)| *a)
}

/// The value of `{param}` of `route` in `path`.
fn param<'a>(route: &str, path: &'a str, param: &str) -> Option<&'a str> {
    let want = format!("{{{param}}}");
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| *r == want)
        .map(|(_, v)| v)
}

pub(crate) async fn authorize(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // Unmatched paths have no route: the fallback answers 404.
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return Ok(next.run(req).await);
    };
    let actor = req
        .extensions()
        .get::<Actor>()
        .cloned()
        .ok_or_else(|| ApiError::unauthorized("missing bearer token (Authorization: Bearer …)"))?;
    let p = &actor.principal;
    let path = req.uri().path().to_string();
    let Some(access) = rule(req.method(), &route) else {
        return Err(ApiError::forbidden(format!(
            "{} {route} has no access rule; refusing it",
            req.method()
        )));
    };
    let verb = format!("{} {path}", req.method());
    match access {
        Access::Authenticated | Access::Engine => {}
        Access::Global(role) => {
            if !p.has_global(role) {
                return Err(ApiError::forbidden(forbidden(p, role, None, &verb).to_string()));
            }
        }
        Access::Env(role) => {
            let env = param(&route, &path, "name").unwrap_or_default();
            if !p.has(role, env) {
                return Err(ApiError::forbidden(
                    forbidden(p, role, Some(env), &verb).to_string(),
                ));
            }
        }
        Access::ActionEnv(role) => {
            let id = param(&route, &path, "id").unwrap_or_default();
            // An unknown action is the handler's 404, not a 403.
            if let Some(action) = state.engine.store().get_action(id).await? {
                if !p.has(role, &action.env) {
                    return Err(ApiError::forbidden(
                        forbidden(p, role, Some(&action.env), &verb).to_string(),
                    ));
                }
            }
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_read_by_their_place_in_the_route() {
        let r = "/api/v1/environments/{name}/workloads/{workload}";
        assert_eq!(
            param(r, "/api/v1/environments/prod/workloads/web", "name"),
            Some("prod")
        );
        assert_eq!(
            param(r, "/api/v1/environments/prod/workloads/web", "workload"),
            Some("web")
        );
        assert_eq!(
            rule(&Method::PATCH, "/api/v1/environments/{name}"),
            Some(Access::Global(Role::Admin))
        );
        assert_eq!(rule(&Method::PUT, "/api/v1/environments/{name}"), None);
    }
}
