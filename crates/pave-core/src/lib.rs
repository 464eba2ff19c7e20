//! pave's domain: actions and their steps, the state machines that move them,
//! job specifications and the audit hash chain. Nothing here does I/O, so every
//! rule can be unit-tested and shared by the store, the engine and the API.

pub mod action;
pub mod audit;
pub mod blueprint;
pub mod cluster_plan;
pub mod error;
pub mod ids;
pub mod job;
pub mod names;
pub mod plan;
pub mod rbac;
pub mod resource;
pub mod time;
pub mod vault;

pub use action::{Action, ActionError, ActionState, Step, StepState};
pub use audit::{AuditDraft, AuditEvent};
pub use error::CoreError;
pub use job::JobSpec;
