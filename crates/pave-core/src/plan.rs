//! Turns a validated request into the steps of an action. Each action kind is
//! one function here; later kinds (provision, deploy, …) add theirs.

use serde_json::{json, Value};

use crate::action::{Step, StepState};
use crate::error::CoreError;
use crate::job::JobSpec;

/// Action kinds pave can run today.
pub const KINDS: &[&str] = &[
    "job",
    "noop",
    "provision",
    "resource.delete",
    "resource.repair",
    "deploy",
    "scale",
    "rollback",
    "restart",
    "exec",
    "workload.delete",
    "secret.restore",
    "blueprint.apply",
    "env.clone",
    "env.delete",
    "workload.adopt",
    "object.apply",
    "object.patch",
    "object.delete",
    "helm.install",
    "helm.upgrade",
    "helm.rollback",
    "helm.uninstall",
];

/// Kinds the engine expands from its own state (the blueprint catalog, the
/// environment's contents) before planning: `plan` cannot plan them alone.
pub const EXPANDED_KINDS: &[&str] = &["blueprint.apply", "env.clone", "env.delete", "scale", "rollback"];

/// Separates the objects of an action that locks several.
pub const OBJECT_SEPARATOR: char = ',';

/// Default of a rollout's `ready_timeout_secs`.
pub const DEFAULT_READY_TIMEOUT_SECS: u64 = 60;

/// A planned action: its steps and the object it locks.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The object the action changes (for serialisation of conflicting actions).
    pub object: String,
    /// The input after validation and defaults.
    pub input: Value,
    /// Steps in order.
    pub steps: Vec<Step>,
}

pub(crate) fn step(idx: i64, name: &str, kind: &str, idempotent: bool, spec: Value, undo: Value) -> Step {
    Step {
        idx,
        name: name.to_string(),
        kind: kind.to_string(),
        idempotent,
        state: StepState::Pending,
        attempt: 0,
        spec,
        output: Value::Null,
        error: None,
        compensation: undo,
        started_at: None,
        finished_at: None,
    }
}

/// Input of `provision`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisionInput {
    name: String,
    kind: String,
    #[serde(default)]
    spec: Value,
}

/// Input of `resource.delete` and `resource.repair`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceRef {
    name: String,
}

/// Input of `deploy`. Fields left out are taken from the base revision: the
/// one that serves (or `revision_of`); a first deploy starts from defaults.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct DeployInput {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<bool>,
    /// `{"http": "/healthz"}`, `{"tcp": true}` or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    readiness: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_limit_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    /// The container image (a Kubernetes target runs it; the local one runs `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision_of: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ready_timeout_secs: Option<u64>,
}

/// Input of `scale`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleInput {
    /// Workload.
    pub name: String,
    /// Replicas wanted.
    pub replicas: u32,
    /// Readiness deadline.
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
    /// Done once this many are ready (default: all): a scale-up that adds
    /// capacity beside replicas known to fail their probe.
    #[serde(default)]
    pub min_ready: Option<u32>,
}

/// Input of `rollback`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackInput {
    /// Workload.
    pub name: String,
    /// The revision to make current again (default: the previous one).
    #[serde(default)]
    pub to: Option<i64>,
    /// Readiness deadline.
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
}

impl ScaleInput {
    /// Parses and checks the input of `scale`.
    pub fn parse(input: Value) -> Result<Self, CoreError> {
        let s: ScaleInput = parse(input)?;
        crate::names::validate_name("workload", &s.name)?;
        if s.replicas > 100 {
            return Err(invalid("`replicas` must be at most 100"));
        }
        if s.min_ready.is_some_and(|m| m > s.replicas) {
            return Err(invalid("`min_ready` must be at most `replicas`"));
        }
        Ok(s)
    }
}

impl RollbackInput {
    /// Parses and checks the input of `rollback`.
    pub fn parse(input: Value) -> Result<Self, CoreError> {
        let r: RollbackInput = parse(input)?;
        crate::names::validate_name("workload", &r.name)?;
        Ok(r)
    }
}

/// A revision and the replicas it runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    /// Revision number.
    pub revision: i64,
    /// Replicas.
    pub replicas: u32,
}

/// Plans the rollout of an existing revision (`scale`, `rollback`): no new
/// revision; `previous` is what serves now, restored if the action is undone.
pub fn plan_activation(
    env: &str,
    name: &str,
    to: Serving,
    previous: Serving,
    timeout: Option<u64>,
    input: Value,
) -> Result<Plan, CoreError> {
    let activate = json!({ "revision": to.revision, "replicas": to.replicas });
    let mut p = rollout(env, name, activate.clone(), Value::Null, timeout, input)?;
    for s in &mut p.steps {
        s.spec["revision"] = activate["revision"].clone();
        s.spec["replicas"] = activate["replicas"].clone();
        if let Some(m) = s.spec.as_object_mut() {
            m.remove("base");
            m.remove("template");
        }
    }
    p.steps[0].name = format!("apply revision {} with {} replicas", to.revision, to.replicas);
    p.steps[0].compensation["spec"]["previous"] =
        json!({ "revision": previous.revision, "replicas": previous.replicas });
    Ok(p)
}

/// Input of `restart`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartInput {
    name: String,
    #[serde(default)]
    ready_timeout_secs: Option<u64>,
}

/// Input of `exec`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecInput {
    name: String,
    command: Vec<String>,
}

fn invalid(message: impl Into<String>) -> CoreError {
    CoreError::InvalidInput(message.into())
}

/// Checks environment variable names and values like a job's.
pub fn validate_env(env: &std::collections::BTreeMap<String, String>) -> Result<(), CoreError> {
    for (key, value) in env {
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(format!(
                "environment variable name `{key}` must match [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        if value.contains('\0') {
            return Err(invalid("environment values may not contain NUL bytes"));
        }
    }
    Ok(())
}

/// Checks a readiness probe: `{"http": "/path"}`, `{"tcp": true}` or null.
fn validate_readiness(r: &Value) -> Result<(), CoreError> {
    match r {
        Value::Null => Ok(()),
        Value::Object(m) if m.len() == 1 => match (m.get("http"), m.get("tcp")) {
            (Some(Value::String(p)), _) if p.starts_with('/') => Ok(()),
            (_, Some(Value::Bool(true))) => Ok(()),
            _ => Err(invalid(
                "`readiness` must be {\"http\": \"/path\"}, {\"tcp\": true} or null",
            )),
        },
        _ => Err(invalid(
            "`readiness` must be {\"http\": \"/path\"}, {\"tcp\": true} or null",
        )),
    }
}

/// The three steps of a rollout: apply the new revision, wait until it is
/// ready, retire the others. `template` holds the fields to set on `base`
/// (`"current"`, `"previous"`, `{"revision": N}` or null).
fn rollout(
    env: &str,
    name: &str,
    base: Value,
    template: Value,
    timeout: Option<u64>,
    input: Value,
) -> Result<Plan, CoreError> {
    let timeout = timeout.unwrap_or(DEFAULT_READY_TIMEOUT_SECS);
    if timeout == 0 || timeout > 3600 {
        return Err(invalid("`ready_timeout_secs` must be between 1 and 3600"));
    }
    let key = json!({ "env": env, "name": name });
    let apply = json!({ "env": env, "name": name, "base": base, "template": template });
    let undo = json!({ "kind": "restore_workload", "spec": key });
    let mut wait = key.clone();
    wait["ready_timeout_secs"] = json!(timeout);
    Ok(Plan {
        object: format!("workload/{env}/{name}"),
        steps: vec![
            step(0, "apply revision", "apply_workload", true, apply, undo),
            step(1, "wait until ready", "await_workload", true, wait, Value::Null),
            step(
                2,
                "retire previous revision",
                "prune_workload",
                true,
                key,
                Value::Null,
            ),
        ],
        input,
    })
}

/// Joins the plans of the pieces of one action: steps renumbered in order,
/// named after their piece, every piece's object locked.
fn combine(mut objects: Vec<String>, parts: Vec<(String, Plan)>, input: Value) -> Plan {
    let mut steps = Vec::new();
    for (label, part) in parts {
        objects.push(part.object);
        for mut s in part.steps {
            s.idx = steps.len() as i64;
            if !label.is_empty() {
                s.name = format!("{label}: {}", s.name);
            }
            steps.push(s);
        }
    }
    objects.dedup();
    Plan {
        object: objects.join(&OBJECT_SEPARATOR.to_string()),
        input,
        steps,
    }
}

/// Plans `blueprint.apply`: a provision step per resource, then a rollout per
/// workload. `existing` names the resources already in the environment that
/// have the same kind and spec; they are kept, not provisioned again.
pub fn plan_blueprint(
    env: &str,
    bp: &crate::blueprint::Blueprint,
    rendered: &crate::blueprint::Rendered,
    existing: &[String],
) -> Result<Plan, CoreError> {
    let ctx = format!("blueprint `{}` v{}", bp.name, bp.version);
    let mut parts = Vec::new();
    for r in &rendered.resources {
        let name = r["name"].as_str().unwrap_or_default();
        if existing.iter().any(|e| e == name) {
            continue;
        }
        let p = plan("provision", "", env, r.clone()).map_err(|e| within(&ctx, e))?;
        parts.push((String::new(), p));
    }
    for w in &rendered.workloads {
        let name = w["name"].as_str().unwrap_or_default().to_string();
        if w["command"].is_null() {
            return Err(invalid(format!("{ctx}: workload `{name}` needs a `command`")));
        }
        let p = plan("deploy", "", env, w.clone()).map_err(|e| within(&ctx, e))?;
        parts.push((name, p));
    }
    if parts.is_empty() {
        return Err(invalid(format!(
            "{ctx}: everything it declares already exists in `{env}`"
        )));
    }
    let input = json!({
        "blueprint": bp.name,
        "version": bp.version,
        "params": rendered.params,
    });
    Ok(combine(vec![], parts, input))
}

fn within(ctx: &str, e: CoreError) -> CoreError {
    match e {
        CoreError::InvalidInput(m) => invalid(format!("{ctx}: {m}")),
        other => other,
    }
}

/// What `env.clone` copies: a resource of the source.
#[derive(Debug, Clone)]
pub struct CloneResource {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Its validated spec.
    pub spec: Value,
}

/// What `env.clone` copies: a workload's current revision in the source.
#[derive(Debug, Clone)]
pub struct CloneWorkload {
    /// Name.
    pub name: String,
    /// The source's revision number.
    pub revision: i64,
    /// Its stored spec.
    pub spec: Value,
}

/// Plans `env.clone` into `env`: new resources of the same specs (new
/// credentials: provisioning makes them), then the source's current revisions.
pub fn plan_clone(
    env: &str,
    source: &str,
    resources: &[CloneResource],
    workloads: &[CloneWorkload],
) -> Result<Plan, CoreError> {
    let mut parts = Vec::new();
    for r in resources {
        let p = plan(
            "provision",
            "",
            env,
            json!({ "name": r.name, "kind": r.kind, "spec": r.spec }),
        )?;
        parts.push((String::new(), p));
    }
    let mut revisions = serde_json::Map::new();
    for w in workloads {
        crate::names::validate_name("workload", &w.name)?;
        let base = json!({ "spec": w.spec });
        let p = rollout(env, &w.name, base, json!({}), None, Value::Null)?;
        parts.push((w.name.clone(), p));
        revisions.insert(w.name.clone(), json!(w.revision));
    }
    if parts.is_empty() {
        return Err(invalid(format!(
            "environment `{source}` has no resources and no workloads to clone"
        )));
    }
    let input = json!({ "source": source, "revisions": revisions });
    Ok(combine(vec![format!("environment/{env}")], parts, input))
}

/// Plans `env.delete`: the workloads, then the resources (newest first), then
/// the environment itself. Nothing of it can be undone.
pub fn plan_env_delete(env: &str, workloads: &[String], resources: &[String]) -> Result<Plan, CoreError> {
    let mut parts = Vec::new();
    for w in workloads {
        parts.push((
            String::new(),
            plan("workload.delete", "", env, json!({ "name": w }))?,
        ));
    }
    for r in resources {
        parts.push((
            String::new(),
            plan("resource.delete", "", env, json!({ "name": r }))?,
        ));
    }
    let last = Plan {
        object: format!("environment/{env}"),
        input: Value::Null,
        steps: vec![step(
            0,
            &format!("delete environment {env}"),
            "delete_environment",
            true,
            json!({ "env": env }),
            Value::Null,
        )],
    };
    parts.push((String::new(), last));
    let input = json!({ "workloads": workloads, "resources": resources });
    Ok(combine(vec![], parts, input))
}

fn parse<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, CoreError> {
    serde_json::from_value(input).map_err(|e| CoreError::InvalidInput(e.to_string()))
}

/// Validates `input` for `kind` and plans its steps. `action_id` names the
/// object of actions that have none of their own (a job is its own object).
pub fn plan(kind: &str, action_id: &str, env: &str, input: Value) -> Result<Plan, CoreError> {
    if let Some(planned) = crate::cluster_plan::plan(kind, env, input.clone()) {
        return planned;
    }
    match kind {
        "provision" => {
            let p: ProvisionInput = parse(input)?;
            let spec = crate::resource::validate(&p.kind, &p.name, &p.spec)?;
            let target = json!({ "env": env, "name": p.name, "kind": p.kind, "spec": spec });
            let undo = json!({ "kind": "delete_resource", "spec": { "env": env, "name": p.name } });
            Ok(Plan {
                object: format!("resource/{env}/{}", p.name),
                steps: vec![step(
                    0,
                    &format!("provision {} {}", p.kind, p.name),
                    "provision_resource",
                    true,
                    target.clone(),
                    undo,
                )],
                input: json!({ "name": p.name, "kind": p.kind, "spec": spec }),
            })
        }
        "resource.delete" | "resource.repair" => {
            let r: ResourceRef = parse(input)?;
            crate::names::validate_name("resource", &r.name)?;
            let (verb, step_kind) = if kind == "resource.delete" {
                ("delete", "delete_resource")
            } else {
                ("repair", "repair_resource")
            };
            Ok(Plan {
                object: format!("resource/{env}/{}", r.name),
                steps: vec![step(
                    0,
                    &format!("{verb} {}", r.name),
                    step_kind,
                    true,
                    json!({ "env": env, "name": r.name }),
                    Value::Null,
                )],
                input: json!({ "name": r.name }),
            })
        }
        "secret.restore" => {
            let r: ResourceRef = parse(input)?;
            crate::names::validate_name("secret", &r.name)?;
            Ok(Plan {
                object: format!("secret/{env}/{}", r.name),
                steps: vec![step(
                    0,
                    &format!("restore secret {} from the vault's deleted secrets", r.name),
                    "restore_secret",
                    true,
                    json!({ "env": env, "name": r.name }),
                    Value::Null,
                )],
                input: json!({ "name": r.name }),
            })
        }
        "job" => {
            let spec: JobSpec =
                serde_json::from_value(input).map_err(|e| CoreError::InvalidInput(e.to_string()))?;
            spec.validate()?;
            let undo = match &spec.undo {
                Some(cmd) => json!({
                    "kind": "run_job",
                    "spec": JobSpec { command: cmd.clone(), undo: None, ..spec.clone() },
                }),
                None => Value::Null,
            };
            let input = serde_json::to_value(&spec).map_err(|e| CoreError::InvalidInput(e.to_string()))?;
            Ok(Plan {
                object: format!("job/{action_id}"),
                steps: vec![step(0, "run", "run_job", false, input.clone(), undo)],
                input,
            })
        }
        "deploy" => {
            let d: DeployInput = parse(input)?;
            crate::names::validate_name("workload", &d.name)?;
            validate_env(&d.env)?;
            if let Some(c) = &d.command {
                if c.first().is_none_or(|p| p.is_empty()) {
                    return Err(invalid("`command` must name a program"));
                }
                if c.iter().any(|a| a.contains('\0')) {
                    return Err(invalid("`command` may not contain NUL bytes"));
                }
            }
            if let Some(r) = &d.readiness {
                validate_readiness(r)?;
            }
            if d.replicas.is_some_and(|r| r > 100) {
                return Err(invalid("`replicas` must be at most 100"));
            }
            // What is left out comes from what serves now (a first deploy
            // starts from the defaults).
            let base = match d.revision_of {
                Some(n) => json!({ "revision": n }),
                None => json!("current_or_new"),
            };
            let template = json!({
                "command": d.command,
                "env": d.env,
                "replicas": d.replicas,
                "port": d.port,
                "readiness": d.readiness,
                "memory_limit_mb": d.memory_limit_mb,
                "cwd": d.cwd,
                "image": d.image,
            });
            let input = serde_json::to_value(&d).map_err(|e| invalid(e.to_string()))?;
            rollout(env, &d.name, base, template, d.ready_timeout_secs, input)
        }
        "restart" => {
            // Like `kubectl rollout restart`: a new revision of the same spec, so
            // that fresh replicas start and become ready before the old ones stop.
            let r: RestartInput = parse(input)?;
            crate::names::validate_name("workload", &r.name)?;
            let input = json!({ "name": r.name });
            rollout(
                env,
                &r.name,
                json!("current"),
                json!({}),
                r.ready_timeout_secs,
                input,
            )
        }
        "exec" => {
            let e: ExecInput = parse(input)?;
            crate::names::validate_name("workload", &e.name)?;
            if e.command.first().is_none_or(|p| p.is_empty()) {
                return Err(invalid("`command` must name a program"));
            }
            let input = json!({ "name": e.name, "command": e.command });
            Ok(Plan {
                object: format!("exec/{action_id}"),
                steps: vec![step(
                    0,
                    "exec",
                    "exec_workload",
                    false,
                    json!({ "env": env, "name": e.name, "command": e.command }),
                    Value::Null,
                )],
                input,
            })
        }
        "workload.delete" => {
            let r: ResourceRef = parse(input)?;
            crate::names::validate_name("workload", &r.name)?;
            Ok(Plan {
                object: format!("workload/{env}/{}", r.name),
                steps: vec![step(
                    0,
                    &format!("delete {}", r.name),
                    "delete_workload",
                    true,
                    json!({ "env": env, "name": r.name }),
                    Value::Null,
                )],
                input: json!({ "name": r.name }),
            })
        }
        "noop" => {
            if !input.is_null() && input != json!({}) {
                return Err(CoreError::InvalidInput("a noop action takes no input".into()));
            }
            Ok(Plan {
                object: format!("noop/{action_id}"),
                steps: vec![step(0, "noop", "noop", true, Value::Null, Value::Null)],
                input: json!({}),
            })
        }
        k if EXPANDED_KINDS.contains(&k) => Err(invalid(format!(
            "`{k}` actions are planned by the engine from its own state"
        ))),
        other => Err(CoreError::UnknownKind(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_one_non_idempotent_step_locking_itself() {
        let p = plan("job", "a1", "local", json!({"command": ["echo", "hi"]})).unwrap();
        assert_eq!(p.object, "job/a1");
        assert_eq!(p.steps.len(), 1);
        assert!(!p.steps[0].idempotent);
        assert!(p.steps[0].compensation.is_null());
    }

    #[test]
    fn a_job_with_undo_captures_its_compensation() {
        let p = plan(
            "job",
            "a1",
            "local",
            json!({"command": ["touch", "x"], "undo": ["rm", "x"]}),
        )
        .unwrap();
        assert_eq!(p.steps[0].compensation["spec"]["command"], json!(["rm", "x"]));
    }

    #[test]
    fn a_provision_locks_its_resource_and_deletes_it_on_rollback() {
        let p = plan(
            "provision",
            "a1",
            "staging",
            json!({"name": "db", "kind": "postgres"}),
        )
        .unwrap();
        assert_eq!(p.object, "resource/staging/db");
        assert!(p.steps[0].idempotent);
        assert_eq!(p.steps[0].compensation["kind"], "delete_resource");
        assert!(plan(
            "provision",
            "a1",
            "staging",
            json!({"name": "db", "kind": "postgres", "size": 1})
        )
        .is_err());
    }

    #[test]
    fn a_deploy_is_three_idempotent_steps_on_its_workload() {
        let p = plan(
            "deploy",
            "a1",
            "staging",
            json!({"name": "web", "command": ["demo"], "readiness": {"http": "/healthz"}}),
        )
        .unwrap();
        assert_eq!(p.object, "workload/staging/web");
        let kinds: Vec<_> = p.steps.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["apply_workload", "await_workload", "prune_workload"]);
        assert!(p.steps.iter().all(|s| s.idempotent));
        assert_eq!(p.steps[0].compensation["kind"], "restore_workload");
        assert_eq!(p.steps[1].spec["ready_timeout_secs"], 60);
        assert!(plan("deploy", "a", "s", json!({"name": "web", "replicas": 2, "x": 1})).is_err());
        assert!(plan("deploy", "a", "s", json!({"name": "web", "env": {"1X": "v"}})).is_err());
        assert!(plan("deploy", "a", "s", json!({"name": "Web"})).is_err());
        assert!(plan(
            "deploy",
            "a",
            "s",
            json!({"name": "web", "readiness": {"udp": 1}})
        )
        .is_err());
        let on = |revision, replicas| Serving { revision, replicas };
        let s = plan_activation("s", "web", on(2, 3), on(2, 1), None, json!({})).unwrap();
        assert!(s
            .steps
            .iter()
            .all(|st| st.spec["revision"] == 2 && st.spec["replicas"] == 3));
        assert!(s.steps[0].spec.get("base").is_none());
        assert_eq!(s.steps[0].compensation["spec"]["previous"]["replicas"], 1);
        assert!(ScaleInput::parse(json!({"name": "web", "replicas": 101})).is_err());
        assert!(RollbackInput::parse(json!({"name": "web", "to": "x"})).is_err());
    }

    #[test]
    fn a_blueprint_is_one_action_locking_every_piece() {
        let bp = crate::blueprint::Blueprint::from_yaml(
            "name: s\nversion: 1\nparameters: {type: object, properties: {svc: {type: string}}}\n\
             resources: [{name: '${params.svc}-db', kind: postgres}, {name: cache, kind: redis}]\n\
             workloads: [{name: '${params.svc}', command: [demo], replicas: 2}]\n",
        )
        .unwrap();
        let r = bp.render(&json!({"svc": "pay"})).unwrap();
        let p = plan_blueprint("st", &bp, &r, &[]).unwrap();
        assert_eq!(p.object, "resource/st/pay-db,resource/st/cache,workload/st/pay");
        let names: Vec<_> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "provision postgres pay-db",
                "provision redis cache",
                "pay: apply revision",
                "pay: wait until ready",
                "pay: retire previous revision"
            ]
        );
        assert!(p.steps.iter().enumerate().all(|(i, s)| s.idx == i as i64));
        let kept = plan_blueprint("st", &bp, &r, &["cache".into()]).unwrap();
        assert_eq!(kept.steps.len(), 4);
        let d = plan_env_delete("st", &["pay".into()], &["cache".into(), "pay-db".into()]).unwrap();
        let kinds: Vec<_> = d.steps.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "delete_workload",
                "delete_resource",
                "delete_resource",
                "delete_environment"
            ]
        );
        assert!(plan("env.delete", "a", "st", json!({})).is_err());
    }

    #[test]
    fn unknown_kind_and_bad_input_are_refused() {
        assert_eq!(
            plan("teleport", "a", "local", json!({})).unwrap_err(),
            CoreError::UnknownKind("teleport".into())
        );
        assert!(plan("job", "a", "local", json!({"command": "echo"})).is_err());
    }
}

/// Applies a JSON merge patch (RFC 7386): objects merge key by key, `null`
/// removes a key, anything else replaces. An approver's amendment is one.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => serde_json::Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod merge_patch_tests {
    use super::*;

    #[test]
    fn a_merge_patch_changes_only_what_it_names() {
        let input = json!({"name": "web", "replicas": 2, "env": {"A": "1", "B": "2"}});
        let out = merge_patch(&input, &json!({"replicas": 3, "env": {"B": null, "C": "3"}}));
        assert_eq!(
            out,
            json!({"name": "web", "replicas": 3, "env": {"A": "1", "C": "3"}})
        );
    }
}
