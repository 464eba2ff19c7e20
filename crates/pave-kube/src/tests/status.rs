//! `status`: recorded Deployments, ReplicaSets and pods to `WorkloadStatus`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use pave_targets::{Condition, ContainerState, RevisionCount, Target, WorkloadStatus};
use serde_json::{json, Value};

use super::*;
use crate::status::{observe, replica_status};

fn ms(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .expect("timestamp")
        .as_millisecond()
}

fn condition(kind: &str, status: bool, reason: &str) -> (String, bool, String) {
    (kind.to_string(), status, reason.to_string())
}

fn conditions(st: &WorkloadStatus) -> Vec<(String, bool, String)> {
    st.conditions
        .iter()
        .map(|c: &Condition| (c.kind.clone(), c.status, c.reason.clone()))
        .collect()
}

fn pods_of(list: &Value, prefix: &str) -> Vec<Pod> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .map(|p| serde_json::from_value(p.clone()).expect("pod"))
        .collect()
}

#[tokio::test]
async fn status_of_a_rolled_out_deployment_has_two_ready_replicas() {
    let (target, server) = mock_target(|r| status_reads(r).unwrap_or_else(|| unexpected(r)));
    let st = target.status(&web()).await.expect("status");
    drop(target);

    // The recorded Deployment was not made by pave (no pave.dev/revision), so
    // the controller's revision numbers stand in: template revision 2.
    assert_eq!(st.revision, Some(2));
    assert_eq!(st.desired, 2);
    assert_eq!(st.ready, 2);
    // Revision 1's ReplicaSet has 0 replicas: not listed, like a pruned local revision.
    assert_eq!(
        st.revision_counts,
        BTreeMap::from([(
            2,
            RevisionCount {
                replicas: 2,
                ready: 2
            }
        )])
    );
    assert_eq!(
        conditions(&st),
        [
            condition("Available", true, "MinimumReplicasAvailable"),
            condition("Progressing", true, "NewReplicaSetAvailable"),
        ]
    );
    assert_eq!(st.replicas.len(), 2);
    for (i, (r, started)) in st
        .replicas
        .iter()
        .zip(["2026-12-03T21:43:02Z", "2026-12-03T21:43:04Z"])
        .enumerate()
    {
        assert_eq!(r.index, i as u32, "ordinal by pod name");
        assert_eq!(r.revision, 2);
        assert!(r.ready);
        assert_eq!(r.restart_count, 0);
        assert_eq!(
            r.state,
            ContainerState::Running {
                started_at: ms(started)
            }
        );
        assert_eq!(r.started_at, Some(ms(started)));
        assert_eq!(r.last_state, None, "an empty lastState is no state");
        assert_eq!((r.pid, r.port), (None, None));
    }

    let seen = server.requests().await;
    assert_eq!(seen.len(), 3);
    assert!(seen[0].is("GET", "/apis/apps/v1/namespaces/pave-demo/deployments/web"));
}

/// The same recording, with pave's revision written in as pave's apply writes it:
/// pave's numbers win over the controller's.
#[test]
fn pave_revisions_win_over_the_controllers() {
    let mut d = fixture("deployment-status.jsonl", "deployment web after rollout").json();
    d["spec"]["template"]["metadata"]["annotations"] = json!({ "pave.dev/revision": "7" });
    let mut rs = fixture("deployment-status.jsonl", "replicasets of web").json();
    for (item, rev) in rs["items"]
        .as_array_mut()
        .expect("items")
        .iter_mut()
        .zip(["6", "7"])
    {
        item["spec"]["template"]["metadata"]["annotations"] = json!({ "pave.dev/revision": rev });
    }
    let mut pods = fixture("pods.jsonl", "list pods labelSelector=app=web").json();
    for p in pods["items"].as_array_mut().expect("items") {
        p["metadata"]["labels"]["pave.dev/revision"] = json!("7");
    }
    let d: Deployment = serde_json::from_value(d).expect("deployment");
    let rs: Vec<k8s_openapi::api::apps::v1::ReplicaSet> =
        serde_json::from_value(rs["items"].clone()).expect("replica sets");
    let pods: Vec<Pod> = serde_json::from_value(pods["items"].clone()).expect("pods");
    let o = observe(&d, &rs, &pods);
    assert_eq!(o.status.revision, Some(7));
    assert_eq!(o.status.ready, 2);
    assert_eq!(o.status.revision_counts.keys().collect::<Vec<_>>(), [&7]);
    assert!(o.status.replicas.iter().all(|r| r.revision == 7));
    assert_eq!(o.pods[1].name, "web-5d67df66b-t6tjj");
}

#[test]
fn crash_loop_back_off_maps_state_last_state_and_restarts() {
    let list = fixture("pods.jsonl", "app in (crashy,oomy)").json();
    let pod = &pods_of(&list, "crashy-")[0];
    let r = replica_status(pod, 1);
    match &r.state {
        ContainerState::Waiting { reason, message } => {
            assert_eq!(reason, "CrashLoopBackOff");
            assert!(
                message.as_deref().is_some_and(|m| m.starts_with("back-off 20s")),
                "{message:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.last_state,
        Some(ContainerState::Terminated {
            reason: "Error".into(),
            exit_code: Some(1),
            signal: None,
            message: None,
            finished_at: ms("2026-12-03T21:43:19Z"),
        })
    );
    assert_eq!(r.restart_count, 2);
    assert!(!r.ready);
    assert_eq!(
        r.started_at,
        Some(ms("2026-12-03T21:43:17Z")),
        "the last run's start"
    );
}

#[test]
fn oom_killed_shows_in_last_state_with_exit_code_137() {
    let list = fixture("pods.jsonl", "app in (crashy,oomy)").json();
    let pod = &pods_of(&list, "oomy-")[0];
    let r = replica_status(pod, 1);
    // Between restarts the container waits in CrashLoopBackOff; the kill is the last state.
    assert_eq!(r.state.reason(), Some("CrashLoopBackOff"));
    match &r.last_state {
        Some(ContainerState::Terminated {
            reason, exit_code, ..
        }) => {
            assert_eq!(reason, "OOMKilled");
            assert_eq!(*exit_code, Some(137));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.restart_count, 2);
}

/// Deployment `crashy` (never Available) with pave's revision on it: its
/// conditions, and the local target's ReplicaFailure for the crashing container.
#[test]
fn a_crash_looping_revision_is_not_available_and_has_a_replica_failure() {
    let mut d = fixture("pods.jsonl", "deployment crashy").json();
    d["spec"]["template"]["metadata"]["annotations"]["pave.dev/revision"] = json!("1");
    let d: Deployment = serde_json::from_value(d).expect("deployment");
    let list = fixture("pods.jsonl", "app in (crashy,oomy)").json();
    let mut pods = pods_of(&list, "crashy-");
    for p in &mut pods {
        p.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("pave.dev/revision".into(), "1".into());
    }
    let st = observe(&d, &[], &pods).status;
    assert_eq!((st.revision, st.desired, st.ready), (Some(1), 1, 0));
    assert_eq!(
        conditions(&st),
        [
            condition("Available", false, "MinimumReplicasUnavailable"),
            condition("Progressing", true, "ReplicaSetUpdated"),
            condition("ReplicaFailure", true, "ContainerFailing"),
        ]
    );
    assert_eq!(st.conditions[2].message, "replica 0: CrashLoopBackOff");
}

/// rollout-stalled.jsonl: `nginx:bad` never pulls; the controller gave up
/// (ProgressDeadlineExceeded) while the old revision keeps serving.
#[tokio::test]
async fn a_stalled_rollout_shows_progress_deadline_exceeded_and_image_pull_back_off() {
    let (target, server) = mock_target(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/apis/apps/v1/namespaces/pave-demo/deployments/web") => {
            fixture("rollout-stalled.jsonl", "ProgressDeadlineExceeded").reply()
        }
        ("GET", "/apis/apps/v1/namespaces/pave-demo/replicasets") => {
            fixture("rollout-stalled.jsonl", "replicasets of web").reply()
        }
        ("GET", "/api/v1/namespaces/pave-demo/pods") => {
            fixture("rollout-stalled.jsonl", "pods of web").reply()
        }
        _ => unexpected(r),
    });
    let st = target.status(&web()).await.expect("status");
    drop(target);
    server.requests().await;

    assert_eq!((st.revision, st.desired, st.ready), (Some(4), 2, 0));
    assert_eq!(
        st.revision_counts,
        BTreeMap::from([
            (
                3,
                RevisionCount {
                    replicas: 2,
                    ready: 2
                }
            ),
            (
                4,
                RevisionCount {
                    replicas: 1,
                    ready: 0
                }
            ),
        ])
    );
    assert_eq!(
        conditions(&st),
        [
            condition("Available", true, "MinimumReplicasAvailable"),
            condition("Progressing", false, "ProgressDeadlineExceeded"),
        ]
    );
    assert!(st.conditions[1].message.contains("web-846bcbb75f"));
    let old: Vec<_> = st.of_revision(3).collect();
    assert_eq!(old.len(), 2);
    assert!(old.iter().all(|r| r.ready && r.state.is_running()));
    let new: Vec<_> = st.of_revision(4).collect();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].index, 0, "indices count per revision");
    assert!(!new[0].ready);
    assert_eq!(
        new[0].state,
        ContainerState::Waiting {
            reason: "ImagePullBackOff".into(),
            message: Some("Back-off pulling image \"nginx:bad\"".into()),
        }
    );
}

/// No recording has an unschedulable pod (podsim binds every pod), so this one
/// is the recorded ImagePullBackOff pod as the scheduler would leave it.
#[test]
fn a_pending_unschedulable_pod_waits_with_reason_unschedulable() {
    let mut pod = fixture("rollout-stalled.jsonl", "get pod in ImagePullBackOff").json();
    pod["spec"].as_object_mut().expect("spec").remove("nodeName");
    pod["status"] = json!({
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient memory.",
            "lastProbeTime": null, "lastTransitionTime": "2026-12-03T21:43:31Z"
        }],
        "qosClass": "Burstable"
    });
    let pod: Pod = serde_json::from_value(pod).expect("pod");
    let r = replica_status(&pod, 4);
    assert_eq!(
        r.state,
        ContainerState::Waiting {
            reason: "Unschedulable".into(),
            message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
        }
    );
    assert!(!r.ready);
    assert_eq!((r.restart_count, r.started_at, r.last_state), (0, None, None));
}

#[tokio::test]
async fn a_missing_deployment_is_the_local_targets_unknown_workload() {
    let (target, server) = mock_target(|r| {
        if r.is(
            "GET",
            "/apis/apps/v1/namespaces/pave-demo/deployments/does-not-exist",
        ) {
            fixture("errors.jsonl", "404 get missing deployment").reply()
        } else {
            unexpected(r)
        }
    });
    let st = target
        .status(&WorkloadKey::new("pave-demo", "does-not-exist"))
        .await
        .expect("a missing workload is not an error");
    assert_eq!(st, WorkloadStatus::default());

    // The local target says the same about a key it never saw.
    let dir = std::env::temp_dir().join(format!("pave-kube-local-{}", std::process::id()));
    let local = pave_targets::local::LocalTarget::new(&dir, vec!["pave-shim".into()]);
    let unknown = local
        .status(&WorkloadKey::new("pave-demo", "does-not-exist"))
        .await
        .expect("local status");
    assert_eq!(st, unknown);
    drop(target);
    assert_eq!(server.requests().await.len(), 1);
}
