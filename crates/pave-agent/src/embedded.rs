//! The agent runtime, run in-process by the control plane for the `local` target.
//! It speaks exactly the [`protocol`](crate::protocol) messages a remote agent
//! speaks over its socket, through a pair of channels.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use pave_targets::local::LocalTarget;

use crate::local::job::{self, JobContext};
use crate::local::workload;
use crate::protocol::{Command, CommandPayload, FromAgent, Outcome, ToAgent, CAPABILITIES, PROTOCOL_VERSION};

/// The control plane's end of a connection to an agent.
pub struct AgentLink {
    /// Messages to the agent.
    pub tx: mpsc::Sender<ToAgent>,
    /// Messages from the agent.
    pub rx: mpsc::Receiver<FromAgent>,
}

/// Directories the agent works in.
#[derive(Debug, Clone)]
pub struct AgentDirs {
    /// Default working directory of jobs.
    pub work_dir: PathBuf,
    /// Where the agent records running commands, to clean up after a crash.
    pub state_dir: PathBuf,
    /// Where resources (databases, caches) keep their files.
    pub resources_dir: PathBuf,
    /// Where workloads (supervised replicas) keep their files.
    pub workloads_dir: PathBuf,
    /// The program (and leading arguments) that supervises one replica, e.g.
    /// `[current_exe, "shim"]`.
    pub shim_command: Vec<String>,
}

#[derive(Default)]
struct AgentState {
    /// Every command id ever received, so a redelivered command is not run twice.
    seen: HashSet<String>,
    running: HashMap<String, CancellationToken>,
    /// Results not yet acknowledged; re-sent when the peer says hello again.
    unacked: HashMap<String, Outcome>,
}

/// Starts an embedded agent. Orphaned jobs of a previous run are killed first.
pub fn spawn_embedded(dirs: AgentDirs) -> std::io::Result<AgentLink> {
    std::fs::create_dir_all(&dirs.work_dir)?;
    std::fs::create_dir_all(&dirs.state_dir)?;
    let reaped = job::reap_orphans(&dirs.state_dir);
    if !reaped.is_empty() {
        tracing::warn!(commands = ?reaped, "killed jobs left running by a previous run");
    }
    let (to_agent_tx, mut to_agent_rx) = mpsc::channel::<ToAgent>(1024);
    let (from_agent_tx, from_agent_rx) = mpsc::channel::<FromAgent>(4096);
    let state = Arc::new(Mutex::new(AgentState::default()));
    let providers = Arc::new(pave_providers::LocalProviders::new(&dirs.resources_dir)?);
    let target = Arc::new(LocalTarget::new(&dirs.workloads_dir, dirs.shim_command.clone()));
    let dirs = Arc::new(dirs);
    tokio::spawn(async move {
        while let Some(msg) = to_agent_rx.recv().await {
            match msg {
                ToAgent::Hello { protocol_version, .. } => {
                    if protocol_version != PROTOCOL_VERSION {
                        tracing::error!(protocol_version, "control plane speaks another protocol version");
                        continue;
                    }
                    let _ = from_agent_tx.send(hello()).await;
                    let pending: Vec<_> = lock(&state)
                        .unacked
                        .iter()
                        .map(|(id, o)| (id.clone(), o.clone()))
                        .collect();
                    for (command_id, outcome) in pending {
                        let _ = from_agent_tx
                            .send(FromAgent::Result { command_id, outcome })
                            .await;
                    }
                }
                ToAgent::Command(cmd) => {
                    let token = CancellationToken::new();
                    {
                        let mut st = lock(&state);
                        if !st.seen.insert(cmd.id.clone()) {
                            tracing::debug!(command = %cmd.id, "duplicate command ignored");
                            continue;
                        }
                        st.running.insert(cmd.id.clone(), token.clone());
                    }
                    let out = from_agent_tx.clone();
                    let state = state.clone();
                    let dirs = dirs.clone();
                    let providers = providers.clone();
                    let target = target.clone();
                    tokio::spawn(async move {
                        let outcome =
                            match workload::execute(target.as_ref(), &cmd, token.clone(), &out).await {
                                Some(o) => o,
                                None => execute(&dirs, &providers, &cmd, token, &out).await,
                            };
                        {
                            let mut st = lock(&state);
                            st.running.remove(&cmd.id);
                            st.unacked.insert(cmd.id.clone(), outcome.clone());
                        }
                        let _ = out
                            .send(FromAgent::Result {
                                command_id: cmd.id,
                                outcome,
                            })
                            .await;
                    });
                }
                ToAgent::Cancel { command_id } => {
                    if let Some(t) = lock(&state).running.get(&command_id) {
                        t.cancel();
                    }
                }
                ToAgent::Ack { command_id } => {
                    lock(&state).unacked.remove(&command_id);
                }
                ToAgent::Heartbeat { .. } => {
                    let _ = from_agent_tx
                        .send(FromAgent::Heartbeat {
                            time: pave_core::time::now_ms(),
                        })
                        .await;
                }
            }
        }
        // The control plane dropped the link: stop everything still running.
        for t in lock(&state).running.values() {
            t.cancel();
        }
    });
    Ok(AgentLink {
        tx: to_agent_tx,
        rx: from_agent_rx,
    })
}

fn lock(state: &Mutex<AgentState>) -> std::sync::MutexGuard<'_, AgentState> {
    // A panic while holding this lock cannot leave it half-updated in a way that
    // matters more than stopping the agent would, so recover the guard.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn hello() -> FromAgent {
    FromAgent::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    }
}

async fn execute(
    dirs: &AgentDirs,
    providers: &pave_providers::LocalProviders,
    cmd: &Command,
    token: CancellationToken,
    out: &mpsc::Sender<FromAgent>,
) -> Outcome {
    match &cmd.payload {
        CommandPayload::Noop => Outcome::Succeeded {
            output: serde_json::Value::Null,
        },
        CommandPayload::RunJob { spec, extra_env } => {
            let ctx = JobContext {
                work_dir: &dirs.work_dir,
                state_dir: &dirs.state_dir,
            };
            job::run(ctx, &cmd.id, spec, extra_env, token, out).await
        }
        CommandPayload::ProvisionResource { request } => provided(providers.create(request).await),
        CommandPayload::RepairResource { request } => provided(providers.repair(request).await),
        CommandPayload::CheckResource { request } => match providers.check(request).await {
            Ok(()) => Outcome::Succeeded {
                output: serde_json::json!({ "health": "healthy" }),
            },
            Err(e) => failed(&e),
        },
        CommandPayload::DeleteResource { request } => match providers.delete(request).await {
            Ok(()) => Outcome::Succeeded {
                output: serde_json::Value::Null,
            },
            Err(e) => failed(&e),
        },
        other => Outcome::Failed {
            code: "unsupported".into(),
            message: format!("this agent cannot execute {other:?}"),
            output: serde_json::Value::Null,
        },
    }
}

fn failed(e: &pave_providers::ProviderError) -> Outcome {
    Outcome::Failed {
        code: e.code().to_string(),
        message: e.to_string(),
        output: serde_json::Value::Null,
    }
}

fn provided(r: Result<pave_providers::Provisioned, pave_providers::ProviderError>) -> Outcome {
    match r {
        Ok(p) => Outcome::Succeeded {
            output: serde_json::to_value(p).unwrap_or_default(),
        },
        Err(e) => failed(&e),
    }
}
