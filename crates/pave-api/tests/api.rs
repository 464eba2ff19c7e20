//! The API over real HTTP, with the real engine, store and embedded agent behind it.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use pave_agent::embedded::AgentDirs;
use pave_core::time::now_ms;
use pave_engine::{AgentHub, AllowAll, Engine, EngineConfig};
use pave_store::{TokenRecord, WriteOp};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn token(engine: &Engine, secret: &str, expires_at: Option<i64>, revoked_at: Option<i64>) {
    engine
        .writer()
        .write(vec![WriteOp::InsertToken(TokenRecord {
            id: pave_core::ids::new_id(),
            name: secret.into(),
            subject: "admin".into(),
            hash: pave_api::hash_token(secret),
            created_at: now_ms(),
            expires_at,
            revoked_at,
        })])
        .await
        .unwrap();
}

async fn start() -> Api {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let store = pave_store::open(&format!("sqlite://{}", dir.path().join("pave.db").display()))
        .await
        .unwrap();
    let link = pave_agent::spawn_embedded(AgentDirs {
        work_dir: dir.path().join("work"),
        state_dir: dir.path().join("agent"),
        resources_dir: dir.path().join("resources"),
        workloads_dir: dir.path().join("workloads"),
        shim_command: vec!["pave-shim".into()],
    })
    .unwrap();
    let mut agents = HashMap::new();
    agents.insert("local".to_string(), AgentHub::start(link).await);
    let config = EngineConfig {
        master_key: pave_core::vault::MasterKey::from_hex(&pave_core::vault::MasterKey::generate_hex()).ok(),
        ..EngineConfig::default()
    };
    let engine = Engine::new(store, agents, Box::new(AllowAll), config);
    let e = engine.clone();
    tokio::spawn(async move { e.run(Duration::from_secs(1)).await });
    token(&engine, "pave_good", None, None).await;
    token(&engine, "pave_expired", Some(now_ms() - 1000), None).await;
    token(&engine, "pave_revoked", None, Some(now_ms() - 1000)).await;
    let app = pave_api::router(pave_api::AppState {
        engine: engine.clone(),
        metrics: None,
        ready: Arc::new(AtomicBool::new(true)),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api {
        base,
        http: reqwest::Client::new(),
        token: "pave_good".into(),
        engine,
        _dir: dir,
    }
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn audit_count(&self) -> usize {
        self.engine.store().audit_page(0, 100_000).await.unwrap().len()
    }

    async fn wait_state(&self, id: &str, states: &[&str]) -> Value {
        for _ in 0..300 {
            let (_, a) = self.get(&format!("/api/v1/actions/{id}")).await;
            if states.contains(&a["state"].as_str().unwrap_or("")) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("action {id} did not reach {states:?}");
    }
}

fn job(cmd: &[&str]) -> Value {
    json!({ "kind": "job", "input": { "command": cmd } })
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_that_are_missing_unknown_expired_or_revoked_get_401() {
    let api = start().await;
    let url = format!("{}/api/v1/actions", api.base);
    let resp = api.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    for (secret, why) in [
        ("pave_unknown", "unknown"),
        ("pave_expired", "expired"),
        ("pave_revoked", "revoked"),
    ] {
        let resp = api.http.get(&url).bearer_auth(secret).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{secret}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(why), "{body}");
    }
    let resp = api
        .http
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_precise_errors_and_change_nothing() {
    let api = start().await;
    let before = api.audit_count().await;
    let url = format!("{}/api/v1/actions", api.base);
    let send_raw = |body: Vec<u8>| {
        api.http
            .post(&url)
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = send_raw(b"{not json".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "malformed_json"
    );

    let r = send_raw(vec![b' '; pave_api::MAX_BODY_BYTES + 10]).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "body_too_large"
    );

    let (s, b) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "input": {"command": ["true"]}, "colour": "red"}),
        )
        .await;
    assert_eq!(s, 422);
    assert!(b["error"]["message"].as_str().unwrap().contains("colour"), "{b}");

    let (s, b) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "input": {"command": ["true"], "timeout": 3}}),
        )
        .await;
    assert_eq!(s, 422);
    assert!(b["error"]["message"].as_str().unwrap().contains("timeout"), "{b}");

    let (s, b) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "input": {"command": []}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");

    let (s, b) = api.post("/api/v1/actions", json!({"kind": "teleport"})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_kind"))
    );

    let (s, _) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "env": "nowhere", "input": {"command": ["true"]}}),
        )
        .await;
    assert_eq!(s, 404);

    let (s, _) = api.get("/api/v1/actions?limit=0").await;
    assert_eq!(s, 400);
    let (s, b) = api.get("/api/v1/actions?state=sleeping").await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = api.get("/api/v1/actions/does-not-exist").await;
    assert_eq!(s, 404);
    let (s, b) = api.get("/api/v1/nothing-here").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    assert_eq!(
        api.audit_count().await,
        before,
        "a rejected request wrote to the audit trail"
    );
    let (_, page) = api.get("/api/v1/actions").await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        0,
        "a rejected request created an action"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_returns_the_same_action_and_never_runs_twice() {
    let api = start().await;
    let marker = api._dir.path().join("runs");
    let script = format!("echo run >> {}", marker.display());
    let send = |body: Value| {
        api.http
            .post(format!("{}/api/v1/actions", api.base))
            .bearer_auth(&api.token)
            .header("Idempotency-Key", "deploy-42")
            .json(&body)
            .send()
    };
    let first = send(job(&["sh", "-c", &script])).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let second = send(job(&["sh", "-c", &script])).await.unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    api.wait_state(first["id"].as_str().unwrap(), &["succeeded"])
        .await;
    let third = send(job(&["sh", "-c", &script])).await.unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
    let other = send(job(&["true"])).await.unwrap();
    assert_eq!(other.status(), 409);
    let (_, page) = api.get("/api/v1/actions").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_cancel_and_rollback_answer_409_from_the_wrong_state() {
    let api = start().await;
    let (_, a) = api.post("/api/v1/actions", job(&["sleep", "30"])).await;
    let id = a["id"].as_str().unwrap().to_string();
    api.wait_state(&id, &["running"]).await;
    let (s, b) = api.post(&format!("/api/v1/actions/{id}/retry"), json!({})).await;
    assert_eq!(s, 409);
    assert_eq!(b["error"]["message"], "cannot retry an action that is running");
    let started = std::time::Instant::now();
    let (s, _) = api.post(&format!("/api/v1/actions/{id}/cancel"), json!({})).await;
    assert_eq!(s, 200);
    let a = api.wait_state(&id, &["cancelled"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancel did not stop the command"
    );
    assert_eq!(a["steps"][0]["state"], "cancelled");
    let (s, _) = api.post(&format!("/api/v1/actions/{id}/cancel"), json!({})).await;
    assert_eq!(s, 409);
    let (s, _) = api
        .post(&format!("/api/v1/actions/{id}/rollback"), json!({}))
        .await;
    assert_eq!(s, 409, "a job without undo has nothing to roll back");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_stream_logs_and_the_end_and_pagination_follows_the_cursor() {
    let api = start().await;
    let (_, a) = api
        .post(
            "/api/v1/actions",
            job(&["sh", "-c", "echo one; sleep 0.3; echo two >&2"]),
        )
        .await;
    let id = a["id"].as_str().unwrap();
    let text = api
        .http
        .get(format!("{}/api/v1/actions/{id}/events", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: log"), "{text}");
    assert!(
        text.contains("\"line\":\"one\"") && text.contains("\"line\":\"two\""),
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: succeeded"), "{text}");
    let (_, logs) = api.get(&format!("/api/v1/actions/{id}/logs")).await;
    let streams: Vec<&str> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["stream"].as_str())
        .collect();
    assert!(streams.contains(&"stdout") && streams.contains(&"stderr"));

    for _ in 0..4 {
        api.post("/api/v1/actions", json!({"kind": "noop"})).await;
    }
    let (_, p1) = api.get("/api/v1/actions?limit=3").await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 3);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = api.get(&format!("/api/v1/actions?limit=3&cursor={cursor}")).await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 2);
    assert!(p2.get("next_cursor").is_none());
    let (_, noop) = api.get("/api/v1/actions?kind=noop&limit=10").await;
    assert_eq!(noop["items"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route() {
    let api = start().await;
    let (s, doc) = api.get("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    for path in [
        "/api/v1/actions",
        "/api/v1/actions/{id}",
        "/api/v1/actions/{id}/events",
        "/api/v1/actions/{id}/logs",
        "/api/v1/actions/{id}/retry",
        "/api/v1/actions/{id}/cancel",
        "/api/v1/actions/{id}/rollback",
        "/api/v1/audit",
        "/api/v1/audit/verify",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Action"].is_object());
    let (_, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!(v["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_notices_events_removed_from_the_end_of_the_chain() {
    let api = start().await;
    for _ in 0..3 {
        let (_, a) = api.post("/api/v1/actions", json!({"kind": "noop"})).await;
        api.wait_state(a["id"].as_str().unwrap(), &["succeeded"]).await;
    }
    let (_, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    let total = v["checked"].as_i64().unwrap();
    let db = api._dir.path().join("pave.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)")
        .execute(&pool)
        .await
        .unwrap();
    let (_, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_broken"].as_i64().unwrap(), total, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn environments_are_created_labelled_used_and_deleted() {
    let api = start().await;
    let (s, e) = api
        .post(
            "/api/v1/environments",
            json!({"name": "payments-staging", "target": "local", "labels": {"tier": "staging"}}),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    assert_eq!(e["labels"]["tier"], "staging");
    let (s, _) = api
        .post("/api/v1/environments", json!({"name": "payments-staging"}))
        .await;
    assert_eq!(s, 409);
    let (s, b) = api
        .post("/api/v1/environments", json!({"name": "Payments"}))
        .await;
    assert_eq!(s, 422, "{b}");
    let (s, _) = api
        .post("/api/v1/environments", json!({"name": "x", "target": "mars"}))
        .await;
    assert_eq!(s, 404);
    let (s, e) = api
        .call(
            reqwest::Method::PATCH,
            "/api/v1/environments/payments-staging",
            Some(json!({"labels": {"tier": null, "team": "pay"}})),
        )
        .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["labels"], json!({"team": "pay"}));
    let (_, list) = api.get("/api/v1/environments").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, vec!["local", "payments-staging"]);

    let (s, a) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "env": "payments-staging", "input": {"command": ["sleep", "2"]}}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = api
        .call(
            reqwest::Method::DELETE,
            "/api/v1/environments/payments-staging",
            None,
        )
        .await;
    assert_eq!(s, 409, "an environment with a running action was deleted: {b}");
    api.wait_state(a["id"].as_str().unwrap(), &["succeeded"]).await;
    let (s, d) = api
        .call(
            reqwest::Method::DELETE,
            "/api/v1/environments/payments-staging",
            None,
        )
        .await;
    assert_eq!(s, 202, "{d}");
    assert_eq!(d["kind"], "env.delete");
    api.wait_state(d["id"].as_str().unwrap(), &["succeeded"]).await;
    let (s, _) = api.get("/api/v1/environments/payments-staging").await;
    assert_eq!(s, 404);
    // Its record stays readable after the environment went.
    let (s, d) = api
        .get(&format!("/api/v1/actions/{}", d["id"].as_str().unwrap()))
        .await;
    assert_eq!((s.as_u16(), d["state"].as_str()), (200, Some("succeeded")));
    let (s, _) = api
        .call(reqwest::Method::DELETE, "/api/v1/environments/local", None)
        .await;
    assert_eq!(s, 409);
    let (_, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!(v["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_action_of_a_deleted_environment_cannot_run_again() {
    let api = start().await;
    let (s, _) = api
        .post("/api/v1/environments", json!({"name": "gone-soon"}))
        .await;
    assert_eq!(s, 201);
    let (_, a) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "env": "gone-soon", "input": {"command": ["false"]}}),
        )
        .await;
    let id = a["id"].as_str().unwrap();
    api.wait_state(id, &["failed"]).await;
    let (s, d) = api
        .call(reqwest::Method::DELETE, "/api/v1/environments/gone-soon", None)
        .await;
    assert_eq!(s, 202);
    api.wait_state(d["id"].as_str().unwrap(), &["succeeded"]).await;
    let (s, b) = api.post(&format!("/api/v1/actions/{id}/retry"), json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("deleted"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn blueprints_are_registered_versioned_and_applied_with_checked_parameters() {
    let api = start().await;
    let yaml = "name: worker\nversion: 1\nparameters:\n  type: object\n  required: [name]\n  \
                properties:\n    name: {type: string}\n    count: {type: integer, default: 1}\n\
                resources:\n  - name: ${params.name}-cache\n    kind: redis\n";
    let send = |body: String, content_type: &'static str| {
        api.http
            .post(format!("{}/api/v1/blueprints", api.base))
            .bearer_auth(&api.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let r = send(yaml.to_string(), "application/yaml").await.unwrap();
    assert_eq!(r.status(), 201);
    let r = send(yaml.to_string(), "application/yaml").await.unwrap();
    assert_eq!(r.status(), 409, "versions are immutable");
    let r = send(yaml.replace("version: 1", "version: 2"), "text/plain")
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = send(yaml.replace("resources", "resource"), "application/yaml")
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("resource"),
        "{body}"
    );
    let r = send(yaml.replace("version: 1", "version: 2"), "application/yaml")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let (s, list) = api.get("/api/v1/blueprints").await;
    assert_eq!(s, 200);
    let versions: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "worker")
        .map(|e| {
            (
                e["version"].as_u64().unwrap(),
                e["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(versions, [(1, "api".to_string()), (2, "api".to_string())]);
    let (s, one) = api.get("/api/v1/blueprints/worker?version=1").await;
    assert_eq!((s.as_u16(), one["version"].as_u64()), (200, Some(1)));
    let (s, _) = api.get("/api/v1/blueprints/nothing").await;
    assert_eq!(s, 404);

    // Parameters are checked before an action exists.
    let before = api
        .engine
        .store()
        .list_actions(&Default::default())
        .await
        .unwrap()
        .len();
    for params in [
        json!({}),
        json!({"name": "w", "count": "two"}),
        json!({"name": "w", "x": 1}),
    ] {
        // missing, mistyped, unknown
        let (s, b) = api
            .post(
                "/api/v1/actions",
                json!({"kind": "blueprint.apply", "input": {"blueprint": "worker", "params": params}}),
            )
            .await;
        assert_eq!(s, 422, "{b}");
    }
    let after = api
        .engine
        .store()
        .list_actions(&Default::default())
        .await
        .unwrap()
        .len();
    assert_eq!(before, after);
    let (s, a) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "blueprint.apply", "input": {"blueprint": "worker", "params": {"name": "w"}}}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["input"]["version"], 2, "the newest version applies: {a}");
    assert_eq!(a["input"]["params"]["count"], 1, "defaults are recorded: {a}");
    let a = api
        .wait_state(a["id"].as_str().unwrap(), &["succeeded", "failed"])
        .await;
    assert_eq!(a["state"], "succeeded", "{a}");
    let (s, d) = api
        .call(reqwest::Method::DELETE, "/api/v1/environments/local", None)
        .await;
    assert_eq!(s, 409, "{d}");
    let (s, a) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "resource.delete", "input": {"name": "w-cache"}}),
        )
        .await;
    assert_eq!(s, 201);
    api.wait_state(a["id"].as_str().unwrap(), &["succeeded"]).await;
}

/// The role table as docs/api.md shows it.
fn access_table_markdown() -> String {
    let mut out = String::from("| Method | Route | Needs |\n|---|---|---|\n");
    for (method, route, access) in pave_api::ACCESS_TABLE {
        let needs = match access {
            pave_api::Access::Authenticated => "any valid token".to_string(),
            pave_api::Access::Env(r) => format!("{r} in the environment"),
            pave_api::Access::ActionEnv(r) => format!("{r} in the action's environment"),
            pave_api::Access::Global(r) => format!("{r} in every environment"),
            pave_api::Access::Engine => "by action kind (see below)".to_string(),
        };
        out.push_str(&format!("| {method} | `{route}` | {needs} |\n"));
    }
    out
}

#[test]
fn the_docs_show_the_access_table_as_the_code_has_it() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let table = access_table_markdown();
    assert!(
        docs.contains(&table),
        "docs/api.md must contain this table:\n{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_checks_the_role_its_rule_names() {
    use pave_api::Access;
    use pave_core::rbac::Role;
    let api = start().await;
    // Every route of the API has a rule.
    let (_, doc) = api.get("/api/v1/openapi.json").await;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            assert!(
                pave_api::ACCESS_TABLE
                    .iter()
                    .any(|(tm, tr, _)| *tm == m && tr == path),
                "{m} {path} has no access rule"
            );
        }
    }

    let env = "rbac-env";
    let (s, _) = api.post("/api/v1/environments", json!({"name": env})).await;
    assert_eq!(s, 201);
    let done = api
        .post("/api/v1/actions", json!({"kind": "noop", "env": env}))
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.wait_state(&done, &["succeeded"]).await;
    // Keeps the environment busy, so that an allowed delete answers 409, not 202.
    let busy = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "env": env, "input": {"command": ["sleep", "30"]}}),
        )
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_string();

    // (user, role, in env or everywhere)
    let people: [(&str, Option<Role>, bool); 5] = [
        ("r-none", None, false),
        ("r-viewer", Some(Role::Viewer), false),
        ("r-developer", Some(Role::Developer), false),
        ("r-operator", Some(Role::Operator), false),
        ("r-admin", Some(Role::Admin), true),
    ];
    let mut tokens = Vec::new();
    for (user, role, global) in people {
        let (s, _) = api.post("/api/v1/users", json!({"name": user})).await;
        assert_eq!(s, 201);
        if let Some(r) = role {
            let mut b = json!({"user": user, "role": r.as_str()});
            if !global {
                b["env"] = json!(env);
            }
            let (s, b) = api.post("/api/v1/role-bindings", b).await;
            assert_eq!(s, 201, "{b}");
        }
        let (s, t) = api.post("/api/v1/tokens", json!({"user": user})).await;
        assert_eq!(s, 201, "{t}");
        tokens.push((user, role, global, t["token"].as_str().unwrap().to_string()));
    }

    let fill = |route: &str| {
        route
            .replace("{name}", env)
            .replace("{id}", &done)
            .replace("{resource}", "nothing")
            .replace("{workload}", "nothing")
            .replace("{user}", "nobody")
            .replace("{secret}", "nothing")
    };
    // Bodies that pass the gate and then fail validation, so that the walk changes nothing.
    let body = |method: &str, route: &str| -> Option<Value> {
        match (method, route) {
            ("POST", "/api/v1/actions") => Some(json!({"kind": "job", "env": env, "input": {"command": 5}})),
            ("POST", "/api/v1/environments") => Some(json!({"name": "Not A Name"})),
            ("PATCH", _) => Some(json!({"labels": {"not a key!": "x"}})),
            ("POST", r) if r.ends_with("/clone") => Some(json!({"name": "Not A Name"})),
            ("POST", "/api/v1/users") | ("POST", "/api/v1/teams") => Some(json!({"name": "Not A Name"})),
            ("POST", r) if r.ends_with("/members") => Some(json!({"user": "nobody"})),
            ("POST", "/api/v1/tokens") => Some(json!({"user": "nobody"})),
            ("POST", "/api/v1/role-bindings") => Some(json!({})),
            ("POST", "/api/v1/blueprints") => Some(json!({})),
            ("PUT", _) => Some(json!({"value": ""})),
            ("POST", _) => Some(json!({})),
            _ => None,
        }
    };
    for (method, route, access) in pave_api::ACCESS_TABLE {
        if route.starts_with("/api/v1/approvals/{id}/") || route.starts_with("/api/v1/incidents/{id}/") {
            // Decided by the role the approval request names: see the approvals test.
            continue;
        }
        for (user, role, global, token) in &tokens {
            let in_env = |need: Role| role.is_some_and(|r| r >= need);
            let allowed = match access {
                Access::Authenticated => true,
                Access::Env(need) | Access::ActionEnv(need) => in_env(*need),
                Access::Global(need) => *global && in_env(*need),
                Access::Engine => match (*method, *route) {
                    ("POST", "/api/v1/actions") => in_env(Role::Developer),
                    // Steering somebody else's action, deleting an environment.
                    _ => in_env(Role::Operator),
                },
            };
            let path = fill(route);
            let mut req = api
                .http
                .request(method.parse().unwrap(), format!("{}{path}", api.base))
                .bearer_auth(token);
            if let Some(b) = body(method, route) {
                req = req.json(&b);
            }
            let status = req.send().await.unwrap().status();
            if allowed {
                assert_ne!(status, 403, "{user} was refused {method} {route}");
                assert_ne!(status, 401, "{user} was refused {method} {route}");
            } else {
                assert_eq!(status, 403, "{user} got {status} for {method} {route}");
            }
        }
    }
    // Lists show only what the caller may see.
    let viewer_none = &tokens[0].3;
    let r = api
        .http
        .get(format!("{}/api/v1/environments", api.base))
        .bearer_auth(viewer_none)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    let (s, _) = api
        .post(&format!("/api/v1/actions/{busy}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200);
}

/// Production needs an operator's approval; more than 5 replicas are denied.
struct TestPolicy;

impl pave_engine::Policy for TestPolicy {
    fn evaluate(&self, input: &Value) -> pave_engine::Decision {
        if input["action"]["input"]["replicas"]
            .as_u64()
            .is_some_and(|r| r > 5)
        {
            return pave_engine::Decision::Deny {
                reasons: vec!["more than 5 replicas".into()],
            };
        }
        if input["environment"]["labels"]["tier"] == "production" && input["approval"].is_null() {
            return pave_engine::Decision::RequireApproval {
                reasons: vec!["production needs approval".into()],
                approver_role: "operator".into(),
                approver_team: None,
            };
        }
        pave_engine::Decision::Allow
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approver_other_than_the_requester_approves_the_amended_input_that_then_runs() {
    let api = start().await;
    api.engine.set_policy(Arc::new(TestPolicy));
    let (s, _) = api
        .post(
            "/api/v1/environments",
            json!({"name": "prod", "labels": {"tier": "production"}}),
        )
        .await;
    assert_eq!(s, 201);
    let mut tokens = std::collections::HashMap::new();
    for (user, role) in [("alice", "developer"), ("bob", "operator"), ("carol", "viewer")] {
        api.post("/api/v1/users", json!({"name": user})).await;
        let (s, b) = api
            .post(
                "/api/v1/role-bindings",
                json!({"user": user, "role": role, "env": "prod"}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (_, t) = api.post("/api/v1/tokens", json!({"user": user})).await;
        tokens.insert(user, t["token"].as_str().unwrap().to_string());
    }
    let as_user = |user: &str, method: reqwest::Method, path: &str, body: Value| {
        api.http
            .request(method, format!("{}{path}", api.base))
            .bearer_auth(&tokens[user])
            .json(&body)
            .send()
    };
    // A job that writes its argument, so that what ran can be read back.
    let out = api._dir.path().join("ran.txt");
    let input = json!({"command": ["sh", "-c", format!("echo $0 > {}", out.display()), "first"]});
    let r = as_user(
        "alice",
        reqwest::Method::POST,
        "/api/v1/actions",
        json!({"kind": "job", "env": "prod", "input": input}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "awaiting_approval", "{a}");
    let id = a["id"].as_str().unwrap().to_string();
    let (_, pending) = api.get("/api/v1/approvals").await;
    assert_eq!(pending[0]["action_id"], id.as_str(), "{pending}");
    assert_eq!(pending[0]["reasons"][0], "production needs approval");

    // The requester cannot approve, a viewer cannot either.
    for user in ["alice", "carol"] {
        let r = as_user(
            user,
            reqwest::Method::POST,
            &format!("/api/v1/approvals/{id}/approve"),
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 403, "{user}");
    }
    // An amendment the policy denies is refused, and the request still waits.
    let r = as_user(
        "bob",
        reqwest::Method::POST,
        &format!("/api/v1/approvals/{id}/approve"),
        json!({"amend": {"replicas": 9}}),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        422,
        "unknown field for a job: the amended input is planned again"
    );
    // bob amends the argument: the amended input is what runs.
    let amended = json!({"command": ["sh", "-c", format!("echo $0 > {}", out.display()), "amended"]});
    let r = as_user(
        "bob",
        reqwest::Method::POST,
        &format!("/api/v1/approvals/{id}/approve"),
        json!({"amend": amended, "comment": "use the amended one"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let a = api.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(a["state"], "succeeded", "{a}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "amended");
    // The record keeps the original, the amendment, the reviewer and the decision.
    let (_, rec) = api.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(rec["decision"], "approved");
    assert_eq!(rec["decided_by"], "bob");
    assert_eq!(rec["original_input"]["command"][3], "first");
    assert_eq!(rec["amendment"]["command"][3], "amended");
    // Deciding twice is a conflict.
    let r = as_user(
        "bob",
        reqwest::Method::POST,
        &format!("/api/v1/approvals/{id}/reject"),
        json!({"comment": "no"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);

    // Cancelling a held request and retrying it does not get round the approval.
    let r = as_user(
        "alice",
        reqwest::Method::POST,
        "/api/v1/actions",
        json!({"kind": "noop", "env": "prod"}),
    )
    .await
    .unwrap();
    let held = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = as_user(
        "alice",
        reqwest::Method::POST,
        &format!("/api/v1/actions/{held}/cancel"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = as_user(
        "alice",
        reqwest::Method::POST,
        &format!("/api/v1/actions/{held}/retry"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409, "a cancelled, never approved request was retried");
    let (_, rec) = api.get(&format!("/api/v1/approvals/{held}")).await;
    assert_eq!(rec["decision"], "cancelled");

    // A rejection needs a comment and ends the action.
    let r = as_user(
        "alice",
        reqwest::Method::POST,
        "/api/v1/actions",
        json!({"kind": "noop", "env": "prod"}),
    )
    .await
    .unwrap();
    let id2 = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = as_user(
        "bob",
        reqwest::Method::POST,
        &format!("/api/v1/approvals/{id2}/reject"),
        json!({"comment": " "}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = as_user(
        "bob",
        reqwest::Method::POST,
        &format!("/api/v1/approvals/{id2}/reject"),
        json!({"comment": "not now"}),
    )
    .await
    .unwrap();
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["state"], "rejected", "{a}");
    assert!(a["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rejected by bob: not now"));

    // Denied outright, with the policy's reason.
    let (s, a) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "deploy", "env": "prod", "input": {"name": "w", "command": ["true"], "replicas": 9}}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(a["state"], "denied");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 5 replicas"),
        "{a}"
    );
    let (_, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!(v["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_secret_is_injected_where_used_and_found_nowhere_else() {
    let api = start().await;
    let canary = "canary-7f3a9b2c5d1e";
    let r = api
        .http
        .put(format!("{}/api/v1/environments/local/secrets/canary", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"value": canary}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("${secret.canary}") && !body.contains(canary),
        "{body}"
    );
    // A job that prints it, to stdout and stderr, then fails quoting it.
    let (s, a) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "input": {
                "command": ["sh", "-c", "echo out=$CANARY; echo err=$CANARY >&2; case $CANARY in canary-*) exit 3;; esac"],
                "env": {"CANARY": "${secret.canary}"}
            }}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap();
    let a = api.wait_state(id, &["failed", "succeeded"]).await;
    // Exit 3 proves the job saw the real value.
    assert!(a["error"]["message"].as_str().unwrap().contains("code 3"), "{a}");
    let (_, logs) = api.get(&format!("/api/v1/actions/{id}/logs")).await;
    let lines: Vec<&str> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["line"].as_str())
        .collect();
    assert!(
        lines.contains(&"out=***") && lines.contains(&"err=***"),
        "{lines:?}"
    );
    // Nowhere in what the API answers, including the audit trail.
    let mut seen = String::new();
    for path in [
        format!("/api/v1/actions/{id}"),
        format!("/api/v1/actions/{id}/logs"),
        "/api/v1/actions".to_string(),
        "/api/v1/audit?limit=1000".to_string(),
        "/api/v1/environments/local/secrets".to_string(),
    ] {
        let (_, v) = api.get(&path).await;
        seen.push_str(&v.to_string());
    }
    assert!(!seen.contains(canary), "the canary leaked");
    assert!(seen.contains("secret.use"), "the use was not audited");
    // Nor in the store's action rows (input keeps the reference).
    let stored = api.engine.store().get_action(id).await.unwrap().unwrap();
    assert!(!serde_json::to_string(&stored).unwrap().contains(canary));
    // An unknown secret fails the step before it starts, naming it.
    let (_, a) = api
        .post(
            "/api/v1/actions",
            json!({"kind": "job", "input": {"command": ["true"], "env": {"X": "${secret.nope}"}}}),
        )
        .await;
    let a = api.wait_state(a["id"].as_str().unwrap(), &["failed"]).await;
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret `nope` does not exist"),
        "{a}"
    );
}
