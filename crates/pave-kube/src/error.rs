//! The crate's one error type, and how it maps into [`TargetError`].

use kube::core::Status;
use pave_targets::TargetError;

/// `Result` with [`KubeError`] as the default error.
pub type Result<T, E = KubeError> = std::result::Result<T, E>;

/// What can go wrong between pave and a cluster. Every message names the object
/// and, for an API error, carries the API server's own message.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The API server answered with an error `Status` (403 Forbidden, 404 NotFound,
    /// 422 Invalid, 409 Conflict, …).
    #[error("{action} {object}: {}", describe(status))]
    Api {
        /// What pave was doing: `apply`, `get`, `list`, `delete`, `patch`, …
        action: &'static str,
        /// The object, e.g. `Deployment pave-demo/web`.
        object: String,
        /// The API server's `Status`, verbatim.
        status: Box<Status>,
    },
    /// The API server could not be reached, or the exchange failed below HTTP.
    #[error("{action} {object}: cannot talk to the API server: {source}")]
    Transport {
        /// What pave was doing.
        action: &'static str,
        /// The object.
        object: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// A server-side apply conflicted with fields that other field managers own,
    /// on more than the `.spec.replicas` pave takes back by force.
    #[error(
        "apply {object}: fields are owned by other managers (pave only takes over .spec.replicas): {message}"
    )]
    Conflict {
        /// The object.
        object: String,
        /// The API server's message, naming the managers and fields.
        message: String,
    },
    /// The kubelet of a pod's node did not answer a log or exec request.
    #[error("the node of pod {pod} did not answer (no kubelet reachable?): {detail}")]
    NodeUnreachable {
        /// `namespace/name` of the pod.
        pod: String,
        /// A timeout, or the API server's message about the node.
        detail: String,
    },
    /// The workload cannot be expressed as Kubernetes objects.
    #[error("invalid workload: {0}")]
    Invalid(String),
    /// The object (or the replica asked for) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The Deployment stopped progressing (`Progressing=False`, `ProgressDeadlineExceeded`).
    #[error("rollout of {object} revision {revision} stalled: {reason}: {message}")]
    RolloutStalled {
        /// The Deployment.
        object: String,
        /// The revision being rolled out.
        revision: i64,
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// The rollout was not complete when the caller's timeout ran out.
    #[error("rollout of {object} revision {revision} not complete after {secs} s: {progress}")]
    RolloutTimeout {
        /// The Deployment.
        object: String,
        /// The revision being rolled out.
        revision: i64,
        /// The timeout.
        secs: u64,
        /// The last status seen (replicas, conditions).
        progress: String,
    },
    /// The Deployment's template now carries a newer revision than the one waited for.
    #[error("rollout of {object} revision {revision}: superseded by revision {current}")]
    Superseded {
        /// The Deployment.
        object: String,
        /// The revision waited for.
        revision: i64,
        /// The revision the Deployment has now.
        current: i64,
    },
    /// A command run through the `exec` subresource failed to report its exit.
    #[error("exec in pod {pod}: {message}")]
    Exec {
        /// `namespace/name` of the pod.
        pod: String,
        /// What went wrong.
        message: String,
    },
}

fn describe(status: &Status) -> String {
    let mut out = if status.message.is_empty() {
        "(no message)".to_string()
    } else {
        status.message.clone()
    };
    match (status.reason.is_empty(), status.code) {
        (true, 0) => {}
        (true, code) => out.push_str(&format!(" (HTTP {code})")),
        (false, 0) => out.push_str(&format!(" ({})", status.reason)),
        (false, code) => out.push_str(&format!(" ({}, HTTP {code})", status.reason)),
    }
    out
}

impl KubeError {
    /// The HTTP code of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { status, .. } => Some(status.code),
            _ => None,
        }
    }

    /// Worth trying again later unchanged (transport trouble, 5xx, 429, an
    /// unreachable node, a timeout); not for denials or invalid input.
    pub fn is_retryable(&self) -> bool {
        match self {
            KubeError::Api { status, .. } => status.code >= 500 || status.code == 429,
            KubeError::Transport { .. } | KubeError::NodeUnreachable { .. } => true,
            KubeError::RolloutTimeout { .. } => true,
            _ => false,
        }
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            KubeError::Api { status, .. } => match status.code {
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                400 | 422 => "invalid",
                c if c >= 500 => "server_error",
                _ => "api_error",
            },
            KubeError::Transport { .. } => "transport",
            KubeError::Conflict { .. } => "field_conflict",
            KubeError::NodeUnreachable { .. } => "node_unreachable",
            KubeError::Invalid(_) => "invalid",
            KubeError::NotFound(_) => "not_found",
            KubeError::RolloutStalled { .. } => "rollout_stalled",
            KubeError::RolloutTimeout { .. } => "rollout_timeout",
            KubeError::Superseded { .. } => "superseded",
            KubeError::Exec { .. } => "exec",
        }
    }
}

/// Wraps a kube error from `action` on `object`.
pub(crate) fn api(action: &'static str, object: impl Into<String>, err: kube::Error) -> KubeError {
    let object = object.into();
    match err {
        kube::Error::Api(status) => KubeError::Api {
            action,
            object,
            status,
        },
        source => KubeError::Transport {
            action,
            object,
            source,
        },
    }
}

/// Whether `err` is an API 404.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

impl From<KubeError> for TargetError {
    fn from(e: KubeError) -> Self {
        match e {
            KubeError::Invalid(msg) => TargetError::Invalid(msg),
            KubeError::NotFound(msg) => TargetError::NotFound(msg),
            KubeError::Api { ref status, .. } if status.code == 404 => TargetError::NotFound(e.to_string()),
            KubeError::Api { ref status, .. } if status.code == 400 || status.code == 422 => {
                TargetError::Invalid(e.to_string())
            }
            other => TargetError::Failed(other.to_string()),
        }
    }
}
