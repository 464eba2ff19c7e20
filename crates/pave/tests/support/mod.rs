//! Runs the real `pave` binary: a server process and CLI processes against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A temporary directory other users may pass through (PostgreSQL resources
/// run as `postgres` below it).
pub fn tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    d
}

pub fn pave_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pave")
}

/// A `pave serve` process on a free port.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub port: u16,
}

impl Server {
    pub fn start(data_dir: &Path, database_url: Option<&str>) -> Server {
        Self::start_on(data_dir, database_url, pave_testkit::free_port())
    }

    pub fn start_on(data_dir: &Path, database_url: Option<&str>, port: u16) -> Server {
        Self::start_with(data_dir, database_url, port, &[])
    }

    /// With extra environment variables for the server (`PAVE_VERIFY_WINDOW`, …).
    pub fn start_with(
        data_dir: &Path,
        database_url: Option<&str>,
        port: u16,
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(pave_bin());
        cmd.env(
            "PAVE_AGENT_LISTEN",
            format!("127.0.0.1:{}", pave_testkit::free_port()),
        );
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("PAVE_HEALTH_EVERY", "1s")
            .stdout(Stdio::null())
            .stderr(server_log(data_dir));
        if let Some(u) = database_url {
            cmd.arg("--database-url").arg(u);
        }
        let child = cmd.spawn().expect("spawn pave serve");
        let s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            database_url: database_url.map(str::to_string),
            port,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_status(self.port, "/readyz", None) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pave serve did not become ready");
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string()
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(pave_bin())
            .args(args)
            .env("PAVE_SERVER", &self.url)
            .env("PAVE_TOKEN", self.token())
            .env("PAVE_CONFIG", self.data_dir.join("cli-config.json"))
            .output()
            .expect("run pave")
    }

    /// Runs the CLI and parses its JSON output.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn action(&self, id: &str) -> serde_json::Value {
        self.cli_json(&["actions", "get", id, "-o", "json"])
    }

    /// Waits until the action is in one of `states`.
    pub fn wait_state(&self, id: &str, states: &[&str]) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let a = self.action(id);
            if states.contains(&a["state"].as_str().unwrap_or("")) {
                return a;
            }
            assert!(Instant::now() < deadline, "action {id} stuck in {}", a["state"]);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's log goes next to its data directory, appended across restarts.
pub fn server_log(data_dir: &Path) -> Stdio {
    let path = data_dir.with_extension("log");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// Status of a plain HTTP/1.0 GET on loopback, with an optional bearer token.
pub fn http_status(port: u16, path: &str, token: Option<&str>) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Asserts a CLI run exited 0, showing what it printed otherwise.
pub fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
