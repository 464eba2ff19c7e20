//! Versioned messages between the control plane and an agent. Every message is
//! one JSON object with a `type` tag; the handshake carries
//! [`PROTOCOL_VERSION`] so that an incompatible peer is refused by name.

use std::collections::BTreeMap;

use pave_core::JobSpec;
pub use pave_providers::ResourceRequest;
pub use pave_targets::{WorkloadKey, WorkloadSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bumped on any incompatible change to these messages.
pub const PROTOCOL_VERSION: u32 = 1;

/// What an agent can execute.
pub const CAPABILITIES: &[&str] = &[
    "noop",
    "run_job",
    "provision_resource",
    "check_resource",
    "repair_resource",
    "delete_resource",
    "apply_workload",
    "await_workload",
    "workload_status",
    "prune_workload",
    "exec_workload",
    "workload_logs",
    "follow_workload_logs",
    "restore_workload",
];

/// Control plane → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// Opens the session.
    Hello {
        /// Protocol version the control plane speaks.
        protocol_version: u32,
        /// Control plane build version.
        server_version: String,
    },
    /// Execute a command. An agent executes a command id at most once.
    Command(Command),
    /// Stop a running command; its result is reported as cancelled.
    Cancel {
        /// Command to stop.
        command_id: String,
    },
    /// The control plane has stored the result of a command; the agent may forget it.
    Ack {
        /// Command whose result was stored.
        command_id: String,
    },
    /// Liveness.
    Heartbeat {
        /// Milliseconds since the epoch, sender's clock.
        time: i64,
    },
}

/// Agent → control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    /// Answers `Hello`.
    Hello {
        /// Protocol version the agent speaks.
        protocol_version: u32,
        /// Agent build version.
        agent_version: String,
        /// Command kinds it executes.
        capabilities: Vec<String>,
        /// Host it runs on.
        hostname: String,
    },
    /// The command started (carries what is needed to find it again, e.g. a pid).
    Started {
        /// Command id.
        command_id: String,
        /// Driver-specific facts about the running command.
        #[serde(default)]
        info: Value,
    },
    /// One line of output.
    Log {
        /// Command id.
        command_id: String,
        /// `stdout` or `stderr`.
        stream: LogStream,
        /// The line, without its newline.
        line: String,
    },
    /// The command ended. Sent until acknowledged.
    Result {
        /// Command id.
        command_id: String,
        /// How it ended.
        outcome: Outcome,
    },
    /// Liveness.
    Heartbeat {
        /// Milliseconds since the epoch, sender's clock.
        time: i64,
    },
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// pave's own remarks about the step.
    System,
}

impl LogStream {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }
}

/// One unit of work for an agent, tied to an action step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique per step attempt: `{action}.{step}.{attempt}`.
    pub id: String,
    /// The action it belongs to.
    pub action_id: String,
    /// The step index it belongs to.
    pub step: i64,
    /// What to do.
    pub payload: CommandPayload,
}

/// The commands an agent understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandPayload {
    /// Do nothing and succeed: measures the path itself.
    Noop,
    /// Run a job to completion.
    RunJob {
        /// The job.
        spec: JobSpec,
        /// Environment values resolved by the control plane (secrets later);
        /// added to the job's own.
        #[serde(default)]
        extra_env: BTreeMap<String, String>,
    },
    /// Create a resource and wait until it is healthy (idempotent).
    ProvisionResource {
        /// The resource, with its credentials resolved.
        request: ResourceRequest,
    },
    /// Check a resource's health with a real connection.
    CheckResource {
        /// The resource, with its credentials resolved.
        request: ResourceRequest,
    },
    /// Start a resource whose process died, with its data.
    RepairResource {
        /// The resource, with its credentials resolved.
        request: ResourceRequest,
    },
    /// Stop a resource and remove its data (idempotent).
    DeleteResource {
        /// The resource.
        request: ResourceRequest,
    },
    /// Make `spec` the desired revision of a workload (idempotent; replicas of
    /// other revisions keep running). Output: the workload's status.
    ApplyWorkload {
        /// The workload.
        key: WorkloadKey,
        /// The revision, with its environment values resolved.
        spec: Box<WorkloadSpec>,
    },
    /// Poll the workload every 250 ms until every replica of `revision` is
    /// ready, or fail after `timeout_ms`; on failure retire `revision` and
    /// restore `fallback` (the previous revision), or delete the workload when
    /// there is none.
    AwaitWorkload {
        /// The workload.
        key: WorkloadKey,
        /// The revision to wait for.
        revision: i64,
        /// How long to wait.
        timeout_ms: u64,
        /// The revision to keep serving when this one does not become ready.
        #[serde(default)]
        fallback: Option<Box<WorkloadSpec>>,
        /// Applied first (idempotent): a retried wait brings back the replicas
        /// that a failed one retired.
        #[serde(default)]
        apply: Option<Box<WorkloadSpec>>,
        /// Ready replicas that suffice (default: every one wanted).
        #[serde(default)]
        min_ready: Option<u32>,
    },
    /// Make `spec` the only revision of a workload again (undoing a rollout),
    /// or remove every replica when there is none.
    RestoreWorkload {
        /// The workload.
        key: WorkloadKey,
        /// The revision to serve.
        #[serde(default)]
        spec: Option<Box<WorkloadSpec>>,
    },
    /// The observed state of a workload. Output: its status.
    WorkloadStatus {
        /// The workload.
        key: WorkloadKey,
    },
    /// Stop the replicas whose revision is not `keep` (`None`: all of them).
    PruneWorkload {
        /// The workload.
        key: WorkloadKey,
        /// The revision to keep.
        #[serde(default)]
        keep: Option<i64>,
    },
    /// Run a command in a workload's environment; lines stream as logs, the
    /// output carries `exit_code`.
    ExecWorkload {
        /// The workload.
        key: WorkloadKey,
        /// Program and arguments.
        command: Vec<String>,
    },
    /// The last lines of a workload's output, then each new line as a `log`
    /// message, until cancelled or the replicas are gone.
    FollowWorkloadLogs {
        /// The workload.
        key: WorkloadKey,
        /// One replica, or every replica of the current revision.
        #[serde(default)]
        replica: Option<u32>,
        /// How many earlier lines first.
        tail: usize,
    },
    /// The last lines of a workload's output. Output: `{"lines": [...]}`.
    WorkloadLogs {
        /// The workload.
        key: WorkloadKey,
        /// One replica, or every replica of the current revision.
        #[serde(default)]
        replica: Option<u32>,
        /// How many lines.
        tail: usize,
    },
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It did what was asked.
    Succeeded {
        /// What it reports.
        #[serde(default)]
        output: Value,
    },
    /// It did not.
    Failed {
        /// Stable code (`command_failed`, `timeout`, `spawn_failed`, provider codes).
        code: String,
        /// What happened.
        message: String,
        /// What it reports anyway (exit code, …).
        #[serde(default)]
        output: Value,
    },
    /// It was stopped by a cancel.
    Cancelled {
        /// What it reports anyway.
        #[serde(default)]
        output: Value,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_stable_json_shape() {
        let m = ToAgent::Command(Command {
            id: "a.0.1".into(),
            action_id: "a".into(),
            step: 0,
            payload: CommandPayload::Noop,
        });
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"type":"command","id":"a.0.1","action_id":"a","step":0,"payload":{"kind":"noop"}}"#
        );
        assert_eq!(serde_json::from_str::<ToAgent>(&text).unwrap(), m);
    }

    #[test]
    fn an_unknown_message_type_is_an_error_not_a_guess() {
        assert!(serde_json::from_str::<FromAgent>(r#"{"type":"teleport"}"#).is_err());
    }
}
