//! Blueprints: versioned golden paths. A blueprint declares typed parameters
//! (a JSON Schema) and templates of resources and workloads; rendering it with
//! parameters gives the inputs of `provision` and `deploy`, which the
//! `blueprint.apply` plan turns into one action with a step per piece.
//!
//! Templates refer to parameters as `${params.NAME}`. A string that is exactly
//! one reference takes the parameter's value with its type (`replicas:
//! ${params.replicas}` stays a number); a reference inside a longer string is
//! replaced by its text. `${resource.NAME.FIELD}` is left for the engine, which
//! resolves it from the vault only when replicas start.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::CoreError;
use crate::names::validate_name;

/// Largest accepted blueprint document.
pub const MAX_BLUEPRINT_BYTES: usize = 256 * 1024;

const PARAM_OPEN: &str = "${params.";

/// A resource a blueprint provisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceTemplate {
    /// Resource name (may use parameters).
    pub name: String,
    /// `postgres` or `redis`.
    pub kind: String,
    /// Provider spec (postgres: `database`, `user`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub spec: Value,
}

/// A workload a blueprint deploys: the fields of a `deploy`, each of which may
/// use parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadTemplate {
    /// Workload name.
    pub name: String,
    /// Program and arguments.
    pub command: Value,
    /// Environment variables; values may reference resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Value>,
    /// Replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Value>,
    /// Give each replica a port in `$PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Value>,
    /// `{http: /path}` or `{tcp: true}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Value>,
    /// Memory limit per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<Value>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Value>,
    /// Container image (Kubernetes targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Value>,
    /// Readiness deadline of the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_secs: Option<Value>,
}

/// A parsed and checked blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blueprint {
    /// DNS-label name.
    pub name: String,
    /// Version, from 1; a changed blueprint is a new version.
    pub version: u32,
    /// What it gives a developer.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the parameters (an object schema).
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
    /// Resources, provisioned first, in order.
    #[serde(default)]
    pub resources: Vec<ResourceTemplate>,
    /// Workloads, deployed after the resources, in order.
    #[serde(default)]
    pub workloads: Vec<WorkloadTemplate>,
}

fn empty_object_schema() -> Value {
    json!({ "type": "object", "properties": {} })
}

/// A blueprint version and where pave got it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueprintEntry {
    /// The blueprint.
    #[serde(flatten)]
    pub blueprint: Blueprint,
    /// `built-in`, `file PATH` or `api`.
    pub source: String,
}

/// A blueprint rendered with parameters: the inputs of its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The parameters with their defaults filled in.
    pub params: Value,
    /// `provision` inputs (`name`, `kind`, `spec`).
    pub resources: Vec<Value>,
    /// `deploy` inputs.
    pub workloads: Vec<Value>,
}

fn invalid(message: impl Into<String>) -> CoreError {
    CoreError::InvalidInput(message.into())
}

impl Blueprint {
    /// Parses a YAML (or JSON) document and checks it.
    pub fn from_yaml(text: &str) -> Result<Blueprint, CoreError> {
        if text.len() > MAX_BLUEPRINT_BYTES {
            return Err(invalid(format!(
                "a blueprint may be at most {} KiB",
                MAX_BLUEPRINT_BYTES / 1024
            )));
        }
        let bp: Blueprint = yaml_serde::from_str(text).map_err(|e| invalid(format!("blueprint: {e}")))?;
        bp.check()?;
        Ok(bp)
    }

    /// The parameter names the schema declares.
    fn declared(&self) -> Vec<String> {
        self.parameters["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn context(&self) -> String {
        format!("blueprint `{}` v{}", self.name, self.version)
    }

    /// Checks the name, the schema and every parameter reference.
    pub fn check(&self) -> Result<(), CoreError> {
        validate_name("blueprint", &self.name)?;
        let ctx = self.context();
        if self.version == 0 {
            return Err(invalid(format!("{ctx}: `version` starts at 1")));
        }
        if !self.parameters.is_object() {
            return Err(invalid(format!(
                "{ctx}: `parameters` must be a JSON Schema object"
            )));
        }
        if self.parameters.get("type").is_some_and(|t| t != "object") {
            return Err(invalid(format!(
                "{ctx}: `parameters` must describe an object (`type: object`)"
            )));
        }
        if self.parameters.get("properties").is_some_and(|p| !p.is_object()) {
            return Err(invalid(format!("{ctx}: `parameters.properties` must be a map")));
        }
        jsonschema::validator_for(&self.parameters)
            .map_err(|e| invalid(format!("{ctx}: `parameters` is not a valid JSON Schema: {e}")))?;
        if self.resources.is_empty() && self.workloads.is_empty() {
            return Err(invalid(format!("{ctx}: it has no resources and no workloads")));
        }
        let declared = self.declared();
        let mut references = Vec::new();
        let templates = serde_json::to_value((&self.resources, &self.workloads))
            .map_err(|e| invalid(format!("{ctx}: {e}")))?;
        collect_references(&templates, &mut references)?;
        for r in references {
            if !declared.contains(&r) {
                return Err(invalid(format!(
                    "{ctx}: `${{params.{r}}}` refers to a parameter the schema does not declare"
                )));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for n in self.resources.iter().map(|r| &r.name) {
            if !names.insert(("resource", n)) {
                return Err(invalid(format!("{ctx}: resource `{n}` is declared twice")));
            }
        }
        for n in self.workloads.iter().map(|w| &w.name) {
            if !names.insert(("workload", n)) {
                return Err(invalid(format!("{ctx}: workload `{n}` is declared twice")));
            }
        }
        Ok(())
    }

    /// Checks `params` against the schema (after defaults) and renders the
    /// templates. Every error names the parameter.
    pub fn render(&self, params: &Value) -> Result<Rendered, CoreError> {
        let ctx = self.context();
        let mut given = match params {
            Value::Null => Map::new(),
            Value::Object(m) => m.clone(),
            _ => {
                return Err(invalid(format!(
                    "{ctx}: parameters must be a map of name to value"
                )))
            }
        };
        let declared = self.declared();
        for key in given.keys() {
            if !declared.contains(key) {
                return Err(invalid(format!(
                    "{ctx}: unknown parameter `{key}` (it takes: {})",
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                )));
            }
        }
        if let Some(props) = self.parameters["properties"].as_object() {
            for (name, schema) in props {
                if let (false, Some(default)) = (given.contains_key(name), schema.get("default")) {
                    given.insert(name.clone(), default.clone());
                }
            }
        }
        if let Some(required) = self.parameters["required"].as_array() {
            for r in required.iter().filter_map(Value::as_str) {
                if !given.contains_key(r) {
                    return Err(invalid(format!(
                        "{ctx}: missing required parameter `{r}` (set it with --set {r}=VALUE)"
                    )));
                }
            }
        }
        let params = Value::Object(given);
        let validator = jsonschema::validator_for(&self.parameters)
            .map_err(|e| invalid(format!("{ctx}: `parameters` is not a valid JSON Schema: {e}")))?;
        let errors: Vec<String> = validator
            .iter_errors(&params)
            .map(|e| {
                let path = e.instance_path().to_string();
                match path.trim_start_matches('/') {
                    "" => e.to_string(),
                    p => format!("parameter `{}`: {e}", p.replace('/', ".")),
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(invalid(format!("{ctx}: {}", errors.join("; "))));
        }
        let resources = self
            .resources
            .iter()
            .map(|r| {
                let v = serde_json::to_value(r).map_err(|e| invalid(e.to_string()))?;
                substitute(&v, &params)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let workloads = self
            .workloads
            .iter()
            .map(|w| {
                let v = serde_json::to_value(w).map_err(|e| invalid(e.to_string()))?;
                substitute(&v, &params)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rendered {
            params,
            resources,
            workloads,
        })
    }
}

/// Each `${params.NAME}` in the strings of `v`.
fn collect_references(v: &Value, out: &mut Vec<String>) -> Result<(), CoreError> {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find(PARAM_OPEN) {
                let after = &rest[start + PARAM_OPEN.len()..];
                let end = after
                    .find('}')
                    .ok_or_else(|| invalid(format!("unterminated `${{params.…}}` in `{s}`")))?;
                out.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(|x| collect_references(x, out)),
        Value::Object(m) => m.values().try_for_each(|x| collect_references(x, out)),
        _ => Ok(()),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replaces the parameter references in every string of `v`.
fn substitute(v: &Value, params: &Value) -> Result<Value, CoreError> {
    Ok(match v {
        Value::String(s) => {
            let whole = s
                .strip_prefix(PARAM_OPEN)
                .and_then(|r| r.strip_suffix('}'))
                .filter(|name| !name.contains('}'));
            if let Some(name) = whole {
                // An absent optional parameter leaves the field out.
                return Ok(params.get(name).cloned().unwrap_or(Value::Null));
            }
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find(PARAM_OPEN) {
                out.push_str(&rest[..start]);
                let after = &rest[start + PARAM_OPEN.len()..];
                let end = after
                    .find('}')
                    .ok_or_else(|| invalid(format!("unterminated `${{params.…}}` in `{s}`")))?;
                let name = &after[..end];
                let value = params.get(name).filter(|v| !v.is_null()).ok_or_else(|| {
                    invalid(format!("parameter `{name}` has no value, and `{s}` needs one"))
                })?;
                out.push_str(&text_of(value));
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute(x, params))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let x = substitute(x, params)?;
                if !x.is_null() {
                    out.insert(k.clone(), x);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Turns a `--set k=v` value into JSON as the schema of `k` wants it: numbers,
/// booleans and arrays/objects (as JSON) for those types, text otherwise.
pub fn coerce_param(schema: &Value, key: &str, raw: &str) -> Value {
    let ty = &schema["properties"][key]["type"];
    let wants = |t: &str| ty == t || ty.as_array().is_some_and(|a| a.iter().any(|x| x == t));
    if wants("string") {
        return Value::String(raw.to_string());
    }
    if wants("integer") || wants("number") || wants("boolean") || wants("array") || wants("object") {
        if let Ok(v) = serde_json::from_str::<Value>(raw) {
            return v;
        }
    }
    Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BP: &str = r#"
name: web-stack
version: 2
description: a database and a service
parameters:
  type: object
  additionalProperties: false
  required: [service]
  properties:
    service: {type: string, pattern: "^[a-z][-a-z0-9]*$"}
    replicas: {type: integer, minimum: 1, maximum: 10, default: 2}
    command: {type: array, items: {type: string}, default: ["demo"]}
    memory: {type: integer}
resources:
  - name: ${params.service}-db
    kind: postgres
workloads:
  - name: ${params.service}
    command: ${params.command}
    replicas: ${params.replicas}
    memory_limit_mb: ${params.memory}
    port: true
    readiness: {http: /healthz}
    env:
      DATABASE_URL: ${resource.${params.service}-db.url}
      GREETING: "hello ${params.service} x${params.replicas}"
"#;

    #[test]
    fn renders_typed_values_defaults_and_nested_references() {
        let bp = Blueprint::from_yaml(BP).unwrap();
        let r = bp.render(&json!({"service": "payments"})).unwrap();
        assert_eq!(r.params["replicas"], 2);
        assert_eq!(r.resources[0]["name"], "payments-db");
        let w = &r.workloads[0];
        assert_eq!(w["replicas"], 2);
        assert_eq!(w["command"], json!(["demo"]));
        assert!(
            w.get("memory_limit_mb").is_none(),
            "absent optional left out: {w}"
        );
        assert_eq!(w["env"]["DATABASE_URL"], "${resource.payments-db.url}");
        assert_eq!(w["env"]["GREETING"], "hello payments x2");
    }

    #[test]
    fn bad_parameters_are_named() {
        let bp = Blueprint::from_yaml(BP).unwrap();
        let e = bp
            .render(&json!({"service": "p", "colour": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown parameter `colour`"), "{e}");
        let e = bp.render(&json!({})).unwrap_err().to_string();
        assert!(e.contains("missing required parameter `service`"), "{e}");
        let e = bp
            .render(&json!({"service": "p", "replicas": "three"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter `replicas`") && e.contains("integer"), "{e}");
        let e = bp
            .render(&json!({"service": "p", "replicas": 50}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter `replicas`"), "{e}");
    }

    #[test]
    fn bad_documents_are_refused() {
        assert!(Blueprint::from_yaml("name: x\nversion: 1\nextra: 1\n").is_err());
        let undeclared = BP.replace("${params.replicas}\n", "${params.count}\n");
        let e = Blueprint::from_yaml(&undeclared).unwrap_err().to_string();
        assert!(e.contains("params.count"), "{e}");
        let bad_schema = BP.replace("type: integer, minimum: 1", "type: 7, minimum: 1");
        assert!(Blueprint::from_yaml(&bad_schema).is_err());
        assert!(Blueprint::from_yaml(&BP.replace("version: 2", "version: 0")).is_err());
        assert!(Blueprint::from_yaml("name: x\nversion: 1\n").is_err());
    }

    #[test]
    fn set_values_follow_the_schema_type() {
        let bp = Blueprint::from_yaml(BP).unwrap();
        assert_eq!(coerce_param(&bp.parameters, "replicas", "3"), json!(3));
        assert_eq!(coerce_param(&bp.parameters, "service", "3"), json!("3"));
        assert_eq!(
            coerce_param(&bp.parameters, "command", "[\"a\",\"b\"]"),
            json!(["a", "b"])
        );
        assert_eq!(coerce_param(&bp.parameters, "replicas", "x"), json!("x"));
    }
}
