//! The embedded agent running real processes on this host.

use std::collections::BTreeMap;
use std::time::Duration;

use pave_agent::embedded::AgentDirs;
use pave_agent::protocol::{Command, CommandPayload, FromAgent, Outcome, ToAgent, PROTOCOL_VERSION};
use pave_agent::{spawn_embedded, AgentLink};
use pave_core::JobSpec;

fn job(cmd: &[&str]) -> JobSpec {
    JobSpec {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        cwd: None,
        timeout_secs: None,
        undo: None,
    }
}

async fn agent(dir: &std::path::Path) -> AgentLink {
    spawn_embedded(AgentDirs {
        work_dir: dir.join("work"),
        state_dir: dir.join("state"),
        resources_dir: dir.join("resources"),
        workloads_dir: dir.join("workloads"),
        shim_command: vec!["pave-shim".into()],
    })
    .unwrap()
}

async fn send(link: &AgentLink, id: &str, spec: JobSpec) {
    let cmd = Command {
        id: id.into(),
        action_id: "a".into(),
        step: 0,
        payload: CommandPayload::RunJob {
            spec,
            extra_env: BTreeMap::new(),
        },
    };
    link.tx.send(ToAgent::Command(cmd)).await.unwrap();
}

/// Collects stdout lines and the outcome of `id`.
async fn outcome(link: &mut AgentLink, id: &str) -> (Vec<String>, Outcome) {
    let mut lines = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), link.rx.recv())
            .await
            .unwrap()
            .unwrap();
        match msg {
            FromAgent::Log { command_id, line, .. } if command_id == id => lines.push(line),
            FromAgent::Result { command_id, outcome } if command_id == id => return (lines, outcome),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_command_id_runs_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut link = agent(dir.path()).await;
    let marker = dir.path().join("m");
    let script = format!("echo x >> {}", marker.display());
    send(&link, "c1", job(&["sh", "-c", &script])).await;
    send(&link, "c1", job(&["sh", "-c", &script])).await;
    let (_, o) = outcome(&mut link, "c1").await;
    assert!(matches!(o, Outcome::Succeeded { .. }), "{o:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\n");
}

#[tokio::test]
async fn an_unacknowledged_result_is_sent_again_on_hello() {
    let dir = tempfile::tempdir().unwrap();
    let mut link = agent(dir.path()).await;
    send(&link, "c1", job(&["true"])).await;
    outcome(&mut link, "c1").await;
    let hello = ToAgent::Hello {
        protocol_version: PROTOCOL_VERSION,
        server_version: "t".into(),
    };
    link.tx.send(hello.clone()).await.unwrap();
    let (_, again) = outcome(&mut link, "c1").await;
    assert!(matches!(again, Outcome::Succeeded { .. }));
    link.tx
        .send(ToAgent::Ack {
            command_id: "c1".into(),
        })
        .await
        .unwrap();
    link.tx.send(hello).await.unwrap();
    send(&link, "c2", job(&["true"])).await;
    // After the ack, hello re-sends nothing: the next result seen is c2's.
    loop {
        match link.rx.recv().await.unwrap() {
            FromAgent::Result { command_id, .. } => {
                assert_eq!(command_id, "c2");
                break;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_job_sees_only_its_own_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut link = agent(dir.path()).await;
    // The test process has CARGO_PKG_NAME set (cargo and nextest set it); the job must not.
    assert!(std::env::var("CARGO_PKG_NAME").is_ok());
    let mut spec = job(&["sh", "-c", "echo token=${CARGO_PKG_NAME:-none} mine=$MINE; pwd"]);
    spec.env.insert("MINE".into(), "yes".into());
    send(&link, "c1", spec).await;
    let (lines, o) = outcome(&mut link, "c1").await;
    assert!(matches!(o, Outcome::Succeeded { .. }));
    assert_eq!(lines[0], "token=none mine=yes");
    assert!(lines[1].ends_with("/work"), "{lines:?}");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut link = agent(dir.path()).await;
    let marker = dir.path().join("late");
    let mut spec = job(&[
        "sh",
        "-c",
        &format!("(sleep 3; touch {}) & sleep 30", marker.display()),
    ]);
    spec.timeout_secs = Some(1);
    send(&link, "c1", spec).await;
    let (_, o) = outcome(&mut link, "c1").await;
    match o {
        Outcome::Failed { code, message, .. } => {
            assert_eq!(code, "timeout");
            assert!(message.contains("timed out after 1s"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!marker.exists(), "a child of the job outlived its timeout");
}

#[tokio::test]
async fn cancel_stops_the_job_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let mut link = agent(dir.path()).await;
    let marker = dir.path().join("late");
    send(
        &link,
        "c1",
        job(&[
            "sh",
            "-c",
            &format!("(sleep 2; touch {}) & sleep 30", marker.display()),
        ]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    link.tx
        .send(ToAgent::Cancel {
            command_id: "c1".into(),
        })
        .await
        .unwrap();
    let (_, o) = outcome(&mut link, "c1").await;
    assert!(matches!(o, Outcome::Cancelled { .. }), "{o:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!marker.exists());
}

#[tokio::test]
async fn a_missing_program_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut link = agent(dir.path()).await;
    send(&link, "c1", job(&["no-such-program-xyz"])).await;
    let (_, o) = outcome(&mut link, "c1").await;
    match o {
        Outcome::Failed { code, message, .. } => {
            assert_eq!(code, "spawn_failed");
            assert!(message.contains("no-such-program-xyz"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
