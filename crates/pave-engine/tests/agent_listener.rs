//! The agent listener over real TLS on loopback, with the real store and
//! engine: enrollment, refusals with their reasons, routing of commands to
//! the target of the credential only, and revocation.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pave_agent::embedded::AgentDirs;
use pave_agent::protocol::{FromAgent, Outcome, ToAgent, PROTOCOL_VERSION};
use pave_agent::tls::{client_config, CaPin, ServerTls};
use pave_agent::wire::{self, Enrolled, Frame};
use pave_core::action::ActionState;
use pave_core::rbac::Principal;
use pave_engine::{AgentHub, AllowAll, Engine, EngineConfig, Submission};
use pave_store::WriteOp;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// How long any single expected frame may take.
const PATIENCE: Duration = Duration::from_secs(5);

struct ControlPlane {
    _dir: tempfile::TempDir,
    engine: Engine,
    port: u16,
    ca: PathBuf,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

/// An engine over SQLite in a temp dir (with the embedded local agent) and
/// its agent listener on 127.0.0.1, with a generated CA.
async fn control_plane() -> ControlPlane {
    let dir = tempfile::tempdir().unwrap();
    let store = pave_store::open(&format!("sqlite://{}", dir.path().join("p.db").display()))
        .await
        .unwrap();
    let link = pave_agent::spawn_embedded(AgentDirs {
        work_dir: dir.path().join("work"),
        state_dir: dir.path().join("agent"),
        resources_dir: dir.path().join("resources"),
        workloads_dir: dir.path().join("workloads"),
        shim_command: vec!["pave-shim".into()],
    })
    .unwrap();
    let mut agents = HashMap::new();
    agents.insert("local".to_string(), AgentHub::start(link).await);
    let engine = Engine::new(
        store,
        agents,
        Box::new(AllowAll),
        EngineConfig {
            node_id: "n1".into(),
            ..Default::default()
        },
    );
    let tls_dir = dir.path().join("tls");
    let tls = ServerTls::generated(&tls_dir, &[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(pave_engine::agent_listener::serve(
        engine.clone(),
        listener,
        tls.config.clone(),
    ));
    ControlPlane {
        _dir: dir,
        engine,
        port,
        ca: tls_dir.join("ca.pem"),
    }
}

fn admin() -> Principal {
    Principal::builtin_admin()
}

/// A remote-agent target and its enrollment token.
async fn add_target(cp: &ControlPlane, name: &str) -> String {
    let (_, token) = cp
        .engine
        .add_target(
            name,
            "local",
            true,
            BTreeMap::new(),
            Duration::from_secs(3600),
            &admin(),
        )
        .await
        .unwrap();
    token.unwrap()
}

/// A WebSocket over TLS (checked against the generated CA) to `path`.
async fn dial(cp: &ControlPlane, path: &str, bearer: Option<&str>) -> Ws {
    let tcp = TcpStream::connect(("127.0.0.1", cp.port)).await.unwrap();
    let config = client_config(&CaPin::File(cp.ca.clone())).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1".to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut request = format!("wss://127.0.0.1:{}{path}", cp.port)
        .into_client_request()
        .unwrap();
    if let Some(b) = bearer {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {b}")).unwrap(),
        );
    }
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, tls, Some(wire::config()))
        .await
        .unwrap();
    ws
}

/// The next frame from the server, decoded.
async fn next_frame<T: serde::de::DeserializeOwned>(ws: &mut Ws) -> Frame<T> {
    let m = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("the server said nothing")
        .expect("the connection ended without a close frame")
        .expect("reading from the server");
    wire::decode(m).unwrap()
}

/// Reads until the server closes; its close code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        match next_frame::<ToAgent>(ws).await {
            Frame::Closed(Some(c)) => return c,
            Frame::Closed(None) => panic!("closed without a code"),
            _ => {}
        }
    }
}

/// The next protocol message, skipping control frames.
async fn next_message(ws: &mut Ws) -> ToAgent {
    loop {
        match next_frame::<ToAgent>(ws).await {
            Frame::Message(m) => return m,
            Frame::Control => {}
            Frame::Closed(c) => panic!("the server closed the connection: {c:?}"),
        }
    }
}

/// Exchanges `token` for a credential.
async fn enroll(cp: &ControlPlane, token: &str) -> Enrolled {
    let mut ws = dial(cp, wire::ENROLL_PATH, Some(token)).await;
    match next_frame::<Enrolled>(&mut ws).await {
        Frame::Message(e) => e,
        other => panic!("not enrolled: {other:?}"),
    }
}

/// What an agent of `protocol_version` says when greeted.
fn hello(protocol_version: u32) -> tokio_tungstenite::tungstenite::Message {
    wire::encode(&FromAgent::Hello {
        protocol_version,
        agent_version: "9.9.9".into(),
        capabilities: vec!["noop".into()],
        hostname: "edge-host".into(),
    })
}

/// Connects with `credential`, reads the server's hello and answers it.
async fn connect(cp: &ControlPlane, credential: &str) -> Ws {
    let mut ws = dial(cp, wire::CONNECT_PATH, Some(credential)).await;
    loop {
        match next_message(&mut ws).await {
            ToAgent::Hello { protocol_version, .. } => {
                assert_eq!(protocol_version, PROTOCOL_VERSION);
                break;
            }
            ToAgent::Heartbeat { .. } => {}
            other => panic!("expected the server's hello first, got {other:?}"),
        }
    }
    ws.send(hello(PROTOCOL_VERSION)).await.unwrap();
    ws
}

/// Polls until `f` holds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connected(cp: &ControlPlane, target: &str) -> bool {
    cp.engine
        .target_view(target)
        .await
        .unwrap()
        .agent_status
        .unwrap()
        .connected
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incompatible_agent_is_refused_with_both_versions_named() {
    let cp = control_plane().await;
    let token = add_target(&cp, "edge").await;
    let enrolled = enroll(&cp, &token).await;
    assert_eq!(enrolled.target, "edge");

    let mut ws = dial(&cp, wire::CONNECT_PATH, Some(&enrolled.credential)).await;
    match next_message(&mut ws).await {
        ToAgent::Hello { protocol_version, .. } => assert_eq!(protocol_version, PROTOCOL_VERSION),
        other => panic!("expected the server's hello, got {other:?}"),
    }
    let theirs = PROTOCOL_VERSION + 1;
    ws.send(hello(theirs)).await.unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, wire::REFUSED);
    assert!(
        reason.contains(&format!("protocol {theirs}"))
            && reason.contains(&format!("server speaks {PROTOCOL_VERSION}")),
        "{reason}"
    );

    // The session is over (detached) and the agent was never counted in.
    eventually("the refused connection is detached", || async {
        let s = cp.engine.target_view("edge").await.unwrap().agent_status.unwrap();
        s.disconnected_at.is_some()
    })
    .await;
    let s = cp.engine.target_view("edge").await.unwrap().agent_status.unwrap();
    assert!(!s.connected, "{s:?}");
    assert_eq!(s.protocol_version, None, "{s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_or_unknown_token_and_a_bad_credential_are_refused_with_a_reason() {
    let cp = control_plane().await;
    let token = add_target(&cp, "edge").await;
    enroll(&cp, &token).await;

    let mut again = dial(&cp, wire::ENROLL_PATH, Some(&token)).await;
    let (code, reason) = closed(&mut again).await;
    assert_eq!(code, wire::REFUSED);
    assert!(reason.contains("already used"), "{reason}");

    let mut unknown = dial(&cp, wire::ENROLL_PATH, Some("pave_enroll_nope")).await;
    let (code, reason) = closed(&mut unknown).await;
    assert_eq!(code, wire::REFUSED);
    assert!(reason.contains("not known"), "{reason}");

    let mut bad = dial(&cp, wire::CONNECT_PATH, Some("pave_agent_x_y")).await;
    let (code, reason) = closed(&mut bad).await;
    assert_eq!(code, wire::REFUSED);
    assert!(reason.contains("unknown agent credential"), "{reason}");

    for path in [wire::CONNECT_PATH, wire::ENROLL_PATH] {
        let mut bare = dial(&cp, path, None).await;
        let (code, reason) = closed(&mut bare).await;
        assert_eq!(code, wire::REFUSED, "{path}");
        assert!(reason.contains("no credential"), "{path}: {reason}");
    }
    assert!(!connected(&cp, "edge").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_reach_only_the_target_of_the_credential() {
    let cp = control_plane().await;
    let token_a = add_target(&cp, "a").await;
    let token_b = add_target(&cp, "b").await;
    let cred_a = enroll(&cp, &token_a).await;
    let cred_b = enroll(&cp, &token_b).await;
    assert_eq!((cred_a.target.as_str(), cred_b.target.as_str()), ("a", "b"));
    cp.engine
        .writer()
        .write(vec![WriteOp::InsertEnvironment(pave_store::Environment {
            name: "on-b".into(),
            target: "b".into(),
            labels: BTreeMap::new(),
            created_at: pave_core::time::now_ms(),
            namespace: None,
        })])
        .await
        .unwrap();
    let runner = cp.engine.clone();
    let run = tokio::spawn(async move { runner.run(Duration::from_secs(1)).await });

    let mut a = connect(&cp, &cred_a.credential).await;
    eventually("a is connected", || connected(&cp, "a")).await;

    let (action, _) = cp
        .engine
        .submit(Submission {
            kind: "noop".into(),
            env: "on-b".into(),
            input: json!({}),
            principal: admin(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    eventually("the command waits for b's agent", || async {
        let s = cp.engine.target_view("b").await.unwrap().agent_status.unwrap();
        s.commands_in_flight == 1
    })
    .await;

    // a hears heartbeats at most, never b's command.
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(m) = tokio::time::timeout_at(quiet_until, a.next()).await {
        match wire::decode::<ToAgent>(m.unwrap().unwrap()).unwrap() {
            Frame::Message(ToAgent::Heartbeat { .. }) | Frame::Control => {}
            other => panic!("the agent of a received {other:?}"),
        }
    }

    let mut b = connect(&cp, &cred_b.credential).await;
    let command = loop {
        match next_message(&mut b).await {
            ToAgent::Command(c) => break c,
            ToAgent::Heartbeat { .. } => {}
            other => panic!("expected the command, got {other:?}"),
        }
    };
    assert_eq!(command.action_id, action.id);
    b.send(wire::encode(&FromAgent::Result {
        command_id: command.id.clone(),
        outcome: Outcome::Succeeded { output: json!({}) },
    }))
    .await
    .unwrap();
    eventually("the action succeeds", || async {
        let got = cp.engine.store().get_action(&action.id).await.unwrap().unwrap();
        assert!(
            !got.state.is_terminal() || got.state == ActionState::Succeeded,
            "{got:?}"
        );
        got.state == ActionState::Succeeded
    })
    .await;
    // The result is acknowledged to b, and a still saw nothing of it.
    loop {
        match next_message(&mut b).await {
            ToAgent::Ack { command_id } => {
                assert_eq!(command_id, command.id);
                break;
            }
            ToAgent::Heartbeat { .. } => {}
            other => panic!("expected the ack, got {other:?}"),
        }
    }
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), a.next()).await {
        match wire::decode::<ToAgent>(m.unwrap()).unwrap() {
            Frame::Message(ToAgent::Heartbeat { .. }) | Frame::Control => {}
            other => panic!("the agent of a received {other:?}"),
        }
    }

    cp.engine.shutdown();
    run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_agent_is_disconnected_at_once() {
    let cp = control_plane().await;
    let token = add_target(&cp, "edge").await;
    let enrolled = enroll(&cp, &token).await;
    let mut ws = connect(&cp, &enrolled.credential).await;
    eventually("the agent is connected", || connected(&cp, "edge")).await;

    cp.engine.revoke_agent("edge", &admin()).await.unwrap();
    let (code, reason) = tokio::time::timeout(Duration::from_secs(2), closed(&mut ws))
        .await
        .expect("the revoked agent was not disconnected within 2 s");
    assert_eq!(code, wire::REFUSED);
    assert!(reason.contains("revoked"), "{reason}");
    assert!(!connected(&cp, "edge").await);

    // Nor may it come back.
    let mut again = dial(&cp, wire::CONNECT_PATH, Some(&enrolled.credential)).await;
    let (code, reason) = closed(&mut again).await;
    assert_eq!(code, wire::REFUSED);
    assert!(reason.contains("revoked"), "{reason}");
}
