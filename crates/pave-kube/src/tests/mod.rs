//! Tests against recorded API server exchanges, in the kube-rs style: the
//! `Client` runs over a `tower_test::mock::pair()`, and a server task receives
//! each request, records it (method, path, query, content type, body) and
//! answers what the test's responder says, usually the recorded `status` and
//! `response_body` of a fixture (`fixtures/*.jsonl`, copies of
//! `shared/k8s-fixtures`). Tests assert on the recorded requests afterwards.

mod adopt;
mod apply;
mod cluster;
mod drift;
mod errors;
mod helm;
mod objects;
mod real_cluster;
mod resources;
mod rollout;
mod status;

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use pave_targets::{WorkloadKey, WorkloadSpec};
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::KubeTarget;

/// One recorded exchange (see the fixtures' README for the format).
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub step: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub request_body: Option<String>,
    pub status: u16,
    pub response_body: String,
}

impl Record {
    /// The response body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.response_body).expect("fixture response is JSON")
    }

    /// The answer this record gives.
    pub fn reply(&self) -> Reply {
        Reply::Text(self.status, self.response_body.clone())
    }

    /// The recorded request body as JSON.
    pub fn request_json(&self) -> Value {
        serde_json::from_str(self.request_body.as_deref().expect("a request body"))
            .expect("JSON request body")
    }

    /// The recorded query's value of `key`.
    pub fn q(&self, key: &str) -> Option<String> {
        parse_query(&self.query).get(key).and_then(|v| v.first()).cloned()
    }
}

/// The first record of `file` with the method and path of request `r`.
pub fn fixture_for(file: &str, r: &Seen) -> Option<Record> {
    load(file)
        .into_iter()
        .find(|f| f.method == r.method && f.path == r.path)
}

/// Every record of `fixtures/<file>`.
pub fn load(file: &str) -> Vec<Record> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// The one record of `file` whose step contains `step`.
pub fn fixture(file: &str, step: &str) -> Record {
    let mut found: Vec<Record> = load(file).into_iter().filter(|r| r.step.contains(step)).collect();
    assert_eq!(
        found.len(),
        1,
        "{file}: {} records match step {step:?}",
        found.len()
    );
    found.remove(0)
}

/// A request the server task saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, Vec<String>>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Seen {
    /// The one value of query parameter `key`.
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body of {} {}: {e}", self.method, self.path))
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

/// What the mock API server answers.
pub enum Reply {
    /// A status and a body (JSON, plain text, or a watch stream).
    Text(u16, String),
    /// No answer at all, ever: a node or server that does not respond.
    Hang,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Text(status, body.to_string())
    }

    /// A `Status` object as the API server sends it.
    pub fn status(code: u16, reason: &str, message: &str, details: Value) -> Reply {
        Reply::json(
            code,
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "details": details, "code": code,
            }),
        )
    }

    /// An empty list of `kind` (`PodList`, …).
    pub fn empty_list(kind: &str, api_version: &str) -> Reply {
        Reply::json(
            200,
            serde_json::json!({ "kind": kind, "apiVersion": api_version, "metadata": { "resourceVersion": "1" }, "items": [] }),
        )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 query")
}

fn parse_query(q: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k)).or_default().push(percent_decode(v));
    }
    out
}

/// The mock API server: its task and what it saw.
pub struct ApiServer {
    task: JoinHandle<Vec<Seen>>,
}

impl ApiServer {
    /// The requests seen, in order. Call after every client clone was dropped.
    pub async fn requests(self) -> Vec<Seen> {
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the mock server ends when the client is dropped")
            .expect("the mock server task did not panic")
    }
}

/// A client whose requests `respond` answers.
pub fn mock_client(mut respond: impl FnMut(&Seen) -> Reply + Send + 'static) -> (Client, ApiServer) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut hanging = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.expect("request body");
            let request = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parse_query(parts.uri.query().unwrap_or("")),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            match respond(&request) {
                Reply::Text(status, text) => send.send_response(
                    Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Body::from(text.into_bytes()))
                        .expect("response"),
                ),
                Reply::Hang => hanging.push(send),
            }
            seen.push(request);
        }
        seen
    });
    (Client::new(service, "default"), ApiServer { task })
}

/// A target (environments map to namespaces of the same name) over a mock server.
pub fn mock_target(respond: impl FnMut(&Seen) -> Reply + Send + 'static) -> (KubeTarget, ApiServer) {
    let (client, server) = mock_client(respond);
    (KubeTarget::with_env_namespaces(client), server)
}

/// The fixtures' workload: `web` in namespace `pave-demo`.
pub fn web() -> WorkloadKey {
    WorkloadKey::new("pave-demo", "web")
}

/// A spec with everything set.
pub fn full_spec() -> WorkloadSpec {
    WorkloadSpec {
        revision: 2,
        command: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
        env: BTreeMap::from([
            ("DB_PASSWORD".to_string(), "s3cr3t".to_string()),
            ("LOG_LEVEL".to_string(), "info".to_string()),
        ]),
        replicas: 2,
        port: true,
        readiness: Some(pave_targets::Readiness::Http {
            path: "healthz".into(),
        }),
        restart: pave_targets::RestartPolicy::Always,
        memory_limit_mb: Some(256),
        cwd: Some("/srv".into()),
        image: Some("nginx:1.25".into()),
    }
}

/// Answers the three reads of `status` (`web` in `pave-demo`) with the
/// recorded Deployment, ReplicaSets and pods after the rollout (2/2 ready).
pub fn status_reads(r: &Seen) -> Option<Reply> {
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/apis/apps/v1/namespaces/pave-demo/deployments/web") => {
            Some(fixture("deployment-status.jsonl", "deployment web after rollout").reply())
        }
        ("GET", "/apis/apps/v1/namespaces/pave-demo/replicasets") => {
            Some(fixture("deployment-status.jsonl", "replicasets of web").reply())
        }
        ("GET", "/api/v1/namespaces/pave-demo/pods") => {
            Some(fixture("pods.jsonl", "list pods labelSelector=app=web").reply())
        }
        _ => None,
    }
}

/// The recorded 404 of a Deployment that does not exist (the first apply of a
/// workload reads it before applying).
pub fn no_deployment() -> Reply {
    fixture("errors.jsonl", "404 get missing deployment").reply()
}

/// An answer for a request no test expected.
pub fn unexpected(r: &Seen) -> Reply {
    Reply::status(
        500,
        "InternalError",
        &format!("mock: unexpected request {} {}", r.method, r.path),
        serde_json::json!({}),
    )
}
