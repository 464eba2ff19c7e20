//! `pave approvals list|approve|reject`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{finish_mutation, ClientArgs, WaitArgs};
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// List actions waiting for approval (`--all`: decided ones too).
    List(ListArgs),
    /// Approve an action (not your own); `--amend FILE` changes its input first.
    Approve(ApproveArgs),
    /// Reject an action, saying why.
    Reject(RejectArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Also the approved, rejected and expired ones.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Action id.
    pub id: String,
    /// A YAML or JSON file merged into the input (RFC 7386 merge patch), e.g. `replicas: 3`;
    /// the amended input is evaluated by policy again and is what runs.
    #[arg(long, value_name = "FILE")]
    pub amend: Option<std::path::PathBuf>,
    /// A comment for the record.
    #[arg(long)]
    pub comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Action id.
    pub id: String,
    /// Why (required).
    #[arg(long)]
    pub comment: String,
}

pub async fn run(cmd: ApprovalsCmd) -> anyhow::Result<i32> {
    match cmd {
        ApprovalsCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let path = if a.all {
                "/api/v1/approvals?all=true"
            } else {
                "/api/v1/approvals"
            };
            let list: Vec<Value> = client.get(path).await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|x| {
                        let text = |k: &str| x[k].as_str().unwrap_or_default().to_string();
                        let reasons: Vec<&str> = x["reasons"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        vec![
                            text("action_id"),
                            text("env"),
                            text("requested_by"),
                            x["decision"].as_str().unwrap_or("pending").to_string(),
                            text("approver_role"),
                            reasons.join("; "),
                        ]
                    })
                    .collect();
                output::table(
                    &["ACTION", "ENV", "REQUESTED BY", "STATE", "APPROVER", "WHY"],
                    &rows,
                );
            }
            Ok(exit::OK)
        }
        ApprovalsCmd::Approve(a) => {
            let client = Client::from_args(&a.client)?;
            let mut body = json!({});
            if let Some(path) = &a.amend {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                let patch: Value = yaml_serde::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{} is not YAML or JSON: {e}", path.display()))?;
                body["amend"] = patch;
            }
            if let Some(c) = &a.comment {
                body["comment"] = json!(c);
            }
            let action = client
                .post(&format!("/api/v1/approvals/{}/approve", a.id), &body, &[])
                .await?;
            finish_mutation(&client, action, a.wait.wait, a.client.output).await
        }
        ApprovalsCmd::Reject(a) => {
            let client = Client::from_args(&a.client)?;
            let action: pave_core::Action = client
                .post(
                    &format!("/api/v1/approvals/{}/reject", a.id),
                    &json!({ "comment": a.comment }),
                    &[],
                )
                .await?;
            if !output::structured(a.client.output, &action)? {
                println!("action {} rejected", action.id);
            }
            Ok(exit::OK)
        }
    }
}
