//! The control plane's agent listener (`pave serve --agent-listen`): always
//! TLS, WebSocket, for agents only. An enrollment token buys a credential
//! once; a credential connects an agent to its own target's hub and to
//! nothing else (it opens no user API). A revoked agent is dropped at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pave_agent::protocol::{FromAgent, ToAgent, PROTOCOL_VERSION};
use pave_agent::wire::{self, Enrolled, Frame};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::WebSocketStream;

use crate::engine::Engine;

/// Heartbeats (of 5 s) between two checks that the credential still holds.
const REVALIDATE_EVERY: u32 = 6;

/// Serves agents on `listener` until the engine stops.
pub async fn serve(engine: Engine, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = engine.inner.stopping.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "agent listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let engine = engine.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(engine, tcp, acceptor).await {
                tracing::debug!(%peer, error = %e, "agent connection ended");
            }
        });
    }
}

/// Path and bearer token of the upgrade request.
#[derive(Default, Clone)]
struct Upgrade {
    path: String,
    bearer: Option<String>,
}

async fn connection(
    engine: Engine,
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let seen = Arc::new(Mutex::new(Upgrade::default()));
    let s = seen.clone();
    // The signature is tungstenite's; this callback never refuses (it only
    // records, the refusal comes after the upgrade, with a reason).
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        *s.lock().unwrap_or_else(|p| p.into_inner()) = Upgrade {
            path: req.uri().path().to_string(),
            bearer,
        };
        Ok(resp)
    };
    let ws = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_hdr_async_with_config(tls, callback, Some(wire::config())),
    )
    .await
    .map_err(|_| "WebSocket handshake timed out".to_string())?
    .map_err(|e| format!("WebSocket handshake: {e}"))?;
    let up = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(bearer) = up.bearer else {
        return refuse(ws, "no credential: send `Authorization: Bearer …`").await;
    };
    match up.path.as_str() {
        wire::ENROLL_PATH => enroll(&engine, ws, &bearer, &peer).await,
        wire::CONNECT_PATH => session(&engine, ws, &bearer, &peer).await,
        other => refuse(ws, &format!("no such agent endpoint: {other}")).await,
    }
}

async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    why: &str,
) -> Result<(), String> {
    let _ = ws.send(wire::refusal(why)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Err(why.to_string())
}

async fn enroll<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    mut ws: WebSocketStream<S>,
    token: &str,
    peer: &str,
) -> Result<(), String> {
    match engine.redeem_enrollment(token, json!({ "peer": peer })).await {
        Ok((target, credential)) => {
            let _ = ws.send(wire::encode(&Enrolled { target, credential })).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            Ok(())
        }
        Err(e) => {
            let why = match e {
                crate::EngineError::NotFound(_) => "this enrollment token is not known".to_string(),
                other => other.to_string(),
            };
            refuse(ws, &why).await
        }
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    ws: WebSocketStream<S>,
    credential: &str,
    peer: &str,
) -> Result<(), String> {
    let (target, cred_id) = match engine.authenticate_agent(credential).await {
        Ok(t) => t,
        Err(why) => return refuse(ws, &why).await,
    };
    match engine.store().get_target(&target).await {
        Ok(Some(t)) if t.agent => {}
        _ => return refuse(ws, &format!("target `{target}` no longer exists")).await,
    }
    let hub = engine.remote_hub(&target);
    let (tx, mut rx) = mpsc::channel::<ToAgent>(1024);
    let conn = hub.attach(tx).await;
    engine
        .agent_seen(
            &target,
            &cred_id,
            "agent.connect",
            format!("agent of {target} connected from {peer}"),
            None,
        )
        .await;
    let (mut sink, mut stream) = ws.split();
    // The first beat one period in: a hello goes first on a new connection.
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + wire::HEARTBEAT_EVERY,
        wire::HEARTBEAT_EVERY,
    );
    let mut heard = tokio::time::Instant::now();
    let mut beats = 0u32;
    let ended: String = loop {
        tokio::select! {
            frame = stream.next() => {
                let m = match frame {
                    None => break "the agent closed the connection".into(),
                    Some(Err(e)) => break format!("reading from the agent: {e}"),
                    Some(Ok(m)) => m,
                };
                heard = tokio::time::Instant::now();
                match wire::decode::<FromAgent>(m) {
                    Ok(Frame::Message(FromAgent::Hello { protocol_version, agent_version, .. })) if protocol_version != PROTOCOL_VERSION => {
                        let why = format!(
                            "this agent (pave {agent_version}) speaks agent protocol {protocol_version}, \
                             the server speaks {PROTOCOL_VERSION}: upgrade one of them"
                        );
                        let _ = sink.send(wire::refusal(&why)).await;
                        break why;
                    }
                    Ok(Frame::Message(m)) => {
                        if let FromAgent::Hello { agent_version, protocol_version, capabilities, hostname } = &m {
                            let info = json!({
                                "agent_version": agent_version, "protocol_version": protocol_version,
                                "capabilities": capabilities, "hostname": hostname, "peer": peer,
                            });
                            engine.agent_seen(&target, &cred_id, "agent.hello",
                                format!("agent of {target} on {hostname} (pave {agent_version})"), Some(info)).await;
                        }
                        hub.receive(conn, m).await;
                    }
                    Ok(Frame::Control) => {}
                    Ok(Frame::Closed(_)) => break "the agent closed the connection".into(),
                    Err(e) => tracing::warn!(target = %target, error = %e, "ignored a frame from an agent"),
                }
            }
            out = rx.recv() => match out {
                Some(m) => {
                    if let Err(e) = sink.send(wire::encode(&m)).await {
                        break format!("writing to the agent: {e}");
                    }
                }
                // The hub dropped this connection: revoked, removed, or replaced.
                None => {
                    let why = match engine.authenticate_agent(credential).await {
                        Err(why) => why,
                        Ok(_) => "replaced by a newer connection of the same agent".to_string(),
                    };
                    let _ = sink.send(wire::refusal(&why)).await;
                    break why;
                }
            },
            _ = heartbeat.tick() => {
                if heard.elapsed() > wire::SILENCE_LIMIT {
                    break format!("nothing heard from the agent for {} s", wire::SILENCE_LIMIT.as_secs());
                }
                // A revocation on another control plane reaches this
                // connection within REVALIDATE_EVERY heartbeats.
                beats += 1;
                if beats.is_multiple_of(REVALIDATE_EVERY) {
                    if let Err(why) = engine.authenticate_agent(credential).await {
                        let _ = sink.send(wire::refusal(&why)).await;
                        break why;
                    }
                }
                let beat = ToAgent::Heartbeat { time: pave_core::time::now_ms() };
                if let Err(e) = sink.send(wire::encode(&beat)).await {
                    break format!("writing to the agent: {e}");
                }
            }
        }
    };
    hub.detach(conn);
    let _ = sink.close().await;
    engine
        .agent_seen(
            &target,
            &cred_id,
            "agent.disconnect",
            format!("agent of {target} disconnected: {ended}"),
            None,
        )
        .await;
    Err(ended)
}
