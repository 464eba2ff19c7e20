//! `watch_ready` over the recorded watch stream (watch.jsonl: a rollout
//! nginx:1.25 → nginx:1.26, controller revision 2 → 3).

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::KubeError;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/pave-demo/deployments";

fn is_watch(r: &Seen) -> bool {
    r.is("GET", DEPLOYMENTS) && r.q("watch") == Some("true")
}

fn is_list(r: &Seen) -> bool {
    r.is("GET", DEPLOYMENTS) && r.q("watch").is_none()
}

/// Reads after the rollout: the recorded Deployment; no ReplicaSets or pods
/// were recorded at that moment.
fn final_reads(r: &Seen) -> Option<Reply> {
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/apis/apps/v1/namespaces/pave-demo/deployments/web") => {
            Some(fixture("watch.jsonl", "deployment after watched rollout").reply())
        }
        ("GET", "/apis/apps/v1/namespaces/pave-demo/replicasets") => {
            Some(Reply::empty_list("ReplicaSetList", "apps/v1"))
        }
        ("GET", "/api/v1/namespaces/pave-demo/pods") => Some(Reply::empty_list("PodList", "v1")),
        _ => None,
    }
}

#[tokio::test]
async fn watch_ready_follows_the_watch_until_the_rollout_is_complete() {
    let (target, server) = mock_target(|r| {
        if is_list(r) {
            return fixture("watch.jsonl", "list deployments (for resourceVersion)").reply();
        }
        if is_watch(r) {
            return fixture("watch.jsonl", "watch deployments").reply();
        }
        final_reads(r).unwrap_or_else(|| unexpected(r))
    });
    let st = target
        .watch_ready(&web(), 3, Duration::from_secs(60))
        .await
        .expect("rolled out");
    assert_eq!((st.revision, st.desired), (Some(3), 2));
    drop(target);

    let seen = server.requests().await;
    assert!(is_list(&seen[0]));
    assert_eq!(seen[0].q("fieldSelector"), Some("metadata.name=web"));
    let watch = &seen[1];
    assert!(is_watch(watch));
    assert_eq!(watch.q("fieldSelector"), Some("metadata.name=web"));
    let recorded = fixture("watch.jsonl", "watch deployments");
    assert_eq!(recorded.q("resourceVersion").as_deref(), Some("401"));
    assert_eq!(
        watch.q("resourceVersion"),
        Some("401"),
        "from the list's resourceVersion"
    );
    assert_eq!(watch.q("allowWatchBookmarks"), Some("true"));
    let secs: u64 = watch
        .q("timeoutSeconds")
        .expect("timeout")
        .parse()
        .expect("number");
    assert!((1..=61).contains(&secs), "{secs}");
    // One list, one watch (no polling), then the status reads.
    assert_eq!(seen.iter().filter(|r| is_watch(r) || is_list(r)).count(), 2);
}

/// Cut the recorded stream after the first three events plus the bookmark:
/// the server "closes" the watch, and pave resumes from the bookmark's
/// resourceVersion (462).
#[tokio::test]
async fn a_closed_watch_resumes_from_the_last_resource_version() {
    let stream = fixture("watch.jsonl", "watch deployments").response_body;
    let lines: Vec<&str> = stream.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 10, "9 MODIFIED and a BOOKMARK");
    let first = format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[2], lines[9]);
    let rest = format!("{}\n", lines[3..9].join("\n"));
    let mut watches = 0;
    let (target, server) = mock_target(move |r| {
        if is_list(r) {
            return fixture("watch.jsonl", "list deployments (for resourceVersion)").reply();
        }
        if is_watch(r) {
            watches += 1;
            return Reply::Text(200, if watches == 1 { first.clone() } else { rest.clone() });
        }
        final_reads(r).unwrap_or_else(|| unexpected(r))
    });
    target
        .watch_ready(&web(), 3, Duration::from_secs(60))
        .await
        .expect("rolled out");
    drop(target);
    let seen = server.requests().await;
    let versions: Vec<&str> = seen
        .iter()
        .filter(|r| is_watch(r))
        .map(|r| r.q("resourceVersion").expect("rv"))
        .collect();
    assert_eq!(versions, ["401", "462"]);
}

#[tokio::test]
async fn watch_ready_fails_on_progress_deadline_exceeded() {
    let stalled = fixture("rollout-stalled.jsonl", "ProgressDeadlineExceeded").json();
    let list = json!({
        "kind": "DeploymentList", "apiVersion": "apps/v1",
        "metadata": { "resourceVersion": "495" }, "items": [stalled],
    });
    let (target, server) = mock_target(move |r| {
        if is_list(r) {
            Reply::json(200, list.clone())
        } else {
            unexpected(r)
        }
    });
    let err = target
        .watch_ready(&web(), 4, Duration::from_secs(60))
        .await
        .expect_err("stalled");
    match &err {
        KubeError::RolloutStalled {
            revision,
            reason,
            message,
            ..
        } => {
            assert_eq!(*revision, 4);
            assert_eq!(reason, "ProgressDeadlineExceeded");
            assert!(message.contains("web-846bcbb75f"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with("rollout of Deployment pave-demo/web revision 4 stalled"));
    drop(target);
    assert_eq!(server.requests().await.len(), 1, "no watch needed");
}

#[tokio::test]
async fn watch_ready_times_out_with_the_last_progress() {
    let (target, server) = mock_target(|r| {
        if is_list(r) {
            fixture("watch.jsonl", "list deployments (for resourceVersion)").reply()
        } else if is_watch(r) {
            Reply::Hang
        } else {
            unexpected(r)
        }
    });
    let err = target
        .watch_ready(&web(), 3, Duration::from_millis(300))
        .await
        .expect_err("timeout");
    assert!(
        matches!(err, KubeError::RolloutTimeout { revision: 3, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("2/2 updated"), "{text}");
    drop(target);
    server.requests().await;
}

#[tokio::test]
async fn watch_ready_fails_when_a_newer_revision_replaced_the_template() {
    let (target, server) = mock_target(|r| {
        if is_list(r) {
            fixture("watch.jsonl", "list deployments (for resourceVersion)").reply()
        } else {
            unexpected(r)
        }
    });
    let err = target
        .watch_ready(&web(), 1, Duration::from_secs(5))
        .await
        .expect_err("superseded");
    assert!(
        matches!(
            err,
            KubeError::Superseded {
                revision: 1,
                current: 2,
                ..
            }
        ),
        "{err:?}"
    );
    drop(target);
    server.requests().await;
}
