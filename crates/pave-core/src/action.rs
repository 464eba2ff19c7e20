//! Actions and steps: the record of one operation, and the state machines that
//! say which changes are allowed. See ARCHITECTURE.md, "The action lifecycle".

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CoreError;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and serialised name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the stored name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where an action is in its lifecycle.
    ActionState {
        Requested => "requested",
        Denied => "denied",
        AwaitingApproval => "awaiting_approval",
        Rejected => "rejected",
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
        RollingBack => "rolling_back",
        RolledBack => "rolled_back",
    }
}

string_enum! {
    /// Where a step is.
    StepState {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// The control plane stopped while a non-idempotent step ran, so its
        /// outcome is unknown; it is not re-run without a person asking.
        Interrupted => "interrupted",
        Cancelled => "cancelled",
        Compensating => "compensating",
        Compensated => "compensated",
        /// Rolled back, but the step had nothing to undo.
        Skipped => "skipped",
    }
}

impl ActionState {
    /// No worker will touch the action again without a request.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActionState::Denied
                | ActionState::Rejected
                | ActionState::Succeeded
                | ActionState::Failed
                | ActionState::Cancelled
                | ActionState::RolledBack
        )
    }

    /// A worker owns the action (it holds a lease and the object lock).
    pub fn is_active(self) -> bool {
        matches!(self, ActionState::Running | ActionState::RollingBack)
    }

    /// States from which `retry` is allowed.
    pub const RETRYABLE: &'static [ActionState] = &[ActionState::Failed, ActionState::Cancelled];
    /// States from which `cancel` is allowed.
    pub const CANCELLABLE: &'static [ActionState] = &[
        ActionState::Requested,
        ActionState::AwaitingApproval,
        ActionState::Queued,
        ActionState::Running,
    ];
    /// States from which `rollback` is allowed.
    pub const ROLLBACKABLE: &'static [ActionState] = &[
        ActionState::Succeeded,
        ActionState::Failed,
        ActionState::Cancelled,
    ];

    /// Checks that `verb` may be applied in this state.
    pub fn check(self, verb: &'static str, allowed: &[ActionState]) -> Result<(), CoreError> {
        if allowed.contains(&self) {
            Ok(())
        } else {
            Err(CoreError::InvalidTransition {
                verb,
                from: self.to_string(),
            })
        }
    }
}

/// Why an action failed: the step, a stable code, a message a person can act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionError {
    /// Name of the step that failed, if a step did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Stable machine-readable code (`command_failed`, `interrupted`, `timeout`, …).
    pub code: String,
    /// What happened, in words.
    pub message: String,
    /// What a person can do next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<String>,
}

/// One idempotent-or-not unit of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Step {
    /// Position in the action, from 0.
    pub idx: i64,
    /// Human name (`run`, `provision postgres`).
    pub name: String,
    /// Command kind sent to the agent for this step.
    pub kind: String,
    /// Whether re-running after a crash is safe.
    pub idempotent: bool,
    /// Current state.
    pub state: StepState,
    /// How many times the step was started.
    pub attempt: i64,
    /// What the agent is told to do.
    pub spec: Value,
    /// What it reported (exit code, created object, …).
    #[serde(default)]
    pub output: Value,
    /// The failure, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ActionError>,
    /// How to undo it, captured before it ran. `null` when there is nothing to undo.
    #[serde(default)]
    pub compensation: Value,
    /// Milliseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Milliseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

/// The record of one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Action {
    /// Time-ordered id.
    pub id: String,
    /// `job`, `noop`, later `deploy`, `provision`, …
    pub kind: String,
    /// Environment the action runs in.
    pub env: String,
    /// The object the action changes; actions on the same object serialise.
    pub object: String,
    /// Who asked.
    pub actor: String,
    /// The input as it will run.
    pub input: Value,
    /// Lifecycle state.
    pub state: ActionState,
    /// How many times it was started (1 + retries).
    pub attempt: i64,
    /// The failure, when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ActionError>,
    /// The result, when succeeded.
    #[serde(default)]
    pub result: Value,
    /// The client's idempotency key, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A cancel was asked for and not yet carried out.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Action {
    /// The step that is running or would run next.
    pub fn current_step(&self) -> Option<&Step> {
        self.steps.iter().find(|s| {
            matches!(
                s.state,
                StepState::Running | StepState::Pending | StepState::Failed | StepState::Interrupted
            )
        })
    }

    /// Steps that succeeded and can be undone, last first.
    pub fn compensable_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .rev()
            .filter(|s| s.state == StepState::Succeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_name() {
        for s in ActionState::ALL {
            assert_eq!(ActionState::parse(s.as_str()), Some(*s));
        }
        for s in StepState::ALL {
            assert_eq!(StepState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(ActionState::parse("nope"), None);
    }

    #[test]
    fn retry_is_refused_on_a_running_action() {
        let err = ActionState::Running
            .check("retry", ActionState::RETRYABLE)
            .unwrap_err();
        assert_eq!(err.to_string(), "cannot retry an action that is running");
        assert!(ActionState::Failed.check("retry", ActionState::RETRYABLE).is_ok());
    }

    #[test]
    fn terminal_and_active_states_do_not_overlap() {
        for s in ActionState::ALL {
            assert!(!(s.is_terminal() && s.is_active()), "{s}");
        }
    }
}
