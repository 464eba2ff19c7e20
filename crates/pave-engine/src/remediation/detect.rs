//! Detectors: what is wrong with a workload or a resource, with the evidence.

use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::EngineError;

use pave_core::time::now_ms;

use super::CRASH_RESTARTS;

/// How long a running replica may fail its readiness probe before it is an incident.
const READINESS_GRACE_MS: i64 = 3_000;

/// Longest wait for a log tail to put in the evidence: a pod whose node does
/// not answer must not hold up the sweep.
const LOG_TAIL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waiting reasons of a container that never starts (Kubernetes): each an
/// incident of its own kind.
const STUCK: &[(&str, &str)] = &[
    ("ImagePullBackOff", "image_pull_failing"),
    ("ErrImagePull", "image_pull_failing"),
    ("InvalidImageName", "image_pull_failing"),
    ("CreateContainerConfigError", "container_config_error"),
    ("CreateContainerError", "container_config_error"),
    ("Unschedulable", "unschedulable"),
];

/// A detector's finding on one object.
pub(super) struct Finding {
    pub object: String,
    pub kind: &'static str,
    pub name: String,
    pub evidence: Value,
    pub summary: String,
}

fn reason_of(state: &Value) -> Option<&str> {
    state
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|v| v["reason"].as_str())
}

impl Engine {
    /// What is wrong in `env`, given the workloads and resources of every
    /// environment (read once per sweep, not once per environment).
    pub(super) async fn findings(
        &self,
        env: &str,
        workloads: &[pave_store::WorkloadRecord],
        resources: &[pave_core::resource::Resource],
    ) -> Result<Vec<Finding>, EngineError> {
        let mut out = Vec::new();
        for w in workloads.iter().filter(|w| w.env == env) {
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
            let object = format!("workload/{env}/{}", w.name);
            let not_ready: Vec<&Value> = mine
                .iter()
                .copied()
                .filter(|r| r["state"].get("running").is_some() && r["ready"] == false)
                .collect();
            let failing_readiness = self.not_ready_for_long(&object, !not_ready.is_empty());
            let stuck = mine.iter().find_map(|r| {
                let reason = reason_of(&r["state"])?;
                STUCK
                    .iter()
                    .find(|(s, _)| *s == reason)
                    .map(|(s, kind)| (*kind, s.to_string()))
            });
            // The Deployment gave up on the revision (`Progressing=False`).
            let stalled = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["reason"] == "ProgressDeadlineExceeded" && c["status"] == false);
            let (kind, what) = if oom {
                ("oom_killed", "OOMKilled".to_string())
            } else if crashing {
                ("crash_loop", "CrashLoopBackOff".to_string())
            } else if let Some((kind, reason)) = stuck {
                (kind, reason)
            } else if stalled {
                ("rollout_stalled", "ProgressDeadlineExceeded".to_string())
            } else if failing_readiness {
                (
                    "readiness_failing",
                    format!(
                        "{} of {} replicas run but fail their readiness probe",
                        not_ready.len(),
                        mine.len()
                    ),
                )
            } else {
                if let Some(f) = self.missing_references(env, &w.name, current, resources).await? {
                    out.push(f);
                }
                continue;
            };
            let secrets = self.secret_values(env).await;
            let tail = tokio::time::timeout(LOG_TAIL_WAIT, self.workload_logs(env, &w.name, None, 10))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
                .iter()
                .map(|l| crate::secrets::redact(l, &secrets))
                .collect::<Vec<_>>();
            let replicas: Vec<Value> = mine
                .iter()
                .map(|r| {
                    json!({
                        "replica": r["index"], "state": r["state"], "last_state": r["last_state"],
                        "restart_count": r["restart_count"], "ready": r["ready"],
                    })
                })
                .collect();
            let restarts: u64 = mine.iter().filter_map(|r| r["restart_count"].as_u64()).sum();
            let ready = mine.iter().filter(|r| r["ready"] == true).count();
            out.push(Finding {
                object,
                kind,
                name: w.name.clone(),
                summary: format!("{} of revision {current}: {what} ({restarts} restarts)", w.name),
                evidence: json!({
                    "revision": current, "replicas": replicas, "log_tail": tail,
                    "ready": ready, "desired": w.replicas,
                }),
            });
        }
        for r in resources.iter().filter(|r| r.env == env) {
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

    /// Whether some replica of `object` has run unready for the grace period
    /// (a probe failing once, or a replica just started, is not an incident).
    fn not_ready_for_long(&self, object: &str, not_ready: bool) -> bool {
        let mut since = self
            .inner
            .not_ready_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !not_ready {
            since.remove(object);
            return false;
        }
        let first = *since.entry(object.to_string()).or_insert_with(now_ms);
        now_ms() - first >= READINESS_GRACE_MS
    }

    /// The `${secret.…}` and `${resource.…}` references of the serving
    /// revision that point at nothing any more: the next replica started (a
    /// restart, a scale, a crash on another host) would fail.
    async fn missing_references(
        &self,
        env: &str,
        workload: &str,
        current: i64,
        resources: &[pave_core::resource::Resource],
    ) -> Result<Option<Finding>, EngineError> {
        let revisions = self.store().list_revisions(env, workload).await?;
        let Some(rev) = revisions.iter().find(|r| r.revision == current) else {
            return Ok(None);
        };
        let refs = references(&rev.spec);
        if refs.is_empty() {
            return Ok(None);
        }
        let secrets: Vec<String> = self
            .store()
            .list_secrets(env, crate::secrets::PREFIX)
            .await?
            .into_iter()
            .map(|m| m.name.trim_start_matches(crate::secrets::PREFIX).to_string())
            .collect();
        let resources: Vec<&str> = resources
            .iter()
            .filter(|r| r.env == env && r.lifecycle != pave_core::resource::ResourceLifecycle::Deleted)
            .map(|r| r.name.as_str())
            .collect();
        let missing: Vec<Value> = refs
            .into_iter()
            .filter(|(kind, name, _)| match *kind {
                "secret" => !secrets.contains(name),
                _ => !resources.contains(&name.as_str()),
            })
            .map(|(kind, name, var)| json!({ "kind": kind, "name": name, "variable": var }))
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = missing
            .iter()
            .map(|m| {
                format!(
                    "{} {}",
                    m["kind"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        Ok(Some(Finding {
            object: format!("workload/{env}/{workload}"),
            kind: "missing_reference",
            name: workload.to_string(),
            summary: format!(
                "{workload} of revision {current} refers to {} that no longer exist",
                names.join(", ")
            ),
            evidence: json!({ "revision": current, "missing": missing }),
        }))
    }
}

/// `(kind, name, variable)` for each reference in a revision's environment.
fn references(spec: &Value) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    for (var, v) in spec["env"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or_default();
        for (open, kind) in [("${secret.", "secret"), ("${resource.", "resource")] {
            let mut rest = text;
            while let Some(i) = rest.find(open) {
                let after = &rest[i + open.len()..];
                let Some(end) = after.find('}') else { break };
                let reference = &after[..end];
                let name = match kind {
                    "secret" => reference,
                    _ => reference.split('.').next().unwrap_or(reference),
                };
                if !out
                    .iter()
                    .any(|(k, n, _): &(&str, String, String)| *k == kind && n == name)
                {
                    out.push((kind, name.to_string(), var.clone()));
                }
                rest = &after[end + 1..];
            }
        }
    }
    out
}
