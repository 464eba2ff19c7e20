//! `pave provision` and `pave resources …`.

use clap::{Args, Subcommand};
use pave_core::resource::Resource;
use serde_json::{json, Map, Value};

use super::{finish_mutation, ClientArgs, WaitArgs};
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Resource kind: postgres or redis.
    pub kind: String,
    /// Resource name, unique in the environment.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// A spec field (repeatable), e.g. `--set database=payments`.
    #[arg(long = "set", value_name = "K=V", value_parser = super::run::parse_kv)]
    pub set: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum ResourcesCmd {
    /// List resources with lifecycle, health and outputs.
    List(ListArgs),
    /// Show one resource.
    Get(NameArgs),
    /// Stop a resource and remove its data.
    Delete(MutateArgs),
    /// Start a resource whose process died, with its data.
    Repair(MutateArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Environment.
    #[arg(long)]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Resource name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Resource name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
}

pub async fn provision(a: ProvisionArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let spec: Map<String, Value> = a.set.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let body = json!({ "kind": "provision", "env": a.env, "input": { "name": a.name, "kind": a.kind, "spec": spec } });
    let action = client.post("/api/v1/actions", &body, &[]).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

fn row(r: &Resource) -> Vec<String> {
    let outputs: Vec<String> = r
        .outputs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
            )
        })
        .collect();
    vec![
        r.name.clone(),
        r.kind.clone(),
        r.lifecycle.to_string(),
        r.health.clone().unwrap_or_default(),
        outputs.join(" "),
    ]
}

const HEADER: &[&str] = &["NAME", "KIND", "LIFECYCLE", "HEALTH", "OUTPUTS"];

pub async fn run(cmd: ResourcesCmd) -> anyhow::Result<i32> {
    match cmd {
        ResourcesCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Resource> = client
                .get(&format!("/api/v1/environments/{}/resources", a.env))
                .await?;
            if !output::structured(a.client.output, &list)? {
                output::table(HEADER, &list.iter().map(row).collect::<Vec<_>>());
            }
            Ok(exit::OK)
        }
        ResourcesCmd::Get(a) => {
            let client = Client::from_args(&a.client)?;
            let r: Resource = client
                .get(&format!("/api/v1/environments/{}/resources/{}", a.env, a.name))
                .await?;
            if !output::structured(a.client.output, &r)? {
                output::table(HEADER, &[row(&r)]);
            }
            Ok(exit::OK)
        }
        ResourcesCmd::Delete(a) => mutate(a, "resource.delete").await,
        ResourcesCmd::Repair(a) => mutate(a, "resource.repair").await,
    }
}

async fn mutate(a: MutateArgs, kind: &str) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let body = json!({ "kind": kind, "env": a.env, "input": { "name": a.name } });
    let action = client.post("/api/v1/actions", &body, &[]).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}
