//! Roles and what they allow. A role is bound to a user or a team, for one
//! environment or for all of them; a person's role in an environment is the
//! highest of the bindings that reach them there.
//!
//! * `viewer` reads.
//! * `developer` also requests the everyday actions (jobs, deploys, scaling,
//!   rollbacks, restarts, exec, provisioning, blueprints) and retries, cancels
//!   or rolls back their own.
//! * `operator` also requests destructive ones (deleting resources, workloads
//!   and environments, cloning), steers anybody's actions, approves, and sets
//!   the environment's secrets.
//! * `admin` also manages users, teams, tokens, role bindings, environment
//!   labels, blueprints, policies and the master key.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// A role, in increasing order of what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Reads.
    Viewer,
    /// Requests everyday actions.
    Developer,
    /// Requests destructive actions, steers others' actions, approves.
    Operator,
    /// Manages pave itself.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Operator, Role::Admin];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Result<Role, CoreError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            CoreError::InvalidInput(format!(
                "unknown role `{s}` (one of: viewer, developer, operator, admin)"
            ))
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a binding gives its role to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Subject {
    /// One user.
    User(String),
    /// Every member of a team.
    Team(String),
}

/// A role given to a subject in one environment (or all, when `env` is None).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Binding {
    /// Who.
    pub subject: Subject,
    /// What.
    pub role: Role,
    /// Where; None = every environment.
    pub env: Option<String>,
}

/// Someone authenticated, with what reaches them: their teams and the
/// bindings of them and their teams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Principal {
    /// User name.
    pub user: String,
    /// Teams they are a member of.
    pub teams: Vec<String>,
    /// Bindings to them or to one of their teams.
    pub bindings: Vec<Binding>,
}

/// The user every server starts with; its token is printed on first start.
pub const BUILTIN_ADMIN: &str = "admin";

impl Principal {
    /// The built-in admin as the migrations create it (for embedding the
    /// engine without the API: benchmarks, tests).
    pub fn builtin_admin() -> Principal {
        Principal {
            user: BUILTIN_ADMIN.into(),
            teams: vec![],
            bindings: vec![Binding {
                subject: Subject::User(BUILTIN_ADMIN.into()),
                role: Role::Admin,
                env: None,
            }],
        }
    }

    /// Whether they may retry, cancel or roll back an action of `kind` that
    /// `requester` asked for in `env`: their own with the role it needed,
    /// anybody's as an operator.
    pub fn may_steer(&self, requester: &str, kind: &str, env: &str) -> bool {
        self.has(Role::Operator, env) || (requester == self.user && self.has(role_to_request(kind), env))
    }

    /// Their role in `env`: the highest binding there or everywhere.
    pub fn role_in(&self, env: &str) -> Option<Role> {
        self.bindings
            .iter()
            .filter(|b| b.env.as_deref().is_none_or(|e| e == env))
            .map(|b| b.role)
            .max()
    }

    /// Their role everywhere (bindings without an environment).
    pub fn global_role(&self) -> Option<Role> {
        self.bindings
            .iter()
            .filter(|b| b.env.is_none())
            .map(|b| b.role)
            .max()
    }

    /// Whether they hold at least `role` in `env`.
    pub fn has(&self, role: Role, env: &str) -> bool {
        self.role_in(env).is_some_and(|r| r >= role)
    }

    /// Whether they hold at least `role` everywhere.
    pub fn has_global(&self, role: Role) -> bool {
        self.global_role().is_some_and(|r| r >= role)
    }

    /// Whether they can see `env` at all.
    pub fn sees(&self, env: &str) -> bool {
        self.role_in(env).is_some()
    }

    /// Roles by environment (`*` for everywhere), for policy input and `whoami`.
    pub fn roles(&self) -> BTreeMap<String, Role> {
        let mut out: BTreeMap<String, Role> = BTreeMap::new();
        for b in &self.bindings {
            let key = b.env.clone().unwrap_or_else(|| "*".into());
            let e = out.entry(key).or_insert(b.role);
            *e = (*e).max(b.role);
        }
        out
    }
}

/// The role an action kind needs in its environment.
pub fn role_to_request(kind: &str) -> Role {
    match kind {
        "resource.delete" | "workload.delete" | "env.delete" | "env.clone" => Role::Operator,
        // Any object of the cluster, outside pave's own model of it.
        "object.apply" | "object.patch" | "object.delete" | "helm.uninstall" | "workload.adopt" => {
            Role::Operator
        }
        _ => Role::Developer,
    }
}

/// Why a request is refused (HTTP 403).
pub fn forbidden(p: &Principal, needs: Role, env: Option<&str>, what: &str) -> CoreError {
    let have = match env {
        Some(e) => p.role_in(e),
        None => p.global_role(),
    };
    let place = env.map_or_else(|| "everywhere".to_string(), |e| format!("in `{e}`"));
    CoreError::Forbidden(format!(
        "{} may not {what}: it needs the {needs} role {place}, and {} has {}",
        p.user,
        p.user,
        have.map_or_else(|| "none".to_string(), |r| format!("{r}"))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            user: "alice".into(),
            teams: vec!["payments".into()],
            bindings: vec![
                Binding {
                    subject: Subject::User("alice".into()),
                    role: Role::Developer,
                    env: Some("payments-prod".into()),
                },
                Binding {
                    subject: Subject::Team("payments".into()),
                    role: Role::Viewer,
                    env: None,
                },
            ],
        }
    }

    #[test]
    fn the_highest_binding_in_reach_counts() {
        let a = alice();
        assert_eq!(a.role_in("payments-prod"), Some(Role::Developer));
        assert_eq!(a.role_in("other"), Some(Role::Viewer));
        assert!(a.has(Role::Developer, "payments-prod"));
        assert!(!a.has(Role::Operator, "payments-prod"));
        assert!(!a.has_global(Role::Developer));
        assert_eq!(a.roles()["*"], Role::Viewer);
        let e = forbidden(&a, Role::Operator, Some("payments-prod"), "delete it").to_string();
        assert!(
            e.contains("needs the operator role in `payments-prod`, and alice has developer"),
            "{e}"
        );
    }

    #[test]
    fn destructive_kinds_need_an_operator() {
        assert_eq!(role_to_request("deploy"), Role::Developer);
        assert_eq!(role_to_request("env.delete"), Role::Operator);
        assert_eq!(Role::parse("operator").unwrap(), Role::Operator);
        assert!(Role::parse("root").is_err());
    }
}
