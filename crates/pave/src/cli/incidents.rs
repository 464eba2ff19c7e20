//! `pave incidents list|get|apply|keep|dismiss`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::ClientArgs;
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum IncidentsCmd {
    /// List incidents with their state (open, remediating, verifying, resolved, escalated, dismissed).
    List(ListArgs),
    /// Show an incident: evidence, root cause, proposals, timeline.
    Get(IdArgs),
    /// Apply a proposal (default the first) as an action of yours.
    Apply(ApplyArgs),
    /// Keep a temporary fix: it no longer reverts when its time is up.
    Keep(IdArgs),
    /// Close an incident without acting.
    Dismiss(IdArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this environment.
    #[arg(long)]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Incident id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Incident id.
    pub id: String,
    /// Which proposal (as `pave incidents get` numbers them).
    #[arg(long, default_value_t = 0)]
    pub proposal: usize,
    /// Make the fix temporary: it reverts by itself after this long (`30m`,
    /// `90s`) unless kept with `pave incidents keep`. Default: the proposal's own.
    #[arg(long)]
    pub ttl: Option<String>,
}

fn print_incident(i: &Value) {
    let t = |v: &Value| v.as_str().unwrap_or_default().to_string();
    println!(
        "incident {} · {} · {} · {}",
        t(&i["id"]),
        t(&i["kind"]),
        t(&i["object"]),
        t(&i["state"])
    );
    println!("  {}", t(&i["doc"]["summary"]));
    for c in i["doc"]["rca"]["causes"].as_array().into_iter().flatten() {
        println!(
            "  cause ({:.0}%): {}",
            c["confidence"].as_f64().unwrap_or(0.0) * 100.0,
            t(&c["cause"])
        );
    }
    for (n, p) in i["doc"]["proposals"].as_array().into_iter().flatten().enumerate() {
        let temporary = match p["ttl_secs"].as_u64() {
            Some(s) => format!(", temporary: {} min", s / 60),
            None => String::new(),
        };
        println!(
            "  proposal {n}: {} {} — {} (risk: {}{temporary})",
            t(&p["type"]),
            p["params"],
            t(&p["expected_effect"]),
            t(&p["risk"])
        );
    }
    if let Some(at) = i["doc"]["applied"]["revert_at"].as_i64() {
        let applied = &i["doc"]["applied"];
        let when = chrono::DateTime::from_timestamp_millis(at)
            .map(|d| d.format("%H:%M:%S").to_string())
            .unwrap_or_default();
        let what = if applied["reverted"] == true {
            "reverted".to_string()
        } else if applied["kept"] == true {
            "kept".to_string()
        } else {
            format!("reverts at {when} unless kept (`pave incidents keep`)")
        };
        println!("  temporary fix: {what}");
    }
    for e in i["doc"]["timeline"].as_array().into_iter().flatten() {
        let at = e["at"].as_i64().unwrap_or_default();
        let when = chrono::DateTime::from_timestamp_millis(at)
            .map(|d| d.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        println!("  {when} {:<7} {}", t(&e["phase"]), t(&e["message"]));
    }
}

pub async fn run(cmd: IncidentsCmd) -> anyhow::Result<i32> {
    match cmd {
        IncidentsCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let path = match &a.env {
                Some(e) => format!("/api/v1/incidents?env={e}"),
                None => "/api/v1/incidents".into(),
            };
            let list: Vec<Value> = client.get(&path).await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        let t = |v: &Value| v.as_str().unwrap_or_default().to_string();
                        vec![
                            t(&i["id"]),
                            t(&i["env"]),
                            t(&i["kind"]),
                            t(&i["object"]),
                            t(&i["state"]),
                            i["opened_at"].as_i64().map(output::age).unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(&["ID", "ENV", "KIND", "OBJECT", "STATE", "AGE"], &rows);
            }
        }
        IncidentsCmd::Get(a) => {
            let client = Client::from_args(&a.client)?;
            let i: Value = client.get(&format!("/api/v1/incidents/{}", a.id)).await?;
            if !output::structured(a.client.output, &i)? {
                print_incident(&i);
            }
        }
        IncidentsCmd::Apply(a) => {
            let client = Client::from_args(&a.client)?;
            let i: Value = client
                .post(
                    &format!("/api/v1/incidents/{}/apply", a.id),
                    &json!({ "proposal": a.proposal, "ttl": a.ttl }),
                    &[],
                )
                .await?;
            if !output::structured(a.client.output, &i)? {
                print_incident(&i);
            }
        }
        IncidentsCmd::Keep(a) => {
            let client = Client::from_args(&a.client)?;
            let i: Value = client
                .post(&format!("/api/v1/incidents/{}/keep", a.id), &json!({}), &[])
                .await?;
            if !output::structured(a.client.output, &i)? {
                println!("incident {}: the fix stays after its time", a.id);
            }
        }
        IncidentsCmd::Dismiss(a) => {
            let client = Client::from_args(&a.client)?;
            let i: Value = client
                .post(&format!("/api/v1/incidents/{}/dismiss", a.id), &json!({}), &[])
                .await?;
            if !output::structured(a.client.output, &i)? {
                println!("incident {} dismissed", a.id);
            }
        }
    }
    Ok(exit::OK)
}
