//! The local providers against the real programs.

use std::collections::BTreeMap;

use pave_providers::{LocalProviders, ResourceRequest};
use serde_json::json;
use sqlx::Connection;

fn request(kind: &str, name: &str, spec: serde_json::Value) -> ResourceRequest {
    ResourceRequest {
        env: "test-env".into(),
        name: name.into(),
        kind: kind.into(),
        spec,
        secrets: BTreeMap::from([("password".to_string(), pave_core::vault::random_password(24))]),
    }
}

/// The resource root must be traversable by the `postgres` user.
fn root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_is_created_checked_repaired_with_its_data_and_deleted() {
    let dir = root();
    let p = LocalProviders::new(dir.path()).unwrap();
    let req = request(
        "postgres",
        "payments-db",
        json!({"database": "payments", "user": "payments"}),
    );
    let made = p.create(&req).await.unwrap();
    assert_eq!(made.outputs["database"], "payments");
    let port = made.outputs["port"].as_u64().unwrap();
    p.check(&req).await.unwrap();
    let url = format!(
        "postgres://payments:{}@127.0.0.1:{port}/payments",
        req.secrets["password"]
    );
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('still here')")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let mut wrong = req.clone();
    wrong.secrets.insert("password".into(), "wrong".into());
    assert!(p.check(&wrong).await.is_err(), "a wrong password was accepted");
    // Creating again is idempotent.
    assert_eq!(
        p.create(&req).await.unwrap().outputs["port"],
        made.outputs["port"]
    );

    // Its server dies; the check says so; repair brings it back with its data.
    let data = made.location.clone() + "/data";
    let mut stop = std::process::Command::new("runuser");
    stop.args([
        "-u",
        "postgres",
        "--",
        "/usr/lib/postgresql/15/bin/pg_ctl",
        "-D",
        &data,
        "-m",
        "immediate",
        "stop",
    ]);
    assert!(stop.status().unwrap().success());
    assert!(p.check(&req).await.is_err());
    let repaired = p.repair(&req).await.unwrap();
    let port = repaired.outputs["port"].as_u64().unwrap();
    let url = format!(
        "postgres://payments:{}@127.0.0.1:{port}/payments",
        req.secrets["password"]
    );
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let (v,): (String,) = sqlx::query_as("SELECT v FROM kept")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "still here");
    c.close().await.unwrap();

    p.delete(&req).await.unwrap();
    assert!(!std::path::Path::new(&made.location).exists());
    assert!(p.check(&req).await.is_err());
    p.delete(&req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_is_created_with_a_password_repaired_with_its_data_and_deleted() {
    let dir = root();
    let p = LocalProviders::new(dir.path()).unwrap();
    let req = request("redis", "cache", json!({}));
    let made = p.create(&req).await.unwrap();
    let port = made.outputs["port"].as_u64().unwrap() as u16;
    p.check(&req).await.unwrap();
    let mut wrong = req.clone();
    wrong.secrets.insert("password".into(), "wrong".into());
    let err = p.check(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("WRONGPASS") || err.contains("invalid"), "{err}");
    let conf = std::fs::read_to_string(format!("{}/redis.conf", made.location)).unwrap();
    assert!(conf.contains("requirepass"));
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&req.secrets["password"]),
        "the password is visible in ps"
    );

    let pid: i32 = std::fs::read_to_string(format!("{}/redis.pid", made.location))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(p.check(&req).await.is_err());
    let repaired = p.repair(&req).await.unwrap();
    assert_eq!(repaired.outputs["port"].as_u64().unwrap() as u16, port);
    p.check(&req).await.unwrap();
    p.delete(&req).await.unwrap();
    assert!(!std::path::Path::new(&made.location).exists());
}

/// A version is honoured when it is the installed one, refused (with
/// nothing made) when it is not: the local target installs no server.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_other_than_the_installed_one_is_refused() {
    let dir = root();
    let p = LocalProviders::new(dir.path()).unwrap();
    let err = p
        .create(&request("redis", "cache", json!({"version": "1"})))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version \"1\" is asked for") && err.contains("Kubernetes"),
        "{err}"
    );
    assert!(
        !dir.path().join("test-env").join("cache").exists(),
        "nothing was made"
    );
}
