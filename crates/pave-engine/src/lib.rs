//! The action engine: accepts requests, plans them into steps, keeps them in a
//! durable queue, runs their steps through agents, and retries, cancels, rolls
//! back and resumes them. Every transition is written to the store (and the
//! audit chain) before it is acted on.

pub mod agent_listener;
mod agents;
mod approvals;
mod clusters;
mod engine;
mod error;
mod expand;
mod policies;
mod policy;
mod remediation;
mod resources;
mod runner;
mod secrets;
mod targets;
mod workloads;

pub use agents::{AgentHub, AgentStatus};
pub use clusters::KUBERNETES;
pub use engine::{Engine, EngineConfig, Submission};
pub use error::EngineError;
pub use expand::BUILTIN_ENVIRONMENT;
pub use policy::{input_document, AllowAll, Decision, Policy};
pub use secrets::{recover_key_file, redact, PREFIX as SECRET_PREFIX, REDACTED};
pub use targets::TargetView;
pub use workloads::LogFollow;
