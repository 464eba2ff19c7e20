//! Targets are where workloads run. One trait, [`Target`], shaped by Kubernetes
//! semantics (declarative desired state, revisions, conditions, container states),
//! and its drivers: [`local::LocalTarget`] (supervised processes on this host)
//! and, later, Kubernetes.
//!
//! A rollout is driven by the caller: `apply` the new revision (old replicas keep
//! running), poll `status` until the new revision's replicas are ready or a
//! deadline passes, then `prune` the old revisions (success) or the new one
//! (failure).

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod local;

/// Milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// A workload: `name` in environment `env`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadKey {
    pub env: String,
    pub name: String,
}

impl WorkloadKey {
    pub fn new(env: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            env: env.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.env, self.name)
    }
}

/// The desired state of one revision of a workload (a Deployment's pod template
/// plus its replica count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Immutable revision number; a changed spec is a new revision.
    pub revision: i64,
    /// Program and arguments.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub replicas: u32,
    /// Give each replica a free loopback port in `$PORT`.
    #[serde(default)]
    pub port: bool,
    #[serde(default)]
    pub readiness: Option<Readiness>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub memory_limit_mb: Option<u64>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// The container image (a Kubernetes target needs one; the local target
    /// runs `command` on its host and ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

fn one() -> u32 {
    1
}

/// Readiness probe, run against `127.0.0.1:$PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Readiness {
    /// HTTP GET `path`, ready on 2xx.
    Http { path: String },
    /// A TCP connection is accepted.
    Tcp,
}

/// Kubernetes' `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// Kubernetes' `ContainerState`: exactly one of running, waiting, terminated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Running {
        started_at: Timestamp,
    },
    Waiting {
        /// `ContainerCreating`, `CrashLoopBackOff`.
        reason: String,
        #[serde(default)]
        message: Option<String>,
    },
    Terminated {
        /// `Completed`, `Error`, `OOMKilled`, `ContainerCannotRun`.
        reason: String,
        exit_code: Option<i32>,
        signal: Option<i32>,
        #[serde(default)]
        message: Option<String>,
        finished_at: Timestamp,
    },
}

impl ContainerState {
    /// The reason of a waiting or terminated state.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ContainerState::Running { .. } => None,
            ContainerState::Waiting { reason, .. } | ContainerState::Terminated { reason, .. } => {
                Some(reason)
            }
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, ContainerState::Running { .. })
    }
}

/// One replica (a pod with one container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub index: u32,
    pub revision: i64,
    pub port: Option<u16>,
    /// The workload process (not its supervisor), while it runs.
    pub pid: Option<i32>,
    pub state: ContainerState,
    pub ready: bool,
    pub restart_count: u32,
    pub last_state: Option<ContainerState>,
    /// When the current (or last) run of the container started.
    pub started_at: Option<Timestamp>,
    /// Things the driver could not do as asked (e.g. no cgroup for the memory limit).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Replicas of one revision (a ReplicaSet's counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionCount {
    pub replicas: u32,
    pub ready: u32,
}

/// A Deployment-style condition (`Available`, `Progressing`, `ReplicaFailure`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// The observed state of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkloadStatus {
    /// The desired revision (of the last `apply`), if any.
    pub revision: Option<i64>,
    pub revision_counts: BTreeMap<i64, RevisionCount>,
    /// Desired replicas of the desired revision.
    pub desired: u32,
    /// Ready replicas of the desired revision.
    pub ready: u32,
    pub replicas: Vec<ReplicaStatus>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl WorkloadStatus {
    /// The replicas of one revision.
    pub fn of_revision(&self, revision: i64) -> impl Iterator<Item = &ReplicaStatus> {
        self.replicas.iter().filter(move |r| r.revision == revision)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid workload: {0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl TargetError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TargetError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Sends each line of `reader` (at most `max_line` bytes; a longer one comes
/// in pieces) as `(stream, line)` to `out`, the shape [`Target::exec`]
/// streams its output in, until the reader ends.
pub async fn forward_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
    stream: &'static str,
    max_line: u64,
    out: tokio::sync::mpsc::Sender<(String, String)>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut reader = tokio::io::BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(max_line).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        // A receiver that went away only loses the output; the command still finishes.
        let _ = out.send((stream.to_string(), text)).await;
    }
}

/// A place where workloads run.
#[async_trait]
pub trait Target: Send + Sync {
    /// Make `spec` the desired state of workload `key`. Starts replicas of
    /// `spec.revision` that are missing, keeps ready ones, stops replicas of other
    /// revisions only when told (see [`Target::prune`]). Idempotent.
    async fn apply(&self, key: &WorkloadKey, spec: &WorkloadSpec) -> Result<WorkloadStatus, TargetError>;

    async fn status(&self, key: &WorkloadKey) -> Result<WorkloadStatus, TargetError>;

    /// Stops and removes the replicas of `key` whose revision is not `keep`
    /// (None = all, which deletes the workload).
    async fn prune(&self, key: &WorkloadKey, keep: Option<i64>) -> Result<(), TargetError>;

    /// The last `tail` lines of a replica's output (`None`: every replica of the
    /// current revision).
    async fn logs(
        &self,
        key: &WorkloadKey,
        replica: Option<u32>,
        tail: usize,
    ) -> Result<Vec<String>, TargetError>;

    /// Like [`Target::logs`], then every new line as it is written, until the
    /// followed replicas are gone or `out` is closed (`kubectl logs -f`).
    async fn follow_logs(
        &self,
        key: &WorkloadKey,
        replica: Option<u32>,
        tail: usize,
        out: tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), TargetError>;

    /// Runs a command in the workload's directory and environment (of a current
    /// replica), streams `(stream, line)` pairs (`"stdout"`/`"stderr"`) through
    /// `out`, returns the exit code (128 + signal when killed by a signal).
    async fn exec(
        &self,
        key: &WorkloadKey,
        command: &[String],
        out: tokio::sync::mpsc::Sender<(String, String)>,
    ) -> Result<i32, TargetError>;

    /// Waits until every replica of `revision` is ready, the way the driver
    /// learns of changes (a Kubernetes watch); `None` when it has no better
    /// way than reading [`Target::status`] again, which the caller then does.
    /// An error says why the rollout cannot complete (it stalled, it ran
    /// out of `timeout`).
    async fn wait_rolled_out(
        &self,
        _key: &WorkloadKey,
        _revision: i64,
        _timeout: std::time::Duration,
    ) -> Option<Result<WorkloadStatus, TargetError>> {
        None
    }
}
