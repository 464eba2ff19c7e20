//! The agent run in-process by the control plane for the `local` target. It
//! is the same [`Runtime`] a remote agent runs, fed through a pair of
//! channels instead of a socket.

use tokio::sync::mpsc;

use crate::protocol::{FromAgent, ToAgent};
pub use crate::runtime::AgentDirs;
use crate::runtime::Runtime;

/// The control plane's end of a connection to an agent.
pub struct AgentLink {
    /// Messages to the agent.
    pub tx: mpsc::Sender<ToAgent>,
    /// Messages from the agent.
    pub rx: mpsc::Receiver<FromAgent>,
}

/// Starts an embedded agent. Orphaned jobs of a previous run are killed first.
pub fn spawn_embedded(dirs: AgentDirs) -> std::io::Result<AgentLink> {
    let (runtime, from_agent_rx) = Runtime::new(dirs, None)?;
    Ok(link(runtime, from_agent_rx))
}

/// Feeds `runtime` through a pair of channels, in this process.
pub(crate) fn link(runtime: Runtime, from_agent_rx: mpsc::Receiver<FromAgent>) -> AgentLink {
    let (to_agent_tx, mut to_agent_rx) = mpsc::channel::<ToAgent>(1024);
    tokio::spawn(async move {
        while let Some(msg) = to_agent_rx.recv().await {
            runtime.handle(msg).await;
        }
        // The control plane dropped the link: stop everything still running.
        runtime.stop_all();
    });
    AgentLink {
        tx: to_agent_tx,
        rx: from_agent_rx,
    }
}
