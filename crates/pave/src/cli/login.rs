//! `pave login` and `pave version`.

use clap::Args;
use serde_json::{json, Value};

use super::{ClientArgs, Format};
use crate::client::{Client, DEFAULT_SERVER};
use crate::config::{self, SavedLogin};
use crate::{exit, output};

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn login(a: LoginArgs) -> anyhow::Result<i32> {
    let saved = config::load()?;
    let server = a
        .client
        .server
        .clone()
        .or(saved.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = match a.client.token.clone() {
        Some(t) => t,
        None => {
            eprint!("token: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    if token.is_empty() {
        anyhow::bail!(crate::client::ClientError::NoToken);
    }
    let client = Client::new(&server, &token)?;
    // Only a token the server accepts is saved.
    let who: Value = client.get("/api/v1/whoami").await?;
    let path = config::save(&SavedLogin {
        server: Some(server.clone()),
        token: Some(token),
    })?;
    if !output::structured(
        a.client.output,
        &json!({ "server": server, "subject": who["subject"], "config": path }),
    )? {
        println!(
            "logged in to {server} as {} (saved to {})",
            who["subject"].as_str().unwrap_or("?"),
            path.display()
        );
    }
    Ok(exit::OK)
}

pub async fn version(a: VersionArgs) -> anyhow::Result<i32> {
    let mut v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "protocol_version": pave_agent::protocol::PROTOCOL_VERSION,
    });
    if a.client.output == Format::Table {
        println!(
            "pave {} (agent protocol {})",
            env!("CARGO_PKG_VERSION"),
            pave_agent::protocol::PROTOCOL_VERSION
        );
        return Ok(exit::OK);
    }
    v["commit"] = json!(option_env!("PAVE_COMMIT"));
    output::structured(a.client.output, &v)?;
    Ok(exit::OK)
}
