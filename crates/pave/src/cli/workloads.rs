//! `pave deploy`, `pave scale`, `pave rollback`, `pave exec`, `pave logs` and
//! `pave workloads …`: workloads on a target, every change an action.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{finish_mutation, ClientArgs, WaitArgs};
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Workload name, unique in the environment.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// The command, run by `sh -c` (or give it after `--`). Whatever is not
    /// given (command, environment, replicas, readiness…) is kept from the
    /// revision that serves now.
    #[arg(long)]
    pub command: Option<String>,
    /// An environment variable (repeatable); values may name resource outputs,
    /// e.g. `DATABASE_URL=${resource.db.url}`.
    #[arg(long = "set-env", value_name = "K=V", value_parser = super::run::parse_kv)]
    pub set_env: Vec<(String, String)>,
    /// Replicas (default: the current revision's, or 1).
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Ready when an HTTP GET of this path on `$PORT` answers 2xx.
    #[arg(long)]
    pub readiness_http: Option<String>,
    /// Ready when `$PORT` accepts a TCP connection.
    #[arg(long, conflicts_with = "readiness_http")]
    pub readiness_tcp: bool,
    /// Memory limit of each replica.
    #[arg(long)]
    pub memory_limit_mb: Option<u64>,
    /// Container image (what a Kubernetes target runs; the local target runs the command).
    #[arg(long)]
    pub image: Option<String>,
    /// Working directory of the replicas.
    #[arg(long)]
    pub cwd: Option<String>,
    /// How long the new revision may take to become ready (default 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ready_timeout: Option<Duration>,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Workload name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// The new replica count.
    #[arg(long)]
    pub replicas: u32,
    /// How long the replicas may take to become ready (default 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ready_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Workload name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// How long the new replicas may take to become ready (default 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ready_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Workload name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// The revision to make current again (default: the previous one with another spec).
    #[arg(long)]
    pub to: Option<i64>,
    /// How long its replicas may take to become ready (default 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ready_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Workload name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Workload name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// One replica (default: every replica of the current revision).
    #[arg(long)]
    pub replica: Option<u32>,
    /// How many lines.
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
    /// Keep printing new lines as they are written (Ctrl-C stops).
    #[arg(short = 'f', long)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkloadsCmd {
    /// List workloads with their revision and replicas.
    List(ListArgs),
    /// Show one workload with its replicas and revisions.
    Get(NameArgs),
    /// Stop every replica of a workload and forget it.
    Delete(DeleteArgs),
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
    /// Workload name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Workload name.
    pub name: String,
    /// Environment.
    #[arg(long)]
    pub env: String,
}

pub(crate) async fn submit(
    client: &Client,
    kind: &str,
    env: &str,
    input: Value,
) -> anyhow::Result<pave_core::Action> {
    client
        .post(
            "/api/v1/actions",
            &json!({ "kind": kind, "env": env, "input": input }),
            &[],
        )
        .await
}

fn timeout(input: &mut Value, t: Option<Duration>) {
    if let Some(t) = t {
        input["ready_timeout_secs"] = json!(t.as_secs().max(1));
    }
}

pub async fn deploy(a: DeployArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let env: BTreeMap<_, _> = a.set_env.into_iter().collect();
    let command = match (a.command, a.argv.is_empty()) {
        (Some(_), false) => anyhow::bail!("give the command either with --command or after `--`, not both"),
        (Some(c), true) => Some(vec!["sh".to_string(), "-c".to_string(), c]),
        (None, false) => Some(a.argv),
        (None, true) => None,
    };
    let mut input = json!({ "name": a.name, "env": env });
    if let Some(c) = command {
        input["command"] = json!(c);
    }
    if let Some(r) = a.replicas {
        input["replicas"] = json!(r);
    }
    if let Some(p) = a.readiness_http {
        input["readiness"] = json!({ "http": p });
    } else if a.readiness_tcp {
        input["readiness"] = json!({ "tcp": true });
    }
    if let Some(m) = a.memory_limit_mb {
        input["memory_limit_mb"] = json!(m);
    }
    if let Some(c) = a.cwd {
        input["cwd"] = json!(c);
    }
    if let Some(i) = a.image {
        input["image"] = json!(i);
    }
    timeout(&mut input, a.ready_timeout);
    let action = submit(&client, "deploy", &a.env, input).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

pub async fn scale(a: ScaleArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let mut input = json!({ "name": a.name, "replicas": a.replicas });
    timeout(&mut input, a.ready_timeout);
    let action = submit(&client, "scale", &a.env, input).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

pub async fn restart(a: RestartArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let mut input = json!({ "name": a.name });
    timeout(&mut input, a.ready_timeout);
    let action = submit(&client, "restart", &a.env, input).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

pub async fn rollback(a: RollbackArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let mut input = json!({ "name": a.name });
    if let Some(to) = a.to {
        input["to"] = json!(to);
    }
    timeout(&mut input, a.ready_timeout);
    let action = submit(&client, "rollback", &a.env, input).await?;
    finish_mutation(&client, action, a.wait.wait, a.client.output).await
}

/// Runs the command as an `exec` action, prints its output, and exits with its exit code.
pub async fn exec(a: ExecArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let action = submit(
        &client,
        "exec",
        &a.env,
        json!({ "name": a.name, "command": a.command }),
    )
    .await?;
    let opts = crate::watch::WatchOpts {
        logs: a.client.output == super::Format::Table,
        progress: false,
        after: 0,
    };
    let done = crate::watch::follow(&client, &action.id, opts).await?;
    if output::structured(a.client.output, &done)? {
        // Printed as asked.
    } else if done.state != pave_core::ActionState::Succeeded {
        crate::watch::summary(&done);
        return Ok(exit::for_state(done.state));
    }
    Ok(done.result["exit_code"]
        .as_i64()
        .map_or(exit::for_state(done.state), |c| c as i32))
}

pub async fn logs(a: LogsArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let mut path = format!(
        "/api/v1/environments/{}/workloads/{}/logs?tail={}",
        a.env, a.name, a.tail
    );
    if let Some(r) = a.replica {
        path.push_str(&format!("&replica={r}"));
    }
    if a.follow {
        use futures::StreamExt;
        use std::io::Write;
        path.push_str("&follow=true");
        let mut body = client.stream(&path).await?.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| anyhow::anyhow!("the log stream broke: {e}"))?;
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk)?;
            out.flush()?;
        }
        return Ok(exit::OK);
    }
    let lines: Vec<String> = client.get(&path).await?;
    if !output::structured(a.client.output, &lines)? {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(exit::OK)
}

/// `state` of a replica as one word: Running, Waiting(Reason), Terminated(Reason).
pub fn state_text(state: &Value) -> String {
    if state.get("running").is_some() {
        return "Running".into();
    }
    for kind in ["waiting", "terminated"] {
        if let Some(s) = state.get(kind) {
            let reason = s["reason"].as_str().unwrap_or("?");
            let mut k = kind.to_string();
            k[..1].make_ascii_uppercase();
            return format!("{k}({reason})");
        }
    }
    state.to_string()
}

/// One table row per replica (a workload without replicas gets one row).
pub fn rows(workloads: &[Value]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for w in workloads {
        let name = w["name"].as_str().unwrap_or_default().to_string();
        let revision = w["current_revision"]
            .as_i64()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into());
        let ready = format!("{}/{}", w["ready"], w["desired"]);
        let replicas = w["replicas"].as_array().cloned().unwrap_or_default();
        if replicas.is_empty() {
            let note = w["status_error"].as_str().unwrap_or_default().to_string();
            rows.push(vec![
                name,
                revision,
                ready,
                String::new(),
                String::new(),
                String::new(),
                note,
            ]);
            continue;
        }
        for r in replicas {
            rows.push(vec![
                name.clone(),
                revision.clone(),
                ready.clone(),
                format!("{}@{}", r["index"], r["revision"]),
                r["port"].as_u64().map(|p| p.to_string()).unwrap_or_default(),
                state_text(&r["state"]),
                r["restart_count"].to_string(),
            ]);
        }
    }
    rows
}

pub const HEADER: &[&str] = &[
    "WORKLOAD", "REVISION", "READY", "REPLICA", "PORT", "STATE", "RESTARTS",
];

pub async fn run(cmd: WorkloadsCmd) -> anyhow::Result<i32> {
    match cmd {
        WorkloadsCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Value> = client
                .get(&format!("/api/v1/environments/{}/workloads", a.env))
                .await?;
            if !output::structured(a.client.output, &list)? {
                output::table(HEADER, &rows(&list));
            }
            Ok(exit::OK)
        }
        WorkloadsCmd::Get(a) => {
            let client = Client::from_args(&a.client)?;
            let w: Value = client
                .get(&format!("/api/v1/environments/{}/workloads/{}", a.env, a.name))
                .await?;
            if !output::structured(a.client.output, &w)? {
                output::table(HEADER, &rows(std::slice::from_ref(&w)));
                println!();
                let revs: Vec<Vec<String>> = w["revisions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|r| {
                        vec![
                            r["revision"].to_string(),
                            r["spec"]["replicas"].to_string(),
                            r["spec"]["command"].to_string(),
                            r["created_by"].as_str().unwrap_or_default().to_string(),
                        ]
                    })
                    .collect();
                output::table(&["REVISION", "REPLICAS", "COMMAND", "ACTION"], &revs);
            }
            Ok(exit::OK)
        }
        WorkloadsCmd::Delete(a) => {
            let client = Client::from_args(&a.client)?;
            let action = submit(&client, "workload.delete", &a.env, json!({ "name": a.name })).await?;
            finish_mutation(&client, action, a.wait.wait, a.client.output).await
        }
    }
}
