//! Root-cause analysis and typed proposals for a finding.

use pave_core::time::now_ms;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::EngineError;

use super::detect::Finding;

/// How long a temporary scale-up lasts unless kept.
pub(super) const SCALE_TTL_SECS: u64 = 30 * 60;

/// A temporary scale-up never goes above this many replicas.
const MAX_SCALE_TO: u64 = 20;

impl Engine {
    /// What pave itself changed last on a workload, and the proposals.
    pub(super) async fn decide(&self, env: &str, f: &Finding) -> Result<(Value, Vec<Value>), EngineError> {
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
        if f.kind == "missing_reference" {
            return self.decide_reference(env, f).await;
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
        if f.kind == "readiness_failing" {
            let probe = cur.map(|c| c.spec["readiness"].clone()).unwrap_or_default();
            causes.push(json!({
                "cause": format!("replicas run but their readiness probe ({}) fails",
                    if probe.is_null() { "none".to_string() } else { probe.to_string() }),
                "confidence": 0.8, "evidence": ["replicas[].ready", "replicas[].state"],
            }));
            for r in self.store().list_resources(Some(env)).await? {
                if r.health.as_deref().is_some_and(|h| h != "healthy") {
                    causes.push(json!({
                        "cause": format!("resource {} it may depend on is unhealthy: {}",
                            r.name, r.health.clone().unwrap_or_default()),
                        "confidence": 0.7, "evidence": ["resources"],
                    }));
                }
            }
        }
        let symptom = match f.kind {
            "readiness_failing" => "failing readiness",
            "oom_killed" => "OOM-killed",
            "image_pull_failing" => "failing to pull its image",
            "container_config_error" => "failing to create its container",
            "unschedulable" => "unschedulable",
            "rollout_stalled" => "stalled past its progress deadline",
            _ => "crashing",
        };
        if !changed.is_empty() {
            causes.push(json!({
                "cause": format!(
                    "{symptom} since revision {current}, which changed {}, deployed by {who} {since}s ago",
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
        // Capacity while a person looks: the ready replicas keep serving and
        // as many more are started; temporary, it reverts by itself.
        let ready = f.evidence["ready"].as_u64().unwrap_or(0);
        let desired = f.evidence["desired"].as_u64().unwrap_or(0);
        if f.kind == "readiness_failing" && ready > 0 && desired > ready {
            let to = (desired + (desired - ready)).min(MAX_SCALE_TO);
            if to > desired {
                proposals.push(json!({
                    "type": "scale", "params": { "name": f.name, "from": desired, "to": to },
                    "action": { "kind": "scale", "input": { "name": f.name, "replicas": to, "min_ready": desired } },
                    "ttl_secs": SCALE_TTL_SECS,
                    "expected_effect": format!("{ready} ready replicas plus {} new ones serve", to - desired),
                    "risk": "low: more processes for a while", "blast_radius": [f.object],
                    "rollback": format!("scale back to {desired} (by itself after {} min unless kept)",
                        SCALE_TTL_SECS / 60),
                }));
            }
        }
        proposals.push(json!({
            "type": "restart", "params": { "name": f.name },
            "action": { "kind": "restart", "input": { "name": f.name } },
            "expected_effect": "fresh replicas of the same spec", "risk": "low",
            "blast_radius": [f.object], "rollback": "the restart's own rollback",
        }));
        Ok((json!({ "causes": causes, "change": change }), proposals))
    }

    /// A deleted secret can come back from the vault's deleted secrets; a
    /// deleted resource is provisioned again as it was first asked for (with
    /// new credentials: the workload needs a restart to use them).
    async fn decide_reference(&self, env: &str, f: &Finding) -> Result<(Value, Vec<Value>), EngineError> {
        let mut causes = Vec::new();
        let mut proposals = Vec::new();
        let deleted = self
            .store()
            .list_secrets(env, crate::secrets::DELETED_PREFIX)
            .await?;
        for m in f.evidence["missing"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            let var = m["variable"].as_str().unwrap_or_default();
            if m["kind"] == "secret" {
                let gone = deleted
                    .iter()
                    .find(|d| d.name.trim_start_matches(crate::secrets::DELETED_PREFIX) == name);
                causes.push(json!({
                    "cause": match gone {
                        Some(d) => format!("secret {name} (in `{var}`) was deleted {}s ago", (now_ms() - d.created_at) / 1000),
                        None => format!("secret {name} (in `{var}`) does not exist"),
                    },
                    "confidence": 0.95, "evidence": ["missing"],
                }));
                if gone.is_some() {
                    proposals.push(json!({
                        "type": "restore_reference", "params": { "kind": "secret", "name": name },
                        "action": { "kind": "secret.restore", "input": { "name": name } },
                        "expected_effect": format!("secret {name} exists again with its last value"),
                        "risk": "low: the value the workload already runs with",
                        "blast_radius": [f.object, format!("secret/{env}/{name}")],
                        "rollback": format!("delete secret {name} again"),
                    }));
                }
                continue;
            }
            let object = format!("resource/{env}/{name}");
            let mut deleted_by = None;
            let mut first_asked = None;
            for kind in ["resource.delete", "provision"] {
                let found = self
                    .store()
                    .list_actions(&pave_store::ActionFilter {
                        kind: Some(kind.into()),
                        env: Some(env.to_string()),
                        limit: 200,
                        ..Default::default()
                    })
                    .await?;
                let hit = found
                    .into_iter()
                    .find(|a| a.object == object && a.state == pave_core::ActionState::Succeeded);
                match kind {
                    "provision" => first_asked = hit,
                    _ => deleted_by = hit,
                }
            }
            causes.push(json!({
                "cause": match &deleted_by {
                    Some(a) => format!("resource {name} (in `{var}`) was deleted by {} {}s ago (action {})",
                        a.actor, (now_ms() - a.created_at) / 1000, a.id),
                    None => format!("resource {name} (in `{var}`) does not exist"),
                },
                "confidence": 0.95, "evidence": ["missing"],
            }));
            if let Some(a) = first_asked {
                proposals.push(json!({
                    "type": "restore_reference", "params": { "kind": "resource", "name": name },
                    "action": { "kind": "provision", "input": a.input },
                    "expected_effect": format!(
                        "resource {name} exists again (empty, new credentials: restart the workload to use them)"),
                    "risk": "medium: its earlier data is not restored",
                    "blast_radius": [f.object, object],
                    "rollback": "the provision's own rollback: delete the resource",
                }));
            }
        }
        Ok((json!({ "causes": causes, "change": Value::Null }), proposals))
    }
}
