//! Real services for tests and benchmarks. Nothing here fakes pave's own layers:
//! it starts the programs pave talks to.
//!
//! PostgreSQL: when `PAVE_TEST_DATABASE_URL` points at a server (the test
//! command starts one for the whole suite), every [`TestPostgres`] is a fresh
//! database on it; otherwise a throwaway cluster is made with `initdb` and
//! `pg_ctl` on a free loopback port and removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Where PostgreSQL's programs are (`PAVE_PG_BIN`, default Debian's 15).
pub fn pg_bin() -> PathBuf {
    std::env::var_os("PAVE_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root
/// (initdb refuses to run as root).
fn pg_command(program: &str) -> Command {
    let path = pg_bin().join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("could not run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A PostgreSQL cluster of our own.
pub struct PgCluster {
    dir: tempfile::TempDir,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
}

impl PgCluster {
    /// `initdb` + `pg_ctl start`. With `durable = false`, fsync is off (tests);
    /// benchmarks keep PostgreSQL's defaults.
    pub fn start(durable: bool) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("pave-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("-R").arg("postgres").arg(dir.path());
                    c
                },
                "chown",
            )?;
        }
        let mut init = pg_command("initdb");
        init.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        run(init, "initdb")?;
        let port = free_port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            dir.path().display()
        );
        if !durable {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let mut start = pg_command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(opts)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "-t", "30", "start"]);
        run(start, "pg_ctl start")?;
        Ok(PgCluster { dir, port })
    }

    /// URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut stop = pg_command("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}

/// A fresh, empty PostgreSQL database for one test.
pub struct TestPostgres {
    /// Its URL.
    pub url: String,
    _cluster: Option<PgCluster>,
}

impl TestPostgres {
    /// A new database on the suite's server, or on a cluster of its own.
    pub async fn new() -> Self {
        let (base, cluster) = match std::env::var("PAVE_TEST_DATABASE_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let c = PgCluster::start(false).expect("could not start a throwaway PostgreSQL");
                (c.url("postgres"), Some(c))
            }
        };
        let name = format!("pave_test_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&base)
            .await
            .expect("cannot reach the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("CREATE DATABASE failed");
        admin.close().await;
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => format!("{base}/{name}"),
        };
        TestPostgres {
            url,
            _cluster: cluster,
        }
    }
}
