//! The remediation loop: detect → decide → act → verify → (keep | roll back).
//!
//! A sweep reads every workload's live status and every resource's health.
//! A detector that fires opens one incident per object and kind, with the
//! evidence (replica states, exit codes, restart counts, the log tail with
//! secrets redacted), a root-cause analysis that cites it and pave's own
//! record of the last change, and typed proposals. An environment's mode (its
//! `remediation` label: `observe`, `approve`, `auto`) says whether pave only
//! proposes, waits for a person, or applies the first proposal itself.
//! Applying is an ordinary action (RBAC, policy, approvals, audit). Then the
//! same detector must stay quiet for the verification window: resolved; if
//! it fires again the fix's own rollback is applied and the incident is
//! escalated. A proposal rolled back once is never applied again by pave.

use pave_core::rbac::{Binding, Principal, Role, Subject};
use pave_core::time::now_ms;
use pave_core::{ActionState, AuditDraft};
use pave_store::{IncidentRecord, WriteOp};
use serde_json::{json, Value};

use crate::engine::{Engine, Submission};
use crate::error::EngineError;

mod decide;
mod detect;

/// At most this many automatic remediations per environment per hour.
const AUTO_BUDGET_PER_HOUR: usize = 5;

/// Restarts of one replica that count as a crash loop even between back-offs.
const CRASH_RESTARTS: u64 = 3;

/// Who pave acts as when it remediates by itself.
pub const REMEDIATION_ACTOR: &str = "pave-remediation";

fn remediator() -> Principal {
    Principal {
        user: REMEDIATION_ACTOR.into(),
        teams: vec![],
        bindings: vec![Binding {
            subject: Subject::User(REMEDIATION_ACTOR.into()),
            role: Role::Operator,
            env: None,
        }],
    }
}

pub(super) fn timeline(doc: &mut Value, phase: &str, message: String) {
    let entry = json!({ "at": now_ms(), "phase": phase, "message": message });
    match doc["timeline"].as_array_mut() {
        Some(t) => t.push(entry),
        None => doc["timeline"] = json!([entry]),
    }
}

/// Keeping or dismissing an incident is an operator's call in its environment.
fn operator(who: &Principal, inc: &IncidentRecord, what: &str) -> Result<(), EngineError> {
    if who.has(Role::Operator, &inc.env) {
        Ok(())
    } else {
        Err(pave_core::rbac::forbidden(who, Role::Operator, Some(&inc.env), what).into())
    }
}

impl Engine {
    async fn incident(&self, id: &str) -> Result<IncidentRecord, EngineError> {
        self.store()
            .get_incident(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("incident {id}")))
    }

    /// Runs the loop until the engine stops.
    pub(crate) async fn remediation_loop(self) {
        loop {
            tokio::time::sleep(self.inner.config.remediation_every).await;
            if self.inner.stopping.is_cancelled() {
                return;
            }
            if let Err(e) = self.remediation_sweep().await {
                tracing::warn!(error = %e, "remediation sweep failed");
            }
        }
    }

    async fn remediation_sweep(&self) -> Result<(), EngineError> {
        let incidents = self.store().list_incidents(false).await?;
        let workloads = self.store().list_all_workloads().await?;
        let resources = self.store().list_resources(None).await?;
        for env in self.store().list_environments().await? {
            let findings = self.findings(&env.name, &workloads, &resources).await?;
            let mode = env
                .labels
                .get("remediation")
                .cloned()
                .unwrap_or_else(|| "observe".into());
            // Incidents in progress: remediating → verifying → resolved | escalated.
            for inc in incidents.iter().filter(|i| i.env == env.name) {
                if matches!(inc.state.as_str(), "remediating" | "verifying") {
                    let firing = if inc.doc["applied"]["type"] == "scale" {
                        // A scale-up adds capacity; it holds when as many replicas
                        // are ready as were wanted before it.
                        let wanted = inc.doc["applied"]["params"]["from"].as_u64().unwrap_or(1);
                        self.ready_replicas(&inc.object).await < wanted
                    } else {
                        // Held means: the detector quiet, and for a workload no
                        // replica of what serves now restarted since the fix.
                        findings
                            .iter()
                            .any(|f| f.object == inc.object && f.kind == inc.kind)
                            || (inc.state == "verifying" && self.restarted(&inc.object).await)
                    };
                    self.follow_up(inc.clone(), firing).await?;
                }
                self.revert_if_due(inc).await?;
            }
            for f in findings {
                // One incident per object and kind; an escalated one stands for an
                // hour (a person has it), so that pave does not loop on it.
                let now = now_ms();
                let active = incidents.iter().any(|i| {
                    i.object == f.object
                        && i.kind == f.kind
                        && (matches!(i.state.as_str(), "open" | "remediating" | "verifying")
                            || (i.state == "escalated" && i.updated_at > now - 3_600_000))
                });
                // A workload whose rollout is still running is not judged yet.
                if active || self.busy(&env.name, &f.object).await? {
                    continue;
                }
                let (rca, proposals) = self.decide(&env.name, &f).await?;
                let mut doc = json!({
                    "summary": f.summary, "mode": mode, "evidence": f.evidence, "rca": rca,
                    "proposals": proposals, "applied": null,
                });
                timeline(&mut doc, "detect", f.summary.clone());
                let cause = doc["rca"]["causes"][0]["cause"]
                    .as_str()
                    .unwrap_or("no cause found")
                    .to_string();
                timeline(&mut doc, "decide", cause);
                let mut inc = IncidentRecord {
                    id: pave_core::ids::new_id(),
                    env: env.name.clone(),
                    object: f.object.clone(),
                    kind: f.kind.to_string(),
                    state: "open".into(),
                    opened_at: now,
                    updated_at: now,
                    doc,
                };
                let spent = incidents
                    .iter()
                    .filter(|i| {
                        i.env == env.name
                            && i.doc["auto_applied_at"]
                                .as_i64()
                                .is_some_and(|t| t > now - 3_600_000)
                    })
                    .count();
                if mode == "auto" && spent < AUTO_BUDGET_PER_HOUR {
                    inc.doc["auto_applied_at"] = json!(now);
                    self.store_incident(&inc, "incident.open").await?;
                    if let Err(e) = self.apply_proposal(&inc.id, 0, None, &remediator()).await {
                        tracing::warn!(incident = %inc.id, error = %e, "could not remediate");
                    }
                } else {
                    if mode == "auto" {
                        timeline(
                            &mut inc.doc,
                            "decide",
                            "the hourly budget of automatic remediations is spent".into(),
                        );
                    }
                    self.store_incident(&inc, "incident.open").await?;
                }
            }
        }
        Ok(())
    }

    /// Ends a temporary fix whose time is up, unless a person kept it. A
    /// fix still being verified is judged first (its revert would be taken
    /// for a regression): it reverts once resolved.
    async fn revert_if_due(&self, inc: &IncidentRecord) -> Result<(), EngineError> {
        if inc.state != "resolved" {
            return Ok(());
        }
        let applied = &inc.doc["applied"];
        let due = applied["revert_at"].as_i64().is_some_and(|t| now_ms() >= t);
        if !due || applied["kept"] == true || applied["reverted"] == true || applied["rolled_back"] == true {
            return Ok(());
        }
        let Some(action_id) = applied["action"].as_str() else {
            return Ok(());
        };
        // The fix must have ended before it can be undone; the next sweep retries.
        match self.store().get_action(action_id).await? {
            Some(a) if a.state.is_terminal() => {}
            _ => return Ok(()),
        }
        let mut inc = inc.clone();
        let how = match self.rollback(action_id, &remediator()).await {
            Ok(_) => format!("its time is up: action {action_id} is being rolled back"),
            Err(e) => format!("its time is up, but undoing action {action_id} failed: {e}"),
        };
        inc.doc["applied"]["reverted"] = json!(true);
        timeline(&mut inc.doc, "revert", how);
        inc.updated_at = now_ms();
        self.store_incident(&inc, "incident.revert").await
    }

    /// Keeps a temporary fix: it no longer reverts by itself.
    pub async fn keep_incident(&self, id: &str, who: &Principal) -> Result<IncidentRecord, EngineError> {
        let mut inc = self.incident(id).await?;
        operator(who, &inc, "keep a fix")?;
        let applied = &inc.doc["applied"];
        if applied["revert_at"].is_null() {
            return Err(EngineError::Conflict(format!(
                "incident {id} has no temporary fix to keep"
            )));
        }
        if applied["reverted"] == true || applied["rolled_back"] == true {
            return Err(EngineError::Conflict(format!(
                "the fix of incident {id} was already undone"
            )));
        }
        if applied["kept"] != true {
            inc.doc["applied"]["kept"] = json!(true);
            timeline(
                &mut inc.doc,
                "decide",
                format!("kept by {}: the fix stays after its time", who.user),
            );
            inc.updated_at = now_ms();
            self.store_incident(&inc, "incident.keep").await?;
        }
        Ok(inc)
    }

    /// The replicas (live status) of the current revision of the workload
    /// `object` (`workload/ENV/NAME`); none when it cannot be read.
    async fn current_replicas(&self, object: &str) -> Vec<Value> {
        let mut parts = object.splitn(3, '/');
        let (Some("workload"), Some(env), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return vec![];
        };
        let (Ok(Some(w)), Ok(status)) = (
            self.store().get_workload(env, name).await,
            self.workload_status(env, name).await,
        ) else {
            return vec![];
        };
        status["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| w.current_revision.is_some_and(|c| r["revision"] == c))
            .cloned()
            .collect()
    }

    /// Ready replicas of the workload's current revision.
    async fn ready_replicas(&self, object: &str) -> u64 {
        let replicas = self.current_replicas(object).await;
        replicas.iter().filter(|r| r["ready"] == true).count() as u64
    }

    /// Whether a replica of the workload's current revision has restarted.
    async fn restarted(&self, object: &str) -> bool {
        let replicas = self.current_replicas(object).await;
        replicas
            .iter()
            .any(|r| r["restart_count"].as_u64().is_some_and(|n| n > 0))
    }

    async fn busy(&self, env: &str, object: &str) -> Result<bool, EngineError> {
        for state in [
            ActionState::Queued,
            ActionState::Running,
            ActionState::RollingBack,
        ] {
            let running = self
                .store()
                .list_actions(&pave_store::ActionFilter {
                    state: Some(state),
                    env: Some(env.to_string()),
                    limit: 100,
                    ..Default::default()
                })
                .await?;
            if running.iter().any(|a| a.object.split(',').any(|o| o == object)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn store_incident(&self, inc: &IncidentRecord, verb: &str) -> Result<(), EngineError> {
        let summary = format!(
            "incident {} ({}) on {}: {}",
            inc.id, inc.kind, inc.object, inc.state
        );
        self.inner
            .writer
            .write(vec![
                WriteOp::PutIncident(inc.clone()),
                WriteOp::Audit(AuditDraft {
                    actor: "system".into(),
                    verb: verb.into(),
                    object: format!("incident/{}", inc.id),
                    summary,
                    details: json!({ "state": inc.state, "object": inc.object }),
                }),
            ])
            .await?;
        Ok(())
    }

    /// One step of an incident being fixed: the action's outcome, then the
    /// verification window.
    async fn follow_up(&self, mut inc: IncidentRecord, firing: bool) -> Result<(), EngineError> {
        let Some(action_id) = inc.doc["applied"]["action"].as_str().map(str::to_string) else {
            return Ok(());
        };
        let Some(action) = self.store().get_action(&action_id).await? else {
            return Ok(());
        };
        let now = now_ms();
        match inc.state.as_str() {
            "remediating" => match action.state {
                ActionState::Succeeded => {
                    let window = self.inner.config.verify_window.as_millis() as i64;
                    inc.state = "verifying".into();
                    inc.doc["verify_until"] = json!(now + window);
                    timeline(
                        &mut inc.doc,
                        "verify",
                        format!("action {action_id} succeeded; watching for {} s", window / 1000),
                    );
                }
                s if s.is_terminal() => {
                    inc.state = "escalated".into();
                    timeline(
                        &mut inc.doc,
                        "act",
                        format!("action {action_id} ended {s}; a person must look"),
                    );
                }
                _ => return Ok(()),
            },
            _ => {
                if firing {
                    // The fix did not hold: undo it, and never apply it again here.
                    let undone = self.rollback(&action_id, &remediator()).await;
                    inc.state = "escalated".into();
                    inc.doc["applied"]["rolled_back"] = json!(true);
                    let how = match undone {
                        Ok(_) => format!("the fix did not hold; action {action_id} is being rolled back"),
                        Err(e) => {
                            format!("the fix did not hold; rolling action {action_id} back failed: {e}")
                        }
                    };
                    timeline(&mut inc.doc, "verify", how);
                } else if inc.doc["verify_until"].as_i64().is_some_and(|t| now >= t) {
                    inc.state = "resolved".into();
                    timeline(
                        &mut inc.doc,
                        "verify",
                        "quiet for the whole window: resolved".into(),
                    );
                } else {
                    return Ok(());
                }
            }
        }
        inc.updated_at = now;
        self.store_incident(&inc, "incident.state").await
    }

    /// Applies proposal `index` of an incident as an ordinary action of `who`.
    /// A temporary proposal (`ttl_secs`) reverts by itself after `ttl`
    /// (default: its own) unless kept; `ttl` makes any proposal temporary.
    pub async fn apply_proposal(
        &self,
        id: &str,
        index: usize,
        ttl: Option<std::time::Duration>,
        who: &Principal,
    ) -> Result<IncidentRecord, EngineError> {
        let mut inc = self.incident(id).await?;
        if inc.state != "open" {
            return Err(EngineError::Conflict(format!(
                "incident {id} is {}, not open",
                inc.state
            )));
        }
        let p = inc.doc["proposals"]
            .get(index)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("proposal {index} of incident {id}")))?;
        let kind = p["action"]["kind"].as_str().unwrap_or_default().to_string();
        let (action, _) = self
            .submit(Submission {
                kind,
                env: inc.env.clone(),
                input: p["action"]["input"].clone(),
                principal: who.clone(),
                idempotency_key: Some(format!("incident-{id}-{index}")),
            })
            .await?;
        inc.state = "remediating".into();
        inc.doc["applied"] = json!({
            "proposal": index, "type": p["type"], "params": p["params"], "action": action.id, "by": who.user,
        });
        let ttl_ms = ttl
            .map(|t| t.as_millis() as i64)
            .or_else(|| p["ttl_secs"].as_i64().map(|s| s * 1000));
        if let Some(ms) = ttl_ms {
            inc.doc["applied"]["revert_at"] = json!(now_ms() + ms);
        }
        let temporary = match ttl_ms {
            Some(ms) => format!("; reverts in {} s unless kept", ms / 1000),
            None => String::new(),
        };
        timeline(
            &mut inc.doc,
            "act",
            format!(
                "{} applied by {} as action {} ({}){temporary}",
                p["type"].as_str().unwrap_or("?"),
                who.user,
                action.id,
                action.state
            ),
        );
        inc.updated_at = now_ms();
        self.store_incident(&inc, "incident.apply").await?;
        Ok(inc)
    }

    /// Closes an open incident without acting.
    pub async fn dismiss_incident(&self, id: &str, who: &Principal) -> Result<IncidentRecord, EngineError> {
        let mut inc = self.incident(id).await?;
        operator(who, &inc, "dismiss an incident")?;
        if !matches!(inc.state.as_str(), "open" | "escalated") {
            return Err(EngineError::Conflict(format!("incident {id} is {}", inc.state)));
        }
        inc.state = "dismissed".into();
        inc.updated_at = now_ms();
        timeline(&mut inc.doc, "decide", format!("dismissed by {}", who.user));
        self.store_incident(&inc, "incident.dismiss").await?;
        Ok(inc)
    }
}
