//! `pave agent`: serve a target from this host, dialling out to the control plane.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use pave_agent::remote::{self, RemoteError, RemoteOptions};
use pave_agent::tls::CaPin;

use crate::exit;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCmd>,
    /// The control plane's agent listener: `wss://HOST:7861` (`ws://` only to loopback).
    #[arg(long, env = "PAVE_AGENT_SERVER")]
    pub server: Option<String>,
    /// A single-use enrollment token (`pave targets add … --agent`), exchanged once for a credential.
    #[arg(long, env = "PAVE_ENROLL_TOKEN", hide_env_values = true)]
    pub enroll: Option<String>,
    /// Where the agent keeps its credential (0600), its journal and its work.
    /// Needed to run the agent (not with a subcommand).
    #[arg(long, env = "PAVE_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The CA that signed the server's certificate (`<server data dir>/tls/ca.pem`).
    #[arg(long, env = "PAVE_AGENT_CA_FILE", conflicts_with = "ca_fingerprint")]
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 fingerprint of that CA, as `pave serve` prints it.
    #[arg(long, env = "PAVE_AGENT_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
    /// Serve the Kubernetes cluster this agent runs in, with its pod's
    /// service account (the target was added with `--kind kubernetes --agent`).
    #[arg(long, env = "PAVE_AGENT_IN_CLUSTER")]
    pub in_cluster: bool,
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Print the Kubernetes YAML that installs this target's agent in a cluster (with a new enrollment token).
    Manifest(super::manifest::ManifestArgs),
}

/// The CA pin: given, else the one a server on this host keeps in its
/// default data directory.
fn pin(a: &AgentArgs) -> Option<CaPin> {
    if let Some(f) = &a.ca_file {
        return Some(CaPin::File(f.clone()));
    }
    if let Some(f) = &a.ca_fingerprint {
        return Some(CaPin::Fingerprint(f.clone()));
    }
    let local = std::env::var_os("PAVE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("pave-data"))
        .join("tls")
        .join("ca.pem");
    local.exists().then(|| {
        eprintln!("pave agent: checking the server with {}", local.display());
        CaPin::File(local)
    })
}

pub async fn run(a: AgentArgs) -> anyhow::Result<i32> {
    // What the agent does (connects, loses the server, retries) is worth seeing.
    crate::serve::init_logging(&std::env::var("PAVE_LOG_FORMAT").unwrap_or_else(|_| "text".into()))?;
    if let Some(AgentCmd::Manifest(m)) = a.command {
        return super::manifest::run(m).await;
    }
    let Some(data_dir) = a.data_dir.clone() else {
        eprintln!(
            "error: --data-dir is needed (or PAVE_AGENT_DATA_DIR): where the agent keeps its credential, \
             e.g. pave agent --server wss://HOST:7861 --enroll TOKEN --data-dir /var/lib/pave-agent"
        );
        return Ok(exit::USAGE);
    };
    std::fs::create_dir_all(&data_dir).with_context(|| format!("could not create {}", data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&data_dir)
        .with_context(|| format!("could not resolve {}", data_dir.display()))?;
    let stored = remote::load_credential(&data_dir)?;
    let server = match (&a.server, &stored) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.server.clone(),
        (None, None) => {
            bail!("--server is needed: the agent listener of the control plane, e.g. wss://HOST:7861")
        }
    };
    let opts = RemoteOptions {
        server,
        pin: pin(&a),
        data_dir: data_dir.clone(),
        shim_command: crate::serve::shim_command()?,
        in_cluster: a.in_cluster,
    };
    let credential = match (stored, &a.enroll) {
        (Some(c), Some(_)) => {
            eprintln!("pave agent: already enrolled ({c}); --enroll is not used");
            c
        }
        (Some(c), None) => c,
        (None, Some(token)) => match remote::enroll(&opts, token).await {
            Ok(c) => {
                eprintln!(
                    "pave agent: enrolled as the agent of target {}; credential stored in {}",
                    c.target,
                    data_dir.join("agent-credential.json").display()
                );
                c
            }
            Err(RemoteError::Refused(why)) => {
                eprintln!("pave agent: enrollment refused: {why}");
                return Ok(exit::UNAUTHORIZED);
            }
            Err(e) => bail!("enrollment failed: {e}"),
        },
        (None, None) => bail!(
            "{} holds no agent credential: pass --enroll TOKEN (from `pave targets add NAME --agent`)",
            data_dir.display()
        ),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            s.cancel();
        }
    });
    eprintln!(
        "pave agent: serving target {} for {}",
        credential.target, opts.server
    );
    match remote::run(opts, credential, stop).await {
        Ok(()) => Ok(exit::OK),
        Err(RemoteError::Refused(why)) => {
            eprintln!("pave agent: the server refused this agent: {why}");
            Ok(exit::UNAUTHORIZED)
        }
        Err(e) => Err(e.into()),
    }
}
