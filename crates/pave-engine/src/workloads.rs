//! What the engine does around workload steps (rollouts). A revision is
//! written, immutable, with the start of its `apply_workload` step; its
//! environment values are templates (`${resource.db.password}`) resolved from
//! resource outputs and the vault at dispatch only, never stored. The current
//! revision changes only once the new one is ready (with `prune_workload`).

use std::collections::BTreeMap;

use pave_agent::protocol::{Command, CommandPayload, FromAgent, Outcome, WorkloadKey, WorkloadSpec};
use pave_core::action::ActionState;
use pave_core::plan::{plan_activation, Plan, RollbackInput, ScaleInput, Serving};
use pave_core::time::now_ms;
use pave_store::{RevisionRecord, WriteOp};
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::resources::{PrepareError, Prepared};

/// How long a read (status, logs) waits for the agent.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn err(code: &str, message: impl Into<String>) -> PrepareError {
    (code.to_string(), message.into())
}

fn store_err(e: pave_store::StoreError) -> PrepareError {
    err("store_failed", e.to_string())
}

fn key_of(spec: &Value) -> Result<WorkloadKey, PrepareError> {
    match (spec["env"].as_str(), spec["name"].as_str()) {
        (Some(env), Some(name)) => Ok(WorkloadKey::new(env, name)),
        _ => Err(err("invalid_step", "step spec lacks `env` or `name`")),
    }
}

/// The revision an action created, if it did.
async fn revision_of_action(
    engine: &Engine,
    key: &WorkloadKey,
    action_id: &str,
) -> Result<Option<RevisionRecord>, PrepareError> {
    let revisions = engine
        .store()
        .list_revisions(&key.env, &key.name)
        .await
        .map_err(store_err)?;
    Ok(revisions.into_iter().rev().find(|r| r.created_by == action_id))
}

/// The replicas a workload runs: its own count, or its revision's.
fn replicas_of(w: Option<&pave_store::WorkloadRecord>, r: &RevisionRecord) -> u32 {
    w.and_then(|w| w.replicas)
        .unwrap_or_else(|| r.spec["replicas"].as_u64().unwrap_or(1) as u32)
}

/// The revision a rollout step brings up and with how many replicas: the one
/// named in the step (`scale`, `rollback`), or the one its action created.
async fn rolled_out(
    engine: &Engine,
    key: &WorkloadKey,
    action_id: &str,
    spec: &Value,
) -> Result<(RevisionRecord, u32), PrepareError> {
    if let Some(n) = spec["revision"].as_i64() {
        let r = revision(engine, key, n).await?;
        let replicas = spec["replicas"]
            .as_u64()
            .map_or_else(|| replicas_of(None, &r), |n| n as u32);
        return Ok((r, replicas));
    }
    let r = revision_of_action(engine, key, action_id)
        .await?
        .ok_or_else(|| err("invalid_step", "this action created no revision"))?;
    let replicas = replicas_of(None, &r);
    Ok((r, replicas))
}

async fn revision(engine: &Engine, key: &WorkloadKey, n: i64) -> Result<RevisionRecord, PrepareError> {
    engine
        .store()
        .get_revision(&key.env, &key.name, n)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            err(
                "not_found",
                format!("workload `{}` has no revision {n}", key.name),
            )
        })
}

/// What serves now: the current revision and its replicas.
async fn serving(engine: &Engine, key: &WorkloadKey) -> Result<Option<(RevisionRecord, u32)>, PrepareError> {
    let w = engine
        .store()
        .get_workload(&key.env, &key.name)
        .await
        .map_err(store_err)?;
    let Some(n) = w.as_ref().and_then(|w| w.current_revision) else {
        return Ok(None);
    };
    let r = revision(engine, key, n).await?;
    let replicas = replicas_of(w.as_ref(), &r);
    Ok(Some((r, replicas)))
}

/// Whether every revision of the workload was made by `action_id` (it created
/// the workload).
async fn created_whole(engine: &Engine, key: &WorkloadKey, action_id: &str) -> Result<bool, PrepareError> {
    let revisions = engine
        .store()
        .list_revisions(&key.env, &key.name)
        .await
        .map_err(store_err)?;
    Ok(!revisions.is_empty() && revisions.iter().all(|r| r.created_by == action_id))
}

/// The newest revision below `below` whose rollout succeeded (so it served).
async fn previous_serving(
    engine: &Engine,
    key: &WorkloadKey,
    below: i64,
) -> Result<Option<RevisionRecord>, PrepareError> {
    let revisions = engine
        .store()
        .list_revisions(&key.env, &key.name)
        .await
        .map_err(store_err)?;
    for r in revisions.into_iter().rev().filter(|r| r.revision < below) {
        let action = engine
            .store()
            .get_action(&r.created_by)
            .await
            .map_err(store_err)?;
        if action.is_some_and(|a| a.state == ActionState::Succeeded) {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Why a scale or rollback cannot be planned.
fn plan_error((code, message): PrepareError) -> crate::EngineError {
    match code.as_str() {
        "not_found" => crate::EngineError::NotFound(message),
        "store_failed" => crate::EngineError::Store(pave_store::StoreError::Corrupt(message)),
        _ => crate::EngineError::Conflict(message),
    }
}

/// Plans `scale`: the current revision with another replica count.
pub(crate) async fn plan_scale(engine: &Engine, env: &str, input: Value) -> Result<Plan, crate::EngineError> {
    let s = ScaleInput::parse(input)?;
    let key = WorkloadKey::new(env, &s.name);
    let (cur, replicas) = serving_or_refuse(engine, &key).await?;
    let input = match s.min_ready {
        Some(m) => json!({ "name": s.name, "replicas": s.replicas, "min_ready": m }),
        None => json!({ "name": s.name, "replicas": s.replicas }),
    };
    let previous = Serving {
        revision: cur.revision,
        replicas,
    };
    let to = Serving {
        revision: cur.revision,
        replicas: s.replicas,
    };
    let mut plan = plan_activation(env, &s.name, to, previous, s.ready_timeout_secs, input)?;
    if let Some(m) = s.min_ready {
        for step in plan.steps.iter_mut().filter(|s| s.kind == "await_workload") {
            step.spec["min_ready"] = json!(m);
        }
    }
    Ok(plan)
}

/// Plans `rollback`: revision `to`, or the previous one (the newest that
/// served with another template, below the current one or else above it),
/// made current again with the replicas that run now.
pub(crate) async fn plan_rollback(
    engine: &Engine,
    env: &str,
    input: Value,
) -> Result<Plan, crate::EngineError> {
    let r = RollbackInput::parse(input)?;
    let key = WorkloadKey::new(env, &r.name);
    let (cur, replicas) = serving_or_refuse(engine, &key).await?;
    let target = match r.to {
        Some(n) if n == cur.revision => {
            return Err(crate::EngineError::Conflict(format!(
                "revision {n} of `{}` is current already",
                r.name
            )))
        }
        Some(n) => revision(engine, &key, n).await.map_err(plan_error)?,
        None => match previous_template(engine, &key, &cur).await {
            Ok(t) => t,
            // Nothing served before, but a newer deploy failed: rolling it
            // back is making the current revision the only one again (what
            // is left of the failed one, e.g. its pods, goes).
            Err(e) => match failed_newer(engine, &key, &cur).await.map_err(plan_error)? {
                true => cur.clone(),
                false => return Err(plan_error(e)),
            },
        },
    };
    let input = json!({ "name": r.name, "to": target.revision });
    let previous = Serving {
        revision: cur.revision,
        replicas,
    };
    let to = Serving {
        revision: target.revision,
        replicas,
    };
    Ok(plan_activation(
        env,
        &r.name,
        to,
        previous,
        r.ready_timeout_secs,
        input,
    )?)
}

async fn serving_or_refuse(
    engine: &Engine,
    key: &WorkloadKey,
) -> Result<(RevisionRecord, u32), crate::EngineError> {
    if engine.store().get_workload(&key.env, &key.name).await?.is_none() {
        return Err(crate::EngineError::NotFound(format!(
            "workload `{}` in `{}`",
            key.name, key.env
        )));
    }
    serving(engine, key).await.map_err(plan_error)?.ok_or_else(|| {
        crate::EngineError::Conflict(format!(
            "workload `{}` has no revision serving in `{}`; deploy it first",
            key.name, key.env
        ))
    })
}

impl Engine {
    /// How the live objects of a workload on a Kubernetes target differ from
    /// what pave applies for its current revision.
    pub async fn workload_drift(&self, env: &str, name: &str) -> Result<Value, crate::EngineError> {
        let target = self.kube_target_of(env).await?;
        let key = WorkloadKey::new(env, name);
        let (cur, replicas) = serving_or_refuse(self, &key).await?;
        let mut spec = cur.spec.clone();
        spec["revision"] = json!(cur.revision);
        let mut spec: WorkloadSpec = serde_json::from_value(spec).map_err(|e| {
            crate::EngineError::Conflict(format!("stored revision {} is invalid: {e}", cur.revision))
        })?;
        spec.replicas = replicas;
        // Only the names of env values reach the Deployment (the values are
        // in its Secret): nothing secret is resolved for a comparison.
        for v in spec.env.values_mut() {
            v.clear();
        }
        self.query_target(
            &target,
            CommandPayload::WorkloadDrift {
                key,
                spec: Box::new(spec),
            },
        )
        .await
    }
}

/// Whether the newest revision is above `cur` and its deploy did not succeed.
async fn failed_newer(
    engine: &Engine,
    key: &WorkloadKey,
    cur: &RevisionRecord,
) -> Result<bool, PrepareError> {
    let revisions = engine
        .store()
        .list_revisions(&key.env, &key.name)
        .await
        .map_err(store_err)?;
    let Some(newest) = revisions.iter().max_by_key(|r| r.revision) else {
        return Ok(false);
    };
    if newest.revision <= cur.revision {
        return Ok(false);
    }
    let action = engine
        .store()
        .get_action(&newest.created_by)
        .await
        .map_err(store_err)?;
    Ok(action.is_some_and(|a| a.state.is_terminal() && a.state != ActionState::Succeeded))
}

/// Like `kubectl rollout undo`: the last revision whose template differs
/// from the current one (a scale changes no template) and that served.
async fn previous_template(
    engine: &Engine,
    key: &WorkloadKey,
    cur: &RevisionRecord,
) -> Result<RevisionRecord, PrepareError> {
    let template = |spec: &Value| {
        let mut t = spec.clone();
        if let Some(o) = t.as_object_mut() {
            o.remove("replicas");
        }
        t
    };
    let revisions = engine
        .store()
        .list_revisions(&key.env, &key.name)
        .await
        .map_err(store_err)?;
    let below = revisions.iter().rev().filter(|r| r.revision < cur.revision);
    let above = revisions.iter().rev().filter(|r| r.revision > cur.revision);
    for r in below.chain(above) {
        if template(&r.spec) == template(&cur.spec) {
            continue;
        }
        let served = engine
            .store()
            .get_action(&r.created_by)
            .await
            .map_err(store_err)?
            .is_some_and(|a| a.state == ActionState::Succeeded);
        if served {
            return Ok(r.clone());
        }
    }
    Err(err(
        "no_revision",
        format!(
            "workload `{}` has no other revision with another spec to roll back to",
            key.name
        ),
    ))
}

/// Converts an input readiness (`{"http": "/p"}`, `{"tcp": true}`) to the driver's.
fn readiness(r: &Value) -> Value {
    if let Some(p) = r.get("http").and_then(Value::as_str) {
        json!({ "type": "http", "path": p })
    } else if r.get("tcp").is_some() {
        json!({ "type": "tcp" })
    } else {
        Value::Null
    }
}

/// The spec of a new revision: `base` with the fields of `template` set.
async fn new_spec(
    engine: &Engine,
    key: &WorkloadKey,
    base: &Value,
    template: &Value,
) -> Result<Value, PrepareError> {
    let no_current = || {
        err(
            "no_revision",
            format!(
                "workload `{}` has no current revision in `{}`; deploy it with a command first",
                key.name, key.env
            ),
        )
    };
    let defaults = json!({ "command": [], "env": {}, "replicas": 1, "port": true, "readiness": null });
    let mut spec = match base {
        Value::Null => defaults,
        Value::String(s) if s == "current" || s == "current_or_new" => match serving(engine, key).await? {
            Some((cur, replicas)) => {
                let mut spec = cur.spec;
                spec["replicas"] = json!(replicas);
                spec
            }
            None if s == "current_or_new" => defaults,
            None => return Err(no_current()),
        },
        // A literal spec: an environment clone copies another environment's revision.
        other if other["spec"].is_object() => other["spec"].clone(),
        other => {
            let n = other["revision"]
                .as_i64()
                .ok_or_else(|| err("invalid_step", "step spec has an unknown `base`"))?;
            engine
                .store()
                .get_revision(&key.env, &key.name, n)
                .await
                .map_err(store_err)?
                .ok_or_else(|| {
                    err(
                        "not_found",
                        format!("workload `{}` has no revision {n}", key.name),
                    )
                })?
                .spec
        }
    };
    for field in ["command", "replicas", "port", "memory_limit_mb", "cwd", "image"] {
        if !template[field].is_null() {
            spec[field] = template[field].clone();
        }
    }
    if !template["readiness"].is_null() {
        spec["readiness"] = readiness(&template["readiness"]);
    }
    if let Some(env) = template["env"].as_object() {
        if !spec["env"].is_object() {
            spec["env"] = json!({});
        }
        for (k, v) in env {
            spec["env"][k] = v.clone();
        }
    }
    let mut check = spec.clone();
    check["revision"] = json!(0);
    let parsed: WorkloadSpec = serde_json::from_value(check)
        .map_err(|e| err("invalid_spec", format!("the new revision is invalid: {e}")))?;
    if parsed.command.first().is_none_or(|p| p.is_empty()) && parsed.image.is_none() {
        return Err(err(
            "invalid_spec",
            "a workload needs a command (or, on a cluster, an image)",
        ));
    }
    // Store the normalised form, so equal specs compare equal.
    let mut stored = serde_json::to_value(&parsed).unwrap_or_default();
    if let Some(m) = stored.as_object_mut() {
        m.remove("revision");
    }
    Ok(stored)
}

/// Replaces `${resource.NAME.FIELD}` in `value`.
async fn resolve_value(engine: &Engine, env: &str, value: &str) -> Result<String, PrepareError> {
    const OPEN: &str = "${resource.";
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after.find('}').ok_or_else(|| {
            err(
                "invalid_spec",
                format!("unterminated `${{resource.…}}` in `{value}`"),
            )
        })?;
        let reference = &after[..end];
        let (name, field) = reference.split_once('.').ok_or_else(|| {
            err(
                "invalid_spec",
                format!("`${{resource.{reference}}}` must be `${{resource.NAME.FIELD}}`"),
            )
        })?;
        out.push_str(&resource_field(engine, env, name, field).await?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

async fn resource_field(engine: &Engine, env: &str, name: &str, field: &str) -> Result<String, PrepareError> {
    let r = engine
        .store()
        .get_resource(env, name)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            err(
                "not_found",
                format!("resource `{name}` does not exist in `{env}`"),
            )
        })?;
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    if field == "password" {
        return Ok(crate::resources::password(engine, env, name, false).await?.0);
    }
    if let Some(v) = text(r.outputs.get(field)) {
        return Ok(v);
    }
    if field == "url" {
        let (password, _) = crate::resources::password(engine, env, name, false).await?;
        let host = text(r.outputs.get("host")).unwrap_or_else(|| "127.0.0.1".into());
        let port = text(r.outputs.get("port")).unwrap_or_default();
        return Ok(match r.kind.as_str() {
            "redis" => format!("redis://:{password}@{host}:{port}"),
            _ => format!(
                "postgresql://{}:{password}@{host}:{port}/{}",
                text(r.outputs.get("user")).unwrap_or_default(),
                text(r.outputs.get("database")).unwrap_or_default()
            ),
        });
    }
    Err(err(
        "invalid_spec",
        format!(
            "resource `{name}` has no output `{field}` (it has: password, url, {})",
            r.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    ))
}

/// A stored revision as the driver's spec, its templates resolved.
async fn resolved(
    engine: &Engine,
    key: &WorkloadKey,
    r: &RevisionRecord,
) -> Result<WorkloadSpec, PrepareError> {
    let mut spec = r.spec.clone();
    spec["revision"] = json!(r.revision);
    let mut spec: WorkloadSpec = serde_json::from_value(spec).map_err(|e| {
        err(
            "invalid_spec",
            format!("stored revision {} is invalid: {e}", r.revision),
        )
    })?;
    let mut env = BTreeMap::new();
    let mut used = Vec::new();
    for (k, v) in &spec.env {
        let v = resolve_value(engine, &key.env, v).await?;
        env.insert(
            k.clone(),
            crate::secrets::resolve(engine, &key.env, &v, &mut used).await?,
        );
    }
    spec.env = env;
    Ok(spec)
}

/// Prepares a workload step, or `None` when `kind` is not one.
pub(crate) async fn prepare(
    engine: &Engine,
    action_id: &str,
    step_idx: i64,
    kind: &str,
    spec: &Value,
) -> Option<Result<Prepared, PrepareError>> {
    let result = match kind {
        "apply_workload" => prepare_apply(engine, action_id, step_idx, spec).await,
        "await_workload" => prepare_await(engine, action_id, spec).await,
        "prune_workload" => prepare_prune(engine, action_id, spec).await,
        "restore_workload" => prepare_restore(engine, action_id, spec).await,
        "delete_workload" => key_of(spec).map(|key| Prepared {
            payload: CommandPayload::PruneWorkload { key, keep: None },
            before: vec![],
        }),
        "exec_workload" => prepare_exec(engine, spec).await,
        _ => return None,
    };
    Some(result)
}

async fn prepare_apply(
    engine: &Engine,
    action_id: &str,
    step_idx: i64,
    spec: &Value,
) -> Result<Prepared, PrepareError> {
    let key = key_of(spec)?;
    if spec["revision"].is_i64() {
        let (r, replicas) = rolled_out(engine, &key, action_id, spec).await?;
        let mut spec = resolved(engine, &key, &r).await?;
        spec.replicas = replicas;
        return Ok(Prepared {
            payload: CommandPayload::ApplyWorkload {
                key,
                spec: Box::new(spec),
            },
            before: vec![],
        });
    }
    let mut before = vec![];
    let revision = match revision_of_action(engine, &key, action_id).await? {
        // A re-run step applies the revision it created the first time.
        Some(r) => r,
        None => {
            let stored = new_spec(engine, &key, &spec["base"], &spec["template"]).await?;
            let max = engine
                .store()
                .list_revisions(&key.env, &key.name)
                .await
                .map_err(store_err)?
                .last()
                .map_or(0, |r| r.revision);
            let r = RevisionRecord {
                env: key.env.clone(),
                name: key.name.clone(),
                revision: max + 1,
                spec: stored,
                created_by: action_id.to_string(),
                created_at: now_ms(),
            };
            before.push(WriteOp::InsertRevision(r.clone()));
            // Undoing this deploy brings back exactly what serves now (which
            // after a rollback need not be the newest older revision).
            if let Some((cur, replicas)) = serving(engine, &key).await? {
                before.push(WriteOp::UpdateStep {
                    action_id: action_id.to_string(),
                    idx: step_idx,
                    set: pave_store::StepUpdate {
                        compensation: Some(json!({
                            "kind": "restore_workload",
                            "spec": {
                                "env": key.env, "name": key.name,
                                "previous": { "revision": cur.revision, "replicas": replicas },
                            },
                        })),
                        ..Default::default()
                    },
                });
            }
            r
        }
    };
    let spec = resolved(engine, &key, &revision).await?;
    // Every credential the replicas are given is an audited use: people's
    // secrets, and resource passwords (directly or inside a URL).
    let mut used = Vec::new();
    for v in revision.spec["env"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for (open, credential) in [("${secret.", false), ("${resource.", true)] {
            let mut rest = v.as_str().unwrap_or_default();
            while let Some(i) = rest.find(open) {
                let after = &rest[i + open.len()..];
                let Some(end) = after.find('}') else { break };
                let reference = &after[..end];
                match reference.split_once('.') {
                    Some((name, "password" | "url")) if credential => {
                        used.push(format!("resource {name} password"))
                    }
                    _ if !credential => used.push(reference.to_string()),
                    _ => {}
                }
                rest = &after[end + 1..];
            }
        }
    }
    used.sort();
    used.dedup();
    before.extend(crate::secrets::uses(
        &key.env,
        action_id,
        &format!("workload {}", key.name),
        &used,
    ));
    Ok(Prepared {
        payload: CommandPayload::ApplyWorkload {
            key,
            spec: Box::new(spec),
        },
        before,
    })
}

async fn prepare_await(engine: &Engine, action_id: &str, spec: &Value) -> Result<Prepared, PrepareError> {
    let key = key_of(spec)?;
    let (mine, replicas) = rolled_out(engine, &key, action_id, spec).await?;
    // What serves now comes back if the new state does not become ready (the
    // same revision and count included: a failed wait must not remove it).
    let fallback = match serving(engine, &key).await? {
        Some((cur, n)) => {
            let mut s = resolved(engine, &key, &cur).await?;
            s.replicas = n;
            Some(Box::new(s))
        }
        _ => None,
    };
    let secs = spec["ready_timeout_secs"]
        .as_u64()
        .unwrap_or(pave_core::plan::DEFAULT_READY_TIMEOUT_SECS);
    let mut apply = resolved(engine, &key, &mine).await?;
    apply.replicas = replicas;
    Ok(Prepared {
        payload: CommandPayload::AwaitWorkload {
            key,
            revision: mine.revision,
            timeout_ms: secs * 1000,
            fallback,
            apply: Some(Box::new(apply)),
            min_ready: spec["min_ready"].as_u64().map(|m| m as u32),
        },
        before: vec![],
    })
}

async fn prepare_prune(engine: &Engine, action_id: &str, spec: &Value) -> Result<Prepared, PrepareError> {
    let key = key_of(spec)?;
    let (mine, _) = rolled_out(engine, &key, action_id, spec).await?;
    Ok(Prepared {
        payload: CommandPayload::PruneWorkload {
            key,
            keep: Some(mine.revision),
        },
        before: vec![],
    })
}

async fn prepare_restore(engine: &Engine, action_id: &str, spec: &Value) -> Result<Prepared, PrepareError> {
    let key = key_of(spec)?;
    if let Some(n) = spec["previous"]["revision"].as_i64() {
        // Undoing a scale or a rollback brings back what served before it.
        let prev = revision(engine, &key, n).await?;
        let mut s = resolved(engine, &key, &prev).await?;
        s.replicas = spec["previous"]["replicas"]
            .as_u64()
            .map_or(s.replicas, |r| r as u32);
        return Ok(Prepared {
            payload: CommandPayload::RestoreWorkload {
                key,
                spec: Some(Box::new(s)),
            },
            before: vec![],
        });
    }
    let Some(mine) = revision_of_action(engine, &key, action_id).await? else {
        return Ok(Prepared {
            payload: CommandPayload::Noop,
            before: vec![],
        });
    };
    if created_whole(engine, &key, action_id).await? {
        // Undoing the action that created the workload removes it, like a delete.
        return Ok(Prepared {
            payload: CommandPayload::PruneWorkload { key, keep: None },
            before: vec![],
        });
    }
    let spec = match previous_serving(engine, &key, mine.revision).await? {
        Some(prev) => Some(Box::new(resolved(engine, &key, &prev).await?)),
        None => None,
    };
    Ok(Prepared {
        payload: CommandPayload::RestoreWorkload { key, spec },
        before: vec![],
    })
}

async fn prepare_exec(engine: &Engine, spec: &Value) -> Result<Prepared, PrepareError> {
    let key = key_of(spec)?;
    let command: Vec<String> = serde_json::from_value(spec["command"].clone())
        .map_err(|e| err("invalid_step", format!("step spec `command`: {e}")))?;
    if engine
        .store()
        .get_workload(&key.env, &key.name)
        .await
        .map_err(store_err)?
        .is_none()
    {
        return Err(err(
            "not_found",
            format!("workload `{}` does not exist in `{}`", key.name, key.env),
        ));
    }
    Ok(Prepared {
        payload: CommandPayload::ExecWorkload { key, command },
        before: vec![],
    })
}

/// What to write with a workload step's result.
pub(crate) async fn after(
    engine: &Engine,
    action_id: &str,
    kind: &str,
    spec: &Value,
    outcome: &Outcome,
) -> Vec<WriteOp> {
    if !matches!(outcome, Outcome::Succeeded { .. }) {
        return vec![];
    }
    let Ok(key) = key_of(spec) else {
        return vec![];
    };
    match kind {
        "prune_workload" => match rolled_out(engine, &key, action_id, spec).await {
            Ok((r, replicas)) => vec![WriteOp::SetCurrentRevision {
                env: key.env,
                name: key.name,
                revision: Some(r.revision),
                replicas: Some(replicas),
            }],
            _ => vec![],
        },
        "restore_workload" if spec["previous"]["revision"].is_i64() => vec![WriteOp::SetCurrentRevision {
            env: key.env,
            name: key.name,
            revision: spec["previous"]["revision"].as_i64(),
            replicas: spec["previous"]["replicas"].as_u64().map(|r| r as u32),
        }],
        "restore_workload" => {
            let Ok(Some(mine)) = revision_of_action(engine, &key, action_id).await else {
                return vec![];
            };
            if created_whole(engine, &key, action_id).await.unwrap_or(false) {
                return vec![WriteOp::DeleteWorkload {
                    env: key.env,
                    name: key.name,
                }];
            }
            let prev = previous_serving(engine, &key, mine.revision).await.ok().flatten();
            vec![WriteOp::SetCurrentRevision {
                env: key.env,
                name: key.name,
                replicas: prev.as_ref().map(|p| replicas_of(None, p)),
                revision: prev.map(|p| p.revision),
            }]
        }
        "delete_workload" => vec![WriteOp::DeleteWorkload {
            env: key.env,
            name: key.name,
        }],
        _ => vec![],
    }
}

impl Engine {
    /// The live status of a workload (JSON of `pave_targets::WorkloadStatus`).
    pub async fn workload_status(&self, env: &str, name: &str) -> Result<Value, String> {
        let key = WorkloadKey::new(env, name);
        match self
            .query_agent(env, CommandPayload::WorkloadStatus { key })
            .await?
        {
            Outcome::Succeeded { output } => Ok(output),
            Outcome::Failed { message, .. } => Err(message),
            Outcome::Cancelled { .. } => Err("the status query was cancelled".into()),
        }
    }

    /// The last `tail` lines of a workload's output.
    pub async fn workload_logs(
        &self,
        env: &str,
        name: &str,
        replica: Option<u32>,
        tail: usize,
    ) -> Result<Vec<String>, String> {
        let key = WorkloadKey::new(env, name);
        match self
            .query_agent(env, CommandPayload::WorkloadLogs { key, replica, tail })
            .await?
        {
            Outcome::Succeeded { output } => {
                Ok(serde_json::from_value(output["lines"].clone()).unwrap_or_default())
            }
            Outcome::Failed { message, .. } => Err(message),
            Outcome::Cancelled { .. } => Err("the log query was cancelled".into()),
        }
    }

    /// Sends one read-only command (status, logs) to the agent of `env`'s
    /// target and returns how it ended.
    pub async fn query_agent(&self, env: &str, payload: CommandPayload) -> Result<Outcome, String> {
        let target = self
            .target_of(env)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("environment `{env}` does not exist"))?;
        let hub = self.hub(&target).await?;
        query_hub(&hub, &target, env, payload).await
    }

    /// Sends a command that belongs to no action to the agent of `env`'s target.
    async fn send_query(
        &self,
        env: &str,
        payload: CommandPayload,
    ) -> Result<(TargetHub, String, tokio::sync::mpsc::UnboundedReceiver<FromAgent>), String> {
        let target = self
            .target_of(env)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("environment `{env}` does not exist"))?;
        let hub = self.hub(&target).await?;
        let (id, rx) = dispatch_query(&hub, &target, env, payload).await?;
        Ok((TargetHub { hub }, id, rx))
    }

    /// Follows a workload's output: the last `tail` lines, then each new one.
    /// Dropping the returned stream stops the agent's command.
    pub async fn follow_workload_logs(
        &self,
        env: &str,
        name: &str,
        replica: Option<u32>,
        tail: usize,
    ) -> Result<LogFollow, String> {
        let key = WorkloadKey::new(env, name);
        let (hub, id, rx) = self
            .send_query(env, CommandPayload::FollowWorkloadLogs { key, replica, tail })
            .await?;
        Ok(LogFollow {
            hub: hub.hub,
            id,
            rx,
            started: now_ms(),
            lost_after: self.inner.config.agent_lost_after,
        })
    }
}

/// Sends a command that belongs to no action (`scope` names it: an
/// environment, or `target`).
async fn dispatch_query(
    hub: &crate::AgentHub,
    target: &str,
    scope: &str,
    payload: CommandPayload,
) -> Result<(String, tokio::sync::mpsc::UnboundedReceiver<FromAgent>), String> {
    // A read answers now or not at all: it does not wait for an agent
    // that is away (a step does, up to `agent_lost_after`).
    if !hub.connected() {
        return Err(format!("the agent of target `{target}` is not connected"));
    }
    let cmd = Command {
        id: format!("query.{scope}.{}", pave_core::ids::new_id()),
        action_id: String::new(),
        step: 0,
        payload,
    };
    let id = cmd.id.clone();
    let rx = hub.dispatch(cmd).await?;
    Ok((id, rx))
}

/// Sends a command that belongs to no action and waits for its outcome.
pub(crate) async fn query_hub(
    hub: &crate::AgentHub,
    target: &str,
    scope: &str,
    payload: CommandPayload,
) -> Result<Outcome, String> {
    let (id, mut rx) = dispatch_query(hub, target, scope, payload).await?;
    let answer = async {
        loop {
            match rx.recv().await {
                Some(FromAgent::Result { outcome, .. }) => break Ok(outcome),
                Some(_) => continue,
                None => break Err(format!("the agent of target `{target}` went away")),
            }
        }
    };
    match tokio::time::timeout(QUERY_TIMEOUT, answer).await {
        Ok(outcome) => {
            hub.ack(&id).await;
            outcome
        }
        Err(_) => {
            hub.forget(&id);
            Err(format!(
                "the agent of target `{target}` did not answer within {} s",
                QUERY_TIMEOUT.as_secs()
            ))
        }
    }
}

struct TargetHub {
    hub: crate::AgentHub,
}

/// A followed workload log; see [`Engine::follow_workload_logs`].
pub struct LogFollow {
    hub: crate::AgentHub,
    id: String,
    rx: tokio::sync::mpsc::UnboundedReceiver<FromAgent>,
    started: i64,
    /// A follow whose agent stays away this long ends with an error.
    lost_after: std::time::Duration,
}

impl LogFollow {
    /// The next line, `Ok(None)` when the followed replicas are gone.
    /// A short cut of a remote agent's connection only delays lines (the
    /// agent sends them after the reconnect); a long one ends the follow.
    pub async fn next_line(&mut self) -> Result<Option<String>, String> {
        let mut away_check = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(FromAgent::Log { line, .. }) => return Ok(Some(line)),
                    Some(FromAgent::Result {
                        outcome: Outcome::Failed { message, .. },
                        ..
                    }) => return Err(message),
                    Some(FromAgent::Result { .. }) | None => return Ok(None),
                    Some(_) => continue,
                },
                _ = away_check.tick() => {
                    let Some(since) = self.hub.away_since(self.started) else { continue };
                    let away = now_ms() - since;
                    if away >= self.lost_after.as_millis() as i64 {
                        return Err(format!("the agent has been away for {} s", away / 1000));
                    }
                }
            }
        }
    }
}

impl Drop for LogFollow {
    fn drop(&mut self) {
        let (hub, id) = (self.hub.clone(), std::mem::take(&mut self.id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                hub.cancel(&id).await;
                hub.ack(&id).await;
            });
        }
    }
}
