//! The remediation loop, end to end, the way a user meets it: a real `pave
//! serve` child process with a short `--verify-window`, driven through the
//! `pave` CLI and the HTTP API.
//!
//! Each round uses a fresh environment in `--remediation auto` mode: deploy
//! the demo (2 replicas, readiness `/healthz`), then deploy it again with
//! `DEMO_CRASH_AFTER_SECS=N`, which becomes ready and then exits every N
//! seconds. pave should detect the crash loop, roll the revision back by
//! itself (`rollback_revision`), watch it for the verification window and
//! resolve the incident. Two figures per round:
//!
//! * **crash → incident**: from the moment a replica of the bad revision met
//!   the detector's condition (`CrashLoopBackOff`: the `finished_at` of the
//!   exit that put it there, as the replica's supervisor recorded it; or 3
//!   restarts: the `started_at` of the run that made it 3) until the
//!   incident's `opened_at`. The workload status is polled every
//!   [`STATUS_EVERY`] to catch the condition while it stands; when the bench
//!   first saw it is reported too.
//! * **MTTR**: from the bad deploy's end (its action's `updated_at` when it
//!   succeeded) until the incident's `resolved` entry in its timeline.
//!
//! Every timestamp is pave's own (epoch milliseconds of this machine's
//! clock), so the polling cadence does not enter the figures. Everything is
//! removed afterwards: the workloads through `pave workloads delete --wait`,
//! then the server (SIGTERM) and its data directory; a `pave shim` of this
//! data directory still running after that is reported and stopped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::report::{round, verdict, Report};
use crate::serve_child::ServeChild;

/// Target of crash → incident.
pub const TARGET_DETECT_MS: f64 = 1000.0;
/// MTTR target: the verification window plus this.
pub const TARGET_MTTR_SLACK: Duration = Duration::from_secs(5);

/// How often the workload status is read until the incident exists.
const STATUS_EVERY: Duration = Duration::from_millis(20);
/// How often the incidents are read.
const INCIDENT_EVERY: Duration = Duration::from_millis(100);
/// Longest a round may take on top of the verification window.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// The workload each round deploys.
const WORKLOAD: &str = "payments";

/// What the section needs.
pub struct RemediationConfig {
    /// Where the data directory goes.
    pub tmp: PathBuf,
    /// The `pave` binary: the server, the CLI, the supervisor and the demo.
    pub pave_bin: PathBuf,
    /// Rounds, each in a fresh environment.
    pub rounds: usize,
    /// `pave serve --verify-window`.
    pub verify_window: Duration,
    /// `DEMO_CRASH_AFTER_SECS` of the bad deploy.
    pub crash_after_secs: u64,
}

/// Runs the rounds and prints the lines; the JSON figures and whether every
/// measurement was taken.
pub async fn section(cfg: &RemediationConfig, report: &Report) -> (Value, bool) {
    // Child processes and blocking HTTP: off the async workers, but with the
    // report at hand so that each line is printed as soon as it is known.
    tokio::task::block_in_place(|| section_blocking(cfg, report))
}

fn section_blocking(cfg: &RemediationConfig, report: &Report) -> (Value, bool) {
    let started = Instant::now();
    let mut server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            report.line(format!("remediation FAILED: {e:#}"));
            return (json!({ "error": format!("{e:#}") }), false);
        }
    };
    let mut ok = true;
    let mut rounds = Vec::new();
    let mut deleted_workloads = 0;
    let mut error = None;
    let rounds_wanted = cfg.rounds.max(1);
    // Rounds run back to back would each start at the same point of the
    // detector's sweep (the bench follows the previous round's last sweep):
    // each bad deploy is delayed by its share of the sweep period instead,
    // so that the rounds sample the phase evenly.
    let sweep = pave_engine::EngineConfig::default().remediation_every;
    for n in 1..=rounds_wanted {
        let env = format!("bench-remediation-{n}");
        let offset = sweep * (n as u32 - 1) / rounds_wanted as u32;
        let result = one_round(&server, cfg, &env, offset);
        // The workload goes whatever happened (no replica outlives the bench);
        // the delete queues behind any action still holding it.
        let deleted = server.cli_ok(&["workloads", "delete", WORKLOAD, "--env", &env, "--wait"]);
        let failed = result.is_err();
        match result {
            Ok(r) => {
                report.line(format!("remediation (info) round {n}: {}", r.text()));
                rounds.push(r);
            }
            Err(e) => {
                report.line(format!("remediation round {n} FAILED: {e:#}"));
                error = Some(format!("round {n}: {e:#}"));
                ok = false;
            }
        }
        match deleted {
            Ok(_) => deleted_workloads += 1,
            // A round that failed early may have deployed nothing.
            Err(e) if failed => {
                report.line(format!("remediation (info) deleting {WORKLOAD} in {env}: {e:#}"))
            }
            Err(e) => {
                report.line(format!("remediation cleanup of {env} FAILED: {e:#}"));
                ok = false;
            }
        }
        if failed {
            break;
        }
    }
    let summary = if rounds.is_empty() {
        json!(null)
    } else {
        summarize(cfg, &rounds, report)
    };
    let cleanup = server.stop();
    match &cleanup {
        Ok(left) if left.is_empty() => report.line(format!(
            "remediation (info) cleanup: {deleted_workloads} workloads deleted, server stopped, no `pave shim` left; section took {:.1} s",
            started.elapsed().as_secs_f64()
        )),
        Ok(left) => {
            report.line(format!(
                "remediation cleanup FAILED: {} `pave shim` processes of this run were still running (pids {}); stopped them",
                left.len(),
                left.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
            ));
            ok = false;
        }
        Err(e) => {
            report.line(format!("remediation cleanup FAILED: {e:#}"));
            ok = false;
        }
    }
    (
        json!({
            "rounds": rounds.iter().map(Round::json).collect::<Vec<_>>(),
            "summary": summary,
            "verify_window_ms": cfg.verify_window.as_millis() as u64,
            "crash_after_secs": cfg.crash_after_secs,
            "error": error,
            "cleanup_error": cleanup.as_ref().err().map(|e| format!("{e:#}")),
            "section_s": round(started.elapsed().as_secs_f64(), 2),
        }),
        ok,
    )
}

// ---------------------------------------------------------------------------
// One round

/// What one round measured; epoch milliseconds, all of them pave's.
struct Round {
    env: String,
    /// How long the bench waited before the bad deploy (its share of the sweep period).
    offset: Duration,
    bad_revision: i64,
    /// The bad deploy's action ended `succeeded`.
    deploy_end: i64,
    /// The bench got the CLI's answer.
    cli_return: i64,
    /// A replica of the bad revision first met the detector's condition.
    threshold: i64,
    threshold_how: String,
    /// The bench first saw the condition in the workload status.
    seen: Option<i64>,
    opened: i64,
    applied: String,
    /// The fix's action ended (its `updated_at`).
    fix_done: Option<i64>,
    /// The incident became `verifying`.
    verifying: Option<i64>,
    /// The incident became `resolved` (None: it ended otherwise).
    resolved: Option<i64>,
    final_state: String,
    /// `verify_until` − the `verifying` entry: the window as the server applied it.
    window_ms: Option<i64>,
}

impl Round {
    fn detect_ms(&self) -> i64 {
        self.opened - self.threshold
    }

    fn mttr_ms(&self) -> Option<i64> {
        self.resolved.map(|t| t - self.deploy_end)
    }

    fn text(&self) -> String {
        let s = |ms: i64| format!("{:.2} s", ms as f64 / 1000.0);
        let opt = |a: Option<i64>, b: i64| a.map_or("?".to_string(), |a| s(a - b));
        format!(
            "{} (bad deploy delayed {} ms): revision {} deployed; crash loop {} later ({}); incident {} ms after that; {} done {} after; \
             verifying {} after; {} {} after; MTTR {}",
            self.env,
            self.offset.as_millis(),
            self.bad_revision,
            s(self.threshold - self.deploy_end),
            self.threshold_how,
            self.detect_ms(),
            self.applied,
            opt(self.fix_done, self.opened),
            opt(self.verifying, self.fix_done.unwrap_or(self.opened)),
            self.final_state,
            opt(self.resolved, self.verifying.unwrap_or(self.opened)),
            self.mttr_ms().map_or("— (not resolved)".to_string(), s),
        )
    }

    fn json(&self) -> Value {
        json!({
            "env": self.env,
            "offset_ms": self.offset.as_millis() as u64,
            "bad_revision": self.bad_revision,
            "deploy_end_ms": self.deploy_end,
            "cli_return_ms": self.cli_return,
            "threshold_ms": self.threshold,
            "threshold": self.threshold_how,
            "seen_by_bench_ms": self.seen,
            "opened_ms": self.opened,
            "applied": self.applied,
            "fix_done_ms": self.fix_done,
            "verifying_ms": self.verifying,
            "resolved_ms": self.resolved,
            "state": self.final_state,
            "window_ms": self.window_ms,
            "detect_ms": self.detect_ms(),
            "mttr_ms": self.mttr_ms(),
        })
    }
}

fn one_round(server: &Server, cfg: &RemediationConfig, env: &str, offset: Duration) -> Result<Round> {
    server.cli_ok(&["env", "create", env, "--remediation", "auto"])?;
    let pave = cfg.pave_bin.display().to_string();
    server.cli_ok(&[
        "deploy",
        WORKLOAD,
        "--env",
        env,
        "--replicas",
        "2",
        "--readiness-http",
        "/healthz",
        "--wait",
        "--",
        &pave,
        "demo",
    ])?;
    std::thread::sleep(offset);
    let crash = format!("DEMO_CRASH_AFTER_SECS={}", cfg.crash_after_secs);
    let out = server.cli_ok(&[
        "deploy",
        WORKLOAD,
        "--env",
        env,
        "--set-env",
        &crash,
        "--wait",
        "-o",
        "json",
    ])?;
    let cli_return = now_ms();
    let action: Value = serde_json::from_str(out.trim())
        .with_context(|| format!("`pave deploy -o json` did not print JSON: {out}"))?;
    if action["state"] != "succeeded" {
        bail!("the bad deploy ended {}: {}", action["state"], action["error"]);
    }
    let deploy_end = action["updated_at"]
        .as_i64()
        .with_context(|| format!("the deploy action has no updated_at: {action}"))?;
    let status_path = format!("/api/v1/environments/{env}/workloads/{WORKLOAD}");
    let w = server.get(&status_path)?;
    let bad_revision = w["current_revision"]
        .as_i64()
        .with_context(|| format!("{WORKLOAD} has no current revision after the deploy: {w}"))?;

    let incidents_path = format!("/api/v1/incidents?env={env}");
    let deadline = Instant::now() + cfg.verify_window + ROUND_TIMEOUT;
    let mut threshold: Option<(i64, String)> = None;
    let mut seen = None;
    let mut opened = None;
    let mut last_incidents: Option<Instant> = None;
    let incident = loop {
        if opened.is_none() {
            let w = server.get(&status_path)?;
            let now = now_ms();
            for r in replicas_of(&w["replicas"], bad_revision) {
                if let Some(m) = condition_moment(r) {
                    seen.get_or_insert(now);
                    if threshold.as_ref().is_none_or(|(t, _)| m.0 < *t) {
                        threshold = Some(m);
                    }
                }
            }
        }
        if last_incidents.is_none_or(|t| t.elapsed() >= INCIDENT_EVERY) {
            last_incidents = Some(Instant::now());
            let list = server.get(&incidents_path)?;
            let all = list.as_array().cloned().unwrap_or_default();
            let inc = all
                .iter()
                .find(|i| i["kind"] == "crash_loop")
                .or(all.first())
                .cloned();
            if let Some(inc) = inc {
                if opened.is_none() {
                    opened = Some(
                        inc["opened_at"]
                            .as_i64()
                            .context("an incident without opened_at")?,
                    );
                }
                if matches!(
                    inc["state"].as_str(),
                    Some("resolved" | "escalated" | "dismissed")
                ) {
                    break inc;
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no resolved incident in {env} within {} s of the bad deploy (threshold seen: {}, incident opened: {})",
                (cfg.verify_window + ROUND_TIMEOUT).as_secs(),
                threshold.is_some(),
                opened.is_some()
            );
        }
        std::thread::sleep(if opened.is_none() {
            STATUS_EVERY
        } else {
            INCIDENT_EVERY
        });
    };
    if incident["kind"] != "crash_loop" {
        bail!("the incident is {}, not crash_loop: {incident}", incident["kind"]);
    }
    // The detector's own view, in case it saw an earlier moment than the polls.
    for r in replicas_of(&incident["doc"]["evidence"]["replicas"], bad_revision) {
        if let Some(m) = condition_moment(r) {
            if threshold.as_ref().is_none_or(|(t, _)| m.0 < *t) {
                threshold = Some(m);
            }
        }
    }
    let (threshold, threshold_how) = threshold.with_context(|| {
        format!("no replica of revision {bad_revision} was seen in CrashLoopBackOff or with 3 restarts")
    })?;
    let opened = incident["opened_at"]
        .as_i64()
        .context("an incident without opened_at")?;
    let doc = &incident["doc"];
    let timeline: Vec<&Value> = doc["timeline"].as_array().into_iter().flatten().collect();
    let verifying = timeline
        .iter()
        .find(|e| e["phase"] == "verify")
        .and_then(|e| e["at"].as_i64());
    let final_state = incident["state"].as_str().unwrap_or("?").to_string();
    let resolved = if final_state == "resolved" {
        timeline
            .iter()
            .rev()
            .find(|e| e["phase"] == "verify" && e["message"].as_str().is_some_and(|m| m.contains("resolved")))
            .and_then(|e| e["at"].as_i64())
            .or(incident["updated_at"].as_i64())
    } else {
        None
    };
    let fix_done = match doc["applied"]["action"].as_str() {
        Some(id) => server.get(&format!("/api/v1/actions/{id}"))?["updated_at"].as_i64(),
        None => None,
    };
    Ok(Round {
        env: env.to_string(),
        offset,
        bad_revision,
        deploy_end,
        cli_return,
        threshold,
        threshold_how,
        seen,
        opened,
        applied: doc["applied"]["type"].as_str().unwrap_or("nothing").to_string(),
        fix_done,
        verifying,
        resolved,
        final_state,
        window_ms: doc["verify_until"].as_i64().zip(verifying).map(|(u, v)| u - v),
    })
}

/// The replicas of `revision` in a status's (or the evidence's) replica list.
fn replicas_of(replicas: &Value, revision: i64) -> impl Iterator<Item = &Value> {
    replicas
        .as_array()
        .into_iter()
        .flatten()
        // The evidence lists only the serving revision's replicas, without it.
        .filter(move |r| r["revision"].as_i64().is_none_or(|v| v == revision))
}

/// When a replica met the detector's condition, from its own timestamps, if
/// it meets it now: `CrashLoopBackOff` is set at the exit that made it a
/// loop, the third restart at the start of the run it begins.
fn condition_moment(r: &Value) -> Option<(i64, String)> {
    let index = r["index"].as_u64().or(r["replica"].as_u64()).unwrap_or(0);
    if r["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
        if let Some(t) = r["last_state"]["terminated"]["finished_at"].as_i64() {
            return Some((
                t,
                format!(
                    "replica {index} in CrashLoopBackOff after {} restarts",
                    r["restart_count"]
                ),
            ));
        }
    }
    if r["restart_count"].as_u64() == Some(3) {
        if let Some(t) = r["state"]["running"]["started_at"].as_i64() {
            return Some((t, format!("replica {index} restarted 3 times")));
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Figures

fn median(mut v: Vec<i64>) -> f64 {
    v.sort_unstable();
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2] as f64,
        n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0,
    }
}

fn worst(v: &[i64]) -> f64 {
    v.iter().copied().max().unwrap_or(0) as f64
}

fn summarize(cfg: &RemediationConfig, rounds: &[Round], report: &Report) -> Value {
    let n = rounds.len();
    let detect: Vec<i64> = rounds.iter().map(Round::detect_ms).collect();
    let (d_med, d_worst) = (median(detect.clone()), worst(&detect));
    let d_met = d_med <= TARGET_DETECT_MS;
    let d_worst_met = d_worst <= TARGET_DETECT_MS;
    let lag: Vec<i64> = rounds
        .iter()
        .filter_map(|r| r.seen.map(|s| s - r.threshold))
        .collect();
    report.line(format!(
        "remediation crash → incident       median {d_med:.0} ms, worst {d_worst:.0} ms   / 1 s: median {:.2}, worst {:.2}   target <= {TARGET_DETECT_MS:.0} ms (median): {:<13}  (worst: {}; {n} rounds: {} ms; from the bad revision's first replica in CrashLoopBackOff — the finished_at of the exit that put it there — to the incident's opened_at; the bench's {} ms polls saw the condition {:.0} ms after it, median)",
        d_med / TARGET_DETECT_MS,
        d_worst / TARGET_DETECT_MS,
        verdict(d_met),
        if d_worst_met { "met" } else { "not met" },
        detect.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        STATUS_EVERY.as_millis(),
        median(lag.clone()),
    ));

    let window_ms = cfg.verify_window.as_millis() as i64;
    let target_ms = (cfg.verify_window + TARGET_MTTR_SLACK).as_millis() as f64;
    let mttr: Vec<i64> = rounds.iter().filter_map(Round::mttr_ms).collect();
    let unresolved = n - mttr.len();
    let (m_med, m_worst) = (median(mttr.clone()), worst(&mttr));
    let m_met = unresolved == 0 && m_med <= target_ms;
    let m_worst_met = unresolved == 0 && m_worst <= target_ms;
    let s = |ms: f64| ms / 1000.0;
    report.line(format!(
        "remediation MTTR                   median {:.2} s, worst {:.2} s   / (window {:.1} s + {} s): median {:.2}, worst {:.2}   target <= {:.1} s (median): {:<13}  (worst: {}; MTTR − window: median {:.2} s, worst {:.2} s, margin to the target {:.2} s (median), {:.2} s (worst); {n} rounds: {} s; bad deploy succeeded → incident resolved after an automatic rollback_revision and the window{})",
        s(m_med),
        s(m_worst),
        s(window_ms as f64),
        TARGET_MTTR_SLACK.as_secs(),
        m_med / target_ms,
        m_worst / target_ms,
        s(target_ms),
        verdict(m_met),
        if m_worst_met { "met" } else { "not met" },
        s(m_med - window_ms as f64),
        s(m_worst - window_ms as f64),
        s(target_ms - m_med),
        s(target_ms - m_worst),
        mttr.iter().map(|m| format!("{:.2}", *m as f64 / 1000.0)).collect::<Vec<_>>().join(", "),
        if unresolved > 0 {
            format!("; {unresolved} rounds NOT resolved")
        } else {
            String::new()
        },
    ));

    // Where the time goes (medians over the rounds).
    let part = |f: &dyn Fn(&Round) -> Option<i64>| -> f64 { median(rounds.iter().filter_map(f).collect()) };
    let to_crash = part(&|r| Some(r.threshold - r.deploy_end));
    let to_fix = part(&|r| r.fix_done.map(|t| t - r.opened));
    let to_verifying = part(&|r| r.fix_done.zip(r.verifying).map(|(f, v)| v - f));
    let to_resolved = part(&|r| r.verifying.zip(r.resolved).map(|(v, x)| x - v));
    let cli = part(&|r| Some(r.cli_return - r.deploy_end));
    let applied_window = part(&|r| r.window_ms);
    let fixes: Vec<&str> = rounds.iter().map(|r| r.applied.as_str()).collect();
    report.line(format!(
        "remediation (info) MTTR parts (medians): bad deploy succeeded → crash loop {:.2} s (DEMO_CRASH_AFTER_SECS={} runs, then the supervisor's 1 s back-off), → incident {:.2} s, \
         → {} succeeded {:.2} s, → verifying {:.2} s (next sweep), → resolved {:.2} s (window {:.2} s as applied, then the next sweep); the CLI returned {:.0} ms after the deploy's end",
        s(to_crash),
        cfg.crash_after_secs,
        s(d_med),
        fixes.first().copied().unwrap_or("the fix"),
        s(to_fix),
        s(to_verifying),
        s(to_resolved),
        s(applied_window),
        cli,
    ));
    json!({
        "rounds": n,
        "detect_ms": detect,
        "detect_median_ms": d_med,
        "detect_worst_ms": d_worst,
        "detect_ratio_median": round(d_med / TARGET_DETECT_MS, 3),
        "detect_ratio_worst": round(d_worst / TARGET_DETECT_MS, 3),
        "target_detect_ms": TARGET_DETECT_MS,
        "detect_target_met": d_met,
        "detect_worst_target_met": d_worst_met,
        "seen_lag_median_ms": median(lag),
        "mttr_ms": mttr,
        "mttr_median_ms": m_med,
        "mttr_worst_ms": m_worst,
        "unresolved_rounds": unresolved,
        "verify_window_ms": window_ms,
        "target_mttr_ms": target_ms,
        "mttr_ratio_median": round(m_med / target_ms, 3),
        "mttr_ratio_worst": round(m_worst / target_ms, 3),
        "mttr_target_met": m_met,
        "mttr_worst_target_met": m_worst_met,
        "applied": fixes,
        "parts_median_ms": {
            "deploy_end_to_crash_loop": to_crash,
            "crash_loop_to_incident": d_med,
            "incident_to_fix_done": to_fix,
            "fix_done_to_verifying": to_verifying,
            "verifying_to_resolved": to_resolved,
            "window_applied": applied_window,
            "deploy_end_to_cli_return": cli,
        },
    })
}

// ---------------------------------------------------------------------------
// `pave serve` and its CLI

fn now_ms() -> i64 {
    pave_core::time::now_ms()
}

/// The `pave serve` under test, and its CLI.
struct Server {
    serve: ServeChild,
    url: String,
    pave: PathBuf,
}

impl std::ops::Deref for Server {
    type Target = ServeChild;
    fn deref(&self) -> &ServeChild {
        &self.serve
    }
}

impl Server {
    fn start(cfg: &RemediationConfig) -> Result<Self> {
        let window = vec![
            "--verify-window".to_string(),
            format!("{}ms", cfg.verify_window.as_millis()),
        ];
        let serve = ServeChild::start(&cfg.pave_bin, &cfg.tmp, "pave-bench-remediation-", &window)?;
        Ok(Server {
            url: format!("http://{}", serve.addr),
            pave: cfg.pave_bin.clone(),
            serve,
        })
    }

    /// Runs the CLI against this server; its stdout, or an error quoting its
    /// output when it does not exit 0.
    fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.pave)
            .args(args)
            .env("PAVE_SERVER", &self.url)
            .env("PAVE_TOKEN", &self.token)
            .env("PAVE_CONFIG", self.dir.path().join("cli-config.json"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not run pave {}", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`pave {}` exited with {}: {} {}",
                args.join(" "),
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }

    /// `GET path` with the admin token; the JSON body of a 200.
    fn get(&self, path: &str) -> Result<Value> {
        let (status, body) = http_get(self.addr, path, &self.token).with_context(|| format!("GET {path}"))?;
        if status != 200 {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: the body is not JSON"))
    }

    /// Stops the server; the pids of the `pave shim` processes of this data
    /// directory still running (which are then stopped too).
    fn stop(&mut self) -> Result<Vec<u32>> {
        self.serve.stop()?;
        let left = shims_of(&self.data_dir);
        for pid in &left {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        Ok(left)
    }
}

/// The `pave shim` processes whose arguments name a file under `data_dir`.
fn shims_of(data_dir: &Path) -> Vec<u32> {
    let prefix = data_dir.display().to_string();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "shim") && args.iter().any(|a| a.starts_with(&prefix)) {
            out.push(pid);
        }
    }
    out
}

/// One `GET` over HTTP/1.0 with a bearer token; the status code and the body.
fn http_get(addr: SocketAddr, path: &str, token: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .context("could not connect to pave serve")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    crate::serve_child::parse_response(&response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_moment_comes_from_the_replica_timestamps() {
        let clbo = json!({
            "index": 1, "revision": 2, "restart_count": 1,
            "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 2s" } },
            "last_state": { "terminated": { "reason": "Error", "exit_code": 1, "finished_at": 1234 } },
        });
        assert_eq!(condition_moment(&clbo).map(|m| m.0), Some(1234));
        let third = json!({
            "replica": 0, "restart_count": 3,
            "state": { "running": { "started_at": 99 } },
        });
        assert_eq!(condition_moment(&third).map(|m| m.0), Some(99));
        let fine = json!({
            "index": 0, "revision": 2, "restart_count": 1,
            "state": { "running": { "started_at": 5 } },
            "last_state": { "terminated": { "reason": "Error", "finished_at": 4 } },
        });
        assert_eq!(condition_moment(&fine), None);
        let list = json!([{ "revision": 1 }, { "revision": 2 }, {}]);
        assert_eq!(replicas_of(&list, 2).count(), 2);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3, 1, 2]), 2.0);
        assert_eq!(median(vec![4, 1, 2, 3]), 2.5);
        assert_eq!(worst(&[4, 1, 9]), 9.0);
    }
}
