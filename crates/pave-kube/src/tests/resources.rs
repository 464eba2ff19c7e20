//! In-cluster resources (`KubeProviders`): the applies of create, the wait for
//! the pod, check, repair, delete, errors. Pods and error bodies come from the
//! recordings (pods.jsonl, rollout-stalled.jsonl, errors.jsonl, ssa.jsonl); a
//! StatefulSet was never recorded, so its answers are built from the applied
//! body the way the API server and the StatefulSet controller fill it in.

use std::collections::BTreeMap;
use std::time::Duration;

use pave_providers::{Provider, ProviderError, ResourceRequest};
use serde_json::{json, Value};

use super::*;
use crate::resources::KubeProviders;

const APPLY: &str = "application/apply-patch+yaml";
const PASSWORD: &str = "pg-Secr3t-9f2c7e";
/// `PASSWORD` in base64, as a Secret's `data` carries it.
const PASSWORD_B64: &str = "cGctU2VjcjN0LTlmMmM3ZQ==";
const NAMESPACE: &str = "/api/v1/namespaces/pave-demo";
const HASH: &str = "7d9f8b6c5d";

fn secret_path(name: &str) -> String {
    format!("{NAMESPACE}/secrets/{name}-credentials")
}
fn service_path(name: &str) -> String {
    format!("{NAMESPACE}/services/{name}")
}
fn sts_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/pave-demo/statefulsets/{name}")
}
fn pod_path(name: &str) -> String {
    format!("{NAMESPACE}/pods/{name}-0")
}
fn claims_path() -> String {
    format!("{NAMESPACE}/persistentvolumeclaims")
}

fn request(kind: &str, name: &str, spec: Value) -> ResourceRequest {
    ResourceRequest {
        env: "pave-demo".into(),
        name: name.into(),
        kind: kind.into(),
        spec,
        secrets: BTreeMap::from([("password".to_string(), PASSWORD.to_string())]),
    }
}

fn postgres() -> ResourceRequest {
    request(
        "postgres",
        "orders-db",
        json!({ "database": "orders", "user": "orders_app", "version": "16.4" }),
    )
}

fn providers(target: KubeTarget) -> KubeProviders {
    KubeProviders::new(target)
        .with_poll_interval(Duration::from_millis(5))
        .with_ready_timeout(Duration::from_secs(5))
}

fn assert_applied_by_pave(r: &Seen) {
    assert_eq!(r.method, "PATCH", "{}", r.path);
    assert_eq!(r.content_type.as_deref(), Some(APPLY), "{}", r.path);
    assert_eq!(r.q("fieldManager"), Some("pave"), "{}", r.path);
    assert_eq!(r.q("force"), None, "{}", r.path);
}

fn assert_no_password(e: &ProviderError) {
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains(PASSWORD) && !text.contains(PASSWORD_B64),
        "the password leaked into an error: {text}"
    );
}

fn calls(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter().map(|r| (r.method.clone(), r.path.clone())).collect()
}

fn call(method: &str, path: impl Into<String>) -> (String, String) {
    (method.to_string(), path.into())
}

/// A 404 `Status` shaped like the recorded ones.
fn not_found(plural: &str, group: &str, name: &str) -> Reply {
    let mut body = fixture("errors.jsonl", "404 get missing deployment").json();
    let what = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    body["message"] = json!(format!("{what} \"{name}\" not found"));
    body["details"] = if group.is_empty() {
        json!({ "name": name, "kind": plural })
    } else {
        json!({ "name": name, "group": group, "kind": plural })
    };
    Reply::json(404, body)
}

/// Which recorded pod to show as `<name>-0`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PodShows {
    Ready,
    CrashLoopBackOff,
    ImagePullBackOff,
    Unschedulable,
}

/// A recorded pod, made the StatefulSet's pod `<name>-0` of revision `hash`.
fn resource_pod(shows: PodShows, kind: &str, name: &str, hash: &str) -> Value {
    let mut pod = match shows {
        PodShows::Ready => {
            fixture("pods.jsonl", "list pods labelSelector=app=web").json()["items"][0].clone()
        }
        PodShows::CrashLoopBackOff => fixture("pods.jsonl", "get pod in CrashLoopBackOff").json(),
        PodShows::ImagePullBackOff | PodShows::Unschedulable => {
            fixture("rollout-stalled.jsonl", "get pod in ImagePullBackOff").json()
        }
    };
    let meta = &mut pod["metadata"];
    meta["name"] = json!(format!("{name}-0"));
    meta["generateName"] = json!(format!("{name}-"));
    meta["labels"] = json!({
        "app.kubernetes.io/managed-by": "pave",
        "app.kubernetes.io/name": name,
        "pave.dev/environment": "pave-demo",
        "pave.dev/resource-kind": kind,
        "controller-revision-hash": format!("{name}-{hash}"),
        "statefulset.kubernetes.io/pod-name": format!("{name}-0"),
    });
    meta["ownerReferences"][0]["kind"] = json!("StatefulSet");
    meta["ownerReferences"][0]["name"] = json!(name);
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
        m.remove("annotations");
    }
    pod["spec"]["containers"][0]["name"] = json!(kind);
    if let Some(statuses) = pod["status"]["containerStatuses"].as_array_mut() {
        for cs in statuses {
            cs["name"] = json!(kind);
        }
    }
    if shows == PodShows::Unschedulable {
        // What a scheduler writes when the claim cannot be bound: no node, no
        // container statuses, PodScheduled=False.
        if let Some(spec) = pod["spec"].as_object_mut() {
            spec.remove("nodeName");
        }
        pod["status"] = json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled", "status": "False", "lastProbeTime": null,
                "lastTransitionTime": "2026-12-03T21:45:02Z", "reason": "Unschedulable",
                "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
                            preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.."
            }],
            "qosClass": "BestEffort"
        });
    }
    pod
}

/// The StatefulSet the API server returns for `applied`: server-set metadata,
/// the defaults 1.28 fills in, and a status (the controller's, once it
/// observed `observed`; before that, the empty one of a fresh object).
fn stateful_set(applied: &Value, generation: i64, observed: Option<i64>) -> Value {
    let mut s = applied.clone();
    let name = s["metadata"]["name"].as_str().unwrap_or("x").to_string();
    let meta = &mut s["metadata"];
    meta["uid"] = json!("5b0f3c1e-8a43-4c55-9d1e-2f6a8e0b7c41");
    meta["resourceVersion"] = json!(format!("{}", 600 + generation));
    meta["generation"] = json!(generation);
    meta["creationTimestamp"] = json!("2026-12-03T21:45:00Z");
    let spec = &mut s["spec"];
    spec["podManagementPolicy"] = json!("OrderedReady");
    spec["revisionHistoryLimit"] = json!(10);
    spec["updateStrategy"] = json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": 0 } });
    spec["persistentVolumeClaimRetentionPolicy"] = json!({ "whenDeleted": "Retain", "whenScaled": "Retain" });
    let pod = &mut spec["template"]["spec"];
    pod["restartPolicy"] = json!("Always");
    pod["terminationGracePeriodSeconds"] = json!(30);
    pod["dnsPolicy"] = json!("ClusterFirst");
    pod["securityContext"] = json!({});
    pod["schedulerName"] = json!("default-scheduler");
    if let Some(claims) = spec["volumeClaimTemplates"].as_array_mut() {
        for c in claims {
            c["apiVersion"] = json!("v1");
            c["kind"] = json!("PersistentVolumeClaim");
            c["spec"]["volumeMode"] = json!("Filesystem");
            c["status"] = json!({ "phase": "Pending" });
        }
    }
    s["status"] = match observed {
        None => json!({ "replicas": 0, "availableReplicas": 0 }),
        Some(g) => json!({
            "observedGeneration": g, "replicas": 1, "readyReplicas": 1, "currentReplicas": 1,
            "updatedReplicas": 1, "currentRevision": format!("{name}-{HASH}"),
            "updateRevision": format!("{name}-{HASH}"), "collisionCount": 0, "availableReplicas": 1
        }),
    };
    s
}

/// A responder for single requests, ahead of the fake's own answers.
type Special = Box<dyn FnMut(&Seen) -> Option<Reply> + Send>;

/// A small cluster for one resource: it keeps what was applied, answers the
/// pod reads from a script (the last entry repeats), and knows which objects
/// exist.
struct Fake {
    kind: &'static str,
    name: &'static str,
    /// The applied StatefulSet body and its generation.
    applied: Option<(Value, i64)>,
    /// Successive answers to `GET pod`: `None` is a 404.
    pods: Vec<Option<PodShows>>,
    pod_gets: usize,
    service: bool,
    secret: bool,
    claim: bool,
    /// What every PATCH of the Namespace gets, when not the recorded 201.
    namespace_reply: Option<Reply>,
    /// Overrides for single requests.
    special: Special,
}

impl Fake {
    fn new(kind: &'static str, name: &'static str, pods: Vec<Option<PodShows>>) -> Fake {
        Fake {
            kind,
            name,
            applied: None,
            pods,
            pod_gets: 0,
            service: false,
            secret: false,
            claim: false,
            namespace_reply: None,
            special: Box::new(|_| None),
        }
    }

    /// A resource that was created earlier (StatefulSet generation 1, observed).
    fn existing(mut self, req: &ResourceRequest) -> Fake {
        let applied = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": req.name, "namespace": "pave-demo",
                          "labels": { "app.kubernetes.io/managed-by": "pave", "app.kubernetes.io/name": req.name } },
            "spec": { "replicas": 1, "serviceName": req.name,
                      "selector": { "matchLabels": { "app.kubernetes.io/managed-by": "pave",
                                                     "app.kubernetes.io/name": req.name,
                                                     "pave.dev/resource-kind": req.kind } },
                      "template": { "spec": {} } }
        });
        self.applied = Some((applied, 1));
        self.service = true;
        self.secret = true;
        self.claim = true;
        self
    }

    fn respond(&mut self, r: &Seen) -> Reply {
        if let Some(reply) = (self.special)(r) {
            return reply;
        }
        let name = self.name;
        let m = r.method.as_str();
        let p = r.path.as_str();
        if m == "PATCH" && p == NAMESPACE {
            return self
                .namespace_reply
                .take()
                .unwrap_or_else(|| fixture("ssa.jsonl", "namespace: create").reply());
        }
        if p == secret_path(name) {
            return match m {
                "PATCH" => {
                    self.secret = true;
                    fixture("ssa.jsonl", "secret: create").reply()
                }
                "GET" if self.secret => fixture("ssa.jsonl", "secret: create").reply(),
                "DELETE" if self.secret => fixture("ssa.jsonl", "secret: create").reply(),
                _ => not_found("secrets", "", &format!("{name}-credentials")),
            };
        }
        if p == service_path(name) {
            return match m {
                "PATCH" => {
                    self.service = true;
                    fixture("ssa.jsonl", "service: create").reply()
                }
                "GET" | "DELETE" if self.service => fixture("ssa.jsonl", "service: create").reply(),
                _ => not_found("services", "", name),
            };
        }
        if p == sts_path(name) {
            return match (m, &self.applied) {
                ("PATCH", previous) => {
                    let body = r.json();
                    let (generation, status) = match previous {
                        // The API server compares the spec: an unchanged apply
                        // keeps the generation.
                        Some((old, g)) if old["spec"] == body["spec"] => (*g, Some(*g)),
                        Some((_, g)) => (g + 1, Some(*g)),
                        None => (1, None),
                    };
                    let code = if previous.is_some() { 200 } else { 201 };
                    self.applied = Some((body.clone(), generation));
                    Reply::json(code, stateful_set(&body, generation, status))
                }
                ("GET", Some((body, g))) | ("DELETE", Some((body, g))) => {
                    Reply::json(200, stateful_set(body, *g, Some(*g)))
                }
                _ => not_found("statefulsets", "apps", name),
            };
        }
        if p == pod_path(name) {
            return match m {
                "GET" => {
                    let i = self.pod_gets.min(self.pods.len().saturating_sub(1));
                    self.pod_gets += 1;
                    match self.pods.get(i).copied().flatten() {
                        Some(shows) => Reply::json(200, resource_pod(shows, self.kind, name, HASH)),
                        None => not_found("pods", "", &format!("{name}-0")),
                    }
                }
                "DELETE" => {
                    let mut pod = resource_pod(PodShows::CrashLoopBackOff, self.kind, name, HASH);
                    pod["metadata"]["deletionTimestamp"] = json!("2026-12-03T21:50:00Z");
                    pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
                    Reply::json(200, pod)
                }
                _ => unexpected(r),
            };
        }
        if m == "GET" && p == format!("{}/data-{name}-0", claims_path()) {
            return if self.claim {
                Reply::json(
                    200,
                    json!({ "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                            "metadata": { "name": format!("data-{name}-0"), "namespace": "pave-demo" } }),
                )
            } else {
                not_found("persistentvolumeclaims", "", &format!("data-{name}-0"))
            };
        }
        if m == "DELETE" && p == claims_path() {
            let items = if self.claim {
                vec![json!({ "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "metadata": { "name": format!("data-{name}-0"), "namespace": "pave-demo",
                                  "deletionTimestamp": "2026-12-03T21:50:00Z",
                                  "finalizers": ["kubernetes.io/pvc-protection"] },
                    "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } },
                              "volumeMode": "Filesystem" },
                    "status": { "phase": "Pending" } })]
            } else {
                vec![]
            };
            return Reply::json(
                200,
                json!({ "kind": "PersistentVolumeClaimList", "apiVersion": "v1",
                        "metadata": { "resourceVersion": "700" }, "items": items }),
            );
        }
        unexpected(r)
    }
}

fn fake_target(mut fake: Fake) -> (KubeTarget, ApiServer) {
    mock_target(move |r| fake.respond(r))
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn env_var<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no env {name} in {container}"))
}

#[tokio::test]
async fn create_postgres_applies_namespace_secret_service_statefulset_then_waits_for_the_pod() {
    let fake = Fake::new(
        "postgres",
        "orders-db",
        vec![None, Some(PodShows::ImagePullBackOff), Some(PodShows::Ready)],
    );
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let out = p.create(&postgres()).await.expect("created");
    drop(p);

    assert_eq!(
        out.outputs,
        BTreeMap::from([
            ("host".to_string(), json!("orders-db.pave-demo.svc.cluster.local")),
            ("port".to_string(), json!(5432)),
            ("database".to_string(), json!("orders")),
            ("user".to_string(), json!("orders_app")),
        ])
    );
    assert_eq!(out.location, "statefulset/pave-demo/orders-db");

    let seen = server.requests().await;
    assert_eq!(
        calls(&seen),
        vec![
            call("PATCH", NAMESPACE),
            call("PATCH", secret_path("orders-db")),
            call("PATCH", service_path("orders-db")),
            call("PATCH", sts_path("orders-db")),
            // 404, ImagePullBackOff, Ready; then the revision check.
            call("GET", pod_path("orders-db")),
            call("GET", pod_path("orders-db")),
            call("GET", pod_path("orders-db")),
            call("GET", sts_path("orders-db")),
        ]
    );
    for r in &seen[..4] {
        assert_applied_by_pave(r);
    }
    let labels = json!({
        "app.kubernetes.io/managed-by": "pave",
        "app.kubernetes.io/name": "orders-db",
        "pave.dev/environment": "pave-demo",
        "pave.dev/resource-kind": "postgres",
    });

    let ns = seen[0].json();
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(ns["metadata"]["name"], "pave-demo");
    assert_eq!(ns["metadata"]["labels"]["pave.dev/environment"], "pave-demo");
    assert_eq!(ns["metadata"]["labels"]["app.kubernetes.io/managed-by"], "pave");

    let secret = seen[1].json();
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], "orders-db-credentials");
    assert_eq!(secret["metadata"]["namespace"], "pave-demo");
    assert_eq!(secret["metadata"]["labels"], labels);
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["data"],
        json!({ "password": PASSWORD_B64, "user": "b3JkZXJzX2FwcA==", "database": "b3JkZXJz" })
    );

    let service = seen[2].json();
    assert_eq!(service["kind"], "Service");
    assert_eq!(service["metadata"]["name"], "orders-db");
    assert_eq!(service["metadata"]["labels"], labels);
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(
        service["spec"]["ports"],
        json!([{ "name": "postgres", "port": 5432, "targetPort": 5432, "protocol": "TCP" }])
    );
    assert_eq!(service["spec"]["selector"]["app.kubernetes.io/name"], "orders-db");

    let sts_body = &seen[3].body;
    assert!(
        !sts_body.contains(PASSWORD) && !sts_body.contains(PASSWORD_B64),
        "the password leaked into the StatefulSet: {sts_body}"
    );
    for r in seen.iter().filter(|r| r.path != secret_path("orders-db")) {
        assert!(!r.body.contains(PASSWORD), "{} {}", r.method, r.path);
    }
    let sts = seen[3].json();
    assert_eq!(sts["apiVersion"], "apps/v1");
    assert_eq!(sts["kind"], "StatefulSet");
    assert_eq!(sts["metadata"]["name"], "orders-db");
    assert_eq!(sts["metadata"]["labels"], labels);
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["serviceName"], "orders-db");
    assert_eq!(spec["selector"]["matchLabels"], service["spec"]["selector"]);
    assert_eq!(spec["template"]["metadata"]["labels"], labels);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "postgres");
    assert_eq!(c["image"], "postgres:16.4");
    assert_eq!(
        env_names(c),
        vec!["POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "PGDATA"]
    );
    assert_eq!(env_var(c, "POSTGRES_USER")["value"], "orders_app");
    assert_eq!(env_var(c, "POSTGRES_DB")["value"], "orders");
    assert_eq!(
        env_var(c, "POSTGRES_PASSWORD"),
        &json!({ "name": "POSTGRES_PASSWORD", "valueFrom": { "secretKeyRef": {
            "name": "orders-db-credentials", "key": "password", "optional": false } } })
    );
    assert_eq!(env_var(c, "PGDATA")["value"], "/var/lib/postgresql/data/pgdata");
    assert_eq!(
        c["volumeMounts"],
        json!([{ "name": "data", "mountPath": "/var/lib/postgresql/data" }])
    );
    assert_eq!(
        c["readinessProbe"]["exec"]["command"],
        json!([
            "pg_isready",
            "-U",
            "orders_app",
            "-d",
            "orders",
            "-h",
            "127.0.0.1"
        ])
    );
    assert_eq!(
        c["ports"],
        json!([{ "name": "postgres", "containerPort": 5432, "protocol": "TCP" }])
    );
    let claims = spec["volumeClaimTemplates"].as_array().expect("claim templates");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["metadata"]["name"], "data");
    assert_eq!(claims[0]["metadata"]["labels"], labels);
    assert_eq!(claims[0]["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], "1Gi");
}

#[tokio::test]
async fn create_redis_passes_the_password_through_the_environment_only() {
    let fake = Fake::new("redis", "cache", vec![Some(PodShows::Ready)]);
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let out = p
        .create(&request("redis", "cache", json!({ "version": "7.2" })))
        .await
        .expect("created");
    drop(p);
    assert_eq!(
        out.outputs,
        BTreeMap::from([
            ("host".to_string(), json!("cache.pave-demo.svc.cluster.local")),
            ("port".to_string(), json!(6379)),
        ])
    );
    assert_eq!(out.location, "statefulset/pave-demo/cache");

    let seen = server.requests().await;
    let secret = seen
        .iter()
        .find(|r| r.is("PATCH", &secret_path("cache")))
        .expect("secret applied")
        .json();
    assert_eq!(secret["data"], json!({ "password": PASSWORD_B64 }));
    let service = seen
        .iter()
        .find(|r| r.is("PATCH", &service_path("cache")))
        .expect("service applied")
        .json();
    assert_eq!(service["spec"]["ports"][0]["port"], 6379);
    let sts = seen
        .iter()
        .find(|r| r.is("PATCH", &sts_path("cache")))
        .expect("statefulset applied");
    assert_applied_by_pave(sts);
    assert!(!sts.body.contains(PASSWORD));
    let sts = sts.json();
    assert_eq!(sts["metadata"]["labels"]["pave.dev/resource-kind"], "redis");
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "redis:7.2");
    assert_eq!(
        c["args"],
        json!([
            "redis-server",
            "--requirepass",
            "$(REDIS_PASSWORD)",
            "--appendonly",
            "yes"
        ])
    );
    assert_eq!(
        c["env"],
        json!([{ "name": "REDIS_PASSWORD", "valueFrom": { "secretKeyRef": {
            "name": "cache-credentials", "key": "password", "optional": false } } }])
    );
    assert_eq!(
        c["readinessProbe"]["exec"]["command"],
        json!([
            "sh",
            "-c",
            "redis-cli -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep PONG"
        ])
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{ "name": "data", "mountPath": "/data" }])
    );
}

#[tokio::test]
async fn default_versions_are_postgres_16_and_redis_7() {
    for (kind, image) in [("postgres", "postgres:16"), ("redis", "redis:7")] {
        let fake = Fake::new(kind, "store", vec![Some(PodShows::Ready)]);
        let (target, server) = fake_target(fake);
        let p = providers(target);
        let out = p
            .create(&request(kind, "store", Value::Null))
            .await
            .expect("created");
        if kind == "postgres" {
            // The engine's defaults (name with '_'), should the spec lack them.
            assert_eq!(out.outputs["user"], "store");
            assert_eq!(out.outputs["database"], "store");
        }
        drop(p);
        let seen = server.requests().await;
        let sts = seen
            .iter()
            .find(|r| r.is("PATCH", &sts_path("store")))
            .expect("applied")
            .json();
        assert_eq!(sts["spec"]["template"]["spec"]["containers"][0]["image"], image);
    }
}

#[tokio::test]
async fn create_on_a_healthy_resource_changes_nothing_and_returns_at_once() {
    let req = postgres();
    let fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::Ready)]);
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let first = p.create(&req).await.expect("created");
    let again = p.create(&req).await.expect("created again");
    assert_eq!(first, again);
    drop(p);
    let seen = server.requests().await;
    assert_eq!(seen.len(), 12, "{:?}", calls(&seen));
    let second = calls(&seen[6..]);
    assert_eq!(
        second,
        vec![
            call("PATCH", NAMESPACE),
            call("PATCH", secret_path("orders-db")),
            call("PATCH", service_path("orders-db")),
            call("PATCH", sts_path("orders-db")),
            call("GET", pod_path("orders-db")),
            call("GET", sts_path("orders-db")),
        ]
    );
}

#[tokio::test]
async fn create_after_a_version_change_waits_for_the_controller_and_the_replaced_pod() {
    let req = postgres();
    let mut fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::Ready)]).existing(&req);
    // The controller: first it has not seen generation 2, then the old pod (old
    // hash) is still there, then the new one.
    let mut sts_gets = 0;
    let mut pod_gets = 0;
    fake.special = Box::new(move |r| {
        if r.is("GET", &sts_path("orders-db")) {
            sts_gets += 1;
            let mut body = stateful_set(
                &json!({ "metadata": { "name": "orders-db" }, "spec": {} }),
                2,
                Some(2),
            );
            if sts_gets == 1 {
                body["status"]["observedGeneration"] = json!(1);
            }
            body["status"]["updateRevision"] = json!("orders-db-newhash01");
            return Some(Reply::json(200, body));
        }
        if r.is("GET", &pod_path("orders-db")) {
            pod_gets += 1;
            let hash = if pod_gets <= 2 { HASH } else { "newhash01" };
            return Some(Reply::json(
                200,
                resource_pod(PodShows::Ready, "postgres", "orders-db", hash),
            ));
        }
        None
    });
    let (target, server) = fake_target(fake);
    let p = providers(target);
    p.create(&req).await.expect("created");
    drop(p);
    let seen = server.requests().await;
    let reads = seen.iter().filter(|r| r.method == "GET").count();
    assert_eq!(reads, 6, "{:?}", calls(&seen));
}

#[tokio::test]
async fn create_times_out_naming_an_image_pull_back_off() {
    let fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::ImagePullBackOff)]);
    let (target, server) = fake_target(fake);
    let p = providers(target).with_ready_timeout(Duration::from_millis(150));
    let err = p.create(&postgres()).await.expect_err("never ready");
    drop(p);
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Unhealthy(_)), "{err:?}");
    assert!(
        msg.starts_with("unhealthy: pod pave-demo/orders-db-0 not ready after 150 ms: "),
        "{msg}"
    );
    assert!(
        msg.contains("container postgres is waiting: ImagePullBackOff: Back-off pulling image \"nginx:bad\""),
        "{msg}"
    );
    assert_no_password(&err);
    let seen = server.requests().await;
    assert!(
        seen.iter()
            .filter(|r| r.is("GET", &pod_path("orders-db")))
            .count()
            >= 2,
        "the pod is polled"
    );
}

#[tokio::test]
async fn create_times_out_naming_an_unschedulable_pod() {
    let fake = Fake::new("redis", "cache", vec![Some(PodShows::Unschedulable)]);
    let (target, server) = fake_target(fake);
    let p = providers(target).with_ready_timeout(Duration::from_millis(100));
    let err = p
        .create(&request("redis", "cache", json!({})))
        .await
        .expect_err("never ready");
    drop(p);
    let msg = err.to_string();
    assert!(
        msg.contains(
            "Pending, not scheduled: Unschedulable: 0/1 nodes are available: pod has unbound immediate \
             PersistentVolumeClaims."
        ),
        "{msg}"
    );
    server.requests().await;
}

#[tokio::test]
async fn create_times_out_when_no_pod_ever_appears() {
    let fake = Fake::new("redis", "cache", vec![None]);
    let (target, server) = fake_target(fake);
    let p = providers(target).with_ready_timeout(Duration::from_millis(100));
    let err = p
        .create(&request("redis", "cache", json!({})))
        .await
        .expect_err("never ready");
    drop(p);
    assert_eq!(
        err.to_string(),
        "unhealthy: pod pave-demo/cache-0 not ready after 100 ms: no pod yet"
    );
    server.requests().await;
}

#[tokio::test]
async fn requests_that_cannot_be_served_fail_before_any_call() {
    let (target, server) = mock_target(unexpected);
    let p = providers(target);
    let mut no_password = postgres();
    no_password.secrets.clear();
    let err = p.create(&no_password).await.expect_err("no password");
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains("password")),
        "{err}"
    );
    let err = p
        .create(&request("mysql", "db", json!({})))
        .await
        .expect_err("unknown kind");
    assert!(
        matches!(&err, ProviderError::Invalid(m) if m.contains("mysql")),
        "{err}"
    );
    for bad in ["Orders", "1db", "db-", &"x".repeat(53)] {
        let err = p
            .create(&request("redis", bad, json!({})))
            .await
            .expect_err("bad name");
        assert!(matches!(err, ProviderError::Invalid(_)), "{bad}: {err}");
    }
    let err = p
        .create(&request("postgres", "db", json!({ "version": "16; rm -rf /" })))
        .await
        .expect_err("bad version");
    assert!(matches!(err, ProviderError::Invalid(_)), "{err}");
    drop(p);
    assert!(server.requests().await.is_empty());
}

#[tokio::test]
async fn check_is_ok_for_a_ready_pod_with_its_service_and_secret() {
    let req = postgres();
    let fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::Ready)]).existing(&req);
    let (target, server) = fake_target(fake);
    let p = providers(target);
    p.check(&req).await.expect("healthy");
    drop(p);
    assert_eq!(
        calls(&server.requests().await),
        vec![
            call("GET", sts_path("orders-db")),
            call("GET", pod_path("orders-db")),
            call("GET", service_path("orders-db")),
            call("GET", secret_path("orders-db")),
        ]
    );
}

#[tokio::test]
async fn check_names_a_crash_loop() {
    let req = postgres();
    let fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::CrashLoopBackOff)]).existing(&req);
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let err = p.check(&req).await.expect_err("crash loop");
    drop(p);
    assert!(matches!(err, ProviderError::Unhealthy(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("unhealthy: pod pave-demo/orders-db-0: container postgres is waiting: CrashLoopBackOff: back-off 20s"),
        "{msg}"
    );
    assert!(msg.contains("(last exit code 1 Error, 2 restarts)"), "{msg}");
    server.requests().await;
}

#[tokio::test]
async fn check_is_gone_without_the_statefulset_and_unhealthy_without_the_service() {
    let req = postgres();
    let (target, server) = fake_target(Fake::new("postgres", "orders-db", vec![None]));
    let p = providers(target);
    let err = p.check(&req).await.expect_err("gone");
    assert!(matches!(err, ProviderError::Gone(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the resource is gone: StatefulSet pave-demo/orders-db does not exist"
    );
    drop(p);
    server.requests().await;

    let mut fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::Ready)]).existing(&req);
    fake.service = false;
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let err = p.check(&req).await.expect_err("no service");
    assert!(
        matches!(&err, ProviderError::Unhealthy(m) if m.starts_with("Service pave-demo/orders-db is missing")),
        "{err:?}"
    );
    drop(p);
    server.requests().await;
}

#[tokio::test]
async fn repair_reapplies_and_replaces_the_unready_pod() {
    let req = postgres();
    let mut fake = Fake::new(
        "postgres",
        "orders-db",
        // Crash-looping; after the delete: gone, then the new pod Ready.
        vec![Some(PodShows::CrashLoopBackOff), None, Some(PodShows::Ready)],
    )
    .existing(&req);
    // The Secret and the Service were deleted by hand.
    fake.secret = false;
    fake.service = false;
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let out = p.repair(&req).await.expect("repaired");
    assert_eq!(out.location, "statefulset/pave-demo/orders-db");
    assert_eq!(out.outputs["port"], 5432);
    drop(p);
    let seen = server.requests().await;
    assert_eq!(
        calls(&seen),
        vec![
            call("GET", sts_path("orders-db")),
            call("PATCH", secret_path("orders-db")),
            call("PATCH", service_path("orders-db")),
            call("PATCH", sts_path("orders-db")),
            call("GET", pod_path("orders-db")),
            call("DELETE", pod_path("orders-db")),
            call("GET", pod_path("orders-db")),
            call("GET", pod_path("orders-db")),
            call("GET", sts_path("orders-db")),
        ]
    );
    for r in &seen[1..4] {
        assert_applied_by_pave(r);
    }
    // Only that pod: the delete is conditional on its uid (from pods.jsonl).
    let delete = seen[5].json();
    assert_eq!(
        delete["preconditions"]["uid"],
        "a3c8e2fd-f53d-4cc5-9b4e-4aeaea3b25b2"
    );
}

#[tokio::test]
async fn repair_leaves_a_ready_pod_alone_and_says_gone_without_data() {
    let req = postgres();
    let fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::Ready)]).existing(&req);
    let (target, server) = fake_target(fake);
    let p = providers(target);
    p.repair(&req).await.expect("repaired");
    drop(p);
    let seen = server.requests().await;
    assert!(seen.iter().all(|r| r.method != "DELETE"), "{:?}", calls(&seen));

    // Neither the StatefulSet nor its claim: nothing to bring back.
    let (target, server) = fake_target(Fake::new("postgres", "orders-db", vec![None]));
    let p = providers(target);
    let err = p.repair(&req).await.expect_err("gone");
    assert!(
        matches!(&err, ProviderError::Gone(m) if m.contains("data claim data-orders-db-0")),
        "{err:?}"
    );
    drop(p);
    assert_eq!(
        calls(&server.requests().await),
        vec![
            call("GET", sts_path("orders-db")),
            call("GET", format!("{}/data-orders-db-0", claims_path())),
        ]
    );
}

#[tokio::test]
async fn delete_removes_everything_and_the_claims_by_label() {
    let req = postgres();
    let fake = Fake::new("postgres", "orders-db", vec![None]).existing(&req);
    let (target, server) = fake_target(fake);
    let p = providers(target);
    p.delete(&req).await.expect("deleted");
    drop(p);
    let seen = server.requests().await;
    assert_eq!(
        calls(&seen),
        vec![
            call("DELETE", sts_path("orders-db")),
            call("DELETE", service_path("orders-db")),
            call("DELETE", secret_path("orders-db")),
            call("DELETE", claims_path()),
        ]
    );
    assert_eq!(
        seen[3].q("labelSelector"),
        Some("app.kubernetes.io/name=orders-db,app.kubernetes.io/managed-by=pave")
    );
}

#[tokio::test]
async fn delete_of_what_is_not_there_succeeds() {
    let mut req = postgres();
    // Deleting needs no credentials.
    req.secrets.clear();
    let (target, server) = fake_target(Fake::new("postgres", "orders-db", vec![None]));
    let p = providers(target);
    p.delete(&req).await.expect("404 is deleted");
    drop(p);
    assert_eq!(server.requests().await.len(), 4);
}

/// The recorded 403 of an apply, as it reads for `plural` `name`.
fn forbidden(plural: &str, group: &str, name: &str) -> Reply {
    let mut body = fixture("errors.jsonl", "403 limited token applies a configmap").json();
    let what = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    body["message"] = json!(format!(
        "{what} \"{name}\" is forbidden: User \"pave-limited\" cannot patch resource \"{plural}\" in API group \
         \"{group}\" in the namespace \"pave-demo\""
    ));
    body["details"] = json!({ "name": name, "group": group, "kind": plural });
    Reply::json(403, body)
}

#[tokio::test]
async fn a_denied_apply_names_the_object_and_the_credentials() {
    let mut fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::Ready)]);
    // A credential limited to its namespace may not apply the Namespace:
    // that alone does not stop the create.
    let mut body = fixture("errors.jsonl", "403 limited token applies a configmap").json();
    body["message"] = json!(
        "namespaces \"pave-demo\" is forbidden: User \"pave-limited\" cannot patch resource \"namespaces\" \
         in API group \"\" at the cluster scope"
    );
    fake.namespace_reply = Some(Reply::json(403, body));
    fake.special = Box::new(|r| {
        r.is("PATCH", &sts_path("orders-db"))
            .then(|| forbidden("statefulsets", "apps", "orders-db"))
    });
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let err = p.create(&postgres()).await.expect_err("forbidden");
    drop(p);
    assert!(matches!(err, ProviderError::Command(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "apply StatefulSet pave-demo/orders-db: statefulsets.apps \"orders-db\" is forbidden: User \
         \"pave-limited\" cannot patch resource \"statefulsets\" in API group \"apps\" in the namespace \
         \"pave-demo\" (Forbidden, HTTP 403); the credentials pave uses for this cluster may not do this \
         (grant them the RBAC permission)"
    );
    assert_eq!(err.code(), "provider_failed");
    assert_no_password(&err);
    let seen = server.requests().await;
    assert_eq!(seen.len(), 4, "{:?}", calls(&seen));
}

#[tokio::test]
async fn a_denied_delete_fails_and_is_not_taken_for_success() {
    let mut fake = Fake::new("redis", "cache", vec![None]);
    fake.special = Box::new(|r| {
        (r.method == "DELETE" && r.path == claims_path()).then(|| {
            let mut body = fixture("errors.jsonl", "403 limited token lists pods").json();
            body["message"] = json!(
                "persistentvolumeclaims is forbidden: User \"pave-limited\" cannot deletecollection resource \
                 \"persistentvolumeclaims\" in API group \"\" in the namespace \"pave-demo\""
            );
            Reply::json(403, body)
        })
    });
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let err = p
        .delete(&request("redis", "cache", json!({})))
        .await
        .expect_err("forbidden");
    drop(p);
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "delete PersistentVolumeClaims in pave-demo with app.kubernetes.io/name=cache,\
             app.kubernetes.io/managed-by=pave: persistentvolumeclaims is forbidden"
        ),
        "{msg}"
    );
    assert!(msg.contains("may not do this"), "{msg}");
    server.requests().await;
}

#[tokio::test]
async fn the_password_is_scrubbed_from_what_the_api_server_echoes() {
    let mut fake = Fake::new("postgres", "orders-db", vec![None]);
    fake.special = Box::new(|r| {
        r.is("PATCH", &secret_path("orders-db")).then(|| {
            // Shaped like the recorded 422s, as if a webhook quoted the data back.
            let mut body = fixture("errors.jsonl", "422 apply invalid name (uppercase)").json();
            body["message"] = json!(format!(
                "Secret \"orders-db-credentials\" is invalid: data[password]: Invalid value: \"{PASSWORD}\" \
                 ({PASSWORD_B64}): rejected by policy"
            ));
            body["details"] = json!({ "name": "orders-db-credentials", "kind": "Secret" });
            Reply::json(422, body)
        })
    });
    let (target, server) = fake_target(fake);
    let p = providers(target);
    let err = p.create(&postgres()).await.expect_err("invalid");
    drop(p);
    assert_no_password(&err);
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "apply Secret pave-demo/orders-db-credentials: Secret \"orders-db-credentials\" is invalid"
        ),
        "{msg}"
    );
    assert!(msg.contains("Invalid value: \"********\" (********)"), "{msg}");
    server.requests().await;
}

#[tokio::test]
async fn the_trait_object_does_what_the_methods_do() {
    let req = postgres();
    let fake = Fake::new("postgres", "orders-db", vec![Some(PodShows::Ready)]).existing(&req);
    let (target, server) = fake_target(fake);
    let p: Box<dyn Provider> = Box::new(providers(target));
    p.check(&req).await.expect("healthy");
    drop(p);
    assert_eq!(server.requests().await.len(), 4);
}
