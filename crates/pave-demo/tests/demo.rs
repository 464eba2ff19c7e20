//! Runs the real pave-demo binary against a real PostgreSQL and a real
//! redis-server, and checks each of its misbehaviours.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use pave_testkit::free_port;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pave-demo");

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&addr(port), Duration::from_millis(200)).is_ok()
}

/// The binary with exactly these variables (nothing inherited).
fn command(env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear().envs(env.iter().copied()).stdin(Stdio::null());
    c
}

/// A running pave-demo, killed when dropped.
struct Demo {
    child: Child,
    port: u16,
    started: Instant,
}

impl Demo {
    /// Starts it on a free port (its output goes to the test's) and waits
    /// until it accepts connections.
    fn start(env: &[(&str, &str)]) -> Demo {
        let port = free_port();
        let port_s = port.to_string();
        let mut env = env.to_vec();
        env.push(("PORT", &port_s));
        let started = Instant::now();
        let child = command(&env).spawn().expect("cannot run pave-demo");
        let mut demo = Demo { child, port, started };
        let took = demo.wait_listening();
        eprintln!(
            "pave-demo was listening {:.1} ms after spawn",
            took.as_secs_f64() * 1e3
        );
        demo
    }

    fn wait_listening(&mut self) -> Duration {
        let deadline = self.started + Duration::from_secs(10);
        loop {
            if TcpStream::connect(addr(self.port)).is_ok() {
                return self.started.elapsed();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("pave-demo exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "pave-demo not listening after 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }

    fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: body is not JSON ({e}): {body}"));
        (status, json)
    }

    /// Waits up to `limit` for it to exit on its own.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pave-demo still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs it to completion (or fails after `limit`), capturing its output.
fn run_to_exit(env: &[(&str, &str)], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run pave-demo");
    wait_exit(&mut child, limit);
    let took = started.elapsed();
    (child.wait_with_output().unwrap(), took)
}

/// HTTP/1.0 GET on 127.0.0.1: status and body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr(port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// A redis-server of our own with a password, on a free port.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(password: &str) -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--requirepass", password, "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH); these tests need a real one: \
                 apt-get install -y redis-server"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !accepts(port) {
            if let Some(status) = redis.child.try_wait().unwrap() {
                panic!("redis-server exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "redis-server not listening after 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        redis
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resident memory of a process, in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmRSS in /proc/PID/status")
}

#[tokio::test]
async fn healthz_is_ok_with_real_postgres_and_redis() {
    let pg = pave_testkit::TestPostgres::new().await;
    let mut redis = Redis::start("demo-redis-pw");
    let redis_url = format!("redis://:demo-redis-pw@127.0.0.1:{}/0", redis.port);
    let demo = Demo::start(&[("DATABASE_URL", &pg.url), ("REDIS_URL", &redis_url)]);

    // Checked for real every time, not once.
    for _ in 0..3 {
        let (status, body) = demo.get_json("/healthz");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok", "{body}");
        assert_eq!(body["checks"]["postgres"], "ok", "{body}");
        assert_eq!(body["checks"]["redis"], "ok", "{body}");
    }

    // A user name in the URL: AUTH user password.
    let with_user = format!("redis://default:demo-redis-pw@127.0.0.1:{}/0", redis.port);
    let demo2 = Demo::start(&[("REDIS_URL", &with_user)]);
    let (status, body) = demo2.get_json("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["postgres"], "not configured", "{body}");

    // Redis goes away: the next check says so.
    redis.stop();
    let (status, body) = demo.get_json("/healthz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    assert!(
        body["checks"]["redis"].as_str().unwrap().starts_with("error"),
        "{body}"
    );
}

#[test]
fn healthz_is_503_naming_redis_when_its_password_is_wrong() {
    let redis = Redis::start("the-right-one");
    let url = format!("redis://:not-the-right-one@127.0.0.1:{}", redis.port);
    let demo = Demo::start(&[("REDIS_URL", &url)]);
    let (status, raw) = demo.get("/healthz");
    assert!(!raw.contains("not-the-right-one"), "password leaked: {raw}");
    let body: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["checks"]["postgres"], "not configured", "{body}");
    let redis_check = body["checks"]["redis"].as_str().unwrap();
    assert!(redis_check.starts_with("error"), "{body}");
    assert!(redis_check.contains("WRONGPASS"), "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("redis"), "{body}");

    // No password at all, against a server that wants one.
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let demo = Demo::start(&[("REDIS_URL", &url)]);
    let (status, body) = demo.get_json("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["redis"].as_str().unwrap().contains("NOAUTH"),
        "{body}"
    );
}

#[test]
fn healthz_is_503_naming_postgres_when_it_is_unreachable() {
    let url = format!("postgresql://demo:pg-secret-pw@127.0.0.1:{}/demo", free_port());
    let demo = Demo::start(&[("DATABASE_URL", &url)]);
    let asked = Instant::now();
    let (status, raw) = demo.get("/healthz");
    let took = asked.elapsed();
    assert!(!raw.contains("pg-secret-pw"), "password leaked: {raw}");
    let body: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["redis"], "not configured", "{body}");
    assert!(
        body["checks"]["postgres"].as_str().unwrap().starts_with("error"),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().starts_with("postgres"), "{body}");
    assert!(took < Duration::from_secs(6), "healthz took {took:?}");
}

#[test]
fn fail_at_start_exits_1_without_listening() {
    let port = free_port();
    let port_s = port.to_string();
    let (out, took) = run_to_exit(
        &[("PORT", &port_s), ("DEMO_FAIL_AT_START", "1")],
        Duration::from_secs(5),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!out.stderr.is_empty(), "nothing on stderr");
    assert!(out.stdout.is_empty(), "it said something on stdout: {out:?}");
    assert!(!accepts(port), "something listens on {port}");
}

#[test]
fn crash_after_secs_serves_then_exits_1() {
    let mut demo = Demo::start(&[("DEMO_CRASH_AFTER_SECS", "1")]);
    let (status, _) = demo.get("/");
    assert_eq!(status, 200);
    let status = demo.wait_exit(Duration::from_secs(10));
    let lived = demo.started.elapsed();
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        lived >= Duration::from_millis(950),
        "crashed after only {lived:?}"
    );
    assert!(lived < Duration::from_secs(5), "crashed only after {lived:?}");
}

#[test]
fn leak_mb_per_sec_grows_resident_memory() {
    let demo = Demo::start(&[("DEMO_LEAK_MB_PER_SEC", "50")]);
    let pid = demo.child.id();
    let before = vm_rss_kib(pid);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut now = before;
    while Instant::now() < deadline && now.saturating_sub(before) < 80 * 1000 {
        std::thread::sleep(Duration::from_millis(100));
        now = vm_rss_kib(pid);
    }
    let grew = now.saturating_sub(before);
    assert!(
        grew >= 80 * 1000,
        "VmRSS grew by only {grew} kB in 3 s ({before} -> {now} kB)"
    );
    // Still serving while it leaks.
    assert_eq!(demo.get("/").0, 200);
}

#[test]
fn missing_or_bad_port_exits_2_with_a_message() {
    let (out, _) = run_to_exit(&[], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PORT"), "{stderr}");

    for bad in ["abc", "0", "70000"] {
        let (out, _) = run_to_exit(&[("PORT", bad)], Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(2), "PORT={bad}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("PORT"), "{stderr}");
    }
}

#[test]
fn root_greets_and_sigterm_exits_0() {
    let mut demo = Demo::start(&[
        ("PAVE_REVISION", "rev-42"),
        ("FEATURE_DARK_MODE", "secret-value"),
        ("FEATURE_BETA", "1"),
        ("NOT_A_FEATURE", "x"),
    ]);
    let (status, raw) = demo.get("/");
    assert_eq!(status, 200, "{raw}");
    assert!(!raw.contains("secret-value"), "a value leaked: {raw}");
    let body: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(body["pid"], demo.child.id(), "{body}");
    assert_eq!(body["revision"], "rev-42", "{body}");
    assert_eq!(
        body["features"],
        serde_json::json!(["FEATURE_BETA", "FEATURE_DARK_MODE"]),
        "{body}"
    );
    // Not configured is not a failure.
    let (status, body) = demo.get_json("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["postgres"], "not configured", "{body}");
    assert_eq!(body["checks"]["redis"], "not configured", "{body}");

    let killed = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = demo.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status}");
}
