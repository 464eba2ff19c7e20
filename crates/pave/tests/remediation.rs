//! The remediation loop end to end with the demo service: a deploy that
//! crashes after it became ready is detected, its cause named, rolled back
//! and verified in `auto` mode; a fix applied by hand that does not hold is
//! undone and escalated; a replica OOM-killed is given twice the memory by an
//! operator and stays up.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

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

/// Runs the CLI as the holder of `token`.
fn cli_as(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(pave_bin())
        .args(args)
        .env("PAVE_SERVER", &server.url)
        .env("PAVE_TOKEN", token)
        .env("PAVE_CONFIG", server.data_dir.join("cli-config.json"))
        .output()
        .expect("run pave")
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
fn an_oom_killed_replica_gets_twice_the_memory_from_an_operator_and_stays_up() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start_with(
        &data,
        None,
        pave_testkit::free_port(),
        &[("PAVE_VERIFY_WINDOW", "4s")],
    );
    let env = "shop";
    ok(&server.cli(&["env", "create", env, "--remediation", "approve"]));
    ok(&server.cli(&["users", "create", "olga"]));
    ok(&server.cli(&["roles", "bind", "olga", "operator", "--env", env]));
    let olga = server.cli_json(&["tokens", "create", "--user", "olga", "-o", "json"])["token"]
        .as_str()
        .expect("a token")
        .to_string();
    // 40, 80 (over 64: OOM-killed about a second in), then 96 MiB kept: more
    // than the limit, well under twice it.
    let mut args = vec![
        "deploy",
        "payments",
        "--env",
        env,
        "--memory-limit-mb",
        "64",
        "--set-env",
        "DEMO_LEAK_MB_PER_SEC=40",
        "--set-env",
        "DEMO_LEAK_UP_TO_MB=96",
        "--readiness-http",
        "/healthz",
        "--wait",
        "--",
    ];
    args.extend_from_slice(&[pave_bin(), "demo"]);
    ok(&server.cli(&args));

    // approve: proposed only.
    let i = incident_in(&server, env, &["open"], Duration::from_secs(30));
    assert_eq!(i["kind"], "oom_killed", "{i:#}");
    assert!(
        i["doc"]["applied"].is_null(),
        "approve mode applied by itself: {i}"
    );
    let proposals = i["doc"]["proposals"].as_array().unwrap();
    let raise = proposals
        .iter()
        .position(|p| p["type"] == "raise_memory_limit")
        .unwrap_or_else(|| panic!("a raise_memory_limit proposal: {i:#}"));
    let params = &proposals[raise]["params"];
    assert_eq!(
        (params["from"].as_u64(), params["to"].as_u64()),
        (Some(64), Some(128)),
        "{params}"
    );

    // Applied by an operator, as herself; it holds through the window.
    let id = i["id"].as_str().unwrap().to_string();
    ok(&cli_as(
        &server,
        &olga,
        &["incidents", "apply", &id, "--proposal", &raise.to_string()],
    ));
    let i = incident_in(&server, env, &["resolved", "escalated"], Duration::from_secs(40));
    assert_eq!(i["state"], "resolved", "{i:#}");
    assert_eq!(i["doc"]["applied"]["type"], "raise_memory_limit");
    assert_eq!(phases(&i), ["detect", "decide", "act", "verify", "verify"]);
    let w = server.cli_json(&["workloads", "get", "payments", "--env", env, "-o", "json"]);
    let current = w["current_revision"].as_i64().expect("a current revision");
    let serving = w["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"].as_i64() == Some(current))
        .unwrap_or_else(|| panic!("revision {current} in {w}"));
    assert_eq!(
        (current, serving["spec"]["memory_limit_mb"].as_u64()),
        (2, Some(128)),
        "{w}"
    );
    let a = server.action(i["doc"]["applied"]["action"].as_str().unwrap_or_default());
    assert_eq!(a["actor"], "olga", "{a}");

    // No replica outlives the test.
    ok(&server.cli(&["workloads", "delete", "payments", "--env", env, "--wait"]));
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

/// The incident of `env` other than `skip`, once it is in one of `states`.
fn newest_incident(server: &Server, env: &str, kind: &str, skip: &[String], states: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = server.cli_json(&["incidents", "list", "--env", env, "-o", "json"]);
        let found = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["kind"] == kind && !skip.iter().any(|s| i["id"] == s.as_str()));
        if let Some(i) = found.filter(|i| states.contains(&i["state"].as_str().unwrap_or_default())) {
            return i.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} incident in {states:?}: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn proposal(i: &Value, kind: &str) -> String {
    i["doc"]["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} proposal: {i:#}"))
        .to_string()
}

fn replicas(server: &Server, env: &str) -> (u64, u64) {
    let w = server.cli_json(&["workloads", "get", "payments", "--env", env, "-o", "json"]);
    (
        w["desired"].as_u64().unwrap_or(0),
        w["ready"].as_u64().unwrap_or(0),
    )
}

#[test]
fn failing_readiness_gets_temporary_capacity_and_a_deleted_secret_comes_back() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start_with(
        &data,
        None,
        pave_testkit::free_port(),
        &[("PAVE_VERIFY_WINDOW", "2s")],
    );
    let env = "shop";
    ok(&server.cli(&["env", "create", env, "--remediation", "approve"]));
    let mut set = std::process::Command::new(pave_bin())
        .args(["secrets", "set", "api-token", "--env", env])
        .env("PAVE_SERVER", &server.url)
        .env("PAVE_TOKEN", server.token())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("pave secrets set");
    std::io::Write::write_all(&mut set.stdin.take().unwrap(), b"tok-8c1f2e").unwrap();
    assert!(set.wait().unwrap().success());
    let unready = dir.path().join("unready");
    let unready_var = format!("DEMO_UNREADY_FILE={}", unready.display());
    let demo = [pave_bin(), "demo"];
    let mut args = vec![
        "deploy",
        "payments",
        "--env",
        env,
        "--replicas",
        "2",
        "--readiness-http",
        "/healthz",
        "--set-env",
        &unready_var,
        "--set-env",
        "API_TOKEN=${secret.api-token}",
        "--wait",
        "--",
    ];
    args.extend_from_slice(&demo);
    ok(&server.cli(&args));

    // Replica 1 runs but fails its probe: a temporary scale-up is proposed.
    std::fs::write(format!("{}.1", unready.display()), b"").unwrap();
    let first = newest_incident(&server, env, "readiness_failing", &[], &["open"]);
    let scale = &first["doc"]["proposals"][proposal(&first, "scale").parse::<usize>().unwrap()];
    assert_eq!(
        (scale["params"]["from"].as_u64(), scale["params"]["to"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(scale["ttl_secs"], 1800, "{scale}");
    let id1 = first["id"].as_str().unwrap().to_string();
    ok(&server.cli(&[
        "incidents",
        "apply",
        &id1,
        "--proposal",
        &proposal(&first, "scale"),
        "--ttl",
        "3s",
    ]));
    // Capacity back (2 ready of 3) → resolved; at the end of its time it reverts.
    let i = newest_incident(&server, env, "readiness_failing", &[], &["resolved", "escalated"]);
    assert_eq!(i["state"], "resolved", "{i:#}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let i = loop {
        let i = server.cli_json(&["incidents", "get", &id1, "-o", "json"]);
        if i["doc"]["applied"]["reverted"] == true && replicas(&server, env).0 == 2 {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "not reverted: {i:#}\n{}\n{}",
            server.cli_json(&["workloads", "get", "payments", "--env", env, "-o", "json"]),
            server.cli_json(&["actions", "list", "-o", "json"])
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(phases(&i).contains(&"revert".to_string()), "{i:#}");
    let out = server.cli(&["incidents", "keep", &id1]);
    assert_ne!(out.status.code(), Some(0), "kept a fix already undone");
    assert!(stderr(&out).contains("already undone"), "{}", stderr(&out));

    // Still failing: a new incident; this time the scale-up is kept.
    let second = newest_incident(
        &server,
        env,
        "readiness_failing",
        std::slice::from_ref(&id1),
        &["open"],
    );
    let id2 = second["id"].as_str().unwrap().to_string();
    ok(&server.cli(&[
        "incidents",
        "apply",
        &id2,
        "--proposal",
        &proposal(&second, "scale"),
        "--ttl",
        "3s",
    ]));
    ok(&server.cli(&["incidents", "keep", &id2]));
    newest_incident(
        &server,
        env,
        "readiness_failing",
        std::slice::from_ref(&id1),
        &["resolved"],
    );
    std::thread::sleep(Duration::from_secs(4));
    let i = server.cli_json(&["incidents", "get", &id2, "-o", "json"]);
    assert_eq!(
        (
            i["doc"]["applied"]["kept"].clone(),
            i["doc"]["applied"]["reverted"].clone()
        ),
        (Value::Bool(true), Value::Null),
        "{i:#}"
    );
    assert_eq!(replicas(&server, env).0, 3);

    // Healthy again; then the secret its revision refers to is deleted.
    std::fs::remove_file(format!("{}.1", unready.display())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replicas(&server, env) != (3, 3) {
        assert!(Instant::now() < deadline, "not ready again");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&server.cli(&["secrets", "delete", "api-token", "--env", env]));
    let i = newest_incident(&server, env, "missing_reference", &[], &["open"]);
    assert!(
        i["doc"]["summary"].as_str().unwrap().contains("secret api-token"),
        "{i:#}"
    );
    let text = i.to_string();
    assert!(
        !text.contains("tok-8c1f2e"),
        "a secret value in an incident: {text}"
    );
    let id3 = i["id"].as_str().unwrap().to_string();
    ok(&server.cli(&[
        "incidents",
        "apply",
        &id3,
        "--proposal",
        &proposal(&i, "restore_reference"),
    ]));
    let i = newest_incident(&server, env, "missing_reference", &[], &["resolved", "escalated"]);
    assert_eq!(i["state"], "resolved", "{i:#}");
    let listed = server.cli_json(&["secrets", "list", "--env", env, "-o", "json"]);
    assert!(listed.to_string().contains("api-token"), "{listed}");
    // A restart resolves the restored secret: the replicas get its value back.
    ok(&server.cli(&["restart", "payments", "--env", env, "--wait"]));
    ok(&server.cli(&["workloads", "delete", "payments", "--env", env, "--wait"]));
}
