//! `pave agent`: the agent runtime on its own host, dialling out to the
//! control plane's agent listener over a TLS WebSocket, and dialling again
//! (with jittered exponential back-off) whenever the connection drops. The
//! runtime, its results not yet acknowledged and its journal outlive each
//! connection, so a result produced while cut off is delivered on return.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::protocol::{FromAgent, ToAgent, PROTOCOL_VERSION};
use crate::runtime::{AgentDirs, Runtime};
use crate::tls::{self, CaPin};
use crate::wire::{self, Enrolled, Frame};

/// Why the agent cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server refused this agent; dialling again would not help.
    #[error("the server refused this agent: {0}")]
    Refused(String),
    /// Bad options or local files.
    #[error("{0}")]
    Setup(String),
    /// The connection failed or dropped (retried by [`run`]).
    #[error("{0}")]
    Cut(String),
}

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// `wss://host:port` (or `ws://` to loopback only).
    pub server: String,
    /// How the server's certificate is checked (`wss://` only).
    pub pin: Option<CaPin>,
    /// Where the credential, the journal and the agent's work live.
    pub data_dir: PathBuf,
    /// The program that supervises one replica, e.g. `[current_exe, "shim"]`.
    pub shim_command: Vec<String>,
    /// Serve the Kubernetes cluster the agent runs in (its pod's service
    /// account) instead of this host.
    pub in_cluster: bool,
}

/// What enrollment leaves under the data directory (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    /// Server it was issued by.
    pub server: String,
    /// Target it serves.
    pub target: String,
    /// The secret.
    pub credential: String,
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "agent of target {} at {}", self.target, self.server)
    }
}

fn credential_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent-credential.json")
}

/// The stored credential, if this data directory has enrolled.
pub fn load_credential(data_dir: &Path) -> Result<Option<Credential>, RemoteError> {
    let path = credential_path(data_dir);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| RemoteError::Setup(format!("{} is not an agent credential: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RemoteError::Setup(format!("cannot read {}: {e}", path.display()))),
    }
}

fn store_credential(data_dir: &Path, c: &Credential) -> Result<(), RemoteError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let setup = |e: std::io::Error| RemoteError::Setup(format!("cannot write the credential: {e}"));
    std::fs::create_dir_all(data_dir).map_err(setup)?;
    let path = credential_path(data_dir);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(setup)?;
    f.write_all(&serde_json::to_vec_pretty(c).unwrap_or_default())
        .and_then(|()| f.sync_all())
        .map_err(setup)?;
    std::fs::rename(&tmp, &path).map_err(setup)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

/// Opens a WebSocket to `path` of the server, presenting `bearer`.
async fn dial(opts: &RemoteOptions, path: &str, bearer: &str) -> Result<Socket, RemoteError> {
    tls::check_plain_url(&opts.server).map_err(|e| RemoteError::Setup(e.to_string()))?;
    let url =
        url::Url::parse(&opts.server).map_err(|e| RemoteError::Setup(format!("{}: {e}", opts.server)))?;
    let host = url
        .host_str()
        .ok_or_else(|| RemoteError::Setup(format!("{} has no host", opts.server)))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port().unwrap_or(if url.scheme() == "wss" { 443 } else { 80 });
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| RemoteError::Cut(format!("connecting to {}: timed out", opts.server)))?
        .map_err(|e| RemoteError::Cut(format!("connecting to {}: {e}", opts.server)))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if url.scheme() == "wss" {
        let pin = opts.pin.as_ref().ok_or_else(|| {
            RemoteError::Setup("no CA to check the server with: pass --ca-file or --ca-fingerprint".into())
        })?;
        let config = tls::client_config(pin).map_err(|e| RemoteError::Setup(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| RemoteError::Setup(format!("{host}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| RemoteError::Cut(format!("TLS with {}: {e}", opts.server)))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let mut endpoint = url.clone();
    endpoint.set_path(path);
    let mut request = endpoint
        .as_str()
        .into_client_request()
        .map_err(|e| RemoteError::Setup(format!("{}: {e}", opts.server)))?;
    let auth = HeaderValue::from_str(&format!("Bearer {bearer}"))
        .map_err(|_| RemoteError::Setup("the token has characters a header cannot carry".into()))?;
    request.headers_mut().insert("authorization", auth);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(wire::config()))
        .await
        .map_err(|e| RemoteError::Cut(format!("WebSocket with {}: {e}", opts.server)))?;
    Ok(ws)
}

/// Exchanges a single-use enrollment token for this agent's credential and
/// stores it under the data directory.
pub async fn enroll(opts: &RemoteOptions, token: &str) -> Result<Credential, RemoteError> {
    let mut ws = dial(opts, wire::ENROLL_PATH, token).await?;
    let answer = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .map_err(|_| RemoteError::Cut("the server did not answer the enrollment".into()))?;
    let enrolled: Enrolled = match answer {
        Some(Ok(m)) => match wire::decode(m) {
            Ok(Frame::Message(e)) => e,
            Ok(Frame::Closed(Some((code, reason)))) if code == wire::REFUSED => {
                return Err(RemoteError::Refused(reason))
            }
            Ok(other) => {
                return Err(RemoteError::Cut(format!(
                    "unexpected answer to the enrollment: {other:?}"
                )))
            }
            Err(e) => return Err(RemoteError::Cut(e.to_string())),
        },
        Some(Err(e)) => return Err(RemoteError::Cut(format!("enrollment: {e}"))),
        None => return Err(RemoteError::Cut("the server closed the connection".into())),
    };
    let _ = ws.close(None).await;
    let c = Credential {
        server: opts.server.clone(),
        target: enrolled.target,
        credential: enrolled.credential,
    };
    store_credential(&opts.data_dir, &c)?;
    Ok(c)
}

/// Serves the target until `stop`, reconnecting after every cut. Returns an
/// error only when going on is pointless (refused, bad setup).
pub async fn run(
    opts: RemoteOptions,
    credential: Credential,
    stop: CancellationToken,
) -> Result<(), RemoteError> {
    let dirs = AgentDirs {
        work_dir: opts.data_dir.join("work"),
        state_dir: opts.data_dir.join("state"),
        resources_dir: opts.data_dir.join("resources"),
        workloads_dir: opts.data_dir.join("workloads"),
        shim_command: opts.shim_command.clone(),
    };
    let journal = opts.data_dir.join("journal");
    let setup = |e: std::io::Error| {
        RemoteError::Setup(format!("agent data directory {}: {e}", opts.data_dir.display()))
    };
    let (runtime, mut uplink) = if opts.in_cluster {
        std::fs::create_dir_all(&dirs.work_dir).map_err(setup)?;
        let cluster =
            crate::cluster::Cluster::connect(&crate::cluster::Credentials::InCluster, &dirs.work_dir)
                .await
                .map_err(|e| RemoteError::Setup(e.to_string()))?;
        crate::cluster::runtime(dirs, Some(&journal), std::sync::Arc::new(cluster)).map_err(setup)?
    } else {
        Runtime::new(dirs, Some(&journal)).map_err(setup)?
    };
    // Messages of the control plane are handled in order, away from the
    // socket loop, so that a full uplink cannot stall reading the socket.
    let (inbox, mut inbox_rx) = mpsc::channel::<ToAgent>(1024);
    let rt = runtime.clone();
    tokio::spawn(async move {
        while let Some(m) = inbox_rx.recv().await {
            rt.handle(m).await;
        }
    });
    let mut backoff = Backoff::default();
    loop {
        // A session the server greeted worked: the next cut starts the
        // back-off over (a control plane restarting is back within seconds).
        let mut greeted = false;
        let ended = tokio::select! {
            r = session(&opts, &credential, &inbox, &mut uplink, &mut greeted) => r,
            _ = stop.cancelled() => {
                runtime.stop_all();
                return Ok(());
            }
        };
        match ended {
            Err(RemoteError::Cut(why)) => {
                if greeted {
                    backoff = Backoff::default();
                }
                let pause = backoff.next();
                tracing::warn!(%why, retry_in_ms = pause.as_millis() as u64, "connection to the control plane lost");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => { runtime.stop_all(); return Ok(()); }
                }
            }
            Err(e) => {
                runtime.stop_all();
                return Err(e);
            }
            Ok(()) => return Ok(()),
        }
    }
}

/// One connection, until it drops.
async fn session(
    opts: &RemoteOptions,
    credential: &Credential,
    inbox: &mpsc::Sender<ToAgent>,
    uplink: &mut mpsc::Receiver<FromAgent>,
    greeted: &mut bool,
) -> Result<(), RemoteError> {
    let ws = dial(opts, wire::CONNECT_PATH, &credential.credential).await?;
    tracing::info!(server = %opts.server, target = %credential.target, "connected to the control plane");
    let (mut sink, mut stream) = ws.split();
    // The first beat one period in: a hello goes first on a new connection.
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + wire::HEARTBEAT_EVERY,
        wire::HEARTBEAT_EVERY,
    );
    let mut heard = tokio::time::Instant::now();
    let cut = |e: String| RemoteError::Cut(e);
    loop {
        tokio::select! {
            frame = stream.next() => {
                let m = match frame {
                    None => return Err(cut("the server closed the connection".into())),
                    Some(Err(e)) => return Err(cut(format!("reading from the server: {e}"))),
                    Some(Ok(m)) => m,
                };
                heard = tokio::time::Instant::now();
                match wire::decode::<ToAgent>(m) {
                    Ok(Frame::Message(ToAgent::Hello { protocol_version, server_version })) if protocol_version != PROTOCOL_VERSION => {
                        let why = format!(
                            "the server (pave {server_version}) speaks agent protocol {protocol_version}, \
                             this agent speaks {PROTOCOL_VERSION}: upgrade one of them"
                        );
                        let _ = sink.send(wire::refusal(&why)).await;
                        return Err(RemoteError::Refused(why));
                    }
                    Ok(Frame::Message(m)) => {
                        *greeted |= matches!(m, ToAgent::Hello { .. });
                        if inbox.send(m).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(Frame::Control) => {}
                    Ok(Frame::Closed(Some((code, reason)))) if code == wire::REFUSED => {
                        return Err(RemoteError::Refused(reason))
                    }
                    Ok(Frame::Closed(_)) => return Err(cut("the server closed the connection".into())),
                    Err(e) => tracing::warn!(error = %e, "ignored a frame"),
                }
            }
            out = uplink.recv() => {
                let Some(m) = out else { return Ok(()) };
                sink.send(wire::encode(&m)).await.map_err(|e| cut(format!("writing to the server: {e}")))?;
            }
            _ = heartbeat.tick() => {
                if heard.elapsed() > wire::SILENCE_LIMIT {
                    return Err(cut(format!("nothing heard from the server for {} s", wire::SILENCE_LIMIT.as_secs())));
                }
                let beat = FromAgent::Heartbeat { time: pave_core::time::now_ms() };
                sink.send(wire::encode(&beat)).await.map_err(|e| cut(format!("writing to the server: {e}")))?;
            }
        }
    }
}

/// Exponential back-off with full jitter, 200 ms to 30 s.
struct Backoff {
    ceiling: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            ceiling: Duration::from_millis(200),
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        use rand::Rng;
        let ms = self.ceiling.as_millis() as u64;
        let pause = Duration::from_millis(rand::rng().random_range(ms / 2..=ms));
        self.ceiling = (self.ceiling * 2).min(Duration::from_secs(30));
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_its_ceiling() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
        for _ in 0..20 {
            assert!(b.next() <= Duration::from_secs(30));
        }
        assert_eq!(b.ceiling, Duration::from_secs(30));
    }

    #[test]
    fn the_credential_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = Credential {
            server: "wss://127.0.0.1:7861".into(),
            target: "edge-1".into(),
            credential: "pave_agent_x".into(),
        };
        store_credential(dir.path(), &c).unwrap();
        let mode = std::fs::metadata(credential_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_credential(dir.path()).unwrap().unwrap().target, "edge-1");
    }
}
