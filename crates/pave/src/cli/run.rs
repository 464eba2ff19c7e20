//! `pave run -- CMD…`: a one-off job.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::{finish_mutation, ClientArgs, WaitArgs};
use crate::client::Client;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Environment to run in.
    #[arg(long, default_value = "local")]
    pub env: String,
    /// Kill the command and fail after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// An environment variable for the command (repeatable).
    #[arg(long = "env-var", value_name = "K=V", value_parser = parse_kv)]
    pub env_vars: Vec<(String, String)>,
    /// Working directory on the target.
    #[arg(long)]
    pub cwd: Option<String>,
    /// A command (run with `sh -c`) that undoes this one; `pave actions rollback` runs it.
    #[arg(long)]
    pub undo: Option<String>,
    /// Makes the request safe to repeat: the same key returns the same action.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not K=V")),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&args.client)?;
    let env: BTreeMap<_, _> = args.env_vars.into_iter().collect();
    let mut input = json!({ "command": args.command, "env": env });
    if let Some(t) = args.timeout {
        input["timeout_secs"] = json!(t.as_secs().max(1));
    }
    if let Some(cwd) = args.cwd {
        input["cwd"] = json!(cwd);
    }
    if let Some(undo) = args.undo {
        input["undo"] = json!(["sh", "-c", undo]);
    }
    let headers: Vec<(&str, String)> = args
        .idempotency_key
        .map(|k| ("idempotency-key", k))
        .into_iter()
        .collect();
    let action = client
        .post(
            "/api/v1/actions",
            &json!({ "kind": "job", "env": args.env, "input": input }),
            &headers,
        )
        .await?;
    finish_mutation(&client, action, args.wait.wait, args.client.output).await
}
