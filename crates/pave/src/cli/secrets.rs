//! `pave secrets set|list|delete`.

use std::io::Read;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::ClientArgs;
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Set a secret (read from stdin unless --from-file); jobs and workloads use it as `${secret.NAME}`.
    Set(SetArgs),
    /// List an environment's secrets (names and versions, never values).
    List(ListArgs),
    /// Delete a secret.
    Delete(NameArgs),
    /// Replace the vault's master key (every secret's data key is re-wrapped).
    RotateMasterKey(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Name (lower-case letters, digits, '-').
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// Read the value from this file (default: stdin), without its final newline.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<std::path::PathBuf>,
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
    /// Name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
}

pub async fn run(cmd: SecretsCmd) -> anyhow::Result<i32> {
    match cmd {
        SecretsCmd::Set(a) => {
            let client = Client::from_args(&a.client)?;
            // Never from the command line: it would sit in shell history and `ps`.
            let mut value = match &a.from_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            let s: Value = client
                .put(
                    &format!("/api/v1/environments/{}/secrets/{}", a.env, a.name),
                    &json!({ "value": value }),
                )
                .await?;
            if !output::structured(a.client.output, &s)? {
                println!(
                    "secret {} set in {} (version {}); use it as {}",
                    a.name,
                    a.env,
                    s["version"],
                    s["reference"].as_str().unwrap_or_default()
                );
            }
        }
        SecretsCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Value> = client
                .get(&format!("/api/v1/environments/{}/secrets", a.env))
                .await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s["name"].as_str().unwrap_or_default().to_string(),
                            s["version"].to_string(),
                            s["updated_at"].as_i64().map(output::age).unwrap_or_default(),
                            s["reference"].as_str().unwrap_or_default().to_string(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "VERSION", "AGE", "REFERENCE"], &rows);
            }
        }
        SecretsCmd::RotateMasterKey(a) => {
            let client = Client::from_args(&a.client)?;
            let r: Value = client
                .post("/api/v1/vault/rotate-master-key", &json!({}), &[])
                .await?;
            if !output::structured(a.client.output, &r)? {
                println!("master key rotated; {} secret(s) re-wrapped", r["rewrapped"]);
            }
        }
        SecretsCmd::Delete(a) => {
            let client = Client::from_args(&a.client)?;
            client
                .delete(&format!("/api/v1/environments/{}/secrets/{}", a.env, a.name))
                .await?;
            println!("secret {} deleted from {}", a.name, a.env);
        }
    }
    Ok(exit::OK)
}
