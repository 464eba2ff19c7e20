//! An agent that serves a Kubernetes cluster: the same [`Runtime`] as the
//! local target's, over the cluster's drivers ([`KubeTarget`] for workloads,
//! [`KubeProviders`] for resources), plus the commands only a cluster has
//! (namespaces, any object through the dynamic API, Helm, discovery).
//!
//! The control plane runs one in-process per cluster target added with a
//! kubeconfig (its credentials come out of the vault, never from a file);
//! `pave agent --in-cluster` runs one inside the cluster with its pod's
//! service account.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use pave_kube::helm::{Chart, Helm, Values};
use pave_kube::objects::{Change, Objects};
use pave_kube::resources::KubeProviders;
use pave_kube::KubeTarget;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::embedded::AgentLink;
use crate::protocol::{ChartSource, Command, CommandPayload, HelmOp, Outcome};
use crate::runtime::{AgentDirs, Runtime};

/// Why a cluster agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig does not parse, names no usable context, or its
    /// credentials cannot be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The agent's directories.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where the cluster's credentials come from.
#[derive(Clone)]
pub enum Credentials {
    /// A kubeconfig's text and the context to use (default: its current one).
    Kubeconfig {
        /// The kubeconfig, its file references already inlined.
        yaml: String,
        /// The context.
        context: Option<String>,
    },
    /// The service account of the pod the agent runs in.
    InCluster,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Kubeconfig { context, .. } => f
                .debug_struct("Kubeconfig")
                .field("context", context)
                .finish_non_exhaustive(),
            Credentials::InCluster => f.write_str("InCluster"),
        }
    }
}

/// The image of a workload that names none: pave's own, which serves the
/// blueprints' default command (`pave demo`).
pub fn default_image() -> String {
    format!("ghcr.io/pave-dev/pave:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds a kube client from the credentials.
pub async fn client(credentials: &Credentials) -> Result<kube::Client, ClusterError> {
    let config = match credentials {
        Credentials::Kubeconfig { yaml, context } => {
            let kubeconfig =
                Kubeconfig::from_yaml(yaml).map_err(|e| ClusterError::Kubeconfig(e.to_string()))?;
            let options = KubeConfigOptions {
                context: context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ClusterError::Kubeconfig(e.to_string()))?
        }
        Credentials::InCluster => kube::Config::incluster()
            .map_err(|e| ClusterError::Kubeconfig(format!("in-cluster config: {e}")))?,
    };
    kube::Client::try_from(config).map_err(|e| ClusterError::Kubeconfig(e.to_string()))
}

/// What a cluster agent drives.
pub struct Cluster {
    target: KubeTarget,
    objects: Objects,
    helm: Helm,
    /// Environment → its namespace, as told (`ensure_namespace`) or found
    /// by the namespace's `pave.dev/environment` label.
    namespaces: Namespaces,
}

type Namespaces = Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>;

impl Cluster {
    /// The drivers over `credentials`; Helm works in `work_dir`.
    pub async fn connect(
        credentials: &Credentials,
        work_dir: &std::path::Path,
    ) -> Result<Self, ClusterError> {
        let client = client(credentials).await?;
        let objects = Objects::new(client.clone());
        let namespaces = Namespaces::default();
        let map = namespaces.clone();
        let target = KubeTarget::new(client, move |env| {
            map.read()
                .unwrap_or_else(|p| p.into_inner())
                .get(env)
                .cloned()
                .unwrap_or_else(|| pave_kube::env_namespace(env))
        })
        .with_default_image(default_image());
        let helm = match credentials {
            Credentials::Kubeconfig { yaml, context } => {
                let helm = Helm::new(yaml.clone(), work_dir);
                match context {
                    Some(c) => helm.with_context(c.clone()),
                    None => helm,
                }
            }
            Credentials::InCluster => Helm::in_cluster(work_dir),
        };
        let helm = match helm_program() {
            Some(p) => helm.with_program(p),
            None => helm,
        };
        Ok(Cluster {
            target,
            objects,
            helm,
            namespaces,
        })
    }

    fn set_namespace(&self, env: &str, namespace: String) {
        self.namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(env.to_string(), namespace);
    }

    /// Finds the namespace of `env` the first time it is needed (after a
    /// restart of the agent): the one pave labelled for it, else its name.
    async fn learn_namespace(&self, env: &str) {
        if self
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(env)
        {
            return;
        }
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.target.client().clone());
        let lp = kube::api::ListParams::default().labels(&format!("{}={env}", pave_kube::ENVIRONMENT_LABEL));
        let found = match api.list_metadata(&lp).await {
            Ok(list) => list.items.into_iter().find_map(|n| n.metadata.name),
            Err(e) => {
                tracing::debug!(env, error = %e, "could not look the namespace up; using the environment's name");
                None
            }
        };
        self.set_namespace(env, found.unwrap_or_else(|| pave_kube::env_namespace(env)));
    }
}

/// The environment a command acts in.
fn env_of(payload: &CommandPayload) -> Option<&str> {
    match payload {
        CommandPayload::ApplyWorkload { key, .. }
        | CommandPayload::AwaitWorkload { key, .. }
        | CommandPayload::RestoreWorkload { key, .. }
        | CommandPayload::WorkloadStatus { key }
        | CommandPayload::PruneWorkload { key, .. }
        | CommandPayload::ExecWorkload { key, .. }
        | CommandPayload::FollowWorkloadLogs { key, .. }
        | CommandPayload::WorkloadLogs { key, .. }
        | CommandPayload::WorkloadDrift { key, .. }
        | CommandPayload::AdoptWorkload { key } => Some(&key.env),
        CommandPayload::ProvisionResource { request }
        | CommandPayload::CheckResource { request }
        | CommandPayload::RepairResource { request }
        | CommandPayload::DeleteResource { request } => Some(&request.env),
        CommandPayload::GetObjects { env, .. }
        | CommandPayload::ApplyObjects { env, .. }
        | CommandPayload::PatchObject { env, .. }
        | CommandPayload::DeleteObject { env, .. }
        | CommandPayload::RestoreObjects { env, .. }
        | CommandPayload::Helm { env, .. } => Some(env),
        _ => None,
    }
}

/// The `helm` to run: `$PAVE_HELM`, else `helm` on the `PATH`, else where
/// pave's test setup puts it (`~/.local/bin/helm`); `None` leaves the
/// choice (and the "not installed" error) to the driver.
fn helm_program() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("PAVE_HELM").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("helm").is_file()))
        .unwrap_or(false);
    if on_path {
        return None;
    }
    let home = std::env::var_os("HOME")?;
    let local = std::path::Path::new(&home).join(".local/bin/helm");
    local.is_file().then_some(local)
}

/// Starts an in-process agent for a cluster.
pub async fn spawn_cluster(dirs: AgentDirs, credentials: &Credentials) -> Result<AgentLink, ClusterError> {
    std::fs::create_dir_all(&dirs.work_dir)?;
    let cluster = Arc::new(Cluster::connect(credentials, &dirs.work_dir).await?);
    let (runtime, from_agent_rx) = runtime(dirs, None, cluster)?;
    Ok(crate::embedded::link(runtime, from_agent_rx))
}

/// A runtime over a cluster's drivers (with `journal` for `pave agent`).
pub fn runtime(
    dirs: AgentDirs,
    journal: Option<&std::path::Path>,
    cluster: Arc<Cluster>,
) -> std::io::Result<(Runtime, mpsc::Receiver<crate::protocol::FromAgent>)> {
    let target = Arc::new(cluster.target.clone());
    let providers = Arc::new(KubeProviders::new(cluster.target.clone()));
    Runtime::with_drivers(dirs, journal, target, providers).map(|(rt, rx)| (rt.with_cluster(cluster), rx))
}

fn failed(code: &str, message: impl std::fmt::Display) -> Outcome {
    Outcome::Failed {
        code: code.to_string(),
        message: message.to_string(),
        output: Value::Null,
    }
}

fn changes_outcome(r: Result<Vec<Change>, pave_kube::KubeError>) -> Outcome {
    match r {
        Ok(changes) => Outcome::Succeeded {
            output: json!({ "changes": changes }),
        },
        Err(e) => failed("kube_failed", e),
    }
}

/// Executes a command only a cluster has, or `None` when it is not one.
pub async fn execute(cluster: &Cluster, cmd: &Command) -> Option<Outcome> {
    let objects = &cluster.objects;
    if let Some(env) = env_of(&cmd.payload) {
        cluster.learn_namespace(env).await;
    }
    if let Some(refused) = refuse_secrets(objects, &cmd.payload).await {
        return Some(refused);
    }
    let outcome = match &cmd.payload {
        CommandPayload::RunJob { .. } => failed(
            "unsupported",
            "jobs do not run on a Kubernetes target yet: they would run on the agent's host, not in the cluster",
        ),
        CommandPayload::ClusterInfo => info(cluster).await,
        CommandPayload::EnsureNamespace { env, namespace, labels } => {
            if let Some(ns) = namespace {
                cluster.set_namespace(env, ns.clone());
            }
            match cluster.target.ensure_namespace(env, labels).await {
                Ok(_) => Outcome::Succeeded {
                    output: json!({ "namespace": cluster.target.namespace(env) }),
                },
                Err(e) => failed("kube_failed", e),
            }
        }
        CommandPayload::Discover => discover(cluster).await,
        CommandPayload::GetObjects { env, kind, name } => {
            let ns = cluster.target.namespace(env);
            match objects.get(&ns, kind, name.as_deref()).await {
                Ok(items) => Outcome::Succeeded {
                    output: json!({ "namespace": ns, "items": items }),
                },
                Err(e) => failed("kube_failed", e),
            }
        }
        CommandPayload::ApplyObjects { env, yaml, dry_run } => {
            let ns = cluster.target.namespace(env);
            changes_outcome(objects.apply(&ns, yaml, *dry_run).await)
        }
        CommandPayload::PatchObject {
            env,
            kind,
            name,
            patch,
            dry_run,
        } => {
            let ns = cluster.target.namespace(env);
            changes_outcome(objects.merge_patch(&ns, kind, name, patch, *dry_run).await.map(|c| vec![c]))
        }
        CommandPayload::DeleteObject { env, kind, name } => {
            let ns = cluster.target.namespace(env);
            changes_outcome(objects.delete(&ns, kind, name).await.map(|c| vec![c]))
        }
        CommandPayload::RestoreObjects { changes, .. } => restore(objects, changes).await,
        CommandPayload::AdoptWorkload { key } => match cluster.target.adopt(key).await {
            Ok(spec) => Outcome::Succeeded {
                output: json!({ "spec": spec }),
            },
            Err(e) => failed("kube_failed", e),
        },
        CommandPayload::WorkloadDrift { key, spec } => match cluster.target.drift(key, spec).await {
            Ok(d) => Outcome::Succeeded {
                output: serde_json::to_value(d).unwrap_or_default(),
            },
            Err(e) => failed("kube_failed", e),
        },
        CommandPayload::Helm { env, op } => helm(cluster, &cluster.target.namespace(env), op.as_ref()).await,
        _ => return None,
    };
    Some(outcome)
}

async fn info(cluster: &Cluster) -> Outcome {
    let client = cluster.target.client();
    let version = match client.apiserver_version().await {
        Ok(v) => v,
        Err(e) => return failed("kube_failed", format!("cannot reach the API server: {e}")),
    };
    // The cluster answered; what the credentials may do is a fact to show,
    // even when the review itself is refused.
    let (access, access_error) = match pave_kube::can_i(client, None).await {
        Ok(a) => (a, None),
        Err(e) => (vec![], Some(e.to_string())),
    };
    Outcome::Succeeded {
        output: json!({
            "version": version.git_version,
            "platform": version.platform,
            "access": access,
            "access_error": access_error,
        }),
    }
}

async fn discover(cluster: &Cluster) -> Outcome {
    let workloads = match pave_kube::discover(cluster.target.client()).await {
        Ok(w) => w,
        Err(e) => return failed("kube_failed", e),
    };
    // Helm's own record of releases; a cluster without helm on the agent's
    // host still lists its workloads.
    let (releases, helm_error) = match cluster.helm.list(None).await {
        Ok(r) => (r, None),
        Err(e) => (vec![], Some(e.to_string())),
    };
    Outcome::Succeeded {
        output: json!({ "workloads": workloads, "releases": releases, "helm_error": helm_error }),
    }
}

/// A Secret's values would be kept in pave's records (an edit's
/// before-state is its undo): credentials belong in the vault
/// (`pave secrets set`), which workloads read through Secrets of their own.
async fn refuse_secrets(objects: &Objects, payload: &CommandPayload) -> Option<Outcome> {
    const WHY: &str = "pave does not edit Secrets as objects (their values would be kept in its records \
                       as the edit's undo): keep credentials in the vault with `pave secrets set`";
    match payload {
        // A kind that does not resolve fails on its own, with discovery's reason.
        CommandPayload::PatchObject { kind, .. } | CommandPayload::DeleteObject { kind, .. } => {
            let resolved = objects.resolve(kind).await.ok()?;
            (resolved.resource.kind == "Secret" && resolved.resource.group.is_empty())
                .then(|| failed("invalid_input", WHY))
        }
        CommandPayload::ApplyObjects { yaml, .. } => {
            let secret = yaml_serde::Deserializer::from_str(yaml).any(|doc| {
                <Value as serde::Deserialize>::deserialize(doc)
                    .is_ok_and(|v| v["kind"] == "Secret" && v["apiVersion"] == "v1")
            });
            secret.then(|| failed("invalid_input", WHY))
        }
        _ => None,
    }
}

async fn restore(objects: &Objects, changes: &Value) -> Outcome {
    let changes: Vec<Change> = match serde_json::from_value(changes.clone()) {
        Ok(c) => c,
        Err(e) => return failed("invalid_step", format!("the changes to undo do not parse: {e}")),
    };
    // Newest first: a later document may depend on an earlier one.
    for change in changes.iter().rev() {
        if let Err(e) = objects.restore(change).await {
            return failed("kube_failed", format!("restoring {}: {e}", change.object));
        }
    }
    Outcome::Succeeded {
        output: json!({ "restored": changes.iter().map(|c| c.object.clone()).collect::<Vec<_>>() }),
    }
}

fn chart(source: &ChartSource) -> Result<Chart, String> {
    match source {
        ChartSource::Archive { base64 } => base64::engine::general_purpose::STANDARD
            .decode(base64)
            .map(Chart::Archive)
            .map_err(|e| format!("the chart archive is not base64: {e}")),
        ChartSource::Reference { name } => Ok(Chart::Reference(name.clone())),
    }
}

async fn helm(cluster: &Cluster, ns: &str, op: &HelmOp) -> Outcome {
    let h = &cluster.helm;
    let out = |v: Value| Outcome::Succeeded { output: v };
    match op {
        HelmOp::Install {
            release,
            chart: source,
            values,
            set,
            secret_values,
            upgrade,
            wait,
            timeout_secs,
        } => {
            let chart = match chart(source) {
                Ok(c) => c,
                Err(e) => return failed("invalid_input", e),
            };
            let values = Values {
                files: values.clone(),
                set: set.clone(),
                secret: secret_values.clone(),
            };
            let timeout = Duration::from_secs(*timeout_secs);
            if !*upgrade {
                return match h.install(ns, release, &chart, &values, *wait, timeout).await {
                    Ok(r) => out(json!({ "release": r, "previous_revision": null })),
                    Err(e) => failed("helm_failed", e),
                };
            }
            let before = match h.status(ns, release).await {
                Ok(b) => b,
                Err(e) => return failed("helm_failed", e),
            };
            let Some(before) = before else {
                return failed(
                    "not_found",
                    format!("release {release} is not installed in namespace {ns}: use `pave helm install`"),
                );
            };
            match h
                .upgrade(ns, release, &chart, &values, *wait, timeout, false)
                .await
            {
                Ok(r) => out(json!({ "release": r, "previous_revision": before.revision })),
                Err(e) => {
                    // As a failed rollout leaves the revision before serving,
                    // a failed upgrade goes back to the release's revision before.
                    let back = h
                        .rollback(ns, release, Some(before.revision), *wait, timeout)
                        .await
                        .map(|()| format!("rolled back to revision {}", before.revision))
                        .unwrap_or_else(|r| {
                            format!("rolling back to revision {} failed too: {r}", before.revision)
                        });
                    failed("helm_failed", format!("{e}; {back}"))
                }
            }
        }
        HelmOp::Rollback {
            release,
            revision,
            wait,
            timeout_secs,
        } => {
            let before = match h.status(ns, release).await {
                Ok(Some(b)) => b,
                Ok(None) => {
                    return failed(
                        "not_found",
                        format!("release {release} is not installed in namespace {ns}"),
                    )
                }
                Err(e) => return failed("helm_failed", e),
            };
            match h
                .rollback(ns, release, *revision, *wait, Duration::from_secs(*timeout_secs))
                .await
            {
                Ok(()) => match h.status(ns, release).await {
                    Ok(r) => out(json!({ "release": r, "previous_revision": before.revision })),
                    Err(e) => failed("helm_failed", e),
                },
                Err(e) => failed("helm_failed", e),
            }
        }
        HelmOp::Uninstall {
            release,
            wait,
            timeout_secs,
        } => match h
            .uninstall(ns, release, *wait, Duration::from_secs(*timeout_secs))
            .await
        {
            Ok(()) => out(json!({ "uninstalled": release })),
            Err(e) => failed("helm_failed", e),
        },
        HelmOp::Status { release } => match h.status(ns, release).await {
            Ok(Some(r)) => out(json!({ "release": r })),
            Ok(None) => failed(
                "not_found",
                format!("release {release} is not installed in namespace {ns}"),
            ),
            Err(e) => failed("helm_failed", e),
        },
        HelmOp::History { release } => match h.history(ns, release).await {
            Ok(entries) => out(json!({ "history": entries })),
            Err(e) => failed("helm_failed", e),
        },
        HelmOp::List => match h.list(Some(ns)).await {
            Ok(releases) => out(json!({ "releases": releases })),
            Err(e) => failed("helm_failed", e),
        },
    }
}

/// Labels for a namespace from an environment's labels: those Kubernetes
/// accepts as label keys and values (pave's own rules are a little wider).
pub fn namespace_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    fn name_ok(s: &str, may_be_empty: bool) -> bool {
        if s.is_empty() {
            return may_be_empty;
        }
        let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        s.len() <= 63
            && edge(s.chars().next())
            && edge(s.chars().last())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    }
    let key_ok = |k: &str| match k.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253
                && !prefix.is_empty()
                && prefix
                    .split('.')
                    .all(|p| name_ok(p, false) && !p.contains('_') && p == p.to_ascii_lowercase())
                && name_ok(name, false)
        }
        None => name_ok(k, false),
    };
    labels
        .iter()
        .filter(|(k, v)| key_ok(k) && name_ok(v, true))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_labels_kubernetes_takes_reach_the_namespace() {
        let labels: BTreeMap<String, String> = [
            ("tier", "staging"),
            ("remediation", "auto"),
            ("example.com/team", "payments"),
            ("trailing-", "x"),
            ("v", "-bad"),
            ("Upper.Example/x", "y"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept: Vec<String> = namespace_labels(&labels).into_keys().collect();
        assert_eq!(kept, ["example.com/team", "remediation", "tier"]);
    }
}
