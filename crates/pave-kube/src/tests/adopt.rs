//! Adoption of a Deployment pave did not make: the recorded `web` (selector
//! `app=web`, controller revision 2).

use serde_json::{json, Value};

use super::*;

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/pave-demo/deployments/web";

fn recorded() -> Value {
    let mut d = fixture("deployment-status.jsonl", "deployment web after rollout").json();
    if let Some(labels) = d["metadata"]["labels"].as_object_mut() {
        labels.remove(crate::MANAGED_BY_LABEL);
    }
    // The recording reads a ConfigMap with envFrom, which a workload does not express.
    if let Some(c) = d["spec"]["template"]["spec"]["containers"][0].as_object_mut() {
        c.remove("envFrom");
    }
    d
}

fn adopted() -> Value {
    let mut d = recorded();
    d["metadata"]["labels"][crate::MANAGED_BY_LABEL] = json!("pave");
    d["metadata"]["annotations"][crate::ADOPTED_KEY] = json!("2");
    d
}

#[tokio::test]
async fn adoption_reads_the_template_and_labels_only_the_deployment() {
    let (target, server) = mock_target(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", DEPLOYMENT) => Reply::json(200, recorded()),
        ("PATCH", DEPLOYMENT) => Reply::json(200, adopted()),
        _ => unexpected(r),
    });
    let spec = target.adopt(&web()).await.expect("adopted");
    assert_eq!(spec.revision, 1);
    assert_eq!(spec.replicas, 2);
    assert!(
        spec.image.as_deref().is_some_and(|i| i.starts_with("nginx:")),
        "{spec:?}"
    );
    assert_eq!(spec.env.get("PAVE_VERSION").map(String::as_str), Some("2"));
    assert!(!spec.port, "the container listens on 80, not on pave's 8080");
    drop(target);
    let seen = server.requests().await;
    let patch = seen.iter().find(|r| r.is("PATCH", DEPLOYMENT)).expect("a patch");
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    // Metadata only: the template, and so every pod, stays as it is.
    assert_eq!(
        patch.json(),
        json!({ "metadata": {
            "labels": { crate::MANAGED_BY_LABEL: "pave", crate::ENVIRONMENT_LABEL: "pave-demo" },
            "annotations": { crate::ADOPTED_KEY: "2" },
        } })
    );
}

#[tokio::test]
async fn a_deployment_pave_manages_or_cannot_express_is_not_adopted() {
    let mut two = recorded();
    let c = two["spec"]["template"]["spec"]["containers"][0].clone();
    let mut sidecar = c.clone();
    sidecar["name"] = json!("sidecar");
    two["spec"]["template"]["spec"]["containers"] = json!([c, sidecar]);
    let mut from_ref = recorded();
    from_ref["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{ "name": "DB", "valueFrom": { "secretKeyRef": { "name": "db", "key": "url" } } }]);
    let mut managed = recorded();
    managed["metadata"]["labels"][crate::MANAGED_BY_LABEL] = json!("pave");
    managed["spec"]["template"]["metadata"]["annotations"][crate::REVISION_KEY] = json!("3");
    for (live, expect) in [
        (managed, "managed by pave already"),
        (two, "runs 2 containers"),
        (from_ref, "env DB comes from a reference"),
    ] {
        let (target, server) = mock_target(move |r| match (r.method.as_str(), r.path.as_str()) {
            ("GET", DEPLOYMENT) => Reply::json(200, live.clone()),
            _ => unexpected(r),
        });
        let err = target.adopt(&web()).await.expect_err("refused").to_string();
        assert!(err.contains(expect), "{err}");
        drop(target);
        assert!(
            !server.requests().await.iter().any(|r| r.method == "PATCH"),
            "nothing changed"
        );
    }
}

#[tokio::test]
async fn an_adopted_deployment_is_revision_1_and_a_new_revision_keeps_its_selector_and_container() {
    let (target, _server) = mock_target(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", DEPLOYMENT) => Reply::json(200, adopted()),
        _ => status_reads(r).unwrap_or_else(|| unexpected(r)),
    });
    let status = target.workload_status(&web()).await.expect("status");
    assert_eq!(
        status.revision,
        Some(1),
        "the adopted template is pave's revision 1"
    );
    assert!(
        !status.replicas.is_empty() && status.replicas.iter().all(|r| r.revision == 1),
        "{:?}",
        status.replicas
    );

    let mut live = adopted();
    live["spec"]["template"]["spec"]["containers"][0]["name"] = json!("web");
    let (target, server) = mock_target(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("PATCH", p) if p.ends_with("/secrets/web-env") => fixture("ssa.jsonl", "secret: create").reply(),
        ("GET", DEPLOYMENT) => Reply::json(200, live.clone()),
        ("PATCH" | "PUT", DEPLOYMENT) => Reply::json(200, live.clone()),
        ("PATCH", p) if p.ends_with("/services/web") => fixture("ssa.jsonl", "service: create").reply(),
        _ => status_reads(r).unwrap_or_else(|| unexpected(r)),
    });
    target
        .apply_workload(&web(), &full_spec())
        .await
        .expect("applied");
    drop(target);
    let seen = server.requests().await;
    // The first pave revision replaces the adopted object whole, ownership cleared…
    let put = seen
        .iter()
        .find(|r| r.is("PUT", DEPLOYMENT))
        .expect("a replace")
        .json();
    assert_eq!(put["metadata"]["managedFields"], json!([{}]));
    assert!(put["metadata"]["resourceVersion"].is_string(), "{put}");
    assert_eq!(
        put["metadata"]["annotations"][crate::ADOPTED_KEY],
        "2",
        "the adopted revision stays known"
    );
    assert_eq!(
        put["spec"]["selector"],
        json!({ "matchLabels": { "app": "web" } })
    );
    // …then pave applies it as ever.
    let applied = seen
        .iter()
        .find(|r| r.is("PATCH", DEPLOYMENT))
        .expect("an apply")
        .json();
    assert_eq!(
        applied["spec"]["selector"],
        json!({ "matchLabels": { "app": "web" } })
    );
    assert_eq!(applied["spec"]["template"]["metadata"]["labels"]["app"], "web");
    assert_eq!(
        applied["spec"]["template"]["spec"]["containers"][0]["name"],
        "web"
    );
    assert_eq!(
        applied["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// An adoption run twice (its step resumed) gives the same spec again.
#[tokio::test]
async fn adopting_again_what_was_adopted_is_the_same_answer() {
    let (target, _server) = mock_target(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", DEPLOYMENT) => Reply::json(200, adopted()),
        ("PATCH", DEPLOYMENT) => Reply::json(200, adopted()),
        _ => unexpected(r),
    });
    let spec = target.adopt(&web()).await.expect("adopted again");
    assert_eq!((spec.revision, spec.replicas), (1, 2));
}
