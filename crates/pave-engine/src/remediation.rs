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

/// A detector's finding on one object.
struct Finding {
    object: String,
    kind: &'static str,
    name: String,
    evidence: Value,
    summary: String,
}

fn timeline(doc: &mut Value, phase: &str, message: String) {
    let entry = json!({ "at": now_ms(), "phase": phase, "message": message });
    match doc["timeline"].as_array_mut() {
        Some(t) => t.push(entry),
        None => doc["timeline"] = json!([entry]),
    }
}

fn reason_of(state: &Value) -> Option<&str> {
    state
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|v| v["reason"].as_str())
}

impl Engine {
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

    async fn findings(&self, env: &str) -> Result<Vec<Finding>, EngineError> {
        let mut out = Vec::new();
        for w in self.store().list_workloads(env).await? {
            let Some(current) = w.current_revision else {
                continue;
            };
            let Ok(status) = self.workload_status(env, &w.name).await else {
                continue;
            };
            let mine: Vec<&Value> = status["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["revision"] == current)
                .collect();
            // CrashLoopBackOff, or restarts piling up between two looks.
            let crashing = mine.iter().any(|r| {
                reason_of(&r["state"]) == Some("CrashLoopBackOff")
                    || r["restart_count"].as_u64().is_some_and(|n| n >= CRASH_RESTARTS)
            });
            let oom = mine.iter().any(|r| {
                reason_of(&r["state"]) == Some("OOMKilled")
                    || reason_of(&r["last_state"]) == Some("OOMKilled")
            });
            let kind = if oom {
                "oom_killed"
            } else if crashing {
                "crash_loop"
            } else {
                continue;
            };
            let secrets = self.secret_values(env).await;
            let tail = self
                .workload_logs(env, &w.name, None, 10)
                .await
                .unwrap_or_default()
                .iter()
                .map(|l| crate::secrets::redact(l, &secrets))
                .collect::<Vec<_>>();
            let replicas: Vec<Value> = mine
                .iter()
                .map(|r| {
                    json!({
                        "replica": r["index"], "state": r["state"], "last_state": r["last_state"],
                        "restart_count": r["restart_count"],
                    })
                })
                .collect();
            let restarts: u64 = mine.iter().filter_map(|r| r["restart_count"].as_u64()).sum();
            out.push(Finding {
                object: format!("workload/{env}/{}", w.name),
                kind,
                name: w.name.clone(),
                summary: format!(
                    "{} of revision {current}: {} ({restarts} restarts)",
                    w.name,
                    if oom { "OOMKilled" } else { "CrashLoopBackOff" }
                ),
                evidence: json!({ "revision": current, "replicas": replicas, "log_tail": tail }),
            });
        }
        for r in self.store().list_resources(Some(env)).await? {
            let unhealthy = r.lifecycle == pave_core::resource::ResourceLifecycle::Ready
                && r.health.as_deref().is_some_and(|h| h != "healthy");
            if unhealthy {
                out.push(Finding {
                    object: format!("resource/{env}/{}", r.name),
                    kind: "resource_unhealthy",
                    name: r.name.clone(),
                    summary: format!(
                        "{} {} is unhealthy: {}",
                        r.kind,
                        r.name,
                        r.health.clone().unwrap_or_default()
                    ),
                    evidence: json!({ "health": r.health, "checked_at": r.checked_at, "kind": r.kind }),
                });
            }
        }
        Ok(out)
    }

    /// What pave itself changed last on a workload, and the proposals.
    async fn decide(&self, env: &str, f: &Finding) -> Result<(Value, Vec<Value>), EngineError> {
        if f.kind == "resource_unhealthy" {
            let rca = json!({ "causes": [{
                "cause": format!("the server of resource {} stopped answering its health check", f.name),
                "confidence": 0.9, "evidence": ["health"],
            }]});
            let p = json!({
                "type": "repair_resource", "params": { "name": f.name },
                "action": { "kind": "resource.repair", "input": { "name": f.name } },
                "expected_effect": "the server is started again with its data", "risk": "low",
                "blast_radius": [f.object], "rollback": null,
            });
            return Ok((rca, vec![p]));
        }
        let revisions = self.store().list_revisions(env, &f.name).await?;
        let current = f.evidence["revision"].as_i64().unwrap_or_default();
        let cur = revisions.iter().find(|r| r.revision == current);
        let prev = revisions.iter().rev().find(|r| r.revision < current);
        let changed: Vec<String> = match (cur, prev) {
            (Some(c), Some(p)) => {
                let mut out = Vec::new();
                for (k, v) in c.spec.as_object().into_iter().flatten() {
                    if k == "env" {
                        let (a, b) = (&c.spec["env"], &p.spec["env"]);
                        for key in a
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, _)| k)
                            .chain(b.as_object().into_iter().flatten().map(|(k, _)| k))
                        {
                            if a[key] != b[key] && !out.contains(&format!("env.{key}")) {
                                out.push(format!("env.{key}"));
                            }
                        }
                    } else if p.spec[k] != *v && k != "replicas" {
                        out.push(k.clone());
                    }
                }
                out
            }
            _ => vec![],
        };
        let change = match cur {
            Some(c) => {
                let action = self.store().get_action(&c.created_by).await?;
                json!({
                    "revision": c.revision, "action": c.created_by, "changed_fields": changed,
                    "actor": action.as_ref().map(|a| a.actor.clone()),
                    "at": c.created_at,
                })
            }
            None => Value::Null,
        };
        let since = cur.map_or(0, |c| (now_ms() - c.created_at) / 1000);
        let who = change["actor"].as_str().unwrap_or("someone").to_string();
        let mut causes = Vec::new();
        if f.kind == "oom_killed" {
            let limit = cur.and_then(|c| c.spec["memory_limit_mb"].as_u64());
            causes.push(json!({
                "cause": format!("the replicas use more memory than their limit ({} MiB) and are killed",
                    limit.map_or("none".into(), |l| l.to_string())),
                "confidence": 0.9, "evidence": ["replicas[].state", "replicas[].last_state"],
            }));
        }
        if !changed.is_empty() {
            causes.push(json!({
                "cause": format!(
                    "crashing since revision {current}, which changed {}, deployed by {who} {since}s ago",
                    changed.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" and ")
                ),
                "confidence": if since < 3600 { 0.9 } else { 0.5 },
                "evidence": ["revision", "replicas[].restart_count", "log_tail"],
            }));
        } else if f.kind == "crash_loop" {
            causes.push(json!({
                "cause": format!("revision {current} keeps exiting; its own output is the best lead"),
                "confidence": 0.4, "evidence": ["replicas[].last_state", "log_tail"],
            }));
        }
        let mut proposals = Vec::new();
        if f.kind == "oom_killed" {
            let from = cur.and_then(|c| c.spec["memory_limit_mb"].as_u64()).unwrap_or(64);
            let to = (from * 2).max(64);
            proposals.push(json!({
                "type": "raise_memory_limit", "params": { "container": f.name, "from": from, "to": to },
                "action": { "kind": "deploy", "input": { "name": f.name, "memory_limit_mb": to } },
                "expected_effect": format!("replicas run with {to} MiB and are no longer OOM-killed"),
                "risk": "medium: more memory on the host", "blast_radius": [f.object],
                "rollback": "the deploy's own rollback: the previous revision again",
            }));
        }
        // The last revision with another template that served: pave's own record.
        let good = revisions.iter().rev().filter(|r| r.revision < current).find(|r| {
            let strip = |s: &Value| {
                let mut s = s.clone();
                if let Some(o) = s.as_object_mut() {
                    o.remove("replicas");
                }
                s
            };
            cur.is_some_and(|c| strip(&c.spec) != strip(&r.spec))
        });
        if let Some(g) = good {
            proposals.push(json!({
                "type": "rollback_revision", "params": { "from": current, "to": g.revision },
                "action": { "kind": "rollback", "input": { "name": f.name, "to": g.revision } },
                "expected_effect": format!("revision {} serves again", g.revision),
                "risk": "low: it served before", "blast_radius": [f.object],
                "rollback": format!("make revision {current} current again"),
            }));
        }
        proposals.push(json!({
            "type": "restart", "params": { "name": f.name },
            "action": { "kind": "restart", "input": { "name": f.name } },
            "expected_effect": "fresh replicas of the same spec", "risk": "low",
            "blast_radius": [f.object], "rollback": "the restart's own rollback",
        }));
        Ok((json!({ "causes": causes, "change": change }), proposals))
    }

    async fn remediation_sweep(&self) -> Result<(), EngineError> {
        let incidents = self.store().list_incidents(false).await?;
        for env in self.store().list_environments().await? {
            let findings = self.findings(&env.name).await?;
            let mode = env
                .labels
                .get("remediation")
                .cloned()
                .unwrap_or_else(|| "observe".into());
            // Incidents in progress: remediating → verifying → resolved | escalated.
            for inc in incidents.iter().filter(|i| i.env == env.name) {
                if matches!(inc.state.as_str(), "remediating" | "verifying") {
                    // Held means: the detector quiet, and for a workload no replica
                    // of what serves now restarted since the fix (stable counts).
                    let firing = findings
                        .iter()
                        .any(|f| f.object == inc.object && f.kind == inc.kind)
                        || (inc.state == "verifying" && self.restarted(&inc.object).await);
                    self.follow_up(inc.clone(), firing).await?;
                }
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
                    if let Err(e) = self.apply_proposal(&inc.id, 0, &remediator()).await {
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

    /// Whether a replica of the workload's current revision has restarted.
    async fn restarted(&self, object: &str) -> bool {
        let mut parts = object.splitn(3, '/');
        let (Some("workload"), Some(env), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let Ok(Some(w)) = self.store().get_workload(env, name).await else {
            return false;
        };
        let Ok(status) = self.workload_status(env, name).await else {
            return false;
        };
        status["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| w.current_revision.is_some_and(|c| r["revision"] == c))
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
    pub async fn apply_proposal(
        &self,
        id: &str,
        index: usize,
        who: &Principal,
    ) -> Result<IncidentRecord, EngineError> {
        let mut inc = self
            .store()
            .get_incident(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("incident {id}")))?;
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
        inc.doc["applied"] =
            json!({ "proposal": index, "type": p["type"], "action": action.id, "by": who.user });
        timeline(
            &mut inc.doc,
            "act",
            format!(
                "{} applied by {} as action {} ({})",
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
        let mut inc = self
            .store()
            .get_incident(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("incident {id}")))?;
        if !who.has(Role::Operator, &inc.env) {
            return Err(pave_core::rbac::forbidden(
                who,
                Role::Operator,
                Some(&inc.env),
                "dismiss an incident",
            )
            .into());
        }
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
