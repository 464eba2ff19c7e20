//! Governance end to end, as the acceptance runs it: three people
//! with roles, the default policy pack, an approval with an amendment, a
//! denial with the Rego reason, refused tokens, the audit chain broken by
//! hand, and a canary secret that appears nowhere.

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::*;

/// Runs the CLI as the holder of `token`.
fn cli_as(server: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(pave_bin())
        .args(args)
        .env("PAVE_SERVER", &server.url)
        .env("PAVE_TOKEN", token)
        .env("PAVE_CONFIG", server.data_dir.join("cli-config.json"))
        .output()
        .expect("run pave")
}

fn token_of(server: &Server, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["tokens", "create", "--user", user, "-o", "json"];
    args.extend_from_slice(extra);
    server.cli_json(&args)["token"]
        .as_str()
        .expect("a token")
        .to_string()
}

/// `pave secrets set`, the value through stdin as a person would.
fn set_secret(server: &Server, env: &str, name: &str, value: &str) {
    let mut set = Command::new(pave_bin())
        .args(["secrets", "set", name, "--env", env])
        .env("PAVE_SERVER", &server.url)
        .env("PAVE_TOKEN", server.token())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("pave secrets set");
    std::io::Write::write_all(&mut set.stdin.take().expect("stdin"), value.as_bytes()).expect("write");
    assert!(set.wait().expect("wait").success());
}

fn sqlite(data: &std::path::Path, sql: &str) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect('{}'); c.execute(\"{sql}\"); c.commit()",
            data.join("pave.db").display()
        ))
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn three_people_a_policy_an_approval_and_a_canary() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start(&data, None);
    ok(&server.cli(&["env", "create", "payments-staging", "--label", "tier=staging"]));
    ok(&server.cli(&["env", "create", "payments-prod", "--label", "tier=production"]));
    ok(&server.cli(&["env", "create", "ledger-prod", "--label", "regulated=true"]));
    for u in ["alice", "bob", "carol"] {
        ok(&server.cli(&["users", "create", u]));
    }
    for env in ["payments-staging", "payments-prod", "ledger-prod"] {
        ok(&server.cli(&["roles", "bind", "alice", "developer", "--env", env]));
        ok(&server.cli(&["roles", "bind", "bob", "operator", "--env", env]));
    }
    ok(&server.cli(&["roles", "bind", "carol", "viewer", "--env", "payments-prod"]));
    let (alice, bob, carol) = (
        token_of(&server, "alice", &[]),
        token_of(&server, "bob", &[]),
        token_of(&server, "carol", &[]),
    );

    // A canary secret, used by the workload that goes to production.
    let canary = "canary-4e1d9a7c3b2f";
    set_secret(&server, "payments-prod", "api-key", canary);
    set_secret(&server, "payments-staging", "api-key", canary);
    // A replica that prints it and fails at start: the failed rollout quotes
    // its output in the action's error, redacted.
    let out = cli_as(
        &server,
        &alice,
        &[
            "deploy",
            "broken",
            "--env",
            "payments-staging",
            "--set-env",
            "API_KEY=${secret.api-key}",
            // It never listens, so it can never be ready, however fast it exits.
            "--readiness-tcp",
            "--ready-timeout",
            "3s",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo key=$API_KEY; exit 1",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("key=***"), "{}", stderr(&out));

    // As alice: a deploy to production waits for approval (exit 11).
    let out = cli_as(
        &server,
        &alice,
        &[
            "deploy",
            "payments",
            "--env",
            "payments-prod",
            "--replicas",
            "2",
            "--set-env",
            "API_KEY=${secret.api-key}",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo key=$API_KEY; echo err=$API_KEY >&2; exec sleep 600",
        ],
    );
    assert_eq!(out.status.code(), Some(11), "{}{}", stdout(&out), stderr(&out));
    let pending = server.cli_json(&["approvals", "list", "-o", "json"]);
    let id = pending[0]["action_id"]
        .as_str()
        .expect("a pending approval")
        .to_string();
    assert!(pending[0]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("needs approval by an operator"));
    // alice may not approve her own request.
    let out = cli_as(&server, &alice, &["approvals", "approve", &id]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot decide on it"), "{}", stderr(&out));
    // bob approves with an amendment: 3 replicas run.
    let amend = dir.path().join("amend.yaml");
    std::fs::write(&amend, "replicas: 3\n").unwrap();
    let out = cli_as(
        &server,
        &bob,
        &[
            "approvals",
            "approve",
            &id,
            "--amend",
            amend.to_str().unwrap(),
            "--comment",
            "launch",
            "--wait",
        ],
    );
    ok(&out);
    let w = server.cli_json(&[
        "workloads",
        "get",
        "payments",
        "--env",
        "payments-prod",
        "-o",
        "json",
    ]);
    assert_eq!(
        (w["ready"].as_u64(), w["desired"].as_u64()),
        (Some(3), Some(3)),
        "{w}"
    );
    let a = server.action(&id);
    assert_eq!(a["input"]["replicas"], 3, "the amended input is what ran: {a}");
    let rec = server.cli_json(&["approvals", "list", "--all", "-o", "json"]);
    assert_eq!(rec[0]["original_input"]["replicas"], 2);
    assert_eq!(rec[0]["decided_by"], "bob");

    // The default pack denies exec in a regulated environment, with its reason.
    let out = cli_as(
        &server,
        &alice,
        &["run", "--env", "ledger-prod", "--wait", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(0), "a job is not exec: {}", stderr(&out));
    ok(&cli_as(
        &server,
        &alice,
        &[
            "deploy",
            "ledger",
            "--env",
            "ledger-prod",
            "--wait",
            "--",
            "sleep",
            "600",
        ],
    ));
    let out = cli_as(
        &server,
        &alice,
        &["exec", "ledger", "--env", "ledger-prod", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exec is not allowed in regulated environment ledger-prod"),
        "{}",
        stderr(&out)
    );

    // carol reads production but may not change it; tokens that are not valid get 401.
    ok(&cli_as(&server, &carol, &["env", "get", "payments-prod"]));
    for args in [
        vec!["run", "--env", "payments-prod", "--", "true"],
        vec!["deploy", "payments", "--env", "payments-prod", "--set-env", "X=1"],
    ] {
        let out = cli_as(&server, &carol, &args);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    }
    assert_eq!(http_status(server.port, "/api/v1/actions", None), Some(401));
    let short = token_of(&server, "carol", &["--expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(
        http_status(server.port, "/api/v1/environments", Some(&short)),
        Some(401)
    );
    let tokens = server.cli_json(&["tokens", "list", "-o", "json"]);
    let carol_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "carol" && t["expires_at"].is_null())
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_string();
    ok(&server.cli(&["tokens", "revoke", &carol_id]));
    assert_eq!(
        http_status(server.port, "/api/v1/environments", Some(&carol)),
        Some(401)
    );

    // The canary: injected (the replica printed it; its log shows ***), found nowhere.
    let logs = server.cli(&["logs", "payments", "--env", "payments-prod"]);
    ok(&logs);
    assert!(stdout(&logs).contains("key=***"), "{}", stdout(&logs));
    let mut seen = stderr(&out);
    for args in [
        vec!["actions", "list", "-o", "json"],
        vec!["actions", "get", &id, "-o", "json"],
        vec!["audit", "export"],
        vec!["secrets", "list", "--env", "payments-prod", "-o", "json"],
        vec!["env", "status", "payments-prod", "-o", "json"],
        vec!["logs", "payments", "--env", "payments-prod"],
    ] {
        let out = server.cli(&args);
        seen.push_str(&stdout(&out));
        seen.push_str(&stderr(&out));
    }
    seen.push_str(&std::fs::read_to_string(data.with_extension("log")).unwrap_or_default());
    assert!(!seen.contains(canary), "the canary leaked");
    assert!(seen.contains("secret.use"), "its use was not audited");

    // The audit chain verifies, then fails at the row edited by hand.
    ok(&server.cli(&["audit", "verify"]));
    sqlite(
        &data,
        "UPDATE audit_events SET summary = 'nothing happened' WHERE seq = 7",
    );
    let out = server.cli(&["audit", "verify"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("audit event 7"), "{}", stdout(&out));

    // No replica outlives the test: production deletes need bob's approval too.
    let _ = server.cli(&["workloads", "delete", "ledger", "--env", "ledger-prod", "--wait"]);
    let _ = server.cli(&[
        "workloads",
        "delete",
        "broken",
        "--env",
        "payments-staging",
        "--wait",
    ]);
    let out = server.cli(&[
        "workloads",
        "delete",
        "payments",
        "--env",
        "payments-prod",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    let pending = server.cli_json(&["approvals", "list", "-o", "json"]);
    let id = pending[0]["action_id"]
        .as_str()
        .expect("the delete waits")
        .to_string();
    ok(&cli_as(&server, &bob, &["approvals", "approve", &id, "--wait"]));
}

#[test]
fn a_policy_that_does_not_compile_is_refused_and_the_set_in_force_stays() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start(&data, None);
    let bad = dir.path().join("broken.rego");
    std::fs::write(
        &bad,
        "package pave\nimport rego.v1\n\ndeny contains msg if {\n  msg := \n}\n",
    )
    .unwrap();
    let out = server.cli(&["policy", "apply", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("broken") && stderr(&out).contains("line"),
        "{}",
        stderr(&out)
    );
    let good = dir.path().join("no_friday.rego");
    std::fs::write(
        &good,
        "package pave\nimport rego.v1\n\ndeny contains \"no deploys of web\" if {\n  input.action.kind == \"deploy\"\n  input.action.input.name == \"web\"\n}\n",
    )
    .unwrap();
    ok(&server.cli(&["policy", "apply", good.to_str().unwrap()]));
    let list = server.cli_json(&["policy", "list", "-o", "json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"api/no-friday") && !names.iter().any(|n| n.contains("broken")),
        "{names:?}"
    );
    let eval = server.cli_json(&[
        "policy",
        "eval",
        "deploy",
        "--set",
        "name=web",
        "--set",
        "command=[\"true\"]",
        "-o",
        "json",
    ]);
    assert_eq!(eval["decision"]["decision"], "deny", "{eval}");
    let v: Value = eval["decision"]["reasons"][0].clone();
    assert_eq!(v, "no deploys of web");
    ok(&server.cli(&["policy", "test"]));
}

#[test]
fn rotating_the_master_key_keeps_every_secret_readable_across_a_restart() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let mut server = Server::start(&data, None);
    set_secret(&server, "local", "db-pass", "s3cret-value\n");
    let uses_it = |server: &Server| {
        server.cli(&[
            "run",
            "--wait",
            "--env-var",
            "P=${secret.db-pass}",
            "--",
            "sh",
            "-c",
            "test \"$P\" = s3cret-value",
        ])
    };
    ok(&uses_it(&server));
    let before = std::fs::read_to_string(data.join("master.key")).unwrap();
    let out = server.cli(&["secrets", "rotate-master-key"]);
    ok(&out);
    assert!(
        stdout(&out).contains("1 secret(s) re-wrapped"),
        "{}",
        stdout(&out)
    );
    let after = std::fs::read_to_string(data.join("master.key")).unwrap();
    assert_ne!(before, after);
    assert!(!data.join("master.key.next").exists());
    ok(&uses_it(&server));
    server.kill9();
    let server = Server::start(&data, None);
    ok(&uses_it(&server));
    let listed = server.cli_json(&["secrets", "list", "--env", "local", "-o", "json"]);
    assert_eq!(
        listed[0]["version"], 1,
        "a rotation is not a new version: {listed}"
    );
}
