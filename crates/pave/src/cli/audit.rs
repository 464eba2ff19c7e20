//! `pave audit …`.

use clap::{Args, Subcommand};
use pave_core::AuditEvent;

use super::ClientArgs;
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit events, oldest first.
    List(ListArgs),
    /// Recompute the hash chain and name the first broken event.
    Verify(VerifyArgs),
    /// Write every audit event (or those after --after) as JSON lines, with their hashes.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// Write to this file instead of stdout.
    #[arg(long = "file", value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(serde::Deserialize)]
struct Page {
    items: Vec<AuditEvent>,
    next_after: Option<i64>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Verification {
    ok: bool,
    checked: i64,
    first_broken: Option<i64>,
    reason: Option<String>,
}

pub async fn run(cmd: AuditCmd) -> anyhow::Result<i32> {
    match cmd {
        AuditCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let page: Page = client
                .get(&format!(
                    "/api/v1/audit?after={}&limit={}",
                    a.after,
                    a.limit.clamp(1, 1000)
                ))
                .await?;
            if output::structured(a.client.output, &page.items)? {
                return Ok(exit::OK);
            }
            let rows: Vec<Vec<String>> = page
                .items
                .iter()
                .map(|e| {
                    vec![
                        e.seq.to_string(),
                        output::age(e.time),
                        e.actor.clone(),
                        e.verb.clone(),
                        e.object.clone(),
                        e.summary.clone(),
                    ]
                })
                .collect();
            output::table(&["SEQ", "AGE", "ACTOR", "VERB", "OBJECT", "SUMMARY"], &rows);
            Ok(exit::OK)
        }
        AuditCmd::Export(a) => {
            use std::io::Write;
            let client = Client::from_args(&a.client)?;
            let mut out: Box<dyn Write> = match &a.file {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut after = a.after;
            let mut n = 0usize;
            loop {
                let page: Page = client
                    .get(&format!("/api/v1/audit?after={after}&limit=1000"))
                    .await?;
                for e in &page.items {
                    serde_json::to_writer(&mut out, e)?;
                    out.write_all(b"\n")?;
                    after = e.seq;
                    n += 1;
                }
                if page.next_after.is_none() || page.items.is_empty() {
                    break;
                }
            }
            out.flush()?;
            if let Some(path) = &a.file {
                eprintln!("{n} audit events written to {}", path.display());
            }
            Ok(exit::OK)
        }
        AuditCmd::Verify(a) => {
            let client = Client::from_args(&a.client)?;
            let v: Verification = client.get("/api/v1/audit/verify").await?;
            if !output::structured(a.client.output, &v)? {
                if v.ok {
                    println!(
                        "OK: {} audit events verified, the hash chain is intact",
                        v.checked
                    );
                } else {
                    println!(
                        "BROKEN: audit event {} does not verify: {} ({} events before it verified)",
                        v.first_broken.unwrap_or_default(),
                        v.reason.as_deref().unwrap_or("unknown reason"),
                        v.checked
                    );
                }
            }
            Ok(if v.ok { exit::OK } else { exit::ERROR })
        }
    }
}
