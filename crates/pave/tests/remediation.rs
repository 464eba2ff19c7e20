//! The remediation loop end to end with the demo service: a deploy that
//! crashes after it became ready is detected, its cause named, rolled back
//! and verified in `auto` mode; a fix applied by hand that does not hold is
//! undone and escalated.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn ok(out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// Waits for the first incident of `env` to reach one of `states`.
fn incident_in(server: &Server, env: &str, states: &[&str], within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let list = server.cli_json(&["incidents", "list", "--env", env, "-o", "json"]);
        if let Some(i) = list.as_array().and_then(|l| l.first()) {
            if states.contains(&i["state"].as_str().unwrap_or_default()) {
                return i.clone();
            }
        }
        assert!(Instant::now() < deadline, "no incident in {states:?}: {list}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn phases(i: &Value) -> Vec<String> {
    i["doc"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_crashing_revision_is_rolled_back_by_itself_and_a_fix_that_does_not_hold_is_undone() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start_with(
        &data,
        None,
        pave_testkit::free_port(),
        &[("PAVE_VERIFY_WINDOW", "4s")],
    );
    let demo = [pave_bin(), "demo"];
    for (env, mode) in [("shop-auto", "auto"), ("shop-manual", "approve")] {
        ok(&server.cli(&["env", "create", env, "--remediation", mode]));
        let mut args = vec![
            "deploy",
            "payments",
            "--env",
            env,
            "--replicas",
            "2",
            "--readiness-http",
            "/healthz",
            "--wait",
            "--",
        ];
        args.extend_from_slice(&demo);
        ok(&server.cli(&args));
        // Serves, becomes ready, then exits every 2 s.
        ok(&server.cli(&[
            "deploy",
            "payments",
            "--env",
            env,
            "--set-env",
            "DEMO_CRASH_AFTER_SECS=2",
            "--wait",
        ]));
    }

    // auto: detected, the cause named, revision 1 back, verified.
    let i = incident_in(
        &server,
        "shop-auto",
        &["resolved", "escalated"],
        Duration::from_secs(40),
    );
    assert_eq!(i["state"], "resolved", "{i:#}");
    assert_eq!(i["kind"], "crash_loop");
    let cause = i["doc"]["rca"]["causes"][0]["cause"].as_str().unwrap();
    assert!(
        cause.contains("revision 2") && cause.contains("env.DEMO_CRASH_AFTER_SECS"),
        "{cause}"
    );
    assert_eq!(i["doc"]["applied"]["type"], "rollback_revision");
    assert_eq!(phases(&i), ["detect", "decide", "act", "verify", "verify"]);
    let w = server.cli_json(&["workloads", "get", "payments", "--env", "shop-auto", "-o", "json"]);
    assert_eq!(
        (w["current_revision"].as_i64(), w["ready"].as_u64()),
        (Some(1), Some(2)),
        "{w}"
    );

    // approve: proposed only; a restart applied by hand keeps crashing → undone, escalated.
    let i = incident_in(&server, "shop-manual", &["open"], Duration::from_secs(20));
    assert!(
        i["doc"]["applied"].is_null(),
        "approve mode applied by itself: {i}"
    );
    let restart = i["doc"]["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["type"] == "restart")
        .expect("a restart proposal");
    let id = i["id"].as_str().unwrap().to_string();
    ok(&server.cli(&["incidents", "apply", &id, "--proposal", &restart.to_string()]));
    let i = incident_in(
        &server,
        "shop-manual",
        &["escalated", "resolved"],
        Duration::from_secs(40),
    );
    assert_eq!(i["state"], "escalated", "{i:#}");
    assert_eq!(i["doc"]["applied"]["rolled_back"], true);
    let last = i["doc"]["timeline"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["message"].as_str().unwrap().contains("did not hold"),
        "{last}"
    );
    let out = server.cli(&["incidents", "get", &id]);
    ok(&out);
    assert!(stdout(&out).contains("verify"), "{}", stdout(&out));

    // No replica outlives the test: the delete queues behind any action still
    // holding the workload (an escalation's rollback).
    for env in ["shop-auto", "shop-manual"] {
        ok(&server.cli(&["workloads", "delete", "payments", "--env", env, "--wait"]));
    }
}

#[test]
fn a_killed_database_server_is_repaired_with_its_data() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start_with(
        &data,
        None,
        pave_testkit::free_port(),
        &[("PAVE_VERIFY_WINDOW", "2s")],
    );
    ok(&server.cli(&["env", "create", "shop", "--remediation", "auto"]));
    ok(&server.cli(&["provision", "postgres", "db", "--env", "shop", "--wait"]));
    let r = server.cli_json(&["resources", "get", "db", "--env", "shop", "-o", "json"]);
    let location = std::path::PathBuf::from(r["location"].as_str().unwrap());
    // The data written before the crash must be there after the repair.
    let marker = location.join("pave-test-marker");
    let pid_file = walk(&location)
        .into_iter()
        .find(|p| p.ends_with("postmaster.pid"))
        .expect("postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(&marker, "kept").unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());

    let i = incident_in(
        &server,
        "shop",
        &["resolved", "escalated"],
        Duration::from_secs(40),
    );
    let fix = server.action(i["doc"]["applied"]["action"].as_str().unwrap_or_default());
    assert_eq!(
        (i["kind"].as_str(), i["state"].as_str()),
        (Some("resource_unhealthy"), Some("resolved")),
        "{i:#}\nthe fix: {}",
        fix["error"]
    );
    assert_eq!(i["doc"]["applied"]["type"], "repair_resource");
    let r = server.cli_json(&["resources", "get", "db", "--env", "shop", "-o", "json"]);
    assert_eq!(
        (r["lifecycle"].as_str(), r["health"].as_str()),
        (Some("ready"), Some("healthy")),
        "{r}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "kept");
    let _ = server.cli(&["env", "delete", "shop", "--wait"]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
