//! Writes: namespaces, the workload's objects (server-side apply), scale,
//! restart, prune.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::Status;
use pave_targets::{WorkloadKey, WorkloadSpec, WorkloadStatus};
use serde_json::json;

use crate::error::{self, is_not_found, KubeError, Result};
use crate::{
    manifest, status, KubeTarget, FIELD_MANAGER, RESTARTED_AT, RESTART_FIELD_MANAGER, SCALE_FIELD_MANAGER,
};

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER)
}

fn update_params(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.to_string()),
        ..PatchParams::default()
    }
}

/// Whether an apply was refused only because other managers own `.spec.replicas`.
fn only_replicas_conflict(status: &Status) -> bool {
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or(&[]);
    status.code == 409
        && !causes.is_empty()
        && causes
            .iter()
            .all(|c| c.reason == "FieldManagerConflict" && c.field == ".spec.replicas")
}

/// Whether every field of a conflict belongs to a hand edit (`kubectl edit`,
/// `kubectl set image`, `kubectl scale` …: managers named `kubectl…`): that
/// is drift, and a deploy through pave takes the fields back. A controller
/// owning fields is a conflict of configuration, not drift.
fn only_hand_edits_conflict(status: &Status) -> bool {
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or(&[]);
    status.code == 409
        && !causes.is_empty()
        && causes.iter().all(|c| {
            c.reason == "FieldManagerConflict"
                && c.message
                    .split('"')
                    .nth(1)
                    .is_some_and(|manager| manager.starts_with("kubectl"))
        })
}

/// An adopted Deployment whose template is still the one adopted.
fn adopted_untouched(d: &Deployment) -> bool {
    status::adopted_revision(d).is_some()
        && status::pave_revision(d) == Some(1)
        && d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .is_none_or(|a| !a.contains_key(crate::REVISION_KEY))
}

/// What cannot change about a Deployment pave did not make (an adopted one):
/// its selector (immutable), which the new template's labels must match,
/// and its one container's name (a new name would be a second container).
pub(crate) fn keep_shape(new: &mut Deployment, live: &Deployment) -> Result<()> {
    let (Some(ns), Some(ls)) = (new.spec.as_mut(), live.spec.as_ref()) else {
        return Ok(());
    };
    if ns.selector != ls.selector {
        if ls
            .selector
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty())
        {
            return Err(KubeError::Invalid(
                "the Deployment's selector has matchExpressions, which pave's template cannot be made to match"
                    .into(),
            ));
        }
        let keep = ls.selector.match_labels.clone().unwrap_or_default();
        let labels = ns
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        labels.extend(keep);
        ns.selector = ls.selector.clone();
    }
    let live_containers = ls
        .template
        .spec
        .as_ref()
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    if let ([theirs], Some(pod)) = (live_containers, ns.template.spec.as_mut()) {
        if let [mine] = pod.containers.as_mut_slice() {
            if theirs.name != mine.name {
                mine.name = theirs.name.clone();
            }
        }
    }
    Ok(())
}

/// Whether an error says the namespace itself is missing (from the
/// NamespaceLifecycle admission plugin on a create).
fn namespace_missing(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s)
        if s.code == 404 && s.details.as_ref().is_some_and(|d| d.kind == "namespaces"))
}

impl KubeTarget {
    /// Server-side applies the Namespace of environment `env` with the labels
    /// `app.kubernetes.io/managed-by=pave`, `pave.dev/environment=<env>` over `labels`.
    pub async fn ensure_namespace(&self, env: &str, labels: &BTreeMap<String, String>) -> Result<Namespace> {
        let ns = self.namespace(env);
        manifest::validate_namespace(env, &ns)?;
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.patch(
            &ns,
            &apply_params(),
            &Patch::Apply(&manifest::namespace(&ns, env, labels)),
        )
        .await
        .map_err(|e| error::api("apply", format!("Namespace {ns}"), e))
    }

    /// Makes `spec` the desired state of `key`: applies the Secret, the Deployment
    /// and the Service (or deletes a Service left from a revision with a port),
    /// then reads the status.
    pub async fn apply_workload(&self, key: &WorkloadKey, spec: &WorkloadSpec) -> Result<WorkloadStatus> {
        let ns = self.namespace_of_key(key)?;
        let m = manifest::build(key, &ns, spec)?;
        let name = key.name.as_str();

        // The Secret first: pods of the new template read it at start.
        let secrets: Api<Secret> = self.api(&ns);
        let secret_name = manifest::secret_name(name);
        let secret_object = format!("Secret {ns}/{secret_name}");
        match secrets
            .patch(&secret_name, &apply_params(), &Patch::Apply(&m.secret))
            .await
        {
            Ok(_) => {}
            Err(e) if namespace_missing(&e) => {
                tracing::info!(namespace = %ns, "namespace missing: creating it");
                self.ensure_namespace(&key.env, &BTreeMap::new()).await?;
                secrets
                    .patch(&secret_name, &apply_params(), &Patch::Apply(&m.secret))
                    .await
                    .map_err(|e| error::api("apply", &secret_object, e))?;
            }
            Err(e) => return Err(error::api("apply", &secret_object, e)),
        }

        // The same revision again (a scale, a retried step): its template is
        // what runs, so only the replica count can differ, and that goes
        // through the scale subresource, as `kubectl scale` does.
        let deployments: Api<Deployment> = self.api(&ns);
        let live = deployments
            .get_opt(name)
            .await
            .map_err(|e| error::api("get", format!("Deployment {ns}/{name}"), e))?;
        let mut deployment = m.deployment.clone();
        if let Some(d) = &live {
            keep_shape(&mut deployment, d)?;
        }
        match live
            .as_ref()
            .filter(|d| status::pave_revision(d) == Some(spec.revision))
        {
            Some(d) => {
                let want = i32::try_from(spec.replicas).unwrap_or(i32::MAX);
                if d.spec.as_ref().and_then(|s| s.replicas) != Some(want) {
                    self.scale(key, spec.replicas).await?;
                }
            }
            None => {
                if let Some(d) = live.as_ref().filter(|d| adopted_untouched(d)) {
                    self.take_over(&ns, name, &deployment, d).await?;
                }
                self.apply_deployment(&ns, name, &deployment).await?;
            }
        }

        let services: Api<Service> = self.api(&ns);
        let service_object = format!("Service {ns}/{name}");
        match &m.service {
            Some(svc) => {
                services
                    .patch(name, &apply_params(), &Patch::Apply(svc))
                    .await
                    .map_err(|e| error::api("apply", &service_object, e))?;
            }
            None => match services.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(error::api("delete", &service_object, e)),
            },
        }
        self.workload_status(key).await
    }

    /// The first revision pave rolls out over an adopted Deployment replaces
    /// it whole, with its field ownership cleared: the fields other managers
    /// set (a literal env `value` where pave sets `valueFrom`, a port pave does
    /// not have) would otherwise stay beside pave's and make an invalid or
    /// different pod. Its metadata (labels, annotations) is kept.
    async fn take_over(
        &self,
        ns: &str,
        name: &str,
        deployment: &Deployment,
        live: &Deployment,
    ) -> Result<()> {
        let api: Api<Deployment> = self.api(ns);
        let mut whole = deployment.clone();
        let mut labels = live.metadata.labels.clone().unwrap_or_default();
        labels.extend(whole.metadata.labels.take().unwrap_or_default());
        whole.metadata.labels = Some(labels);
        whole.metadata.annotations = live.metadata.annotations.clone();
        whole.metadata.resource_version = live.metadata.resource_version.clone();
        // `[{}]` clears every manager's ownership (the documented way).
        whole.metadata.managed_fields = Some(vec![Default::default()]);
        tracing::info!(deployment = %format!("{ns}/{name}"), "first pave revision of an adopted Deployment: replacing it");
        api.replace(
            name,
            &kube::api::PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            },
            &whole,
        )
        .await
        .map_err(|e| error::api("replace", format!("Deployment {ns}/{name}"), e))?;
        Ok(())
    }

    /// Applies the Deployment; takes `.spec.replicas` back by force when that
    /// is the only conflict.
    async fn apply_deployment(&self, ns: &str, name: &str, deployment: &Deployment) -> Result<Deployment> {
        let api: Api<Deployment> = self.api(ns);
        let object = format!("Deployment {ns}/{name}");
        match api.patch(name, &apply_params(), &Patch::Apply(deployment)).await {
            Ok(d) => Ok(d),
            // Force only over `.spec.replicas`. That field is shared by design:
            // `KubeTarget::scale` (manager `pave-scaler`, through the scale
            // subresource), `kubectl scale` or a one-off force-apply change it
            // without a revision, and then own it, so pave's next apply
            // conflicts (ssa-conflict.jsonl). The applied spec carries the
            // replica count the engine wants now (a scale it recorded is part of
            // the next spec), so pave's value must win, and taking the field back
            // stops the conflict from coming back on every deploy. A conflict on
            // any other field means another tool (a GitOps controller, someone's
            // `kubectl apply`) manages the pod template; overwriting it silently
            // would start a tug of war, so that fails with the managers' names.
            // (An HPA also writes `.spec.replicas`; a workload under an HPA
            // should not send replicas at all, which is for later.)
            Err(kube::Error::Api(s)) if only_replicas_conflict(&s) || only_hand_edits_conflict(&s) => {
                tracing::info!(
                    deployment = %object,
                    message = %s.message,
                    "fields pave applies were changed by hand (or .spec.replicas by a scaler): applying again with force"
                );
                api.patch(name, &apply_params().force(), &Patch::Apply(deployment))
                    .await
                    .map_err(|e| error::api("apply (force)", &object, e))
            }
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "Conflict" => Err(KubeError::Conflict {
                object,
                message: s.message.clone(),
            }),
            Err(e) => Err(error::api("apply", &object, e)),
        }
    }

    /// Sets the replica count of `key` through the Deployment's scale
    /// subresource (no new revision); returns the new `spec.replicas`.
    pub async fn scale(&self, key: &WorkloadKey, replicas: u32) -> Result<u32> {
        let ns = self.namespace_of_key(key)?;
        let n = i32::try_from(replicas)
            .map_err(|_| KubeError::Invalid(format!("{replicas} replicas is too many")))?;
        let api: Api<Deployment> = self.api(&ns);
        let scale = api
            .patch_scale(
                &key.name,
                &update_params(SCALE_FIELD_MANAGER),
                &Patch::Merge(json!({ "spec": { "replicas": n } })),
            )
            .await
            .map_err(|e| error::api("scale", format!("Deployment {ns}/{}", key.name), e))?;
        Ok(scale
            .spec
            .and_then(|s| s.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(replicas))
    }

    /// Replaces every pod of `key` (same revision), like `kubectl rollout
    /// restart`: sets the pod-template annotation `kubectl.kubernetes.io/restartedAt`.
    /// The annotation belongs to its own field manager, so pave's next apply keeps it.
    pub async fn restart(&self, key: &WorkloadKey) -> Result<()> {
        let ns = self.namespace_of_key(key)?;
        let api: Api<Deployment> = self.api(&ns);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch =
            json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: now } } } } });
        api.patch(
            &key.name,
            &update_params(RESTART_FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| error::api("restart", format!("Deployment {ns}/{}", key.name), e))?;
        Ok(())
    }

    /// `None`: deletes the Deployment, Service and Secret (missing ones are fine;
    /// the pods go with their ReplicaSets, by background garbage collection).
    /// `Some(rev)`: scales the ReplicaSets of other revisions that still have
    /// replicas to zero. The Deployment controller does that by itself once the
    /// new pods are available, and deletes ReplicaSets beyond
    /// `revisionHistoryLimit`; pave keeps the zero-replica ones, which are what
    /// `kubectl rollout undo` goes back to. Scaling explicitly makes a retired
    /// revision's pods go now (after a failed rollout, after a rollback).
    pub async fn prune_revisions(&self, key: &WorkloadKey, keep: Option<i64>) -> Result<()> {
        let ns = self.namespace_of_key(key)?;
        let name = key.name.as_str();
        let Some(keep) = keep else {
            let secret = manifest::secret_name(name);
            let dp = DeleteParams::background();
            let deployments: Api<Deployment> = self.api(&ns);
            let services: Api<Service> = self.api(&ns);
            let secrets: Api<Secret> = self.api(&ns);
            let (d, s, c) = tokio::join!(
                deployments.delete(name, &dp),
                services.delete(name, &dp),
                secrets.delete(&secret, &dp)
            );
            for (result, object) in [
                (d.map(|_| ()), format!("Deployment {ns}/{name}")),
                (s.map(|_| ()), format!("Service {ns}/{name}")),
                (c.map(|_| ()), format!("Secret {ns}/{secret}")),
            ] {
                match result {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(error::api("delete", object, e)),
                }
            }
            return Ok(());
        };
        let deployments: Api<Deployment> = self.api(&ns);
        let object = format!("Deployment {ns}/{name}");
        let Some(deployment) = deployments
            .get_opt(name)
            .await
            .map_err(|e| error::api("get", &object, e))?
        else {
            return Ok(());
        };
        let selector = deployment
            .spec
            .as_ref()
            .map(|s| status::selector_string(&s.selector))
            .unwrap_or_default();
        let api: Api<ReplicaSet> = self.api(&ns);
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| error::api("list", format!("ReplicaSets of {object}"), e))?;
        let uid = deployment.metadata.uid.as_deref();
        for rs in list.items {
            let owned = rs
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(o.uid.as_str()) == uid);
            let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let adopted = status::adopted_revision(&deployment);
            let (Some(rs_name), Some(rev)) = (
                rs.metadata.name.clone(),
                status::replica_set_revision(&rs, adopted),
            ) else {
                continue;
            };
            if !owned || rev == keep || replicas == 0 {
                continue;
            }
            tracing::info!(replica_set = %rs_name, revision = rev, "scaling a retired revision to 0");
            api.patch_scale(
                &rs_name,
                &update_params(FIELD_MANAGER),
                &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
            )
            .await
            .map_err(|e| error::api("scale", format!("ReplicaSet {ns}/{rs_name}"), e))?;
        }
        Ok(())
    }
}
