//! `discover` and `can_i`.

use serde_json::json;

use super::*;
use crate::{can_i, discover, REQUIRED_ACCESS};

/// The recorded Deployment list, with `web`'s managed-by label taken off, as
/// a workload someone else deployed would look.
fn foreign_deployments(continue_token: Option<&str>) -> Reply {
    let mut list = fixture("deployment-status.jsonl", "list deployments in namespace").json();
    for d in list["items"].as_array_mut().expect("items") {
        d["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("app.kubernetes.io/managed-by");
    }
    if let Some(token) = continue_token {
        list["metadata"]["continue"] = json!(token);
    }
    Reply::json(200, list)
}

#[tokio::test]
async fn discover_lists_unmanaged_deployments_and_stateful_sets_of_all_namespaces() {
    let (client, server) = mock_client(|r| match (r.method.as_str(), r.path.as_str(), r.q("continue")) {
        ("GET", "/apis/apps/v1/deployments", None) => foreign_deployments(Some("page-2")),
        ("GET", "/apis/apps/v1/deployments", Some("page-2")) => {
            Reply::empty_list("DeploymentList", "apps/v1")
        }
        ("GET", "/apis/apps/v1/statefulsets", None) => Reply::empty_list("StatefulSetList", "apps/v1"),
        _ => unexpected(r),
    });
    let found = discover(&client).await.expect("discovered");
    drop(client);
    assert_eq!(found.len(), 1);
    let w = &found[0];
    assert_eq!(
        (w.kind.as_str(), w.namespace.as_str(), w.name.as_str()),
        ("Deployment", "pave-demo", "web")
    );
    assert_eq!((w.replicas, w.ready), (2, 2));
    assert_eq!(w.images, ["nginx:1.25"]);

    let seen = server.requests().await;
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert_eq!(
            r.q("labelSelector"),
            Some("app.kubernetes.io/managed-by!=pave"),
            "{}",
            r.path
        );
        assert_eq!(r.q("limit"), Some("500"));
    }
}

#[tokio::test]
async fn can_i_asks_a_self_subject_access_review_for_each_permission() {
    let (client, server) = mock_client(|r| {
        if !r.is("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") {
            return unexpected(r);
        }
        let mut review = r.json();
        let attrs = review["spec"]["resourceAttributes"].clone();
        // An identity that may do everything but exec.
        let exec = attrs["subresource"] == "exec";
        review["status"] = if exec {
            json!({ "allowed": false, "reason": "no RBAC policy matched" })
        } else {
            json!({ "allowed": true, "reason": "RBAC: allowed by RoleBinding \"pave\"" })
        };
        Reply::json(201, review)
    });
    let checks = can_i(&client, Some("pave-demo")).await.expect("reviews");
    drop(client);
    assert_eq!(checks.len(), REQUIRED_ACCESS.len());
    let denied: Vec<String> = checks
        .iter()
        .filter(|c| !c.allowed)
        .map(|c| {
            format!(
                "{} {}/{}",
                c.verb,
                c.resource,
                c.subresource.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(denied, ["get pods/exec", "create pods/exec"]);
    assert_eq!(
        checks[0].reason.as_deref(),
        Some("RBAC: allowed by RoleBinding \"pave\"")
    );

    let seen = server.requests().await;
    assert_eq!(seen.len(), REQUIRED_ACCESS.len());
    let bodies: Vec<_> = seen
        .iter()
        .map(|r| r.json()["spec"]["resourceAttributes"].clone())
        .collect();
    assert!(bodies.contains(&json!({ "verb": "patch", "group": "apps", "resource": "deployments", "subresource": "scale", "namespace": "pave-demo" })));
    // Namespaces are cluster-scoped, and discover lists all namespaces.
    assert!(bodies.contains(&json!({ "verb": "patch", "group": "", "resource": "namespaces" })));
    assert!(bodies.contains(&json!({ "verb": "list", "group": "apps", "resource": "statefulsets" })));
}
