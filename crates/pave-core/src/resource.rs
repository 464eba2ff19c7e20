//! Resources: things provisioned outside a workload (a database, a cache),
//! with a lifecycle, outputs anyone may read, and credentials kept in the vault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CoreError;
use crate::names::validate_name;

/// Resource kinds with a provider today.
pub const KINDS: &[&str] = &["postgres", "redis"];

macro_rules! lifecycle {
    ($($v:ident => $t:literal),+) => {
        /// Where a resource is: `pending → creating → ready | failed → updating → deleting → deleted`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum ResourceLifecycle { $($v),+ }
        impl ResourceLifecycle {
            /// The stored name.
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $t),+ } }
            /// Parses the stored name.
            pub fn parse(s: &str) -> Option<Self> { match s { $($t => Some(Self::$v),)+ _ => None } }
        }
        impl std::fmt::Display for ResourceLifecycle {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}
lifecycle!(Pending => "pending", Creating => "creating", Ready => "ready", Failed => "failed",
    Updating => "updating", Deleting => "deleting", Deleted => "deleted");

/// A provisioned resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resource {
    /// Environment it belongs to.
    pub env: String,
    /// Name, unique in the environment.
    pub name: String,
    /// `postgres` or `redis`.
    pub kind: String,
    /// What was asked for (for postgres: database and user), validated, with defaults.
    pub spec: Value,
    /// Lifecycle state.
    pub lifecycle: ResourceLifecycle,
    /// Last health check: `healthy`, or what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Milliseconds since the epoch of the last health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<i64>,
    /// Non-secret facts (host, port, database, user).
    pub outputs: BTreeMap<String, Value>,
    /// Names of the resource's secrets in the vault (`password`); never their values.
    pub credentials: Vec<String>,
    /// Where the provider keeps the resource's files on its host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The action that created it.
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

/// The vault name of a resource's secret: scoped to the environment.
pub fn secret_name(resource: &str, key: &str) -> String {
    format!("resource/{resource}/{key}")
}

/// Validates a provision request's kind, name and spec; returns the spec with defaults.
pub fn validate(kind: &str, name: &str, spec: &Value) -> Result<Value, CoreError> {
    validate_name("resource", name)?;
    if !KINDS.contains(&kind) {
        return Err(CoreError::InvalidInput(format!(
            "unknown resource kind `{kind}` (one of: {})",
            KINDS.join(", ")
        )));
    }
    let obj = match spec {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err(CoreError::InvalidInput("resource spec must be an object".into())),
    };
    let allowed: &[&str] = match kind {
        "postgres" => &["database", "user", "version"],
        _ => &["version"],
    };
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(CoreError::InvalidInput(format!(
                "unknown field `{key}` in a {kind} spec{}",
                if allowed.is_empty() {
                    String::new()
                } else {
                    format!(" (allowed: {})", allowed.join(", "))
                }
            )));
        }
    }
    let mut out = obj;
    if let Some(v) = out.get("version") {
        // An image tag on Kubernetes (`postgres:16`, `redis:7.2`).
        let ok = v.as_str().is_some_and(|s| {
            !s.is_empty()
                && s.len() <= 32
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
        if !ok {
            return Err(CoreError::InvalidInput(format!(
                "{kind} `version` must be an image tag such as \"16\" or \"7.2\""
            )));
        }
    }
    if kind == "postgres" {
        for (field, default) in [
            ("database", name.replace('-', "_")),
            ("user", name.replace('-', "_")),
        ] {
            let v = out.get(field).cloned().unwrap_or(Value::String(default));
            let s = v
                .as_str()
                .filter(|s| {
                    !s.is_empty()
                        && s.len() <= 63
                        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                        && s.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
                .ok_or_else(|| {
                    CoreError::InvalidInput(format!("postgres `{field}` must be a lower-case SQL identifier"))
                })?;
            out.insert(field.to_string(), Value::String(s.to_string()));
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn postgres_specs_get_safe_identifiers() {
        let s = validate("postgres", "payments-db", &Value::Null).unwrap();
        assert_eq!(s, json!({"database": "payments_db", "user": "payments_db"}));
        assert!(validate("postgres", "db", &json!({"database": "x; DROP"})).is_err());
        assert!(validate("postgres", "db", &json!({"size": 3}))
            .unwrap_err()
            .to_string()
            .contains("size"));
        assert!(validate("mysql", "db", &Value::Null).is_err());
        assert!(validate("redis", "cache", &json!({})).is_ok());
        assert!(validate("redis", "cache", &json!({"version": "7.2"})).is_ok());
        assert!(validate("postgres", "db", &json!({"version": "16; rm"})).is_err());
    }
}
