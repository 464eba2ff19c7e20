//! Namespace, apply (Secret, Deployment, Service), the SSA conflict, scale,
//! restart, prune.

use std::collections::BTreeMap;

use pave_targets::{Target, TargetError, WorkloadSpec};
use serde_json::{json, Value};

use super::*;
use crate::KubeError;

const APPLY: &str = "application/apply-patch+yaml";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/pave-demo/deployments/web";
const SECRET: &str = "/api/v1/namespaces/pave-demo/secrets/web-env";
const SERVICE: &str = "/api/v1/namespaces/pave-demo/services/web";

fn assert_applied_by_pave(r: &Seen) {
    assert_eq!(r.method, "PATCH", "{}", r.path);
    assert_eq!(r.content_type.as_deref(), Some(APPLY), "{}", r.path);
    assert_eq!(r.q("fieldManager"), Some("pave"), "{}", r.path);
}

#[tokio::test]
async fn ensure_namespace_applies_the_namespace_with_pave_labels() {
    let (target, server) = mock_target(|r| {
        if r.is("PATCH", "/api/v1/namespaces/pave-demo") {
            fixture("ssa.jsonl", "namespace: create").reply()
        } else {
            unexpected(r)
        }
    });
    let extra = BTreeMap::from([("team".to_string(), "platform".to_string())]);
    let ns = target
        .ensure_namespace("pave-demo", &extra)
        .await
        .expect("namespace applied");
    assert_eq!(ns.metadata.name.as_deref(), Some("pave-demo"));
    drop(target);

    let seen = server.requests().await;
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_applied_by_pave(r);
    assert_eq!(r.q("force"), None, "a namespace apply never forces");
    let body = r.json();
    assert_eq!(body["kind"], "Namespace");
    assert_eq!(body["metadata"]["name"], "pave-demo");
    assert_eq!(
        body["metadata"]["labels"],
        json!({ "app.kubernetes.io/managed-by": "pave", "pave.dev/environment": "pave-demo", "team": "platform" })
    );
}

#[tokio::test]
async fn apply_sends_secret_deployment_and_service_and_returns_the_status() {
    let mut first_read = true;
    let (target, server) = mock_target(move |r| {
        // The first apply finds no Deployment; the status is read after it.
        if r.is("GET", DEPLOYMENT) && std::mem::take(&mut first_read) {
            return no_deployment();
        }
        if let Some(reply) = status_reads(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("PATCH", SECRET) => fixture("ssa.jsonl", "secret: create").reply(),
            ("PATCH", DEPLOYMENT) => fixture("ssa.jsonl", "deployment: create").reply(),
            ("PATCH", SERVICE) => fixture("ssa.jsonl", "service: create").reply(),
            _ => unexpected(r),
        }
    });
    let status = target.apply(&web(), &full_spec()).await.expect("applied");
    drop(target);

    // The status is read after the apply (the recorded rollout: 2 of 2 ready).
    assert_eq!(status.desired, 2);
    assert_eq!(status.ready, 2);
    assert_eq!(status.replicas.len(), 2);

    // Reads aside (the live Deployment first, the status after), the writes in order.
    let all = server.requests().await;
    let seen: Vec<&Seen> = all.iter().filter(|r| r.method != "GET").collect();
    let paths: Vec<(&str, &str)> = seen
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        &paths[..3],
        &[("PATCH", SECRET), ("PATCH", DEPLOYMENT), ("PATCH", SERVICE)]
    );
    for r in &seen[..3] {
        assert_applied_by_pave(r);
        assert_eq!(r.q("force"), None, "the first apply never forces");
    }

    // The Secret holds the resolved values (base64: "czNjcjN0" is "s3cr3t", as
    // the API server stored it in the recording).
    let secret = seen[0].json();
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], "web-env");
    assert_eq!(secret["metadata"]["namespace"], "pave-demo");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"]["DB_PASSWORD"], "czNjcjN0");
    assert!(secret.get("stringData").is_none());

    // The Deployment points at the Secret and never carries a value of it.
    let d = seen[1].json();
    assert!(
        !seen[1].body.contains("s3cr3t"),
        "a secret value leaked into the Deployment: {}",
        seen[1].body
    );
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["metadata"]["labels"]["app.kubernetes.io/managed-by"], "pave");
    assert_eq!(d["metadata"]["labels"]["app.kubernetes.io/name"], "web");
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(
        spec["selector"]["matchLabels"],
        json!({ "app.kubernetes.io/managed-by": "pave", "app.kubernetes.io/name": "web" })
    );
    let template = &spec["template"];
    assert_eq!(template["metadata"]["labels"]["pave.dev/revision"], "2");
    assert_eq!(
        template["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "pave"
    );
    assert_eq!(template["metadata"]["labels"]["app.kubernetes.io/name"], "web");
    assert_eq!(template["metadata"]["annotations"]["pave.dev/revision"], "2");
    let containers = template["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["name"], "app");
    assert_eq!(c["image"], "nginx:1.25");
    assert_eq!(c["command"], json!(["nginx", "-g", "daemon off;"]));
    assert_eq!(c["workingDir"], "/srv");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(
        c["ports"],
        json!([{ "name": "http", "containerPort": 8080, "protocol": "TCP" }])
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({ "path": "/healthz", "port": 8080 })
    );
    let env: BTreeMap<String, Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_string(), e.clone()))
        .collect();
    for key in ["DB_PASSWORD", "LOG_LEVEL"] {
        assert_eq!(
            env[key],
            json!({ "name": key, "valueFrom": { "secretKeyRef": { "name": "web-env", "key": key, "optional": false } } })
        );
    }
    assert_eq!(env["PORT"], json!({ "name": "PORT", "value": "8080" }));
    assert_eq!(
        env["PAVE_REVISION"],
        json!({ "name": "PAVE_REVISION", "value": "2" })
    );

    // The Service: port 80 to the container's 8080.
    let s = seen[2].json();
    assert_eq!(s["kind"], "Service");
    assert_eq!(
        s["spec"]["ports"],
        json!([{ "name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP" }])
    );
    assert_eq!(s["spec"]["selector"], spec["selector"]["matchLabels"]);

    // The live Deployment before the writes (same revision: only a scale),
    // then the status: the Deployment, and its ReplicaSets and pods by its selector.
    let reads: Vec<&Seen> = all.iter().filter(|r| r.method == "GET").collect();
    assert!(all[1].is("GET", DEPLOYMENT));
    assert!(reads[1].is("GET", DEPLOYMENT));
    for r in &reads[2..] {
        assert_eq!(
            r.q("labelSelector"),
            Some("app=web"),
            "the Deployment's own selector"
        );
    }
    assert_eq!(all.len(), 7);
}

#[tokio::test]
async fn apply_without_an_image_is_refused_before_any_request() {
    let (target, server) = mock_target(unexpected);
    let spec = WorkloadSpec {
        image: None,
        ..full_spec()
    };
    let err = target.apply(&web(), &spec).await.expect_err("no image");
    assert!(
        matches!(&err, TargetError::Invalid(m) if m == "a Kubernetes workload needs an image"),
        "{err}"
    );
    drop(target);
    assert!(server.requests().await.is_empty());
}

#[tokio::test]
async fn apply_without_a_port_deletes_the_service_and_sets_no_port() {
    let (target, server) = mock_target(|r| {
        if let Some(reply) = status_reads(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("PATCH", SECRET) => fixture("ssa.jsonl", "secret: create").reply(),
            ("PATCH", DEPLOYMENT) => fixture("ssa.jsonl", "deployment: create").reply(),
            ("DELETE", SERVICE) => Reply::status(
                404,
                "NotFound",
                "services \"web\" not found",
                json!({ "name": "web", "kind": "services" }),
            ),
            _ => unexpected(r),
        }
    });
    let spec = WorkloadSpec {
        port: false,
        readiness: None,
        ..full_spec()
    };
    target
        .apply(&web(), &spec)
        .await
        .expect("applied (a missing Service is fine)");
    drop(target);
    // Reads aside (the live Deployment first, the status after), the writes in order.
    let seen: Vec<_> = server
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    let d = seen[1].json();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(c.get("ports").is_none());
    assert!(c.get("readinessProbe").is_none());
    assert!(!c["env"]
        .as_array()
        .expect("env")
        .iter()
        .any(|e| e["name"] == "PORT"));
    assert!(seen[2].is("DELETE", SERVICE));
}

/// Applies `full_spec` where the first Deployment apply gets the recorded 409 of `conflict_step`.
async fn apply_after_conflict(conflict_step: &'static str) {
    let (target, server) = mock_target(move |r| {
        if r.is("GET", DEPLOYMENT) {
            return fixture("ssa-conflict.jsonl", "after conflict resolution").reply();
        }
        if let Some(reply) = status_reads(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str(), r.q("force")) {
            ("PATCH", SECRET, _) => fixture("ssa.jsonl", "secret: create").reply(),
            ("PATCH", DEPLOYMENT, None) => fixture("ssa-conflict.jsonl", conflict_step).reply(),
            ("PATCH", DEPLOYMENT, Some("true")) => {
                fixture("ssa-conflict.jsonl", "pave applies replicas=2 with force=true").reply()
            }
            ("PATCH", SERVICE, _) => fixture("ssa.jsonl", "service: create").reply(),
            _ => unexpected(r),
        }
    });
    let status = target
        .apply(&web(), &full_spec())
        .await
        .expect("applied after forcing");
    assert_eq!(status.desired, 2);
    drop(target);
    let seen = server.requests().await;
    let applies: Vec<&Seen> = seen.iter().filter(|r| r.is("PATCH", DEPLOYMENT)).collect();
    assert_eq!(applies.len(), 2);
    assert_eq!(applies[0].q("force"), None);
    assert_eq!(applies[1].q("force"), Some("true"));
    assert_eq!(applies[1].q("fieldManager"), Some("pave"));
    assert_eq!(
        applies[0].body, applies[1].body,
        "the forced apply sends the same object"
    );
}

/// ssa-conflict.jsonl: `pave-scaler` (an update through the scale subresource)
/// owns `.spec.replicas`; pave's apply gets 409 FieldManagerConflict on that
/// field only, and pave applies again with force.
#[tokio::test]
async fn apply_takes_back_spec_replicas_by_force_after_a_scale() {
    apply_after_conflict("while pave-scaler").await;
}

/// The same after `other-team` force-applied `.spec.replicas`.
#[tokio::test]
async fn apply_takes_back_spec_replicas_by_force_after_another_managers_apply() {
    apply_after_conflict("pave applies replicas=2 with force=false").await;
}

#[tokio::test]
async fn apply_does_not_force_over_fields_other_than_replicas() {
    let (target, server) = mock_target(|r| {
        match (r.method.as_str(), r.path.as_str()) {
        ("PATCH", SECRET) => fixture("ssa.jsonl", "secret: create").reply(),
        ("PATCH", DEPLOYMENT) => Reply::status(
            409,
            "Conflict",
            "Apply failed with 2 conflicts: conflicts with \"argocd-controller\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"app\"].image",
            json!({ "causes": [
                { "reason": "FieldManagerConflict", "message": "conflict with \"argocd-controller\" using apps/v1", "field": ".spec.replicas" },
                { "reason": "FieldManagerConflict", "message": "conflict with \"argocd-controller\" using apps/v1", "field": ".spec.template.spec.containers[name=\"app\"].image" }
            ] }),
        ),
        ("GET", DEPLOYMENT) => no_deployment(),
        _ => unexpected(r),
    }
    });
    let err = target
        .apply_workload(&web(), &full_spec())
        .await
        .expect_err("conflict");
    assert!(matches!(err, KubeError::Conflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("Deployment pave-demo/web"), "{text}");
    assert!(text.contains("argocd-controller"), "{text}");
    drop(target);
    let seen = server.requests().await;
    assert_eq!(
        seen.iter().filter(|r| r.is("PATCH", DEPLOYMENT)).count(),
        1,
        "no forced retry"
    );
}

#[tokio::test]
async fn scale_patches_the_scale_subresource() {
    // Answered by the recorded exchange with the same method and path.
    let (target, server) =
        mock_target(|r| fixture_for("scale.jsonl", r).map_or_else(|| unexpected(r), |f| f.reply()));
    assert_eq!(target.scale(&web(), 3).await.expect("scaled"), 3);
    drop(target);
    let seen = server.requests().await;
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    let recorded = fixture("scale.jsonl", "patch scale replicas=3");
    assert!(r.is(&recorded.method, &recorded.path));
    assert_eq!(r.content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(r.q("fieldManager"), Some("pave-scaler"));
    assert_eq!(recorded.q("fieldManager").as_deref(), Some("pave-scaler"));
    assert_eq!(r.json(), json!({ "spec": { "replicas": 3 } }));
    assert_eq!(r.json(), recorded.request_json(), "the body the recording sent");
}

#[tokio::test]
async fn restart_sets_the_restarted_at_annotation_of_the_template() {
    let (target, server) = mock_target(|r| {
        if r.is("PATCH", DEPLOYMENT) {
            fixture("deployment-status.jsonl", "deployment web after rollout").reply()
        } else {
            unexpected(r)
        }
    });
    target.restart(&web()).await.expect("restarted");
    drop(target);
    let seen = server.requests().await;
    let r = &seen[0];
    assert_eq!(r.content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(r.q("fieldManager"), Some("pave-restart"));
    let at = &r.json()["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
    assert!(
        at.as_str().is_some_and(|s| s.contains('T') && s.ends_with('Z')),
        "{at}"
    );
}

#[tokio::test]
async fn prune_none_deletes_deployment_service_and_secret_and_404_is_fine() {
    let (target, server) = mock_target(|r| match (r.method.as_str(), r.path.as_str()) {
        ("DELETE", DEPLOYMENT) => fixture("deployment-status.jsonl", "deployment web after rollout").reply(),
        ("DELETE", SERVICE) => fixture("ssa.jsonl", "service: create").reply(),
        ("DELETE", SECRET) => fixture("errors.jsonl", "404 get missing deployment").reply(),
        _ => unexpected(r),
    });
    target.prune(&web(), None).await.expect("pruned");
    drop(target);
    let mut deleted: Vec<String> = server.requests().await.into_iter().map(|r| r.path).collect();
    deleted.sort();
    assert_eq!(deleted, [SECRET, SERVICE, DEPLOYMENT]);
}

/// rollout-stalled.jsonl holds four ReplicaSets; only the one of revision 4
/// (`web-846bcbb75f`, 1 replica) is not the kept revision 3 and has replicas.
#[tokio::test]
async fn prune_keep_scales_other_revisions_that_still_have_replicas_to_zero() {
    let (target, server) = mock_target(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", DEPLOYMENT) => fixture("rollout-stalled.jsonl", "ProgressDeadlineExceeded").reply(),
        ("GET", "/apis/apps/v1/namespaces/pave-demo/replicasets") => {
            fixture("rollout-stalled.jsonl", "replicasets of web").reply()
        }
        ("PATCH", "/apis/apps/v1/namespaces/pave-demo/replicasets/web-846bcbb75f/scale") => Reply::json(
            200,
            json!({ "kind": "Scale", "apiVersion": "autoscaling/v1", "spec": { "replicas": 0 } }),
        ),
        _ => unexpected(r),
    });
    target.prune(&web(), Some(3)).await.expect("pruned");
    drop(target);
    let seen = server.requests().await;
    let patches: Vec<&Seen> = seen.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 1, "{seen:?}");
    assert_eq!(patches[0].json(), json!({ "spec": { "replicas": 0 } }));
    assert_eq!(seen[1].q("labelSelector"), Some("app=web"));
}

#[tokio::test]
async fn a_missing_namespace_is_created_and_the_apply_retried() {
    let mut secret_applies = 0;
    let (target, server) = mock_target(move |r| {
        if let Some(reply) = status_reads(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("PATCH", SECRET) => {
                secret_applies += 1;
                if secret_applies == 1 {
                    // What the NamespaceLifecycle admission plugin answers (not recorded).
                    Reply::status(
                        404,
                        "NotFound",
                        "namespaces \"pave-demo\" not found",
                        json!({ "name": "pave-demo", "kind": "namespaces" }),
                    )
                } else {
                    fixture("ssa.jsonl", "secret: create").reply()
                }
            }
            ("PATCH", "/api/v1/namespaces/pave-demo") => fixture("ssa.jsonl", "namespace: create").reply(),
            ("PATCH", DEPLOYMENT) => fixture("ssa.jsonl", "deployment: create").reply(),
            ("PATCH", SERVICE) => fixture("ssa.jsonl", "service: create").reply(),
            _ => unexpected(r),
        }
    });
    target.apply(&web(), &full_spec()).await.expect("applied");
    drop(target);
    let seen = server.requests().await;
    let order: Vec<&str> = seen.iter().take(3).map(|r| r.path.as_str()).collect();
    assert_eq!(order, [SECRET, "/api/v1/namespaces/pave-demo", SECRET]);
}

/// Everything pave owns on a Deployment is what it sends: nothing more (a field
/// left out is one pave does not manage), and no field 1.28 would not know.
#[test]
fn a_minimal_deployment_is_exactly_what_pave_manages() {
    let spec = WorkloadSpec {
        revision: 1,
        command: vec![],
        env: BTreeMap::new(),
        replicas: 1,
        port: false,
        readiness: None,
        restart: pave_targets::RestartPolicy::Always,
        memory_limit_mb: None,
        cwd: None,
        image: Some("nginx:1.25".into()),
    };
    let m = crate::manifest::build(&web(), "pave-demo", &spec).expect("manifests");
    assert!(m.service.is_none());
    let labels = json!({
        "app.kubernetes.io/managed-by": "pave", "app.kubernetes.io/name": "web", "pave.dev/environment": "pave-demo"
    });
    assert_eq!(
        serde_json::to_value(&m.deployment).expect("json"),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web", "namespace": "pave-demo", "labels": labels },
            "spec": {
                "replicas": 1,
                "progressDeadlineSeconds": 600,
                "selector": { "matchLabels": { "app.kubernetes.io/managed-by": "pave", "app.kubernetes.io/name": "web" } },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": "100%" } },
                "template": {
                    "metadata": {
                        "labels": {
                            "app.kubernetes.io/managed-by": "pave", "app.kubernetes.io/name": "web",
                            "pave.dev/environment": "pave-demo", "pave.dev/revision": "1"
                        },
                        "annotations": { "pave.dev/revision": "1" }
                    },
                    "spec": { "containers": [{
                        "name": "app", "image": "nginx:1.25",
                        "env": [{ "name": "PAVE_REVISION", "value": "1" }]
                    }] }
                }
            }
        })
    );
    assert_eq!(
        serde_json::to_value(&m.secret).expect("json"),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {},
            "metadata": { "name": "web-env", "namespace": "pave-demo", "labels": labels }
        })
    );
}

#[test]
fn names_kubernetes_refuses_are_refused_before_any_request() {
    for (env, name) in [
        ("Pave_Demo", "web"),
        ("pave-demo", "1web"),
        ("pave-demo", "web.v2"),
        ("pave-demo", ""),
    ] {
        let err = crate::manifest::build(&WorkloadKey::new(env, name), env, &full_spec())
            .expect_err("invalid name");
        assert!(matches!(err, KubeError::Invalid(_)), "{env}/{name}: {err:?}");
    }
    let spec = WorkloadSpec {
        env: BTreeMap::from([("BAD KEY".to_string(), "x".to_string())]),
        ..full_spec()
    };
    let err = crate::manifest::build(&web(), "pave-demo", &spec).expect_err("bad env name");
    assert!(err.to_string().contains("\"BAD KEY\""), "{err}");
    let spec = WorkloadSpec {
        restart: pave_targets::RestartPolicy::OnFailure,
        ..full_spec()
    };
    assert!(crate::manifest::build(&web(), "pave-demo", &spec).is_err());
}

/// A field changed with `kubectl edit` is drift: the deploy takes it back.
#[tokio::test]
async fn apply_takes_back_fields_changed_by_hand() {
    let mut first = true;
    let (target, server) = mock_target(move |r| {
        match (r.method.as_str(), r.path.as_str()) {
        ("PATCH", SECRET) => fixture("ssa.jsonl", "secret: create").reply(),
        ("PATCH", DEPLOYMENT) if std::mem::take(&mut first) => Reply::status(
            409,
            "Conflict",
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.template.spec.containers[name=\"app\"].image",
            json!({ "causes": [
                { "reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using apps/v1", "field": ".spec.template.spec.containers[name=\"app\"].image" }
            ] }),
        ),
        ("PATCH", DEPLOYMENT) => fixture("ssa.jsonl", "deployment: create").reply(),
        (_, p) if p.ends_with("/services/web") => fixture("ssa.jsonl", "service: create").reply(),
        _ => status_reads(r).unwrap_or_else(|| unexpected(r)),
    }
    });
    target
        .apply_workload(&web(), &full_spec())
        .await
        .expect("applied");
    drop(target);
    let seen = server.requests().await;
    let applies: Vec<_> = seen.iter().filter(|r| r.is("PATCH", DEPLOYMENT)).collect();
    assert_eq!(applies.len(), 2, "one forced retry");
    assert_eq!(applies[1].q("force"), Some("true"));
}

/// The same revision again with another replica count (a `scale`): the
/// template is not sent again, the count goes through the scale subresource.
#[tokio::test]
async fn a_scale_of_the_running_revision_uses_the_scale_subresource() {
    let spec = full_spec();
    let m = crate::manifest::build(&web(), "pave-demo", &spec).unwrap();
    let mut live = serde_json::to_value(&m.deployment).unwrap();
    live["spec"]["replicas"] = json!(2);
    let scaled = WorkloadSpec { replicas: 3, ..spec };
    let (target, server) = mock_target(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("PATCH", SECRET) => fixture("ssa.jsonl", "secret: create").reply(),
        ("GET", DEPLOYMENT) => Reply::json(200, live.clone()),
        ("PATCH", p) if p.ends_with("/deployments/web/scale") => {
            fixture("scale.jsonl", "patch scale replicas=3 (merge patch)").reply()
        }
        ("PATCH", SERVICE) => fixture("ssa.jsonl", "service: create").reply(),
        _ => status_reads(r).unwrap_or_else(|| unexpected(r)),
    });
    target.apply_workload(&web(), &scaled).await.expect("scaled");
    drop(target);
    let seen = server.requests().await;
    assert!(
        !seen.iter().any(|r| r.is("PATCH", DEPLOYMENT)),
        "the template is not applied again"
    );
    let scale = seen.iter().find(|r| r.path.ends_with("/scale")).expect("a scale");
    assert_eq!(scale.json()["spec"]["replicas"], 3);
    assert_eq!(scale.q("fieldManager"), Some(crate::SCALE_FIELD_MANAGER));
}
