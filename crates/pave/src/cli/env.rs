//! `pave env …`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ClientArgs;
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Create an environment bound to a target.
    Create(CreateArgs),
    /// List environments.
    List(ListArgs),
    /// Show one environment.
    Get(NameArgs),
    /// Set or remove labels (`--label k=v`, `--remove-label k`).
    Update(UpdateArgs),
    /// Delete an environment with its workloads and resources (stopped, data removed).
    Delete(DeleteArgs),
    /// Show an environment with the live state of its resources and workloads.
    Status(NameArgs),
    /// Create a new environment with the same resources (fresh credentials, no
    /// data) and the same workload revisions.
    Clone(CloneArgs),
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: super::WaitArgs,
    /// Environment name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: super::WaitArgs,
    /// The environment to copy.
    pub source: String,
    /// Name of the new environment.
    pub name: String,
    /// A label for the new environment, over the source's (repeatable).
    #[arg(long = "label", value_name = "K=V", value_parser = super::run::parse_kv)]
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Name (lower-case letters, digits, '-').
    pub name: String,
    /// Target the environment runs on.
    #[arg(long, default_value = "local")]
    pub target: String,
    /// A label policy can read (repeatable): `tier=production`.
    #[arg(long = "label", value_name = "K=V", value_parser = super::run::parse_kv)]
    pub labels: Vec<(String, String)>,
    /// What pave does about incidents here: observe (propose), approve (a person applies) or auto.
    #[arg(long, value_parser = ["observe", "approve", "auto"])]
    pub remediation: Option<String>,
    /// On a Kubernetes target: its namespace (default: the environment's name).
    #[arg(long)]
    pub namespace: Option<String>,
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
    /// Environment name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Environment name.
    pub name: String,
    /// Set a label (repeatable).
    #[arg(long = "label", value_name = "K=V", value_parser = super::run::parse_kv)]
    pub labels: Vec<(String, String)>,
    /// Remove a label (repeatable).
    #[arg(long = "remove-label", value_name = "K")]
    pub remove: Vec<String>,
    /// What pave does about incidents here: observe, approve or auto.
    #[arg(long, value_parser = ["observe", "approve", "auto"])]
    pub remediation: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Env {
    name: String,
    target: String,
    labels: BTreeMap<String, String>,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn print_one(format: super::Format, e: &Env) -> anyhow::Result<()> {
    if !output::structured(format, e)? {
        output::table(
            &["NAME", "TARGET", "LABELS", "AGE"],
            &[vec![
                e.name.clone(),
                e.target.clone(),
                labels_text(&e.labels),
                output::age(e.created_at),
            ]],
        );
        if let Some(ns) = &e.namespace {
            println!("namespace: {ns}");
        }
    }
    Ok(())
}

pub async fn run(cmd: EnvCmd) -> anyhow::Result<i32> {
    match cmd {
        EnvCmd::Create(a) => {
            let client = Client::from_args(&a.client)?;
            let mut labels: BTreeMap<_, _> = a.labels.into_iter().collect();
            // The mode is a label, so that policies can read it too.
            if let Some(m) = a.remediation {
                labels.insert("remediation".to_string(), m);
            }
            let e: Env = client
                .post(
                    "/api/v1/environments",
                    &json!({ "name": a.name, "target": a.target, "labels": labels, "namespace": a.namespace }),
                    &[],
                )
                .await?;
            print_one(a.client.output, &e)?;
        }
        EnvCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let envs: Vec<Env> = client.get("/api/v1/environments").await?;
            if !output::structured(a.client.output, &envs)? {
                let rows: Vec<Vec<String>> = envs
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            e.target.clone(),
                            labels_text(&e.labels),
                            output::age(e.created_at),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "TARGET", "LABELS", "AGE"], &rows);
            }
        }
        EnvCmd::Get(a) => {
            let client = Client::from_args(&a.client)?;
            let e: Env = client.get(&format!("/api/v1/environments/{}", a.name)).await?;
            print_one(a.client.output, &e)?;
        }
        EnvCmd::Update(a) => {
            let client = Client::from_args(&a.client)?;
            let mut labels: BTreeMap<String, Value> =
                a.labels.into_iter().map(|(k, v)| (k, json!(v))).collect();
            for k in a.remove {
                labels.insert(k, Value::Null);
            }
            if let Some(m) = a.remediation {
                labels.insert("remediation".to_string(), json!(m));
            }
            let e: Env = client
                .patch(
                    &format!("/api/v1/environments/{}", a.name),
                    &json!({ "labels": labels }),
                )
                .await?;
            print_one(a.client.output, &e)?;
        }
        EnvCmd::Status(a) => {
            let client = Client::from_args(&a.client)?;
            let status: Value = client
                .get(&format!("/api/v1/environments/{}/status", a.name))
                .await?;
            if !output::structured(a.client.output, &status)? {
                let e: Env = serde_json::from_value(status["environment"].clone())?;
                let resources: Vec<pave_core::resource::Resource> =
                    serde_json::from_value(status["resources"].clone())?;
                let workloads = status["workloads"].as_array().cloned().unwrap_or_default();
                println!(
                    "environment {} on target {} ({})",
                    e.name,
                    e.target,
                    labels_text(&e.labels)
                );
                println!();
                let rows: Vec<Vec<String>> = resources
                    .iter()
                    .map(|r| {
                        vec![
                            format!("{}/{}", r.kind, r.name),
                            r.lifecycle.to_string(),
                            r.health.clone().unwrap_or_default(),
                            r.outputs.get("port").map(|p| p.to_string()).unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(&["RESOURCE", "LIFECYCLE", "HEALTH", "PORT"], &rows);
                if !workloads.is_empty() {
                    println!();
                    output::table(super::workloads::HEADER, &super::workloads::rows(&workloads));
                }
            }
        }
        EnvCmd::Delete(a) => {
            let client = Client::from_args(&a.client)?;
            let action = client
                .delete_returning(&format!("/api/v1/environments/{}", a.name))
                .await?;
            return super::finish_mutation(&client, action, a.wait.wait, a.client.output).await;
        }
        EnvCmd::Clone(a) => {
            let client = Client::from_args(&a.client)?;
            let labels: BTreeMap<_, _> = a.labels.into_iter().collect();
            let action = client
                .post(
                    &format!("/api/v1/environments/{}/clone", a.source),
                    &json!({ "name": a.name, "labels": labels }),
                    &[],
                )
                .await?;
            return super::finish_mutation(&client, action, a.wait.wait, a.client.output).await;
        }
    }
    Ok(exit::OK)
}
