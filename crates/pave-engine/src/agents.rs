//! Routes messages between step runners and the agents serving targets.
//!
//! A hub stands for a target's agent, not for one connection: a remote agent
//! may drop and dial in again, and the commands in flight, their routes and
//! the results they will deliver outlive the cut. Commands not yet
//! acknowledged are sent again whenever the agent says hello; the agent runs
//! a command id at most once and answers a repeat with the result it keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pave_agent::protocol::{Command, FromAgent, ToAgent, PROTOCOL_VERSION};
use pave_agent::AgentLink;
use pave_core::time::now_ms;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

struct Route {
    tx: mpsc::UnboundedSender<FromAgent>,
    cmd: Command,
}

struct Conn {
    /// Tells one connection apart from the next.
    id: u64,
    tx: mpsc::Sender<ToAgent>,
}

/// What `pave targets get` shows about a target's agent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStatus {
    /// A connection is up and its agent said hello.
    pub connected: bool,
    /// Milliseconds since the epoch.
    pub connected_at: Option<i64>,
    /// Milliseconds since the epoch.
    pub disconnected_at: Option<i64>,
    /// Last message of any kind from the agent.
    pub last_heartbeat_at: Option<i64>,
    /// From its hello.
    pub agent_version: Option<String>,
    /// From its hello.
    pub protocol_version: Option<u32>,
    /// From its hello.
    pub capabilities: Vec<String>,
    /// From its hello.
    pub hostname: Option<String>,
    /// Commands sent and not yet acknowledged.
    pub commands_in_flight: usize,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    next_conn: u64,
    routes: HashMap<String, Route>,
    status: AgentStatus,
}

/// A target's agent, shared by every step that runs on the target.
#[derive(Clone)]
pub struct AgentHub {
    state: Arc<Mutex<State>>,
    /// Bumped on every connect and disconnect, for those waiting on either.
    changes: Arc<watch::Sender<u64>>,
    /// In-process (the control plane's own agent), not `pave agent`.
    embedded: bool,
}

impl Default for AgentHub {
    fn default() -> Self {
        AgentHub {
            state: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
            embedded: false,
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handed to whoever carries one connection: its messages go to
/// [`AgentHub::receive`], and it ends with [`AgentHub::detach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId(u64);

impl AgentHub {
    /// Takes over an in-process link (the embedded agent): greets the agent
    /// and routes its messages by command id.
    pub async fn start(link: AgentLink) -> Self {
        let hub = AgentHub {
            embedded: true,
            ..AgentHub::default()
        };
        let AgentLink { tx, mut rx } = link;
        let conn = hub.attach(tx).await;
        let h = hub.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                h.receive(conn, msg).await;
            }
            h.detach(conn);
        });
        hub
    }

    /// A new connection of the agent; a previous one is dropped (the agent
    /// dialled again, so the old socket is dead or about to be).
    pub async fn attach(&self, tx: mpsc::Sender<ToAgent>) -> ConnId {
        let id = {
            let mut st = lock(&self.state);
            st.next_conn += 1;
            let id = st.next_conn;
            st.conn = Some(Conn { id, tx: tx.clone() });
            id
        };
        let _ = tx
            .send(ToAgent::Hello {
                protocol_version: PROTOCOL_VERSION,
                server_version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .await;
        ConnId(id)
    }

    /// The connection ended (only if it is still the current one).
    pub fn detach(&self, conn: ConnId) {
        let mut st = lock(&self.state);
        if st.conn.as_ref().is_some_and(|c| c.id == conn.0) {
            st.conn = None;
            st.status.connected = false;
            st.status.disconnected_at = Some(now_ms());
            drop(st);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Drops the current connection, whatever it is (a revoked agent).
    pub fn disconnect(&self) {
        let conn = lock(&self.state).conn.as_ref().map(|c| ConnId(c.id));
        if let Some(c) = conn {
            self.detach(c);
        }
    }

    /// One message from the agent on connection `conn`.
    pub async fn receive(&self, conn: ConnId, msg: FromAgent) {
        let id = match &msg {
            FromAgent::Started { command_id, .. }
            | FromAgent::Log { command_id, .. }
            | FromAgent::Result { command_id, .. } => command_id.clone(),
            FromAgent::Hello {
                agent_version,
                protocol_version,
                capabilities,
                hostname,
            } => {
                tracing::debug!(%agent_version, "agent connected");
                let (tx, pending) = {
                    let mut st = lock(&self.state);
                    let now = now_ms();
                    st.status = AgentStatus {
                        connected: true,
                        connected_at: Some(now),
                        disconnected_at: st.status.disconnected_at,
                        last_heartbeat_at: Some(now),
                        agent_version: Some(agent_version.clone()),
                        protocol_version: Some(*protocol_version),
                        capabilities: capabilities.clone(),
                        hostname: Some(hostname.clone()),
                        commands_in_flight: st.routes.len(),
                    };
                    let tx = st.conn.as_ref().filter(|c| c.id == conn.0).map(|c| c.tx.clone());
                    let pending: Vec<Command> = st.routes.values().map(|r| r.cmd.clone()).collect();
                    (tx, pending)
                };
                self.changes.send_modify(|n| *n += 1);
                // What was sent before the cut may never have arrived: again.
                if let Some(tx) = tx {
                    for cmd in pending {
                        let _ = tx.send(ToAgent::Command(cmd)).await;
                    }
                }
                return;
            }
            FromAgent::Heartbeat { .. } => {
                lock(&self.state).status.last_heartbeat_at = Some(now_ms());
                return;
            }
        };
        let route = {
            let mut st = lock(&self.state);
            st.status.last_heartbeat_at = Some(now_ms());
            st.routes.get(&id).map(|r| r.tx.clone())
        };
        match route {
            Some(route) => {
                let _ = route.send(msg);
            }
            // Left unacknowledged on purpose: the agent keeps the result
            // until a runner that resumes the step asks for it again.
            None => tracing::debug!(command = %id, "message for a command nobody waits on"),
        }
    }

    /// Sends a command (now, or when the agent connects); its messages
    /// arrive on the returned receiver.
    pub async fn dispatch(&self, cmd: Command) -> Result<mpsc::UnboundedReceiver<FromAgent>, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = {
            let mut st = lock(&self.state);
            st.routes.insert(cmd.id.clone(), Route { tx, cmd: cmd.clone() });
            st.status.commands_in_flight = st.routes.len();
            st.conn.as_ref().map(|c| c.tx.clone())
        };
        if let Some(conn) = conn {
            // A send that fails is a connection going away: the command goes
            // out again with the next hello.
            let _ = conn.send(ToAgent::Command(cmd)).await;
        }
        Ok(rx)
    }

    async fn send(&self, msg: ToAgent) {
        let conn = lock(&self.state).conn.as_ref().map(|c| c.tx.clone());
        if let Some(conn) = conn {
            let _ = conn.send(msg).await;
        }
    }

    /// Asks the agent to stop a command.
    pub async fn cancel(&self, command_id: &str) {
        self.send(ToAgent::Cancel {
            command_id: command_id.to_string(),
        })
        .await;
    }

    /// Tells the agent its result is stored, and stops routing the command.
    pub async fn ack(&self, command_id: &str) {
        {
            let mut st = lock(&self.state);
            st.routes.remove(command_id);
            st.status.commands_in_flight = st.routes.len();
        }
        self.send(ToAgent::Ack {
            command_id: command_id.to_string(),
        })
        .await;
    }

    /// Stops routing a command without acknowledging it (its step gave up on
    /// the agent; the agent keeps the result).
    pub fn forget(&self, command_id: &str) {
        let mut st = lock(&self.state);
        st.routes.remove(command_id);
        st.status.commands_in_flight = st.routes.len();
    }

    /// Whether this is the control plane's own, in-process agent.
    pub fn is_embedded(&self) -> bool {
        self.embedded
    }

    /// What is known of the agent now.
    pub fn status(&self) -> AgentStatus {
        lock(&self.state).status.clone()
    }

    /// Whether a connection is up.
    pub fn connected(&self) -> bool {
        lock(&self.state).conn.is_some()
    }

    /// Since when the agent has been away (`None`: connected). A hub whose
    /// agent never connected counts from `since`.
    pub fn away_since(&self, since: i64) -> Option<i64> {
        let st = lock(&self.state);
        match st.conn {
            Some(_) => None,
            None => Some(st.status.disconnected_at.unwrap_or(since).max(since)),
        }
    }

    /// Resolves on the next connect or disconnect.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
