//! Plans of the actions only a Kubernetes environment has: edits of any
//! object through the API server (each step's output is the objects'
//! before-state, which its undo puts back) and Helm releases.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::CoreError;
use crate::plan::{step, Plan};

/// Action kinds of Kubernetes environments.
pub const KINDS: &[&str] = &[
    "workload.adopt",
    "object.apply",
    "object.patch",
    "object.delete",
    "helm.install",
    "helm.upgrade",
    "helm.rollback",
    "helm.uninstall",
];

/// The most YAML `object.apply` takes.
pub const MAX_OBJECTS_YAML: usize = 1024 * 1024;
/// The largest chart archive (base64) a Helm action carries (a request
/// body is at most 1 MiB).
pub const MAX_CHART_BASE64: usize = 768 * 1024;
/// Default of Helm's `timeout_secs`.
pub const DEFAULT_HELM_TIMEOUT_SECS: u64 = 300;

fn invalid(message: impl Into<String>) -> CoreError {
    CoreError::InvalidInput(message.into())
}

fn parse<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, CoreError> {
    serde_json::from_value(input).map_err(|e| invalid(e.to_string()))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ApplyInput {
    yaml: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ObjectInput {
    kind: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patch: Option<Value>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HelmInstallInput {
    release: String,
    /// `{"type": "archive", "base64": …}` or `{"type": "reference", "name": …}`.
    chart: Value,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    set: Vec<String>,
    /// Values path (`db.password`) → the environment's secret that holds it.
    #[serde(default)]
    secret_values: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HelmReleaseInput {
    release: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<u32>,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

/// A kind as `kubectl` takes it: `deployment`, `deployments`, `deploy`, `deployment.apps`.
fn validate_kind(kind: &str) -> Result<(), CoreError> {
    let ok = !kind.is_empty()
        && kind.len() <= 253
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{kind:?} is not a Kubernetes kind")))
    }
}

/// An object name (a DNS subdomain).
fn validate_object_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{name:?} is not a Kubernetes object name")))
    }
}

/// A Helm release name (Helm's own rule: a DNS label of at most 53).
pub fn validate_release(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 53
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name:?} is not a Helm release name (lower-case letters, digits and '-', at most 53)"
        )))
    }
}

fn validate_chart(chart: &Value) -> Result<(), CoreError> {
    match chart["type"].as_str() {
        Some("archive") => match chart["base64"].as_str() {
            Some(b) if !b.is_empty() && b.len() <= MAX_CHART_BASE64 => Ok(()),
            Some(b) if !b.is_empty() => Err(invalid(format!(
                "the chart archive is larger than {} KiB (base64); push it to a chart repository",
                MAX_CHART_BASE64 / 1024
            ))),
            _ => Err(invalid("a chart archive needs `base64`")),
        },
        Some("reference") => match chart["name"].as_str() {
            Some(n) if !n.is_empty() && n.len() <= 1024 && !n.starts_with('-') => Ok(()),
            _ => Err(invalid("a chart reference needs a `name`")),
        },
        _ => Err(invalid(
            "`chart` is {\"type\":\"archive\",\"base64\":…} or {\"type\":\"reference\",\"name\":…}",
        )),
    }
}

fn timeout(t: Option<u64>) -> Result<u64, CoreError> {
    match t.unwrap_or(DEFAULT_HELM_TIMEOUT_SECS) {
        0 => Err(invalid("`timeout_secs` must be positive")),
        t if t > 3600 => Err(invalid("`timeout_secs` must be at most 3600")),
        t => Ok(t),
    }
}

fn undo_changes(env: &str) -> Value {
    json!({ "kind": "restore_objects", "spec": { "env": env, "step": 0 } })
}

/// Plans a Kubernetes action, or `None` when `kind` is not one.
pub fn plan(kind: &str, env: &str, input: Value) -> Option<Result<Plan, CoreError>> {
    let planned = match kind {
        "workload.adopt" => plan_adopt(env, input),
        "object.apply" => plan_apply(env, input),
        "object.patch" | "object.delete" => plan_object(kind, env, input),
        "helm.install" | "helm.upgrade" => plan_helm_install(kind == "helm.upgrade", env, input),
        "helm.rollback" | "helm.uninstall" => plan_helm_release(kind, env, input),
        _ => return None,
    };
    Some(planned)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AdoptInput {
    name: String,
}

fn plan_adopt(env: &str, input: Value) -> Result<Plan, CoreError> {
    let a: AdoptInput = parse(input)?;
    crate::names::validate_name("workload", &a.name)?;
    Ok(Plan {
        object: format!("workload/{env}/{}", a.name),
        steps: vec![step(
            0,
            &format!("adopt deployment {}", a.name),
            "adopt_workload",
            true,
            json!({ "env": env, "name": a.name }),
            Value::Null,
        )],
        input: serde_json::to_value(&a).map_err(|e| invalid(e.to_string()))?,
    })
}

fn plan_apply(env: &str, input: Value) -> Result<Plan, CoreError> {
    let a: ApplyInput = parse(input)?;
    if a.yaml.trim().is_empty() {
        return Err(invalid("`yaml` holds no object"));
    }
    if a.yaml.len() > MAX_OBJECTS_YAML {
        return Err(invalid("`yaml` is larger than 1 MiB"));
    }
    Ok(Plan {
        object: format!("k8s/{env}"),
        steps: vec![step(
            0,
            "server-side apply the objects",
            "apply_objects",
            false,
            json!({ "env": env, "yaml": a.yaml }),
            undo_changes(env),
        )],
        input: serde_json::to_value(&a).map_err(|e| invalid(e.to_string()))?,
    })
}

fn plan_object(kind: &str, env: &str, input: Value) -> Result<Plan, CoreError> {
    let o: ObjectInput = parse(input)?;
    validate_kind(&o.kind)?;
    validate_object_name(&o.name)?;
    let (name, step_kind, spec) = if kind == "object.patch" {
        let patch = match &o.patch {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => return Err(invalid("`patch` must be a JSON merge patch (an object)")),
        };
        (
            format!("merge-patch {}/{}", o.kind, o.name),
            "patch_object",
            json!({ "env": env, "kind": o.kind, "name": o.name, "patch": patch }),
        )
    } else {
        if o.patch.is_some() {
            return Err(invalid("a delete takes no `patch`"));
        }
        (
            format!("delete {}/{}", o.kind, o.name),
            "delete_object",
            json!({ "env": env, "kind": o.kind, "name": o.name }),
        )
    };
    Ok(Plan {
        object: format!("k8s/{env}/{}/{}", o.kind.to_ascii_lowercase(), o.name),
        steps: vec![step(0, &name, step_kind, false, spec, undo_changes(env))],
        input: serde_json::to_value(&o).map_err(|e| invalid(e.to_string()))?,
    })
}

fn plan_helm_install(upgrade: bool, env: &str, input: Value) -> Result<Plan, CoreError> {
    let h: HelmInstallInput = parse(input)?;
    validate_release(&h.release)?;
    validate_chart(&h.chart)?;
    let timeout_secs = timeout(h.timeout_secs)?;
    for s in &h.set {
        if !s.contains('=') || s.starts_with('-') || s.contains('\0') {
            return Err(invalid(format!("`--set {s}` is not KEY=VALUE")));
        }
    }
    let total: usize = h.values.iter().map(String::len).sum();
    if total > MAX_OBJECTS_YAML {
        return Err(invalid("the values files are larger than 1 MiB"));
    }
    for (path, secret) in &h.secret_values {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(invalid(format!("{path:?} is not a values path (a.b.c)")));
        }
        crate::names::validate_name("secret", secret)?;
    }
    let release = h.release.clone();
    let (name, undo) = if upgrade {
        (
            format!("helm upgrade {release}"),
            json!({ "kind": "helm_undo", "spec": { "env": env, "release": release, "step": 0 } }),
        )
    } else {
        (
            format!("helm install {release}"),
            json!({ "kind": "helm", "spec": { "env": env, "op": {
                "verb": "uninstall", "release": release, "wait": h.wait, "timeout_secs": timeout_secs } } }),
        )
    };
    let spec = json!({
        "env": env,
        "op": {
            "verb": "install",
            "release": release,
            "chart": h.chart,
            "values": h.values,
            "set": h.set,
            "upgrade": upgrade,
            "wait": h.wait,
            "timeout_secs": timeout_secs,
        },
        "secret_values": h.secret_values,
    });
    let mut input = serde_json::to_value(&h).map_err(|e| invalid(e.to_string()))?;
    input["timeout_secs"] = json!(timeout_secs);
    // The archive stays in the step, not in the input everyone lists.
    if input["chart"]["type"] == "archive" {
        input["chart"] =
            json!({ "type": "archive", "bytes": h.chart["base64"].as_str().map_or(0, |b| b.len() / 4 * 3) });
    }
    Ok(Plan {
        object: format!("helm/{env}/{}", h.release),
        steps: vec![step(0, &name, "helm", false, spec, undo)],
        input,
    })
}

fn plan_helm_release(kind: &str, env: &str, input: Value) -> Result<Plan, CoreError> {
    let h: HelmReleaseInput = parse(input)?;
    validate_release(&h.release)?;
    let timeout_secs = timeout(h.timeout_secs)?;
    let (name, op, undo) = if kind == "helm.rollback" {
        let to = h
            .revision
            .map_or("the revision before".to_string(), |r| format!("revision {r}"));
        (
            format!("helm rollback {} to {to}", h.release),
            json!({ "verb": "rollback", "release": h.release, "revision": h.revision,
                    "wait": h.wait, "timeout_secs": timeout_secs }),
            json!({ "kind": "helm_undo", "spec": { "env": env, "release": h.release, "step": 0 } }),
        )
    } else {
        if h.revision.is_some() {
            return Err(invalid("an uninstall takes no `revision`"));
        }
        (
            format!("helm uninstall {}", h.release),
            json!({ "verb": "uninstall", "release": h.release, "wait": h.wait, "timeout_secs": timeout_secs }),
            Value::Null,
        )
    };
    let mut input = serde_json::to_value(&h).map_err(|e| invalid(e.to_string()))?;
    input["timeout_secs"] = json!(timeout_secs);
    Ok(Plan {
        object: format!("helm/{env}/{}", h.release),
        steps: vec![step(
            0,
            &name,
            "helm",
            false,
            json!({ "env": env, "op": op }),
            undo,
        )],
        input,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_edits_capture_their_undo() {
        let p = plan(
            "object.patch",
            "shop",
            json!({"kind": "deployment", "name": "payments", "patch": {"metadata": {"labels": {"team": "p"}}}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.object, "k8s/shop/deployment/payments");
        assert_eq!(p.steps[0].kind, "patch_object");
        assert_eq!(p.steps[0].compensation["kind"], "restore_objects");
        assert!(plan(
            "object.patch",
            "shop",
            json!({"kind": "deployment", "name": "p", "patch": [1]})
        )
        .unwrap()
        .is_err());
        assert!(plan(
            "object.delete",
            "shop",
            json!({"kind": "deployment", "name": "Bad_Name"})
        )
        .unwrap()
        .is_err());
        assert!(plan("object.apply", "shop", json!({"yaml": " "}))
            .unwrap()
            .is_err());
        assert!(plan("object.apply", "shop", json!({"yaml": "a: 1", "extra": 1}))
            .unwrap()
            .is_err());
    }

    #[test]
    fn helm_actions_validate_and_keep_the_archive_out_of_the_input() {
        let p = plan(
            "helm.install",
            "shop",
            json!({"release": "demo", "chart": {"type": "archive", "base64": "AAAA"}, "set": ["a=1"]}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.steps[0].compensation["spec"]["op"]["verb"], "uninstall");
        assert_eq!(p.input["chart"]["bytes"], 3);
        assert_eq!(p.steps[0].spec["op"]["chart"]["base64"], "AAAA");
        let up = plan(
            "helm.upgrade",
            "shop",
            json!({"release": "demo", "chart": {"type": "reference", "name": "oci://x/y"}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(up.steps[0].compensation["kind"], "helm_undo");
        for bad in [
            json!({"release": "Demo", "chart": {"type": "reference", "name": "x"}}),
            json!({"release": "demo", "chart": {"type": "zip"}}),
            json!({"release": "demo", "chart": {"type": "reference", "name": "x"}, "set": ["--post-renderer=x"]}),
            json!({"release": "demo", "chart": {"type": "reference", "name": "x"}, "timeout_secs": 0}),
        ] {
            assert!(
                plan("helm.install", "shop", bad.clone()).unwrap().is_err(),
                "{bad}"
            );
        }
        let rb = plan("helm.rollback", "shop", json!({"release": "demo", "revision": 1}))
            .unwrap()
            .unwrap();
        assert_eq!(rb.steps[0].spec["op"]["revision"], 1);
        assert!(plan("helm.uninstall", "shop", json!({"release": "demo"}))
            .unwrap()
            .unwrap()
            .steps[0]
            .compensation
            .is_null());
    }
}
