//! `pave policy list|apply|delete|eval|test`.

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::ClientArgs;
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// List the policy modules in force (built-in, files, applied through the API).
    List(ListArgs),
    /// Add or replace a module from a .rego file; refused unless the whole set compiles.
    Apply(ApplyArgs),
    /// Remove a module applied with `pave policy apply`.
    Delete(DeleteArgs),
    /// What policy would decide on a request, without running it.
    Eval(EvalArgs),
    /// Run the Rego unit tests (rules named `test_*`): of the server's set, or of
    /// the built-in pack plus `--dir` here, without a server.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The .rego file.
    pub file: std::path::PathBuf,
    /// Module name (default: the file's name without `.rego`).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Module name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Action kind (deploy, scale, exec, job, …).
    pub kind: String,
    /// Environment.
    #[arg(long, default_value = "local")]
    pub env: String,
    /// The action's input as a YAML or JSON file.
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
    /// An input field (repeatable), read as JSON when it parses (`replicas=12`), else text.
    #[arg(long = "set", value_name = "K=V", value_parser = super::run::parse_kv)]
    pub set: Vec<(String, String)>,
    /// Evaluate as this user (admins only).
    #[arg(long = "as", value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Test the built-in pack plus the modules of this directory, locally.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

fn print_tests(format: super::Format, outcomes: &[Value]) -> anyhow::Result<i32> {
    let failed = outcomes.iter().filter(|o| o["passed"] != true).count();
    if !output::structured(format, &outcomes)? {
        for o in outcomes {
            let mark = if o["passed"] == true { "PASS" } else { "FAIL" };
            let why = o["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default();
            println!(
                "{mark} data.{}.{}{why}",
                o["package"].as_str().unwrap_or_default(),
                o["name"].as_str().unwrap_or_default()
            );
        }
        println!("{} passed, {failed} failed", outcomes.len() - failed);
    }
    Ok(if failed == 0 { exit::OK } else { exit::ERROR })
}

pub async fn run(cmd: PolicyCmd) -> anyhow::Result<i32> {
    match cmd {
        PolicyCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Value> = client.get("/api/v1/policies").await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|m| {
                        let source = m["source"].as_str().unwrap_or_default();
                        vec![
                            m["name"].as_str().unwrap_or_default().to_string(),
                            source.lines().count().to_string(),
                        ]
                    })
                    .collect();
                output::table(&["MODULE", "LINES"], &rows);
            }
            Ok(exit::OK)
        }
        PolicyCmd::Apply(a) => {
            let client = Client::from_args(&a.client)?;
            let source = std::fs::read_to_string(&a.file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.file.display()))?;
            let name = a.name.clone().unwrap_or_else(|| {
                a.file
                    .file_stem()
                    .map(|s| s.to_string_lossy().replace('_', "-"))
                    .unwrap_or_default()
            });
            client
                .put_empty(&format!("/api/v1/policies/{name}"), &json!({ "source": source }))
                .await?;
            println!("policy {name} applied");
            Ok(exit::OK)
        }
        PolicyCmd::Delete(a) => {
            let client = Client::from_args(&a.client)?;
            client.delete(&format!("/api/v1/policies/{}", a.name)).await?;
            println!("policy {} removed", a.name);
            Ok(exit::OK)
        }
        PolicyCmd::Eval(a) => {
            let client = Client::from_args(&a.client)?;
            let mut input = match &a.input {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                    yaml_serde::from_str::<Value>(&text)
                        .map_err(|e| anyhow::anyhow!("{} is not YAML or JSON: {e}", p.display()))?
                }
                None => Value::Object(Map::new()),
            };
            for (k, v) in &a.set {
                input[k] = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
            }
            let mut body = json!({ "kind": a.kind, "env": a.env, "input": input });
            if let Some(u) = &a.user {
                body["user"] = json!(u);
            }
            let r: Value = client.post("/api/v1/policies/eval", &body, &[]).await?;
            if !output::structured(a.client.output, &r)? {
                let d = &r["decision"];
                let reasons: Vec<&str> = d["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                match d["decision"].as_str().unwrap_or_default() {
                    "allow" => println!("allow"),
                    "deny" => println!("deny: {}", reasons.join("; ")),
                    other => println!(
                        "{other} by role {}{}: {}",
                        d["approver_role"].as_str().unwrap_or("operator"),
                        d["approver_team"]
                            .as_str()
                            .map(|t| format!(" of team {t}"))
                            .unwrap_or_default(),
                        reasons.join("; ")
                    ),
                }
            }
            Ok(exit::OK)
        }
        PolicyCmd::Test(a) => {
            if let Some(dir) = &a.dir {
                let mut modules = pave_policy::default_pack();
                modules.extend(pave_policy::load_dir(dir)?);
                let set = pave_policy::PolicySet::new(modules)?;
                let outcomes: Vec<Value> = set
                    .run_tests()
                    .into_iter()
                    .map(|o| serde_json::to_value(o).unwrap_or_default())
                    .collect();
                return print_tests(a.client.output, &outcomes);
            }
            let client = Client::from_args(&a.client)?;
            let outcomes: Vec<Value> = client.post("/api/v1/policies/test", &json!({}), &[]).await?;
            print_tests(a.client.output, &outcomes)
        }
    }
}
