//! From a Deployment, its ReplicaSets and its pods to a [`WorkloadStatus`],
//! filled the way the local target fills it. No I/O.
//!
//! * `revision`: pave's revision in the Deployment's pod template (annotation
//!   `pave.dev/revision`); for a Deployment pave did not make, the Deployment
//!   controller's own `deployment.kubernetes.io/revision`.
//! * `desired`: `spec.replicas`; `ready`: `readyReplicas` of the ReplicaSets of
//!   that revision.
//! * `revision_counts`: per revision, the ReplicaSets' `replicas`/`readyReplicas`
//!   (a revision appears while it has or wants pods, like the local target's
//!   replica directories).
//! * `conditions`: the Deployment's own (`Available`, `Progressing`,
//!   `ReplicaFailure`); when the controller reports no `ReplicaFailure` but
//!   containers of the current revision are failing, the local target's
//!   `ReplicaFailure`/`ContainerFailing` is added, so both targets say the same.
//! * `replicas`: one per live pod. `index` is an ordinal among the pods of the
//!   same revision sorted by name (the local target numbers replicas per
//!   revision too, and `logs(replica)` picks by it); it is not stable across pod
//!   replacements. `pid` and `port` have no counterpart.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ContainerState as K8sState, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use pave_targets::{Condition, ContainerState, ReplicaStatus, RevisionCount, WorkloadStatus};

use crate::{CONTAINER, REVISION_KEY};

/// The Deployment controller's revision annotation (on Deployments and ReplicaSets).
pub const K8S_REVISION: &str = "deployment.kubernetes.io/revision";

/// A pod behind a replica of the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    /// The workload's container in it (`app`, or an adopted pod's one).
    pub container: String,
    pub revision: i64,
    pub index: u32,
    pub ready: bool,
    pub running: bool,
    pub restart_count: u32,
}

/// The status, and the pods behind its replicas (same order).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub status: WorkloadStatus,
    pub pods: Vec<PodRef>,
}

fn ms(t: &Time) -> i64 {
    t.0.as_millisecond()
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<i64> {
    meta.annotations.as_ref()?.get(key)?.trim().parse().ok()
}

/// The Deployment controller's revision that an adopted Deployment had when
/// pave took it over (its pave revision 1), on the Deployment's metadata.
pub fn adopted_revision(d: &Deployment) -> Option<i64> {
    annotation(&d.metadata, crate::ADOPTED_KEY)
}

/// The controller's revision `k8s` as pave numbers it: 1 for the one adopted.
fn from_k8s(k8s: Option<i64>, adopted: Option<i64>) -> Option<i64> {
    match (k8s, adopted) {
        (Some(k), Some(a)) if k == a => Some(1),
        (k, _) => k,
    }
}

/// pave's revision in the pod template of a Deployment pave applied, or 1 for
/// the template it adopted; `None` for any other template.
pub fn pave_revision(d: &Deployment) -> Option<i64> {
    let template = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| annotation(m, REVISION_KEY));
    template.or_else(|| {
        let adopted = adopted_revision(d)?;
        (annotation(&d.metadata, K8S_REVISION) == Some(adopted)).then_some(1)
    })
}

/// pave's revision of a Deployment (see the module docs).
pub fn deployment_revision(d: &Deployment) -> Option<i64> {
    pave_revision(d).or_else(|| annotation(&d.metadata, K8S_REVISION))
}

/// pave's revision of a ReplicaSet (`adopted`: of its Deployment, see
/// [`adopted_revision`]).
pub fn replica_set_revision(rs: &ReplicaSet, adopted: Option<i64>) -> Option<i64> {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| annotation(m, REVISION_KEY))
        .or_else(|| from_k8s(annotation(&rs.metadata, K8S_REVISION), adopted))
}

/// A label selector as the `labelSelector` query parameter.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Whether `meta` names the object with uid `owner` as its controller.
fn controlled_by(meta: &ObjectMeta, owner: Option<&str>) -> bool {
    let Some(owner) = owner else {
        return true;
    };
    match &meta.owner_references {
        Some(refs) if !refs.is_empty() => refs.iter().any(|r| r.uid == owner),
        // No owner recorded (an object made by hand that matches the selector): keep it.
        _ => true,
    }
}

fn controller_name(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.name.as_str())
}

fn map_state(s: &K8sState) -> Option<ContainerState> {
    if let Some(r) = &s.running {
        return Some(ContainerState::Running {
            started_at: r.started_at.as_ref().map_or(0, ms),
        });
    }
    if let Some(t) = &s.terminated {
        let reason = t.reason.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| {
            if t.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            }
        });
        return Some(ContainerState::Terminated {
            reason,
            exit_code: Some(t.exit_code),
            signal: t.signal,
            message: t.message.clone().filter(|m| !m.is_empty()),
            finished_at: t.finished_at.as_ref().map_or(0, ms),
        });
    }
    s.waiting.as_ref().map(|w| ContainerState::Waiting {
        reason: w
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "ContainerCreating".into()),
        message: w.message.clone().filter(|m| !m.is_empty()),
    })
}

fn started_at(cs: &ContainerStatus) -> Option<i64> {
    let state = cs.state.as_ref();
    state
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .or_else(|| {
            state
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.started_at.as_ref())
        })
        .or_else(|| {
            cs.last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.started_at.as_ref())
        })
        .map(ms)
}

/// Whether the pod's `Ready` condition is true (what the ReplicaSet counts).
fn pod_ready(pod: &Pod, cs: Option<&ContainerStatus>) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    match conditions.and_then(|c| c.iter().find(|c| c.type_ == "Ready")) {
        Some(c) => c.status == "True",
        None => cs.is_some_and(|c| c.ready),
    }
}

/// One pod as a replica of `revision` (its `index` is set by the caller).
pub fn replica_status(pod: &Pod, revision: i64) -> ReplicaStatus {
    let status = pod.status.as_ref();
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let cs = statuses.iter().find(|c| c.name == CONTAINER).or(statuses.first());
    let state = cs.and_then(|c| c.state.as_ref()).and_then(map_state);
    let unschedulable = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"));
    let state = match (state, unschedulable) {
        (_, Some(c)) => ContainerState::Waiting {
            reason: "Unschedulable".into(),
            message: c.message.clone(),
        },
        (Some(s), None) => s,
        (None, None) => ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        },
    };
    ReplicaStatus {
        index: 0,
        revision,
        port: None,
        pid: None,
        state,
        ready: pod_ready(pod, cs),
        restart_count: cs.map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0)),
        last_state: cs.and_then(|c| c.last_state.as_ref()).and_then(map_state),
        started_at: cs.and_then(started_at),
        warnings: Vec::new(),
    }
}

/// A pod that no longer counts: being deleted, or finished (evicted pods stay `Failed`).
fn gone(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn count(v: Option<i32>) -> u32 {
    v.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// The status of a Deployment from it, its ReplicaSets and its pods.
pub fn observe(deployment: &Deployment, replica_sets: &[ReplicaSet], pods: &[Pod]) -> Observed {
    let uid = deployment.metadata.uid.as_deref();
    let revision = deployment_revision(deployment);
    let desired = count(Some(
        deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
    ));

    let mut rs_revision: BTreeMap<&str, i64> = BTreeMap::new();
    let mut counts: BTreeMap<i64, RevisionCount> = BTreeMap::new();
    for rs in replica_sets.iter().filter(|rs| controlled_by(&rs.metadata, uid)) {
        let Some(rev) = replica_set_revision(rs, adopted_revision(deployment)) else {
            continue;
        };
        if let Some(name) = rs.metadata.name.as_deref() {
            rs_revision.insert(name, rev);
        }
        let spec_replicas = count(rs.spec.as_ref().and_then(|s| s.replicas));
        let (replicas, ready) = rs
            .status
            .as_ref()
            .map_or((0, 0), |s| (count(Some(s.replicas)), count(s.ready_replicas)));
        if replicas > 0 || spec_replicas > 0 {
            let c = counts.entry(rev).or_default();
            c.replicas += replicas;
            c.ready += ready;
        }
    }

    let mut live: Vec<(i64, &str, &Pod)> = pods
        .iter()
        .filter(|p| !gone(p))
        .filter_map(|p| {
            let name = p.metadata.name.as_deref()?;
            let rev = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_KEY))
                .and_then(|v| v.parse().ok())
                .or_else(|| controller_name(&p.metadata).and_then(|rs| rs_revision.get(rs).copied()));
            match rev {
                Some(rev) => Some((rev, name, p)),
                None => {
                    tracing::debug!(pod = name, "pod with no known revision left out of the status");
                    None
                }
            }
        })
        .collect();
    live.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));

    let mut replicas = Vec::with_capacity(live.len());
    let mut refs = Vec::with_capacity(live.len());
    let mut next: BTreeMap<i64, u32> = BTreeMap::new();
    for (rev, name, pod) in live {
        let index = next.entry(rev).or_insert(0);
        let mut rs = replica_status(pod, rev);
        rs.index = *index;
        *index += 1;
        let spec_containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        let container = spec_containers
            .iter()
            .find(|c| c.name == CONTAINER)
            .or(spec_containers.first())
            .map_or_else(|| CONTAINER.to_string(), |c| c.name.clone());
        refs.push(PodRef {
            name: name.to_string(),
            container,
            revision: rev,
            index: rs.index,
            ready: rs.ready,
            running: rs.state.is_running(),
            restart_count: rs.restart_count,
        });
        replicas.push(rs);
    }

    let ready = revision.and_then(|r| counts.get(&r)).map_or(0, |c| c.ready);
    let conditions = conditions(deployment, revision, &replicas);
    Observed {
        status: WorkloadStatus {
            revision,
            revision_counts: counts,
            desired,
            ready,
            replicas,
            conditions,
        },
        pods: refs,
    }
}

fn conditions(deployment: &Deployment, revision: Option<i64>, replicas: &[ReplicaStatus]) -> Vec<Condition> {
    let mut out: Vec<Condition> = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| Condition {
            kind: c.type_.clone(),
            status: c.status == "True",
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
        .collect();
    // Kubernetes orders conditions by when they first appeared; pave shows
    // Available, Progressing, ReplicaFailure (as the local target does).
    let rank = |k: &str| match k {
        "Available" => 0,
        "Progressing" => 1,
        "ReplicaFailure" => 2,
        _ => 3,
    };
    out.sort_by_key(|c| rank(&c.kind));
    if let Some(revision) = revision {
        let failing: Vec<String> = replicas
            .iter()
            .filter(|r| r.revision == revision)
            .filter_map(|r| match r.state.reason() {
                Some(reason @ ("CrashLoopBackOff" | "OOMKilled" | "Error" | "ContainerCannotRun")) => {
                    Some(format!("replica {}: {reason}", r.index))
                }
                _ => None,
            })
            .collect();
        if !failing.is_empty() && !out.iter().any(|c| c.kind == "ReplicaFailure") {
            out.push(Condition {
                kind: "ReplicaFailure".into(),
                status: true,
                reason: "ContainerFailing".into(),
                message: failing.join("; "),
            });
        }
    }
    out
}

/// Whether a Deployment has rolled out completely (what `kubectl rollout status`
/// waits for): the controller saw the latest spec, every replica is updated,
/// ready and available, no old one is left, and `Available` is true.
pub fn rollout_complete(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (d.spec.as_ref(), d.status.as_ref()) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let available = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Available" && c.status == "True");
    observed
        && status.updated_replicas.unwrap_or(0) == want
        && status.ready_replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && available
}

/// The `Progressing=False` condition of a Deployment whose latest spec the
/// controller has seen (an old one says nothing about a new template).
pub fn stalled(d: &Deployment) -> Option<(String, String)> {
    let status = d.status.as_ref()?;
    if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return None;
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing" && c.status == "False")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// A one-line account of a Deployment's rollout, for errors.
pub fn progress(d: &Deployment) -> String {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else {
        return format!("0/{want} ready, no status yet");
    };
    let mut out = format!(
        "{}/{want} updated, {} ready, {} available, {} in all (generation {} observed {})",
        s.updated_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
        s.replicas.unwrap_or(0),
        d.metadata.generation.unwrap_or(0),
        s.observed_generation.unwrap_or(0),
    );
    for c in s.conditions.iter().flatten() {
        out.push_str(&format!(
            "; {}={} {}",
            c.type_,
            c.status,
            c.reason.as_deref().unwrap_or("")
        ));
    }
    out
}
