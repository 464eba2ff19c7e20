//! Footprint of `pave serve`: start-to-ready time and idle resident memory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often readiness is probed.
const PROBE_EVERY: Duration = Duration::from_millis(2);
/// Longest a start may take before the benchmark gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the serve runs measured.
pub struct ServeFigures {
    /// Spawn to the first `200` from `/readyz`, one per run.
    pub ready: Vec<Duration>,
    /// `VmRSS` of an idle server, in kB (KiB, as /proc reports it).
    pub idle_rss_kib: u64,
    /// `VmHWM` (peak resident) of that server, in kB.
    pub peak_rss_kib: u64,
    /// How long the server was left idle before reading its memory.
    pub idle: Duration,
}

impl ServeFigures {
    pub fn sorted_ready(&self) -> Vec<Duration> {
        let mut v = self.ready.clone();
        v.sort();
        v
    }
    pub fn min(&self) -> Duration {
        self.sorted_ready().first().copied().unwrap_or_default()
    }
    pub fn median(&self) -> Duration {
        let v = self.sorted_ready();
        match v.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2,
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `pave serve` `runs` times on fresh data directories under `tmp_root`,
/// then leaves the last one idle for `idle` and reads its memory.
pub fn bench_serve(pave: &Path, tmp_root: &Path, runs: usize, idle: Duration) -> Result<ServeFigures> {
    if !pave.is_file() {
        bail!(
            "the pave binary {} does not exist (build it with `cargo build --release -p pave`, or pass --pave-bin)",
            pave.display()
        );
    }
    let runs = runs.max(1);
    let mut ready = Vec::with_capacity(runs);
    let mut last = None;
    for i in 0..runs {
        let dir = tempfile::Builder::new()
            .prefix("pave-bench-serve-")
            .tempdir_in(tmp_root)
            .with_context(|| format!("could not create a data directory under {}", tmp_root.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], pave_testkit::free_port()));
        let started = Instant::now();
        let child = Command::new(pave)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--agent-listen")
            .arg(format!("127.0.0.1:{}", pave_testkit::free_port()))
            // The figure is for the default setup: SQLite in the data directory.
            .env_remove("PAVE_DATABASE_URL")
            .env_remove("PAVE_WORKERS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {} serve", pave.display()))?;
        let mut server = Server { child };
        let took = wait_ready(&mut server, addr, started).with_context(|| format!("run {}", i + 1))?;
        ready.push(took);
        if i + 1 == runs {
            last = Some((server, dir));
        } else {
            server.stop();
        }
    }
    let Some((mut server, _dir)) = last else {
        bail!("no server was started");
    };
    std::thread::sleep(idle);
    if let Some(status) = server.child.try_wait().context("could not check on pave serve")? {
        bail!("pave serve exited with {status} while idle");
    }
    let status_path = format!("/proc/{}/status", server.child.id());
    let status =
        std::fs::read_to_string(&status_path).with_context(|| format!("could not read {status_path}"))?;
    let idle_rss_kib = proc_status_kib(&status, "VmRSS:").context("no VmRSS in /proc/<pid>/status")?;
    let peak_rss_kib = proc_status_kib(&status, "VmHWM:").unwrap_or(0);
    server.stop();
    Ok(ServeFigures {
        ready,
        idle_rss_kib,
        peak_rss_kib,
        idle,
    })
}

/// Probes `/readyz` every [`PROBE_EVERY`] until it answers 200.
fn wait_ready(server: &mut Server, addr: SocketAddr, started: Instant) -> Result<Duration> {
    loop {
        if let Some(status) = server.child.try_wait().context("could not check on pave serve")? {
            bail!("pave serve exited with {status} before it was ready");
        }
        if probe(addr) == Some(200) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("pave serve was not ready within {} s", START_TIMEOUT.as_secs());
        }
        std::thread::sleep(PROBE_EVERY);
    }
}

/// One `GET /readyz` over HTTP/1.0; the status code, or `None` when the server
/// does not answer (yet).
fn probe(addr: SocketAddr) -> Option<u16> {
    http_status(addr, "/readyz")
}

/// One `GET <path>` over HTTP/1.0; the status code, or `None` when the server
/// does not answer (yet).
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head)
}

/// The status code of an HTTP status line (`HTTP/1.1 200 OK`).
fn status_code(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A `Name:   1234 kB` figure of /proc/<pid>/status.
fn proc_status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(status_code(b"HTTP/1.0 200 OK\r\ncontent-type: x\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.1 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_code(b"garbage"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn proc_status_figures_parse() {
        let s = "Name:\tpave\nVmHWM:\t   30000 kB\nVmRSS:\t   21234 kB\n";
        assert_eq!(proc_status_kib(s, "VmRSS:"), Some(21234));
        assert_eq!(proc_status_kib(s, "VmHWM:"), Some(30000));
        assert_eq!(proc_status_kib(s, "VmSwap:"), None);
    }

    #[test]
    fn median_of_even_and_odd_runs() {
        let f = |ms: &[u64]| ServeFigures {
            ready: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            idle_rss_kib: 0,
            peak_rss_kib: 0,
            idle: Duration::ZERO,
        };
        assert_eq!(f(&[30, 10, 20]).median(), Duration::from_millis(20));
        assert_eq!(f(&[40, 10, 20, 30]).median(), Duration::from_millis(25));
        assert_eq!(f(&[40, 10, 20, 30]).min(), Duration::from_millis(10));
    }
}
