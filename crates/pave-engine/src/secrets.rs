//! People's secrets: set and listed per environment, sealed in the vault,
//! resolved only when a step starts (`${secret.NAME}` in a job's or a
//! workload's environment), every use audited, and redacted from whatever a
//! step sends back (log lines, errors, output).

use std::collections::BTreeMap;

use pave_agent::protocol::CommandPayload;
use pave_core::names::validate_name;
use pave_core::vault::Sealed;
use pave_core::AuditDraft;
use pave_store::{SecretMeta, WriteOp};
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::resources::{PrepareError, Prepared};

/// Where people's secrets are kept among an environment's secrets.
pub const PREFIX: &str = "secret/";

/// Where deleted secrets are kept (sealed, redacted like the others).
pub const DELETED_PREFIX: &str = "deleted-secret/";

const OPEN: &str = "${secret.";

/// What replaces a secret value in anything a step sends back.
pub const REDACTED: &str = "***";

fn err(code: &str, message: impl Into<String>) -> PrepareError {
    (code.to_string(), message.into())
}

/// The master key in force.
pub(crate) fn vault_key(engine: &Engine) -> Result<pave_core::vault::MasterKey, PrepareError> {
    engine
        .inner
        .master_key
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| {
            err(
                "vault_unavailable",
                "the vault has no master key; the server cannot hold credentials",
            )
        })
}

fn open(engine: &Engine, name: &str, text: &str) -> Result<String, PrepareError> {
    let sealed: Sealed = serde_json::from_str(text)
        .map_err(|e| err("vault_failed", format!("stored secret `{name}`: {e}")))?;
    let plain = vault_key(engine)?
        .open(&sealed)
        .map_err(|e| err("vault_failed", e.to_string()))?;
    String::from_utf8(plain).map_err(|_| err("vault_failed", format!("secret `{name}` is not text")))
}

impl Engine {
    /// Sets a secret (a new version when it exists).
    pub async fn set_secret(
        &self,
        env: &str,
        name: &str,
        value: &str,
        actor: &str,
    ) -> Result<SecretMeta, EngineError> {
        validate_name("secret", name)?;
        if value.is_empty() || value.len() > 64 * 1024 {
            return Err(EngineError::Invalid(pave_core::CoreError::InvalidInput(
                "a secret value has 1 byte to 64 KiB".into(),
            )));
        }
        if self.store().get_environment(env).await?.is_none() {
            return Err(EngineError::NotFound(format!("environment `{env}`")));
        }
        let key = vault_key(self).map_err(|(_, m)| EngineError::Conflict(m))?;
        let sealed = serde_json::to_string(&key.seal(value.as_bytes()))
            .map_err(|e| EngineError::Conflict(format!("could not seal the secret: {e}")))?;
        let full = format!("{PREFIX}{name}");
        self.inner
            .writer
            .write(vec![
                WriteOp::PutSecret {
                    env: env.to_string(),
                    name: full.clone(),
                    sealed,
                },
                WriteOp::Audit(AuditDraft {
                    actor: actor.to_string(),
                    verb: "secret.set".into(),
                    object: format!("secret/{env}/{name}"),
                    summary: format!("secret {name} set in {env}"),
                    details: json!({}),
                }),
            ])
            .await?;
        self.store()
            .list_secrets(env, &full)
            .await?
            .into_iter()
            .find(|m| m.name == full)
            .ok_or_else(|| EngineError::NotFound(format!("secret `{name}`")))
    }

    /// Removes a secret.
    /// The sealed value moves to the environment's deleted secrets, so that a
    /// workload still referring to it can have it back (`secret.restore`).
    pub async fn delete_secret(&self, env: &str, name: &str, actor: &str) -> Result<(), EngineError> {
        let full = format!("{PREFIX}{name}");
        let sealed = self
            .store()
            .get_secret(env, &full)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("secret `{name}` in `{env}`")))?;
        self.inner
            .writer
            .write(vec![
                WriteOp::PutSecret {
                    env: env.to_string(),
                    name: format!("{DELETED_PREFIX}{name}"),
                    sealed,
                },
                WriteOp::DeleteSecret {
                    env: env.to_string(),
                    name: full,
                },
                WriteOp::Audit(AuditDraft {
                    actor: actor.to_string(),
                    verb: "secret.delete".into(),
                    object: format!("secret/{env}/{name}"),
                    summary: format!("secret {name} deleted from {env}"),
                    details: json!({}),
                }),
            ])
            .await?;
        Ok(())
    }

    /// Every secret value of an environment (people's and resources'), to redact.
    pub async fn secret_values(&self, env: &str) -> Vec<String> {
        let Ok(all) = self.store().list_secrets(env, "").await else {
            return vec![];
        };
        let mut values = Vec::new();
        for m in all {
            if let Ok(Some(text)) = self.store().get_secret(env, &m.name).await {
                if let Ok(v) = open(self, &m.name, &text) {
                    values.push(v);
                }
            }
        }
        // Longest first, so that a value containing another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values
    }
}

/// Replaces every `${secret.NAME}` in `value`; records the names used.
pub(crate) async fn resolve(
    engine: &Engine,
    env: &str,
    value: &str,
    used: &mut Vec<String>,
) -> Result<String, PrepareError> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| err("invalid_spec", "unterminated `${secret.…}`"))?;
        let name = &after[..end];
        let full = format!("{PREFIX}{name}");
        let text = engine
            .store()
            .get_secret(env, &full)
            .await
            .map_err(|e| err("store_failed", e.to_string()))?
            .ok_or_else(|| err("not_found", format!("secret `{name}` does not exist in `{env}`")))?;
        out.push_str(&open(engine, name, &text)?);
        if !used.iter().any(|u| u == name) {
            used.push(name.to_string());
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One audit event per secret a step uses.
pub(crate) fn uses(env: &str, action_id: &str, step: &str, names: &[String]) -> Vec<WriteOp> {
    names
        .iter()
        .map(|n| {
            WriteOp::Audit(AuditDraft {
                actor: "system".into(),
                verb: "secret.use".into(),
                object: format!("secret/{env}/{n}"),
                summary: format!("secret {n} injected into {step} of action {action_id}"),
                details: json!({ "action": action_id, "step": step }),
            })
        })
        .collect()
}

/// Prepares a job step: its `${secret.…}` values resolved into the command's
/// environment only (the stored spec keeps the references).
pub(crate) async fn prepare_job(
    engine: &Engine,
    action_id: &str,
    env: &str,
    kind: &str,
    spec: &Value,
) -> Option<Result<Prepared, PrepareError>> {
    if kind != "run_job" {
        return None;
    }
    let job: pave_core::JobSpec = match serde_json::from_value(spec.clone()) {
        Ok(j) => j,
        Err(e) => {
            return Some(Err(err(
                "invalid_step",
                format!("stored job spec is invalid: {e}"),
            )))
        }
    };
    let mut used = Vec::new();
    let mut extra_env = BTreeMap::new();
    for (k, v) in &job.env {
        if v.contains(OPEN) {
            match resolve(engine, env, v, &mut used).await {
                Ok(resolved) => {
                    extra_env.insert(k.clone(), resolved);
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
    Some(Ok(Prepared {
        payload: CommandPayload::RunJob { spec: job, extra_env },
        before: uses(env, action_id, "a job", &used),
    }))
}

/// `text` with every value in `secrets` replaced.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// `v` with every secret value replaced in its strings.
pub(crate) fn redact_value(v: &Value, secrets: &[String]) -> Value {
    match v {
        Value::String(s) => Value::String(redact(s, secrets)),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(x, secrets)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), redact_value(x, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Engine {
    /// Replaces the master key: every secret's data key is wrapped by a new
    /// key (the values' ciphertexts stay), in one transaction. The new key is
    /// written beside the old one first (`master.key.next`) and takes its
    /// place only once the store has committed, so a crash at any point
    /// leaves a key that opens every secret (see [`recover_key_file`]).
    pub async fn rotate_master_key(&self, actor: &str) -> Result<usize, EngineError> {
        let _one = self.inner.rotation.lock().await;
        let path =
            self.inner.config.master_key_path.clone().ok_or_else(|| {
                EngineError::Conflict("this server keeps no master key file to rotate".into())
            })?;
        let old = vault_key(self).map_err(|(_, m)| EngineError::Conflict(m))?;
        let new_hex = pave_core::vault::MasterKey::generate_hex();
        let new = pave_core::vault::MasterKey::from_hex(&new_hex)
            .map_err(|e| EngineError::Conflict(e.to_string()))?;
        let next = next_key_path(&path);
        write_key_file(&next, &new_hex)
            .map_err(|e| EngineError::Conflict(format!("{}: {e}", next.display())))?;
        let ops = self.rewrap_all(&old, &new).await?;
        let n = ops.len();
        let mut ops = ops;
        ops.push(WriteOp::Audit(AuditDraft {
            actor: actor.to_string(),
            verb: "vault.rotate".into(),
            object: "vault/master-key".into(),
            summary: format!("master key rotated; {n} secret(s) re-wrapped"),
            details: json!({ "secrets": n }),
        }));
        self.inner.writer.write(ops).await?;
        std::fs::rename(&next, &path)
            .map_err(|e| EngineError::Conflict(format!("{}: {e}", path.display())))?;
        *self.inner.master_key.write().unwrap_or_else(|p| p.into_inner()) = Some(new.clone());
        // A secret sealed with the old key while this ran (a provision that
        // started before) is moved too.
        let late = self.rewrap_all(&old, &new).await?;
        if !late.is_empty() {
            self.inner.writer.write(late).await?;
        }
        Ok(n)
    }

    /// Re-seal ops for every secret `old` opens.
    async fn rewrap_all(
        &self,
        old: &pave_core::vault::MasterKey,
        new: &pave_core::vault::MasterKey,
    ) -> Result<Vec<WriteOp>, EngineError> {
        let mut ops = Vec::new();
        for scope in &vault_scopes(self.store()).await? {
            for m in self.store().list_secrets(scope, "").await? {
                let Some(text) = self.store().get_secret(scope, &m.name).await? else {
                    continue;
                };
                let Ok(sealed) = serde_json::from_str::<Sealed>(&text) else {
                    continue;
                };
                if let Ok(moved) = old.rewrap(&sealed, new) {
                    ops.push(WriteOp::ResealSecret {
                        env: scope.clone(),
                        name: m.name.clone(),
                        sealed: serde_json::to_string(&moved).unwrap_or_default(),
                    });
                }
            }
        }
        Ok(ops)
    }
}

/// Every scope secrets are sealed in: each environment, and the credentials
/// of cluster targets.
async fn vault_scopes(store: &pave_store::DynStore) -> Result<Vec<String>, EngineError> {
    let mut scopes: Vec<String> = store
        .list_environments()
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    scopes.push(crate::clusters::CREDENTIALS_SCOPE.to_string());
    Ok(scopes)
}

fn next_key_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".next");
    std::path::PathBuf::from(p)
}

fn write_key_file(path: &std::path::Path, hex: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(hex.as_bytes())?;
    f.sync_all()
}

/// After a crash during a rotation: `master.key.next` is the key in force if
/// it opens the store's secrets (the rotation committed), else it is dropped.
/// Returns the key file's contents to use.
pub async fn recover_key_file(
    store: &pave_store::DynStore,
    path: &std::path::Path,
) -> Result<Option<String>, EngineError> {
    let next = next_key_path(path);
    let Ok(next_hex) = std::fs::read_to_string(&next) else {
        return Ok(None);
    };
    let next_key = pave_core::vault::MasterKey::from_hex(next_hex.trim()).ok();
    let mut committed = false;
    'envs: for scope in &vault_scopes(store).await? {
        for m in store.list_secrets(scope, "").await? {
            if let (Some(text), Some(key)) = (store.get_secret(scope, &m.name).await?, &next_key) {
                if let Ok(sealed) = serde_json::from_str::<Sealed>(&text) {
                    committed = key.open(&sealed).is_ok();
                    break 'envs;
                }
            }
        }
    }
    if committed {
        std::fs::rename(&next, path)
            .map_err(|e| EngineError::Conflict(format!("{}: {e}", path.display())))?;
        Ok(Some(next_hex.trim().to_string()))
    } else {
        let _ = std::fs::remove_file(&next);
        Ok(None)
    }
}

/// Prepares `restore_secret`: the deleted value is put back before the
/// (no-op) command, in the same write as its audit event.
pub(crate) async fn prepare_restore(
    engine: &Engine,
    kind: &str,
    spec: &Value,
) -> Option<Result<Prepared, PrepareError>> {
    if kind != "restore_secret" {
        return None;
    }
    let env = spec["env"].as_str().unwrap_or_default();
    let name = spec["name"].as_str().unwrap_or_default();
    let store = engine.store();
    let current = store.get_secret(env, &format!("{PREFIX}{name}")).await;
    let deleted = store.get_secret(env, &format!("{DELETED_PREFIX}{name}")).await;
    Some(match (current, deleted) {
        (Err(e), _) | (_, Err(e)) => Err(err("store_failed", e.to_string())),
        // Already back (a retried step, or set again by a person): nothing to do.
        (Ok(Some(_)), _) => Ok(Prepared {
            payload: CommandPayload::Noop,
            before: vec![],
        }),
        (Ok(None), Ok(None)) => Err(err(
            "not_found",
            format!("secret `{name}` was never deleted from `{env}` (or is gone for good)"),
        )),
        (Ok(None), Ok(Some(sealed))) => Ok(Prepared {
            payload: CommandPayload::Noop,
            before: vec![
                WriteOp::PutSecret {
                    env: env.to_string(),
                    name: format!("{PREFIX}{name}"),
                    sealed,
                },
                WriteOp::DeleteSecret {
                    env: env.to_string(),
                    name: format!("{DELETED_PREFIX}{name}"),
                },
                WriteOp::Audit(AuditDraft {
                    actor: "system".into(),
                    verb: "secret.restore".into(),
                    object: format!("secret/{env}/{name}"),
                    summary: format!("secret {name} restored in {env}"),
                    details: json!({}),
                }),
            ],
        }),
    })
}
