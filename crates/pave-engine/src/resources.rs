//! What the engine does around resource steps: it resolves credentials from
//! the vault at dispatch (they are never stored in a step or sent to a log),
//! and keeps the resource record's lifecycle in step with the step: written
//! `creating` together with the step's start, `ready` or `failed` together
//! with its result.

use pave_agent::protocol::{CommandPayload, Outcome, ResourceRequest};
use pave_core::resource::{secret_name, Resource, ResourceLifecycle};
use pave_core::time::now_ms;
use pave_core::vault::{random_password, Sealed};
use pave_store::WriteOp;
use serde_json::Value;

use crate::engine::Engine;

/// A command ready to send, and what to write with the step's start.
pub(crate) struct Prepared {
    pub payload: CommandPayload,
    pub before: Vec<WriteOp>,
}

/// Why a step could not be prepared: (code, message).
pub(crate) type PrepareError = (String, String);

fn err(code: &str, message: impl Into<String>) -> PrepareError {
    (code.to_string(), message.into())
}

fn field<'a>(spec: &'a Value, key: &str) -> Result<&'a str, PrepareError> {
    spec[key]
        .as_str()
        .ok_or_else(|| err("invalid_step", format!("step spec lacks `{key}`")))
}

/// The resource's password: the stored one, or a new one to store now.
pub(crate) async fn password(
    engine: &Engine,
    env: &str,
    name: &str,
    create: bool,
) -> Result<(String, Option<WriteOp>), PrepareError> {
    let key = crate::secrets::vault_key(engine)?;
    let key = &key;
    let secret = secret_name(name, "password");
    let stored = engine
        .store()
        .get_secret(env, &secret)
        .await
        .map_err(|e| err("store_failed", e.to_string()))?;
    match stored {
        Some(text) => {
            let sealed: Sealed = serde_json::from_str(&text)
                .map_err(|e| err("vault_failed", format!("stored secret `{secret}`: {e}")))?;
            let plain = key
                .open(&sealed)
                .map_err(|e| err("vault_failed", e.to_string()))?;
            let plain =
                String::from_utf8(plain).map_err(|_| err("vault_failed", "a stored secret is not text"))?;
            Ok((plain, None))
        }
        None if create => {
            let plain = random_password(32);
            let sealed = serde_json::to_string(&key.seal(plain.as_bytes())).unwrap_or_default();
            Ok((
                plain,
                Some(WriteOp::PutSecretIfAbsent {
                    env: env.to_string(),
                    name: secret,
                    sealed,
                }),
            ))
        }
        None => Err(err(
            "vault_failed",
            format!("the credential `{secret}` of resource `{name}` is missing from the vault"),
        )),
    }
}

async fn record(engine: &Engine, env: &str, name: &str) -> Result<Option<Resource>, PrepareError> {
    engine
        .store()
        .get_resource(env, name)
        .await
        .map_err(|e| err("store_failed", e.to_string()))
}

fn with_lifecycle(mut r: Resource, lifecycle: ResourceLifecycle, health: Option<String>) -> WriteOp {
    r.lifecycle = lifecycle;
    if health.is_some() {
        r.health = health;
        r.checked_at = Some(now_ms());
    }
    WriteOp::PutResource(Box::new(r))
}

/// Prepares a resource step, or `None` when `kind` is not one.
pub(crate) async fn prepare(
    engine: &Engine,
    action_id: &str,
    kind: &str,
    spec: &Value,
) -> Option<Result<Prepared, PrepareError>> {
    let result = match kind {
        "provision_resource" => prepare_provision(engine, action_id, spec).await,
        "delete_resource" => prepare_delete(engine, spec).await,
        "repair_resource" => prepare_repair(engine, spec).await,
        _ => return None,
    };
    Some(result)
}

async fn prepare_provision(engine: &Engine, action_id: &str, spec: &Value) -> Result<Prepared, PrepareError> {
    let (env, name, kind) = (field(spec, "env")?, field(spec, "name")?, field(spec, "kind")?);
    let existing = record(engine, env, name).await?;
    if let Some(r) = &existing {
        if r.created_by != action_id {
            return Err(err(
                "resource_exists",
                format!(
                    "resource `{name}` already exists in `{env}` (created by action {})",
                    r.created_by
                ),
            ));
        }
    }
    let (password, store_secret) = password(engine, env, name, true).await?;
    let now = now_ms();
    let resource = existing.unwrap_or(Resource {
        env: env.to_string(),
        name: name.to_string(),
        kind: kind.to_string(),
        spec: spec["spec"].clone(),
        lifecycle: ResourceLifecycle::Pending,
        health: None,
        checked_at: None,
        outputs: Default::default(),
        credentials: vec!["password".into()],
        location: None,
        created_by: action_id.to_string(),
        created_at: now,
        updated_at: now,
    });
    let mut before: Vec<WriteOp> = store_secret.into_iter().collect();
    before.push(with_lifecycle(resource, ResourceLifecycle::Creating, None));
    Ok(Prepared {
        payload: CommandPayload::ProvisionResource {
            request: request(env, name, kind, &spec["spec"], password),
        },
        before,
    })
}

fn request(env: &str, name: &str, kind: &str, spec: &Value, password: String) -> ResourceRequest {
    ResourceRequest {
        env: env.to_string(),
        name: name.to_string(),
        kind: kind.to_string(),
        spec: spec.clone(),
        secrets: [("password".to_string(), password)].into(),
    }
}

async fn prepare_delete(engine: &Engine, spec: &Value) -> Result<Prepared, PrepareError> {
    let (env, name) = (field(spec, "env")?, field(spec, "name")?);
    let Some(r) = record(engine, env, name).await? else {
        // Already gone: deleting is done.
        return Ok(Prepared {
            payload: CommandPayload::Noop,
            before: vec![],
        });
    };
    let req = ResourceRequest {
        env: env.to_string(),
        name: name.to_string(),
        kind: r.kind.clone(),
        spec: r.spec.clone(),
        secrets: Default::default(),
    };
    Ok(Prepared {
        payload: CommandPayload::DeleteResource { request: req },
        before: vec![with_lifecycle(r, ResourceLifecycle::Deleting, None)],
    })
}

async fn prepare_repair(engine: &Engine, spec: &Value) -> Result<Prepared, PrepareError> {
    let (env, name) = (field(spec, "env")?, field(spec, "name")?);
    let r = record(engine, env, name).await?.ok_or_else(|| {
        err(
            "not_found",
            format!("resource `{name}` does not exist in `{env}`"),
        )
    })?;
    let (password, _) = password(engine, env, name, false).await?;
    let req = request(env, name, &r.kind, &r.spec, password);
    Ok(Prepared {
        payload: CommandPayload::RepairResource { request: req },
        before: vec![with_lifecycle(r, ResourceLifecycle::Updating, None)],
    })
}

/// What to write with a resource step's result.
pub(crate) async fn after(engine: &Engine, kind: &str, spec: &Value, outcome: &Outcome) -> Vec<WriteOp> {
    if !matches!(kind, "provision_resource" | "delete_resource" | "repair_resource") {
        return vec![];
    }
    let (Some(env), Some(name)) = (spec["env"].as_str(), spec["name"].as_str()) else {
        return vec![];
    };
    let Ok(Some(r)) = engine.store().get_resource(env, name).await else {
        return vec![];
    };
    match (kind, outcome) {
        ("delete_resource", Outcome::Succeeded { .. }) => vec![
            WriteOp::DeleteResource {
                env: env.to_string(),
                name: name.to_string(),
            },
            WriteOp::DeleteSecrets {
                env: env.to_string(),
                prefix: format!("resource/{name}/"),
            },
        ],
        (_, Outcome::Succeeded { output }) => {
            let mut r = r;
            if let Some(outputs) = output
                .get("outputs")
                .and_then(|o| serde_json::from_value(o.clone()).ok())
            {
                r.outputs = outputs;
            }
            r.location = output["location"].as_str().map(str::to_string).or(r.location);
            vec![with_lifecycle(
                r,
                ResourceLifecycle::Ready,
                Some("healthy".into()),
            )]
        }
        (_, Outcome::Failed { message, .. }) => vec![with_lifecycle(
            r,
            ResourceLifecycle::Failed,
            Some(message.clone()),
        )],
        (_, Outcome::Cancelled { .. }) => {
            vec![with_lifecycle(
                r,
                ResourceLifecycle::Failed,
                Some("cancelled while it was being changed".into()),
            )]
        }
    }
}

/// Checks every ready resource once and records health changes (drift).
pub(crate) async fn sweep(engine: &Engine) {
    let Ok(resources) = engine.store().list_resources(None).await else {
        return;
    };
    for r in resources
        .into_iter()
        .filter(|r| r.lifecycle == ResourceLifecycle::Ready)
    {
        let Ok((password, _)) = password(engine, &r.env, &r.name, false).await else {
            continue;
        };
        let check = CommandPayload::CheckResource {
            request: request(&r.env, &r.name, &r.kind, &r.spec, password),
        };
        let outcome = engine.query_agent(&r.env, check).await.ok();
        let health = match outcome {
            Some(Outcome::Succeeded { .. }) => "healthy".to_string(),
            Some(Outcome::Failed { message, .. }) => message,
            _ => continue,
        };
        if r.health.as_deref() != Some(health.as_str()) {
            tracing::warn!(env = %r.env, resource = %r.name, %health, "resource health changed");
        }
        let op = WriteOp::SetResourceHealth {
            env: r.env.clone(),
            name: r.name.clone(),
            health,
        };
        if let Err(e) = engine.writer().write(vec![op]).await {
            tracing::warn!(error = %e, "could not record a resource's health");
        }
    }
}
