//! Error messages (errors.jsonl: real `Status` objects) and nodes that do not answer.

use std::time::Duration;

use pave_targets::{Target, TargetError};
use serde_json::json;

use super::*;
use crate::KubeError;

#[tokio::test]
async fn not_found_names_the_object_and_carries_the_apis_message() {
    let (target, server) = mock_target(|r| {
        if r.is(
            "PATCH",
            "/apis/apps/v1/namespaces/pave-demo/deployments/does-not-exist/scale",
        ) {
            fixture("errors.jsonl", "404 get missing deployment").reply()
        } else {
            unexpected(r)
        }
    });
    let err = target
        .scale(&WorkloadKey::new("pave-demo", "does-not-exist"), 2)
        .await
        .expect_err("missing");
    assert_eq!(err.metric_label(), "not_found");
    assert_eq!(
        err.to_string(),
        "scale Deployment pave-demo/does-not-exist: deployments.apps \"does-not-exist\" not found (NotFound, HTTP 404)"
    );
    let err = TargetError::from(err);
    assert!(
        matches!(&err, TargetError::NotFound(m) if m.contains("Deployment pave-demo/does-not-exist")),
        "{err}"
    );
    drop(target);
    server.requests().await;
}

#[tokio::test]
async fn forbidden_names_the_object_and_the_user_the_api_names() {
    let (target, server) = mock_target(|r| {
        if r.is("GET", "/api/v1/namespaces/pave-demo/pods") {
            return fixture("errors.jsonl", "403 limited token lists pods").reply();
        }
        status_reads(r).unwrap_or_else(|| unexpected(r))
    });
    let err = target.status(&web()).await.expect_err("forbidden");
    assert_eq!(
        err.to_string(),
        "list pods of Deployment pave-demo/web: pods is forbidden: User \"pave-limited\" cannot list \
         resource \"pods\" in API group \"\" in the namespace \"pave-demo\" (Forbidden, HTTP 403)"
    );
    assert!(matches!(err, TargetError::Failed(_)));
    drop(target);
    server.requests().await;
}

#[tokio::test]
async fn an_invalid_deployment_is_an_invalid_workload_with_the_apis_causes() {
    let (target, server) = mock_target(|r| match (r.method.as_str(), r.path.as_str()) {
        ("PATCH", "/api/v1/namespaces/pave-demo/secrets/web-env") => {
            fixture("ssa.jsonl", "secret: create").reply()
        }
        ("PATCH", "/apis/apps/v1/namespaces/pave-demo/deployments/web") => {
            fixture("errors.jsonl", "422 apply full deployment with replicas=-1").reply()
        }
        ("GET", "/apis/apps/v1/namespaces/pave-demo/deployments/web") => no_deployment(),
        _ => unexpected(r),
    });
    let err = target.apply(&web(), &full_spec()).await.expect_err("invalid");
    match &err {
        TargetError::Invalid(m) => {
            assert!(m.starts_with("apply Deployment pave-demo/web: "), "{m}");
            assert!(
                m.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
                "{m}"
            );
            assert!(m.ends_with("(Invalid, HTTP 422)"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    drop(target);
    server.requests().await;
}

/// 1.28 answers a badly typed apply with 500 and no reason.
#[tokio::test]
async fn a_500_without_a_reason_keeps_the_apis_message() {
    let (target, server) = mock_target(|r| match (r.method.as_str(), r.path.as_str()) {
        ("PATCH", "/api/v1/namespaces/pave-demo/secrets/web-env") => {
            fixture("ssa.jsonl", "secret: create").reply()
        }
        ("PATCH", "/apis/apps/v1/namespaces/pave-demo/deployments/web") => {
            fixture("errors.jsonl", "500 apply with bad replicas type").reply()
        }
        ("GET", "/apis/apps/v1/namespaces/pave-demo/deployments/web") => no_deployment(),
        _ => unexpected(r),
    });
    let err = target
        .apply_workload(&web(), &full_spec())
        .await
        .expect_err("500");
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("failed to create typed patch object"), "{text}");
    assert!(text.ends_with("(HTTP 500)"), "{text}");
    drop(target);
    server.requests().await;
}

/// Logs: the status reads, then the log subresource of each pod of the
/// current revision.
fn log_server(log_reply: fn(&Seen) -> Reply) -> impl FnMut(&Seen) -> Reply + Send + 'static {
    move |r: &Seen| {
        if r.path.ends_with("/log") {
            return log_reply(r);
        }
        status_reads(r).unwrap_or_else(|| unexpected(r))
    }
}

#[tokio::test]
async fn logs_read_the_log_subresource_of_each_current_pod() {
    let (target, server) = mock_target(log_server(|r| {
        let pod = r.path.split('/').nth(6).expect("pod name");
        Reply::Text(200, format!("{pod} one\n{pod} two\n"))
    }));
    let lines = target.logs(&web(), None, 3).await.expect("logs");
    assert_eq!(
        lines,
        [
            "web-5d67df66b-r5rhx two",
            "web-5d67df66b-t6tjj one",
            "web-5d67df66b-t6tjj two"
        ]
    );
    let one = target.logs(&web(), Some(1), 10).await.expect("logs of replica 1");
    assert_eq!(one, ["web-5d67df66b-t6tjj one", "web-5d67df66b-t6tjj two"]);
    let none = target.logs(&web(), Some(5), 10).await.expect_err("no replica 5");
    assert!(
        matches!(&none, TargetError::NotFound(m) if m.contains("no replica 5 in revision 2")),
        "{none}"
    );
    drop(target);
    let seen = server.requests().await;
    let logs: Vec<&Seen> = seen.iter().filter(|r| r.path.ends_with("/log")).collect();
    assert_eq!(logs.len(), 3);
    assert_eq!(
        logs[0].path,
        "/api/v1/namespaces/pave-demo/pods/web-5d67df66b-r5rhx/log"
    );
    assert_eq!(logs[0].q("container"), Some("app"));
    assert_eq!(logs[0].q("tailLines"), Some("3"));
}

#[tokio::test]
async fn a_node_that_does_not_answer_logs_is_a_clear_error_not_a_hang() {
    let (client, server) = mock_client(log_server(|_| Reply::Hang));
    let target = crate::KubeTarget::with_env_namespaces(client).with_node_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = target.pod_logs(&web(), Some(0), 5).await.expect_err("no kubelet");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, KubeError::NodeUnreachable { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(
            "the node of pod pave-demo/web-5d67df66b-r5rhx did not answer (no kubelet reachable?)"
        ),
        "{err}"
    );
    drop(target);
    server.requests().await;
}

#[tokio::test]
async fn a_kubelet_the_api_server_cannot_dial_is_a_node_error_with_the_apis_message() {
    let (target, server) = mock_target(log_server(|_| {
        Reply::status(
            500,
            "InternalError",
            "Get \"https://127.0.0.1:10250/containerLogs/pave-demo/web-5d67df66b-r5rhx/app\": dial tcp 127.0.0.1:10250: connect: connection refused",
            json!({}),
        )
    }));
    let err = target.pod_logs(&web(), Some(0), 5).await.expect_err("no kubelet");
    let text = err.to_string();
    assert!(text.contains("did not answer (no kubelet reachable?)"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    drop(target);
    server.requests().await;
}

#[tokio::test]
async fn exec_on_a_node_that_does_not_answer_times_out_with_a_clear_error() {
    let (client, server) = mock_client(|r| {
        if r.path.ends_with("/exec") {
            return Reply::Hang;
        }
        status_reads(r).unwrap_or_else(|| unexpected(r))
    });
    let target = crate::KubeTarget::with_env_namespaces(client).with_node_timeout(Duration::from_millis(200));
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let err = target
        .exec(&web(), &["env".to_string()], tx)
        .await
        .expect_err("no kubelet");
    assert!(
        err.to_string().contains("did not answer (no kubelet reachable?)"),
        "{err}"
    );
    drop(target);
    let seen = server.requests().await;
    let exec = seen
        .iter()
        .find(|r| r.path.ends_with("/exec"))
        .expect("exec request");
    assert_eq!(
        exec.path,
        "/api/v1/namespaces/pave-demo/pods/web-5d67df66b-r5rhx/exec"
    );
    assert_eq!(exec.q("container"), Some("app"));
    assert_eq!(exec.q("command"), Some("env"));
    assert_eq!(exec.q("stdout"), Some("true"));
}
