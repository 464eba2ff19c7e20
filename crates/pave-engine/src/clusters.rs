//! Kubernetes targets: a cluster added with a kubeconfig is served by an
//! agent in this process whose credentials come out of the vault (sealed
//! there at `targets add`, opened only to start the agent); one added with
//! `--agent` by `pave agent --in-cluster`. Also what only a cluster does:
//! namespaces for environments, reads of any object, discovery, and the
//! steps of object edits and Helm releases.

use std::collections::BTreeMap;

use pave_agent::cluster::Credentials;
use pave_agent::protocol::{CommandPayload, HelmOp, Outcome};
use pave_core::action::Action;
use pave_core::rbac::Principal;
use pave_core::time::now_ms;
use pave_core::vault::Sealed;
use pave_core::AuditDraft;
use pave_store::{Environment, TargetRecord, WriteOp};
use serde_json::{json, Value};

use crate::agents::AgentHub;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::resources::{PrepareError, Prepared};

/// The vault scope of targets' credentials (not an environment name: one
/// cannot start with `@`).
pub(crate) const CREDENTIALS_SCOPE: &str = "@targets";

/// The target kind of a Kubernetes cluster.
pub const KUBERNETES: &str = "kubernetes";

fn err(code: &str, message: impl Into<String>) -> PrepareError {
    (code.to_string(), message.into())
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(pave_core::CoreError::InvalidInput(message.into()))
}

fn credentials_name(target: &str) -> String {
    format!("{target}/kubeconfig")
}

/// Removes a cluster target's credentials from the vault.
pub(crate) fn forget_credentials(target: &str) -> WriteOp {
    WriteOp::DeleteSecret {
        env: CREDENTIALS_SCOPE.to_string(),
        name: credentials_name(target),
    }
}

impl Engine {
    /// Adds a cluster served by an agent in this process, with the
    /// kubeconfig's credentials (sealed in the vault). The cluster must answer
    /// before the target is stored: nothing is written when it does not.
    pub async fn add_cluster_target(
        &self,
        name: &str,
        kubeconfig: &str,
        context: Option<&str>,
        labels: BTreeMap<String, String>,
        who: &Principal,
    ) -> Result<(TargetRecord, Value), EngineError> {
        crate::targets::admin(who, "add a target")?;
        pave_core::names::validate_name("target", name)?;
        pave_core::names::validate_labels(&labels)?;
        if self.store().get_target(name).await?.is_some() {
            return Err(EngineError::Conflict(format!("target `{name}` already exists")));
        }
        if kubeconfig.len() > 256 * 1024 {
            return Err(invalid("the kubeconfig is larger than 256 KiB"));
        }
        let credentials = Credentials::Kubeconfig {
            yaml: kubeconfig.to_string(),
            context: context.map(str::to_string),
        };
        let hub = self
            .start_cluster_agent(name, &credentials)
            .await
            .map_err(invalid)?;
        let info = match hub_query(&hub, name, CommandPayload::ClusterInfo).await {
            Ok(Outcome::Succeeded { output }) => Ok(output),
            Ok(Outcome::Failed { message, .. }) => Err(EngineError::Unavailable(format!(
                "the cluster of target `{name}` does not answer: {message}; nothing was added"
            ))),
            Ok(Outcome::Cancelled { .. }) => {
                Err(EngineError::Unavailable("the cluster check was cancelled".into()))
            }
            Err(e) => Err(EngineError::Unavailable(e)),
        };
        // Nothing stays of a target that is not added, its agent included.
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                self.drop_hub(name);
                return Err(e);
            }
        };
        let sealed = crate::secrets::vault_key(self)
            .map_err(|(_, m)| EngineError::Conflict(m))
            .and_then(|key| {
                let plain = json!({ "kubeconfig": kubeconfig, "context": context }).to_string();
                serde_json::to_string(&key.seal(plain.as_bytes()))
                    .map_err(|e| EngineError::Conflict(format!("could not seal the credentials: {e}")))
            });
        let sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                self.drop_hub(name);
                return Err(e);
            }
        };
        let record = TargetRecord {
            name: name.to_string(),
            kind: KUBERNETES.to_string(),
            agent: false,
            labels,
            created_at: now_ms(),
        };
        let written = self
            .inner
            .writer
            .write(vec![
                WriteOp::InsertTarget(record.clone()),
                WriteOp::PutSecret {
                    env: CREDENTIALS_SCOPE.to_string(),
                    name: credentials_name(name),
                    sealed,
                },
                WriteOp::Audit(AuditDraft {
                    actor: who.user.clone(),
                    verb: "target.add".into(),
                    object: format!("target/{name}"),
                    summary: format!(
                        "target {name} (kubernetes {}, credentials in the vault) added",
                        info["version"].as_str().unwrap_or("?")
                    ),
                    details: json!({ "kind": KUBERNETES, "agent": false, "context": context,
                        "labels": record.labels, "version": info["version"] }),
                }),
            ])
            .await;
        if let Err(e) = written {
            self.drop_hub(name);
            return Err(e.into());
        }
        Ok((record, info))
    }

    /// Starts the in-process agent of a cluster and registers its hub.
    async fn start_cluster_agent(&self, name: &str, credentials: &Credentials) -> Result<AgentHub, String> {
        let Some(base) = self.inner.config.clusters_dir.clone() else {
            return Err("this control plane has no directory for cluster agents".into());
        };
        let dir = base.join(name);
        let dirs = pave_agent::embedded::AgentDirs {
            work_dir: dir.join("work"),
            state_dir: dir.join("agent"),
            resources_dir: dir.join("resources"),
            workloads_dir: dir.join("workloads"),
            shim_command: vec![],
        };
        let link = pave_agent::cluster::spawn_cluster(dirs, credentials)
            .await
            .map_err(|e| e.to_string())?;
        let hub = AgentHub::start(link).await;
        self.inner
            .agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), hub.clone());
        Ok(hub)
    }

    /// Starts the agents of the clusters added with a kubeconfig (at start).
    /// A cluster whose agent cannot start is logged; its steps fail with why.
    pub async fn start_clusters(&self) -> Result<(), EngineError> {
        for t in self.store().list_targets().await? {
            if t.kind != KUBERNETES || t.agent {
                continue;
            }
            let started = match self.cluster_credentials(&t.name).await {
                Ok(c) => self.start_cluster_agent(&t.name, &c).await.map(|_| ()),
                Err((_, m)) => Err(m),
            };
            if let Err(e) = started {
                tracing::error!(target = %t.name, error = %e, "could not start the agent of a cluster");
                self.inner
                    .cluster_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(t.name.clone(), e);
            }
        }
        Ok(())
    }

    /// Why the agent of a cluster target did not start, if it did not.
    pub(crate) fn cluster_error(&self, target: &str) -> Option<String> {
        self.inner
            .cluster_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .cloned()
    }

    async fn cluster_credentials(&self, target: &str) -> Result<Credentials, PrepareError> {
        let text = self
            .store()
            .get_secret(CREDENTIALS_SCOPE, &credentials_name(target))
            .await
            .map_err(|e| err("store_failed", e.to_string()))?
            .ok_or_else(|| {
                err(
                    "vault_failed",
                    format!("the credentials of target `{target}` are not in the vault"),
                )
            })?;
        let sealed: Sealed = serde_json::from_str(&text)
            .map_err(|e| err("vault_failed", format!("stored credentials: {e}")))?;
        let plain = crate::secrets::vault_key(self)?
            .open(&sealed)
            .map_err(|e| err("vault_failed", e.to_string()))?;
        let v: Value = serde_json::from_slice(&plain)
            .map_err(|e| err("vault_failed", format!("stored credentials: {e}")))?;
        Ok(Credentials::Kubeconfig {
            yaml: v["kubeconfig"].as_str().unwrap_or_default().to_string(),
            context: v["context"].as_str().map(str::to_string),
        })
    }

    /// Asks the agent of `target` something that is not a step.
    pub async fn query_target(&self, target: &str, payload: CommandPayload) -> Result<Value, EngineError> {
        let hub = self.hub(target).await.map_err(EngineError::Unavailable)?;
        match hub_query(&hub, target, payload)
            .await
            .map_err(EngineError::Unavailable)?
        {
            Outcome::Succeeded { output } => Ok(output),
            Outcome::Failed { code, message, .. } if code == "not_found" => {
                Err(EngineError::NotFound(message))
            }
            Outcome::Failed { message, .. } => Err(EngineError::Unavailable(message)),
            Outcome::Cancelled { .. } => Err(EngineError::Unavailable("cancelled".into())),
        }
    }

    /// The cluster's version and what its credentials may do.
    pub async fn cluster_info(&self, target: &str) -> Result<Value, EngineError> {
        self.query_target(target, CommandPayload::ClusterInfo).await
    }

    /// Deployments, StatefulSets and Helm releases pave does not manage.
    pub async fn discover(&self, target: &str, who: &Principal) -> Result<Value, EngineError> {
        crate::targets::admin(who, "discover a target's workloads")?;
        let t = self
            .store()
            .get_target(target)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("target `{target}`")))?;
        if t.kind != KUBERNETES {
            return Err(invalid(format!(
                "target `{target}` is a {} target: discovery lists a cluster's workloads",
                t.kind
            )));
        }
        let mut found = self.query_target(target, CommandPayload::Discover).await?;
        // Releases pave installed are pave's: they are in its action records.
        let envs: BTreeMap<String, String> = self
            .store()
            .list_environments()
            .await?
            .into_iter()
            .filter(|e| e.target == target)
            .map(|e| (e.namespace().to_string(), e.name))
            .collect();
        let mut managed = std::collections::BTreeSet::new();
        for (ns, env) in &envs {
            let filter = pave_store::ActionFilter {
                env: Some(env.clone()),
                limit: 10_000,
                ..Default::default()
            };
            for a in self.store().list_actions(&filter).await? {
                if a.kind.starts_with("helm.") {
                    if let Some(r) = a.input["release"].as_str() {
                        managed.insert((ns.clone(), r.to_string()));
                    }
                }
            }
        }
        if let Some(list) = found["releases"].as_array_mut() {
            list.retain(|r| {
                let key = (
                    r["namespace"].as_str().unwrap_or_default().to_string(),
                    r["name"].as_str().unwrap_or_default().to_string(),
                );
                !managed.contains(&key)
            });
        }
        Ok(found)
    }

    /// Creates the namespace of an environment on a Kubernetes target (with
    /// the environment's labels), refusing one another environment of the
    /// cluster has; checks that no namespace is asked for on another target.
    pub async fn ensure_namespace(&self, env: &Environment) -> Result<(), EngineError> {
        let Some(t) = self.store().get_target(&env.target).await? else {
            return Err(EngineError::NotFound(format!("target `{}`", env.target)));
        };
        if t.kind != KUBERNETES {
            if env.namespace.is_some() {
                return Err(invalid(format!(
                    "target `{}` is a {} target: a namespace is for an environment on a Kubernetes cluster",
                    t.name, t.kind
                )));
            }
            return Ok(());
        }
        let ns = env.namespace();
        pave_core::names::validate_name("namespace", ns)?;
        let taken = self
            .store()
            .list_environments()
            .await?
            .into_iter()
            .find(|e| e.target == env.target && e.name != env.name && e.namespace() == ns);
        if let Some(other) = taken {
            return Err(EngineError::Conflict(format!(
                "namespace `{ns}` of cluster `{}` belongs to environment `{}`",
                env.target, other.name
            )));
        }
        let labels = pave_agent::cluster::namespace_labels(&env.labels);
        self.query_target(
            &env.target,
            CommandPayload::EnsureNamespace {
                env: env.name.clone(),
                namespace: Some(ns.to_string()),
                labels,
            },
        )
        .await
        .map(|_| ())
    }

    /// Objects of any kind in an environment's namespace.
    pub async fn get_objects(&self, env: &str, kind: &str, name: Option<&str>) -> Result<Value, EngineError> {
        let target = self.kube_target_of(env).await?;
        self.query_target(
            &target,
            CommandPayload::GetObjects {
                env: env.to_string(),
                kind: kind.to_string(),
                name: name.map(str::to_string),
            },
        )
        .await
    }

    /// A server-side dry run of an apply: the changes it would make.
    pub async fn dry_run_apply(&self, env: &str, yaml: &str) -> Result<Value, EngineError> {
        let target = self.kube_target_of(env).await?;
        self.query_target(
            &target,
            CommandPayload::ApplyObjects {
                env: env.to_string(),
                yaml: yaml.to_string(),
                dry_run: true,
            },
        )
        .await
    }

    /// A Helm read (`status`, `history`, `list`) in an environment's namespace.
    pub async fn helm_query(&self, env: &str, op: HelmOp) -> Result<Value, EngineError> {
        if !matches!(op, HelmOp::Status { .. } | HelmOp::History { .. } | HelmOp::List) {
            return Err(invalid("only status, history and list are reads"));
        }
        let target = self.kube_target_of(env).await?;
        self.query_target(
            &target,
            CommandPayload::Helm {
                env: env.to_string(),
                op: Box::new(op),
            },
        )
        .await
    }

    /// The target of `env`, which must be a Kubernetes one.
    pub(crate) async fn kube_target_of(&self, env: &str) -> Result<String, EngineError> {
        let e = self
            .store()
            .get_environment(env)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("environment `{env}`")))?;
        let t = self
            .store()
            .get_target(&e.target)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("target `{}`", e.target)))?;
        if t.kind != KUBERNETES {
            return Err(invalid(format!(
                "environment `{env}` runs on target `{}` ({}), not on a Kubernetes cluster",
                t.name, t.kind
            )));
        }
        Ok(t.name)
    }
}

/// Compares every workload on a cluster reached directly or through its
/// agent with what pave applied; a drift that appears or goes is an audit
/// event, and the last finding is shown with the workload.
pub(crate) async fn drift_sweep(engine: &Engine) {
    let Ok(targets) = engine.store().list_targets().await else {
        return;
    };
    let clusters: std::collections::BTreeSet<String> = targets
        .into_iter()
        .filter(|t| t.kind == KUBERNETES)
        .map(|t| t.name)
        .collect();
    if clusters.is_empty() {
        return;
    }
    let (Ok(envs), Ok(workloads)) = (
        engine.store().list_environments().await,
        engine.store().list_all_workloads().await,
    ) else {
        return;
    };
    let on_cluster: std::collections::BTreeSet<String> = envs
        .into_iter()
        .filter(|e| clusters.contains(&e.target))
        .map(|e| e.name)
        .collect();
    // A workload being changed is not drifting: its action is the change.
    let running = pave_store::ActionFilter {
        state: Some(pave_core::ActionState::Running),
        limit: 10_000,
        ..Default::default()
    };
    let Ok(running) = engine.store().list_actions(&running).await else {
        return;
    };
    let busy: std::collections::BTreeSet<&str> = running
        .iter()
        .flat_map(|a| a.object.split(pave_core::plan::OBJECT_SEPARATOR))
        .collect();
    for w in workloads
        .iter()
        .filter(|w| on_cluster.contains(&w.env) && w.current_revision.is_some())
    {
        let object = format!("workload/{}/{}", w.env, w.name);
        if busy.contains(object.as_str()) {
            continue;
        }
        let Ok(found) = engine.workload_drift(&w.env, &w.name).await else {
            continue;
        };
        let drifted = found["drifted"] == true;
        let before = {
            let mut map = engine.inner.drift.lock().unwrap_or_else(|p| p.into_inner());
            if drifted {
                map.insert(object.clone(), found.clone())
            } else {
                map.remove(&object)
            }
        };
        let was = before.is_some_and(|b| b["drifted"] == true);
        if drifted == was {
            continue;
        }
        let fields: Vec<Value> = found["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f["path"].clone())
            .collect();
        let (verb, summary) = if drifted {
            (
                "workload.drift",
                format!(
                    "{} in {} drifted from revision {}: {}",
                    w.name,
                    w.env,
                    found["revision"],
                    if found["missing"] == true {
                        "its Deployment is gone".to_string()
                    } else {
                        fields
                            .iter()
                            .map(|f| f.as_str().unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            )
        } else {
            (
                "workload.drift_resolved",
                format!("{} in {} matches what pave applied again", w.name, w.env),
            )
        };
        let audit = WriteOp::Audit(AuditDraft {
            actor: "system".into(),
            verb: verb.into(),
            object,
            summary,
            details: json!({ "fields": fields }),
        });
        if let Err(e) = engine.inner.writer.write(vec![audit]).await {
            tracing::warn!(error = %e, "could not record a drift");
        }
    }
}

impl Engine {
    /// The drift the last sweep found for a workload, if any.
    pub fn known_drift(&self, env: &str, name: &str) -> Option<Value> {
        self.inner
            .drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("workload/{env}/{name}"))
            .cloned()
    }
}

async fn hub_query(hub: &AgentHub, target: &str, payload: CommandPayload) -> Result<Outcome, String> {
    crate::workloads::query_hub(hub, target, "target", payload).await
}

fn field<'a>(spec: &'a Value, key: &str) -> Result<&'a str, PrepareError> {
    spec[key]
        .as_str()
        .ok_or_else(|| err("invalid_step", format!("step spec lacks `{key}`")))
}

/// Prepares the step of an object edit or a Helm operation (or its undo,
/// which reads what the step it undoes reported), or `None` when `kind` is
/// not one.
pub(crate) async fn prepare(
    engine: &Engine,
    action: &Action,
    kind: &str,
    spec: &Value,
) -> Option<Result<Prepared, PrepareError>> {
    let prepared = match kind {
        "adopt_workload" => prepare_adopt(engine, spec).await,
        "apply_objects" => field(spec, "env").and_then(|env| {
            Ok(CommandPayload::ApplyObjects {
                env: env.to_string(),
                yaml: field(spec, "yaml")?.to_string(),
                dry_run: false,
            })
        }),
        "patch_object" => field(spec, "env").and_then(|env| {
            Ok(CommandPayload::PatchObject {
                env: env.to_string(),
                kind: field(spec, "kind")?.to_string(),
                name: field(spec, "name")?.to_string(),
                patch: spec["patch"].clone(),
                dry_run: false,
            })
        }),
        "delete_object" => field(spec, "env").and_then(|env| {
            Ok(CommandPayload::DeleteObject {
                env: env.to_string(),
                kind: field(spec, "kind")?.to_string(),
                name: field(spec, "name")?.to_string(),
            })
        }),
        "restore_objects" => undone_output(action, spec).and_then(|out| {
            Ok(CommandPayload::RestoreObjects {
                env: field(spec, "env")?.to_string(),
                changes: out["changes"].clone(),
            })
        }),
        "helm" => prepare_helm(engine, &action.env, spec).await,
        "helm_undo" => undone_output(action, spec).and_then(|out| {
            let release = field(spec, "release")?.to_string();
            let revision = out["previous_revision"].as_u64().map(|r| r as u32);
            let op = match revision {
                Some(r) => HelmOp::Rollback {
                    release,
                    revision: Some(r),
                    wait: true,
                    timeout_secs: pave_core::cluster_plan::DEFAULT_HELM_TIMEOUT_SECS,
                },
                None => {
                    return Err(err(
                        "nothing_to_undo",
                        "the release had no revision before this step",
                    ))
                }
            };
            Ok(CommandPayload::Helm {
                env: field(spec, "env")?.to_string(),
                op: Box::new(op),
            })
        }),
        _ => return None,
    };
    Some(prepared.map(|payload| Prepared {
        payload,
        before: vec![],
    }))
}

async fn prepare_adopt(engine: &Engine, spec: &Value) -> Result<CommandPayload, PrepareError> {
    let (env, name) = (field(spec, "env")?, field(spec, "name")?);
    let known = engine
        .store()
        .get_workload(env, name)
        .await
        .map_err(|e| err("store_failed", e.to_string()))?;
    if known.is_some() {
        return Err(err(
            "workload_exists",
            format!("`{name}` is a pave workload in `{env}` already"),
        ));
    }
    Ok(CommandPayload::AdoptWorkload {
        key: pave_agent::protocol::WorkloadKey::new(env, name),
    })
}

/// What to write with an adoption's result: the workload with its template
/// as revision 1, current, at its replica count.
pub(crate) fn after(action_id: &str, kind: &str, spec: &Value, outcome: &Outcome) -> Vec<WriteOp> {
    let (Outcome::Succeeded { output }, "adopt_workload") = (outcome, kind) else {
        return vec![];
    };
    let (Some(env), Some(name)) = (spec["env"].as_str(), spec["name"].as_str()) else {
        return vec![];
    };
    let mut revision = output["spec"].clone();
    let replicas = revision["replicas"].as_u64().and_then(|r| u32::try_from(r).ok());
    if let Some(o) = revision.as_object_mut() {
        o.remove("revision");
    }
    vec![
        WriteOp::InsertRevision(pave_store::RevisionRecord {
            env: env.to_string(),
            name: name.to_string(),
            revision: 1,
            spec: revision,
            created_by: action_id.to_string(),
            created_at: now_ms(),
        }),
        WriteOp::SetCurrentRevision {
            env: env.to_string(),
            name: name.to_string(),
            revision: Some(1),
            replicas,
        },
    ]
}

/// What the step an undo undoes reported (its before-state).
fn undone_output<'a>(action: &'a Action, spec: &Value) -> Result<&'a Value, PrepareError> {
    let idx = spec["step"].as_i64().unwrap_or(0);
    action
        .steps
        .iter()
        .find(|s| s.idx == idx)
        .map(|s| &s.output)
        .filter(|o| !o.is_null())
        .ok_or_else(|| {
            err(
                "nothing_to_undo",
                format!("step {idx} reported nothing to put back"),
            )
        })
}

/// The Helm command of a step, with the values that come from the vault
/// resolved (they travel to helm's stdin only).
async fn prepare_helm(engine: &Engine, env: &str, spec: &Value) -> Result<CommandPayload, PrepareError> {
    let mut op: HelmOp = serde_json::from_value(spec["op"].clone())
        .map_err(|e| err("invalid_step", format!("helm step: {e}")))?;
    if let HelmOp::Install { secret_values, .. } = &mut op {
        let refs: BTreeMap<String, String> =
            serde_json::from_value(spec["secret_values"].clone()).unwrap_or_default();
        if !refs.is_empty() {
            let mut values = json!({});
            let mut used = Vec::new();
            for (path, secret) in &refs {
                let plain =
                    crate::secrets::resolve(engine, env, &format!("${{secret.{secret}}}"), &mut used).await?;
                set_path(&mut values, path, Value::String(plain));
            }
            *secret_values = Some(values);
        }
    }
    Ok(CommandPayload::Helm {
        env: field(spec, "env")?.to_string(),
        op: Box::new(op),
    })
}

/// Sets `a.b.c` in `v` (objects made as needed).
fn set_path(v: &mut Value, path: &str, leaf: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(map) = cur.as_object_mut() else { return };
        if i + 1 == parts.len() {
            map.insert(p.to_string(), leaf);
            return;
        }
        cur = map.entry(p.to_string()).or_insert_with(|| json!({}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: &str, input: Value, output: Value) -> Action {
        let plan = pave_core::plan::plan(kind, "a1", "shop", input).expect("planned");
        let mut steps = plan.steps;
        steps[0].output = output;
        Action {
            id: "a1".into(),
            kind: kind.into(),
            env: "shop".into(),
            object: plan.object,
            actor: "olga".into(),
            input: plan.input,
            state: pave_core::ActionState::Succeeded,
            attempt: 1,
            error: None,
            result: Value::Null,
            idempotency_key: None,
            cancel_requested: false,
            created_at: 0,
            updated_at: 0,
            steps,
        }
    }

    #[test]
    fn an_undo_reads_the_before_state_its_step_reported() {
        let changes = json!({ "changes": [{ "object": "Deployment shop/payments", "before": {"a": 1} }] });
        let a = action(
            "object.patch",
            json!({"kind": "deployment", "name": "payments", "patch": {"metadata": {"labels": {"t": "p"}}}}),
            changes.clone(),
        );
        let undo = &a.steps[0].compensation;
        assert_eq!(undone_output(&a, &undo["spec"]).unwrap(), &changes);
        // A step that reported nothing has nothing to put back: said, not guessed.
        let empty = action(
            "object.delete",
            json!({"kind": "configmap", "name": "old"}),
            Value::Null,
        );
        let (code, _) = undone_output(&empty, &empty.steps[0].compensation["spec"]).unwrap_err();
        assert_eq!(code, "nothing_to_undo");
    }

    #[test]
    fn an_adoption_records_its_template_as_revision_1() {
        let a = action("workload.adopt", json!({"name": "checkout"}), Value::Null);
        let out = Outcome::Succeeded {
            output: json!({ "spec": { "revision": 1, "image": "shop/checkout:3", "replicas": 4, "command": [] } }),
        };
        let ops = after("a1", "adopt_workload", &a.steps[0].spec, &out);
        match ops.as_slice() {
            [WriteOp::InsertRevision(r), WriteOp::SetCurrentRevision {
                revision, replicas, ..
            }] => {
                assert_eq!(
                    (r.env.as_str(), r.name.as_str(), r.revision),
                    ("shop", "checkout", 1)
                );
                assert!(
                    r.spec.get("revision").is_none(),
                    "the number is the record's, not the spec's"
                );
                assert_eq!(r.created_by, "a1");
                assert_eq!((*revision, *replicas), (Some(1), Some(4)));
            }
            other => panic!("{other:?}"),
        }
        let failed = Outcome::Failed {
            code: "kube_failed".into(),
            message: "x".into(),
            output: Value::Null,
        };
        assert!(after("a1", "adopt_workload", &a.steps[0].spec, &failed).is_empty());
    }

    #[test]
    fn values_paths_nest() {
        let mut v = json!({});
        set_path(&mut v, "db.auth.password", json!("x"));
        set_path(&mut v, "db.host", json!("h"));
        assert_eq!(v, json!({"db": {"auth": {"password": "x"}, "host": "h"}}));
    }
}
