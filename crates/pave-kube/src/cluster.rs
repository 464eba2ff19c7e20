//! Cluster-wide reads: workloads pave did not make (for adoption), and what the
//! client's identity may do (for `pave targets get`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, ListParams, ObjectList, PostParams};
use kube::Client;
use serde::{Deserialize, Serialize};

use crate::error::{self, Result};
use crate::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// A workload found in the cluster that pave does not manage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredWorkload {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `spec.replicas`.
    pub replicas: u32,
    /// `status.readyReplicas`.
    pub ready: u32,
    /// The images of the pod template's containers.
    pub images: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

fn images(t: &PodTemplateSpec) -> Vec<String> {
    t.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.image.clone())
        .collect()
}

fn count(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// Lists every page of `api`.
async fn list_all<K>(api: &Api<K>, lp: ListParams, what: &str) -> Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.limit(500);
    let mut items = Vec::new();
    loop {
        let page: ObjectList<K> = api
            .list(&lp)
            .await
            .map_err(|e| error::api("list", what.to_string(), e))?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(items),
        }
    }
}

/// Deployments and StatefulSets in all namespaces that are not labelled
/// `app.kubernetes.io/managed-by=pave`, sorted by namespace, name and kind.
/// (Helm releases are for later.)
pub async fn discover(client: &Client) -> Result<Vec<DiscoveredWorkload>> {
    // `!=` also matches objects without the label.
    let lp = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}!={MANAGED_BY_VALUE}"));
    let deployments: Api<Deployment> = Api::all(client.clone());
    let stateful_sets: Api<StatefulSet> = Api::all(client.clone());
    let (d, s) = tokio::join!(
        list_all(&deployments, lp.clone(), "Deployments in all namespaces"),
        list_all(&stateful_sets, lp, "StatefulSets in all namespaces")
    );
    let mut out: Vec<DiscoveredWorkload> = d?
        .into_iter()
        .map(|d| DiscoveredWorkload {
            kind: "Deployment".into(),
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            name: d.metadata.name.clone().unwrap_or_default(),
            replicas: count(Some(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
            ready: count(d.status.as_ref().and_then(|s| s.ready_replicas)),
            images: d.spec.as_ref().map(|s| images(&s.template)).unwrap_or_default(),
            labels: d.metadata.labels.clone().unwrap_or_default(),
        })
        .collect();
    out.extend(s?.into_iter().map(|s| DiscoveredWorkload {
        kind: "StatefulSet".into(),
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
        replicas: count(Some(s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
        ready: count(s.status.as_ref().and_then(|s| s.ready_replicas)),
        images: s.spec.as_ref().map(|s| images(&s.template)).unwrap_or_default(),
        labels: s.metadata.labels.clone().unwrap_or_default(),
    }));
    out.sort_by(|a, b| (&a.namespace, &a.name, &a.kind).cmp(&(&b.namespace, &b.name, &b.kind)));
    Ok(out)
}

/// One permission pave needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub verb: &'static str,
    /// API group (`""` is the core group).
    pub group: &'static str,
    pub resource: &'static str,
    /// `""` for none.
    pub subresource: &'static str,
    /// Checked for all namespaces (cluster-scoped resources, `discover`).
    pub cluster_wide: bool,
    /// What pave does with it.
    pub used_for: &'static str,
}

const fn access(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    cluster_wide: bool,
    used_for: &'static str,
) -> Access {
    Access {
        verb,
        group,
        resource,
        subresource,
        cluster_wide,
        used_for,
    }
}

/// Every verb and resource the Kubernetes target uses. A server-side apply is
/// a `patch`, and also needs `create` when the object does not exist yet.
pub const REQUIRED_ACCESS: &[Access] = &[
    access("create", "", "namespaces", "", true, "ensure_namespace (apply)"),
    access("patch", "", "namespaces", "", true, "ensure_namespace (apply)"),
    access(
        "list",
        "",
        "namespaces",
        "",
        true,
        "an environment's namespace (by its label)",
    ),
    access(
        "create",
        "",
        "secrets",
        "",
        false,
        "apply: the workload's env Secret",
    ),
    access(
        "patch",
        "",
        "secrets",
        "",
        false,
        "apply: the workload's env Secret",
    ),
    access("delete", "", "secrets", "", false, "prune"),
    access(
        "create",
        "",
        "services",
        "",
        false,
        "apply: the workload's Service",
    ),
    access(
        "patch",
        "",
        "services",
        "",
        false,
        "apply: the workload's Service",
    ),
    access("delete", "", "services", "", false, "apply (port removed), prune"),
    access("get", "apps", "deployments", "", false, "status"),
    access("list", "apps", "deployments", "", false, "watch_ready"),
    access("watch", "apps", "deployments", "", false, "watch_ready"),
    access("create", "apps", "deployments", "", false, "apply"),
    access("patch", "apps", "deployments", "", false, "apply, restart"),
    access("delete", "apps", "deployments", "", false, "prune"),
    access("patch", "apps", "deployments", "scale", false, "scale"),
    access("list", "apps", "replicasets", "", false, "status, prune"),
    access(
        "patch",
        "apps",
        "replicasets",
        "scale",
        false,
        "prune (retire a revision)",
    ),
    access("list", "", "pods", "", false, "status"),
    access("get", "", "pods", "log", false, "logs"),
    // Kubernetes 1.28 authorizes an exec over WebSocket (kube-rs) as `get`;
    // SPDY (kubectl) and newer servers ask for `create`.
    access("get", "", "pods", "exec", false, "exec (WebSocket)"),
    access("create", "", "pods", "exec", false, "exec"),
    access("list", "apps", "deployments", "", true, "discover"),
    access("list", "apps", "statefulsets", "", true, "discover"),
    access(
        "get",
        "",
        "secrets",
        "",
        false,
        "resources: the credentials Secret",
    ),
    access("get", "apps", "statefulsets", "", false, "resources: status"),
    access("create", "apps", "statefulsets", "", false, "resources: apply"),
    access("patch", "apps", "statefulsets", "", false, "resources: apply"),
    access("delete", "apps", "statefulsets", "", false, "resources: delete"),
    access("get", "", "services", "", false, "resources: check"),
    access("get", "", "pods", "", false, "resources: readiness"),
    access("delete", "", "pods", "", false, "resources: repair"),
    access(
        "deletecollection",
        "",
        "persistentvolumeclaims",
        "",
        false,
        "resources: delete the data",
    ),
    // Helm keeps its release records in Secrets of the release's namespace.
    access("list", "", "secrets", "", false, "helm: release records"),
    access("update", "", "secrets", "", false, "helm: release records"),
];

/// The answer for one [`Access`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessCheck {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    pub used_for: String,
    pub allowed: bool,
    /// The authorizer's reason or evaluation error, if it gave one.
    pub reason: Option<String>,
}

/// Asks the API server (SelfSubjectAccessReview) whether the client's identity
/// may do each of [`REQUIRED_ACCESS`], in `namespace` (or all namespaces).
pub async fn can_i(client: &Client, namespace: Option<&str>) -> Result<Vec<AccessCheck>> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let checks = REQUIRED_ACCESS.iter().map(|a| {
        let api = api.clone();
        let ns = if a.cluster_wide {
            None
        } else {
            namespace.map(str::to_string)
        };
        async move {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(a.verb.into()),
                        group: Some(a.group.into()),
                        resource: Some(a.resource.into()),
                        subresource: (!a.subresource.is_empty()).then(|| a.subresource.into()),
                        namespace: ns.clone(),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            let what = format!("SelfSubjectAccessReview ({} {})", a.verb, a.resource);
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| error::api("create", what, e))?;
            let status = answer.status.unwrap_or_default();
            Ok(AccessCheck {
                verb: a.verb.into(),
                group: a.group.into(),
                resource: a.resource.into(),
                subresource: (!a.subresource.is_empty()).then(|| a.subresource.into()),
                namespace: ns,
                used_for: a.used_for.into(),
                allowed: status.allowed,
                reason: status
                    .reason
                    .filter(|r| !r.is_empty())
                    .or(status.evaluation_error.filter(|e| !e.is_empty())),
            })
        }
    });
    futures::future::join_all(checks).await.into_iter().collect()
}
