//! A `pave serve` child process over a fresh data directory, as the
//! remediation and agents sections start it: free API and agent ports,
//! nothing of the caller's `PAVE_*` settings, ready and with its admin token
//! read before it is handed over; killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM gets before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Variables of the bench's own environment that must not reach the server.
const CLEARED: &[&str] = &[
    "PAVE_DATABASE_URL",
    "PAVE_WORKERS",
    "PAVE_VERIFY_WINDOW",
    "PAVE_HEALTH_EVERY",
    "PAVE_REMEDIATION_EVERY",
    "PAVE_SERVER",
    "PAVE_TOKEN",
    "PAVE_LISTEN",
    "PAVE_AGENT_LISTEN",
    "PAVE_DATA_DIR",
    "PAVE_LOG_FORMAT",
];

pub struct ServeChild {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub token: String,
    pub data_dir: PathBuf,
    pub dir: tempfile::TempDir,
}

impl ServeChild {
    /// Starts `pave serve` (with `args` after the listen flags) in a new
    /// directory named `prefix…` under `tmp`, and waits until it is ready.
    pub fn start(pave: &Path, tmp: &Path, prefix: &str, args: &[String]) -> Result<Self> {
        if !pave.is_file() {
            bail!(
                "the pave binary {} does not exist (build it with `cargo build --release -p pave`, or pass --pave-bin)",
                pave.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(tmp)
            .with_context(|| format!("could not create a directory under {}", tmp.display()))?;
        let data_dir = dir.path().join("pave-data");
        let addr = SocketAddr::from(([127, 0, 0, 1], pave_testkit::free_port()));
        let agent_addr = SocketAddr::from(([127, 0, 0, 1], pave_testkit::free_port()));
        let log =
            std::fs::File::create(dir.path().join("serve.log")).context("could not create serve.log")?;
        let mut cmd = Command::new(pave);
        for var in CLEARED {
            cmd.env_remove(var);
        }
        // The child inherits this process's open-file limit.
        let child = cmd
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--agent-listen")
            .arg(agent_addr.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start {} serve", pave.display()))?;
        let mut server = ServeChild {
            child: Some(child),
            addr,
            agent_addr,
            token: String::new(),
            data_dir,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(c) = server.child.as_mut() {
                if let Some(status) = c.try_wait().context("could not check on pave serve")? {
                    bail!(
                        "pave serve exited with {status} before it was ready: {}",
                        server.log_tail(8)
                    );
                }
            }
            if crate::serve_bench::http_status(addr, "/readyz") == Some(200) {
                break;
            }
            if Instant::now() > deadline {
                bail!("pave serve was not ready within {} s", START_TIMEOUT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let token_file = server.data_dir.join("admin.token");
        server.token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("could not read {}", token_file.display()))?
            .trim()
            .to_string();
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// How the server ended, if it did.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of the server's log, on one line.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child
            .try_wait()
            .context("could not check on pave serve")?
            .is_none()
        {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "pave serve did not stop within {} s of SIGTERM; killed it",
                    STOP_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The status code and body of a whole HTTP/1 response.
pub fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = std::str::from_utf8(&response[..split]).context("the response head is not UTF-8")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    Ok((status, response[split + 4..].to_vec()))
}
