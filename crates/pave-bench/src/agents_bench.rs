//! Many remote agents on one control plane: `--agents` (1,000) simulated
//! agents — light clients speaking the real agent protocol over real TLS
//! WebSockets on loopback — connected to one `pave serve` child process.
//!
//! Each simulated agent has its own target (`POST /api/v1/targets`), its own
//! environment on it, and its own credential (redeemed at
//! `/agent/v1/enroll`); it connects to `/agent/v1/connect`, answers the
//! server's `hello`, sends a heartbeat every 5 s and answers the server's,
//! and answers every `command` at once with `succeeded` (it executes
//! nothing). Three figures, in one run:
//!
//! * **memory per connected agent**: the server's `VmRSS` with every agent
//!   connected, minus its `VmRSS` just before the first connected (targets,
//!   environments and credentials made), divided by the number of agents;
//! * **idle control-plane CPU**: the server's utime + stime over
//!   [`IDLE_WINDOW`] with every agent connected and nothing submitted, in
//!   percent of one core;
//! * **command dispatch latency**: `--agent-commands` `noop` actions
//!   submitted through the HTTP API at `--agent-rate` per second (open loop),
//!   round robin over the agents' environments; per command, from the moment
//!   the bench starts the `POST /api/v1/actions` to the moment the simulated
//!   agent decodes the `command` frame. End to end (to the agent receiving
//!   the `ack`, which the server sends once the step's and the action's end
//!   are stored) is reported beside it.
//!
//! The server and the simulated agents share this machine's cores; the
//! bench's own CPU use is reported next to the server's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use pave_agent::protocol::{FromAgent, Outcome, ToAgent, CAPABILITIES, PROTOCOL_VERSION};
use pave_agent::tls::CaPin;
use pave_agent::wire::{self, Enrolled, Frame};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

use crate::report::{round, thousands, verdict, Report};
use crate::serve_child::ServeChild;

/// Target of the command dispatch latency's p99.
pub const TARGET_DISPATCH_P99_MS: f64 = 100.0;
/// Target of the idle control plane's CPU use, percent of one core.
pub const TARGET_IDLE_CPU_PCT: f64 = 25.0;

/// API calls (targets, environments, enrollments) made at once.
const SETUP_CONCURRENCY: usize = 16;
/// Agents dialling at once.
const CONNECT_CONCURRENCY: usize = 32;
/// How long the connected agents are left alone before the idle figures.
const SETTLE: Duration = Duration::from_secs(3);
/// The idle CPU window.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// The idle CPU window of the baselines (the same server without agents).
const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// The idle CPU window of the empty server.
const EMPTY_WINDOW: Duration = Duration::from_secs(5);
/// Longest wait for the last command's ack after the last submit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one HTTP call or one dial may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Clock ticks per second of /proc's utime and stime (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// What the section needs.
pub struct AgentsConfig {
    /// Where the data directory goes.
    pub tmp: PathBuf,
    /// The `pave` binary.
    pub pave_bin: PathBuf,
    /// Simulated agents.
    pub agents: usize,
    /// `noop` actions for the dispatch latency.
    pub commands: usize,
    /// Submits per second.
    pub rate: f64,
}

/// Runs the section and prints its lines; the JSON figures and whether every
/// measurement was taken.
pub async fn section(cfg: &AgentsConfig, report: &Report) -> (Value, bool) {
    let started = Instant::now();
    let mut server = None;
    let mut result = run(cfg, report, &mut server).await;
    if let (Err(e), Some(s)) = (&mut result, server.as_mut()) {
        // Say why when the server is the one that failed.
        let exited = s.0.exited();
        if let Some(status) = exited {
            let why = format!("pave serve exited with {status}: {}", s.log_tail());
            *e = anyhow::anyhow!("{e:#}; {why}");
        }
    }
    let stopped = match server.take() {
        Some(mut s) => s.stop().await,
        None => Ok(()),
    };
    let mut ok = true;
    let mut figures = match result {
        Ok(v) => v,
        Err(e) => {
            report.line(format!("agents    FAILED: {e:#}"));
            ok = false;
            json!({ "error": format!("{e:#}") })
        }
    };
    match &stopped {
        Ok(()) => report.line(format!(
            "agents    (info) cleanup: server stopped, data directory removed; section took {:.1} s",
            started.elapsed().as_secs_f64()
        )),
        Err(e) => {
            report.line(format!("agents    cleanup FAILED: {e:#}"));
            ok = false;
        }
    }
    if let Value::Object(map) = &mut figures {
        map.insert(
            "section_s".into(),
            json!(round(started.elapsed().as_secs_f64(), 2)),
        );
    }
    if figures.get("lost_commands").and_then(Value::as_u64).unwrap_or(0) > 0
        || figures.get("agents_dropped").and_then(Value::as_u64).unwrap_or(0) > 0
    {
        ok = false;
    }
    (figures, ok)
}

async fn run(cfg: &AgentsConfig, report: &Report, slot: &mut Option<Server>) -> Result<Value> {
    let n = cfg.agents.max(1);
    let (soft, hard) = raise_nofile_limit().context("could not raise the open-file limit")?;
    let need = (n + 256) as u64;
    if soft < need {
        bail!("the open-file limit is {soft} (hard {hard}); {n} agents need at least {need}");
    }
    let server = slot.insert(Server::start(cfg).await?);
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    report.line(format!(
        "agents    (info) {} simulated agents (TLS WebSocket clients in this process, the real protocol) on one `pave serve` (pid {}); \
         the server and the clients share this machine's {cores} cores; RLIMIT_NOFILE {soft} (hard {hard}), inherited by the server",
        thousands(n as f64),
        server.pid(),
    ));

    // The baselines: the same server idle with nothing in it, and later with
    // the targets and environments but no agent connected.
    let idle_empty = idle_cpu(server.pid(), EMPTY_WINDOW).await?;

    // Targets, environments, credentials.
    let rss_empty = server.rss_kib()?;
    let t = Instant::now();
    let tokens: Vec<String> = in_parallel(n, SETUP_CONCURRENCY, |i| {
        let server = &*server;
        async move {
            let body = json!({ "name": format!("sim-{i}"), "kind": "local", "agent": true });
            let added = server.call("POST", "/api/v1/targets", Some(&body)).await?;
            added["enrollment_token"]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("no enrollment_token in {added}"))
        }
    })
    .await
    .context("adding the targets")?;
    let targets_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    in_parallel(n, SETUP_CONCURRENCY, |i| {
        let server = &*server;
        async move {
            let body = json!({ "name": format!("env-{i}"), "target": format!("sim-{i}") });
            server
                .call("POST", "/api/v1/environments", Some(&body))
                .await
                .map(drop)
        }
    })
    .await
    .context("creating the environments")?;
    let envs_s = t.elapsed().as_secs_f64();
    let rss_targets = server.rss_kib()?;
    let tls = pave_agent::tls::client_config(&CaPin::File(server.data_dir.join("tls").join("ca.pem")))
        .context("the agent TLS configuration")?;
    let agent_addr = server.agent_addr;
    let t = Instant::now();
    let credentials: Vec<String> = in_parallel(n, SETUP_CONCURRENCY, |i| {
        let tls = tls.clone();
        let token = tokens[i].clone();
        async move {
            enroll(agent_addr, &tls, &token)
                .await
                .with_context(|| format!("sim-{i}"))
        }
    })
    .await
    .context("enrolling the agents")?;
    let enroll_s = t.elapsed().as_secs_f64();
    report.line(format!(
        "agents    (info) setup: {} targets added in {targets_s:.2} s, {} environments in {envs_s:.2} s, {} agents enrolled in {enroll_s:.2} s ({SETUP_CONCURRENCY} API calls or enrollments at a time)",
        thousands(n as f64),
        thousands(n as f64),
        thousands(n as f64),
    ));

    // Connect every agent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_targets = idle_cpu(server.pid(), BASELINE_WINDOW).await?;
    let rss_before = server.rss_kib()?;
    let bench_rss_before = rss_kib("self")?;
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu_connect = ServerCpu::take(server.pid());
    let t = Instant::now();
    let connected: Vec<(Duration, tokio::task::JoinHandle<()>)> = in_parallel(n, CONNECT_CONCURRENCY, |i| {
        let tls = tls.clone();
        let credential = credentials[i].clone();
        let shared = shared.clone();
        let stop = stop_rx.clone();
        async move {
            let t = Instant::now();
            let ws = connect(agent_addr, &tls, &credential, i)
                .await
                .with_context(|| format!("sim-{i}"))?;
            let took = t.elapsed();
            Ok((took, tokio::spawn(agent(ws, shared, stop))))
        }
    })
    .await
    .context("connecting the agents")?;
    let connect_s = t.elapsed().as_secs_f64();
    let connect_cpu = cpu_connect.map(|c| c.pct());
    let (connect_times, tasks): (Vec<Duration>, Vec<_>) = connected.into_iter().unzip();
    let connect_ms: Vec<f64> = connect_times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    // The server's view: a sample of targets must show their agent connected.
    let sample: Vec<usize> = (0..10).map(|k| k * n / 10).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    for &i in &sample {
        loop {
            let v = server
                .call("GET", &format!("/api/v1/targets/sim-{i}"), None)
                .await?;
            if v["agent_status"]["connected"] == true {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the server does not show the agent of sim-{i} connected: {}",
                    v["agent_status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    report.line(format!(
        "agents    (info) connect: {} agents connected in {connect_s:.2} s ({CONNECT_CONCURRENCY} dialling at a time; dial → TLS → upgrade → hello p50 {:.1} ms, p99 {:.1} ms; server CPU {} of one core meanwhile); {} of {} sampled targets show their agent connected",
        thousands(n as f64),
        percentile(&connect_ms, 50.0),
        percentile(&connect_ms, 99.0),
        connect_cpu.map_or("?".into(), |p| format!("{p:.0} %")),
        sample.len(),
        sample.len(),
    ));

    // Idle: memory, then CPU.
    tokio::time::sleep(SETTLE).await;
    let rss_after = server.rss_kib()?;
    let bench_rss_after = rss_kib("self")?;
    let bench_per_agent_kib = (bench_rss_after as f64 - bench_rss_before as f64) / n as f64;
    let per_agent_kib = (rss_after as f64 - rss_before as f64) / n as f64;
    let per_agent_from_targets = (rss_after as f64 - rss_targets as f64) / n as f64;
    report.line(format!(
        "agents    memory per connected agent   {per_agent_kib:>8.1} KiB         baseline: the same server before any agent connected, VmRSS {:.1} MB → {:.1} MB with {} connected  \
         ((after − before) / {}; {:.1} KiB per agent counted from before the enrollments, whose freed memory the server keeps; VmRSS with no targets {:.1} MB; \
         the simulated agents, with the same TLS and WebSocket libraries and settings: {:.1} KiB per connection in this process)",
        mb(rss_before),
        mb(rss_after),
        thousands(n as f64),
        thousands(n as f64),
        per_agent_from_targets,
        mb(rss_empty),
        bench_per_agent_kib,
    ));
    let idle = idle_cpu(server.pid(), IDLE_WINDOW).await?;
    let idle_pct = idle.server_pct;
    let idle_met = idle_pct < TARGET_IDLE_CPU_PCT;
    report.line(format!(
        "agents    idle control-plane CPU       {idle_pct:>8.1} % of one core  target < {TARGET_IDLE_CPU_PCT} %: {:<13}  baseline: the same server idle before any agent connected {:.1} % ({} targets and environments; {:.1} % with none)  ({} agents connected, nothing submitted, {} s of the server's utime + stime; busiest threads {} (before the agents: {}); the simulated agents used {} of one core meanwhile)",
        verdict(idle_met),
        idle_targets.server_pct,
        thousands(n as f64),
        idle_empty.server_pct,
        thousands(n as f64),
        IDLE_WINDOW.as_secs(),
        idle.busiest(),
        idle_targets.busiest(),
        idle.bench_pct.map_or("?".into(), |p| format!("{p:.1} %")),
    ));

    // Dispatch latency.
    let dispatch = dispatch_phase(cfg, server, &shared).await?;
    let d = &dispatch;
    let dispatch_met = d.lost == 0 && d.p(&d.dispatch_ms, 99.0) < TARGET_DISPATCH_P99_MS;
    report.line(format!(
        "agents    command dispatch latency     p50 {:.1} ms, p99 {:.1} ms   target p99 < {TARGET_DISPATCH_P99_MS} ms: {:<13}  ({} noop actions at {}/s, round robin over {} agents' environments; from starting POST /api/v1/actions to the agent decoding the command frame; max {:.1} ms{})",
        d.p(&d.dispatch_ms, 50.0),
        d.p(&d.dispatch_ms, 99.0),
        verdict(dispatch_met),
        thousands(d.submitted as f64),
        cfg.rate,
        thousands(n as f64),
        d.p(&d.dispatch_ms, 100.0),
        if d.lost > 0 {
            format!("; {} commands NEVER reached their agent", d.lost)
        } else {
            String::new()
        },
    ));
    report.line(format!(
        "agents    (info) end to end (submit → the agent receives the ack, sent once the action's end is stored) p50 {:.1} ms, p99 {:.1} ms; HTTP answer to the submit p50 {:.1} ms, p99 {:.1} ms; \
         server timestamps: created → step started p50 {:.0} ms, p99 {:.0} ms, created → succeeded p50 {:.0} ms, p99 {:.0} ms ({} of {} succeeded); \
         server CPU {} of one core, the bench {} (submitter and agents) while submitting",
        d.p(&d.e2e_ms, 50.0),
        d.p(&d.e2e_ms, 99.0),
        d.p(&d.answer_ms, 50.0),
        d.p(&d.answer_ms, 99.0),
        d.p(&d.started_ms, 50.0),
        d.p(&d.started_ms, 99.0),
        d.p(&d.succeeded_ms, 50.0),
        d.p(&d.succeeded_ms, 99.0),
        thousands(d.succeeded as f64),
        thousands(d.submitted as f64),
        d.server_cpu.map_or("?".into(), |p| format!("{p:.0} %")),
        d.bench_cpu.map_or("?".into(), |p| format!("{p:.0} %")),
    ));

    // Disconnect every agent; the server should give the memory back.
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let dropped = shared.dropped.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let unexpected = shared.unexpected.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_gone = server.rss_kib()?;
    // Once more: memory the server kept after the first round should be reused, not added to.
    let shared2 = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let t = Instant::now();
    let tasks: Vec<tokio::task::JoinHandle<()>> = in_parallel(n, CONNECT_CONCURRENCY, |i| {
        let tls = tls.clone();
        let credential = credentials[i].clone();
        let shared = shared2.clone();
        let stop = stop_rx.clone();
        async move {
            let ws = connect(agent_addr, &tls, &credential, i)
                .await
                .with_context(|| format!("sim-{i}, connecting again"))?;
            Ok(tokio::spawn(agent(ws, shared, stop)))
        }
    })
    .await
    .context("connecting the agents again")?;
    let reconnect_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_again = server.rss_kib()?;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let dropped_again = shared2.dropped.lock().unwrap_or_else(|p| p.into_inner()).len();
    report.line(format!(
        "agents    (info) all agents disconnected: server VmRSS {:.1} MB (was {:.1} MB connected, {:.1} MB before); all connected again in {reconnect_s:.2} s: {:.1} MB ({:+.1} KiB per agent over the first round); {} agent connections dropped by the server during the run, {unexpected} unexpected frames",
        mb(rss_gone),
        mb(rss_after),
        mb(rss_before),
        mb(rss_again),
        (rss_again as f64 - rss_after as f64) / n as f64,
        dropped.len() + dropped_again,
    ));
    if !dropped.is_empty() {
        report.line(format!(
            "agents    WARNING: the server dropped {} agents, e.g. {}",
            dropped.len(),
            dropped.iter().take(3).cloned().collect::<Vec<_>>().join(" | ")
        ));
    }

    Ok(json!({
        "agents": n,
        "cores": cores,
        "nofile_limit": soft,
        "setup_s": { "targets": round(targets_s, 2), "environments": round(envs_s, 2), "enrollments": round(enroll_s, 2) },
        "connect_s": round(connect_s, 2),
        "connect_ms": { "p50": round(percentile(&connect_ms, 50.0), 2), "p99": round(percentile(&connect_ms, 99.0), 2) },
        "connect_server_cpu_pct": connect_cpu.map(|p| round(p, 1)),
        "rss_kib": { "no_targets": rss_empty, "targets": rss_targets, "before_connect": rss_before, "connected": rss_after, "disconnected": rss_gone, "connected_again": rss_again },
        "reconnect_s": round(reconnect_s, 2),
        "memory_per_agent_kib": round(per_agent_kib, 2),
        "memory_per_agent_from_targets_kib": round(per_agent_from_targets, 2),
        "client_memory_per_agent_kib": round(bench_per_agent_kib, 2),
        "idle_window_s": IDLE_WINDOW.as_secs(),
        "idle_cpu_pct_of_one_core": round(idle_pct, 2),
        "idle_busiest_threads": idle.json_threads(),
        "idle_bench_cpu_pct": idle.bench_pct.map(|p| round(p, 1)),
        "baseline_idle_cpu_pct_targets_no_agents": round(idle_targets.server_pct, 2),
        "baseline_idle_busiest_threads": idle_targets.json_threads(),
        "baseline_idle_cpu_pct_empty": round(idle_empty.server_pct, 2),
        "baseline_window_s": BASELINE_WINDOW.as_secs(),
        "empty_window_s": EMPTY_WINDOW.as_secs(),
        "target_idle_cpu_pct": TARGET_IDLE_CPU_PCT,
        "idle_cpu_target_met": idle_met,
        "commands": d.submitted,
        "rate_per_s": cfg.rate,
        "dispatch_ms": d.summary(&d.dispatch_ms),
        "end_to_end_ms": d.summary(&d.e2e_ms),
        "submit_answer_ms": d.summary(&d.answer_ms),
        "server_created_to_started_ms": d.summary(&d.started_ms),
        "server_created_to_succeeded_ms": d.summary(&d.succeeded_ms),
        "succeeded": d.succeeded,
        "lost_commands": d.lost,
        "dispatch_server_cpu_pct": d.server_cpu.map(|p| round(p, 1)),
        "dispatch_bench_cpu_pct": d.bench_cpu.map(|p| round(p, 1)),
        "target_dispatch_p99_ms": TARGET_DISPATCH_P99_MS,
        "dispatch_target_met": dispatch_met,
        "agents_dropped": dropped.len() + dropped_again,
        "unexpected_frames": unexpected,
    }))
}

/// The server's (and this process's) CPU use over one idle window.
struct Idle {
    server_pct: f64,
    threads: Vec<(String, f64)>,
    bench_pct: Option<f64>,
}

impl Idle {
    fn busiest(&self) -> String {
        let t: Vec<String> = self
            .threads
            .iter()
            .take(3)
            .map(|(name, pct)| format!("{name} {pct:.1} %"))
            .collect();
        t.join(", ")
    }

    fn json_threads(&self) -> Vec<Value> {
        self.threads
            .iter()
            .take(3)
            .map(|(n, p)| json!({ "name": n, "pct": round(*p, 2) }))
            .collect()
    }
}

/// Samples the server's CPU (and this process's) over `window`.
async fn idle_cpu(pid: u32, window: Duration) -> Result<Idle> {
    let bench = crate::cpu::snapshot();
    let server = ServerCpu::take(pid).context("could not read the server's /proc/<pid>/stat")?;
    tokio::time::sleep(window).await;
    let (server_pct, threads) = server.pct_and_threads();
    let bench_pct = bench
        .zip(crate::cpu::snapshot())
        .map(|(b, a)| crate::cpu::usage(&b, &a).process_pct);
    Ok(Idle {
        server_pct,
        threads,
        bench_pct,
    })
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// Runs `f(0..n)`, `at_once` at a time; the results in order, or the first error.
async fn in_parallel<T, F, Fut>(n: usize, at_once: usize, f: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut out: Vec<(usize, T)> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move { fut.await.map(|v| (i, v)) }
        })
        .buffer_unordered(at_once)
        .collect::<Vec<Result<(usize, T)>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

// ---------------------------------------------------------------------------
// Dispatch latency

/// What the dispatch phase measured, in milliseconds.
struct Dispatch {
    submitted: usize,
    dispatch_ms: Vec<f64>,
    e2e_ms: Vec<f64>,
    answer_ms: Vec<f64>,
    started_ms: Vec<f64>,
    succeeded_ms: Vec<f64>,
    succeeded: usize,
    lost: usize,
    server_cpu: Option<f64>,
    bench_cpu: Option<f64>,
}

impl Dispatch {
    fn p(&self, v: &[f64], p: f64) -> f64 {
        percentile(v, p)
    }

    fn summary(&self, v: &[f64]) -> Value {
        json!({
            "n": v.len(),
            "p50": round(percentile(v, 50.0), 2),
            "p90": round(percentile(v, 90.0), 2),
            "p99": round(percentile(v, 99.0), 2),
            "max": round(percentile(v, 100.0), 2),
        })
    }
}

async fn dispatch_phase(cfg: &AgentsConfig, server: &Server, shared: &Arc<Shared>) -> Result<Dispatch> {
    let n = cfg.agents.max(1);
    let count = cfg.commands.max(1);
    let period = Duration::from_secs_f64(1.0 / cfg.rate.max(0.1));
    let server_cpu = ServerCpu::take(server.pid());
    let bench_before = crate::cpu::snapshot();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut submits = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(start + period * i as u32).await;
        let addr = server.addr;
        let token = server.token.clone();
        let env = format!("env-{}", i % n);
        submits.push(tokio::spawn(async move {
            let body = json!({ "kind": "noop", "env": env, "input": {} });
            let sent = Instant::now();
            let r = call(addr, &token, "POST", "/api/v1/actions", Some(&body)).await;
            let answered = Instant::now();
            let id = r.and_then(|v| {
                v["id"]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("no action id in {v}"))
            });
            (sent, answered, id)
        }));
    }
    let mut sent: Vec<(String, Instant, Instant)> = Vec::with_capacity(count);
    for s in submits {
        let (at, answered, id) = s.await.context("a submit task panicked")?;
        sent.push((id.context("submitting a noop action")?, at, answered));
    }
    // Until every command was acknowledged (or the drain timed out).
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let acked = {
            let acks = shared.acks.lock().unwrap_or_else(|p| p.into_inner());
            sent.iter().filter(|(id, ..)| acks.contains_key(id)).count()
        };
        if acked == sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_cpu = server_cpu.map(|c| c.pct());
    let bench_cpu = bench_before
        .zip(crate::cpu::snapshot())
        .map(|(b, a)| crate::cpu::usage(&b, &a).process_pct);
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    let (mut dispatch_ms, mut e2e_ms, mut answer_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0;
    {
        let cmds = shared.commands.lock().unwrap_or_else(|p| p.into_inner());
        let acks = shared.acks.lock().unwrap_or_else(|p| p.into_inner());
        for (id, at, answered) in &sent {
            answer_ms.push(ms(*at, *answered));
            match cmds.get(id) {
                Some(got) => dispatch_ms.push(ms(*at, *got)),
                None => {
                    lost += 1;
                    // A lost command counts as the slowest there is.
                    dispatch_ms.push(f64::INFINITY);
                }
            }
            if let Some(acked) = acks.get(id) {
                e2e_ms.push(ms(*at, *acked));
            }
        }
    }
    // The server's own timestamps (milliseconds), and the final states.
    let views: Vec<Value> = in_parallel(sent.len(), SETUP_CONCURRENCY, |i| {
        let id = sent[i].0.clone();
        async move { server.call("GET", &format!("/api/v1/actions/{id}"), None).await }
    })
    .await
    .context("reading the actions back")?;
    let (mut started_ms, mut succeeded_ms, mut succeeded) = (Vec::new(), Vec::new(), 0);
    for v in &views {
        let created = v["created_at"].as_f64();
        if let (Some(c), Some(s)) = (created, v["steps"][0]["started_at"].as_f64()) {
            started_ms.push(s - c);
        }
        if v["state"] == "succeeded" {
            succeeded += 1;
            if let (Some(c), Some(u)) = (created, v["updated_at"].as_f64()) {
                succeeded_ms.push(u - c);
            }
        }
    }
    Ok(Dispatch {
        submitted: sent.len(),
        dispatch_ms,
        e2e_ms,
        answer_ms,
        started_ms,
        succeeded_ms,
        succeeded,
        lost,
        server_cpu,
        bench_cpu,
    })
}

/// Nearest-rank percentile (`100`: the maximum); 0 for no values.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

// ---------------------------------------------------------------------------
// The simulated agents

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// What the agents saw, by action id.
#[derive(Default)]
struct Shared {
    /// When the agent decoded the action's command.
    commands: Mutex<HashMap<String, Instant>>,
    /// When the agent received the command's ack.
    acks: Mutex<HashMap<String, Instant>>,
    /// Frames that are not protocol messages.
    unexpected: AtomicUsize,
    /// Why a connection ended before the bench closed it.
    dropped: Mutex<Vec<String>>,
}

/// Opens a TLS WebSocket to `path` of the agent listener, presenting `bearer`
/// (what `pave agent`'s `dial` does).
async fn dial(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, path: &str, bearer: &str) -> Result<Ws> {
    let tcp = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connecting: timed out")?
        .context("connecting")?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string()).context("server name")?;
    let stream = tokio::time::timeout(
        CALL_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp),
    )
    .await
    .context("TLS: timed out")?
    .context("TLS")?;
    let mut request = format!("wss://{addr}{path}")
        .into_client_request()
        .context("the upgrade request")?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {bearer}")).context("the bearer token")?,
    );
    let (ws, _) = tokio::time::timeout(
        CALL_TIMEOUT,
        tokio_tungstenite::client_async_with_config(request, stream, Some(wire::config())),
    )
    .await
    .context("WebSocket upgrade: timed out")?
    .context("WebSocket upgrade")?;
    Ok(ws)
}

/// Redeems an enrollment token; the credential.
async fn enroll(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>, token: &str) -> Result<String> {
    let mut ws = dial(addr, tls, wire::ENROLL_PATH, token).await?;
    let frame = tokio::time::timeout(CALL_TIMEOUT, ws.next())
        .await
        .context("no answer to the enrollment")?
        .context("the server closed the enrollment")?
        .context("reading the enrollment")?;
    let enrolled = match wire::decode::<Enrolled>(frame) {
        Ok(Frame::Message(e)) => e,
        other => bail!("unexpected answer to the enrollment: {other:?}"),
    };
    let _ = ws.close(None).await;
    Ok(enrolled.credential)
}

/// Connects with a credential and completes the handshake (the server's
/// hello, the agent's).
async fn connect(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    credential: &str,
    i: usize,
) -> Result<Ws> {
    let mut ws = dial(addr, tls, wire::CONNECT_PATH, credential).await?;
    loop {
        let frame = tokio::time::timeout(CALL_TIMEOUT, ws.next())
            .await
            .context("no hello from the server")?
            .context("the server closed the connection")?
            .context("reading the hello")?;
        match wire::decode::<ToAgent>(frame) {
            Ok(Frame::Message(ToAgent::Hello { protocol_version, .. })) => {
                if protocol_version != PROTOCOL_VERSION {
                    bail!("the server speaks protocol {protocol_version}, the bench {PROTOCOL_VERSION}");
                }
                ws.send(wire::encode(&hello(i)))
                    .await
                    .context("sending the hello")?;
                return Ok(ws);
            }
            // The server's first heartbeat may come before its hello (its
            // heartbeat timer's first tick is immediate).
            Ok(Frame::Message(ToAgent::Heartbeat { .. })) => {
                ws.send(wire::encode(&beat()))
                    .await
                    .context("sending a heartbeat")?;
            }
            Ok(Frame::Control) => {}
            other => bail!("expected the server's hello, got {other:?}"),
        }
    }
}

fn hello(i: usize) -> FromAgent {
    FromAgent::Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        hostname: format!("sim-{i}"),
    }
}

fn beat() -> FromAgent {
    FromAgent::Heartbeat {
        time: pave_core::time::now_ms(),
    }
}

/// One connected agent, until `stop`: heartbeats every 5 s and in answer to
/// the server's, `succeeded` at once for every command.
async fn agent(ws: Ws, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let (mut sink, mut stream) = ws.split();
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + wire::HEARTBEAT_EVERY,
        wire::HEARTBEAT_EVERY,
    );
    let dropped = |why: String| shared.dropped.lock().unwrap_or_else(|p| p.into_inner()).push(why);
    loop {
        let out = tokio::select! {
            frame = stream.next() => {
                let m = match frame {
                    None => return dropped("the server closed the connection".into()),
                    Some(Err(e)) => return dropped(format!("reading: {e}")),
                    Some(Ok(m)) => m,
                };
                match wire::decode::<ToAgent>(m) {
                    Ok(Frame::Message(ToAgent::Command(cmd))) => {
                        let at = Instant::now();
                        shared
                            .commands
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(cmd.action_id.clone())
                            .or_insert(at);
                        Some(FromAgent::Result {
                            command_id: cmd.id,
                            outcome: Outcome::Succeeded { output: Value::Null },
                        })
                    }
                    Ok(Frame::Message(ToAgent::Ack { command_id })) => {
                        let at = Instant::now();
                        let action = command_id.split('.').next().unwrap_or_default().to_string();
                        shared
                            .acks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(action)
                            .or_insert(at);
                        None
                    }
                    Ok(Frame::Message(ToAgent::Heartbeat { .. })) => Some(beat()),
                    Ok(Frame::Message(ToAgent::Hello { .. })) => {
                        shared.unexpected.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Ok(Frame::Message(ToAgent::Cancel { .. })) | Ok(Frame::Control) => None,
                    Ok(Frame::Closed(c)) => return dropped(format!("closed by the server: {c:?}")),
                    Err(_) => {
                        shared.unexpected.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
            _ = heartbeat.tick() => Some(beat()),
            _ = stop.changed() => {
                // The closing handshake: our close frame, then read until the
                // server has answered it and closed the connection (dropping the
                // socket first would leave the server writing into a reset one).
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = sink.close().await;
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                return;
            }
        };
        if let Some(m) = out {
            if let Err(e) = sink.send(wire::encode(&m)).await {
                return dropped(format!("writing: {e}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// `pave serve`

/// The `pave serve` under test.
struct Server(ServeChild);

impl std::ops::Deref for Server {
    type Target = ServeChild;
    fn deref(&self) -> &ServeChild {
        &self.0
    }
}

impl Server {
    async fn start(cfg: &AgentsConfig) -> Result<Self> {
        let (pave, tmp) = (cfg.pave_bin.clone(), cfg.tmp.clone());
        let child =
            tokio::task::spawn_blocking(move || ServeChild::start(&pave, &tmp, "pave-bench-agents-", &[]))
                .await
                .context("starting pave serve")??;
        Ok(Server(child))
    }

    fn log_tail(&self) -> String {
        self.0.log_tail(8)
    }

    /// `VmRSS` in KiB.
    fn rss_kib(&self) -> Result<u64> {
        rss_kib(&self.pid().to_string())
    }

    /// An API call with the admin token; the JSON body of a 2xx answer.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        call(self.addr, &self.token, method, path, body).await
    }

    async fn stop(&mut self) -> Result<()> {
        tokio::task::block_in_place(|| self.0.stop())
    }
}

/// `VmRSS` of `/proc/<pid>` (`self`: this process), in KiB.
fn rss_kib(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("could not read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no VmRSS in {path} (has the server exited?)"))
}

/// An API call; the JSON body of a 2xx answer, or an error quoting the answer.
async fn call(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let (status, answer) = http(addr, token, method, path, body)
        .await
        .with_context(|| format!("{method} {path}"))?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status} {}", String::from_utf8_lossy(&answer));
    }
    serde_json::from_slice(&answer).with_context(|| format!("{method} {path}: the answer is not JSON"))
}

/// One HTTP/1.0 request (a fresh connection); the status and the body.
async fn http(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Vec<u8>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .context("could not connect to pave serve")?;
        let _ = stream.set_nodelay(true);
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
        if !token.is_empty() {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if !body.is_empty() {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .context("timed out")??;
    crate::serve_child::parse_response(&response)
}

// ---------------------------------------------------------------------------
// /proc

/// CPU ticks of each thread, by thread id, with its name.
type ThreadTicks = HashMap<u32, (String, u64)>;

/// The server's CPU ticks (process and threads) at one moment.
struct ServerCpu {
    pid: u32,
    at: Instant,
    process: u64,
    threads: ThreadTicks,
}

fn read_ticks(pid: u32) -> Option<(u64, ThreadTicks)> {
    let (_, process) = crate::cpu::parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(t) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| crate::cpu::parse_stat(&s))
        {
            threads.insert(tid, t);
        }
    }
    Some((process, threads))
}

impl ServerCpu {
    fn take(pid: u32) -> Option<Self> {
        let at = Instant::now();
        let (process, threads) = read_ticks(pid)?;
        Some(ServerCpu {
            pid,
            at,
            process,
            threads,
        })
    }

    /// Percent of one core since [`ServerCpu::take`].
    fn pct(&self) -> f64 {
        self.pct_and_threads().0
    }

    /// Percent of one core since [`ServerCpu::take`], and per thread name
    /// (threads of the same name summed), busiest first.
    fn pct_and_threads(&self) -> (f64, Vec<(String, f64)>) {
        let Some((process, threads)) = read_ticks(self.pid) else {
            return (0.0, vec![]);
        };
        let secs = self.at.elapsed().as_secs_f64().max(0.001);
        let pct = |ticks: u64| 100.0 * ticks as f64 / TICKS_PER_SEC / secs;
        let mut by_name: HashMap<String, u64> = HashMap::new();
        for (tid, (name, ticks)) in &threads {
            let was = self.threads.get(tid).map_or(0, |(_, t)| *t);
            *by_name.entry(name.clone()).or_default() += ticks.saturating_sub(was);
        }
        let mut named: Vec<(String, f64)> = by_name.into_iter().map(|(n, t)| (n, pct(t))).collect();
        named.sort_by(|a, b| b.1.total_cmp(&a.1));
        (pct(process.saturating_sub(self.process)), named)
    }
}

/// Raises this process's open-file limit to its hard limit (children
/// inherit it); the soft and hard limits then.
#[allow(unsafe_code)]
// `rlim_t` is not `u64` on every target.
#[allow(clippy::unnecessary_cast)]
fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into a struct this function owns.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // An unlimited hard limit is still capped by the kernel's nr_open.
    let want = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit(2) reads a struct this function owns and changes
        // only this process's limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = want;
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
        assert_eq!(percentile(&[1.0, f64::INFINITY], 99.0), f64::INFINITY);
    }

    #[test]
    fn stat_lines_parse() {
        let line = "1234 (tokio-rt wor) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 1 0 100 0 0";
        assert_eq!(
            crate::cpu::parse_stat(line),
            Some(("tokio-rt wor".to_string(), 290))
        );
    }
}
