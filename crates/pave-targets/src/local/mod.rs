//! The local target: workloads are processes on this host, one [`shim`] per
//! replica. All state lives in files under the root directory, so a new
//! `LocalTarget` over the same root (after a restart of pave) re-attaches:
//!
//! ```text
//! root/<env>/<name>/desired.json                 the last applied WorkloadSpec
//! root/<env>/<name>/<revision>-<index>/spec.json  what the shim runs
//!                                     status.json written by the shim
//!                                     shim.pid    "PID START_TIME" of the shim
//!                                     stdout.log, stderr.log (+ .1 rotated)
//!                                     shim.log    the shim's own diagnostics
//! ```

mod cgroup;
pub mod shim;
mod state;
pub mod sys;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::{
    Condition, ContainerState, Readiness, ReplicaStatus, RevisionCount, Target, TargetError, WorkloadKey,
    WorkloadSpec, WorkloadStatus,
};
use state::{
    now_ms, read_json, read_pid_file, write_json_atomic, write_pid_file, ShimSpec, ShimStatus,
    DEFAULT_LOG_MAX_BYTES, SHIM_LOG, SHIM_PID_FILE, SPEC_FILE, STATUS_FILE, STDERR_LOG, STDOUT_LOG,
};

/// The longest line of an exec's output sent as one (a longer one comes in pieces).
const LINE_MAX: u64 = 16 * 1024;

const DESIRED_FILE: &str = "desired.json";
/// Time a readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Time a shim gets to stop its workload after SIGTERM (its own grace is 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(8);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs workloads as supervised processes on this host.
pub struct LocalTarget {
    root: PathBuf,
    shim_command: Vec<String>,
    log_max_bytes: u64,
    /// Serialises changes (apply, prune) made through this value.
    lock: tokio::sync::Mutex<()>,
}

/// A replica directory `<revision>-<index>`.
#[derive(Debug, Clone)]
struct ReplicaDir {
    revision: i64,
    index: u32,
    dir: PathBuf,
}

/// What the files of a replica say, and whether its shim lives.
struct Observed {
    spec: Option<ShimSpec>,
    status: Option<ShimStatus>,
    shim_alive: bool,
    shim_pid: Option<i32>,
}

impl LocalTarget {
    /// `shim_command` is the program (and leading arguments) that runs
    /// [`shim::run`], e.g. `["pave-shim"]` or `["/usr/bin/pave", "shim"]`; the path of
    /// the replica's spec file is appended.
    pub fn new(root_dir: impl Into<PathBuf>, shim_command: Vec<String>) -> Self {
        Self {
            root: root_dir.into(),
            shim_command,
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Caps each log file at `bytes` before it rotates (default 5 MiB).
    pub fn with_log_max_bytes(mut self, bytes: u64) -> Self {
        self.log_max_bytes = bytes;
        self
    }

    fn workload_dir(&self, key: &WorkloadKey) -> Result<PathBuf, TargetError> {
        for part in [&key.env, &key.name] {
            let ok = !part.is_empty()
                && part != "."
                && part != ".."
                && !part.contains(['/', '\0'])
                && part.len() <= 100;
            if !ok {
                return Err(TargetError::Invalid(format!(
                    "{part:?} is not a valid environment or workload name"
                )));
            }
        }
        Ok(self.root.join(&key.env).join(&key.name))
    }

    fn replica_dirs(wdir: &Path) -> Vec<ReplicaDir> {
        let Ok(entries) = std::fs::read_dir(wdir) else {
            return Vec::new();
        };
        let mut out: Vec<ReplicaDir> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                if !e.file_type().ok()?.is_dir() {
                    return None;
                }
                let name = e.file_name().into_string().ok()?;
                let (rev, idx) = name.rsplit_once('-')?;
                Some(ReplicaDir {
                    revision: rev.parse().ok()?,
                    index: idx.parse().ok()?,
                    dir: e.path(),
                })
            })
            .collect();
        out.sort_by_key(|r| (r.revision, r.index));
        out
    }

    fn observe(dir: &Path) -> Observed {
        let pid = read_pid_file(&dir.join(SHIM_PID_FILE));
        Observed {
            spec: read_json(&dir.join(SPEC_FILE)),
            status: read_json(&dir.join(STATUS_FILE)),
            shim_alive: pid.is_some_and(|(p, st)| sys::alive(p, st)),
            shim_pid: pid.map(|(p, _)| p),
        }
    }

    /// Ports given to the replicas of every workload under the root.
    fn ports_in_use(&self) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        let Ok(envs) = std::fs::read_dir(&self.root) else {
            return ports;
        };
        for env in envs.flatten() {
            let Ok(names) = std::fs::read_dir(env.path()) else {
                continue;
            };
            for name in names.flatten() {
                for r in Self::replica_dirs(&name.path()) {
                    if let Some(p) = read_json::<ShimSpec>(&r.dir.join(SPEC_FILE)).and_then(|s| s.port) {
                        ports.insert(p);
                    }
                }
            }
        }
        ports
    }

    fn free_port(taken: &BTreeSet<u16>) -> Result<u16, TargetError> {
        for _ in 0..50 {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
                .map_err(|e| TargetError::io("cannot find a free loopback port", e))?;
            let port = listener
                .local_addr()
                .map_err(|e| TargetError::io("cannot find a free loopback port", e))?
                .port();
            if !taken.contains(&port) {
                return Ok(port);
            }
        }
        Err(TargetError::Failed("no free loopback port found".into()))
    }

    fn shim_spec(
        &self,
        key: &WorkloadKey,
        spec: &WorkloadSpec,
        index: u32,
        port: Option<u16>,
        wdir: &Path,
    ) -> ShimSpec {
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string()),
        );
        env.insert(
            "HOME".to_string(),
            std::env::var("HOME").unwrap_or_else(|_| "/".to_string()),
        );
        env.insert(
            "LANG".to_string(),
            std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".to_string()),
        );
        env.extend(spec.env.clone());
        if let Some(p) = port {
            env.insert("PORT".to_string(), p.to_string());
        }
        // Which revision and replica this is, like a pod's name.
        env.insert("PAVE_REVISION".to_string(), spec.revision.to_string());
        env.insert("PAVE_REPLICA".to_string(), index.to_string());
        ShimSpec {
            revision: spec.revision,
            index,
            command: spec.command.clone(),
            env,
            cwd: spec.cwd.clone(),
            restart: spec.restart,
            memory_limit_mb: spec.memory_limit_mb,
            port,
            readiness: spec.readiness.clone(),
            cgroup_name: cgroup_name(key, spec.revision, index, wdir),
            log_max_bytes: self.log_max_bytes,
        }
    }

    /// Starts the shim of the replica in `dir`, detached from this process.
    fn start_shim(&self, dir: &Path) -> Result<(), TargetError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(SHIM_LOG))
            .map_err(|e| TargetError::io(format!("cannot open {}", dir.join(SHIM_LOG).display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| TargetError::io("cannot duplicate the shim log", e))?;
        let Some(program) = self.shim_command.first() else {
            return Err(TargetError::Invalid("the shim command is empty".into()));
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(&self.shim_command[1..])
            .arg(dir.join(SPEC_FILE))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        sys::detach(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| TargetError::io(format!("cannot start the shim `{program}`"), e))?;
        let pid = child.id() as i32;
        let start = sys::start_time(pid).unwrap_or(0);
        write_pid_file(&dir.join(SHIM_PID_FILE), pid, start)
            .map_err(|e| TargetError::io("cannot write shim.pid", e))?;
        // Reap the shim if it ends while we live; after a restart of pave, init does.
        let spawned = std::thread::Builder::new()
            .name("pave-shim-reaper".into())
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a reaper thread; the shim will be a zombie when it exits");
        }
        Ok(())
    }

    /// Kills the remains of a replica whose shim is gone (its workload group).
    fn kill_orphans(obs: &Observed) {
        if let Some(st) = &obs.status {
            if let (Some(pid), Some(start)) = (st.pid, st.pid_start_time) {
                sys::kill_group(pid, start);
            }
        }
    }

    /// The replicas whose output `logs` shows: one, or every replica of the
    /// current revision.
    fn log_replicas(&self, key: &WorkloadKey, replica: Option<u32>) -> Result<Vec<ReplicaDir>, TargetError> {
        let wdir = self.workload_dir(key)?;
        let desired: Option<WorkloadSpec> = read_json(&wdir.join(DESIRED_FILE));
        let all = Self::replica_dirs(&wdir);
        if all.is_empty() {
            return Err(TargetError::NotFound(format!("workload {key} has no replicas")));
        }
        let current = desired
            .map(|d| d.revision)
            .filter(|rev| all.iter().any(|r| r.revision == *rev))
            .unwrap_or_else(|| all.iter().map(|r| r.revision).max().unwrap_or(0));
        let chosen: Vec<ReplicaDir> = all
            .into_iter()
            .filter(|r| r.revision == current && replica.is_none_or(|i| r.index == i))
            .collect();
        if chosen.is_empty() {
            return Err(TargetError::NotFound(format!(
                "workload {key} has no replica {} in revision {current}",
                replica.unwrap_or(0)
            )));
        }
        Ok(chosen)
    }

    /// Stops replicas (SIGTERM to their shims, then SIGKILL) and removes their directories.
    async fn stop_replicas(&self, replicas: &[ReplicaDir]) -> Result<(), TargetError> {
        let observed: Vec<(ReplicaDir, Observed)> = replicas
            .iter()
            .map(|r| (r.clone(), Self::observe(&r.dir)))
            .collect();
        for (_, obs) in &observed {
            if let (true, Some(pid)) = (obs.shim_alive, obs.shim_pid) {
                sys::signal_pid(pid, libc::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            let running = observed.iter().any(|(r, _)| {
                read_pid_file(&r.dir.join(SHIM_PID_FILE)).is_some_and(|(p, st)| sys::alive(p, st))
            });
            if !running || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut first_error = None;
        for (r, obs) in observed {
            if let Some((p, st)) = read_pid_file(&r.dir.join(SHIM_PID_FILE)) {
                if sys::alive(p, st) {
                    sys::signal_pid(p, libc::SIGKILL);
                }
            }
            // Re-read: the shim may have started a new child since.
            let obs = Observed {
                status: read_json(&r.dir.join(STATUS_FILE)).or(obs.status),
                ..obs
            };
            Self::kill_orphans(&obs);
            if let Some(cg) = obs.status.as_ref().and_then(|s| s.cgroup.clone()) {
                // The group may take a moment to die after SIGKILL.
                if let Some(st) = &obs.status {
                    if let (Some(pid), Some(start)) = (st.pid, st.pid_start_time) {
                        for _ in 0..40 {
                            if !sys::group_alive(pid, start) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(25)).await;
                        }
                    }
                }
                cgroup::remove_path(Path::new(&cg));
            }
            if let Err(e) = std::fs::remove_dir_all(&r.dir) {
                if e.kind() != std::io::ErrorKind::NotFound && first_error.is_none() {
                    first_error = Some(TargetError::io(format!("cannot remove {}", r.dir.display()), e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn replica_status(r: &ReplicaDir, obs: &Observed) -> ReplicaStatus {
        let spec_port = obs.spec.as_ref().and_then(|s| s.port);
        let mut rs = ReplicaStatus {
            index: r.index,
            revision: r.revision,
            port: spec_port,
            pid: None,
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            ready: false,
            restart_count: 0,
            last_state: None,
            started_at: None,
            warnings: Vec::new(),
        };
        if let Some(st) = &obs.status {
            rs.restart_count = st.restart_count;
            rs.last_state = st.last_state.clone();
            rs.started_at = st.started_at;
            rs.warnings = st.warnings.clone();
            rs.port = st.port.or(spec_port);
        }
        match (&obs.status, obs.shim_alive) {
            (Some(st), true) => {
                rs.state = st.state.clone();
                // A pid is reported only while that very process runs.
                rs.pid = match (st.pid, st.pid_start_time) {
                    (Some(p), Some(start)) if sys::alive(p, start) => Some(p),
                    _ => None,
                };
            }
            (None, true) => {}
            (Some(st), false) if st.done => rs.state = st.state.clone(),
            (status, false) => {
                rs.state = ContainerState::Terminated {
                    reason: "Error".into(),
                    exit_code: None,
                    signal: None,
                    message: Some("supervisor lost".into()),
                    finished_at: status.as_ref().map_or_else(now_ms, |s| s.updated_at),
                };
            }
        }
        rs
    }

    async fn probe(readiness: Option<Readiness>, port: Option<u16>, pid: Option<i32>) -> bool {
        let Some(readiness) = readiness else {
            return true;
        };
        let (Some(port), Some(pid)) = (port, pid) else {
            return false;
        };
        // The workload runs in a process group of its own, led by its command.
        if !sys::group_listens_on(pid, port) {
            return false;
        }
        tokio::time::timeout(PROBE_TIMEOUT, async move {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            let Readiness::Http { path } = readiness else {
                return Some(true);
            };
            let path = if path.starts_with('/') { path } else { format!("/{path}") };
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: pave-probe\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut head = Vec::new();
            let mut reader = BufReader::new(stream).take(1024);
            reader.read_until(b'\n', &mut head).await.ok()?;
            let line = String::from_utf8_lossy(&head);
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((200..300).contains(&code))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
    }

    async fn status_of(&self, key: &WorkloadKey) -> Result<WorkloadStatus, TargetError> {
        let wdir = self.workload_dir(key)?;
        let desired: Option<WorkloadSpec> = read_json(&wdir.join(DESIRED_FILE));
        let mut probes = Vec::new();
        let mut replicas = Vec::new();
        for r in Self::replica_dirs(&wdir) {
            let obs = Self::observe(&r.dir);
            let rs = Self::replica_status(&r, &obs);
            let readiness = obs.spec.as_ref().and_then(|s| s.readiness.clone());
            let probe = (rs.state.is_running() && obs.shim_alive && rs.pid.is_some())
                .then(|| tokio::spawn(Self::probe(readiness, rs.port, rs.pid)));
            probes.push(probe);
            replicas.push(rs);
        }
        for (rs, probe) in replicas.iter_mut().zip(probes) {
            if let Some(p) = probe {
                rs.ready = p.await.unwrap_or(false);
            }
        }
        let mut counts: BTreeMap<i64, RevisionCount> = BTreeMap::new();
        for rs in &replicas {
            let c = counts.entry(rs.revision).or_default();
            c.replicas += 1;
            c.ready += u32::from(rs.ready);
        }
        let revision = desired.as_ref().map(|d| d.revision);
        let desired_n = desired.as_ref().map_or(0, |d| d.replicas);
        let ready = revision.and_then(|r| counts.get(&r)).map_or(0, |c| c.ready);
        let conditions = conditions(revision, desired_n, ready, &counts, &replicas);
        Ok(WorkloadStatus {
            revision,
            revision_counts: counts,
            desired: desired_n,
            ready,
            replicas,
            conditions,
        })
    }

    /// The replica a command runs in: one of the desired revision, ready first.
    fn pick_replica(&self, wdir: &Path) -> Option<(ReplicaDir, Observed)> {
        let desired: Option<WorkloadSpec> = read_json(&wdir.join(DESIRED_FILE));
        let mut all: Vec<(ReplicaDir, Observed)> = Self::replica_dirs(wdir)
            .into_iter()
            .map(|r| {
                let o = Self::observe(&r.dir);
                (r, o)
            })
            .filter(|(_, o)| o.spec.is_some())
            .collect();
        all.sort_by_key(|(r, o)| {
            let current = Some(r.revision) == desired.as_ref().map(|d| d.revision);
            let running = o.shim_alive && o.status.as_ref().is_some_and(|s| s.state.is_running());
            (!current, !running, r.index)
        });
        all.into_iter().next()
    }
}

/// A cgroup name unique to the replica directory (two roots may hold the same key).
fn cgroup_name(key: &WorkloadKey, revision: i64, index: u32, wdir: &Path) -> String {
    // FNV-1a over the directory path.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in wdir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect()
    };
    format!(
        "{}.{}.{revision}-{index}.{:08x}",
        clean(&key.env),
        clean(&key.name),
        hash as u32
    )
}

fn conditions(
    revision: Option<i64>,
    desired: u32,
    ready: u32,
    counts: &BTreeMap<i64, RevisionCount>,
    replicas: &[ReplicaStatus],
) -> Vec<Condition> {
    let Some(revision) = revision else {
        return Vec::new();
    };
    let available = ready >= desired;
    let mut out = vec![Condition {
        kind: "Available".into(),
        status: available,
        reason: if available {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        }
        .into(),
        message: format!("{ready} of {desired} replicas of revision {revision} are ready"),
    }];
    let only_current = counts.keys().all(|&r| r == revision);
    let complete = available && only_current;
    out.push(Condition {
        kind: "Progressing".into(),
        status: true,
        reason: if complete {
            "NewReplicaSetAvailable"
        } else {
            "ReplicaSetUpdated"
        }
        .into(),
        message: format!("revision {revision}: {ready}/{desired} ready"),
    });
    let failing: Vec<String> = replicas
        .iter()
        .filter(|r| r.revision == revision)
        .filter_map(|r| {
            let reason = match r.state.reason() {
                Some(reason @ ("CrashLoopBackOff" | "OOMKilled" | "Error" | "ContainerCannotRun")) => reason,
                _ => return None,
            };
            Some(format!("replica {}: {reason}", r.index))
        })
        .collect();
    if !failing.is_empty() {
        out.push(Condition {
            kind: "ReplicaFailure".into(),
            status: true,
            reason: "ContainerFailing".into(),
            message: failing.join("; "),
        });
    }
    out
}

fn validate(spec: &WorkloadSpec) -> Result<(), TargetError> {
    if spec.command.is_empty() || spec.command[0].is_empty() {
        return Err(TargetError::Invalid(match &spec.image {
            Some(image) => format!(
                "the local target runs a command on its host, not an image ({image}): give the revision a command"
            ),
            None => "the command is empty".into(),
        }));
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(TargetError::Invalid(format!(
                "{k:?} is not a valid environment variable"
            )));
        }
    }
    if spec.memory_limit_mb == Some(0) {
        return Err(TargetError::Invalid("memory_limit_mb must be positive".into()));
    }
    if let Some(cwd) = &spec.cwd {
        if !Path::new(cwd).is_dir() {
            return Err(TargetError::Invalid(format!(
                "working directory {cwd} does not exist"
            )));
        }
    }
    Ok(())
}

fn tail_lines(path: &Path, n: usize, out: &mut Vec<String>) {
    let mut lines = Vec::new();
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    for p in [PathBuf::from(rotated), path.to_path_buf()] {
        if let Ok(bytes) = std::fs::read(&p) {
            lines.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_string));
        }
    }
    let skip = lines.len().saturating_sub(n);
    out.extend(lines.into_iter().skip(skip));
}

/// How often a followed log is read again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// A log file being followed: how much of it was read.
struct FollowedFile {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl FollowedFile {
    /// The complete lines written since the last read.
    fn read_new(&mut self) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return vec![];
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < self.offset {
            // Rotated: the file starts again.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return vec![];
        }
        let mut buf = Vec::new();
        if (&mut f).take(len - self.offset).read_to_end(&mut buf).is_err() {
            return vec![];
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            lines.push(
                String::from_utf8_lossy(&line)
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            );
        }
        lines
    }
}

#[async_trait]
impl Target for LocalTarget {
    async fn apply(&self, key: &WorkloadKey, spec: &WorkloadSpec) -> Result<WorkloadStatus, TargetError> {
        validate(spec)?;
        let wdir = self.workload_dir(key)?;
        {
            let _guard = self.lock.lock().await;
            std::fs::create_dir_all(&wdir)
                .map_err(|e| TargetError::io(format!("cannot create {}", wdir.display()), e))?;
            write_json_atomic(&wdir.join(DESIRED_FILE), spec)
                .map_err(|e| TargetError::io("cannot write desired.json", e))?;
            let existing = Self::replica_dirs(&wdir);
            let mut taken = None;
            for index in 0..spec.replicas {
                let dir = wdir.join(format!("{}-{index}", spec.revision));
                if dir.join(SPEC_FILE).is_file() {
                    let obs = Self::observe(&dir);
                    if obs.shim_alive || obs.status.as_ref().is_some_and(|s| s.done) {
                        continue;
                    }
                    // The supervisor was lost: clear what it left and start it again.
                    tracing::info!(workload = %key, replica = index, "restarting a lost supervisor");
                    Self::kill_orphans(&obs);
                    self.start_shim(&dir)?;
                    continue;
                }
                std::fs::create_dir_all(&dir)
                    .map_err(|e| TargetError::io(format!("cannot create {}", dir.display()), e))?;
                let port = if spec.port {
                    let taken = taken.get_or_insert_with(|| self.ports_in_use());
                    let p = Self::free_port(taken)?;
                    taken.insert(p);
                    Some(p)
                } else {
                    None
                };
                let shim_spec = self.shim_spec(key, spec, index, port, &wdir);
                write_json_atomic(&dir.join(SPEC_FILE), &shim_spec)
                    .map_err(|e| TargetError::io("cannot write spec.json", e))?;
                self.start_shim(&dir)?;
            }
            // Scaling down the desired revision is part of its desired state.
            let extra: Vec<ReplicaDir> = existing
                .into_iter()
                .filter(|r| r.revision == spec.revision && r.index >= spec.replicas)
                .collect();
            if !extra.is_empty() {
                self.stop_replicas(&extra).await?;
            }
        }
        self.status_of(key).await
    }

    async fn status(&self, key: &WorkloadKey) -> Result<WorkloadStatus, TargetError> {
        self.status_of(key).await
    }

    async fn prune(&self, key: &WorkloadKey, keep: Option<i64>) -> Result<(), TargetError> {
        let wdir = self.workload_dir(key)?;
        let _guard = self.lock.lock().await;
        let doomed: Vec<ReplicaDir> = Self::replica_dirs(&wdir)
            .into_iter()
            .filter(|r| Some(r.revision) != keep)
            .collect();
        self.stop_replicas(&doomed).await?;
        if keep.is_none() {
            match std::fs::remove_dir_all(&wdir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(TargetError::io(format!("cannot remove {}", wdir.display()), e)),
            }
            if let Some(env_dir) = wdir.parent() {
                // Only succeeds when no other workload of the environment is left.
                let _ = std::fs::remove_dir(env_dir);
            }
        }
        Ok(())
    }

    async fn logs(
        &self,
        key: &WorkloadKey,
        replica: Option<u32>,
        tail: usize,
    ) -> Result<Vec<String>, TargetError> {
        let chosen = self.log_replicas(key, replica)?;
        let mut lines = Vec::new();
        for r in &chosen {
            tail_lines(&r.dir.join(STDOUT_LOG), tail, &mut lines);
            tail_lines(&r.dir.join(STDERR_LOG), tail, &mut lines);
        }
        let skip = lines.len().saturating_sub(tail);
        Ok(lines.into_iter().skip(skip).collect())
    }

    async fn follow_logs(
        &self,
        key: &WorkloadKey,
        replica: Option<u32>,
        tail: usize,
        out: mpsc::Sender<String>,
    ) -> Result<(), TargetError> {
        let chosen = self.log_replicas(key, replica)?;
        // Where each file ends now: what follows is new.
        let mut files: Vec<FollowedFile> = chosen
            .iter()
            .flat_map(|r| [r.dir.join(STDOUT_LOG), r.dir.join(STDERR_LOG)])
            .map(|path| FollowedFile {
                offset: std::fs::metadata(&path).map_or(0, |m| m.len()),
                partial: Vec::new(),
                path,
            })
            .collect();
        for line in self.logs(key, replica, tail).await? {
            if out.send(line).await.is_err() {
                return Ok(());
            }
        }
        let dirs: Vec<PathBuf> = chosen.into_iter().map(|r| r.dir).collect();
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            for f in &mut files {
                for line in f.read_new() {
                    if out.send(line).await.is_err() {
                        return Ok(());
                    }
                }
            }
            // A replica that was stopped (pruned, scaled down) ends its part.
            if dirs.iter().all(|d| !d.exists()) {
                return Ok(());
            }
            if out.is_closed() {
                return Ok(());
            }
        }
    }

    async fn exec(
        &self,
        key: &WorkloadKey,
        command: &[String],
        out: mpsc::Sender<(String, String)>,
    ) -> Result<i32, TargetError> {
        let Some(program) = command.first() else {
            return Err(TargetError::Invalid("the command is empty".into()));
        };
        let wdir = self.workload_dir(key)?;
        let Some((r, obs)) = self.pick_replica(&wdir) else {
            return Err(TargetError::NotFound(format!("workload {key} has no replicas")));
        };
        let Some(spec) = obs.spec else {
            return Err(TargetError::NotFound(format!(
                "workload {key} has no replica spec"
            )));
        };
        let cwd = spec.cwd.map(PathBuf::from).unwrap_or(r.dir.clone());
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&command[1..])
            .env_clear()
            .envs(&spec.env)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| TargetError::io(format!("cannot run `{program}`"), e))?;
        let pid = child.id().map_or(0, |p| p as i32);
        // Like `kubectl exec`, the command counts against the replica's memory.
        if let Some(cg) = obs.status.as_ref().and_then(|s| s.cgroup.as_ref()) {
            let _ = std::fs::write(Path::new(cg).join("cgroup.procs"), pid.to_string());
        }
        let stdout = child
            .stdout
            .take()
            .map(|s| tokio::spawn(crate::forward_lines(s, "stdout", LINE_MAX, out.clone())));
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(crate::forward_lines(s, "stderr", LINE_MAX, out.clone())));
        let status = child
            .wait()
            .await
            .map_err(|e| TargetError::io("cannot wait for the command", e))?;
        sys::signal_group(pid, libc::SIGKILL);
        for h in [stdout, stderr].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().or(status.signal().map(|s| 128 + s)).unwrap_or(-1))
    }
}
