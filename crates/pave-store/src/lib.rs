//! pave's persistence: one [`Store`] trait with a SQLite and a PostgreSQL
//! implementation sharing one schema and one body of SQL.
//!
//! Writes go through [`Store::write`] as requests of [`WriteOp`]s. A request is
//! atomic; several requests share one transaction (group commit, see
//! [`batch::Batcher`]) so that a durable action costs few commits.

pub mod batch;
mod error;
mod model;
mod script;
mod sql;

pub use batch::Batcher;
pub use error::StoreError;
pub use model::*;
pub use sql::{PgStore, SqliteStore};

use std::sync::Arc;

use async_trait::async_trait;
use pave_core::{Action, AuditEvent};

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything pave keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Applies requests in one transaction, each atomically. A request that can
    /// fail on its own (a precondition, a unique key) runs in a savepoint and is
    /// rolled back alone; any other failure is a database error and fails the
    /// whole transaction (`Err`), which the batcher then retries request by request.
    async fn write(&self, requests: Vec<Vec<WriteOp>>) -> Result<Vec<Result<Vec<OpResult>>>>;

    /// One action with its steps.
    async fn get_action(&self, id: &str) -> Result<Option<Action>>;

    /// Actions newest first.
    async fn list_actions(&self, filter: &ActionFilter) -> Result<Vec<Action>>;

    /// Takes up to `limit` runnable actions for `node`: queued ones whose object
    /// is free, and active ones whose lease ran out (their node died). With
    /// `resume_own`, also the active actions `node` itself held before a restart.
    async fn claim(&self, node: &str, limit: i64, lease_ms: i64, resume_own: bool) -> Result<Vec<Action>>;

    /// Extends the leases `node` holds on `ids` (the actions it is running
    /// now: one whose runner stopped is left to expire and be claimed again);
    /// returns the ids among them that a user asked to cancel.
    async fn renew_leases(&self, node: &str, ids: &[String], lease_ms: i64) -> Result<Vec<String>>;

    /// Log lines of an action after `after_seq`, oldest first.
    async fn logs(&self, action_id: &str, after_seq: i64, limit: i64) -> Result<Vec<LogLine>>;

    /// Highest log sequence number of an action (0 when none).
    async fn last_log_seq(&self, action_id: &str) -> Result<i64>;

    /// Audit events after `after_seq`, oldest first.
    async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditEvent>>;

    /// The chain's head: the last event's sequence number and hash, as recorded
    /// by every append. Lets verification notice events removed from the end.
    async fn audit_head(&self) -> Result<(i64, String)>;

    /// The token with this hash, revoked and expired ones included.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;

    /// Every environment, by name.
    async fn list_environments(&self) -> Result<Vec<Environment>>;

    /// Actions of an environment that have not ended (they block its deletion).
    async fn count_unfinished_actions(&self, env: &str) -> Result<i64>;

    /// A sealed secret (JSON of `pave_core::vault::Sealed`).
    async fn get_secret(&self, env: &str, name: &str) -> Result<Option<String>>;

    /// One resource.
    async fn get_resource(&self, env: &str, name: &str) -> Result<Option<pave_core::resource::Resource>>;

    /// Resources of an environment (all environments with `None`), by name.
    async fn list_resources(&self, env: Option<&str>) -> Result<Vec<pave_core::resource::Resource>>;

    /// One workload record.
    async fn get_workload(&self, env: &str, name: &str) -> Result<Option<WorkloadRecord>>;

    /// Workloads of an environment, by name.
    async fn list_workloads(&self, env: &str) -> Result<Vec<WorkloadRecord>>;

    /// Every environment's workloads, by environment and name (one read for a sweep).
    async fn list_all_workloads(&self) -> Result<Vec<WorkloadRecord>>;

    /// Blueprints registered through the API, by name and version.
    async fn list_blueprints(&self) -> Result<Vec<BlueprintRecord>>;

    /// Users, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;

    /// Teams with their members, by name.
    async fn list_teams(&self) -> Result<Vec<TeamRecord>>;

    /// Every role binding.
    async fn list_bindings(&self) -> Result<Vec<pave_core::rbac::Binding>>;

    /// Tokens (never their secrets), newest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Secrets of an environment whose names start with `prefix`, by name (never values).
    async fn list_secrets(&self, env: &str, prefix: &str) -> Result<Vec<SecretMeta>>;

    /// Policy modules applied through the API: (name, source), by name.
    async fn list_policies(&self) -> Result<Vec<(String, String)>>;

    /// Incidents, newest first (all, or only those not ended).
    async fn list_incidents(&self, active_only: bool) -> Result<Vec<IncidentRecord>>;

    /// One incident.
    async fn get_incident(&self, id: &str) -> Result<Option<IncidentRecord>>;

    /// The approval record of an action.
    async fn get_approval(&self, action_id: &str) -> Result<Option<ApprovalRecord>>;

    /// Approvals, newest first: the pending ones only, or all.
    async fn list_approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>>;

    /// One revision of a workload.
    async fn get_revision(&self, env: &str, name: &str, revision: i64) -> Result<Option<RevisionRecord>>;

    /// Revisions of a workload, oldest first.
    async fn list_revisions(&self, env: &str, name: &str) -> Result<Vec<RevisionRecord>>;

    /// An environment by name.
    async fn get_environment(&self, name: &str) -> Result<Option<Environment>>;

    /// Every target, by name.
    async fn list_targets(&self) -> Result<Vec<TargetRecord>>;

    /// A target by name.
    async fn get_target(&self, name: &str) -> Result<Option<TargetRecord>>;

    /// The agent credential whose secret has this hash, revoked ones included.
    async fn find_agent_credential(&self, secret_hash: &str) -> Result<Option<AgentCredentialRecord>>;

    /// The agent credentials of a target, revoked ones included, newest first.
    async fn list_agent_credentials(&self, target: &str) -> Result<Vec<AgentCredentialRecord>>;

    /// Measures `n` single-row commits with this store's connection settings,
    /// each its own transaction; the baseline the engine benchmark compares to.
    async fn bench_single_row_commits(&self, n: u32) -> Result<std::time::Duration>;
}

/// A shared store.
pub type DynStore = Arc<dyn Store>;

/// Opens the store that `url` names: `sqlite://PATH` or `postgres://…`.
pub async fn open(url: &str) -> Result<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL (expected sqlite://PATH or postgres://…): {}",
            redact_url(url)
        )))
    }
}

/// A URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_database_password_never_reaches_a_message() {
        assert_eq!(
            super::redact_url("postgres://pave:s3cret@db:5432/pave"),
            "postgres://pave:***@db:5432/pave"
        );
        assert_eq!(super::redact_url("sqlite:///tmp/x"), "sqlite:///tmp/x");
    }
}
