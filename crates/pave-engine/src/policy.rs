//! The policy hook every action passes before it is queued, and again when
//! an approver amends it. The engine builds the input document (see
//! [`input_document`]); a [`Policy`] answers allow, deny with reasons, or
//! require an approval with reasons and who may give it.

use pave_core::plan::Plan;
use pave_core::rbac::Principal;
use pave_store::Environment;
use serde::Serialize;
use serde_json::{json, Value};

/// What policy says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Queue it.
    Allow,
    /// Refuse it, with reasons.
    Deny {
        /// Why.
        reasons: Vec<String>,
    },
    /// Hold it until someone else approves it.
    RequireApproval {
        /// Why.
        reasons: Vec<String>,
        /// The role an approver needs in the environment.
        approver_role: String,
        /// A team the approver must be in, if any.
        approver_team: Option<String>,
    },
}

/// A policy engine.
pub trait Policy: Send + Sync {
    /// Decides on one request (the document of [`input_document`]). A policy
    /// that cannot decide denies: failing closed.
    fn evaluate(&self, input: &Value) -> Decision;
}

/// Allows everything.
pub struct AllowAll;

impl Policy for AllowAll {
    fn evaluate(&self, _: &Value) -> Decision {
        Decision::Allow
    }
}

impl Policy for pave_policy::PolicySet {
    fn evaluate(&self, input: &Value) -> Decision {
        match pave_policy::PolicySet::evaluate(self, input) {
            Ok(pave_policy::Verdict::Allow) => Decision::Allow,
            Ok(pave_policy::Verdict::Deny { reasons }) => Decision::Deny { reasons },
            Ok(pave_policy::Verdict::RequireApproval {
                reasons,
                approver_role,
                approver_team,
            }) => Decision::RequireApproval {
                reasons,
                approver_role,
                approver_team,
            },
            Err(e) => Decision::Deny {
                reasons: vec![format!("the policy could not be evaluated: {e}")],
            },
        }
    }
}

/// The document policies are written against; its fields are documented in
/// docs/governance.md.
pub fn input_document(
    who: &Principal,
    kind: &str,
    env: &Environment,
    plan: &Plan,
    approval: Option<Value>,
) -> Value {
    let objects: Vec<&str> = plan
        .object
        .split(pave_core::plan::OBJECT_SEPARATOR)
        .filter(|o| !o.is_empty())
        .collect();
    json!({
        "actor": {
            "user": who.user,
            "teams": who.teams,
            "role": who.role_in(&env.name),
            "roles": who.roles(),
        },
        "action": {
            "kind": kind,
            "input": plan.input,
            "objects": objects,
            "object_count": objects.len(),
            "steps": plan.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        },
        "environment": {
            "name": env.name,
            "target": env.target,
            "labels": env.labels,
        },
        "approval": approval,
        "time_ms": pave_core::time::now_ms(),
    })
}
