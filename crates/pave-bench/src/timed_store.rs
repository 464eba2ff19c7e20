//! A [`Store`] that forwards every call to another and keeps count of how often
//! and how long the engine wrote and claimed: it shows whether the store's
//! writer is the busy part of a run. The cost is two clock reads per call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pave_core::{Action, AuditEvent};
use pave_store::{
    ActionFilter, DynStore, Environment, LogLine, OpResult, Result, Store, TokenRecord, WriteOp,
};

/// Counters, shared with whoever reads them.
#[derive(Default)]
pub struct Counters {
    writes: AtomicU64,
    write_requests: AtomicU64,
    write_ns: AtomicU64,
    claims: AtomicU64,
    claimed: AtomicU64,
    claim_ns: AtomicU64,
    reads: AtomicU64,
    read_ns: AtomicU64,
    /// Writes and claims in flight, since when, and the time any was in flight.
    writer: Mutex<(u32, Option<Instant>, Duration)>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// `Store::write` calls (one transaction each).
    pub writes: u64,
    /// Requests in them.
    pub write_requests: u64,
    pub write_time: Duration,
    /// `Store::claim` calls (one transaction each).
    pub claims: u64,
    /// Actions they returned.
    pub claimed: u64,
    pub claim_time: Duration,
    /// Reads (every other call).
    pub reads: u64,
    pub read_time: Duration,
    /// Wall time during which at least one write or claim was in flight.
    pub writer_busy: Duration,
}

impl Totals {
    /// The change from `earlier` to `self`.
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            writes: self.writes - earlier.writes,
            write_requests: self.write_requests - earlier.write_requests,
            write_time: self.write_time.saturating_sub(earlier.write_time),
            claims: self.claims - earlier.claims,
            claimed: self.claimed - earlier.claimed,
            claim_time: self.claim_time.saturating_sub(earlier.claim_time),
            reads: self.reads - earlier.reads,
            read_time: self.read_time.saturating_sub(earlier.read_time),
            writer_busy: self.writer_busy.saturating_sub(earlier.writer_busy),
        }
    }
}

impl Counters {
    pub fn totals(&self) -> Totals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            writes: get(&self.writes),
            write_requests: get(&self.write_requests),
            write_time: Duration::from_nanos(get(&self.write_ns)),
            claims: get(&self.claims),
            claimed: get(&self.claimed),
            claim_time: Duration::from_nanos(get(&self.claim_ns)),
            reads: get(&self.reads),
            read_time: Duration::from_nanos(get(&self.read_ns)),
            writer_busy: {
                let w = self.lock_writer();
                w.2 + w.1.map(|since| since.elapsed()).unwrap_or_default()
            },
        }
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, (u32, Option<Instant>, Duration)> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer_enter(&self) {
        let mut w = self.lock_writer();
        if w.0 == 0 {
            w.1 = Some(Instant::now());
        }
        w.0 += 1;
    }

    fn writer_exit(&self) {
        let mut w = self.lock_writer();
        w.0 = w.0.saturating_sub(1);
        if w.0 == 0 {
            if let Some(since) = w.1.take() {
                w.2 += since.elapsed();
            }
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The forwarding store.
pub struct TimedStore {
    inner: DynStore,
    counters: Arc<Counters>,
}

impl TimedStore {
    /// Wraps `inner`; returns the wrapper and its counters.
    pub fn wrap(inner: DynStore) -> (DynStore, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let store = TimedStore {
            inner,
            counters: counters.clone(),
        };
        (Arc::new(store), counters)
    }

    async fn read<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let t = Instant::now();
        let r = f.await;
        add(&self.counters.reads, 1);
        add(&self.counters.read_ns, nanos(t));
        r
    }
}

#[async_trait]
impl Store for TimedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn write(&self, requests: Vec<Vec<WriteOp>>) -> Result<Vec<Result<Vec<OpResult>>>> {
        let n = requests.len() as u64;
        self.counters.writer_enter();
        let t = Instant::now();
        let r = self.inner.write(requests).await;
        self.counters.writer_exit();
        add(&self.counters.writes, 1);
        add(&self.counters.write_requests, n);
        add(&self.counters.write_ns, nanos(t));
        r
    }

    async fn get_action(&self, id: &str) -> Result<Option<Action>> {
        self.read(self.inner.get_action(id)).await
    }

    async fn list_actions(&self, filter: &ActionFilter) -> Result<Vec<Action>> {
        self.read(self.inner.list_actions(filter)).await
    }

    async fn claim(&self, node: &str, limit: i64, lease_ms: i64, resume_own: bool) -> Result<Vec<Action>> {
        self.counters.writer_enter();
        let t = Instant::now();
        let r = self.inner.claim(node, limit, lease_ms, resume_own).await;
        self.counters.writer_exit();
        add(&self.counters.claims, 1);
        add(&self.counters.claim_ns, nanos(t));
        if let Ok(actions) = &r {
            add(&self.counters.claimed, actions.len() as u64);
        }
        r
    }

    async fn renew_leases(&self, node: &str, ids: &[String], lease_ms: i64) -> Result<Vec<String>> {
        self.inner.renew_leases(node, ids, lease_ms).await
    }

    async fn logs(&self, action_id: &str, after_seq: i64, limit: i64) -> Result<Vec<LogLine>> {
        self.read(self.inner.logs(action_id, after_seq, limit)).await
    }

    async fn last_log_seq(&self, action_id: &str) -> Result<i64> {
        self.read(self.inner.last_log_seq(action_id)).await
    }

    async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditEvent>> {
        self.read(self.inner.audit_page(after_seq, limit)).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.read(self.inner.token_by_hash(hash)).await
    }

    async fn get_environment(&self, name: &str) -> Result<Option<Environment>> {
        self.read(self.inner.get_environment(name)).await
    }

    async fn get_secret(&self, env: &str, name: &str) -> Result<Option<String>> {
        self.read(self.inner.get_secret(env, name)).await
    }

    async fn get_resource(&self, env: &str, name: &str) -> Result<Option<pave_core::resource::Resource>> {
        self.read(self.inner.get_resource(env, name)).await
    }

    async fn list_resources(&self, env: Option<&str>) -> Result<Vec<pave_core::resource::Resource>> {
        self.read(self.inner.list_resources(env)).await
    }

    async fn get_workload(&self, env: &str, name: &str) -> Result<Option<pave_store::WorkloadRecord>> {
        self.read(self.inner.get_workload(env, name)).await
    }

    async fn list_workloads(&self, env: &str) -> Result<Vec<pave_store::WorkloadRecord>> {
        self.read(self.inner.list_workloads(env)).await
    }

    async fn list_all_workloads(&self) -> Result<Vec<pave_store::WorkloadRecord>> {
        self.read(self.inner.list_all_workloads()).await
    }

    async fn get_revision(
        &self,
        env: &str,
        name: &str,
        revision: i64,
    ) -> Result<Option<pave_store::RevisionRecord>> {
        self.read(self.inner.get_revision(env, name, revision)).await
    }

    async fn list_revisions(&self, env: &str, name: &str) -> Result<Vec<pave_store::RevisionRecord>> {
        self.read(self.inner.list_revisions(env, name)).await
    }

    async fn audit_head(&self) -> Result<(i64, String)> {
        self.read(self.inner.audit_head()).await
    }

    async fn list_environments(&self) -> Result<Vec<Environment>> {
        self.read(self.inner.list_environments()).await
    }

    async fn list_blueprints(&self) -> Result<Vec<pave_store::BlueprintRecord>> {
        self.read(self.inner.list_blueprints()).await
    }

    async fn list_users(&self) -> Result<Vec<pave_store::UserRecord>> {
        self.read(self.inner.list_users()).await
    }

    async fn list_teams(&self) -> Result<Vec<pave_store::TeamRecord>> {
        self.read(self.inner.list_teams()).await
    }

    async fn list_bindings(&self) -> Result<Vec<pave_core::rbac::Binding>> {
        self.read(self.inner.list_bindings()).await
    }

    async fn list_tokens(&self) -> Result<Vec<pave_store::TokenRecord>> {
        self.read(self.inner.list_tokens()).await
    }

    async fn list_incidents(&self, active_only: bool) -> Result<Vec<pave_store::IncidentRecord>> {
        self.read(self.inner.list_incidents(active_only)).await
    }

    async fn get_incident(&self, id: &str) -> Result<Option<pave_store::IncidentRecord>> {
        self.read(self.inner.get_incident(id)).await
    }

    async fn list_policies(&self) -> Result<Vec<(String, String)>> {
        self.read(self.inner.list_policies()).await
    }

    async fn list_secrets(&self, env: &str, prefix: &str) -> Result<Vec<pave_store::SecretMeta>> {
        self.read(self.inner.list_secrets(env, prefix)).await
    }

    async fn get_approval(&self, action_id: &str) -> Result<Option<pave_store::ApprovalRecord>> {
        self.read(self.inner.get_approval(action_id)).await
    }

    async fn list_approvals(&self, pending_only: bool) -> Result<Vec<pave_store::ApprovalRecord>> {
        self.read(self.inner.list_approvals(pending_only)).await
    }

    async fn count_unfinished_actions(&self, env: &str) -> Result<i64> {
        self.read(self.inner.count_unfinished_actions(env)).await
    }

    async fn list_targets(&self) -> Result<Vec<pave_store::TargetRecord>> {
        self.read(self.inner.list_targets()).await
    }

    async fn get_target(&self, name: &str) -> Result<Option<pave_store::TargetRecord>> {
        self.read(self.inner.get_target(name)).await
    }

    async fn find_agent_credential(
        &self,
        secret_hash: &str,
    ) -> Result<Option<pave_store::AgentCredentialRecord>> {
        self.read(self.inner.find_agent_credential(secret_hash)).await
    }

    async fn list_agent_credentials(&self, target: &str) -> Result<Vec<pave_store::AgentCredentialRecord>> {
        self.read(self.inner.list_agent_credentials(target)).await
    }

    async fn bench_single_row_commits(&self, n: u32) -> Result<Duration> {
        self.inner.bench_single_row_commits(n).await
    }
}
