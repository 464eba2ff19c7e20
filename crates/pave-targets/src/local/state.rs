//! The files a replica's directory holds, shared by the shim and the target.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ContainerState, Readiness, RestartPolicy, Timestamp};

pub const SPEC_FILE: &str = "spec.json";
pub const STATUS_FILE: &str = "status.json";
pub const SHIM_PID_FILE: &str = "shim.pid";
pub const STDOUT_LOG: &str = "stdout.log";
pub const STDERR_LOG: &str = "stderr.log";
pub const SHIM_LOG: &str = "shim.log";
/// Default cap of each log file before it is rotated to `<name>.1`.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 5 * 1024 * 1024;

/// What the shim runs: everything resolved by the target (full environment, port).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub revision: i64,
    pub index: u32,
    pub command: Vec<String>,
    /// The complete environment of the child.
    pub env: BTreeMap<String, String>,
    /// Working directory; the replica's directory when unset.
    pub cwd: Option<String>,
    pub restart: RestartPolicy,
    pub memory_limit_mb: Option<u64>,
    pub port: Option<u16>,
    pub readiness: Option<Readiness>,
    /// Name of the replica's cgroup under the `pave` parent cgroup.
    pub cgroup_name: String,
    #[serde(default = "default_log_max")]
    pub log_max_bytes: u64,
}

fn default_log_max() -> u64 {
    DEFAULT_LOG_MAX_BYTES
}

/// What the shim reports in `status.json` (replaced atomically).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimStatus {
    pub state: ContainerState,
    pub restart_count: u32,
    pub last_state: Option<ContainerState>,
    /// The child, while it runs; it leads its own process group.
    pub pid: Option<i32>,
    pub pid_start_time: Option<u64>,
    pub port: Option<u16>,
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Path of the replica's cgroup, when one was made.
    pub cgroup: Option<String>,
    pub shim_pid: i32,
    /// The shim has stopped for good (restart policy, or told to stop).
    #[serde(default)]
    pub done: bool,
    pub updated_at: Timestamp,
}

pub fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Timestamp)
        .unwrap_or(0)
}

/// Writes `value` as JSON to `path` through a temporary file and a rename, so a
/// reader sees the old or the new content, never a torn one.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, &body)
}

/// Writes through a temporary file named after the writing process: pave and
/// the shim both write some files (`shim.pid`), and a shared temporary name
/// would let one rename the other's away.
fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// `shim.pid` holds "PID START_TIME".
pub fn read_pid_file(path: &Path) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn write_pid_file(path: &Path, pid: i32, start_time: u64) -> std::io::Result<()> {
    write_atomic(path, format!("{pid} {start_time}\n").as_bytes())
}
