//! The policy set in force: the built-in pack and files, plus modules applied
//! through the API (kept in the store). A module that does not compile is
//! refused with its file, line and message, and the set in force stays.

use std::sync::Arc;

use pave_core::AuditDraft;
use pave_policy::{Module, PolicySet};
use pave_store::WriteOp;
use serde_json::{json, Value};

use crate::engine::{Engine, Submission};
use crate::error::EngineError;
use crate::policy::{input_document, Decision};

/// Where modules applied through the API are named from.
const API_PREFIX: &str = "api/";

fn invalid(message: String) -> EngineError {
    EngineError::Invalid(pave_core::CoreError::InvalidInput(message))
}

impl Engine {
    /// The modules in force: files first, then those applied through the API.
    pub async fn policy_modules(&self) -> Result<Vec<Module>, EngineError> {
        let mut all = self.inner.config.policy_files.clone();
        for (name, source) in self.store().list_policies().await? {
            all.push(Module {
                name: format!("{API_PREFIX}{name}"),
                source,
            });
        }
        Ok(all)
    }

    /// Compiles the modules in force and puts them in force.
    pub async fn load_policies(&self) -> Result<PolicySet, EngineError> {
        let set = PolicySet::new(self.policy_modules().await?).map_err(|e| invalid(e.to_string()))?;
        self.set_policy(Arc::new(set.clone()));
        Ok(set)
    }

    /// Adds or replaces a module; refused (and nothing changes) unless the
    /// whole set compiles with it.
    pub async fn apply_policy(&self, name: &str, source: &str, actor: &str) -> Result<(), EngineError> {
        pave_core::names::validate_name("policy", name)?;
        let full = format!("{API_PREFIX}{name}");
        let mut modules: Vec<Module> = self
            .policy_modules()
            .await?
            .into_iter()
            .filter(|m| m.name != full)
            .collect();
        modules.push(Module {
            name: full,
            source: source.to_string(),
        });
        let set = PolicySet::new(modules).map_err(|e| invalid(e.to_string()))?;
        self.inner
            .writer
            .write(vec![
                WriteOp::PutPolicy {
                    name: name.to_string(),
                    source: source.to_string(),
                    by: actor.to_string(),
                },
                WriteOp::Audit(AuditDraft {
                    actor: actor.to_string(),
                    verb: "policy.apply".into(),
                    object: format!("policy/{name}"),
                    summary: format!("policy {name} applied"),
                    details: json!({ "source": source }),
                }),
            ])
            .await?;
        self.set_policy(Arc::new(set));
        Ok(())
    }

    /// Removes a module applied through the API.
    pub async fn delete_policy(&self, name: &str, actor: &str) -> Result<(), EngineError> {
        let full = format!("{API_PREFIX}{name}");
        let modules: Vec<Module> = self
            .policy_modules()
            .await?
            .into_iter()
            .filter(|m| m.name != full)
            .collect();
        let set = PolicySet::new(modules).map_err(|e| invalid(e.to_string()))?;
        self.inner
            .writer
            .write(vec![
                WriteOp::DeletePolicy {
                    name: name.to_string(),
                },
                WriteOp::Audit(AuditDraft {
                    actor: actor.to_string(),
                    verb: "policy.delete".into(),
                    object: format!("policy/{name}"),
                    summary: format!("policy {name} removed"),
                    details: json!({}),
                }),
            ])
            .await?;
        self.set_policy(Arc::new(set));
        Ok(())
    }

    /// What policy would decide on a request, and the input it saw; nothing
    /// is stored or run.
    pub async fn evaluate_request(&self, sub: Submission) -> Result<(Decision, Value), EngineError> {
        let env = self
            .store()
            .get_environment(&sub.env)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("environment `{}`", sub.env)))?;
        let needs = pave_core::rbac::role_to_request(&sub.kind);
        if !sub.principal.has(needs, &env.name) {
            let why = pave_core::rbac::forbidden(
                &sub.principal,
                needs,
                Some(&env.name),
                &format!("request {}", sub.kind),
            );
            return Ok((
                Decision::Deny {
                    reasons: vec![why.to_string()],
                },
                Value::Null,
            ));
        }
        let planned = if pave_core::plan::EXPANDED_KINDS.contains(&sub.kind.as_str()) {
            self.plan_expanded(&sub.kind, &env, sub.input).await?
        } else {
            pave_core::plan::plan(&sub.kind, "eval", &env.name, sub.input)?
        };
        let doc = input_document(&sub.principal, &sub.kind, &env, &planned, None);
        Ok((self.policy().evaluate(&doc), doc))
    }
}
