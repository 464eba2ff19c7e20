//! The agent side of pave: the wire protocol spoken between the control plane
//! and an agent, and the agent runtime that executes commands on its target.
//!
//! The control plane embeds one agent for the `local` target; a remote agent
//! (`pave agent`) will speak the same [`protocol`] messages over a WebSocket.
//! The engine only ever holds an [`AgentLink`]: a sender of
//! [`protocol::ToAgent`] and a receiver of [`protocol::FromAgent`].

pub mod cluster;
pub mod embedded;
pub mod local;
pub mod protocol;
pub mod remote;
pub mod runtime;
pub mod tls;
pub mod wire;

pub use embedded::{spawn_embedded, AgentLink};
