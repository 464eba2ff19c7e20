//! Drift: how the live Deployment of a workload differs from what pave
//! applies for its current revision. Only the fields pave sets are compared
//! (defaults the API server fills in, labels others add, status: not drift);
//! in a list pave keys by name (containers, env, ports) an entry someone
//! else added is drift too (`kubectl set env`).

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use pave_targets::{WorkloadKey, WorkloadSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{self, Result};
use crate::{manifest, KubeTarget};

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftedField {
    /// `spec.template.spec.containers[app].image`.
    pub path: String,
    /// What pave applies (`null`: pave does not set it, someone added it).
    pub pave: Value,
    /// What the cluster has (`null`: missing).
    pub live: Value,
}

/// The comparison of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// `Deployment ns/name`.
    pub object: String,
    /// The revision compared against.
    pub revision: i64,
    /// Whether anything differs (or the Deployment is gone).
    pub drifted: bool,
    /// The Deployment does not exist.
    pub missing: bool,
    /// What differs.
    pub fields: Vec<DriftedField>,
    /// A unified diff of pave's fields against the live ones (YAML).
    pub diff: String,
}

/// The key of a list entry, when pave keys the list by name.
fn key_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

fn compare(path: &str, want: &Value, live: &Value, out: &mut Vec<DriftedField>) {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => {
            for (k, wv) in w {
                let lv = l.get(k).unwrap_or(&Value::Null);
                compare(&format!("{path}.{k}"), wv, lv, out);
            }
        }
        (Value::Array(w), Value::Array(l)) if w.iter().all(|e| key_of(e).is_some()) && !w.is_empty() => {
            for we in w {
                let name = key_of(we).unwrap_or_default();
                let le = l.iter().find(|e| key_of(e) == Some(name)).unwrap_or(&Value::Null);
                compare(&format!("{path}[{name}]"), we, le, out);
            }
            for le in l {
                if let Some(name) = key_of(le) {
                    if !w.iter().any(|e| key_of(e) == Some(name)) {
                        out.push(DriftedField {
                            path: format!("{path}[{name}]"),
                            pave: Value::Null,
                            live: le.clone(),
                        });
                    }
                }
            }
        }
        (w, l) if w == l => {}
        // A quantity pave writes as `64Mi` may come back as the same number.
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a))
            if a.to_string() == *b => {}
        (w, l) => out.push(DriftedField {
            path: path.trim_start_matches('.').to_string(),
            pave: w.clone(),
            live: l.clone(),
        }),
    }
}

/// Removes what pave does not set or the server owns, for the diff.
fn only_pave_fields(want: &Value, live: &Value) -> Value {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => Value::Object(
            w.keys()
                .filter_map(|k| l.get(k).map(|lv| (k.clone(), only_pave_fields(&w[k], lv))))
                .collect(),
        ),
        (Value::Array(w), Value::Array(l)) if w.iter().all(|e| key_of(e).is_some()) && !w.is_empty() => {
            Value::Array(
                l.iter()
                    .map(|le| {
                        match w
                            .iter()
                            .find(|we| key_of(we).is_some() && key_of(we) == key_of(le))
                        {
                            Some(we) => only_pave_fields(we, le),
                            None => le.clone(),
                        }
                    })
                    .collect(),
            )
        }
        (_, l) => l.clone(),
    }
}

impl KubeTarget {
    /// Compares the live Deployment of `key` with what pave applies for
    /// `spec` (its current revision; env values do not matter, only their
    /// names reach the Deployment).
    pub async fn drift(&self, key: &WorkloadKey, spec: &WorkloadSpec) -> Result<Drift> {
        let ns = self.namespace_of_key(key)?;
        let object = format!("Deployment {ns}/{}", key.name);
        let m = manifest::build(key, &ns, &self.for_cluster(spec))?;
        let api: Api<Deployment> = self.api(&ns);
        let live = api
            .get_opt(&key.name)
            .await
            .map_err(|e| error::api("get", &object, e))?;
        let Some(live) = live else {
            return Ok(Drift {
                object,
                revision: spec.revision,
                drifted: true,
                missing: true,
                fields: vec![],
                diff: String::new(),
            });
        };
        // What pave would apply to this Deployment (an adopted one keeps its
        // selector and container name).
        let mut mine = m.deployment;
        crate::apply::keep_shape(&mut mine, &live)?;
        let want = serde_json::to_value(&mine).unwrap_or_default();
        let live = serde_json::to_value(&live).unwrap_or_default();
        let mut fields = Vec::new();
        for part in ["metadata", "spec"] {
            compare(part, &want[part], &live[part], &mut fields);
        }
        // The server and controllers own these; they are not pave's to compare.
        fields.retain(|f| !f.path.starts_with("metadata.namespace") && f.path != "metadata.name");
        let diff = if fields.is_empty() {
            String::new()
        } else {
            let shown = |v: &Value| yaml_serde::to_string(v).unwrap_or_default();
            let mine = json_subset(&want);
            let theirs = json_subset(&only_pave_fields(&want, &live));
            similar::TextDiff::from_lines(&shown(&mine), &shown(&theirs))
                .unified_diff()
                .context_radius(3)
                .header(
                    &format!("{object} (pave, revision {})", spec.revision),
                    &format!("{object} (live)"),
                )
                .to_string()
        };
        Ok(Drift {
            object,
            revision: spec.revision,
            drifted: !fields.is_empty(),
            missing: false,
            fields,
            diff,
        })
    }
}

fn json_subset(v: &Value) -> Value {
    serde_json::json!({ "metadata": v["metadata"], "spec": v["spec"] })
}
