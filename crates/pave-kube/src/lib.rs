//! pave's Kubernetes target: a [`Target`] over a cluster, through kube-rs.
//!
//! A workload `(env, name)` is, in the namespace of `env` (by default a
//! namespace named after the environment):
//!
//! | object | what |
//! | --- | --- |
//! | Secret `<name>-env` | the resolved values of `spec.env` |
//! | Deployment `<name>` | container `app`; env as `secretKeyRef`s into that Secret; pave's revision in the pod template (`pave.dev/revision`), so each revision is a ReplicaSet; `maxUnavailable: 0` |
//! | Service `<name>` | port 80 → 8080, when `spec.port` |
//!
//! Every write is a server-side apply with field manager `pave`. Supported
//! clusters: Kubernetes 1.28 and newer (no API newer than 1.28 is used).
//!
//! Besides the trait: [`KubeTarget::ensure_namespace`], [`KubeTarget::scale`]
//! (scale subresource), [`KubeTarget::restart`], [`KubeTarget::watch_ready`]
//! (a watch on the Deployment), and the free functions [`discover`] and
//! [`can_i`].

mod adopt;
mod apply;
mod cluster;
pub mod drift;
mod error;
pub mod helm;
pub mod manifest;
pub mod objects;
mod pods;
pub mod resources;
mod rollout;
pub mod status;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;
use pave_targets::{Target, TargetError, WorkloadKey, WorkloadSpec, WorkloadStatus};

pub use cluster::{can_i, discover, Access, AccessCheck, DiscoveredWorkload, REQUIRED_ACCESS};
pub use error::{KubeError, Result};
pub use status::Observed;

/// The field manager of every server-side apply pave makes.
pub const FIELD_MANAGER: &str = "pave";
/// The field manager of [`KubeTarget::scale`] (an update of the scale subresource).
pub const SCALE_FIELD_MANAGER: &str = "pave-scaler";
/// The field manager of [`KubeTarget::restart`].
pub const RESTART_FIELD_MANAGER: &str = "pave-restart";
/// `app.kubernetes.io/managed-by`, `pave` on everything pave makes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "pave";
/// `app.kubernetes.io/name`: the workload's name.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The environment, on namespaces and on the workload's objects.
pub const ENVIRONMENT_LABEL: &str = "pave.dev/environment";
/// pave's revision: a label and an annotation of the pod template.
pub const REVISION_KEY: &str = "pave.dev/revision";
/// On an adopted Deployment's metadata: the controller's revision that is
/// pave's revision 1 (the template it had when pave took it over).
pub const ADOPTED_KEY: &str = "pave.dev/adopted-revision";
/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The workload's container.
pub const CONTAINER: &str = "app";
/// The port the container listens on (`$PORT`) when the workload has one.
pub const CONTAINER_PORT: i32 = 8080;
/// The Service's port.
pub const SERVICE_PORT: i32 = 80;
/// The Deployment's `progressDeadlineSeconds`.
pub const PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// How long a pod's node (its kubelet) gets to answer a log or exec request.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);

type NamespaceOf = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The default namespace of an environment: its name.
pub fn env_namespace(env: &str) -> String {
    env.to_string()
}

/// Workloads as Deployments in a cluster.
#[derive(Clone)]
pub struct KubeTarget {
    client: Client,
    namespace_of: NamespaceOf,
    node_timeout: Duration,
    default_image: Option<String>,
}

impl std::fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTarget")
            .field("node_timeout", &self.node_timeout)
            .finish_non_exhaustive()
    }
}

impl KubeTarget {
    /// A target over `client`; `namespace_of` names the namespace of an
    /// environment (e.g. [`env_namespace`], or `|env| format!("pave-{env}")`).
    /// It must give each environment its own namespace.
    pub fn new(client: Client, namespace_of: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        Self {
            client,
            namespace_of: Arc::new(namespace_of),
            node_timeout: NODE_TIMEOUT,
            default_image: None,
        }
    }

    /// The image of a workload that names none (pave's own image runs the
    /// blueprints' default service, `pave demo`).
    pub fn with_default_image(mut self, image: impl Into<String>) -> Self {
        self.default_image = Some(image.into());
        self
    }

    /// `spec` as the cluster runs it: the default image when it names none,
    /// and a program given as a path on pave's host (`/usr/local/bin/pave`)
    /// by its name, which the image has on its `PATH`.
    pub fn for_cluster(&self, spec: &WorkloadSpec) -> WorkloadSpec {
        let mut spec = spec.clone();
        if spec.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            if let Some(image) = &self.default_image {
                spec.image = Some(image.clone());
                if let Some(first) = spec.command.first_mut() {
                    let path = std::path::Path::new(first.as_str());
                    if path.is_absolute() && path.file_name().is_some_and(|n| n == "pave") {
                        *first = "pave".into();
                    }
                }
            }
        }
        spec
    }

    /// A target whose environments live in namespaces of the same name.
    pub fn with_env_namespaces(client: Client) -> Self {
        Self::new(client, env_namespace)
    }

    /// How long a pod's node gets to answer a log or exec request (default [`NODE_TIMEOUT`]).
    pub fn with_node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// The client this target talks through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace of environment `env`.
    pub fn namespace(&self, env: &str) -> String {
        (self.namespace_of)(env)
    }

    /// The namespace of `key`, checked along with the key's name.
    fn namespace_of_key(&self, key: &WorkloadKey) -> Result<String> {
        let ns = self.namespace(&key.env);
        manifest::validate_key(key, &ns)?;
        Ok(ns)
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// The Deployment of `key`, its ReplicaSets and pods, as a status plus the
    /// pods behind its replicas; `None` when there is no Deployment.
    pub async fn observe(&self, key: &WorkloadKey) -> Result<Option<Observed>> {
        let ns = self.namespace_of_key(key)?;
        let deployments: Api<Deployment> = self.api(&ns);
        let object = format!("Deployment {ns}/{}", key.name);
        let Some(deployment) = deployments
            .get_opt(&key.name)
            .await
            .map_err(|e| error::api("get", &object, e))?
        else {
            return Ok(None);
        };
        // The Deployment's own selector, so a Deployment pave did not make reads too.
        let selector = deployment
            .spec
            .as_ref()
            .map(|s| status::selector_string(&s.selector))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| status::selector_string(&selector_of(&key.name)));
        let lp = ListParams::default().labels(&selector);
        let replica_sets: Api<ReplicaSet> = self.api(&ns);
        let pods: Api<Pod> = self.api(&ns);
        let (rs, pod_list) = tokio::join!(replica_sets.list(&lp), pods.list(&lp));
        let rs = rs.map_err(|e| error::api("list", format!("ReplicaSets of {object}"), e))?;
        let pod_list = pod_list.map_err(|e| error::api("list", format!("pods of {object}"), e))?;
        Ok(Some(status::observe(&deployment, &rs.items, &pod_list.items)))
    }

    /// The status of `key`; for a workload with no Deployment the empty status
    /// the local target gives an unknown workload.
    pub async fn workload_status(&self, key: &WorkloadKey) -> Result<WorkloadStatus> {
        Ok(self.observe(key).await?.map(|o| o.status).unwrap_or_default())
    }
}

fn selector_of(name: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some(manifest::selector_labels(name)),
        ..Default::default()
    }
}

#[async_trait]
impl Target for KubeTarget {
    async fn apply(&self, key: &WorkloadKey, spec: &WorkloadSpec) -> Result<WorkloadStatus, TargetError> {
        Ok(self.apply_workload(key, &self.for_cluster(spec)).await?)
    }

    async fn status(&self, key: &WorkloadKey) -> Result<WorkloadStatus, TargetError> {
        Ok(self.workload_status(key).await?)
    }

    async fn prune(&self, key: &WorkloadKey, keep: Option<i64>) -> Result<(), TargetError> {
        Ok(self.prune_revisions(key, keep).await?)
    }

    async fn logs(
        &self,
        key: &WorkloadKey,
        replica: Option<u32>,
        tail: usize,
    ) -> Result<Vec<String>, TargetError> {
        Ok(self.pod_logs(key, replica, tail).await?)
    }

    async fn follow_logs(
        &self,
        key: &WorkloadKey,
        replica: Option<u32>,
        tail: usize,
        out: tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), TargetError> {
        Ok(self.follow_pod_logs(key, replica, tail, out).await?)
    }

    async fn exec(
        &self,
        key: &WorkloadKey,
        command: &[String],
        out: tokio::sync::mpsc::Sender<(String, String)>,
    ) -> Result<i32, TargetError> {
        Ok(self.exec_in_pod(key, command, out).await?)
    }

    async fn wait_rolled_out(
        &self,
        key: &WorkloadKey,
        revision: i64,
        timeout: Duration,
    ) -> Option<Result<WorkloadStatus, TargetError>> {
        Some(self.watch_ready(key, revision, timeout).await.map_err(Into::into))
    }
}
