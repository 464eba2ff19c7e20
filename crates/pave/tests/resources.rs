//! Resources end to end: provisioned by the real server through its embedded
//! agent, watched for drift, repaired, rolled back and deleted, with the
//! credential kept out of every answer, log and audit event.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn wait_health(server: &Server, env: &str, name: &str, want: impl Fn(&str) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = server.cli_json(&["resources", "get", name, "--env", env, "-o", "json"]);
        if want(r["health"].as_str().unwrap_or("")) {
            return r;
        }
        assert!(Instant::now() < deadline, "health stayed {}", r["health"]);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The plaintext of a resource's password, read the way only the server can.
fn password(data: &std::path::Path, env: &str, name: &str) -> String {
    let key = std::fs::read_to_string(data.join("master.key")).unwrap();
    let key = pave_core::vault::MasterKey::from_hex(&key).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; print(sqlite3.connect('{}').execute(\"select sealed from secrets where env='{env}' and name='resource/{name}/password'\").fetchone()[0])",
            data.join("pave.db").display()
        ))
        .output()
        .unwrap();
    let sealed: pave_core::vault::Sealed = serde_json::from_slice(&out.stdout).unwrap();
    String::from_utf8(key.open(&sealed).unwrap()).unwrap()
}

#[test]
fn postgres_and_redis_are_provisioned_watched_repaired_and_deleted() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start(&data, None);
    let env = "payments-staging";
    assert_eq!(
        server
            .cli(&[
                "env",
                "create",
                env,
                "--target",
                "local",
                "--label",
                "tier=staging"
            ])
            .status
            .code(),
        Some(0)
    );

    let out = server.cli(&["provision", "postgres", "payments-db", "--env", env, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = server.cli(&[
        "provision",
        "redis",
        "payments-cache",
        "--env",
        env,
        "--wait",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let redis_action: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let list = server.cli_json(&["resources", "list", "--env", env, "-o", "json"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for r in list {
        assert_eq!(r["lifecycle"], "ready", "{r}");
        assert_eq!(r["health"], "healthy", "{r}");
        assert!(r["outputs"]["port"].as_u64().unwrap() > 0);
    }
    let status = server.cli_json(&["env", "status", env, "-o", "json"]);
    assert_eq!(status["environment"]["labels"]["tier"], "staging");
    assert_eq!(status["resources"].as_array().unwrap().len(), 2);
    let pg = list.iter().find(|r| r["name"] == "payments-db").unwrap();
    assert_eq!(pg["outputs"]["database"], "payments_db");

    // The database really answers with the credential from the vault.
    let pw = password(&data, env, "payments-db");
    let port = pg["outputs"]["port"].as_u64().unwrap().to_string();
    let psql = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "payments_db",
            "-d",
            "payments_db",
            "-tAc",
            "SELECT 40 + 2",
        ])
        .env("PGPASSWORD", &pw)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&psql.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );

    // Its server dies: the health sweep notices; repair brings it back.
    let location = pg["location"].as_str().unwrap().to_string();
    let stop = std::process::Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/pg_ctl",
            "-D",
            &format!("{location}/data"),
            "-m",
            "immediate",
            "stop",
        ])
        .status()
        .unwrap();
    assert!(stop.success());
    wait_health(&server, env, "payments-db", |h| h != "healthy");
    let out = server.cli(&["resources", "repair", "payments-db", "--env", env, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_health(&server, env, "payments-db", |h| h == "healthy");

    // A second provision of the same name is refused and changes nothing.
    let out = server.cli(&["provision", "postgres", "payments-db", "--env", env, "--wait"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    // Rolling back the redis provision removes it; deleting the postgres removes its data.
    let id = redis_action["id"].as_str().unwrap();
    assert_eq!(
        server.cli(&["actions", "rollback", id, "--wait"]).status.code(),
        Some(0)
    );
    let out = server.cli(&["resources", "delete", "payments-db", "--env", env, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !std::path::Path::new(&location).exists(),
        "the data directory is still there"
    );
    assert_eq!(
        server.cli_json(&["resources", "list", "--env", env, "-o", "json"]),
        serde_json::json!([])
    );
    assert_eq!(server.cli(&["env", "delete", env]).status.code(), Some(0));

    // The credential appears in no answer, log or audit event.
    let mut seen = String::new();
    seen.push_str(&stdout(&server.cli(&["actions", "list", "-o", "json"])));
    seen.push_str(&stdout(
        &server.cli(&["audit", "list", "--limit", "1000", "-o", "json"]),
    ));
    for a in server
        .cli_json(&["actions", "list", "-o", "json"])
        .as_array()
        .unwrap()
    {
        seen.push_str(&stdout(&server.cli(&[
            "actions",
            "logs",
            a["id"].as_str().unwrap(),
            "-o",
            "json",
        ])));
    }
    seen.push_str(&std::fs::read_to_string(data.with_extension("log")).unwrap_or_default());
    assert!(seen.len() > 1000);
    assert!(!seen.contains(&pw), "the password leaked");
    assert_eq!(server.cli(&["audit", "verify"]).status.code(), Some(0));
}

#[test]
fn a_relative_data_dir_works_for_resources_like_the_default_does() {
    let dir = tempdir();
    let port = pave_testkit::free_port();
    let mut child = std::process::Command::new(pave_bin())
        .args([
            "serve",
            "--data-dir",
            "pave-data",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env(
            "PAVE_AGENT_LISTEN",
            format!("127.0.0.1:{}", pave_testkit::free_port()),
        )
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_status(port, "/readyz", None) != Some(200) {
        assert!(Instant::now() < deadline, "server not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = std::fs::read_to_string(dir.path().join("pave-data/admin.token")).unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(pave_bin())
            .args(args)
            .current_dir("/")
            .env("PAVE_SERVER", format!("http://127.0.0.1:{port}"))
            .env("PAVE_TOKEN", token.trim())
            .env("PAVE_CONFIG", dir.path().join("cli.json"))
            .output()
            .unwrap()
    };
    let out = cli(&["provision", "redis", "cache", "--env", "local", "--wait"]);
    let ok = out.status.code() == Some(0);
    let del = cli(&["resources", "delete", "cache", "--env", "local", "--wait"]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "{}", stderr(&out));
    assert_eq!(del.status.code(), Some(0), "{}", stderr(&del));
}
