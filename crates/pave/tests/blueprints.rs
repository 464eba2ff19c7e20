//! The local target's acceptance, end to end, as a new user runs it: the
//! built-in staging-environment blueprint applied by the real server (real
//! PostgreSQL, real Redis, the demo service from `pave demo`), then operated,
//! cloned and deleted; and a server killed with SIGKILL in the middle of it.

mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

const ENV: &str = "payments-staging";

/// Deletes an environment when the test ends, passed or not, so that no
/// server or replica outlives it.
struct DeleteEnv<'a>(&'a Server, &'a str);

impl Drop for DeleteEnv<'_> {
    fn drop(&mut self) {
        let _ = self.0.cli(&["env", "delete", self.1, "--wait"]);
    }
}

fn status(server: &Server, env: &str) -> Value {
    server.cli_json(&["env", "status", env, "-o", "json"])
}

/// The ports of the replicas of `revision` of the first workload.
fn ports(status: &Value, revision: i64) -> Vec<u16> {
    status["workloads"][0]["replicas"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["revision"] == revision)
                .filter_map(|r| r["port"].as_u64())
                .map(|p| p as u16)
                .collect()
        })
        .unwrap_or_default()
}

fn resource_dirs(data: &Path, env: &str) -> bool {
    data.join("resources").join(env).exists() || data.join("workloads").join(env).exists()
}

/// Whether any process runs with `needle` on its command line.
fn process_with(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
}

#[test]
fn the_staging_environment_is_applied_operated_cloned_and_deleted() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let server = Server::start(&data, None);
    ok(&server.cli(&[
        "env",
        "create",
        ENV,
        "--target",
        "local",
        "--label",
        "tier=staging",
    ]));
    let _cleanup = DeleteEnv(&server, ENV);

    // Bad parameters are refused before anything runs, each named.
    for (set, expect) in [
        ("colour=blue", "unknown parameter `colour`"),
        ("replicas=many", "parameter `replicas`"),
    ] {
        let out = server.cli(&[
            "blueprint",
            "apply",
            "staging-environment",
            "--env",
            ENV,
            "--set",
            "service=payments",
            "--set",
            set,
        ]);
        assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{}", stderr(&out));
    }
    let out = server.cli(&["blueprint", "apply", "staging-environment", "--env", ENV]);
    assert!(
        stderr(&out).contains("missing required parameter `service`"),
        "{}",
        stderr(&out)
    );
    let actions = server.cli_json(&["actions", "list", "--env", ENV, "-o", "json"]);
    assert_eq!(actions, serde_json::json!([]), "a refused apply left an action");

    // One action, a step per resource and workload.
    let out = server.cli(&[
        "blueprint",
        "apply",
        "staging-environment",
        "--env",
        ENV,
        "--set",
        "service=payments",
        "--wait",
        "-o",
        "json",
    ]);
    ok(&out);
    let action: Value = serde_json::from_slice(&out.stdout).expect("action JSON");
    let steps: Vec<&str> = action["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps.len(), 5, "{steps:?}");
    assert!(steps[0].contains("postgres payments-db") && steps[1].contains("redis payments-cache"));

    let st = status(&server, ENV);
    let lifecycles: Vec<(&str, &str)> = st["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["lifecycle"].as_str().unwrap()))
        .collect();
    assert!(lifecycles.contains(&("postgres", "ready")) && lifecycles.contains(&("redis", "ready")));
    let w = &st["workloads"][0];
    assert_eq!(
        (w["name"].as_str(), w["ready"].as_u64()),
        (Some("payments"), Some(2)),
        "{st}"
    );
    let first = ports(&st, 1);
    assert_eq!(first.len(), 2, "{st}");
    // /healthz of the demo service checks both connections for real.
    for p in &first {
        assert_eq!(http_status(*p, "/healthz", None), Some(200), "replica on {p}");
    }
    // Credentials are references, never values.
    assert!(!st.to_string().contains("password\":\""), "{st}");

    ok(&server.cli(&[
        "deploy",
        "payments",
        "--env",
        ENV,
        "--set-env",
        "FEATURE_X=1",
        "--wait",
    ]));
    assert_eq!(status(&server, ENV)["workloads"][0]["current_revision"], 2);
    ok(&server.cli(&["scale", "payments", "--env", ENV, "--replicas", "3", "--wait"]));
    let st = status(&server, ENV);
    assert_eq!(ports(&st, 2).len(), 3, "{st}");
    ok(&server.cli(&["rollback", "payments", "--env", ENV, "--wait"]));
    let st = status(&server, ENV);
    assert_eq!(st["workloads"][0]["current_revision"], 1, "{st}");
    let serving = ports(&st, 1);
    assert_eq!(serving.len(), 3, "{st}");

    let out = server.cli(&[
        "exec",
        "payments",
        "--env",
        ENV,
        "--",
        "sh",
        "-c",
        "echo ${DATABASE_URL%%:*}",
    ]);
    ok(&out);
    assert_eq!(stdout(&out).trim(), "postgresql");

    // A revision whose command exits at start fails fast; revision 1 keeps serving.
    let out = server.cli(&["deploy", "payments", "--env", ENV, "--command", "false", "--wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("revision 1 is still current and serving"),
        "{}",
        stderr(&out)
    );
    let st = status(&server, ENV);
    assert_eq!(st["workloads"][0]["current_revision"], 1, "{st}");
    for p in &serving {
        assert_eq!(http_status(*p, "/healthz", None), Some(200), "replica on {p}");
    }

    // The clone has its own servers and credentials and the same revision spec.
    ok(&server.cli(&["env", "clone", ENV, "payments-preview", "--wait"]));
    let preview = status(&server, "payments-preview");
    assert_eq!(preview["environment"]["labels"]["tier"], "staging");
    let port_of = |s: &Value, kind: &str| {
        s["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind)
            .map(|r| r["outputs"]["port"].clone())
    };
    assert_ne!(port_of(&preview, "postgres"), port_of(&st, "postgres"));
    let cloned = ports(&preview, 1);
    assert_eq!(cloned.len(), 3, "{preview}");
    for p in &cloned {
        assert_eq!(
            http_status(*p, "/healthz", None),
            Some(200),
            "clone replica on {p}"
        );
    }
    let preview_dir = data.join("resources").join("payments-preview");
    assert!(preview_dir.exists());

    // Deleting it stops its processes and removes its data.
    ok(&server.cli(&["env", "delete", "payments-preview", "--wait"]));
    assert!(
        !resource_dirs(&data, "payments-preview"),
        "data of the deleted env is left"
    );
    assert!(
        !process_with(&preview_dir.display().to_string()),
        "a server of the deleted env runs"
    );
    for p in &cloned {
        assert_ne!(
            http_status(*p, "/healthz", None),
            Some(200),
            "a replica outlived its env on {p}"
        );
    }
    let out = server.cli(&["env", "get", "payments-preview"]);
    assert_eq!(out.status.code(), Some(8), "{}", stdout(&out));
    // The original is untouched.
    for p in &serving {
        assert_eq!(http_status(*p, "/healthz", None), Some(200), "replica on {p}");
    }

    // A blueprint that fails at its last piece: the action says what exists,
    // and rolling it back removes what it created, in reverse order.
    ok(&server.cli(&["env", "create", "payments-broken"]));
    let out = server.cli(&[
        "blueprint",
        "apply",
        "staging-environment",
        "--env",
        "payments-broken",
        "--set",
        "service=payments",
        "--set",
        "command=[\"false\"]",
        "--set",
        "replicas=1",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("✓ provision postgres payments-db succeeded"),
        "{text}"
    );
    assert!(text.contains("✗ payments: wait until ready failed"), "{text}");
    assert!(text.contains("wrote nothing to stdout or stderr"), "{text}");
    let id = server.cli_json(&["actions", "list", "--env", "payments-broken", "-o", "json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&server.cli(&["actions", "rollback", &id, "--wait"]));
    let broken = status(&server, "payments-broken");
    assert_eq!(broken["resources"], serde_json::json!([]), "{broken}");
    assert_eq!(broken["workloads"], serde_json::json!([]), "{broken}");
    assert!(
        !resource_dirs(&data, "payments-broken"),
        "the rollback left data behind"
    );
    ok(&server.cli(&["env", "delete", "payments-broken", "--wait"]));

    let out = server.cli(&["audit", "verify"]);
    ok(&out);
}

#[test]
fn a_blueprint_half_applied_when_the_server_is_killed_finishes_after_restart() {
    let dir = tempdir();
    let data = dir.path().join("pave-data");
    let mut server = Server::start(&data, None);
    ok(&server.cli(&["env", "create", ENV]));
    let out = server.cli(&[
        "blueprint",
        "apply",
        "staging-environment",
        "--env",
        ENV,
        "--set",
        "service=payments",
        "--set",
        "replicas=1",
        "-o",
        "json",
    ]);
    ok(&out);
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Kill it while PostgreSQL is being provisioned (initdb takes a while).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let a = server.action(&id);
        if a["steps"][0]["state"] == "running" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "provisioning never started: {a}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.kill9();

    let server = Server::start(&data, None);
    let _cleanup = DeleteEnv(&server, ENV);
    let a = server.wait_state(&id, &["succeeded", "failed"]);
    // Idempotent steps are re-run on resume: the action finishes.
    assert_eq!(a["state"], "succeeded", "{a:#}");
    let st = status(&server, ENV);
    assert_eq!(st["workloads"][0]["ready"], 1, "{st}");
    for p in ports(&st, 1) {
        assert_eq!(http_status(p, "/healthz", None), Some(200), "replica on {p}");
    }
    assert!(
        st["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["lifecycle"] == "ready"),
        "{st}"
    );
}
