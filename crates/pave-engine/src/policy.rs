//! The policy hook every action passes before it is queued. The governance
//! work plugs Rego evaluation in here; until then [`AllowAll`] decides.

use serde::Serialize;
use serde_json::Value;

/// What policy sees of a request.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyInput<'a> {
    /// Who asks.
    pub actor: &'a str,
    /// Action kind.
    pub kind: &'a str,
    /// Environment name.
    pub env: &'a str,
    /// Environment labels.
    pub env_labels: &'a std::collections::BTreeMap<String, String>,
    /// Target of the environment.
    pub target: &'a str,
    /// The action's input.
    pub input: &'a Value,
}

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
}

/// A policy engine.
pub trait Policy: Send + Sync {
    /// Decides on one request.
    fn evaluate(&self, input: &PolicyInput<'_>) -> Decision;
}

/// Allows everything (the default until policies are configured).
pub struct AllowAll;

impl Policy for AllowAll {
    fn evaluate(&self, _: &PolicyInput<'_>) -> Decision {
        Decision::Allow
    }
}
