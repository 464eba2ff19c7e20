//! `pave blueprint list|show|apply`.

use clap::{Args, Subcommand};
use pave_core::blueprint::{coerce_param, BlueprintEntry};
use serde_json::{json, Map, Value};

use super::{finish_mutation, ClientArgs, Format, WaitArgs};
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum BlueprintCmd {
    /// List blueprints (every version).
    List(ListArgs),
    /// Show a blueprint: its parameters and what it creates.
    Show(ShowArgs),
    /// Apply a blueprint to an environment: one action, a step per resource and workload.
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Blueprint name, or NAME@VERSION for one version (default: the newest).
    #[arg(value_parser = parse_ref, value_name = "NAME[@VERSION]")]
    pub name: (String, Option<u32>),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Blueprint name, or NAME@VERSION for one version (default: the newest).
    #[arg(value_parser = parse_ref, value_name = "NAME[@VERSION]")]
    pub name: (String, Option<u32>),
    /// Environment to apply it to.
    #[arg(long)]
    pub env: String,
    /// A parameter (repeatable): `--set service=payments`. Numbers, booleans and
    /// lists are read as JSON when the parameter has that type.
    #[arg(long = "set", value_name = "K=V", value_parser = super::run::parse_kv)]
    pub set: Vec<(String, String)>,
}

fn parse_ref(s: &str) -> Result<(String, Option<u32>), String> {
    match s.split_once('@') {
        None => Ok((s.to_string(), None)),
        Some((name, v)) => match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok((name.to_string(), Some(n))),
            _ => Err(format!(
                "`{v}` is not a version (NAME@VERSION takes a number from 1)"
            )),
        },
    }
}

fn path((name, version): &(String, Option<u32>)) -> String {
    match version {
        Some(v) => format!("/api/v1/blueprints/{name}?version={v}"),
        None => format!("/api/v1/blueprints/{name}"),
    }
}

fn show(format: Format, e: &BlueprintEntry) -> anyhow::Result<()> {
    if output::structured(format, e)? {
        return Ok(());
    }
    let bp = &e.blueprint;
    println!("blueprint {} version {} ({})", bp.name, bp.version, e.source);
    if !bp.description.is_empty() {
        println!("{}", bp.description);
    }
    let required: Vec<&str> = bp.parameters["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = bp.parameters["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(name, s)| {
                    let ty = match &s["type"] {
                        Value::String(t) => t.clone(),
                        Value::Null => "any".into(),
                        other => other.to_string(),
                    };
                    let default = if required.contains(&name.as_str()) {
                        "(required)".to_string()
                    } else {
                        s.get("default").map(|d| d.to_string()).unwrap_or_default()
                    };
                    let about = s["description"].as_str().unwrap_or_default().to_string();
                    vec![name.clone(), ty, default, about]
                })
                .collect()
        })
        .unwrap_or_default();
    println!();
    output::table(&["PARAMETER", "TYPE", "DEFAULT", "DESCRIPTION"], &rows);
    println!();
    let mut pieces: Vec<Vec<String>> = bp
        .resources
        .iter()
        .map(|r| vec![format!("resource {}", r.kind), r.name.clone()])
        .collect();
    pieces.extend(
        bp.workloads
            .iter()
            .map(|w| vec!["workload".to_string(), w.name.clone()]),
    );
    output::table(&["CREATES", "NAME"], &pieces);
    Ok(())
}

pub async fn run(cmd: BlueprintCmd) -> anyhow::Result<i32> {
    match cmd {
        BlueprintCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let all: Vec<BlueprintEntry> = client.get("/api/v1/blueprints").await?;
            if !output::structured(a.client.output, &all)? {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|e| {
                        vec![
                            e.blueprint.name.clone(),
                            e.blueprint.version.to_string(),
                            e.source.clone(),
                            e.blueprint.description.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "VERSION", "SOURCE", "DESCRIPTION"], &rows);
            }
            Ok(exit::OK)
        }
        BlueprintCmd::Show(a) => {
            let client = Client::from_args(&a.client)?;
            let e: BlueprintEntry = client.get(&path(&a.name)).await?;
            show(a.client.output, &e)?;
            Ok(exit::OK)
        }
        BlueprintCmd::Apply(a) => {
            let client = Client::from_args(&a.client)?;
            // The schema says how to read each `--set` value.
            let e: BlueprintEntry = client.get(&path(&a.name)).await?;
            let params: Map<String, Value> = a
                .set
                .iter()
                .map(|(k, v)| (k.clone(), coerce_param(&e.blueprint.parameters, k, v)))
                .collect();
            let body = json!({
                "kind": "blueprint.apply",
                "env": a.env,
                "input": { "blueprint": a.name.0, "version": e.blueprint.version, "params": params },
            });
            let action = client.post("/api/v1/actions", &body, &[]).await?;
            finish_mutation(&client, action, a.wait.wait, a.client.output).await
        }
    }
}
