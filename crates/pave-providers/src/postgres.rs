//! `postgres`: a PostgreSQL cluster of its own per resource (initdb + pg_ctl),
//! on a free loopback port, with one database and one role with a password.
//! Healthy means a real connection as that role runs `SELECT 1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::process::{free_port, make_dir_for, port_in_use, run};
use crate::{ProviderError, Provisioned};

const USER: &str = "postgres";

/// Where `program` of the PostgreSQL this host runs is.
pub(crate) fn program(program: &str) -> PathBuf {
    bin(program)
}

fn bin(program: &str) -> PathBuf {
    std::env::var_os("PAVE_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
        .join(program)
}

/// What the provider remembers of a cluster, next to its data.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    port: u16,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("resource.json")
}

fn read_state(dir: &Path) -> Option<State> {
    serde_json::from_str(&std::fs::read_to_string(state_path(dir)).ok()?).ok()
}

fn write_state(dir: &Path, s: &State) -> Result<(), ProviderError> {
    std::fs::write(state_path(dir), json!({ "port": s.port }).to_string())
        .map_err(|e| ProviderError::Io(format!("could not write {}: {e}", state_path(dir).display())))
}

fn names(spec: &Value) -> Result<(&str, &str), ProviderError> {
    match (spec["database"].as_str(), spec["user"].as_str()) {
        (Some(d), Some(u)) => Ok((d, u)),
        _ => Err(ProviderError::Invalid(
            "postgres spec lacks database and user".into(),
        )),
    }
}

fn outputs(port: u16, spec: &Value) -> Result<BTreeMap<String, Value>, ProviderError> {
    let (db, user) = names(spec)?;
    Ok(BTreeMap::from([
        ("host".to_string(), json!("127.0.0.1")),
        ("port".to_string(), json!(port)),
        ("database".to_string(), json!(db)),
        ("user".to_string(), json!(user)),
    ]))
}

async fn running(dir: &Path) -> bool {
    // `pg_ctl status` takes a killed postmaster that is still a zombie for a
    // live one: look at the process first.
    let pid = std::fs::read_to_string(dir.join("data").join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
    match pid {
        Some(pid) if !crate::process::alive(pid) => return false,
        None => return false,
        Some(_) => {}
    }
    run(
        &bin("pg_ctl"),
        &["-D", &dir.join("data").display().to_string(), "status"],
        Some(USER),
        None,
    )
    .await
    .is_ok()
}

async fn start(dir: &Path, port: u16) -> Result<(), ProviderError> {
    let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", dir.display());
    let data = dir.join("data").display().to_string();
    let log = dir.join("postgres.log").display().to_string();
    run(
        &bin("pg_ctl"),
        &["-D", &data, "-o", &opts, "-l", &log, "-w", "-t", "60", "start"],
        Some(USER),
        None,
    )
    .await?;
    Ok(())
}

/// PostgreSQL runs as `postgres` and must reach its directory; a data directory
/// under a private home (mode 0700) is the usual reason it cannot.
async fn reachable_by_postgres(dir: &Path) -> Result<(), ProviderError> {
    if !crate::process::is_root() {
        return Ok(());
    }
    let ok = tokio::process::Command::new("runuser")
        .args(["-u", USER, "--", "test", "-w"])
        .arg(dir)
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Invalid(format!(
            "the `postgres` user cannot reach {}: a directory above it is private (mode 0700?). \
             Run pave serve with a --data-dir that other users can traverse, e.g. /var/lib/pave",
            dir.display()
        )))
    }
}

pub async fn create(dir: &Path, spec: &Value, password: &str) -> Result<Provisioned, ProviderError> {
    let (db, user) = names(spec)?;
    let state = match read_state(dir) {
        Some(state) => {
            // Exists: make sure it runs (this is also how repair works).
            if !running(dir).await {
                // A lock file left by a killed postmaster (still a zombie) would
                // make the new one refuse to start.
                let port = if port_in_use(state.port) {
                    free_port()?
                } else {
                    state.port
                };
                // The killed server's backends may hold its shared memory for a
                // moment after it died: try again for a few seconds.
                let mut tries = 0;
                loop {
                    let _ = std::fs::remove_file(dir.join("data").join("postmaster.pid"));
                    match start(dir, port).await {
                        Ok(()) => break,
                        Err(e) if tries >= 10 => return Err(e),
                        Err(_) => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                    }
                }
                write_state(dir, &State { port })?;
                State { port }
            } else {
                state
            }
        }
        None => {
            make_dir_for(dir, Some(USER)).await?;
            reachable_by_postgres(dir).await?;
            let data = dir.join("data");
            if !data.join("PG_VERSION").exists() {
                let data = data.display().to_string();
                run(
                    &bin("initdb"),
                    &[
                        "-D",
                        &data,
                        "-U",
                        "postgres",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                    ],
                    Some(USER),
                    None,
                )
                .await?;
            }
            let port = free_port()?;
            start(dir, port).await?;
            // The role's password goes through stdin, never argv.
            let sql = format!(
                "CREATE ROLE \"{user}\" LOGIN PASSWORD '{}';\nCREATE DATABASE \"{db}\" OWNER \"{user}\";\n",
                password.replace('\'', "''")
            );
            let port_s = port.to_string();
            let host = dir.display().to_string();
            run(
                &bin("psql"),
                &[
                    "-h",
                    &host,
                    "-p",
                    &port_s,
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                ],
                Some(USER),
                Some(&sql),
            )
            .await?;
            let state = State { port };
            write_state(dir, &state)?;
            state
        }
    };
    check_port(state.port, spec, password).await?;
    Ok(Provisioned {
        outputs: outputs(state.port, spec)?,
        location: dir.display().to_string(),
    })
}

async fn check_port(port: u16, spec: &Value, password: &str) -> Result<(), ProviderError> {
    let (db, user) = names(spec)?;
    let opts = sqlx::postgres::PgConnectOptions::from_str(&format!("postgres://127.0.0.1:{port}/{db}"))
        .map_err(|e| ProviderError::Invalid(e.to_string()))?
        .username(user)
        .password(password);
    let attempt = async {
        let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
        let one: (i32,) = sqlx::query_as("SELECT 1").fetch_one(&mut conn).await?;
        let _ = conn.close().await;
        Ok::<i32, sqlx::Error>(one.0)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(1)) => Ok(()),
        Ok(Ok(n)) => Err(ProviderError::Unhealthy(format!("SELECT 1 returned {n}"))),
        Ok(Err(e)) => Err(ProviderError::Unhealthy(format!("postgres on port {port}: {e}"))),
        Err(_) => Err(ProviderError::Unhealthy(format!(
            "postgres on port {port} did not answer within 5 s"
        ))),
    }
}

pub async fn check(dir: &Path, spec: &Value, password: &str) -> Result<(), ProviderError> {
    let state =
        read_state(dir).ok_or_else(|| ProviderError::Gone(format!("no cluster in {}", dir.display())))?;
    check_port(state.port, spec, password).await
}

pub async fn stop(dir: &Path) {
    if dir.join("data").exists() && running(dir).await {
        let data = dir.join("data").display().to_string();
        if let Err(e) = run(
            &bin("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
            Some(USER),
            None,
        )
        .await
        {
            tracing::warn!(error = %e, "pg_ctl stop failed");
        }
    }
}
