//! The local target: how long pave takes to provision a PostgreSQL and to
//! deploy the demo service until each is ready, against doing the same work by
//! hand, in the same process.
//!
//! pave's side is a real `Engine` over SQLite in a fresh data directory, with
//! the embedded agent (so `LocalProviders` and the local target driver), wired
//! as `pave serve` wires them: the same agent directories, `[pave, "shim"]` as
//! the workload supervisor, a vault master key, `EngineConfig`'s defaults
//! (which are `pave serve`'s). Each figure runs from `Engine::submit` until the
//! action is seen `succeeded`.
//!
//! The baselines: `initdb` + `pg_ctl start -w` + the first connection running
//! `SELECT 1` (as the `postgres` user when run as root, like the provider);
//! and spawning the demo binary with `PORT` set until `/healthz` answers 200.
//!
//! pave and bare runs alternate (which one goes first alternates too), and the
//! medians are compared. Every cluster and workload is removed afterwards:
//! pave's through `resource.delete` and `workload.delete` actions, the bare
//! ones by `pg_ctl stop` (or killing the process) and removing the directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pave_agent::embedded::AgentDirs;
use pave_core::vault::MasterKey;
use pave_core::{Action, ActionState};
use pave_engine::{AgentHub, AllowAll, Engine, EngineConfig, Submission};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::broadcast::error::RecvError;

use crate::report::{round, verdict, Report};
use crate::serve_bench::http_status;

/// Targets: pave's median over the baseline's median.
pub const TARGET_PROVISION_RATIO: f64 = 1.3;
pub const TARGET_DEPLOY_RATIO: f64 = 1.5;

/// Longest a provision, a deploy or a delete may take before the run fails.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(180);
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the bare demo may take to answer `/healthz`.
const DEMO_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the bare baselines probe (the demo's `/healthz`; PostgreSQL's
/// first connection when it is refused).
const PROBE_EVERY: Duration = Duration::from_millis(2);
/// Longest wait for a change of the action before its state is read anyway.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// The resource and workload names pave creates (a run number is appended).
const PG_NAME: &str = "bench-pg";
const DEMO_NAME: &str = "bench-demo";

/// What the section needs.
pub struct LocalConfig {
    /// Where data directories go.
    pub tmp: PathBuf,
    /// The `pave` binary, the workload supervisor (`pave shim`).
    pub pave_bin: PathBuf,
    /// The release `pave-demo` binary.
    pub demo_bin: PathBuf,
    /// Runs of each (pave and bare).
    pub runs: usize,
}

/// Runs both parts and prints their lines; the JSON figures and whether every
/// measurement was taken.
pub async fn section(cfg: &LocalConfig, report: &Report) -> (Value, bool) {
    let pave = match Pave::start(&cfg.tmp, &cfg.pave_bin).await {
        Ok(p) => p,
        Err(e) => {
            report.line(format!("local     FAILED: {e:#}"));
            return (json!({ "error": format!("{e:#}") }), false);
        }
    };
    let mut ok = true;
    let provision = match provision_part(cfg, &pave, report).await {
        Ok(v) => v,
        Err(e) => {
            report.line(format!("local     postgres provision FAILED: {e:#}"));
            ok = false;
            json!({ "error": format!("{e:#}") })
        }
    };
    let deploy = match deploy_part(cfg, &pave, report).await {
        Ok(v) => v,
        Err(e) => {
            report.line(format!("local     demo deploy FAILED: {e:#}"));
            ok = false;
            json!({ "error": format!("{e:#}") })
        }
    };
    if let Err(e) = pave.stop().await {
        report.line(format!("local     cleanup FAILED: {e:#}"));
        ok = false;
    }
    (
        json!({ "runs": cfg.runs.max(1), "provision": provision, "deploy": deploy }),
        ok,
    )
}

// ---------------------------------------------------------------------------
// pave: engine + embedded agent, as `pave serve` wires them

/// A running engine over a fresh data directory.
struct Pave {
    engine: Engine,
    runner: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

/// An action that reached a final state, and how long it took from the submit.
struct Finished {
    took: Duration,
    action: Action,
}

impl Pave {
    async fn start(tmp: &Path, pave_bin: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pave-bench-local-")
            .tempdir_in(tmp)
            .with_context(|| format!("could not create a data directory under {}", tmp.display()))?;
        let root = dir.path();
        // Like `pave serve`'s data directory: PostgreSQL runs as `postgres` when
        // we are root and must traverse it.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("could not make {} traversable (0711)", root.display()))?;
        let url = format!("sqlite://{}", root.join("pave.db").display());
        let store = pave_store::open(&url)
            .await
            .with_context(|| format!("could not open {url}"))?;
        let agent = pave_agent::spawn_embedded(AgentDirs {
            work_dir: root.join("work"),
            state_dir: root.join("agent"),
            resources_dir: root.join("resources"),
            workloads_dir: root.join("workloads"),
            shim_command: vec![pave_bin.display().to_string(), "shim".to_string()],
        })
        .context("could not start the embedded agent")?;
        let mut agents = HashMap::new();
        agents.insert("local".to_string(), AgentHub::start(agent).await);
        let master_key = MasterKey::from_hex(&MasterKey::generate_hex())
            .map_err(|e| anyhow::anyhow!("could not make a master key: {e}"))?;
        let engine = Engine::new(
            store,
            agents,
            Box::new(AllowAll),
            EngineConfig {
                master_key: Some(master_key),
                ..EngineConfig::default()
            },
        );
        let runner = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run(Duration::from_secs(30)).await })
        };
        Ok(Pave { engine, runner, dir })
    }

    /// Submits an action in `local` and waits until it is final; an error
    /// unless it `succeeded`.
    async fn run(&self, kind: &str, input: Value, timeout: Duration) -> Result<Finished> {
        let mut changes = self.engine.subscribe();
        let started = Instant::now();
        let (action, _) = self
            .engine
            .submit(Submission {
                kind: kind.into(),
                env: "local".into(),
                input,
                principal: pave_core::rbac::Principal::builtin_admin(),
                idempotency_key: None,
            })
            .await
            .with_context(|| format!("could not submit a {kind} action"))?;
        let id = action.id;
        let deadline = started + timeout;
        loop {
            // Woken by a change of this action; read anyway now and then.
            let _ = tokio::time::timeout(CHECK_EVERY, async {
                loop {
                    match changes.recv().await {
                        Ok(changed) if changed == id => return,
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => return,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            })
            .await;
            let action = self
                .engine
                .store()
                .get_action(&id)
                .await
                .context("could not read the action")?
                .with_context(|| format!("action {id} vanished"))?;
            if action.state.is_terminal() {
                let took = started.elapsed();
                if action.state != ActionState::Succeeded {
                    let why = action
                        .error
                        .as_ref()
                        .map(|e| format!(": {} ({})", e.message, e.code))
                        .unwrap_or_default();
                    bail!("{kind} action {id} ended {}{why}", action.state);
                }
                return Ok(Finished { took, action });
            }
            if Instant::now() > deadline {
                bail!(
                    "{kind} action {id} is still {} after {} s",
                    action.state,
                    timeout.as_secs()
                );
            }
        }
    }

    /// Stops the engine; stops any cluster a failed delete left running.
    async fn stop(self) -> Result<()> {
        self.engine.shutdown();
        if tokio::time::timeout(Duration::from_secs(30), self.runner)
            .await
            .is_err()
        {
            eprintln!("warning: the engine did not stop within 30 s after the local benchmark");
        }
        let mut left = Vec::new();
        let resources = self.dir.path().join("resources").join("local");
        if let Ok(entries) = std::fs::read_dir(&resources) {
            for entry in entries.flatten() {
                let data = entry.path().join("data");
                if data.join("postmaster.pid").exists() {
                    let _ = pg_command("pg_ctl")
                        .arg("-D")
                        .arg(&data)
                        .args(["-m", "immediate", "-w", "stop"])
                        .output()
                        .await;
                    left.push(format!("cluster {}", entry.path().display()));
                }
            }
        }
        let workloads = self.dir.path().join("workloads").join("local");
        if let Ok(entries) = std::fs::read_dir(&workloads) {
            for entry in entries.flatten() {
                left.push(format!("workload {}", entry.path().display()));
            }
        }
        if !left.is_empty() {
            // Keep the directory: a replica left running may still use it.
            let kept = self.dir.keep();
            bail!(
                "not everything was deleted through pave (clusters were stopped; check for replicas): {}; data kept in {}",
                left.join(", "),
                kept.display()
            );
        }
        Ok(())
    }
}

/// Where an action's time went, from the store's timestamps (ms): queued to
/// the first step's start, each step (by kind: its name carries the object's
/// name, which differs from run to run), the last step's end to the action's end.
fn breakdown(a: &Action) -> Vec<(String, f64)> {
    let mut parts = Vec::new();
    let mut at = a.created_at;
    for s in &a.steps {
        let (Some(start), Some(end)) = (s.started_at, s.finished_at) else {
            continue;
        };
        let gap = if parts.is_empty() {
            "queued → first step".to_string()
        } else {
            format!("→ {}", s.kind)
        };
        parts.push((gap, (start - at) as f64));
        parts.push((s.kind.clone(), (end - start) as f64));
        at = end;
    }
    parts.push(("last step → succeeded".to_string(), (a.updated_at - at) as f64));
    parts
}

/// For a deploy: from the apply step's start until the replica's process was
/// spawned (the supervisor's start), and from then until the wait step ended
/// (the process starting to serve, and the agent noticing), in ms.
fn replica_timeline(a: &Action) -> Option<(f64, f64)> {
    let apply = a.steps.iter().find(|s| s.kind == "apply_workload")?;
    let wait = a.steps.iter().find(|s| s.kind == "await_workload")?;
    let spawned = wait.output["replicas"]
        .as_array()?
        .iter()
        .filter_map(|r| r["started_at"].as_i64())
        .max()?;
    Some((
        (spawned - apply.started_at?) as f64,
        (wait.finished_at? - spawned) as f64,
    ))
}

/// The median of each part over runs with the same parts.
fn median_breakdown(runs: &[Vec<(String, f64)>]) -> Vec<(String, f64)> {
    let Some(first) = runs.first() else {
        return vec![];
    };
    first
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.get(i).filter(|(n, _)| n == name).map(|(_, v)| *v))
                .collect();
            (name.clone(), median_f64(&values))
        })
        .collect()
}

fn breakdown_text(parts: &[(String, f64)]) -> String {
    parts
        .iter()
        // Gaps between steps of the same action are rarely worth a mention.
        .filter(|(n, v)| !n.starts_with('→') || *v >= 1.0)
        .map(|(n, v)| format!("{n} {v:.0} ms"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn breakdown_json(parts: &[(String, f64)]) -> Value {
    Value::Array(
        parts
            .iter()
            .map(|(n, v)| json!({ "part": n, "ms": round(*v, 1) }))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// 1. PostgreSQL provision-to-ready

fn pg_bin(program: &str) -> PathBuf {
    std::env::var_os("PAVE_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
        .join(program)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A PostgreSQL program, as `postgres` when we are root (initdb refuses root).
fn pg_command(program: &str) -> tokio::process::Command {
    let path = pg_bin(program);
    let mut c = if is_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        tokio::process::Command::new(path)
    };
    // Like the provider: the server must not share our process group.
    c.process_group(0).kill_on_drop(false);
    c
}

/// Runs a command to its end; an error with its stderr's tail unless it succeeds.
async fn run_ok(mut c: tokio::process::Command, what: &str, stdin: Option<&str>) -> Result<()> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("could not run {what}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .with_context(|| format!("could not write to {what}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .with_context(|| format!("{what} failed"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} exited with {}: {}", out.status, tail.join(" / "));
    }
    Ok(())
}

/// One bare provision, step by step.
struct BareProvision {
    total: Duration,
    /// mkdir + chown to `postgres`.
    prepare: Duration,
    initdb: Duration,
    start: Duration,
    /// The first connection and its `SELECT 1`.
    first_query: Duration,
    /// Not in `total`: `CREATE ROLE … ; CREATE DATABASE …` through psql, which
    /// the provider runs between the start and its `SELECT 1`.
    create_db: Duration,
}

/// A bare cluster's data directory; stopped (immediately) when dropped running.
struct BareCluster {
    data: PathBuf,
    running: bool,
}

impl BareCluster {
    async fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let mut c = pg_command("pg_ctl");
        c.arg("-D").arg(&self.data).args(["-m", "fast", "-w", "stop"]);
        run_ok(c, "pg_ctl stop", None).await?;
        self.running = false;
        Ok(())
    }
}

impl Drop for BareCluster {
    fn drop(&mut self) {
        if self.running {
            let mut c = std::process::Command::new(if is_root() {
                PathBuf::from("runuser")
            } else {
                pg_bin("pg_ctl")
            });
            if is_root() {
                c.args(["-u", "postgres", "--"]).arg(pg_bin("pg_ctl"));
            }
            let _ = c
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr().context("no free loopback port")?.port())
}

/// `initdb` + `pg_ctl start -w` + the first `SELECT 1`, as the provider runs
/// them (same flags and options, durable defaults), in a fresh 0711 directory.
async fn bare_provision(tmp: &Path, password: &str) -> Result<BareProvision> {
    let base = tempfile::Builder::new()
        .prefix("pave-bench-bare-pg-")
        .tempdir_in(tmp)
        .with_context(|| format!("could not create a directory under {}", tmp.display()))?;
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("could not make {} traversable (0711)", base.path().display()))?;
    let dir = base.path().join("pg");
    let data = dir.join("data");
    let started = Instant::now();
    tokio::fs::create_dir(&dir)
        .await
        .with_context(|| format!("could not create {}", dir.display()))?;
    if is_root() {
        let mut c = tokio::process::Command::new("chown");
        c.arg("-R").arg("postgres").arg(&dir);
        run_ok(c, "chown", None).await?;
    }
    let prepare = started.elapsed();

    let t = Instant::now();
    let mut c = pg_command("initdb");
    c.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=trust",
        "-E",
        "UTF8",
    ]);
    run_ok(c, "initdb", None).await?;
    let initdb = t.elapsed();

    let port = free_port()?;
    let mut cluster = BareCluster {
        data: data.clone(),
        running: true,
    };
    let t = Instant::now();
    let mut c = pg_command("pg_ctl");
    c.arg("-D")
        .arg(&data)
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        ))
        .arg("-l")
        .arg(dir.join("postgres.log"))
        .args(["-w", "-t", "60", "start"]);
    run_ok(c, "pg_ctl start", None).await?;
    let start = t.elapsed();

    let t = Instant::now();
    select_one(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await?;
    let first_query = t.elapsed();
    let total = started.elapsed();

    // What the provider does on top, as it does it (for the breakdown only).
    let t = Instant::now();
    let sql = format!(
        "CREATE ROLE \"bench\" LOGIN PASSWORD '{}';\nCREATE DATABASE \"bench\" OWNER \"bench\";\n",
        password.replace('\'', "''")
    );
    let mut c = pg_command("psql");
    c.arg("-h")
        .arg(&dir)
        .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
        .args(["-v", "ON_ERROR_STOP=1", "-q"]);
    run_ok(c, "psql", Some(&sql)).await?;
    let create_db = t.elapsed();

    cluster.stop().await?;
    drop(cluster);
    base.close()
        .with_context(|| format!("could not remove {}", dir.display()))?;
    Ok(BareProvision {
        total,
        prepare,
        initdb,
        start,
        first_query,
        create_db,
    })
}

/// Connects (retrying while refused, briefly) and runs `SELECT 1`.
async fn select_one(url: &str) -> Result<()> {
    let opts = sqlx::postgres::PgConnectOptions::from_str(url).context("bad PostgreSQL URL")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match sqlx::PgConnection::connect_with(&opts).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("could not connect to the bare PostgreSQL");
            }
            Err(_) => tokio::time::sleep(PROBE_EVERY).await,
        }
    };
    let one: (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .context("SELECT 1 failed")?;
    let _ = conn.close().await;
    if one.0 != 1 {
        bail!("SELECT 1 returned {}", one.0);
    }
    Ok(())
}

/// One pave provision: the time, its breakdown, and the delete's time.
async fn pave_provision(pave: &Pave, name: &str) -> Result<(Finished, Duration)> {
    let provisioned = pave
        .run(
            "provision",
            json!({ "name": name, "kind": "postgres" }),
            PROVISION_TIMEOUT,
        )
        .await;
    // Deleted whatever happened: a failed provision may have left a cluster.
    let deleted = pave
        .run("resource.delete", json!({ "name": name }), DELETE_TIMEOUT)
        .await;
    let provisioned = provisioned?;
    let deleted = deleted.with_context(|| format!("could not delete resource {name}"))?;
    Ok((provisioned, deleted.took))
}

async fn provision_part(cfg: &LocalConfig, pave: &Pave, report: &Report) -> Result<Value> {
    let initdb = pg_bin("initdb");
    if !initdb.is_file() {
        let reason = format!(
            "{} does not exist (install PostgreSQL 15, or set PAVE_PG_BIN)",
            initdb.display()
        );
        report.line(format!("local     postgres provision skipped: {reason}"));
        return Ok(json!({ "skipped": reason }));
    }
    let runs = cfg.runs.max(1);
    let password = pave_core::vault::random_password(32);
    let mut pave_runs = Vec::with_capacity(runs);
    let mut pave_parts = Vec::with_capacity(runs);
    let mut deletes = Vec::with_capacity(runs);
    let mut bare_runs: Vec<BareProvision> = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("{PG_NAME}-{}", i + 1);
        // Alternate which goes first, so that neither always gets the warmer machine.
        for pave_turn in [i % 2 == 0, i % 2 == 1] {
            if pave_turn {
                let (f, del) = pave_provision(pave, &name)
                    .await
                    .with_context(|| format!("pave run {}", i + 1))?;
                pave_runs.push(f.took);
                pave_parts.push(breakdown(&f.action));
                deletes.push(del);
            } else {
                let b = bare_provision(&cfg.tmp, &password)
                    .await
                    .with_context(|| format!("bare run {}", i + 1))?;
                bare_runs.push(b);
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let med = |v: Vec<Duration>| median_f64(&v.into_iter().map(ms).collect::<Vec<_>>());
    let pave_ms = med(pave_runs.clone());
    let bare_ms = med(bare_runs.iter().map(|b| b.total).collect());
    let ratio = pave_ms / bare_ms;
    let met = ratio <= TARGET_PROVISION_RATIO;
    let list = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bare_totals: Vec<Duration> = bare_runs.iter().map(|b| b.total).collect();
    report.line(format!(
        "local     postgres provision-to-ready pave {pave_ms:.0} ms vs bare {bare_ms:.0} ms = {ratio:.2}x   target <= {TARGET_PROVISION_RATIO}x: {:<13}  (medians of {runs} runs each, alternating; pave {} ms; bare {} ms)",
        verdict(met),
        list(&pave_runs),
        list(&bare_totals),
    ));
    let parts = median_breakdown(&pave_parts);
    let delete_ms = med(deletes.clone());
    report.line(format!(
        "local     (info) pave provision (store timestamps): {}; then resource.delete {delete_ms:.0} ms",
        breakdown_text(&parts),
    ));
    let b = |f: fn(&BareProvision) -> Duration| med(bare_runs.iter().map(f).collect());
    let (prepare, initdb_ms, start, first, create_db) = (
        b(|r| r.prepare),
        b(|r| r.initdb),
        b(|r| r.start),
        b(|r| r.first_query),
        b(|r| r.create_db),
    );
    report.line(format!(
        "local     (info) bare provision: mkdir + chown {prepare:.0} ms, initdb {initdb_ms:.0} ms, pg_ctl start -w {start:.0} ms, \
         first connection + SELECT 1 {first:.0} ms; not in the baseline: CREATE ROLE + CREATE DATABASE through psql \
         (the provider runs it too) {create_db:.0} ms"
    ));
    Ok(json!({
        "pave_ms": pave_runs.iter().map(|d| round(ms(*d), 1)).collect::<Vec<_>>(),
        "bare_ms": bare_totals.iter().map(|d| round(ms(*d), 1)).collect::<Vec<_>>(),
        "pave_median_ms": round(pave_ms, 1),
        "bare_median_ms": round(bare_ms, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_PROVISION_RATIO,
        "target_met": met,
        "pave_breakdown_median_ms": breakdown_json(&parts),
        "pave_delete_median_ms": round(delete_ms, 1),
        "bare_breakdown_median_ms": {
            "mkdir_chown": round(prepare, 1),
            "initdb": round(initdb_ms, 1),
            "pg_ctl_start": round(start, 1),
            "first_select_1": round(first, 1),
        },
        "bare_create_role_and_database_median_ms": round(create_db, 1),
    }))
}

// ---------------------------------------------------------------------------
// 2. Demo service deploy-to-ready

/// A child process killed (SIGKILL) and reaped when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the demo with `PORT` set and probes `/healthz` until it answers 200.
fn bare_deploy(demo: &Path) -> Result<Duration> {
    use std::process::{Command, Stdio};
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let started = Instant::now();
    let child = Command::new(demo)
        .env("PORT", addr.port().to_string())
        // /healthz checks these when set; the deployed replica has none either.
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("DEMO_LISTEN_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("could not start {}", demo.display()))?;
    let mut child = Killed(child);
    loop {
        if let Some(status) = child.0.try_wait().context("could not check on the demo")? {
            bail!("{} exited with {status} before /healthz answered", demo.display());
        }
        if http_status(addr, "/healthz") == Some(200) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > DEMO_START_TIMEOUT {
            bail!(
                "{} did not answer /healthz with 200 within {} s",
                demo.display(),
                DEMO_START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(PROBE_EVERY);
    }
}

/// One pave deploy: the time, and the delete's time.
async fn pave_deploy(pave: &Pave, name: &str, demo: &Path) -> Result<(Finished, Duration)> {
    let deployed = pave
        .run(
            "deploy",
            json!({
                "name": name,
                "command": [demo.display().to_string()],
                "replicas": 1,
                "readiness": { "http": "/healthz" },
            }),
            DEPLOY_TIMEOUT,
        )
        .await;
    let deleted = pave
        .run("workload.delete", json!({ "name": name }), DELETE_TIMEOUT)
        .await;
    let deployed = deployed?;
    let deleted = deleted.with_context(|| format!("could not delete workload {name}"))?;
    Ok((deployed, deleted.took))
}

async fn deploy_part(cfg: &LocalConfig, pave: &Pave, report: &Report) -> Result<Value> {
    if !cfg.demo_bin.is_file() {
        bail!(
            "the demo binary {} does not exist (build it with `cargo build --release -p pave-demo`, or pass --demo-bin)",
            cfg.demo_bin.display()
        );
    }
    if !cfg.pave_bin.is_file() {
        bail!(
            "the pave binary {} does not exist; it supervises workloads as `pave shim` (build it with \
             `cargo build --release -p pave`, or pass --pave-bin)",
            cfg.pave_bin.display()
        );
    }
    let demo = std::fs::canonicalize(&cfg.demo_bin)
        .with_context(|| format!("could not resolve {}", cfg.demo_bin.display()))?;
    let runs = cfg.runs.max(1);
    let mut pave_runs = Vec::with_capacity(runs);
    let mut pave_parts = Vec::with_capacity(runs);
    let mut timelines = Vec::with_capacity(runs);
    let mut deletes = Vec::with_capacity(runs);
    let mut bare_runs = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("{DEMO_NAME}-{}", i + 1);
        for pave_turn in [i % 2 == 0, i % 2 == 1] {
            if pave_turn {
                let (f, del) = pave_deploy(pave, &name, &demo)
                    .await
                    .with_context(|| format!("pave run {}", i + 1))?;
                pave_runs.push(f.took);
                pave_parts.push(breakdown(&f.action));
                timelines.extend(replica_timeline(&f.action));
                deletes.push(del);
            } else {
                let bin = demo.clone();
                let took = tokio::task::spawn_blocking(move || bare_deploy(&bin))
                    .await
                    .context("the bare demo run panicked")?
                    .with_context(|| format!("bare run {}", i + 1))?;
                bare_runs.push(took);
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let med = |v: &[Duration]| median_f64(&v.iter().map(|d| ms(*d)).collect::<Vec<_>>());
    let (pave_ms, bare_ms) = (med(&pave_runs), med(&bare_runs));
    let ratio = pave_ms / bare_ms;
    let met = ratio <= TARGET_DEPLOY_RATIO;
    let list = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.line(format!(
        "local     demo deploy-to-ready        pave {pave_ms:.1} ms vs bare {bare_ms:.1} ms = {ratio:.2}x   target <= {TARGET_DEPLOY_RATIO}x: {:<13}  (medians of {runs} runs each, alternating; pave {} ms; bare {} ms; {})",
        verdict(met),
        list(&pave_runs),
        list(&bare_runs),
        demo.display(),
    ));
    let parts = median_breakdown(&pave_parts);
    let delete_ms = med(&deletes);
    report.line(format!(
        "local     (info) pave deploy (store timestamps): {}; then workload.delete {delete_ms:.0} ms",
        breakdown_text(&parts),
    ));
    let spawn_ms = median_f64(&timelines.iter().map(|t| t.0).collect::<Vec<_>>());
    let seen_ms = median_f64(&timelines.iter().map(|t| t.1).collect::<Vec<_>>());
    if !timelines.is_empty() {
        report.line(format!(
            "local     (info) pave deploy replica: its process spawned {spawn_ms:.0} ms after apply_workload began \
             (supervisor start); seen ready {seen_ms:.0} ms after its spawn (bare: {bare_ms:.1} ms from spawn to /healthz 200)"
        ));
    }
    Ok(json!({
        "demo_bin": demo.display().to_string(),
        "pave_ms": pave_runs.iter().map(|d| round(ms(*d), 2)).collect::<Vec<_>>(),
        "bare_ms": bare_runs.iter().map(|d| round(ms(*d), 2)).collect::<Vec<_>>(),
        "pave_median_ms": round(pave_ms, 2),
        "bare_median_ms": round(bare_ms, 2),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_DEPLOY_RATIO,
        "target_met": met,
        "pave_breakdown_median_ms": breakdown_json(&parts),
        "pave_replica_spawned_after_apply_median_ms": round(spawn_ms, 1),
        "pave_ready_seen_after_spawn_median_ms": round(seen_ms, 1),
        "pave_delete_median_ms": round(delete_ms, 1),
    }))
}

fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median_f64(&[]), 0.0);
        assert_eq!(median_f64(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f64(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn breakdowns_take_the_median_of_each_part() {
        let a = vec![("x".to_string(), 1.0), ("y".to_string(), 10.0)];
        let b = vec![("x".to_string(), 3.0), ("y".to_string(), 30.0)];
        let c = vec![("x".to_string(), 2.0), ("y".to_string(), 20.0)];
        assert_eq!(
            median_breakdown(&[a, b, c]),
            vec![("x".to_string(), 2.0), ("y".to_string(), 20.0)]
        );
    }
}
