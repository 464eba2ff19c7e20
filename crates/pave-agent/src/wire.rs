//! The agent protocol on a WebSocket: one JSON message per text frame, the
//! same messages the embedded agent exchanges through channels.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

/// Where an agent with a credential connects.
pub const CONNECT_PATH: &str = "/agent/v1/connect";
/// Where an agent exchanges its enrollment token for a credential.
pub const ENROLL_PATH: &str = "/agent/v1/enroll";
/// Close code of a refusal (unknown or revoked credential, used token,
/// incompatible protocol): the agent must not dial again with the same.
pub const REFUSED: u16 = 4001;
/// Each side sends a heartbeat this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A peer not heard from for this long is gone.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(20);
/// The largest message (a command with a workload spec, a result with output).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The answer to an enrollment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    /// The target the agent serves.
    pub target: String,
    /// The agent's long-lived credential.
    pub credential: String,
}

/// What a frame carried.
#[derive(Debug)]
pub enum Frame<T> {
    /// A protocol message.
    Message(T),
    /// A ping, a pong: nothing to act on.
    Control,
    /// The peer closed, with its code and reason if it gave them.
    Closed(Option<(u16, String)>),
}

/// A frame that is not a protocol message.
#[derive(Debug, thiserror::Error)]
#[error("the peer sent {0}")]
pub struct BadFrame(String);

/// A message as a text frame.
pub fn encode<T: Serialize>(m: &T) -> Message {
    Message::text(serde_json::to_string(m).unwrap_or_default())
}

/// A frame as a message.
pub fn decode<T: DeserializeOwned>(m: Message) -> Result<Frame<T>, BadFrame> {
    match m {
        Message::Text(t) => serde_json::from_str(t.as_str())
            .map(Frame::Message)
            .map_err(|e| BadFrame(format!("a message that is not understood: {e}"))),
        Message::Binary(_) => Err(BadFrame("a binary frame".into())),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Frame::Control),
        Message::Close(c) => Ok(Frame::Closed(
            c.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
        )),
    }
}

/// A close frame that refuses the peer, saying why.
pub fn refusal(reason: &str) -> Message {
    // A close reason has at most 123 bytes.
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(REFUSED),
        reason: reason.into(),
    }))
}

/// Bytes read from the socket at a time: a TLS record at most. tungstenite's
/// default (128 KiB, zeroed before each read) was most of what an idle agent
/// connection cost the server.
pub const READ_BUFFER: usize = 16 * 1024;

/// Frame limits for both ends.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}
