//! Routes messages between step runners and the agents serving targets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pave_agent::protocol::{Command, FromAgent, ToAgent, PROTOCOL_VERSION};
use pave_agent::AgentLink;
use tokio::sync::mpsc;

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<FromAgent>>>>;

/// One connected agent, shared by every step that runs on its target.
#[derive(Clone)]
pub struct AgentHub {
    tx: mpsc::Sender<ToAgent>,
    routes: Routes,
}

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<FromAgent>>> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentHub {
    /// Takes over a link: greets the agent and routes its messages by command id.
    pub async fn start(link: AgentLink) -> Self {
        let AgentLink { tx, mut rx } = link;
        let routes: Routes = Arc::default();
        let _ = tx
            .send(ToAgent::Hello {
                protocol_version: PROTOCOL_VERSION,
                server_version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .await;
        let r = routes.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let id = match &msg {
                    FromAgent::Started { command_id, .. }
                    | FromAgent::Log { command_id, .. }
                    | FromAgent::Result { command_id, .. } => command_id.clone(),
                    FromAgent::Hello { agent_version, .. } => {
                        tracing::debug!(%agent_version, "agent connected");
                        continue;
                    }
                    FromAgent::Heartbeat { .. } => continue,
                };
                let route = lock(&r).get(&id).cloned();
                match route {
                    Some(route) => {
                        let _ = route.send(msg);
                    }
                    None => tracing::debug!(command = %id, "message for a command nobody waits on"),
                }
            }
        });
        AgentHub { tx, routes }
    }

    /// Sends a command; its messages arrive on the returned receiver.
    pub async fn dispatch(&self, cmd: Command) -> Result<mpsc::UnboundedReceiver<FromAgent>, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = cmd.id.clone();
        lock(&self.routes).insert(id.clone(), tx);
        if self.tx.send(ToAgent::Command(cmd)).await.is_err() {
            lock(&self.routes).remove(&id);
            return Err("the agent is not connected".into());
        }
        Ok(rx)
    }

    /// Asks the agent to stop a command.
    pub async fn cancel(&self, command_id: &str) {
        let _ = self
            .tx
            .send(ToAgent::Cancel {
                command_id: command_id.to_string(),
            })
            .await;
    }

    /// Tells the agent its result is stored, and stops routing the command.
    pub async fn ack(&self, command_id: &str) {
        lock(&self.routes).remove(command_id);
        let _ = self
            .tx
            .send(ToAgent::Ack {
                command_id: command_id.to_string(),
            })
            .await;
    }
}
