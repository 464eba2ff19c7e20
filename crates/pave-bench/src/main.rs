//! `pave-bench`: in one run, how many no-op actions per second pave's engine
//! completes on SQLite and PostgreSQL compared with each database's raw
//! single-row commit rate, the footprint of `pave serve` (start-to-ready
//! time and idle memory), and on the local target how long provisioning a
//! PostgreSQL and deploying the demo service take through pave compared with
//! doing the same by hand, and the remediation loop through a real `pave
//! serve`: how soon a crash-looping revision becomes an incident, and the
//! time from the bad deploy until pave has rolled it back and verified it,
//! and 1,000 simulated remote agents on one `pave serve`: command dispatch
//! latency, idle control-plane CPU and memory per connected agent.
//!
//! Temporary databases, data directories and the PostgreSQL cluster live under
//! `$TMPDIR` (default `/tmp`), so every figure is taken on the same filesystem.
//! A missed target is reported, not an error: the exit status is non-zero only
//! when a measurement could not be taken.

mod agents_bench;
mod cpu;
mod engine_bench;
mod local_bench;
mod policy_bench;
mod remediation_bench;
mod report;
mod serve_bench;
mod serve_child;
mod timed_store;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

use engine_bench::{CommitFigures, EngineFigures};
use report::{round, thousands, verdict, Report};

/// Targets.
const TARGET_ACTIONS_PER_SEC: f64 = 2000.0;
const TARGET_RATIO_PCT: f64 = 25.0;
const TARGET_READY_MS: f64 = 300.0;
const TARGET_RSS_MB: f64 = 50.0;
const TARGET_POLICY_PCT: f64 = 10.0;

/// The sections of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Engine no-op actions and raw commits on SQLite.
    Sqlite,
    /// The same on a throwaway PostgreSQL.
    Postgres,
    /// `pave serve` start-to-ready and idle memory.
    Serve,
    /// Local target: PostgreSQL provision and demo deploy, through pave and by hand.
    Local,
    /// The remediation loop through `pave serve`: crash → incident latency and MTTR.
    Remediation,
    /// Simulated remote agents on one `pave serve`: dispatch latency, idle CPU, memory per agent.
    Agents,
}

/// Benchmarks pave: engine throughput against the database's raw commit rate
/// (SQLite, PostgreSQL), `pave serve` start-to-ready time and idle memory, and
/// local provision-to-ready and deploy-to-ready against doing it by hand, and
/// the remediation loop's crash → incident latency and MTTR, and many remote
/// agents on one `pave serve`.
#[derive(Debug, Parser)]
#[command(name = "pave-bench", version)]
struct Args {
    /// No-op actions to run per backend.
    #[arg(long, default_value_t = 20_000)]
    actions: u32,
    /// Concurrent submitter tasks.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Engine worker slots (actions run at once).
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Single-row commits for the raw commit rate, per backend.
    #[arg(long, default_value_t = 5_000)]
    commits: u32,
    /// Timed evaluations of the default policy pack (SQLite section).
    #[arg(long, default_value_t = 20_000)]
    policy_evals: u32,
    /// Give up on an engine run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Skip the PostgreSQL figures.
    #[arg(long)]
    skip_postgres: bool,
    /// Skip the `pave serve` footprint figures.
    #[arg(long)]
    skip_serve: bool,
    /// Skip the local target figures (PostgreSQL provision, demo deploy).
    #[arg(long)]
    skip_local: bool,
    /// Skip the remediation figures (crash → incident latency, MTTR).
    #[arg(long)]
    skip_remediation: bool,
    /// Skip the remote agents figures (dispatch latency, idle CPU, memory per agent).
    #[arg(long)]
    skip_agents: bool,
    /// Run only these sections (comma-separated), e.g. `--only local`.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// The `pave` binary (default: `pave` next to this executable).
    #[arg(long)]
    pave_bin: Option<PathBuf>,
    /// The `pave-demo` binary the local deploy runs (default: `pave-demo` next
    /// to this executable).
    #[arg(long)]
    demo_bin: Option<PathBuf>,
    /// How many times each local figure is taken, through pave and by hand.
    #[arg(long, default_value_t = 5)]
    local_runs: usize,
    /// How many times `pave serve` is started for the start-to-ready time.
    #[arg(long, default_value_t = 5)]
    serve_runs: usize,
    /// Rounds of the remediation figures (a fresh environment each).
    #[arg(long, default_value_t = 3)]
    remediation_rounds: usize,
    /// The `--verify-window` of the server the remediation figures start, in seconds.
    #[arg(long, default_value_t = 3.0)]
    remediation_window: f64,
    /// Simulated remote agents connected to one `pave serve`.
    #[arg(long, default_value_t = 1_000)]
    agents: usize,
    /// `noop` actions sent to the simulated agents for the dispatch latency.
    #[arg(long, default_value_t = 2_000)]
    agent_commands: usize,
    /// Submits per second of those actions.
    #[arg(long, default_value_t = 100.0)]
    agent_rate: f64,
    /// Also print every figure as one JSON object, on stdout (the text report
    /// then goes to stderr).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // sqlx brings rustls; the crypto provider must be chosen before any TLS is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::new(args.json);
    let ok = runtime.block_on(run(&args, &mut report));
    if args.json {
        println!("{}", report.json());
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every section; false when a measurement failed.
async fn run(args: &Args, report: &mut Report) -> bool {
    let tmp = std::env::temp_dir();
    report.line(format!(
        "pave-bench {}: {} no-op actions from {} submitters, {} workers; {} raw commits; {} local runs; temp dir {}",
        env!("CARGO_PKG_VERSION"),
        thousands(args.actions as f64),
        args.concurrency,
        args.workers,
        thousands(args.commits as f64),
        args.local_runs,
        tmp.display()
    ));
    report.set(
        "config",
        json!({
            "actions": args.actions,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "commits": args.commits,
            "local_runs": args.local_runs,
            "remediation_rounds": args.remediation_rounds,
            "agents": args.agents,
            "agent_commands": args.agent_commands,
            "agent_rate": args.agent_rate,
            "tmp_dir": tmp.display().to_string(),
        }),
    );
    let mut ok = true;

    if !wanted(args, Section::Sqlite) {
        report.set("sqlite", json!({ "skipped": "--only" }));
    } else {
        match sqlite_section(args, &tmp, report).await {
            Ok(v) => report.set("sqlite", v),
            Err(e) => {
                report.line(format!("sqlite    FAILED: {e:#}"));
                report.set("sqlite", json!({ "error": format!("{e:#}") }));
                ok = false;
            }
        }
    }

    if !wanted(args, Section::Postgres) {
        report.set("postgres", json!({ "skipped": "--only" }));
    } else if args.skip_postgres {
        report.line("postgres  skipped: --skip-postgres");
        report.set("postgres", json!({ "skipped": "--skip-postgres" }));
    } else {
        match postgres_section(args, report).await {
            Ok(v) => report.set("postgres", v),
            Err(e) => {
                report.line(format!("postgres  FAILED: {e:#}"));
                report.set("postgres", json!({ "error": format!("{e:#}") }));
                ok = false;
            }
        }
    }

    if !wanted(args, Section::Serve) {
        report.set("serve", json!({ "skipped": "--only" }));
    } else if args.skip_serve {
        report.line("serve     skipped: --skip-serve");
        report.set("serve", json!({ "skipped": "--skip-serve" }));
    } else {
        match serve_section(args, &tmp, report).await {
            Ok(v) => report.set("serve", v),
            Err(e) => {
                report.line(format!("serve     FAILED: {e:#}"));
                report.set("serve", json!({ "error": format!("{e:#}") }));
                ok = false;
            }
        }
    }

    if !wanted(args, Section::Local) {
        report.set("local", json!({ "skipped": "--only" }));
    } else if args.skip_local {
        report.line("local     skipped: --skip-local");
        report.set("local", json!({ "skipped": "--skip-local" }));
    } else {
        match local_config(args, &tmp) {
            Ok(cfg) => {
                let (v, local_ok) = local_bench::section(&cfg, report).await;
                report.set("local", v);
                ok &= local_ok;
            }
            Err(e) => {
                report.line(format!("local     FAILED: {e:#}"));
                report.set("local", json!({ "error": format!("{e:#}") }));
                ok = false;
            }
        }
    }

    if !wanted(args, Section::Remediation) {
        report.set("remediation", json!({ "skipped": "--only" }));
    } else if args.skip_remediation {
        report.line("remediation skipped: --skip-remediation");
        report.set("remediation", json!({ "skipped": "--skip-remediation" }));
    } else {
        match remediation_config(args, &tmp) {
            Ok(cfg) => {
                let (v, rem_ok) = remediation_bench::section(&cfg, report).await;
                report.set("remediation", v);
                ok &= rem_ok;
            }
            Err(e) => {
                report.line(format!("remediation FAILED: {e:#}"));
                report.set("remediation", json!({ "error": format!("{e:#}") }));
                ok = false;
            }
        }
    }

    if !wanted(args, Section::Agents) {
        report.set("agents", json!({ "skipped": "--only" }));
    } else if args.skip_agents {
        report.line("agents    skipped: --skip-agents");
        report.set("agents", json!({ "skipped": "--skip-agents" }));
    } else {
        match agents_config(args, &tmp) {
            Ok(cfg) => {
                let (v, agents_ok) = agents_bench::section(&cfg, report).await;
                report.set("agents", v);
                ok &= agents_ok;
            }
            Err(e) => {
                report.line(format!("agents    FAILED: {e:#}"));
                report.set("agents", json!({ "error": format!("{e:#}") }));
                ok = false;
            }
        }
    }
    ok
}

/// Whether `--only` leaves `section` in (no `--only`: every section).
fn wanted(args: &Args, section: Section) -> bool {
    args.only.is_empty() || args.only.contains(&section)
}

/// `name` in the directory of this executable.
fn next_to_exe(name: &str) -> Result<PathBuf> {
    Ok(std::env::current_exe()
        .context("could not find this executable's path")?
        .parent()
        .context("this executable has no parent directory")?
        .join(name))
}

fn local_config(args: &Args, tmp: &Path) -> Result<local_bench::LocalConfig> {
    Ok(local_bench::LocalConfig {
        tmp: tmp.to_path_buf(),
        pave_bin: match &args.pave_bin {
            Some(p) => p.clone(),
            None => next_to_exe("pave")?,
        },
        demo_bin: match &args.demo_bin {
            Some(p) => p.clone(),
            None => next_to_exe("pave-demo")?,
        },
        runs: args.local_runs,
    })
}

/// `DEMO_CRASH_AFTER_SECS` of the remediation figures' bad deploy.
const REMEDIATION_CRASH_AFTER_SECS: u64 = 1;

fn remediation_config(args: &Args, tmp: &Path) -> Result<remediation_bench::RemediationConfig> {
    let window = Duration::try_from_secs_f64(args.remediation_window).with_context(|| {
        format!(
            "--remediation-window {} is not a duration",
            args.remediation_window
        )
    })?;
    Ok(remediation_bench::RemediationConfig {
        tmp: tmp.to_path_buf(),
        pave_bin: match &args.pave_bin {
            Some(p) => p.clone(),
            None => next_to_exe("pave")?,
        },
        rounds: args.remediation_rounds,
        verify_window: window,
        crash_after_secs: REMEDIATION_CRASH_AFTER_SECS,
    })
}

fn agents_config(args: &Args, tmp: &Path) -> Result<agents_bench::AgentsConfig> {
    if !(args.agent_rate > 0.0 && args.agent_rate.is_finite()) {
        anyhow::bail!("--agent-rate {} is not a positive rate", args.agent_rate);
    }
    Ok(agents_bench::AgentsConfig {
        tmp: tmp.to_path_buf(),
        pave_bin: match &args.pave_bin {
            Some(p) => p.clone(),
            None => next_to_exe("pave")?,
        },
        agents: args.agents,
        commands: args.agent_commands,
        rate: args.agent_rate,
    })
}

async fn sqlite_section(args: &Args, tmp: &Path, report: &Report) -> Result<Value> {
    let base = tempfile::Builder::new()
        .prefix("pave-bench-")
        .tempdir_in(tmp)
        .with_context(|| format!("could not create a temporary directory under {}", tmp.display()))?;

    let raw_dir = base.path().join("raw");
    std::fs::create_dir_all(&raw_dir).with_context(|| format!("could not create {}", raw_dir.display()))?;
    let raw_url = format!("sqlite://{}", raw_dir.join("pave.db").display());
    let raw_store = pave_store::open(&raw_url)
        .await
        .with_context(|| format!("could not open {raw_url}"))?;
    let raw = engine_bench::bench_commits(&raw_store, args.commits).await?;
    drop(raw_store);
    let stmt_dir = base.path().join("statements");
    std::fs::create_dir_all(&stmt_dir).with_context(|| format!("could not create {}", stmt_dir.display()))?;
    let stmt = engine_bench::sqlite_statements_in_one_tx(&stmt_dir.join("pave.db"), args.commits).await?;

    let engine_dir = base.path().join("engine");
    std::fs::create_dir_all(&engine_dir)
        .with_context(|| format!("could not create {}", engine_dir.display()))?;
    let url = format!("sqlite://{}", engine_dir.join("pave.db").display());
    let store = pave_store::open(&url)
        .await
        .with_context(|| format!("could not open {url}"))?;
    let engine = engine_bench::bench_engine(
        store,
        &engine_dir,
        args.actions,
        args.concurrency,
        args.workers,
        Duration::from_secs(args.timeout),
    )
    .await?;
    let mut figures = backend_figures(report, "sqlite", &engine, &raw, &stmt);
    let evals = args.policy_evals;
    let policy = tokio::task::spawn_blocking(move || policy_bench::bench_policy(evals))
        .await
        .context("the policy benchmark panicked")??;
    if let Value::Object(map) = &mut figures {
        map.insert(
            "policy".into(),
            policy_figures(report, "sqlite", &policy, engine.actions_per_sec()),
        );
    }
    Ok(figures)
}

/// Prints the policy line, against the no-op action cost of the same run, and
/// returns its JSON figures.
fn policy_figures(
    report: &Report,
    name: &str,
    policy: &policy_bench::PolicyFigures,
    actions_per_sec: f64,
) -> Value {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (median, p99) = (us(policy.median), us(policy.p99));
    let action_us = 1e6 / actions_per_sec;
    let pct = 100.0 * median / action_us;
    let met = pct <= TARGET_POLICY_PCT;
    report.line(format!(
        "{name:<9} policy per action         {median:>10.1} us          no-op action {action_us:.1} us, policy adds {pct:.1} %   target: policy adds <= {TARGET_POLICY_PCT} % to a no-op action: {}  (default pack, {} modules; median of {} evaluations of a production deploy, p99 {p99:.1} us)",
        verdict(met),
        policy.modules,
        thousands(policy.evaluations as f64),
    ));
    json!({
        "evaluations": policy.evaluations,
        "modules": policy.modules,
        "median_us": round(median, 2),
        "p99_us": round(p99, 2),
        "noop_action_us": round(action_us, 2),
        "ratio_pct": round(pct, 2),
        "target_ratio_pct": TARGET_POLICY_PCT,
        "target_met": met,
    })
}

async fn postgres_section(args: &Args, report: &Report) -> Result<Value> {
    let started = tokio::task::spawn_blocking(|| pave_testkit::PgCluster::start(true)).await;
    let cluster = match started {
        Ok(Ok(c)) => c,
        Ok(Err(reason)) => return Ok(pg_skipped(report, reason)),
        Err(e) => return Ok(pg_skipped(report, format!("starting the cluster panicked: {e}"))),
    };
    let figures = postgres_figures(args, &cluster, report).await;
    // Stopping the cluster waits for pg_ctl: off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
    figures
}

fn pg_skipped(report: &Report, reason: String) -> Value {
    let reason = reason.trim().replace('\n', " | ");
    report.line(format!("postgres  skipped: {reason}"));
    json!({ "skipped": reason })
}

async fn postgres_figures(args: &Args, cluster: &pave_testkit::PgCluster, report: &Report) -> Result<Value> {
    if let Err(e) = create_databases(&cluster.url("postgres")).await {
        return Ok(pg_skipped(report, format!("{e:#}")));
    }
    let raw_store = pave_store::open(&cluster.url("pave_bench_raw"))
        .await
        .context("could not open database pave_bench_raw")?;
    let raw = engine_bench::bench_commits(&raw_store, args.commits).await?;
    drop(raw_store);
    let stmt = engine_bench::pg_statements_in_one_tx(&cluster.url("pave_bench_raw"), args.commits).await?;

    let store = pave_store::open(&cluster.url("pave_bench_engine"))
        .await
        .context("could not open database pave_bench_engine")?;
    let agent_root = tempfile::Builder::new()
        .prefix("pave-bench-pg-agent-")
        .tempdir()
        .context("could not create a temporary directory")?;
    let engine = engine_bench::bench_engine(
        store,
        agent_root.path(),
        args.actions,
        args.concurrency,
        args.workers,
        Duration::from_secs(args.timeout),
    )
    .await?;
    Ok(backend_figures(report, "postgres", &engine, &raw, &stmt))
}

async fn create_databases(admin_url: &str) -> Result<()> {
    let admin = sqlx::PgPool::connect(admin_url)
        .await
        .context("could not connect to the throwaway PostgreSQL")?;
    for db in [
        "CREATE DATABASE pave_bench_engine",
        "CREATE DATABASE pave_bench_raw",
    ] {
        sqlx::query(db)
            .execute(&admin)
            .await
            .with_context(|| format!("`{db}` failed"))?;
    }
    admin.close().await;
    Ok(())
}

/// Prints a backend's lines and returns its JSON figures.
fn backend_figures(
    report: &Report,
    name: &str,
    engine: &EngineFigures,
    raw: &CommitFigures,
    stmt: &CommitFigures,
) -> Value {
    let aps = engine.actions_per_sec();
    let cps = raw.commits_per_sec();
    let ratio = 100.0 * aps / cps;
    let aps_met = aps >= TARGET_ACTIONS_PER_SEC;
    let ratio_met = ratio >= TARGET_RATIO_PCT;
    let drain = engine.elapsed.saturating_sub(engine.submit_phase);
    report.line(format!(
        "{name:<9} engine no-op actions      {:>10} actions/s   target >= {} actions/s: {:<13}  ({} succeeded in {:.2} s; submits done after {:.2} s = {} submits/s, then {:.2} s to finish the rest)",
        thousands(aps),
        thousands(TARGET_ACTIONS_PER_SEC),
        verdict(aps_met),
        thousands(engine.succeeded as f64),
        engine.elapsed.as_secs_f64(),
        engine.submit_phase.as_secs_f64(),
        thousands(engine.actions as f64 / engine.submit_phase.as_secs_f64()),
        drain.as_secs_f64(),
    ));
    report.line(format!(
        "{name:<9} raw single-row commits    {:>10} commits/s   ({} commits in {:.2} s, each its own transaction)",
        thousands(cps),
        thousands(raw.commits as f64),
        raw.elapsed.as_secs_f64(),
    ));
    report.line(format!(
        "{name:<9} (info) statements in 1 tx {:>10} statements/s (~{:.0} us each: {} INSERTs then one commit, same settings)",
        thousands(stmt.commits_per_sec()),
        1e6 / stmt.commits_per_sec(),
        thousands(stmt.commits as f64),
    ));
    report.line(format!(
        "{name:<9} actions/s / commits/s     {:>10.1} %           target >= {TARGET_RATIO_PCT} %: {}",
        ratio,
        verdict(ratio_met),
    ));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p99, max) = (
        ms(engine.submit_latency(50)),
        ms(engine.submit_latency(99)),
        ms(engine.submit_latency(100)),
    );
    let cpu_text = match &engine.cpu {
        Some(u) => {
            let busiest: Vec<String> = u
                .threads
                .iter()
                .take(4)
                .map(|t| format!("{} [{}] {:.0}%", t.name, t.tid, t.pct))
                .collect();
            format!(
                "; CPU {:.0}% of one core ({} cores), busiest threads: {}",
                u.process_pct,
                u.cores,
                busiest.join(", ")
            )
        }
        None => String::new(),
    };
    report.line(format!(
        "{name:<9} (info) submit latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms{cpu_text}"
    ));
    let st = &engine.store;
    let per = |d: Duration, n: u64| if n == 0 { 0.0 } else { ms(d) / n as f64 };
    let busy_pct = 100.0 * st.writer_busy.as_secs_f64() / engine.elapsed.as_secs_f64();
    report.line(format!(
        "{name:<9} (info) store writes: {} transactions of {:.1} requests on average, {:.2} ms each; \
         {} claims of {:.1} actions on average, {:.2} ms each; a write or claim was in flight {:.0}% of the run; \
         {} reads, {:.2} ms each",
        thousands(st.writes as f64),
        st.write_requests as f64 / st.writes.max(1) as f64,
        per(st.write_time, st.writes),
        thousands(st.claims as f64),
        st.claimed as f64 / st.claims.max(1) as f64,
        per(st.claim_time, st.claims),
        busy_pct,
        thousands(st.reads as f64),
        per(st.read_time, st.reads),
    ));
    if !engine.other.is_empty() {
        let states: Vec<String> = engine.other.iter().map(|(s, n)| format!("{s}={n}")).collect();
        report.line(format!(
            "{name:<9} WARNING: {} of {} actions did not succeed: {}",
            engine.actions as u64 - engine.succeeded.min(engine.actions as u64),
            engine.actions,
            states.join(", ")
        ));
    }
    json!({
        "actions": engine.actions,
        "succeeded": engine.succeeded,
        "not_succeeded": engine.other,
        "elapsed_s": round(engine.elapsed.as_secs_f64(), 3),
        "submit_phase_s": round(engine.submit_phase.as_secs_f64(), 3),
        "actions_per_sec": round(aps, 1),
        "raw_commits": raw.commits,
        "raw_elapsed_s": round(raw.elapsed.as_secs_f64(), 3),
        "statements_in_one_tx_per_sec": round(stmt.commits_per_sec(), 1),
        "commits_per_sec": round(cps, 1),
        "ratio_pct": round(ratio, 2),
        "target_actions_per_sec": TARGET_ACTIONS_PER_SEC,
        "actions_target_met": aps_met,
        "target_ratio_pct": TARGET_RATIO_PCT,
        "ratio_target_met": ratio_met,
        "store_calls": {
            "write_transactions": st.writes,
            "write_requests": st.write_requests,
            "write_ms_avg": round(per(st.write_time, st.writes), 3),
            "claims": st.claims,
            "claimed": st.claimed,
            "claim_ms_avg": round(per(st.claim_time, st.claims), 3),
            "writer_busy_pct": round(busy_pct, 1),
            "reads": st.reads,
            "read_ms_avg": round(per(st.read_time, st.reads), 3),
        },
        "submit_latency_ms": { "p50": round(p50, 2), "p99": round(p99, 2), "max": round(max, 2) },
        "cpu": engine.cpu.as_ref().map(|u| json!({
            "process_pct_of_one_core": round(u.process_pct, 1),
            "cores": u.cores,
            "busiest_threads": u.threads.iter().take(4).map(|t| json!({
                "name": t.name, "tid": t.tid, "pct_of_one_core": round(t.pct, 1),
            })).collect::<Vec<_>>(),
        })),
    })
}

async fn serve_section(args: &Args, tmp: &Path, report: &Report) -> Result<Value> {
    let pave = match &args.pave_bin {
        Some(p) => p.clone(),
        None => next_to_exe("pave")?,
    };
    let runs = args.serve_runs;
    let tmp = tmp.to_path_buf();
    let bin = pave.clone();
    let f = tokio::task::spawn_blocking(move || {
        serve_bench::bench_serve(&bin, &tmp, runs, Duration::from_secs(2))
    })
    .await
    .context("the serve benchmark panicked")??;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let min = ms(f.min());
    let median = ms(f.median());
    let ready_met = median < TARGET_READY_MS;
    // /proc reports KiB; MB here is 10^6 bytes (the stricter reading of the target).
    let rss_mb = f.idle_rss_kib as f64 * 1024.0 / 1e6;
    let rss_met = rss_mb < TARGET_RSS_MB;
    let all: Vec<String> = f.ready.iter().map(|d| format!("{:.1}", ms(*d))).collect();
    report.line(format!(
        "serve     start-to-ready            min {min:.1} ms, median {median:.1} ms   target < {TARGET_READY_MS} ms (median): {:<13}  ({} runs: {} ms; {})",
        verdict(ready_met),
        f.ready.len(),
        all.join(", "),
        pave.display(),
    ));
    report.line(format!(
        "serve     idle RSS                  {:>10.1} MB          target < {TARGET_RSS_MB} MB: {:<13}  (VmRSS {} kB after {} s idle; peak VmHWM {} kB)",
        rss_mb,
        verdict(rss_met),
        f.idle_rss_kib,
        f.idle.as_secs(),
        f.peak_rss_kib,
    ));
    Ok(json!({
        "pave_bin": pave.display().to_string(),
        "runs": f.ready.len(),
        "start_to_ready_ms": f.ready.iter().map(|d| round(ms(*d), 2)).collect::<Vec<_>>(),
        "start_to_ready_min_ms": round(min, 2),
        "start_to_ready_median_ms": round(median, 2),
        "target_start_to_ready_ms": TARGET_READY_MS,
        "start_to_ready_target_met": ready_met,
        "idle_s": f.idle.as_secs(),
        "idle_rss_kib": f.idle_rss_kib,
        "idle_rss_mb": round(rss_mb, 2),
        "peak_rss_kib": f.peak_rss_kib,
        "target_rss_mb": TARGET_RSS_MB,
        "rss_target_met": rss_met,
    }))
}
