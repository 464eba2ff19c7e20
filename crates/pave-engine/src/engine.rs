//! The engine's public face: submit, retry, cancel, rollback; and the worker
//! loop that claims queued actions and hands them to the runner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pave_core::action::{ActionError, ActionState, StepState};
use pave_core::time::now_ms;
use pave_core::{ids, plan, rbac, Action, AuditDraft};
use pave_store::{ActionUpdate, Batcher, DynStore, OpResult, StepUpdate, StoreError, WriteOp};
use serde_json::json;
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::agents::AgentHub;
use crate::error::EngineError;
use crate::policy::{input_document, Decision, Policy};
use crate::runner;

/// Tunables.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Stable id of this control plane (kept in its data directory).
    pub node_id: String,
    /// Actions run at once.
    pub workers: usize,
    /// How long a claim lasts without renewal; another node takes over after.
    pub lease: Duration,
    /// How often the queue is polled when nothing wakes the worker loop.
    pub poll: Duration,
    /// The vault's master key; without it, nothing that needs a credential runs.
    pub master_key: Option<pave_core::vault::MasterKey>,
    /// Where the master key is kept, so that it can be rotated.
    pub master_key_path: Option<std::path::PathBuf>,
    /// How often ready resources are checked for health (drift).
    pub health_every: Duration,
    /// How long an action may wait for approval.
    pub approval_ttl: Duration,
    /// How often the remediation loop looks at workloads and resources.
    pub remediation_every: Duration,
    /// A step whose remote agent stays away this long is `interrupted`.
    pub agent_lost_after: Duration,
    /// How long a fix must hold (its detector quiet) to count as resolved.
    pub verify_window: Duration,
    /// Policy modules from the built-in pack and files; the API adds others
    /// (kept in the store) on top.
    pub policy_files: Vec<pave_policy::Module>,
    /// Blueprints built in and read from files; the API adds to them in the store.
    pub blueprints: Vec<pave_core::blueprint::BlueprintEntry>,
    /// Where the in-process agents of Kubernetes targets keep their files
    /// (none: such targets cannot be added).
    pub clusters_dir: Option<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_id: ids::new_id(),
            workers: 64,
            lease: Duration::from_secs(15),
            poll: Duration::from_millis(250),
            master_key: None,
            master_key_path: None,
            health_every: Duration::from_secs(10),
            blueprints: Vec::new(),
            approval_ttl: Duration::from_secs(24 * 3600),
            remediation_every: Duration::from_millis(500),
            agent_lost_after: Duration::from_secs(60),
            verify_window: Duration::from_secs(10),
            policy_files: Vec::new(),
            clusters_dir: None,
        }
    }
}

/// A request to run an action.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Action kind.
    pub kind: String,
    /// Environment name.
    pub env: String,
    /// Input for the kind.
    pub input: serde_json::Value,
    /// Who asks, with their roles.
    pub principal: pave_core::rbac::Principal,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
}

pub(crate) struct Inner {
    pub store: DynStore,
    pub writer: Batcher,
    pub config: EngineConfig,
    /// Target → its agent: the embedded ones given at start, remote ones
    /// added when first needed (a step to run, an agent dialling in).
    pub agents: std::sync::RwLock<HashMap<String, AgentHub>>,
    pub policy: std::sync::RwLock<Arc<dyn Policy>>,
    /// Cancellation tokens of actions this node runs.
    pub running: Mutex<HashMap<String, CancellationToken>>,
    /// Wakes the worker loop (new work, a lock released).
    pub wake: Notify,
    /// Ids of actions that changed, for live streams.
    pub changes: broadcast::Sender<String>,
    /// Stops claiming new work.
    pub stopping: CancellationToken,
    /// Environment → target, see [`Engine::target_of`].
    pub targets: Mutex<HashMap<String, String>>,
    /// The vault's master key (replaced by a rotation).
    pub master_key: std::sync::RwLock<Option<pave_core::vault::MasterKey>>,
    /// One master key rotation at a time.
    pub rotation: tokio::sync::Mutex<()>,
    /// Workload object → when the remediation sweep first saw a replica of it
    /// running unready (cleared once all are ready).
    pub not_ready_since: Mutex<HashMap<String, i64>>,
    /// Cluster target → why its in-process agent did not start.
    pub cluster_errors: Mutex<HashMap<String, String>>,
    /// `workload/ENV/NAME` → its drift, as the last sweep found it.
    pub drift: Mutex<HashMap<String, serde_json::Value>>,
}

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// Refuses to steer an action the caller may not (see [`rbac::Principal::may_steer`]).
fn check_steer(who: &rbac::Principal, action: &Action, verb: &str) -> Result<(), EngineError> {
    if who.may_steer(&action.actor, &action.kind, &action.env) {
        return Ok(());
    }
    let what = format!("{verb} action {} of {}", action.id, action.actor);
    Err(rbac::forbidden(who, rbac::Role::Operator, Some(&action.env), &what).into())
}

fn audit(actor: &str, verb: &str, id: &str, summary: String, details: serde_json::Value) -> WriteOp {
    WriteOp::Audit(AuditDraft {
        actor: actor.to_string(),
        verb: verb.to_string(),
        object: format!("action/{id}"),
        summary,
        details,
    })
}

impl Engine {
    /// Builds an engine over `store` with one agent per target name.
    pub fn new(
        store: DynStore,
        agents: HashMap<String, AgentHub>,
        policy: Box<dyn Policy>,
        config: EngineConfig,
    ) -> Self {
        let writer = Batcher::spawn(store.clone());
        let (changes, _) = broadcast::channel(4096);
        Engine {
            inner: Arc::new(Inner {
                store,
                writer,
                agents: std::sync::RwLock::new(agents),
                policy: std::sync::RwLock::new(Arc::from(policy)),
                running: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                changes,
                stopping: CancellationToken::new(),
                targets: Mutex::new(HashMap::new()),
                master_key: std::sync::RwLock::new(config.master_key.clone()),
                rotation: tokio::sync::Mutex::new(()),
                not_ready_since: Mutex::default(),
                cluster_errors: Mutex::default(),
                drift: Mutex::default(),
                config,
            }),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<dyn Policy> {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts another policy in force, for every action planned from now on.
    pub fn set_policy(&self, policy: Arc<dyn Policy>) {
        *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }

    /// The group-commit writer, for other writers that want their writes batched.
    pub fn writer(&self) -> &Batcher {
        &self.inner.writer
    }

    /// Ids of actions as they change (state, step or log), for live streams.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inner.changes.subscribe()
    }

    /// Validates, plans, evaluates policy and stores a new action. Returns it and
    /// whether it was created now (false: the idempotency key matched an earlier one).
    pub async fn submit(&self, sub: Submission) -> Result<(Action, bool), EngineError> {
        if self.inner.stopping.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let env = self
            .inner
            .store
            .get_environment(&sub.env)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("environment `{}`", sub.env)))?;
        let needs = rbac::role_to_request(&sub.kind);
        if !sub.principal.has(needs, &env.name) {
            return Err(rbac::forbidden(
                &sub.principal,
                needs,
                Some(&env.name),
                &format!("request {}", sub.kind),
            )
            .into());
        }
        self.check_not_deleting(&env.name).await?;
        let id = ids::new_id();
        let planned = if plan::EXPANDED_KINDS.contains(&sub.kind.as_str()) {
            self.plan_expanded(&sub.kind, &env, sub.input).await?
        } else {
            plan::plan(&sub.kind, &id, &env.name, sub.input)?
        };
        let actor = sub.principal.user.clone();
        let decision =
            self.policy()
                .evaluate(&input_document(&sub.principal, &sub.kind, &env, &planned, None));
        let now = now_ms();
        let mut approval = None;
        let (state, error) = match &decision {
            Decision::Allow => (ActionState::Queued, None),
            Decision::Deny { reasons } => (
                ActionState::Denied,
                Some(ActionError {
                    step: None,
                    code: "denied".into(),
                    message: format!("denied by policy: {}", reasons.join("; ")),
                    next: vec![],
                }),
            ),
            Decision::RequireApproval {
                reasons,
                approver_role,
                approver_team,
            } => {
                approval = Some(pave_store::ApprovalRecord {
                    action_id: id.clone(),
                    env: env.name.clone(),
                    requested_by: actor.clone(),
                    reasons: reasons.clone(),
                    approver_role: approver_role.clone(),
                    approver_team: approver_team.clone(),
                    original_input: planned.input.clone(),
                    expires_at: now + self.inner.config.approval_ttl.as_millis() as i64,
                    decision: None,
                    decided_by: None,
                    decided_at: None,
                    comment: None,
                    amendment: None,
                    created_at: now,
                });
                (ActionState::AwaitingApproval, None)
            }
        };
        let action = Action {
            id: id.clone(),
            kind: sub.kind.clone(),
            env: env.name.clone(),
            object: planned.object,
            actor: actor.clone(),
            input: planned.input,
            state,
            attempt: 1,
            error,
            result: serde_json::Value::Null,
            idempotency_key: sub.idempotency_key.clone(),
            cancel_requested: false,
            created_at: now,
            updated_at: now,
            steps: planned.steps,
        };
        let ops = vec![
            WriteOp::InsertAction(Box::new(action.clone())),
            audit(
                &actor,
                "action.create",
                &id,
                format!("{} requested in {}", sub.kind, env.name),
                json!({ "kind": sub.kind, "env": env.name, "input": action.input }),
            ),
            audit(
                "system",
                "action.state",
                &id,
                format!("requested → {state}"),
                json!({ "policy": decision }),
            ),
        ];
        let mut ops = ops;
        if let Some(a) = approval {
            ops.push(WriteOp::InsertApproval(a));
        }
        let results = self.inner.writer.write(ops).await?;
        if let Some(OpResult::Existing(existing)) = results.first() {
            let earlier = self
                .inner
                .store
                .get_action(existing)
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("action {existing}")))?;
            if earlier.kind != action.kind || earlier.input != action.input || earlier.env != action.env {
                return Err(EngineError::IdempotencyMismatch(
                    sub.idempotency_key.unwrap_or_default(),
                ));
            }
            return Ok((earlier, false));
        }
        metrics::counter!("pave_actions_created_total", "kind" => action.kind.clone()).increment(1);
        self.changed(&id);
        self.wake();
        Ok((action, true))
    }

    pub(crate) async fn load_action(&self, id: &str) -> Result<Action, EngineError> {
        self.inner
            .store
            .get_action(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("action {id}")))
    }

    /// The action, if its environment still exists (an action of a deleted
    /// environment cannot run again).
    async fn load_runnable(&self, id: &str) -> Result<Action, EngineError> {
        let action = self.load_action(id).await?;
        if self.inner.store.get_environment(&action.env).await?.is_none() {
            self.inner
                .targets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&action.env);
            return Err(EngineError::Conflict(format!(
                "the environment `{}` of action {id} has been deleted",
                action.env
            )));
        }
        Ok(action)
    }

    /// Queues a failed or cancelled action again, from its first unfinished step.
    pub async fn retry(&self, id: &str, who: &rbac::Principal) -> Result<Action, EngineError> {
        let actor = who.user.as_str();
        let action = self.load_runnable(id).await?;
        check_steer(who, &action, "retry")?;
        action.state.check("retry", ActionState::RETRYABLE)?;
        // An action policy held runs only once approved: cancelling it while it
        // waited and retrying it must not get round that.
        if let Some(a) = self.inner.store.get_approval(id).await? {
            if a.decision.as_deref() != Some("approved") {
                return Err(EngineError::Conflict(format!(
                    "action {id} was never approved ({}); submit the request again",
                    a.decision.as_deref().unwrap_or("pending")
                )));
            }
        }
        if action.error.as_ref().is_some_and(|e| e.code == "rollback_failed") {
            // What failed was the rollback: retrying means rolling back again.
            return self.rollback(id, who).await;
        }
        let mut ops = vec![WriteOp::UpdateAction {
            id: id.to_string(),
            expect: ActionState::RETRYABLE.to_vec(),
            set: ActionUpdate {
                state: Some(ActionState::Queued),
                error: Some(None),
                attempt: Some(action.attempt + 1),
                cancel_requested: Some(false),
                ..Default::default()
            },
        }];
        for s in &action.steps {
            if matches!(
                s.state,
                StepState::Failed | StepState::Interrupted | StepState::Cancelled | StepState::Running
            ) {
                ops.push(WriteOp::UpdateStep {
                    action_id: id.to_string(),
                    idx: s.idx,
                    set: StepUpdate {
                        state: Some(StepState::Pending),
                        error: Some(None),
                        finished_at: Some(None),
                        ..Default::default()
                    },
                });
            }
        }
        ops.push(audit(
            actor,
            "action.retry",
            id,
            format!("{} → queued (attempt {})", action.state, action.attempt + 1),
            json!({ "from": action.state, "attempt": action.attempt + 1 }),
        ));
        self.inner.writer.write(ops).await?;
        self.changed(id);
        self.wake();
        self.load_action(id).await
    }

    /// Cancels an action: at once if it has not started, else by stopping its
    /// running step.
    pub async fn cancel(&self, id: &str, who: &rbac::Principal) -> Result<Action, EngineError> {
        let actor = who.user.as_str();
        let action = self.load_action(id).await?;
        check_steer(who, &action, "cancel")?;
        action.state.check("cancel", ActionState::CANCELLABLE)?;
        let not_started = vec![
            ActionState::Requested,
            ActionState::AwaitingApproval,
            ActionState::Queued,
        ];
        let mut immediate = vec![
            WriteOp::UpdateAction {
                id: id.to_string(),
                expect: not_started,
                set: ActionUpdate {
                    state: Some(ActionState::Cancelled),
                    error: Some(Some(ActionError {
                        step: None,
                        code: "cancelled".into(),
                        message: format!("cancelled by {actor} before it started"),
                        next: vec![format!("pave actions retry {id}")],
                    })),
                    release: true,
                    ..Default::default()
                },
            },
            audit(
                actor,
                "action.cancel",
                id,
                format!("{} → cancelled", action.state),
                json!({}),
            ),
        ];
        if action.state == ActionState::AwaitingApproval {
            // Its approval request ends with it.
            immediate.push(WriteOp::DecideApproval {
                action_id: id.to_string(),
                decision: "cancelled".into(),
                by: actor.to_string(),
                comment: None,
                amendment: None,
            });
        }
        match self.inner.writer.write(immediate).await {
            Ok(_) => {}
            Err(StoreError::Precondition { current, .. }) if current == "running" => {
                self.inner
                    .writer
                    .write(vec![
                        WriteOp::UpdateAction {
                            id: id.to_string(),
                            expect: vec![ActionState::Running],
                            set: ActionUpdate {
                                cancel_requested: Some(true),
                                ..Default::default()
                            },
                        },
                        audit(
                            actor,
                            "action.cancel",
                            id,
                            "cancel requested while running".into(),
                            json!({}),
                        ),
                    ])
                    .await?;
                if let Some(token) = self.token(id) {
                    token.cancel();
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.changed(id);
        self.wake();
        self.load_action(id).await
    }

    /// Undoes what an action did: its finished steps' compensations, last first.
    pub async fn rollback(&self, id: &str, who: &rbac::Principal) -> Result<Action, EngineError> {
        let actor = who.user.as_str();
        let action = self.load_runnable(id).await?;
        check_steer(who, &action, "roll back")?;
        action.state.check("roll back", ActionState::ROLLBACKABLE)?;
        if !action.compensable_steps().any(|s| !s.compensation.is_null()) {
            return Err(EngineError::Conflict(format!(
                "action {id} has nothing to roll back: none of its finished steps can be undone{}",
                if action.kind == "job" {
                    " (a job is undoable only when it was given an `undo` command)"
                } else {
                    ""
                }
            )));
        }
        self.inner
            .writer
            .write(vec![
                WriteOp::UpdateAction {
                    id: id.to_string(),
                    expect: ActionState::ROLLBACKABLE.to_vec(),
                    set: ActionUpdate {
                        state: Some(ActionState::RollingBack),
                        cancel_requested: Some(false),
                        ..Default::default()
                    },
                },
                audit(
                    actor,
                    "action.rollback",
                    id,
                    format!("{} → rolling_back", action.state),
                    json!({ "from": action.state }),
                ),
            ])
            .await?;
        self.changed(id);
        self.wake();
        self.load_action(id).await
    }

    pub(crate) fn token(&self, id: &str) -> Option<CancellationToken> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Tells live streams that an action changed.
    pub(crate) fn changed(&self, id: &str) {
        let _ = self.inner.changes.send(id.to_string());
    }

    /// Tells the worker loop there may be work to claim (a new or requeued
    /// action, a released object lock, a free slot).
    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The target an environment runs on. Cached: an environment's target never
    /// changes, and one with unfinished actions cannot be deleted.
    /// The agent of `target`: the embedded one, or a remote agent's hub
    /// (made on first use, whether or not the agent is connected yet) for a
    /// target served by `pave agent`.
    pub async fn hub(&self, target: &str) -> Result<AgentHub, String> {
        if let Some(h) = self
            .inner
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
        {
            return Ok(h.clone());
        }
        match self.inner.store.get_target(target).await {
            Ok(Some(t)) if t.agent => Ok(self.remote_hub(target)),
            Ok(Some(_)) => Err(match self.cluster_error(target) {
                Some(e) => format!("the agent of target `{target}` could not start: {e}"),
                None => format!("no agent serves target `{target}`"),
            }),
            Ok(None) => Err(format!("target `{target}` does not exist")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The hub of a remote agent's target, made if missing.
    pub fn remote_hub(&self, target: &str) -> AgentHub {
        self.inner
            .agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.to_string())
            .or_default()
            .clone()
    }

    /// Forgets a removed target's hub (dropping its connection).
    pub fn drop_hub(&self, target: &str) {
        let hub = self
            .inner
            .agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target);
        if let Some(h) = hub {
            h.disconnect();
        }
    }

    pub(crate) async fn target_of(&self, env: &str) -> Result<Option<String>, pave_store::StoreError> {
        if let Some(t) = self
            .inner
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(env)
        {
            return Ok(Some(t.clone()));
        }
        let Some(e) = self.inner.store.get_environment(env).await? else {
            return Ok(None);
        };
        self.inner
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(env.to_string(), e.target.clone());
        Ok(Some(e.target))
    }

    /// Runs the worker loop until [`Engine::shutdown`]: resumes this node's
    /// interrupted actions first, then claims queued work. Returns when every
    /// action it started has finished or `grace` ran out.
    pub async fn run(&self, grace: Duration) {
        let slots = Arc::new(Semaphore::new(self.inner.config.workers));
        let lease_ms = self.inner.config.lease.as_millis() as i64;
        let renewer = tokio::spawn(self.clone().renew_loop());
        let health = tokio::spawn(self.clone().health_loop());
        let remediation = tokio::spawn(self.clone().remediation_loop());
        let mut resume_own = true;
        let mut polled = true;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if self.inner.stopping.is_cancelled() {
                break;
            }
            let free = slots.available_permits();
            // Under load, claim in batches: a claim is a transaction, and one per
            // finished action would take the writer from the actions themselves.
            // When idle, or when the poll timer fired, any free slot is enough.
            let batch = (self.inner.config.workers / 4).max(1);
            let busy = self.inner.config.workers - free;
            if free > 0 && (free >= batch || busy == 0 || polled) {
                match self
                    .inner
                    .writer
                    .claim(&self.inner.config.node_id, free as i64, lease_ms, resume_own)
                    .await
                {
                    Ok(actions) => {
                        resume_own = false;
                        for action in actions {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                break;
                            };
                            let engine = self.clone();
                            tasks.spawn(async move {
                                runner::run(engine, action).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not claim actions"),
                }
            }
            while tasks.try_join_next().is_some() {}
            polled = tokio::select! {
                _ = self.inner.wake.notified() => false,
                _ = tokio::time::sleep(self.inner.config.poll) => true,
                _ = self.inner.stopping.cancelled() => false,
            };
        }
        let running = tasks.len();
        if running > 0 {
            tracing::info!(running, "waiting for running actions to finish");
        }
        let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "shutdown grace ran out; unfinished actions resume when a control plane starts again"
            );
        }
        renewer.abort();
        health.abort();
        remediation.abort();
    }

    async fn health_loop(self) {
        loop {
            tokio::time::sleep(self.inner.config.health_every).await;
            crate::resources::sweep(&self).await;
            crate::clusters::drift_sweep(&self).await;
            if let Err(e) = self.expire_due().await {
                tracing::warn!(error = %e, "could not expire approvals");
            }
        }
    }

    /// Stops claiming work; [`Engine::run`] then drains and returns.
    pub fn shutdown(&self) {
        self.inner.stopping.cancel();
    }

    async fn renew_loop(self) {
        let every = self.inner.config.lease / 3;
        let lease_ms = self.inner.config.lease.as_millis() as i64;
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<String> = self
                .inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned()
                .collect();
            match self
                .inner
                .store
                .renew_leases(&self.inner.config.node_id, &ids, lease_ms)
                .await
            {
                Ok(cancels) => {
                    for id in cancels {
                        if let Some(t) = self.token(&id) {
                            t.cancel();
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not renew leases"),
            }
        }
    }
}
