//! Workloads end to end: the real demo service deployed on the local target by
//! the real server, rolled out revision by revision, scaled, rolled back,
//! exec'd into, and deleted (no replica outlives the test).

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::*;

const ENV: &str = "payments-staging";

fn demo_bin() -> PathBuf {
    let p = std::path::Path::new(pave_bin()).with_file_name("pave-demo");
    assert!(
        p.is_file(),
        "{} is missing: build the demo service first (cargo build -p pave-demo)",
        p.display()
    );
    p
}

/// Deletes the workload when the test ends, passed or not, so that no shim outlives it.
struct Cleanup<'a>(&'a Server, &'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .cli(&["workloads", "delete", self.1, "--env", ENV, "--wait"]);
    }
}

fn workload(server: &Server, name: &str) -> Value {
    server.cli_json(&["workloads", "get", name, "--env", ENV, "-o", "json"])
}

fn deploy(server: &Server, args: &[&str]) -> std::process::Output {
    let mut all = vec!["deploy", "payments", "--env", ENV, "--wait"];
    all.extend_from_slice(args);
    server.cli(&all)
}

fn ports_of(w: &Value, revision: i64) -> Vec<u16> {
    w["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["revision"] == revision)
        .map(|r| r["port"].as_u64().unwrap() as u16)
        .collect()
}

#[test]
fn a_workload_is_deployed_scaled_rolled_back_and_a_bad_revision_does_not_replace_a_good_one() {
    let demo = demo_bin();
    let demo = demo.to_str().unwrap();
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start(&data, None);
    assert_eq!(server.cli(&["env", "create", ENV]).status.code(), Some(0));
    let _cleanup = Cleanup(&server, "payments");

    // Revision 1: two ready replicas answering /healthz.
    let out = deploy(
        &server,
        &["--replicas", "2", "--readiness-http", "/healthz", "--", demo],
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "payments");
    assert_eq!(w["current_revision"], 1, "{w}");
    assert_eq!(
        (w["ready"].as_u64(), w["desired"].as_u64()),
        (Some(2), Some(2)),
        "{w}"
    );
    let ports = ports_of(&w, 1);
    assert_eq!(ports.len(), 2);
    for p in &ports {
        assert_eq!(
            http_status(*p, "/healthz", None),
            Some(200),
            "replica on port {p}"
        );
    }

    // Revision 2: the same command with one more variable; revision 1 is gone.
    let out = deploy(&server, &["--set-env", "FEATURE_X=1"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "payments");
    assert_eq!(w["current_revision"], 2, "{w}");
    assert_eq!(w["ready"], 2, "{w}");
    assert!(ports_of(&w, 1).is_empty(), "revision 1 still runs: {w}");
    assert_eq!(w["revisions"][1]["spec"]["env"]["FEATURE_X"], "1");
    for p in &ports {
        assert_ne!(
            http_status(*p, "/healthz", None),
            Some(200),
            "revision 1 still answers on {p}"
        );
    }

    // A scale makes no revision (as on Kubernetes): revision 2, three replicas.
    let out = server.cli(&["scale", "payments", "--env", ENV, "--replicas", "3", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "payments");
    assert_eq!(
        (w["current_revision"].as_i64(), w["ready"].as_u64()),
        (Some(2), Some(3)),
        "{w}"
    );
    assert_eq!(w["revisions"].as_array().map(Vec::len), Some(2), "{w}");

    // Rollback makes revision 1 current again, at the current replica count.
    let out = server.cli(&["rollback", "payments", "--env", ENV, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "payments");
    assert_eq!(w["current_revision"], 1, "{w}");
    assert_eq!(w["revisions"].as_array().map(Vec::len), Some(2), "{w}");
    assert_eq!(w["ready"], 3, "{w}");
    assert!(ports_of(&w, 2).is_empty(), "revision 2 still runs: {w}");
    let serving = ports_of(&w, 1);
    assert_eq!(serving.len(), 3, "{w}");
    // The next deploy starts from what serves: revision 1's spec, three replicas.
    // A revision that never becomes ready fails its rollout and leaves revision 1 serving.
    let out = deploy(&server, &["--command", "false", "--ready-timeout", "3s"]);
    assert_eq!(out.status.code(), Some(3), "{}{}", stdout(&out), stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("revision 3 not ready after 3s"), "{text}");
    assert!(text.contains("revision 1 is still current and serving"), "{text}");
    let w = workload(&server, "payments");
    assert_eq!(w["current_revision"], 1, "{w}");
    assert_eq!(w["revisions"][2]["spec"]["replicas"], 3, "{w}");
    assert!(ports_of(&w, 3).is_empty(), "revision 3 still runs: {w}");
    assert_eq!(ports_of(&w, 1), serving);
    for p in &serving {
        assert_eq!(
            http_status(*p, "/healthz", None),
            Some(200),
            "replica on port {p}"
        );
    }
    // Undoing the rollback brings revision 2 back, with the replicas it ran.
    let actions = server.cli_json(&["actions", "list", "--kind", "rollback", "-o", "json"]);
    let id = actions[0]["id"]
        .as_str()
        .expect("the rollback action")
        .to_string();
    let out = server.cli(&["actions", "rollback", &id, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "payments");
    assert_eq!(
        (w["current_revision"].as_i64(), w["ready"].as_u64()),
        (Some(2), Some(3)),
        "{w}"
    );
    let out = server.cli(&["rollback", "payments", "--env", ENV, "--to", "1", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "payments");
    assert_eq!(w["current_revision"], 1, "{w}");
    let old_pids: Vec<Value> = w["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].clone())
        .collect();

    // A restart replaces every replica, rolling: a new revision of the same spec.
    let out = server.cli(&["restart", "payments", "--env", ENV, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "payments");
    assert_eq!(
        (w["current_revision"].as_i64(), w["ready"].as_u64()),
        (Some(4), Some(3)),
        "{w}"
    );
    let mut expected = w["revisions"][0]["spec"].clone();
    expected["replicas"] = serde_json::json!(3);
    assert_eq!(w["revisions"][3]["spec"], expected);
    assert!(
        w["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !old_pids.contains(&r["pid"])),
        "{w}"
    );
    let serving = ports_of(&w, 4);

    // exec runs in a replica's environment and exits with the command's code.
    let out = server.cli(&["exec", "payments", "--env", ENV, "--", "sh", "-c", "echo $PORT"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let port: u16 = stdout(&out).trim().parse().expect("exec printed $PORT");
    assert!(serving.contains(&port), "{port} not in {serving:?}");
    let out = server.cli(&["exec", "payments", "--env", ENV, "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));

    // env status shows the workload with each replica's port.
    let status = server.cli_json(&["env", "status", ENV, "-o", "json"]);
    let replicas = status["workloads"][0]["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 3, "{status}");
    assert!(replicas.iter().all(|r| r["port"].is_u64()));

    // Deleting stops every replica.
    let out = server.cli(&["workloads", "delete", "payments", "--env", ENV, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for p in &serving {
        assert_ne!(
            http_status(*p, "/healthz", None),
            Some(200),
            "a replica outlived its workload on {p}"
        );
    }
    let list = server.cli_json(&["workloads", "list", "--env", ENV, "-o", "json"]);
    assert_eq!(list, serde_json::json!([]));
}

/// The plaintext of a resource's password, read the way only the server can.
fn password(data: &std::path::Path, name: &str) -> String {
    let key = std::fs::read_to_string(data.join("master.key")).unwrap();
    let key = pave_core::vault::MasterKey::from_hex(&key).unwrap();
    let sealed = raw_db(
        data,
        &format!("select sealed from secrets where env='{ENV}' and name='resource/{name}/password'"),
    );
    // repr of [('{...}',)]
    let json = sealed.trim().trim_start_matches("[('").trim_end_matches("',)]");
    let sealed: pave_core::vault::Sealed = serde_json::from_str(json).unwrap();
    String::from_utf8(key.open(&sealed).unwrap()).unwrap()
}

/// Rows of the server's SQLite database, as text.
fn raw_db(data: &std::path::Path, sql: &str) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; print(repr(sqlite3.connect('{}').execute(\"{sql}\").fetchall()))",
            data.join("pave.db").display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn resource_references_resolve_at_dispatch_and_rolling_back_a_deploy_restores_the_previous_revision() {
    let demo = demo_bin();
    let demo = demo.to_str().unwrap();
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start(&data, None);
    assert_eq!(server.cli(&["env", "create", ENV]).status.code(), Some(0));
    let _cleanup = Cleanup(&server, "api");
    let out = server.cli(&["provision", "postgres", "db", "--env", ENV, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cleanup_db = || {
        let _ = server.cli(&["resources", "delete", "db", "--env", ENV, "--wait"]);
    };

    // The demo's /healthz runs `SELECT 1` on $DATABASE_URL: ready means resolved.
    let url = "DATABASE_URL=postgresql://${resource.db.user}:${resource.db.password}@127.0.0.1:${resource.db.port}/${resource.db.database}";
    let out = server.cli(&[
        "deploy",
        "api",
        "--env",
        ENV,
        "--wait",
        "--readiness-http",
        "/healthz",
        "--set-env",
        url,
        "--",
        demo,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "api");
    assert_eq!(
        (w["current_revision"].as_i64(), w["ready"].as_u64()),
        (Some(1), Some(1)),
        "{w}"
    );
    assert_eq!(
        w["revisions"][0]["spec"]["env"]["DATABASE_URL"],
        url.trim_start_matches("DATABASE_URL="),
        "the revision stores the template"
    );
    let stored =
        raw_db(&data, "select spec, output from steps") + &raw_db(&data, "select spec from revisions");
    assert!(stored.contains("${resource.db.password}"), "{stored}");
    let password = password(&data, "db");
    assert!(password.len() >= 16);
    let everything = stored
        + &raw_db(&data, "select line from action_logs")
        + &raw_db(&data, "select details from audit_events");
    assert!(
        !everything.contains(&password),
        "the resolved password was stored"
    );

    // Revision 2, then rolling back its action brings revision 1 back.
    let out = server.cli(&[
        "deploy",
        "api",
        "--env",
        ENV,
        "--wait",
        "--set-env",
        "FEATURE_Y=1",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let action: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(workload(&server, "api")["current_revision"], 2);
    let out = server.cli(&["actions", "rollback", action["id"].as_str().unwrap(), "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "api");
    assert_eq!(w["current_revision"], 1, "{w}");
    let replicas = w["replicas"].as_array().unwrap();
    assert!(
        replicas.iter().all(|r| r["revision"] == 1) && !replicas.is_empty(),
        "{w}"
    );
    let port = replicas[0]["port"].as_u64().unwrap() as u16;
    assert_eq!(http_status(port, "/healthz", None), Some(200));

    // Its output is there to read.
    let out = server.cli(&["logs", "api", "--env", ENV]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    drop(_cleanup);
    cleanup_db();
}

/// With one revision that ever served, a rollback has nothing earlier to go
/// to: refused. After a deploy that failed, it makes the revision that
/// serves the only one again (what the failed rollout left goes) instead.
#[test]
fn a_rollback_after_the_only_newer_deploy_failed_keeps_what_serves() {
    let demo = demo_bin();
    let demo = demo.to_str().unwrap();
    let dir = tempdir();
    let server = Server::start(&dir.path().join("pave-data"), None);
    assert_eq!(server.cli(&["env", "create", ENV]).status.code(), Some(0));
    let _cleanup = Cleanup(&server, "payments");
    let out = deploy(&server, &["--readiness-http", "/healthz", "--", demo]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let serving = ports_of(&workload(&server, "payments"), 1);

    let out = server.cli(&["rollback", "payments", "--env", ENV, "--wait"]);
    assert_ne!(out.status.code(), Some(0), "nothing to roll back to");
    assert!(stderr(&out).contains("no other revision"), "{}", stderr(&out));

    let out = deploy(&server, &["--command", "false", "--ready-timeout", "3s"]);
    assert_eq!(out.status.code(), Some(3), "{}{}", stdout(&out), stderr(&out));
    let out = server.cli(&["rollback", "payments", "--env", ENV, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let w = workload(&server, "payments");
    assert_eq!(w["current_revision"], 1, "{w}");
    assert!(ports_of(&w, 2).is_empty(), "revision 2 runs: {w}");
    assert_eq!(
        ports_of(&w, 1),
        serving,
        "the replicas that served were not replaced"
    );
}
