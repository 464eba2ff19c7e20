//! The shim: one small process per replica, like containerd-shim. It is started
//! detached (its own session), so it and its workload outlive pave; pave finds it
//! again through the files of the replica's directory.
//!
//! It runs the command in its own process group with the spec's environment,
//! restarts it per the restart policy with exponential back-off, keeps
//! `status.json` current (Kubernetes container states), appends the output to
//! size-capped `stdout.log`/`stderr.log`, applies the memory limit with a cgroup
//! (and tells an OOM kill from another SIGKILL), and on SIGTERM stops the
//! workload's group (SIGTERM, grace, SIGKILL), writes a final status and exits.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::cgroup::Cgroup;
use super::state::{
    now_ms, read_json, write_json_atomic, write_pid_file, ShimSpec, ShimStatus, SHIM_PID_FILE, STATUS_FILE,
    STDERR_LOG, STDOUT_LOG,
};
use super::sys;
use crate::{ContainerState, RestartPolicy};

/// First restart delay; doubled after each quick exit.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Quick exits in a row after which the state is `CrashLoopBackOff`.
const CRASH_LOOP_AFTER: u32 = 2;
/// Time the workload gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Longest line written to a log in one piece; longer ones are split.
const MAX_LINE: u64 = 16 * 1024;

/// Supervises the replica described by the JSON file `spec_path` until told to
/// stop (SIGTERM) or the restart policy says it is done. Returns the process
/// exit code.
pub fn run(spec_path: &Path) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pave-shim: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(supervise(spec_path))
}

struct Shim {
    dir: PathBuf,
    spec: ShimSpec,
    status: ShimStatus,
    cgroup: Option<Cgroup>,
}

impl Shim {
    fn write_status(&mut self) {
        self.status.updated_at = now_ms();
        if let Err(e) = write_json_atomic(&self.dir.join(STATUS_FILE), &self.status) {
            eprintln!("pave-shim: cannot write status: {e}");
        }
    }

    fn finish(&mut self, state: ContainerState) -> i32 {
        self.status.state = state;
        self.status.pid = None;
        self.status.pid_start_time = None;
        self.status.done = true;
        if let Some(cg) = &self.cgroup {
            cg.remove();
        }
        self.write_status();
        0
    }
}

enum RunEnd {
    /// The child ended by itself.
    Exited(ContainerState),
    /// SIGTERM arrived; the child was stopped.
    Stopped(ContainerState),
}

async fn supervise(spec_path: &Path) -> i32 {
    let dir = match spec_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(spec) = read_json::<ShimSpec>(spec_path) else {
        eprintln!("pave-shim: cannot read the spec {}", spec_path.display());
        return 2;
    };
    if spec.command.is_empty() {
        eprintln!("pave-shim: the spec has no command");
        return 2;
    }
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pave-shim: cannot handle SIGTERM: {e}");
            return 1;
        }
    };
    let me = std::process::id() as i32;
    if let Err(e) = write_pid_file(&dir.join(SHIM_PID_FILE), me, sys::start_time(me).unwrap_or(0)) {
        eprintln!("pave-shim: cannot write {SHIM_PID_FILE}: {e}");
    }
    // A restarted shim (after its predecessor was lost) continues the count.
    let previous = read_json::<ShimStatus>(&dir.join(STATUS_FILE));
    let mut warnings = Vec::new();
    let cgroup = match spec.memory_limit_mb {
        None => None,
        Some(mb) => match Cgroup::create(&spec.cgroup_name, mb) {
            Ok(cg) => Some(cg),
            Err(e) => {
                warnings.push(format!("memory limit of {mb} MiB not applied: {e}"));
                None
            }
        },
    };
    let status = ShimStatus {
        state: ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        },
        restart_count: previous.as_ref().map_or(0, |p| p.restart_count),
        last_state: previous.and_then(|p| p.last_state),
        pid: None,
        pid_start_time: None,
        port: spec.port,
        started_at: None,
        warnings,
        cgroup: cgroup.as_ref().map(|c| c.path().display().to_string()),
        shim_pid: me,
        done: false,
        updated_at: now_ms(),
    };
    let mut shim = Shim {
        dir,
        spec,
        status,
        cgroup,
    };
    shim.write_status();

    let mut backoff = BACKOFF_START;
    let mut quick_exits = 0u32;
    let mut first = true;
    loop {
        if !first {
            shim.status.restart_count += 1;
        }
        first = false;
        let started = Instant::now();
        let end = run_once(&mut shim, &mut term).await;
        let terminated = match end {
            RunEnd::Stopped(state) => return shim.finish(state),
            RunEnd::Exited(state) => state,
        };
        shim.status.last_state = Some(terminated.clone());
        shim.status.pid = None;
        shim.status.pid_start_time = None;
        let succeeded = terminated.reason() == Some("Completed");
        let restart = match shim.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !succeeded,
            RestartPolicy::Never => false,
        };
        if !restart {
            return shim.finish(terminated);
        }
        if started.elapsed() >= BACKOFF_RESET_AFTER {
            backoff = BACKOFF_START;
            quick_exits = 0;
        } else {
            quick_exits += 1;
        }
        let delay = backoff;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        shim.status.state = if quick_exits >= CRASH_LOOP_AFTER {
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container",
                    delay.as_secs()
                )),
            }
        } else {
            terminated.clone()
        };
        shim.write_status();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = term.recv() => return shim.finish(terminated),
        }
    }
}

/// Starts the child once and waits for it to end (or for SIGTERM).
async fn run_once(shim: &mut Shim, term: &mut Signal) -> RunEnd {
    let spec = &shim.spec;
    let cwd = spec
        .cwd
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| shim.dir.clone());
    let mut cmd = tokio::process::Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .env_clear()
        .envs(&spec.env)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(cg) = &shim.cgroup {
        sys::join_cgroup_before_exec(&mut cmd, &cg.procs_file());
    }
    let oom_before = shim.cgroup.as_ref().and_then(Cgroup::oom_kills);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return RunEnd::Exited(ContainerState::Terminated {
                reason: "ContainerCannotRun".into(),
                exit_code: Some(128),
                signal: None,
                message: Some(format!("cannot start `{}`: {e}", spec.command[0])),
                finished_at: now_ms(),
            })
        }
    };
    let pid = child.id().map_or(0, |p| p as i32);
    if let Some(cg) = &shim.cgroup {
        // Normally a no-op: the child joined before exec.
        if let Err(e) = cg.add(pid) {
            shim.status.warnings.push(e);
        }
    }
    let started_at = now_ms();
    let start_time = sys::start_time(pid).unwrap_or(0);
    shim.status.state = ContainerState::Running { started_at };
    shim.status.started_at = Some(started_at);
    shim.status.pid = Some(pid);
    shim.status.pid_start_time = Some(start_time);
    shim.write_status();

    let max = shim.spec.log_max_bytes.max(MAX_LINE * 2);
    let pumps = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(pump(s, shim.dir.join(STDOUT_LOG), max))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(pump(s, shim.dir.join(STDERR_LOG), max))),
    ];

    let (status, stopped) = tokio::select! {
        s = child.wait() => (s, false),
        _ = term.recv() => {
            sys::signal_group(pid, libc::SIGTERM);
            let s = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    sys::signal_group(pid, libc::SIGKILL);
                    child.wait().await
                }
            };
            (s, true)
        }
    };
    // Whatever the child left in its group goes with it, which also closes the
    // pipes the pumps read.
    sys::kill_group(pid, start_time);
    for handle in pumps.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
    }
    let oom_after = shim.cgroup.as_ref().and_then(Cgroup::oom_kills);
    let oom = matches!((oom_before, oom_after), (Some(b), Some(a)) if a > b);
    let state = terminated_state(status, oom);
    if stopped {
        RunEnd::Stopped(state)
    } else {
        RunEnd::Exited(state)
    }
}

fn terminated_state(status: std::io::Result<std::process::ExitStatus>, oom: bool) -> ContainerState {
    use std::os::unix::process::ExitStatusExt;
    let finished_at = now_ms();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return ContainerState::Terminated {
                reason: "Error".into(),
                exit_code: None,
                signal: None,
                message: Some(format!("cannot wait for the process: {e}")),
                finished_at,
            }
        }
    };
    let signal = status.signal();
    // Like a container runtime: death by signal N is exit code 128 + N.
    let exit_code = status.code().or(signal.map(|s| 128 + s));
    let (reason, message) = if oom && signal == Some(libc::SIGKILL) {
        (
            "OOMKilled",
            Some("killed for exceeding its memory limit".to_string()),
        )
    } else if exit_code == Some(0) {
        ("Completed", None)
    } else {
        ("Error", None)
    };
    ContainerState::Terminated {
        reason: reason.into(),
        exit_code,
        signal,
        message,
        finished_at,
    }
}

/// Appends the lines of `reader` to `path`, rotating it to `<path>.1` when it
/// would exceed `max` bytes.
async fn pump<R: AsyncRead + Unpin>(reader: R, path: PathBuf, max: u64) {
    use std::io::Write;
    let mut reader = BufReader::new(reader);
    let open = |p: &Path| std::fs::OpenOptions::new().create(true).append(true).open(p);
    let mut file = match open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pave-shim: cannot open {}: {e}", path.display());
            // Keep draining so the child never blocks on a full pipe.
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
            return;
        }
    };
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        if size > 0 && size + line.len() as u64 > max {
            let mut rotated = path.as_os_str().to_owned();
            rotated.push(".1");
            let reopened = std::fs::rename(&path, &rotated).and_then(|()| open(&path));
            match reopened {
                Ok(f) => {
                    file = f;
                    size = 0;
                }
                Err(e) => eprintln!("pave-shim: cannot rotate {}: {e}", path.display()),
            }
        }
        if file.write_all(&line).is_ok() {
            size += line.len() as u64;
        }
    }
}
