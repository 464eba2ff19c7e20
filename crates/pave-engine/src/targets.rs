//! Targets and their remote agents: adding a target with a single-use
//! enrollment token, redeeming it for a credential, revoking, removing.
//! Every one of these is an audit event.

use std::collections::BTreeMap;

use pave_core::rbac::{Principal, Role};
use pave_core::time::now_ms;
use pave_core::AuditDraft;
use pave_store::{AgentCredentialRecord, TargetRecord, WriteOp};
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::agents::AgentStatus;
use crate::engine::Engine;
use crate::error::EngineError;

/// How an enrollment token starts (so that it is recognised in a leak).
const ENROLL_PREFIX: &str = "pave_enroll_";
/// How an agent credential starts: `pave_agent_<id>_<secret>`.
const CREDENTIAL_PREFIX: &str = "pave_agent_";

fn sha(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// A target as `pave targets get` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    /// The stored target.
    #[serde(flatten)]
    pub target: TargetRecord,
    /// The agent now (remote agents; the embedded one is always connected).
    pub agent_status: Option<AgentStatus>,
    /// Credentials issued to its agents.
    pub credentials: Vec<AgentCredentialRecord>,
    /// Environments bound to it.
    pub environments: Vec<String>,
}

pub(crate) fn admin(who: &Principal, what: &str) -> Result<(), EngineError> {
    if who.global_role().is_some_and(|r| r >= Role::Admin) {
        Ok(())
    } else {
        Err(pave_core::rbac::forbidden(who, Role::Admin, None, what).into())
    }
}

fn audit(actor: &str, verb: &str, target: &str, summary: String, details: Value) -> WriteOp {
    WriteOp::Audit(AuditDraft {
        actor: actor.to_string(),
        verb: verb.into(),
        object: format!("target/{target}"),
        summary,
        details,
    })
}

impl Engine {
    /// Adds a target; one served by a remote agent comes with its first
    /// enrollment token (shown once, valid for `ttl`).
    pub async fn add_target(
        &self,
        name: &str,
        kind: &str,
        agent: bool,
        labels: BTreeMap<String, String>,
        ttl: std::time::Duration,
        who: &Principal,
    ) -> Result<(TargetRecord, Option<String>), EngineError> {
        admin(who, "add a target")?;
        pave_core::names::validate_name("target", name)?;
        if kind != "local" && kind != crate::clusters::KUBERNETES {
            return Err(EngineError::Invalid(pave_core::CoreError::InvalidInput(format!(
                "target kind `{kind}` is not supported (supported: local, kubernetes)"
            ))));
        }
        if !agent {
            return Err(EngineError::Invalid(pave_core::CoreError::InvalidInput(
                if kind == "local" {
                    "a local target other than `local` is served by a remote agent: add --agent".into()
                } else {
                    "a Kubernetes target is reached with a kubeconfig (--kubeconfig FILE) or served by \
                 an agent in the cluster (--agent)"
                        .into()
                },
            )));
        }
        let record = TargetRecord {
            name: name.to_string(),
            kind: kind.to_string(),
            agent,
            labels,
            created_at: now_ms(),
        };
        let token = format!("{ENROLL_PREFIX}{}", random_secret());
        self.inner
            .writer
            .write(vec![
                WriteOp::InsertTarget(record.clone()),
                WriteOp::InsertEnrollment {
                    target: name.to_string(),
                    token_hash: sha(&token),
                    created_at: record.created_at,
                    expires_at: record.created_at + ttl.as_millis() as i64,
                },
                audit(
                    &who.user,
                    "target.add",
                    name,
                    format!("target {name} ({kind}, remote agent) added; enrollment token issued"),
                    json!({ "kind": kind, "agent": agent, "labels": record.labels, "enrollment_ttl_secs": ttl.as_secs() }),
                ),
            ])
            .await?;
        Ok((record, Some(token)))
    }

    /// A new single-use enrollment token for a target's agent.
    pub async fn new_enrollment(
        &self,
        name: &str,
        ttl: std::time::Duration,
        who: &Principal,
    ) -> Result<String, EngineError> {
        admin(who, "enroll an agent")?;
        let t = self.require_remote(name).await?;
        let token = format!("{ENROLL_PREFIX}{}", random_secret());
        let now = now_ms();
        self.inner
            .writer
            .write(vec![
                WriteOp::InsertEnrollment {
                    target: t.name.clone(),
                    token_hash: sha(&token),
                    created_at: now,
                    expires_at: now + ttl.as_millis() as i64,
                },
                audit(
                    &who.user,
                    "agent.enrollment",
                    name,
                    format!("enrollment token issued for target {name}"),
                    json!({ "ttl_secs": ttl.as_secs() }),
                ),
            ])
            .await?;
        Ok(token)
    }

    async fn require_remote(&self, name: &str) -> Result<TargetRecord, EngineError> {
        match self.store().get_target(name).await? {
            Some(t) if t.agent => Ok(t),
            Some(_) => Err(EngineError::Conflict(format!(
                "target `{name}` is served by the embedded agent, not a remote one"
            ))),
            None => Err(EngineError::NotFound(format!("target `{name}`"))),
        }
    }

    /// Exchanges an enrollment token for a credential (the token is spent).
    pub async fn redeem_enrollment(&self, token: &str, info: Value) -> Result<(String, String), EngineError> {
        let id = pave_core::ids::new_id();
        let secret = random_secret();
        let redeemed = self
            .inner
            .writer
            .write(vec![WriteOp::RedeemEnrollment {
                token_hash: sha(token),
                at: now_ms(),
                credential_id: id.clone(),
                secret_hash: sha(&secret),
                info: info.clone(),
            }])
            .await;
        match redeemed {
            Ok(_) => {}
            Err(pave_store::StoreError::Precondition { current, .. }) => {
                return Err(EngineError::Conflict(format!(
                    "this enrollment token is {current}"
                )))
            }
            Err(pave_store::StoreError::NotFound(_)) => {
                return Err(EngineError::NotFound("this enrollment token is not known".into()))
            }
            Err(e) => return Err(e.into()),
        }
        let cred = self
            .store()
            .find_agent_credential(&sha(&secret))
            .await?
            .ok_or_else(|| EngineError::NotFound("the credential just issued".into()))?;
        self.inner
            .writer
            .write(vec![audit(
                "system",
                "agent.enroll",
                &cred.target,
                format!("an agent enrolled for target {} (credential {id})", cred.target),
                json!({ "credential": id, "peer": info }),
            )])
            .await?;
        Ok((cred.target, format!("{CREDENTIAL_PREFIX}{id}_{secret}")))
    }

    /// The target and credential id an agent credential stands for, if it
    /// is valid and not revoked.
    pub async fn authenticate_agent(&self, credential: &str) -> Result<(String, String), String> {
        let rest = credential
            .strip_prefix(CREDENTIAL_PREFIX)
            .ok_or_else(|| "this is not an agent credential".to_string())?;
        let (id, secret) = rest
            .rsplit_once('_')
            .ok_or_else(|| "this is not an agent credential".to_string())?;
        let found = self
            .store()
            .find_agent_credential(&sha(secret))
            .await
            .map_err(|e| e.to_string())?;
        match found {
            Some(c) if c.id == id && c.revoked_at.is_none() => Ok((c.target, c.id)),
            Some(c) if c.id == id => Err(format!(
                "the credential of this agent of target {} was revoked",
                c.target
            )),
            _ => Err("unknown agent credential".into()),
        }
    }

    /// Revokes every credential of a target's agents and drops the connection.
    pub async fn revoke_agent(&self, name: &str, who: &Principal) -> Result<(), EngineError> {
        admin(who, "revoke an agent")?;
        self.require_remote(name).await?;
        self.inner
            .writer
            .write(vec![
                WriteOp::RevokeAgentCredentials {
                    target: name.to_string(),
                    at: now_ms(),
                },
                audit(
                    &who.user,
                    "agent.revoke",
                    name,
                    format!("the agents of target {name} were revoked"),
                    json!({}),
                ),
            ])
            .await?;
        if let Some(h) = self
            .inner
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            h.disconnect();
        }
        Ok(())
    }

    /// Removes a target no environment uses.
    pub async fn remove_target(&self, name: &str, who: &Principal) -> Result<(), EngineError> {
        admin(who, "remove a target")?;
        if name == "local" {
            return Err(EngineError::Conflict("the `local` target is built in".into()));
        }
        let mut ops = vec![
            WriteOp::DeleteTarget(name.to_string()),
            audit(
                &who.user,
                "target.remove",
                name,
                format!("target {name} removed"),
                json!({}),
            ),
        ];
        // A cluster reached directly: its credentials leave the vault with it.
        if let Some(t) = self.store().get_target(name).await? {
            if t.kind == crate::clusters::KUBERNETES && !t.agent {
                ops.push(crate::clusters::forget_credentials(name));
            }
        }
        self.inner.writer.write(ops).await?;
        self.drop_hub(name);
        Ok(())
    }

    /// One target with its agent's state.
    pub async fn target_view(&self, name: &str) -> Result<TargetView, EngineError> {
        let target = self
            .store()
            .get_target(name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("target `{name}`")))?;
        let agent_status = match self
            .inner
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            Some(h) => Some(h.status()),
            None if target.agent => Some(AgentStatus::default()),
            None => None,
        };
        let credentials = if target.agent {
            self.store().list_agent_credentials(name).await?
        } else {
            vec![]
        };
        let environments = self
            .store()
            .list_environments()
            .await?
            .into_iter()
            .filter(|e| e.target == name)
            .map(|e| e.name)
            .collect();
        Ok(TargetView {
            target,
            agent_status,
            credentials,
            environments,
        })
    }

    /// Writes an agent connection event (audit + the credential's last sight).
    pub(crate) async fn agent_seen(
        &self,
        target: &str,
        credential: &str,
        verb: &str,
        summary: String,
        info: Option<Value>,
    ) {
        let ops = vec![
            WriteOp::TouchAgentCredential {
                id: credential.to_string(),
                at: now_ms(),
                info: info.clone(),
            },
            audit(
                "system",
                verb,
                target,
                summary,
                json!({ "credential": credential, "agent": info }),
            ),
        ];
        if let Err(e) = self.inner.writer.write(ops).await {
            tracing::warn!(error = %e, "could not record an agent connection");
        }
    }
}
