//! Request and response bodies of the API (the wire shapes), kept apart from
//! the domain types they carry.

use pave_core::{Action, AuditEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Body of `POST /api/v1/actions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAction {
    /// Action kind: `job` (or `noop`).
    pub kind: String,
    /// Environment; `local` when absent.
    #[serde(default)]
    pub env: Option<String>,
    /// Input of the kind; for `job` a [`pave_core::JobSpec`].
    #[serde(default)]
    pub input: Value,
}

/// Query of `GET /api/v1/actions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListActions {
    /// Only actions in this state.
    pub state: Option<String>,
    /// Only actions of this kind.
    pub kind: Option<String>,
    /// Only actions in this environment.
    pub env: Option<String>,
    /// Continue after this cursor (`next_cursor` of the previous page).
    pub cursor: Option<String>,
    /// Page size, 1–500 (default 50).
    pub limit: Option<i64>,
}

/// A page of actions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionPage {
    /// The actions.
    pub items: Vec<Action>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Query of `GET /api/v1/actions/{id}/logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only lines after this sequence number.
    pub after: Option<i64>,
    /// At most this many lines, 1–10000 (default 1000).
    pub limit: Option<i64>,
    /// Only the last this many lines (0 gives just `last_seq`); excludes `after`.
    pub tail: Option<i64>,
}

/// Query of `GET /api/v1/actions/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Send only log lines after this sequence number (e.g. the last one seen).
    pub after: Option<i64>,
}

/// One log line.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLineDto {
    /// Position in the action's log.
    pub seq: i64,
    /// Step index.
    pub step: i64,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// The text.
    pub line: String,
}

impl From<pave_store::LogLine> for LogLineDto {
    fn from(l: pave_store::LogLine) -> Self {
        LogLineDto {
            seq: l.seq,
            step: l.step,
            stream: l.stream,
            time: l.time,
            line: l.line,
        }
    }
}

/// A page of log lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    /// The lines, oldest first.
    pub items: Vec<LogLineDto>,
    /// Sequence number of the last line (pass as `after` to continue).
    pub last_seq: i64,
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events after this sequence number.
    pub after: Option<i64>,
    /// At most this many, 1–1000 (default 100).
    pub limit: Option<i64>,
}

/// A page of audit events.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The events, oldest first.
    pub items: Vec<AuditEvent>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// Result of verifying the audit chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerification {
    /// Whether every event verified.
    pub ok: bool,
    /// Events checked.
    pub checked: i64,
    /// The first broken event, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<i64>,
    /// Why it is broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
