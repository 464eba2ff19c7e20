//! Adoption: a Deployment pave did not make becomes a pave workload. Its pod
//! template is read as revision 1 and left exactly as it is (nothing
//! restarts); only the Deployment's own metadata gets pave's labels and the
//! controller revision that is pave's revision 1 ([`crate::ADOPTED_KEY`]).
//! Later revisions keep its selector (immutable) and its container's name.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use kube::api::{Api, Patch, PatchParams};
use pave_targets::{Readiness, RestartPolicy, WorkloadKey, WorkloadSpec};
use serde_json::json;

use crate::error::{self, KubeError, Result};
use crate::status::K8S_REVISION;
use crate::{
    KubeTarget, ADOPTED_KEY, CONTAINER_PORT, ENVIRONMENT_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
};

/// A memory quantity (`64Mi`, `1Gi`, `512M`, bytes) in MiB, when it is a
/// whole number of them.
fn memory_mb(q: &str) -> Option<u64> {
    let (num, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = num.parse().ok()?;
    let bytes = match unit {
        "" => n,
        "Ki" => n * 1024,
        "Mi" => n * 1024 * 1024,
        "Gi" => n * 1024 * 1024 * 1024,
        "K" | "k" => n * 1000,
        "M" => n * 1000 * 1000,
        "G" => n * 1000 * 1000 * 1000,
        _ => return None,
    };
    let mb = bytes / (1024 * 1024);
    (mb * 1024 * 1024 == bytes && mb > 0).then_some(mb)
}

/// The workload spec of one container, or why pave cannot express it.
fn spec_of(c: &Container, replicas: u32) -> std::result::Result<WorkloadSpec, Vec<String>> {
    let mut why = Vec::new();
    let image = c.image.clone().filter(|i| !i.is_empty());
    if image.is_none() {
        why.push("its container names no image".to_string());
    }
    let command = match (&c.command, &c.args) {
        (Some(cmd), args) => cmd.iter().chain(args.iter().flatten()).cloned().collect(),
        (None, Some(args)) if !args.is_empty() => {
            why.push(
                "its container gives arguments to the image's entrypoint; a pave workload gives the whole command"
                    .into(),
            );
            vec![]
        }
        (None, _) => vec![],
    };
    let mut env = BTreeMap::new();
    for e in c.env.iter().flatten() {
        match (&e.value, &e.value_from) {
            (_, Some(_)) => why.push(format!(
                "env {} comes from a reference (valueFrom), which a pave workload does not express",
                e.name
            )),
            (v, None) => {
                env.insert(e.name.clone(), v.clone().unwrap_or_default());
            }
        }
    }
    if c.env_from.as_ref().is_some_and(|f| !f.is_empty()) {
        why.push("its container reads envFrom, which a pave workload does not express".into());
    }
    let port = c
        .ports
        .iter()
        .flatten()
        .any(|p| p.container_port == CONTAINER_PORT);
    let readiness = c.readiness_probe.as_ref().and_then(|p| {
        let on_port = |port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| {
            matches!(port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) if *n == CONTAINER_PORT)
        };
        if let Some(h) = p.http_get.as_ref().filter(|h| on_port(&h.port)) {
            return Some(Readiness::Http {
                path: h.path.clone().unwrap_or_else(|| "/".into()),
            });
        }
        p.tcp_socket.as_ref().filter(|t| on_port(&t.port)).map(|_| Readiness::Tcp)
    });
    let memory_limit_mb = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .and_then(|q| memory_mb(&q.0));
    if !why.is_empty() {
        return Err(why);
    }
    Ok(WorkloadSpec {
        revision: 1,
        command,
        env,
        replicas,
        port,
        readiness,
        restart: RestartPolicy::Always,
        memory_limit_mb,
        cwd: c.working_dir.clone(),
        image,
    })
}

impl KubeTarget {
    /// Takes the Deployment of `key` under management: returns its pod
    /// template as revision 1 and labels the Deployment (not its template).
    pub async fn adopt(&self, key: &WorkloadKey) -> Result<WorkloadSpec> {
        let ns = self.namespace_of_key(key)?;
        let object = format!("Deployment {ns}/{}", key.name);
        let api: Api<Deployment> = self.api(&ns);
        let d = api
            .get_opt(&key.name)
            .await
            .map_err(|e| error::api("get", &object, e))?
            .ok_or_else(|| KubeError::NotFound(object.clone()))?;
        let labels = d.metadata.labels.clone().unwrap_or_default();
        // Adopted already and never deployed by pave since: the same answer
        // again (a step run twice).
        let adopted_before =
            crate::status::adopted_revision(&d).is_some() && crate::status::pave_revision(&d) == Some(1);
        if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE) && !adopted_before {
            return Err(KubeError::Invalid(format!("{object} is managed by pave already")));
        }
        let k8s_revision = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(K8S_REVISION))
            .cloned()
            .ok_or_else(|| KubeError::Invalid(format!("{object} has not rolled out yet (no revision)")))?;
        let spec = d
            .spec
            .as_ref()
            .ok_or_else(|| KubeError::Invalid(format!("{object} has no spec")))?;
        let pod = spec.template.spec.as_ref();
        let containers = pod.map(|p| p.containers.as_slice()).unwrap_or_default();
        let [container] = containers else {
            return Err(KubeError::Invalid(format!(
                "{object} runs {} containers in a pod; a pave workload runs one",
                containers.len()
            )));
        };
        let replicas = u32::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
        let adopted = spec_of(container, replicas)
            .map_err(|why| KubeError::Invalid(format!("{object} cannot be adopted: {}", why.join("; "))))?;
        // Metadata only: the template (and so every pod) stays as it is.
        let patch = json!({
            "metadata": {
                "labels": { MANAGED_BY_LABEL: MANAGED_BY_VALUE, ENVIRONMENT_LABEL: key.env },
                "annotations": { ADOPTED_KEY: k8s_revision },
            }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        api.patch(&key.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| error::api("label", &object, e))?;
        Ok(adopted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_in_mib() {
        assert_eq!(memory_mb("64Mi"), Some(64));
        assert_eq!(memory_mb("1Gi"), Some(1024));
        assert_eq!(memory_mb("67108864"), Some(64));
        assert_eq!(memory_mb("100M"), None);
        assert_eq!(memory_mb("lots"), None);
    }
}
