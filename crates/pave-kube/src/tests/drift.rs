//! Drift against a Deployment as the API server returns it (the recorded
//! one, with its server-filled defaults, carrying pave's applied fields).

use serde_json::{json, Value};

use super::*;
use crate::manifest;

/// `overlay` applied over `base` the way server-side apply merges: objects
/// by key, lists of named entries by name.
fn merge(base: &Value, overlay: &Value) -> Value {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match b.get(k) {
                    Some(bv) => merge(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(b), Value::Array(o)) if o.iter().all(|e| e.get("name").is_some()) => Value::Array(
            o.iter()
                .map(|oe| match b.iter().find(|be| be.get("name") == oe.get("name")) {
                    Some(be) => merge(be, oe),
                    None => oe.clone(),
                })
                .collect(),
        ),
        (_, o) => o.clone(),
    }
}

/// The recorded Deployment `web`, renamed to pave's container and carrying
/// what pave applies for `full_spec()`.
fn live_as_pave_applied() -> Value {
    let mut live = fixture("deployment-status.jsonl", "deployment web after rollout").json();
    live["spec"]["template"]["spec"]["containers"][0]["name"] = json!(crate::CONTAINER);
    let m = manifest::build(&web(), "pave-demo", &full_spec()).unwrap();
    let mut want = serde_json::to_value(&m.deployment).unwrap();
    // The selector is immutable: the recorded one stays, as it would.
    want["spec"]["selector"] = live["spec"]["selector"].clone();
    merge(&live, &want)
}

fn serve(live: Value) -> (KubeTarget, ApiServer) {
    mock_target(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/apis/apps/v1/namespaces/pave-demo/deployments/web") => Reply::json(200, live.clone()),
        _ => unexpected(r),
    })
}

#[tokio::test]
async fn what_pave_applied_is_not_drift_whatever_the_server_filled_in() {
    let mut live = live_as_pave_applied();
    // Another manager's label is not pave's to compare.
    live["metadata"]["labels"]["team"] = json!("payments");
    let (target, _server) = serve(live);
    // A selector pave did not write is the one difference of this fixture.
    let d = target.drift(&web(), &full_spec()).await.unwrap();
    let unexpected: Vec<_> = d
        .fields
        .iter()
        .filter(|f| !f.path.starts_with("spec.selector"))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert!(!d.missing);
}

#[tokio::test]
async fn a_changed_image_and_an_added_variable_are_drift() {
    let mut live = live_as_pave_applied();
    let c = &mut live["spec"]["template"]["spec"]["containers"][0];
    c["image"] = json!("nginx:1.27");
    c["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "DEBUG", "value": "1"}));
    live["spec"]["replicas"] = json!(5);
    let (target, _server) = serve(live);
    let d = target.drift(&web(), &full_spec()).await.unwrap();
    assert!(d.drifted);
    let mut paths: Vec<&str> = d.fields.iter().map(|f| f.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "spec.replicas",
            "spec.template.spec.containers[app].env[DEBUG]",
            "spec.template.spec.containers[app].image",
        ]
    );
    let image = d.fields.iter().find(|f| f.path.ends_with(".image")).unwrap();
    assert_eq!(
        (image.pave.clone(), image.live.clone()),
        (json!("nginx:1.25"), json!("nginx:1.27"))
    );
    assert!(
        d.diff.contains("-") && d.diff.contains("nginx:1.27"),
        "{}",
        d.diff
    );
    // The value of a secret-backed variable never shows: only its reference.
    assert!(!d.diff.contains("s3cr3t"), "{}", d.diff);
}

#[tokio::test]
async fn a_deleted_deployment_is_drift() {
    let (target, _server) = mock_target(|r| match r.method.as_str() {
        "GET" => Reply::status(
            404,
            "NotFound",
            "deployments.apps \"web\" not found",
            json!({"name": "web", "group": "apps", "kind": "deployments"}),
        ),
        _ => unexpected(r),
    });
    let d = target.drift(&web(), &full_spec()).await.unwrap();
    assert!(d.drifted && d.missing);
}
