//! `pave agent manifest`: the Kubernetes YAML that installs a target's agent
//! in a cluster (Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding,
//! the enrollment Secret and the Deployment). `charts/pave-agent` renders the
//! same objects with Helm.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
// The access pave's Kubernetes driver needs: one list, in pave-kube.
use pave_kube::REQUIRED_ACCESS;
use serde_json::{json, Value};

use super::ClientArgs;
use crate::client::Client;
use crate::exit;

/// Where the agent keeps its credential and journal inside the pod.
pub const DATA_DIR: &str = "/var/lib/pave-agent";
/// Where the CA from the Secret is mounted.
pub const CA_PATH: &str = "/etc/pave/ca.pem";
/// The Secret holding the enrollment token (and the CA).
pub const SECRET: &str = "pave-agent-enrollment";
/// Non-root user and group the agent runs as (the image's root user is not used).
const RUN_AS: u32 = 65532;

#[derive(Debug, Args)]
pub struct ManifestArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The target (added with `pave targets add NAME --agent`) the agent serves.
    #[arg(long)]
    pub target: String,
    /// The control plane's agent listener as the pod reaches it: `wss://HOST:7861`
    /// (default: the API server's host, port 7861).
    #[arg(long, value_name = "URL")]
    pub agent_server: Option<String>,
    /// Namespace the agent runs in (created by the manifest).
    #[arg(long, default_value = "pave-agent")]
    pub namespace: String,
    /// The agent's image (default: pave's image of this version).
    #[arg(long)]
    pub image: Option<String>,
    /// The CA that signed the server's certificate (`<server data dir>/tls/ca.pem`), put in the Secret.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// How long the enrollment token in the Secret is valid (it is single use).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub enrollment_ttl: std::time::Duration,
}

/// What the manifest is made of.
#[derive(Debug, Clone)]
pub struct Spec {
    pub target: String,
    pub server: String,
    pub namespace: String,
    pub image: String,
    pub token: String,
    pub ca_pem: Option<String>,
}

pub fn default_image() -> String {
    format!("ghcr.io/pave-dev/pave:{}", env!("CARGO_PKG_VERSION"))
}

/// `wss://HOST:7861` for the API URL `http(s)://HOST[:PORT][/…]`.
fn agent_server_of(api: &str) -> Option<String> {
    let rest = api.split_once("://").map_or(api, |(_, r)| r);
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string(),
    };
    Some(format!("wss://{host}:7861"))
}

/// A DNS-1123 label: what a namespace name must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub async fn run(a: ManifestArgs) -> anyhow::Result<i32> {
    if !is_dns_label(&a.namespace) {
        bail!(
            "--namespace {:?} is not a Kubernetes namespace name (lower-case letters, digits, '-'; 63 at most)",
            a.namespace
        );
    }
    let ca_pem = match &a.ca_file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("could not read {}", f.display()))?)
        }
        None => None,
    };
    let client = Client::from_args(&a.client)?;
    let server = match &a.agent_server {
        Some(s) => s.clone(),
        None => {
            let api = a.client.server.clone().or(crate::config::load()?.server);
            let api = api.unwrap_or_else(|| "http://127.0.0.1:7860".to_string());
            let s = agent_server_of(&api)
                .with_context(|| format!("no host in {api:?}: pass --agent-server wss://HOST:7861"))?;
            eprintln!("pave agent manifest: the agent will dial {s} (--agent-server to change it)");
            if ["127.", "localhost", "[::1]"]
                .iter()
                .any(|p| s["wss://".len()..].starts_with(p))
            {
                eprintln!(
                    "pave agent manifest: warning: a pod cannot reach the control plane's loopback address; \
                     pass --agent-server with an address the cluster reaches"
                );
            }
            s
        }
    };
    let v: Value = client
        .post(
            &format!("/api/v1/targets/{}/enrollments", a.target),
            &json!({ "ttl_secs": a.enrollment_ttl.as_secs() }),
            &[],
        )
        .await?;
    let Some(token) = v["enrollment_token"].as_str() else {
        bail!("the server's answer has no enrollment_token: {v}");
    };
    let spec = Spec {
        target: a.target.clone(),
        server,
        namespace: a.namespace.clone(),
        image: a.image.clone().unwrap_or_else(default_image),
        token: token.to_string(),
        ca_pem,
    };
    print!("{}", render(&spec)?);
    eprintln!(
        "pave agent manifest: the enrollment token in Secret {}/{SECRET} is single use, valid {}; \
         apply with `kubectl apply -f -`",
        a.namespace,
        humantime::format_duration(a.enrollment_ttl)
    );
    Ok(exit::OK)
}

/// The ClusterRole's rules: one per (API group, resource), its verbs sorted.
pub fn rules() -> Vec<Value> {
    let mut by: std::collections::BTreeMap<(&str, String), std::collections::BTreeSet<&str>> =
        Default::default();
    for a in REQUIRED_ACCESS {
        let res = if a.subresource.is_empty() {
            a.resource.to_string()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        by.entry((a.group, res)).or_default().insert(a.verb);
    }
    by.into_iter()
        .map(|((group, res), verbs)| {
            json!({ "apiGroups": [group], "resources": [res], "verbs": verbs.into_iter().collect::<Vec<_>>() })
        })
        .collect()
}

fn labels(spec: &Spec) -> Value {
    json!({
        "app.kubernetes.io/name": "pave-agent",
        "app.kubernetes.io/instance": spec.target,
        "app.kubernetes.io/managed-by": "pave",
    })
}

fn meta(spec: &Spec, name: &str, namespaced: bool) -> Value {
    let mut m = json!({ "name": name, "labels": labels(spec) });
    if namespaced {
        m["namespace"] = json!(spec.namespace);
    }
    m
}

/// The multi-document YAML.
pub fn render(spec: &Spec) -> anyhow::Result<String> {
    let ns = &spec.namespace;
    // A binding per namespace: agents installed in two namespaces share the
    // ClusterRole without replacing each other's binding.
    let binding = if ns == "pave-agent" {
        ns.to_string()
    } else {
        format!("pave-agent-{ns}")
    };
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(spec, SECRET, true),
        "type": "Opaque",
        "stringData": { "token": spec.token },
    });
    let mut args = vec![
        "agent".to_string(),
        "--server".into(),
        spec.server.clone(),
        "--data-dir".into(),
        DATA_DIR.into(),
        "--in-cluster".into(),
    ];
    let mut volumes = vec![
        // emptyDir: the credential the agent gets for its single-use token is
        // lost when the pod is replaced, and the spent token cannot enroll it
        // again (`pave targets enroll` + a new Secret then). A
        // PersistentVolumeClaim keeps it: the chart's `persistence.enabled`.
        json!({ "name": "data", "emptyDir": {} }),
        json!({ "name": "tmp", "emptyDir": {} }),
    ];
    let mut mounts = vec![
        json!({ "name": "data", "mountPath": DATA_DIR }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    if let Some(ca) = &spec.ca_pem {
        secret["stringData"]["ca.pem"] = json!(ca);
        args.extend(["--ca-file".to_string(), CA_PATH.to_string()]);
        volumes.push(json!({
            "name": "ca",
            "secret": { "secretName": SECRET, "items": [{ "key": "ca.pem", "path": "ca.pem" }] },
        }));
        mounts.push(json!({ "name": "ca", "mountPath": "/etc/pave", "readOnly": true }));
    }
    let selector =
        json!({ "app.kubernetes.io/name": "pave-agent", "app.kubernetes.io/instance": spec.target });
    let docs: Vec<(&str, Value)> = vec![
        (
            "The namespace the agent runs in.",
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels(spec) } }),
        ),
        (
            "The agent's identity in the cluster.",
            json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(spec, "pave-agent", true) }),
        ),
        (
            "Exactly what pave's Kubernetes driver uses (pave-kube REQUIRED_ACCESS): no wildcard.",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": meta(spec, "pave-agent", false),
                "rules": rules(),
            }),
        ),
        (
            "Grants the ClusterRole to the agent's ServiceAccount.",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": meta(spec, &binding, false),
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pave-agent" },
                "subjects": [{ "kind": "ServiceAccount", "name": "pave-agent", "namespace": ns }],
            }),
        ),
        (
            "The single-use enrollment token (exchanged once for a credential kept in the data dir).",
            secret,
        ),
        (
            "The agent: it dials out to the control plane; nothing listens in the pod.",
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta(spec, "pave-agent", true),
                "spec": {
                    "replicas": 1,
                    // One agent per credential: never two pods at once.
                    "strategy": { "type": "Recreate" },
                    "selector": { "matchLabels": selector },
                    "template": {
                        "metadata": { "labels": labels(spec) },
                        "spec": {
                            "serviceAccountName": "pave-agent",
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": RUN_AS,
                                "runAsGroup": RUN_AS,
                                "fsGroup": RUN_AS,
                                "seccompProfile": { "type": "RuntimeDefault" },
                            },
                            "containers": [{
                                "name": "agent",
                                "image": spec.image,
                                "command": ["pave"],
                                "args": args,
                                // `pave agent` reads its token from PAVE_ENROLL_TOKEN
                                // (kept out of the command line).
                                "env": [{
                                    "name": "PAVE_ENROLL_TOKEN",
                                    "valueFrom": { "secretKeyRef": { "name": SECRET, "key": "token" } },
                                }],
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true,
                                    "capabilities": { "drop": ["ALL"] },
                                },
                                "resources": {
                                    "requests": { "cpu": "50m", "memory": "64Mi" },
                                    "limits": { "memory": "512Mi" },
                                },
                                "volumeMounts": mounts,
                            }],
                            "volumes": volumes,
                        },
                    },
                },
            }),
        ),
    ];
    let mut out = format!(
        "# The agent of pave target {:?}: `pave agent manifest` {}.\n\
         # Its Kubernetes driver is not wired yet: the agent runs the local driver (processes in its pod).\n",
        spec.target,
        env!("CARGO_PKG_VERSION")
    );
    for (comment, doc) in docs {
        out.push_str("---\n");
        out.push_str(&format!("# {comment}\n"));
        if doc["kind"] == "Deployment" {
            out.push_str(
                "# The data volume is an emptyDir: the credential is lost with the pod, and the\n\
                 # spent token cannot enroll again; a PersistentVolumeClaim keeps it across restarts\n\
                 # (charts/pave-agent: persistence.enabled=true).\n",
            );
        }
        out.push_str(&yaml_serde::to_string(&doc).context("could not write YAML")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ca: Option<&str>) -> Spec {
        Spec {
            target: "edge".into(),
            server: "wss://cp.example:7861".into(),
            namespace: "pave-agent".into(),
            image: default_image(),
            token: "pave_enroll_x".into(),
            ca_pem: ca.map(str::to_string),
        }
    }

    fn docs(text: &str) -> Vec<Value> {
        text.split("\n---\n")
            .skip(1)
            .map(|d| yaml_serde::from_str(d).expect("YAML"))
            .collect()
    }

    #[test]
    fn the_manifest_holds_every_object_and_the_ca_only_when_given() {
        let d = docs(&render(&spec(None)).unwrap());
        let kinds: Vec<_> = d.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Secret",
                "Deployment"
            ]
        );
        assert_eq!(d[4]["stringData"]["token"], "pave_enroll_x");
        assert!(d[4]["stringData"].get("ca.pem").is_none());
        let c = &d[5]["spec"]["template"]["spec"]["containers"][0];
        assert!(!c["args"].to_string().contains("ca-file"), "{c}");
        assert_eq!(c["image"], default_image());

        let d = docs(&render(&spec(Some("-----BEGIN CERTIFICATE-----\nx\n"))).unwrap());
        assert!(d[4]["stringData"]["ca.pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN"));
        let c = &d[5]["spec"]["template"]["spec"]["containers"][0];
        assert!(c["args"].to_string().contains(CA_PATH), "{c}");
    }

    #[test]
    fn rules_cover_the_access_list_without_wildcards() {
        let n: usize = rules()
            .iter()
            .map(|r| {
                assert!(!r.to_string().contains('*'), "{r}");
                r["verbs"].as_array().unwrap().len()
            })
            .sum();
        // The list names some permissions twice (per namespace and cluster-wide).
        let distinct: std::collections::BTreeSet<_> = REQUIRED_ACCESS
            .iter()
            .map(|a| (a.verb, a.group, a.resource, a.subresource))
            .collect();
        assert_eq!(n, distinct.len());
    }

    #[test]
    fn the_agent_server_defaults_to_the_api_host() {
        assert_eq!(
            agent_server_of("https://cp.example:7860/").as_deref(),
            Some("wss://cp.example:7861")
        );
        assert_eq!(
            agent_server_of("http://10.0.0.5").as_deref(),
            Some("wss://10.0.0.5:7861")
        );
        assert_eq!(
            agent_server_of("http://[::1]:7860").as_deref(),
            Some("wss://[::1]:7861")
        );
        assert!(is_dns_label("pave-agent") && !is_dns_label("Pave") && !is_dns_label("-a"));
    }
}
