//! Action kinds planned from the engine's own state: `blueprint.apply` (from
//! the blueprint catalog), `env.clone` and `env.delete` (from what the
//! environments hold), and the blueprint catalog itself.

use pave_agent::protocol::{CommandPayload, Outcome};
use pave_core::blueprint::{Blueprint, BlueprintEntry};
use pave_core::plan::{self, CloneResource, CloneWorkload, Plan};
use pave_core::resource::ResourceLifecycle;
use pave_core::time::now_ms;
use pave_core::{AuditDraft, CoreError};
use pave_store::{BlueprintRecord, Environment, WriteOp};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::resources::{PrepareError, Prepared};

/// The environment every server has; it cannot be deleted.
pub const BUILTIN_ENVIRONMENT: &str = "local";

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(CoreError::InvalidInput(message.into()))
}

/// Input of `blueprint.apply`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyInput {
    blueprint: String,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    params: Value,
}

/// Input of `env.clone` (the action runs in the new environment).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneInput {
    source: String,
}

fn parse<T: serde::de::DeserializeOwned>(kind: &str, input: Value) -> Result<T, EngineError> {
    serde_json::from_value(input).map_err(|e| invalid(format!("{kind}: {e}")))
}

impl Engine {
    /// Every blueprint version: built-in, from files, and registered through
    /// the API; by name, then version.
    pub async fn blueprints(&self) -> Result<Vec<BlueprintEntry>, EngineError> {
        let mut all = self.inner.config.blueprints.clone();
        for r in self.inner.store.list_blueprints().await? {
            let blueprint: Blueprint = serde_json::from_str(&r.document).map_err(|e| {
                EngineError::Store(pave_store::StoreError::Corrupt(format!(
                    "blueprint `{}` v{}: {e}",
                    r.name, r.version
                )))
            })?;
            all.push(BlueprintEntry {
                blueprint,
                source: "api".into(),
            });
        }
        all.sort_by(|a, b| {
            (&a.blueprint.name, a.blueprint.version).cmp(&(&b.blueprint.name, b.blueprint.version))
        });
        Ok(all)
    }

    /// One blueprint: `version`, or its newest.
    pub async fn blueprint(&self, name: &str, version: Option<u32>) -> Result<BlueprintEntry, EngineError> {
        let all: Vec<BlueprintEntry> = self
            .blueprints()
            .await?
            .into_iter()
            .filter(|e| e.blueprint.name == name)
            .collect();
        if all.is_empty() {
            return Err(EngineError::NotFound(format!("blueprint `{name}`")));
        }
        match version {
            None => all.into_iter().next_back(),
            Some(v) => all.into_iter().find(|e| e.blueprint.version == v),
        }
        .ok_or_else(|| EngineError::NotFound(format!("blueprint `{name}` version {}", version.unwrap_or(0))))
    }

    /// Registers a new blueprint version (versions are immutable).
    pub async fn register_blueprint(
        &self,
        bp: Blueprint,
        actor: &str,
    ) -> Result<BlueprintEntry, EngineError> {
        bp.check()?;
        if self
            .blueprints()
            .await?
            .iter()
            .any(|e| e.blueprint.name == bp.name && e.blueprint.version == bp.version)
        {
            return Err(EngineError::Conflict(format!(
                "blueprint `{}` version {} exists already; versions are immutable, register version {}",
                bp.name,
                bp.version,
                bp.version + 1
            )));
        }
        let document = serde_json::to_string(&bp).map_err(|e| invalid(e.to_string()))?;
        let record = BlueprintRecord {
            name: bp.name.clone(),
            version: i64::from(bp.version),
            document,
            created_by: actor.to_string(),
            created_at: now_ms(),
        };
        self.inner
            .writer
            .write(vec![
                WriteOp::InsertBlueprint(record),
                WriteOp::Audit(AuditDraft {
                    actor: actor.to_string(),
                    verb: "blueprint.create".into(),
                    object: format!("blueprint/{}", bp.name),
                    summary: format!("blueprint {} v{} registered", bp.name, bp.version),
                    details: json!({ "version": bp.version }),
                }),
            ])
            .await?;
        Ok(BlueprintEntry {
            blueprint: bp,
            source: "api".into(),
        })
    }

    /// Plans a kind of [`plan::EXPANDED_KINDS`] in `env`.
    pub(crate) async fn plan_expanded(
        &self,
        kind: &str,
        env: &Environment,
        input: Value,
    ) -> Result<Plan, EngineError> {
        let store = &self.inner.store;
        match kind {
            "blueprint.apply" => {
                let a: ApplyInput = parse(kind, input)?;
                let entry = self.blueprint(&a.blueprint, a.version).await?;
                let bp = &entry.blueprint;
                let rendered = bp.render(&a.params)?;
                // Applying a blueprint again keeps the resources it made; one
                // of the same name but another kind or spec is in the way.
                let mut existing = Vec::new();
                for r in &rendered.resources {
                    let name = r["name"].as_str().unwrap_or_default();
                    let kind = r["kind"].as_str().unwrap_or_default();
                    let Some(have) = store.get_resource(&env.name, name).await? else {
                        continue;
                    };
                    let want = pave_core::resource::validate(kind, name, &r["spec"])?;
                    if have.kind != kind || have.spec != want || have.lifecycle == ResourceLifecycle::Deleting
                    {
                        return Err(EngineError::Conflict(format!(
                            "resource `{name}` exists in `{}` as a {} with another spec or state; \
                             delete it or apply the blueprint to another environment",
                            env.name, have.kind
                        )));
                    }
                    if have.lifecycle != ResourceLifecycle::Ready {
                        return Err(EngineError::Conflict(format!(
                            "resource `{name}` exists in `{}` but is {}; repair or delete it first \
                             (pave resources repair|delete {name} --env {})",
                            env.name, have.lifecycle, env.name
                        )));
                    }
                    existing.push(name.to_string());
                }
                Ok(plan::plan_blueprint(&env.name, bp, &rendered, &existing)?)
            }
            "env.clone" => {
                let c: CloneInput = parse(kind, input)?;
                if c.source == env.name {
                    return Err(invalid("an environment cannot be cloned into itself"));
                }
                if store.get_environment(&c.source).await?.is_none() {
                    return Err(EngineError::NotFound(format!("environment `{}`", c.source)));
                }
                let mut resources = Vec::new();
                for r in store.list_resources(Some(&c.source)).await? {
                    if matches!(
                        r.lifecycle,
                        ResourceLifecycle::Deleting | ResourceLifecycle::Deleted
                    ) {
                        continue;
                    }
                    if store.get_resource(&env.name, &r.name).await?.is_some() {
                        return Err(EngineError::Conflict(format!(
                            "resource `{}` exists in `{}` already",
                            r.name, env.name
                        )));
                    }
                    resources.push(CloneResource {
                        name: r.name,
                        kind: r.kind,
                        spec: r.spec,
                    });
                }
                let mut workloads = Vec::new();
                for w in store.list_workloads(&c.source).await? {
                    let Some(n) = w.current_revision else { continue };
                    if store.get_workload(&env.name, &w.name).await?.is_some() {
                        return Err(EngineError::Conflict(format!(
                            "workload `{}` exists in `{}` already",
                            w.name, env.name
                        )));
                    }
                    let Some(rev) = store.get_revision(&c.source, &w.name, n).await? else {
                        continue;
                    };
                    let mut spec = rev.spec;
                    // The replicas that run, which a scale may have changed since.
                    if let Some(r) = w.replicas {
                        spec["replicas"] = json!(r);
                    }
                    workloads.push(CloneWorkload {
                        name: w.name,
                        revision: n,
                        spec,
                    });
                }
                Ok(plan::plan_clone(&env.name, &c.source, &resources, &workloads)?)
            }
            "env.delete" => {
                if !(input.is_null() || input == json!({})) {
                    return Err(invalid("env.delete takes no input"));
                }
                if env.name == BUILTIN_ENVIRONMENT {
                    return Err(EngineError::Conflict(
                        "the built-in `local` environment cannot be deleted".into(),
                    ));
                }
                let busy = store.count_unfinished_actions(&env.name).await?;
                if busy > 0 {
                    return Err(EngineError::Conflict(format!(
                        "environment `{}` has {busy} unfinished action(s); wait for them or cancel them first",
                        env.name
                    )));
                }
                let workloads: Vec<String> = store
                    .list_workloads(&env.name)
                    .await?
                    .into_iter()
                    .map(|w| w.name)
                    .collect();
                let mut resources = store.list_resources(Some(&env.name)).await?;
                // Newest first: what was made last may depend on what came before.
                resources.sort_by_key(|r| std::cmp::Reverse(r.created_at));
                let resources: Vec<String> = resources.into_iter().map(|r| r.name).collect();
                Ok(plan::plan_env_delete(&env.name, &workloads, &resources)?)
            }
            "scale" => crate::workloads::plan_scale(self, &env.name, input).await,
            "rollback" => crate::workloads::plan_rollback(self, &env.name, input).await,
            other => Err(EngineError::Invalid(CoreError::UnknownKind(other.to_string()))),
        }
    }

    /// Refuses new work in an environment that is being deleted.
    pub(crate) async fn check_not_deleting(&self, env: &str) -> Result<(), EngineError> {
        if env == BUILTIN_ENVIRONMENT {
            return Ok(());
        }
        for state in [pave_core::ActionState::Queued, pave_core::ActionState::Running] {
            let found = self
                .inner
                .store
                .list_actions(&pave_store::ActionFilter {
                    state: Some(state),
                    kind: Some("env.delete".into()),
                    env: Some(env.to_string()),
                    before: None,
                    limit: 1,
                })
                .await?;
            if let Some(a) = found.first() {
                return Err(EngineError::Conflict(format!(
                    "environment `{env}` is being deleted by action {}",
                    a.id
                )));
            }
        }
        Ok(())
    }
}

/// Prepares the last step of `env.delete`, or `None` for other kinds.
pub(crate) async fn prepare(
    engine: &Engine,
    kind: &str,
    spec: &Value,
) -> Option<Result<Prepared, PrepareError>> {
    if kind != "delete_environment" {
        return None;
    }
    let env = spec["env"].as_str().unwrap_or_default();
    let store = engine.store();
    let left = async {
        let mut left: Vec<String> = store
            .list_workloads(env)
            .await?
            .into_iter()
            .map(|w| format!("workload {}", w.name))
            .collect();
        left.extend(
            store
                .list_resources(Some(env))
                .await?
                .into_iter()
                .map(|r| format!("resource {}", r.name)),
        );
        Ok::<_, pave_store::StoreError>(left)
    }
    .await;
    Some(match left {
        Err(e) => Err(("store_failed".into(), e.to_string())),
        Ok(left) if !left.is_empty() => Err((
            "not_empty".into(),
            format!(
                "environment `{env}` still holds {} (made after this action was planned); \
                 delete them and retry",
                left.join(", ")
            ),
        )),
        Ok(_) => Ok(Prepared {
            payload: CommandPayload::Noop,
            before: vec![],
        }),
    })
}

/// What the last step of `env.delete` writes with its result.
pub(crate) fn after(kind: &str, spec: &Value, outcome: &Outcome) -> Vec<WriteOp> {
    if kind != "delete_environment" || !matches!(outcome, Outcome::Succeeded { .. }) {
        return vec![];
    }
    let env = spec["env"].as_str().unwrap_or_default().to_string();
    vec![
        WriteOp::DeleteEnvironment(env.clone()),
        WriteOp::Audit(AuditDraft {
            actor: "system".into(),
            verb: "environment.delete".into(),
            object: format!("environment/{env}"),
            summary: format!("environment {env} deleted"),
            details: json!({}),
        }),
    ]
}

impl Engine {
    /// A user with their teams and every binding that reaches them.
    pub async fn principal(&self, user: &str) -> Result<pave_core::rbac::Principal, EngineError> {
        use pave_core::rbac::{Principal, Subject};
        let teams: Vec<String> = self
            .inner
            .store
            .list_teams()
            .await?
            .into_iter()
            .filter(|t| t.members.iter().any(|m| m == user))
            .map(|t| t.name)
            .collect();
        let bindings = self
            .inner
            .store
            .list_bindings()
            .await?
            .into_iter()
            .filter(|b| match &b.subject {
                Subject::User(u) => u == user,
                Subject::Team(t) => teams.contains(t),
            })
            .collect();
        Ok(Principal {
            user: user.to_string(),
            teams,
            bindings,
        })
    }
}
