//! End-to-end: the real `pave serve` process and the real CLI, as a user runs them.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn id_of(v: &serde_json::Value) -> String {
    v["id"].as_str().expect("action id").to_string()
}

#[test]
fn the_core_walkthrough_works_as_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("pave-data"), None);

    let ok = server.cli(&[
        "run",
        "--wait",
        "--",
        "sh",
        "-c",
        "echo hello; sleep 1; echo done",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(stdout(&ok), "hello\ndone\n");

    let bad = server.cli(&["run", "--wait", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(bad.status.code(), Some(3));
    let err = stderr(&bad);
    assert!(
        err.contains("oops") && err.contains("exited with code 3"),
        "{err}"
    );

    let list = server.cli_json(&["actions", "list", "-o", "json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let failed = list
        .iter()
        .find(|a| a["state"] == "failed")
        .expect("the failed action");
    assert_eq!(failed["steps"][0]["state"], "failed");
    assert_eq!(failed["steps"][0]["output"]["exit_code"], 3);
    assert!(list
        .iter()
        .any(|a| a["state"] == "succeeded" && a["steps"][0]["state"] == "succeeded"));

    let retry = server.cli(&["actions", "retry", &id_of(failed), "--wait"]);
    assert_eq!(retry.status.code(), Some(3));
    // Only the new attempt's output is shown, not the first one's again.
    assert_eq!(
        stderr(&retry).lines().filter(|l| *l == "oops").count(),
        1,
        "{}",
        stderr(&retry)
    );
    let again = server.action(&id_of(failed));
    assert_eq!(again["attempt"], 2);
    assert_eq!(again["steps"][0]["attempt"], 2);

    let verify = server.cli(&["audit", "verify"]);
    assert_eq!(verify.status.code(), Some(0));
    assert!(stdout(&verify).starts_with("OK"), "{}", stdout(&verify));

    assert_eq!(http_status(server.port, "/api/v1/actions", None), Some(401));
    assert_eq!(
        http_status(server.port, "/api/v1/actions", Some("pave_not_a_token")),
        Some(401)
    );
    assert_eq!(http_status(server.port, "/healthz", None), Some(200));

    // Without --wait, -o json prints the created action at once.
    let queued = server.cli_json(&["run", "-o", "json", "--", "true"]);
    assert!(queued["id"].is_string());
    assert_eq!(queued["state"], "queued");
}

/// Kills the server mid-job and checks the job is neither lost nor run twice.
fn kill9_mid_job(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pave-data");
    let marker = dir.path().join("starts");
    let mut server = Server::start(&data, database_url);
    let script = format!("echo started >> {}; sleep 30", marker.display());
    let a = server.cli_json(&["run", "-o", "json", "--", "sh", "-c", &script]);
    let id = id_of(&a);
    server.wait_state(&id, &["running"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();

    let server = Server::start(&data, database_url);
    let a = server.wait_state(&id, &["failed"]);
    assert_eq!(a["steps"][0]["state"], "interrupted");
    assert_eq!(a["error"]["code"], "interrupted");
    assert!(a["error"]["message"]
        .as_str()
        .unwrap()
        .contains("outcome is unknown"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().lines().count(),
        1,
        "the job ran twice"
    );
    // Its process did not outlive the control plane.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &script])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "the job's process survived");

    // The user can run it again on purpose.
    let retry = server.cli(&["actions", "retry", &id]);
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    server.wait_state(&id, &["running"]);
    let cancel = server.cli(&["actions", "cancel", &id, "--wait"]);
    assert_eq!(cancel.status.code(), Some(7), "{}", stderr(&cancel));
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 2);
    assert_eq!(server.cli(&["audit", "verify"]).status.code(), Some(0));
}

#[test]
fn a_job_survives_kill_9_of_the_server_on_sqlite() {
    kill9_mid_job(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_survives_kill_9_of_the_server_on_postgres() {
    let pg = pave_testkit::TestPostgres::new().await;
    let url = pg.url.clone();
    tokio::task::spawn_blocking(move || kill9_mid_job(Some(&url)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_on_one_postgres_never_run_a_job_twice() {
    let pg = pave_testkit::TestPostgres::new().await;
    let url = pg.url.clone();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let a = Server::start(&dir.path().join("a"), Some(&url));
        let b = Server::start(&dir.path().join("b"), Some(&url));
        let log = dir.path().join("runs");
        let n = 30;
        let mut ids = Vec::new();
        for i in 0..n {
            let via = if i % 2 == 0 { &a } else { &b };
            let script = format!("echo job-{i} >> {}", log.display());
            ids.push(id_of(
                &via.cli_json(&["run", "-o", "json", "--", "sh", "-c", &script]),
            ));
        }
        for id in &ids {
            let done = a.wait_state(id, &["succeeded", "failed"]);
            assert_eq!(done["state"], "succeeded", "{done}");
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        let before = lines.len();
        lines.dedup();
        assert_eq!(before, n, "some job ran twice or not at all: {text}");
        assert_eq!(lines.len(), n);
        assert_eq!(b.cli(&["audit", "verify"]).status.code(), Some(0));
    })
    .await
    .unwrap();
}

#[test]
fn sigterm_lets_the_running_step_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pave-data");
    let mut server = Server::start(&data, None);
    let a = server.cli_json(&["run", "-o", "json", "--", "sh", "-c", "sleep 1; echo finished"]);
    let id = id_of(&a);
    server.wait_state(&id, &["running"]);
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let server = Server::start(&data, None);
    let a = server.action(&id);
    assert_eq!(a["state"], "succeeded", "{a}");
    let logs = server.cli(&["actions", "logs", &id]);
    assert_eq!(stdout(&logs), "finished\n");
}

#[test]
fn rollback_runs_the_undo_command_and_refuses_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("pave-data"), None);
    let file = dir.path().join("made-by-job");
    let f = file.display().to_string();
    let out = server.cli(&[
        "run",
        "--wait",
        "--undo",
        &format!("rm {f}"),
        "-o",
        "json",
        "--",
        "touch",
        &f,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let id = id_of(&serde_json::from_slice(&out.stdout).unwrap());
    assert!(file.exists());
    let rb = server.cli(&["actions", "rollback", &id, "--wait"]);
    assert_eq!(rb.status.code(), Some(0), "{}", stderr(&rb));
    assert!(!file.exists(), "the undo command did not run");
    let a = server.action(&id);
    assert_eq!(a["state"], "rolled_back");
    assert_eq!(a["steps"][0]["state"], "compensated");

    // An undo that fails leaves the action failed with `rollback_failed`; a
    // retry then retries the rollback, not the command.
    let marker = dir.path().join("runs");
    let m = marker.display().to_string();
    let out = server.cli(&[
        "run",
        "--wait",
        "--undo",
        "exit 4",
        "-o",
        "json",
        "--",
        "sh",
        "-c",
        &format!("echo x >> {m}"),
    ]);
    let id = id_of(&serde_json::from_slice(&out.stdout).unwrap());
    let rb = server.cli(&["actions", "rollback", &id, "--wait", "-o", "json"]);
    assert_eq!(rb.status.code(), Some(3));
    let a: serde_json::Value = serde_json::from_slice(&rb.stdout).unwrap();
    assert_eq!(a["error"]["code"], "rollback_failed", "{a}");
    assert_eq!(
        a["steps"][0]["output"]["exit_code"], 0,
        "the undo's output replaced the step's"
    );
    let again = server.cli(&["actions", "retry", &id, "--wait", "-o", "json"]);
    assert_eq!(again.status.code(), Some(3));
    let a: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(a["error"]["code"], "rollback_failed");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "x\n",
        "retrying a failed rollback re-ran the command"
    );

    let plain = server.cli_json(&["run", "--wait", "-o", "json", "--", "true"]);
    let rb = server.cli(&["actions", "rollback", &id_of(&plain)]);
    assert_eq!(rb.status.code(), Some(9));
    assert!(stderr(&rb).contains("nothing to roll back"), "{}", stderr(&rb));
}

#[test]
fn the_cli_reports_an_unreachable_server_and_a_missing_token_with_their_own_codes() {
    let port = pave_testkit::free_port();
    let out = std::process::Command::new(pave_bin())
        .args(["actions", "list"])
        .env("PAVE_SERVER", format!("http://127.0.0.1:{port}"))
        .env("PAVE_TOKEN", "x")
        .env("PAVE_CONFIG", "/nonexistent/pave.json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("cannot reach"));
    let out = std::process::Command::new(pave_bin())
        .args(["actions", "list"])
        .env_remove("PAVE_TOKEN")
        .env("PAVE_CONFIG", "/nonexistent/pave.json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let out = std::process::Command::new(pave_bin())
        .args(["actions", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
