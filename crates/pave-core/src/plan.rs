//! Turns a validated request into the steps of an action. Each action kind is
//! one function here; later kinds (provision, deploy, …) add theirs.

use serde_json::{json, Value};

use crate::action::{Step, StepState};
use crate::error::CoreError;
use crate::job::JobSpec;

/// Action kinds pave can run today.
pub const KINDS: &[&str] = &["job", "noop", "provision", "resource.delete", "resource.repair"];

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

fn step(idx: i64, name: &str, kind: &str, idempotent: bool, spec: Value, undo: Value) -> Step {
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

fn parse<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, CoreError> {
    serde_json::from_value(input).map_err(|e| CoreError::InvalidInput(e.to_string()))
}

/// Validates `input` for `kind` and plans its steps. `action_id` names the
/// object of actions that have none of their own (a job is its own object).
pub fn plan(kind: &str, action_id: &str, env: &str, input: Value) -> Result<Plan, CoreError> {
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
    fn unknown_kind_and_bad_input_are_refused() {
        assert_eq!(
            plan("teleport", "a", "local", json!({})).unwrap_err(),
            CoreError::UnknownKind("teleport".into())
        );
        assert!(plan("job", "a", "local", json!({"command": "echo"})).is_err());
    }
}
