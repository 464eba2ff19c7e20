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

/// What an agent serving a Kubernetes cluster executes besides [`CAPABILITIES`]
/// (`run_job` excepted: a job there would run on the agent's host, not in the cluster).
pub const CLUSTER_CAPABILITIES: &[&str] = &[
    "cluster_info",
    "ensure_namespace",
    "discover",
    "get_objects",
    "apply_objects",
    "patch_object",
    "delete_object",
    "restore_objects",
    "helm",
    "adopt_workload",
    "workload_drift",
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
    /// The cluster's version and what the agent's credentials may do
    /// (Kubernetes). Output: `{"version": …, "access": [...]}`.
    ClusterInfo,
    /// Creates (or updates) the namespace of an environment with its labels.
    EnsureNamespace {
        /// The environment.
        env: String,
        /// Its namespace (default: the environment's name).
        #[serde(default)]
        namespace: Option<String>,
        /// Its labels, put on the namespace.
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Deployments, StatefulSets and Helm releases pave does not manage.
    Discover,
    /// Objects of any kind in an environment's namespace. Output: `{"items": [...]}`.
    GetObjects {
        /// The environment.
        env: String,
        /// Kind (`deployment`, `configmaps`, `deploy`, `deployment.apps`).
        #[serde(rename = "object_kind")]
        kind: String,
        /// One object, or all of that kind.
        #[serde(default)]
        name: Option<String>,
    },
    /// Server-side applies a (multi-document) YAML text. Output: `{"changes": [...]}`
    /// with each object's before-state, the result and a diff.
    ApplyObjects {
        /// The environment.
        env: String,
        /// The objects.
        yaml: String,
        /// A server-side dry run: nothing changes.
        #[serde(default)]
        dry_run: bool,
    },
    /// A JSON merge patch of one object. Output: `{"changes": [one]}`.
    PatchObject {
        /// The environment.
        env: String,
        /// Kind.
        #[serde(rename = "object_kind")]
        kind: String,
        /// Name.
        name: String,
        /// The merge patch.
        patch: Value,
        /// A server-side dry run: nothing changes.
        #[serde(default)]
        dry_run: bool,
    },
    /// Deletes one object. Output: `{"changes": [one]}`.
    DeleteObject {
        /// The environment.
        env: String,
        /// Kind.
        #[serde(rename = "object_kind")]
        kind: String,
        /// Name.
        name: String,
    },
    /// Puts objects back as they were before `changes` (an undo).
    RestoreObjects {
        /// The environment.
        env: String,
        /// What `apply_objects`, `patch_object` or `delete_object` reported.
        changes: Value,
    },
    /// A Helm operation on a release in an environment's namespace.
    Helm {
        /// The environment.
        env: String,
        /// What to do.
        op: Box<HelmOp>,
    },
    /// Takes a Deployment pave did not make under management: its pod
    /// template becomes revision 1 (nothing restarts). Output: `{"spec": …}`.
    AdoptWorkload {
        /// The workload (the Deployment of that name in the environment's namespace).
        key: WorkloadKey,
    },
    /// How the live Deployment differs from the fields pave last applied.
    /// Output: `{"drifted": bool, "diff": "…", "fields": [...]}`.
    WorkloadDrift {
        /// The workload.
        key: WorkloadKey,
        /// The spec pave last applied (values resolved).
        spec: Box<WorkloadSpec>,
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

/// A chart: uploaded by the CLI, or named for the agent to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChartSource {
    /// A gzipped tar of a chart directory, base64.
    Archive {
        /// The archive, base64 (standard alphabet).
        base64: String,
    },
    /// `oci://…`, `repo/name`, or a path on the agent's host.
    Reference {
        /// The reference.
        name: String,
    },
}

/// A Helm operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum HelmOp {
    /// `helm install` (or `helm upgrade --install` when `upgrade`); a failed
    /// upgrade is rolled back to the revision before.
    Install {
        /// The release.
        release: String,
        /// The chart.
        chart: ChartSource,
        /// Values files (YAML texts), in order.
        #[serde(default)]
        values: Vec<String>,
        /// `--set` items.
        #[serde(default)]
        set: Vec<String>,
        /// Values from the vault (resolved at dispatch, sent to helm on stdin only).
        #[serde(default)]
        secret_values: Option<Value>,
        /// `helm upgrade` rather than `helm install`.
        #[serde(default)]
        upgrade: bool,
        /// Wait until the release's objects are ready.
        #[serde(default)]
        wait: bool,
        /// Seconds.
        timeout_secs: u64,
    },
    /// `helm rollback RELEASE [REVISION]`.
    Rollback {
        /// The release.
        release: String,
        /// The revision (default: the one before).
        #[serde(default)]
        revision: Option<u32>,
        /// Wait until ready.
        #[serde(default)]
        wait: bool,
        /// Seconds.
        timeout_secs: u64,
    },
    /// `helm uninstall RELEASE`.
    Uninstall {
        /// The release.
        release: String,
        /// Wait until its objects are gone.
        #[serde(default)]
        wait: bool,
        /// Seconds.
        timeout_secs: u64,
    },
    /// `helm status RELEASE`.
    Status {
        /// The release.
        release: String,
    },
    /// `helm history RELEASE`.
    History {
        /// The release.
        release: String,
    },
    /// `helm list` in the namespace.
    List,
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
