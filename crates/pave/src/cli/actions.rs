//! `pave actions …`.

use clap::{Args, Subcommand};
use pave_core::Action;
use serde_json::json;

use super::{ClientArgs, Format, LogLineView, WaitArgs};
use crate::client::Client;
use crate::watch::{follow, summary, WatchOpts};
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum ActionsCmd {
    /// List actions, newest first.
    List(ListArgs),
    /// Show one action with its steps.
    Get(IdArgs),
    /// Follow an action live until it ends.
    Watch(IdArgs),
    /// Print an action's log.
    Logs(LogsArgs),
    /// Run a failed or cancelled action again from its failed step.
    Retry(MutateArgs),
    /// Cancel an action (stops its running command).
    Cancel(MutateArgs),
    /// Undo what an action did: its finished steps' compensations, last first.
    Rollback(MutateArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// Only of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only in this environment.
    #[arg(long)]
    pub env: Option<String>,
    /// At most this many (follows pages as needed).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Action id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Action id.
    pub id: String,
    /// Keep printing new lines until the action ends.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Action id.
    pub id: String,
}

pub async fn run(cmd: ActionsCmd) -> anyhow::Result<i32> {
    match cmd {
        ActionsCmd::List(a) => list(a).await,
        ActionsCmd::Get(a) => get(a).await,
        ActionsCmd::Watch(a) => {
            let client = Client::from_args(&a.client)?;
            let table = a.client.output == Format::Table;
            let opts = WatchOpts {
                logs: table,
                progress: table && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                after: 0,
            };
            let done = follow(&client, &a.id, opts).await?;
            if !output::structured(a.client.output, &done)? {
                summary(&done);
            }
            Ok(exit::for_state(done.state))
        }
        ActionsCmd::Logs(a) => logs(a).await,
        ActionsCmd::Retry(a) => mutate(a, "retry").await,
        ActionsCmd::Cancel(a) => mutate(a, "cancel").await,
        ActionsCmd::Rollback(a) => mutate(a, "rollback").await,
    }
}

async fn mutate(a: MutateArgs, verb: &str) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    // With --wait, show only what this request adds to the log.
    let seen = if a.wait.wait {
        client
            .get::<LogPage>(&format!("/api/v1/actions/{}/logs?tail=0", a.id))
            .await?
            .last_seq
    } else {
        0
    };
    let action: Action = client
        .post(&format!("/api/v1/actions/{}/{verb}", a.id), &json!({}), &[])
        .await?;
    super::finish_mutation_after(&client, action, a.wait.wait, a.client.output, seen).await
}

#[derive(serde::Deserialize)]
struct Page {
    items: Vec<Action>,
    next_cursor: Option<String>,
}

async fn list(a: ListArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let mut items: Vec<Action> = Vec::new();
    let mut cursor: Option<String> = None;
    while items.len() < a.limit {
        let mut q = vec![format!("limit={}", (a.limit - items.len()).min(500))];
        for (k, v) in [
            ("state", &a.state),
            ("kind", &a.kind),
            ("env", &a.env),
            ("cursor", &cursor),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", urlencode(v)));
            }
        }
        let page: Page = client.get(&format!("/api/v1/actions?{}", q.join("&"))).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if output::structured(a.client.output, &items)? {
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|x| {
            vec![
                x.id.clone(),
                x.kind.clone(),
                x.state.to_string(),
                x.env.clone(),
                x.actor.clone(),
                output::age(x.created_at),
                describe(x),
            ]
        })
        .collect();
    output::table(&["ID", "KIND", "STATE", "ENV", "ACTOR", "AGE", "DETAIL"], &rows);
    Ok(exit::OK)
}

fn describe(a: &Action) -> String {
    if let Some(e) = &a.error {
        return e.message.chars().take(80).collect();
    }
    if a.kind == "job" {
        if let Some(cmd) = a.input["command"].as_array() {
            let words: Vec<&str> = cmd.iter().filter_map(|v| v.as_str()).collect();
            return words.join(" ").chars().take(80).collect();
        }
    }
    String::new()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(a: IdArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    let x: Action = client.get(&format!("/api/v1/actions/{}", a.id)).await?;
    if output::structured(a.client.output, &x)? {
        return Ok(exit::OK);
    }
    println!("id:       {}", x.id);
    println!("kind:     {}", x.kind);
    println!("state:    {}", x.state);
    println!("env:      {}", x.env);
    println!("object:   {}", x.object);
    println!("actor:    {}", x.actor);
    println!("attempt:  {}", x.attempt);
    println!("created:  {} ago", output::age(x.created_at));
    println!("input:    {}", x.input);
    if let Some(e) = &x.error {
        println!("error:    {} ({})", e.message, e.code);
        for n in &e.next {
            println!("next:     {n}");
        }
    }
    if !x.result.is_null() {
        println!("result:   {}", x.result);
    }
    println!();
    let rows: Vec<Vec<String>> = x
        .steps
        .iter()
        .map(|s| {
            let took = match (s.started_at, s.finished_at) {
                (Some(a), Some(b)) => output::duration(b - a),
                (Some(a), None) => format!("{}…", output::duration(pave_core::time::now_ms() - a)),
                _ => String::new(),
            };
            let detail = match &s.error {
                Some(e) => e.message.clone(),
                None if !s.output.is_null() => s.output.to_string(),
                None => String::new(),
            };
            vec![
                s.idx.to_string(),
                s.name.clone(),
                s.state.to_string(),
                s.attempt.to_string(),
                took,
                detail,
            ]
        })
        .collect();
    output::table(&["#", "STEP", "STATE", "ATTEMPT", "TOOK", "DETAIL"], &rows);
    Ok(exit::OK)
}

#[derive(serde::Deserialize, serde::Serialize)]
struct LogPage {
    items: Vec<LogLineView>,
    last_seq: i64,
}

async fn logs(a: LogsArgs) -> anyhow::Result<i32> {
    let client = Client::from_args(&a.client)?;
    if a.follow {
        let done = follow(
            &client,
            &a.id,
            WatchOpts {
                logs: true,
                progress: false,
                after: 0,
            },
        )
        .await?;
        return Ok(exit::for_state(done.state));
    }
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let page: LogPage = client
            .get(&format!(
                "/api/v1/actions/{}/logs?after={after}&limit=10000",
                a.id
            ))
            .await?;
        let n = page.items.len();
        after = page.last_seq;
        all.extend(page.items);
        if n < 10000 {
            break;
        }
    }
    if output::structured(a.client.output, &all)? {
        return Ok(exit::OK);
    }
    for l in &all {
        match l.stream.as_str() {
            "stderr" => eprintln!("{}", l.line),
            "system" => {}
            _ => println!("{}", l.line),
        }
    }
    Ok(exit::OK)
}
