//! `pave targets add|list|get|remove|revoke-agent|enroll`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::ClientArgs;
use crate::client::Client;
use crate::output::cell;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum TargetsCmd {
    /// Add a target; with --agent it is served by `pave agent`, and a single-use enrollment token is printed.
    Add(AddArgs),
    /// List targets.
    List(ListArgs),
    /// Show a target: its agent's connection, last heartbeat, versions, capabilities, commands in flight.
    Get(NameArgs),
    /// Remove a target no environment uses.
    Remove(NameArgs),
    /// Revoke the target's agent: it is disconnected at once and refused from now on.
    RevokeAgent(NameArgs),
    /// Print a new single-use enrollment token for the target's agent.
    Enroll(EnrollArgs),
    /// List a cluster's Deployments, StatefulSets and Helm releases that pave does not manage.
    Discover(NameArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Name (lower-case letters, digits, '-').
    pub name: String,
    /// What it is: `local` (a host) or `kubernetes` (a cluster).
    #[arg(long, default_value = "local")]
    pub kind: String,
    /// For `--kind kubernetes`: the kubeconfig whose credentials pave uses (kept in its vault).
    #[arg(long, value_name = "FILE", conflicts_with = "agent")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig's context (default: its current one).
    #[arg(long, requires = "kubeconfig")]
    pub context: Option<String>,
    /// Served by a remote agent (`pave agent`) that dials out to this server.
    #[arg(long)]
    pub agent: bool,
    /// A label (repeatable): `region=eu`.
    #[arg(long = "label", value_name = "K=V", value_parser = super::run::parse_kv)]
    pub labels: Vec<(String, String)>,
    /// How long the enrollment token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub enrollment_ttl: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Target name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Target name.
    pub name: String,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
}

fn when(v: &Value) -> String {
    v.as_i64().map(output::age).unwrap_or_else(|| "-".into())
}

fn print_target(v: &Value) {
    println!(
        "target {} · {} · {}",
        cell(&v["name"]),
        cell(&v["kind"]),
        match v["agent"] {
            Value::Bool(true) => "remote agent",
            _ => "embedded agent",
        }
    );
    if let Some(labels) = v["labels"].as_object().filter(|l| !l.is_empty()) {
        let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect();
        println!("  labels: {}", text.join(", "));
    }
    let a = &v["agent_status"];
    if !a.is_null() {
        if a["connected"] == true {
            println!(
                "  agent: connected {} (since {})",
                cell(&a["hostname"]),
                when(&a["connected_at"])
            );
        } else {
            println!("  agent: disconnected (since {})", when(&a["disconnected_at"]));
        }
        println!("  last heartbeat: {}", when(&a["last_heartbeat_at"]));
        println!(
            "  agent version: {} · protocol version: {}",
            cell(&a["agent_version"]),
            cell(&a["protocol_version"])
        );
        let caps: Vec<String> = a["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .map(cell)
            .collect();
        println!(
            "  capabilities: {}",
            if caps.is_empty() {
                "-".into()
            } else {
                caps.join(", ")
            }
        );
        println!("  commands in flight: {}", cell(&a["commands_in_flight"]));
    }
    for c in v["credentials"].as_array().into_iter().flatten() {
        println!(
            "  credential {} · issued {} · last seen {}{}",
            cell(&c["id"]),
            when(&c["created_at"]),
            when(&c["last_seen_at"]),
            if c["revoked_at"].is_null() {
                ""
            } else {
                " · revoked"
            }
        );
    }
    let envs: Vec<String> = v["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    if !envs.is_empty() {
        println!("  environments: {}", envs.join(", "));
    }
}

/// A cluster's version and what its credentials may do.
fn print_cluster(c: &Value) {
    if let Some(e) = c["error"].as_str() {
        println!("  cluster: not reachable: {e}");
        return;
    }
    println!(
        "  cluster: Kubernetes {} ({})",
        cell(&c["version"]),
        cell(&c["platform"])
    );
    if let Some(e) = c["access_error"].as_str() {
        println!("  access: could not be checked: {e}");
    }
    let access = c["access"].as_array().cloned().unwrap_or_default();
    let denied: Vec<&Value> = access.iter().filter(|a| a["allowed"] != true).collect();
    println!(
        "  access: {} of {} checks allowed (SelfSubjectAccessReview)",
        access.len() - denied.len(),
        access.len()
    );
    for d in denied {
        let sub = d["subresource"]
            .as_str()
            .map(|s| format!("/{s}"))
            .unwrap_or_default();
        let group = d["group"]
            .as_str()
            .filter(|g| !g.is_empty())
            .map(|g| format!(".{g}"))
            .unwrap_or_default();
        println!(
            "    denied: {} {}{group}{sub} (needed for {})",
            cell(&d["verb"]),
            cell(&d["resource"]),
            cell(&d["used_for"])
        );
    }
}

fn print_discovery(v: &Value) {
    let workloads = v["workloads"].as_array().cloned().unwrap_or_default();
    let releases = v["releases"].as_array().cloned().unwrap_or_default();
    let mut rows: Vec<Vec<String>> = workloads
        .iter()
        .map(|w| {
            let images: Vec<String> = w["images"].as_array().into_iter().flatten().map(cell).collect();
            vec![
                cell(&w["kind"]),
                cell(&w["namespace"]),
                cell(&w["name"]),
                format!("{}/{}", cell(&w["ready"]), cell(&w["replicas"])),
                images.join(","),
            ]
        })
        .collect();
    rows.extend(releases.iter().map(|r| {
        vec![
            "HelmRelease".into(),
            cell(&r["namespace"]),
            cell(&r["name"]),
            format!("revision {} ({})", cell(&r["revision"]), cell(&r["status"])),
            cell(&r["chart"]),
        ]
    }));
    output::table(&["KIND", "NAMESPACE", "NAME", "READY", "IMAGES / CHART"], &rows);
    if let Some(e) = v["helm_error"].as_str() {
        eprintln!("note: Helm releases could not be listed: {e}");
    }
    if !workloads.is_empty() {
        println!("take a Deployment under management with: pave adopt deployment/NAME --env ENV");
    }
}

/// How long `targets get` waits for a target's very first agent.
const FIRST_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A target served by a remote agent that has never connected, added (or
/// its last credential issued) within the enrollment token's lifetime.
fn awaits_first_agent(v: &Value) -> bool {
    let now = chrono::Utc::now().timestamp_millis();
    let recent = |t: &Value| t.as_i64().is_some_and(|t| now - t < 3_600_000);
    let creds = v["credentials"].as_array().cloned().unwrap_or_default();
    v["agent"] == true
        && v["agent_status"]["connected"] != true
        && v["agent_status"]["connected_at"].is_null()
        && creds
            .iter()
            .all(|c| c["last_seen_at"].is_null() && c["revoked_at"].is_null())
        && (recent(&v["created_at"]) || creds.iter().any(|c| recent(&c["created_at"])))
}

pub async fn run(cmd: TargetsCmd) -> anyhow::Result<i32> {
    match cmd {
        TargetsCmd::Add(a) => {
            let client = Client::from_args(&a.client)?;
            let labels: BTreeMap<_, _> = a.labels.into_iter().collect();
            let mut body = json!({
                "name": a.name, "kind": a.kind, "agent": a.agent, "labels": labels,
                "enrollment_ttl_secs": a.enrollment_ttl.as_secs(),
            });
            if let Some(path) = &a.kubeconfig {
                if a.kind != "kubernetes" {
                    anyhow::bail!("--kubeconfig is for --kind kubernetes");
                }
                let (text, context) = super::kubeconfig::load(path, a.context.as_deref())?;
                body["kubeconfig"] = json!(text);
                body["context"] = json!(context);
            } else if a.kind == "kubernetes" && !a.agent {
                anyhow::bail!(
                    "a Kubernetes target needs --kubeconfig FILE (pave uses its credentials) or --agent \
                     (an agent in the cluster serves it: see `pave agent manifest`)"
                );
            }
            let v: Value = client.post("/api/v1/targets", &body, &[]).await?;
            if !output::structured(a.client.output, &v)? {
                println!("target {} added", a.name);
                if !v["cluster"].is_null() {
                    print_cluster(&v["cluster"]);
                }
                if let Some(token) = v["enrollment_token"].as_str() {
                    println!(
                        "enrollment token (single use, valid {}):",
                        humantime::format_duration(a.enrollment_ttl)
                    );
                    println!("  {token}");
                    println!("start its agent with: pave agent --server wss://HOST:7861 --ca-file CA.pem --enroll TOKEN --data-dir DIR");
                }
            }
        }
        TargetsCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Value> = client.get("/api/v1/targets").await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| {
                        vec![
                            cell(&v["name"]),
                            cell(&v["kind"]),
                            if v["agent"] == true {
                                "remote".into()
                            } else {
                                "embedded".into()
                            },
                            when(&v["created_at"]),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "KIND", "AGENT", "AGE"], &rows);
            }
        }
        TargetsCmd::Get(a) => {
            let client = Client::from_args(&a.client)?;
            let path = format!("/api/v1/targets/{}", a.name);
            let mut v: Value = client.get(&path).await?;
            // An agent started a moment ago (`pave agent … &`) is still enrolling:
            // give it a few seconds rather than report a target that never had one.
            if awaits_first_agent(&v) {
                eprintln!("waiting for the agent of {} to connect…", a.name);
                let deadline = std::time::Instant::now() + FIRST_CONNECT_WAIT;
                while awaits_first_agent(&v) && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    v = client.get(&path).await?;
                }
            }
            if !output::structured(a.client.output, &v)? {
                print_target(&v);
                if !v["cluster"].is_null() {
                    print_cluster(&v["cluster"]);
                }
            }
        }
        TargetsCmd::Remove(a) => {
            let client = Client::from_args(&a.client)?;
            client.delete(&format!("/api/v1/targets/{}", a.name)).await?;
            println!("target {} removed", a.name);
        }
        TargetsCmd::RevokeAgent(a) => {
            let client = Client::from_args(&a.client)?;
            client
                .post_empty(&format!("/api/v1/targets/{}/revoke-agent", a.name), &json!({}))
                .await?;
            println!(
                "the agent of target {} is revoked: disconnected, and refused from now on",
                a.name
            );
        }
        TargetsCmd::Discover(a) => {
            let client = Client::from_args(&a.client)?;
            let v: Value = client
                .get(&format!("/api/v1/targets/{}/discovery", a.name))
                .await?;
            if !output::structured(a.client.output, &v)? {
                print_discovery(&v);
            }
        }
        TargetsCmd::Enroll(a) => {
            let client = Client::from_args(&a.client)?;
            let v: Value = client
                .post(
                    &format!("/api/v1/targets/{}/enrollments", a.name),
                    &json!({ "ttl_secs": a.ttl.as_secs() }),
                    &[],
                )
                .await?;
            if !output::structured(a.client.output, &v)? {
                println!("{}", cell(&v["enrollment_token"]));
            }
        }
    }
    Ok(exit::OK)
}
