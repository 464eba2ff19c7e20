//! Generic objects (`crate::objects`): references, discovery-based resolution,
//! get, server-side apply of manifests, merge patch, delete, and restore.

use serde_json::{json, Value};

use super::*;
use crate::objects::{self, Change, ObjectRef, Objects};
use crate::KubeError;

const APPLY: &str = "application/apply-patch+yaml";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/pave-demo/deployments/web";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/pave-demo/deployments";
const CONFIGMAP: &str = "/api/v1/namespaces/pave-demo/configmaps/web-config";
const SERVICE: &str = "/api/v1/namespaces/pave-demo/services/web";

/// The recorded discovery of the 1.28.7 server: aggregated `/apis`, `/api/v1`.
fn discovery(r: &Seen) -> Option<Reply> {
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/apis") => Some(fixture("discovery.jsonl", "aggregated discovery").reply()),
        ("GET", "/api/v1") => Some(fixture("discovery.jsonl", "core v1 resources").reply()),
        _ => None,
    }
}

fn is_discovery(r: &Seen) -> bool {
    r.method == "GET" && (r.path == "/apis" || r.path == "/api/v1" || r.path == "/api")
}

/// The requests that are not discovery.
fn object_requests(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|r| !is_discovery(r)).collect()
}

fn not_found(resource: &str, name: &str) -> Reply {
    Reply::status(
        404,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
        json!({ "name": name, "kind": resource }),
    )
}

/// The Deployment `web` as the recorded GET answered it.
fn deployment() -> Value {
    fixture("deployment-status.jsonl", "deployment web after rollout").json()
}

fn kube_err(e: KubeError) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------
// References

#[test]
fn object_refs_parse_kind_and_optional_name() {
    let cases = [
        ("deployment/payments", "deployment", Some("payments")),
        ("deployments", "deployments", None),
        ("deploy/x", "deploy", Some("x")),
        ("Deployment/x", "Deployment", Some("x")),
        ("deployment.apps/x", "deployment.apps", Some("x")),
        ("configmap", "configmap", None),
        ("cm/x", "cm", Some("x")),
        ("  svc/web.v2-a  ", "svc", Some("web.v2-a")),
    ];
    for (text, kind, name) in cases {
        let r = ObjectRef::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(r.kind, kind, "{text}");
        assert_eq!(r.name.as_deref(), name, "{text}");
    }
    assert_eq!(ObjectRef::parse("cm/x").expect("ref").to_string(), "cm/x");
    assert_eq!(
        "deploy/web".parse::<ObjectRef>().expect("ref").name.as_deref(),
        Some("web")
    );

    for bad in [
        "",
        "   ",
        "/",
        "deploy/",
        "/web",
        "deploy/web/x",
        "deploy/Web",
        "deploy/-web",
        "deploy/web-",
        "deploy/we_b",
        "deploy/a b",
        "de ploy/x",
        "deployment..apps/x",
        ".apps/x",
        "deploy./x",
        "deploy/../x",
    ] {
        let e = ObjectRef::parse(bad).expect_err(bad);
        assert!(matches!(e, KubeError::Invalid(_)), "{bad}: {e}");
    }
    let long = format!("cm/{}", "a".repeat(254));
    assert!(ObjectRef::parse(&long).is_err());
    assert!(ObjectRef::parse(&format!("cm/{}", "a".repeat(253))).is_ok());
}

// ---------------------------------------------------------------------------
// Resolution

#[tokio::test]
async fn resolve_by_kind_plural_singular_short_name_and_group() {
    let (client, server) = mock_client(|r| discovery(r).unwrap_or_else(|| unexpected(r)));
    let objects = Objects::new(client.clone());
    for kind in [
        "deploy",
        "deployments",
        "deployment",
        "Deployment",
        "DEPLOYMENTS",
        "deployment.apps",
        "deployments.v1.apps",
    ] {
        let r = objects
            .resolve(kind)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(r.resource.api_version, "apps/v1", "{kind}");
        assert_eq!(r.resource.kind, "Deployment", "{kind}");
        assert_eq!(r.resource.plural, "deployments", "{kind}");
        assert!(r.namespaced, "{kind}");
        assert!(r.supports("patch"));
    }
    for kind in ["cm", "configmaps", "configmap", "ConfigMap"] {
        let r = objects
            .resolve(kind)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            (r.resource.api_version.as_str(), r.resource.plural.as_str()),
            ("v1", "configmaps")
        );
        assert!(r.namespaced);
    }
    let ns = objects.resolve("ns").await.expect("ns");
    assert_eq!(ns.resource.kind, "Namespace");
    assert!(!ns.namespaced, "namespaces are cluster-scoped");
    // The preferred version of a group with two (autoscaling/v2 before v1).
    let hpa = objects.resolve("hpa").await.expect("hpa");
    assert_eq!(hpa.resource.api_version, "autoscaling/v2");
    assert_eq!(
        objects
            .resolve("hpa.v1.autoscaling")
            .await
            .expect("pinned")
            .resource
            .api_version,
        "autoscaling/v1"
    );
    // Ambiguous `events`: the core group first, as kubectl; a group picks the other.
    assert_eq!(
        objects
            .resolve("events")
            .await
            .expect("events")
            .resource
            .api_version,
        "v1"
    );
    assert_eq!(
        objects
            .resolve("events.events.k8s.io")
            .await
            .expect("events.k8s.io")
            .resource
            .api_version,
        "events.k8s.io/v1"
    );
    assert_eq!(
        objects.resolve("netpol").await.expect("netpol").resource.kind,
        "NetworkPolicy"
    );
    assert_eq!(
        objects.resolve("secret").await.expect("secret").resource.plural,
        "secrets"
    );
    assert_eq!(
        objects.resolve("sts").await.expect("sts").resource.kind,
        "StatefulSet"
    );

    // An unknown kind discovers once more (a CRD may be new), then says it is not served.
    let e = objects.resolve("frobnicator").await.expect_err("unknown kind");
    let msg = kube_err(e);
    assert!(
        msg.contains("\"frobnicator\"") && msg.contains("not served"),
        "{msg}"
    );
    // A group the kind is not in.
    assert!(objects.resolve("deployment.batch").await.is_err());
    assert!(
        objects.resolve("deploy/web").await.is_err(),
        "a ref is not a kind"
    );

    // The free function discovers on its own.
    let r = objects::resolve(&client, "svc").await.expect("svc");
    assert_eq!(r.resource.kind, "Service");
    drop(objects);
    drop(client);

    let seen = server.requests().await;
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    // Two requests per discovery: the cache's first, the refresh on each miss
    // (`frobnicator`, `deployment.batch`), the free function's.
    assert_eq!(paths, ["/api/v1", "/apis"].repeat(4), "{paths:?}");
}

#[tokio::test]
async fn resolve_falls_back_to_legacy_discovery() {
    let (client, server) = mock_client(|r| {
        match (r.method.as_str(), r.path.as_str()) {
            // A server without aggregated discovery answers the legacy list.
            ("GET", "/apis") => fixture("discovery.jsonl", "legacy APIGroupList").reply(),
            ("GET", "/api/v1") => fixture("discovery.jsonl", "core v1 resources").reply(),
            ("GET", "/apis/apps/v1") => fixture("discovery.jsonl", "apps/v1 resources").reply(),
            ("GET", p) if p.starts_with("/apis/") => Reply::json(
                200,
                json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": p.trim_start_matches("/apis/"), "resources": [] }),
            ),
            _ => unexpected(r),
        }
    });
    let objects = Objects::new(client);
    let r = objects.resolve("deploy").await.expect("deploy");
    assert_eq!(r.resource.api_version, "apps/v1");
    assert_eq!(
        objects.resolve("cm").await.expect("cm").resource.plural,
        "configmaps"
    );
    drop(objects);
    let seen = server.requests().await;
    assert!(seen.iter().any(|r| r.path == "/apis/apps/v1"));
    assert_eq!(
        seen.iter().filter(|r| r.path == "/apis").count(),
        2,
        "aggregated, then legacy"
    );
}

// ---------------------------------------------------------------------------
// Get

#[tokio::test]
async fn get_one_object_without_managed_fields() {
    let (client, server) = mock_client(|r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        if r.is("GET", DEPLOYMENT) {
            fixture("deployment-status.jsonl", "deployment web after rollout").reply()
        } else {
            unexpected(r)
        }
    });
    let got = objects::get(&client, "pave-demo", "deploy", Some("web"))
        .await
        .expect("get");
    drop(client);
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["metadata"]["name"], "web");
    assert!(
        d["metadata"].get("managedFields").is_none(),
        "managedFields stripped"
    );
    assert_eq!(d["metadata"]["uid"], "458d95bf-f2f5-4331-9b03-7a482b2c8c4e");
    assert_eq!(d["status"]["readyReplicas"], 2, "status kept for display");
    let mut expected = deployment();
    expected["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    assert_eq!(d, &expected, "the object as the server sent it");
    assert_eq!(object_requests(&server.requests().await).len(), 1);
}

#[tokio::test]
async fn get_lists_the_namespace_and_names_each_item() {
    let (client, server) = mock_client(|r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        if r.is("GET", DEPLOYMENTS) {
            fixture("deployment-status.jsonl", "list deployments").reply()
        } else {
            unexpected(r)
        }
    });
    let got = objects::get(&client, "pave-demo", "deployments", None)
        .await
        .expect("list");
    drop(client);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["apiVersion"], "apps/v1");
    assert_eq!(got[0]["kind"], "Deployment");
    assert_eq!(got[0]["metadata"]["name"], "web");
    assert!(got[0]["metadata"].get("managedFields").is_none());
    let seen = server.requests().await;
    let list = object_requests(&seen);
    assert_eq!(list.len(), 1);
    assert!(list[0].is("GET", DEPLOYMENTS));
}

#[tokio::test]
async fn get_of_a_missing_object_is_not_found_with_the_server_message() {
    let (client, _server) = mock_client(|r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        if r.is(
            "GET",
            "/apis/apps/v1/namespaces/pave-demo/deployments/does-not-exist",
        ) {
            fixture("errors.jsonl", "404 get missing deployment").reply()
        } else {
            unexpected(r)
        }
    });
    let e = objects::get(&client, "pave-demo", "Deployment", Some("does-not-exist"))
        .await
        .expect_err("missing");
    let msg = e.to_string();
    assert!(matches!(e, KubeError::NotFound(_)), "{e:?}");
    assert!(msg.contains("Deployment pave-demo/does-not-exist"), "{msg}");
    assert!(
        msg.contains("deployments.apps \"does-not-exist\" not found"),
        "{msg}"
    );
}

#[tokio::test]
async fn get_reads_cluster_scoped_kinds() {
    let (client, server) = mock_client(|r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        if r.is("GET", "/api/v1/namespaces/pave-demo") {
            fixture("ssa.jsonl", "namespace: create").reply()
        } else {
            unexpected(r)
        }
    });
    let got = objects::get(&client, "ignored", "ns", Some("pave-demo"))
        .await
        .expect("get ns");
    drop(client);
    assert_eq!(got[0]["kind"], "Namespace");
    assert_eq!(object_requests(&server.requests().await).len(), 1);
}

// ---------------------------------------------------------------------------
// Apply

const TWO_DOCUMENTS: &str = r#"
# a comment; the empty document below is skipped
---
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  LOG_LEVEL: info
  FEATURE_X: "on"
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: pave-demo
  labels:
    app: web
spec:
  selector:
    app: web
  ports:
    - name: http
      port: 8080
      targetPort: http
"#;

/// ConfigMap `web-config` does not exist yet; Service `web` has port 80.
fn two_documents_server(r: &Seen) -> Reply {
    if let Some(reply) = discovery(r) {
        return reply;
    }
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", CONFIGMAP) => not_found("configmaps", "web-config"),
        ("PATCH", CONFIGMAP) => fixture("ssa.jsonl", "configmap: create").reply(),
        ("GET", SERVICE) => fixture("ssa.jsonl", "service: create").reply(),
        ("PATCH", SERVICE) => fixture("ssa.jsonl", "service: apply change").reply(),
        _ => unexpected(r),
    }
}

fn has_line(diff: &str, sign: char, text: &str) -> bool {
    diff.lines()
        .any(|l| l.starts_with(sign) && l[1..].trim_start_matches(['-', ' ']).trim_end() == text)
}

async fn apply_two_documents(dry_run: bool) {
    let (client, server) = mock_client(two_documents_server);
    let changes = objects::apply(&client, "pave-demo", TWO_DOCUMENTS, dry_run)
        .await
        .expect("applied");
    drop(client);

    assert_eq!(changes.len(), 2);
    let cm = &changes[0];
    assert_eq!(cm.object, "ConfigMap pave-demo/web-config");
    assert_eq!((cm.api_version.as_str(), cm.kind.as_str()), ("v1", "ConfigMap"));
    assert_eq!(
        (cm.namespace.as_str(), cm.name.as_str()),
        ("pave-demo", "web-config")
    );
    assert_eq!(cm.before, None, "created");
    assert_eq!(
        cm.after.as_ref().expect("after")["metadata"]["resourceVersion"],
        "216"
    );
    assert!(
        cm.diff.contains("ConfigMap pave-demo/web-config (absent)"),
        "{}",
        cm.diff
    );
    assert!(has_line(&cm.diff, '+', "LOG_LEVEL: info"), "{}", cm.diff);
    assert!(has_line(&cm.diff, '+', "FEATURE_X: on"), "{}", cm.diff);
    assert!(has_line(&cm.diff, '+', "name: web-config"), "{}", cm.diff);

    let svc = &changes[1];
    assert_eq!(svc.object, "Service pave-demo/web");
    assert!(svc.before.is_some());
    assert!(has_line(&svc.diff, '-', "port: 80"), "{}", svc.diff);
    assert!(has_line(&svc.diff, '+', "port: 8080"), "{}", svc.diff);
    assert!(
        svc.diff.contains("targetPort: http"),
        "context lines: {}",
        svc.diff
    );
    assert!(!svc.is_noop());
    for c in &changes {
        for noise in [
            "managedFields",
            "resourceVersion",
            "uid:",
            "creationTimestamp",
            "generation",
            "loadBalancer",
        ] {
            assert!(!c.diff.contains(noise), "{noise} in {}", c.diff);
        }
    }

    let seen = server.requests().await;
    let sent: Vec<(&str, &str)> = object_requests(&seen)
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("GET", CONFIGMAP),
            ("PATCH", CONFIGMAP),
            ("GET", SERVICE),
            ("PATCH", SERVICE)
        ],
        "each object read (its before-state), then applied"
    );
    for r in object_requests(&seen).into_iter().filter(|r| r.method == "PATCH") {
        assert_eq!(r.content_type.as_deref(), Some(APPLY), "{}", r.path);
        assert_eq!(r.q("fieldManager"), Some("pave"));
        assert!(matches!(r.q("force"), None | Some("false")), "never forced");
        assert_eq!(r.q("dryRun"), dry_run.then_some("All"), "{}", r.path);
        assert_eq!(r.q("fieldValidation"), Some("Strict"));
        assert_eq!(
            r.json()["metadata"]["namespace"],
            "pave-demo",
            "namespace set when absent"
        );
    }
    let cm_body = seen
        .iter()
        .find(|r| r.is("PATCH", CONFIGMAP))
        .expect("cm apply")
        .json();
    assert_eq!(
        cm_body,
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "web-config", "namespace": "pave-demo" },
                "data": { "LOG_LEVEL": "info", "FEATURE_X": "on" } })
    );
}

#[tokio::test]
async fn apply_of_two_documents_creates_one_changes_one_and_diffs_both() {
    apply_two_documents(false).await;
}

#[tokio::test]
async fn apply_dry_run_sends_dry_run_all() {
    apply_two_documents(true).await;
}

#[tokio::test]
async fn apply_accepts_json_and_a_list() {
    let (client, server) = mock_client(two_documents_server);
    let text = json!({ "apiVersion": "v1", "kind": "List", "items": [
        { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "web-config" }, "data": { "LOG_LEVEL": "info" } }
    ]})
    .to_string();
    let changes = objects::apply(&client, "pave-demo", &text, false)
        .await
        .expect("applied");
    drop(client);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].object, "ConfigMap pave-demo/web-config");
    assert_eq!(object_requests(&server.requests().await).len(), 2);
}

#[tokio::test]
async fn apply_refuses_another_namespace_without_any_request() {
    let (client, server) = mock_client(unexpected);
    let text = format!("{TWO_DOCUMENTS}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n  namespace: payments\n");
    let e = objects::apply(&client, "pave-demo", &text, false)
        .await
        .expect_err("mismatch");
    drop(client);
    let msg = e.to_string();
    assert!(matches!(e, KubeError::Invalid(_)), "{e:?}");
    assert!(
        msg.contains("\"payments\"") && msg.contains("\"pave-demo\""),
        "{msg}"
    );
    assert!(
        msg.contains("document 4") && msg.contains("ConfigMap other"),
        "{msg}"
    );
    assert!(server.requests().await.is_empty(), "nothing sent");
}

#[tokio::test]
async fn apply_refuses_cluster_scoped_kinds_before_any_write() {
    let (client, server) = mock_client(|r| discovery(r).unwrap_or_else(|| unexpected(r)));
    let objects = Objects::new(client);
    objects.resolve("cm").await.expect("discovery warmed up");
    let text = format!("{TWO_DOCUMENTS}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: pave-demo\n");
    let e = objects
        .apply("pave-demo", &text, false)
        .await
        .expect_err("cluster-scoped");
    let msg = e.to_string();
    assert!(matches!(e, KubeError::Invalid(_)), "{e:?}");
    assert!(
        msg.contains("Namespace pave-demo is cluster-scoped") && msg.contains("document 4"),
        "{msg}"
    );
    drop(objects);
    let seen = server.requests().await;
    // Only the warm-up's discovery: the apply itself sent nothing.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(is_discovery));
}

#[tokio::test]
async fn apply_checks_every_document_before_sending() {
    let (client, server) = mock_client(|r| discovery(r).unwrap_or_else(|| unexpected(r)));
    let objects = Objects::new(client);
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\n";
    let cases = [
        ("", "no object"),
        ("---\n---\n", "no object"),
        ("- 1\n", "document 2, item 1: not an object"),
        ("kind: ConfigMap\nmetadata: {name: x}\n", "apiVersion is missing"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "kind is missing"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
            "metadata.name is missing",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n",
            "not a DNS subdomain",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [1]\n",
            "metadata is not a mapping",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n",
            "not YAML or JSON",
        ),
        (
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
            "not served",
        ),
        (
            "apiVersion: apps/v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "not served",
        ),
    ];
    for (text, expected) in cases {
        let text = format!("{cm}---\n{text}");
        let text = if expected == "no object" {
            text.replace(cm, "")
        } else {
            text
        };
        let e = objects.apply("pave-demo", &text, false).await.expect_err(&text);
        assert!(e.to_string().contains(expected), "{text:?}: {e}");
    }
    let dup = format!("{cm}---\n{cm}");
    let e = objects
        .apply("pave-demo", &dup, false)
        .await
        .expect_err("duplicate");
    assert!(e.to_string().contains("appears twice"), "{e}");
    let e = objects
        .apply("Not_A_Namespace", cm, false)
        .await
        .expect_err("bad namespace");
    assert!(e.to_string().contains("not a DNS label"), "{e}");
    drop(objects);
    assert!(
        server.requests().await.iter().all(is_discovery),
        "no object read, no write"
    );
}

#[tokio::test]
async fn apply_conflict_names_the_other_managers() {
    let conflict = fixture("ssa-conflict.jsonl", "pave applies replicas=2 with force=false");
    let manifest = conflict.request_body.clone().expect("recorded body"); // JSON, not YAML
    let (client, server) = mock_client(move |r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", DEPLOYMENT) => fixture("deployment-status.jsonl", "deployment web after rollout").reply(),
            ("PATCH", DEPLOYMENT) => conflict.reply(),
            _ => unexpected(r),
        }
    });
    let e = objects::apply(&client, "pave-demo", &manifest, false)
        .await
        .expect_err("409");
    drop(client);
    let msg = e.to_string();
    assert_eq!(e.code(), Some(409));
    assert!(msg.contains("apply Deployment pave-demo/web"), "{msg}");
    assert!(
        msg.contains("conflict with \"other-team\": .spec.replicas"),
        "{msg}"
    );
    let seen = server.requests().await;
    let patch = seen.iter().find(|r| r.method == "PATCH").expect("the apply");
    assert!(matches!(patch.q("force"), None | Some("false")));
    assert_eq!(
        patch.json(),
        serde_json::from_str::<Value>(&manifest).expect("json")
    );
}

#[tokio::test]
async fn a_failed_document_restores_the_ones_applied_before_it() {
    let conflict = fixture("ssa-conflict.jsonl", "pave applies replicas=2 with force=false");
    let deployment_doc = conflict.request_body.clone().expect("recorded body");
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  LOG_LEVEL: debug\n  FEATURE_X: \"on\"\n---\n{deployment_doc}\n"
    );
    let mut cm_reads = 0;
    let (client, server) = mock_client(move |r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", CONFIGMAP) => {
                cm_reads += 1;
                if cm_reads == 1 {
                    fixture("ssa.jsonl", "configmap: create").reply() // before: LOG_LEVEL info
                } else {
                    fixture("ssa.jsonl", "configmap: apply change").reply() // live after the apply
                }
            }
            ("PATCH", CONFIGMAP) => fixture("ssa.jsonl", "configmap: apply change").reply(),
            ("PUT", CONFIGMAP) => fixture("ssa.jsonl", "configmap: create").reply(),
            ("GET", DEPLOYMENT) => fixture("deployment-status.jsonl", "deployment web after rollout").reply(),
            ("PATCH", DEPLOYMENT) => conflict.reply(),
            _ => unexpected(r),
        }
    });
    let e = objects::apply(&client, "pave-demo", &manifest, false)
        .await
        .expect_err("409");
    drop(client);
    let msg = e.to_string();
    assert_eq!(e.code(), Some(409), "the original error");
    assert!(msg.contains("other-team"), "{msg}");
    assert!(
        msg.contains("pave restored ConfigMap pave-demo/web-config"),
        "{msg}"
    );

    let seen = server.requests().await;
    let sent: Vec<(&str, &str)> = object_requests(&seen)
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("GET", CONFIGMAP),
            ("PATCH", CONFIGMAP),
            ("GET", DEPLOYMENT),
            ("PATCH", DEPLOYMENT),
            ("GET", CONFIGMAP),
            ("PUT", CONFIGMAP),
        ]
    );
    let put = seen.iter().find(|r| r.method == "PUT").expect("restore").json();
    assert_eq!(put["data"]["LOG_LEVEL"], "info", "the before-state");
    assert_eq!(
        put["metadata"]["resourceVersion"], "217",
        "at the live resourceVersion"
    );
}

// ---------------------------------------------------------------------------
// Merge patch, restore

/// `web` with a label the merge patch added, at resourceVersion 400.
fn labelled_deployment() -> Value {
    let mut d = deployment();
    d["metadata"]["labels"]["team"] = json!("payments");
    d["metadata"]["resourceVersion"] = json!("400");
    d
}

#[tokio::test]
async fn merge_patch_adds_a_label_and_restore_replaces_it_away() {
    let mut deployment_reads = 0;
    let (client, server) = mock_client(move |r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", DEPLOYMENT) => {
                deployment_reads += 1;
                if deployment_reads == 1 {
                    Reply::json(200, deployment())
                } else {
                    Reply::json(200, labelled_deployment())
                }
            }
            ("PATCH", DEPLOYMENT) => Reply::json(200, labelled_deployment()),
            ("PUT", DEPLOYMENT) => Reply::json(200, deployment()),
            _ => unexpected(r),
        }
    });
    let objects = Objects::new(client);
    let patch = json!({ "metadata": { "labels": { "team": "payments" } } });
    let change = objects
        .merge_patch("pave-demo", "deploy", "web", &patch, false)
        .await
        .expect("patched");
    assert_eq!(change.object, "Deployment pave-demo/web");
    assert_eq!(change.api_version, "apps/v1");
    assert_eq!(
        change.before.as_ref(),
        Some(&deployment()),
        "the live object, complete"
    );
    assert!(has_line(&change.diff, '+', "team: payments"), "{}", change.diff);
    assert_eq!(
        change
            .diff
            .lines()
            .filter(|l| l.starts_with(['+', '-']) && !l.starts_with("+++") && !l.starts_with("---"))
            .count(),
        1,
        "only the label: {}",
        change.diff
    );

    objects.restore(&change).await.expect("restored");
    drop(objects);

    let seen = server.requests().await;
    let sent: Vec<(&str, &str)> = object_requests(&seen)
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("GET", DEPLOYMENT),
            ("PATCH", DEPLOYMENT),
            ("GET", DEPLOYMENT),
            ("PUT", DEPLOYMENT)
        ]
    );
    let p = seen.iter().find(|r| r.method == "PATCH").expect("patch");
    assert_eq!(p.content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(p.q("fieldManager"), Some("pave"));
    assert_eq!(p.q("dryRun"), None);
    assert_eq!(p.json(), patch);

    let put = seen.iter().find(|r| r.method == "PUT").expect("replace");
    assert_eq!(put.q("fieldManager"), Some("pave"));
    let body = put.json();
    assert_eq!(
        body["metadata"]["labels"],
        json!({ "app": "web", "app.kubernetes.io/managed-by": "pave" }),
        "the label is gone"
    );
    assert_eq!(
        body["metadata"]["resourceVersion"], "400",
        "the live resourceVersion"
    );
    for gone in ["uid", "creationTimestamp", "generation"] {
        assert!(body["metadata"].get(gone).is_none(), "{gone}");
    }
    assert!(body.get("status").is_none());
    assert_eq!(
        body["metadata"]["managedFields"],
        deployment()["metadata"]["managedFields"],
        "ownership back"
    );
    assert_eq!(body["spec"], deployment()["spec"]);
}

#[tokio::test]
async fn merge_patch_dry_run_and_refusals() {
    let (client, server) = mock_client(|r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", DEPLOYMENT) => Reply::json(200, deployment()),
            ("PATCH", DEPLOYMENT) => Reply::json(200, labelled_deployment()),
            ("GET", "/apis/apps/v1/namespaces/pave-demo/deployments/gone") => {
                not_found("deployments.apps", "gone")
            }
            _ => unexpected(r),
        }
    });
    let objects = Objects::new(client);
    let patch = json!({ "metadata": { "labels": { "team": "payments" } } });
    objects
        .merge_patch("pave-demo", "deployment", "web", &patch, true)
        .await
        .expect("dry run");
    let e = objects
        .merge_patch("pave-demo", "deploy", "gone", &patch, false)
        .await
        .expect_err("404");
    assert!(matches!(e, KubeError::NotFound(_)), "{e}");
    let e = objects
        .merge_patch("pave-demo", "ns", "pave-demo", &patch, false)
        .await
        .expect_err("cluster");
    assert!(e.to_string().contains("cluster-scoped"), "{e}");
    let e = objects
        .merge_patch("pave-demo", "deploy", "web", &json!([1]), false)
        .await
        .expect_err("array");
    assert!(e.to_string().contains("must be an object"), "{e}");
    drop(objects);
    let seen = server.requests().await;
    let patches: Vec<&Seen> = seen.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].q("dryRun"), Some("All"));
}

// ---------------------------------------------------------------------------
// Delete, restore

#[tokio::test]
async fn delete_then_restore_re_creates_the_object() {
    let mut deployment_reads = 0;
    let (client, server) = mock_client(move |r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", DEPLOYMENT) => {
                deployment_reads += 1;
                if deployment_reads == 1 {
                    Reply::json(200, deployment())
                } else {
                    not_found("deployments.apps", "web")
                }
            }
            ("DELETE", DEPLOYMENT) => Reply::json(200, deployment()),
            ("POST", DEPLOYMENTS) => Reply::json(201, deployment()),
            _ => unexpected(r),
        }
    });
    let objects = Objects::new(client);
    let change = objects
        .delete("pave-demo", "deployments.apps", "web")
        .await
        .expect("deleted");
    assert_eq!(change.after, None);
    assert_eq!(change.before.as_ref(), Some(&deployment()));
    assert!(
        change.diff.contains("Deployment pave-demo/web (deleted)"),
        "{}",
        change.diff
    );
    assert!(
        has_line(&change.diff, '-', "image: nginx:1.25"),
        "{}",
        change.diff
    );
    assert!(!change
        .diff
        .lines()
        .any(|l| l.starts_with('+') && !l.starts_with("+++")));

    objects.restore(&change).await.expect("re-created");
    drop(objects);

    let seen = server.requests().await;
    let sent: Vec<(&str, &str)> = object_requests(&seen)
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("GET", DEPLOYMENT),
            ("DELETE", DEPLOYMENT),
            ("GET", DEPLOYMENT),
            ("POST", DEPLOYMENTS)
        ]
    );
    let del = seen.iter().find(|r| r.method == "DELETE").expect("delete").json();
    assert_eq!(
        del["preconditions"]["uid"], "458d95bf-f2f5-4331-9b03-7a482b2c8c4e",
        "deletes the object it read"
    );
    let post = seen.iter().find(|r| r.method == "POST").expect("create");
    assert_eq!(post.q("fieldManager"), Some("pave"));
    let body = post.json();
    assert_eq!(body["apiVersion"], "apps/v1");
    assert_eq!(body["kind"], "Deployment");
    assert_eq!(body["metadata"]["name"], "web");
    assert_eq!(body["metadata"]["namespace"], "pave-demo");
    for gone in ["resourceVersion", "uid", "creationTimestamp", "generation"] {
        assert!(body["metadata"].get(gone).is_none(), "{gone} in {body}");
    }
    assert!(body.get("status").is_none());
    assert_eq!(body["spec"], deployment()["spec"]);
    assert_eq!(body["metadata"]["labels"], deployment()["metadata"]["labels"]);
}

#[tokio::test]
async fn delete_of_a_missing_object_is_not_found() {
    let (client, server) = mock_client(|r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        if r.is("GET", CONFIGMAP) {
            not_found("configmaps", "web-config")
        } else {
            unexpected(r)
        }
    });
    let e = objects::delete(&client, "pave-demo", "cm", "web-config")
        .await
        .expect_err("missing");
    drop(client);
    assert!(matches!(e, KubeError::NotFound(_)), "{e:?}");
    assert!(e.to_string().contains("ConfigMap pave-demo/web-config"), "{e}");
    assert!(
        object_requests(&server.requests().await)
            .iter()
            .all(|r| r.method == "GET"),
        "no DELETE"
    );
}

#[tokio::test]
async fn restore_of_a_create_deletes_the_created_object() {
    let (client, server) = mock_client(|r| {
        if let Some(reply) = discovery(r) {
            return reply;
        }
        if r.is("DELETE", CONFIGMAP) {
            not_found("configmaps", "web-config") // already gone is fine
        } else {
            unexpected(r)
        }
    });
    let after = fixture("ssa.jsonl", "configmap: create").json();
    let change = Change {
        object: "ConfigMap pave-demo/web-config".into(),
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: "pave-demo".into(),
        name: "web-config".into(),
        before: None,
        after: Some(after),
        diff: String::new(),
    };
    objects::restore(&client, &change).await.expect("restored");
    drop(client);
    let seen = server.requests().await;
    let del = object_requests(&seen);
    assert_eq!(del.len(), 1);
    assert_eq!(
        del[0].json()["preconditions"]["uid"],
        "5275160d-b827-4e9f-86db-70aaad4c9346",
        "only the object the change created"
    );
}
