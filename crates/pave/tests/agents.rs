//! Remote agents across a real network: `pave serve` and `pave agent` as
//! separate processes over a TLS WebSocket. Enrollment, an environment run
//! by the agent, a used token and a revoked agent refused; a connection cut
//! in the middle of a job (the result arrives after the reconnect, the job
//! runs once); the agent and the server killed with SIGKILL mid-command.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// A `pave agent` process.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(server: &str, ca: &Path, data_dir: &Path, enroll: Option<&str>) -> Agent {
        let log = data_dir.with_extension("log");
        let mut cmd = Command::new(pave_bin());
        cmd.args(["agent", "--server", server, "--ca-file"])
            .arg(ca)
            .arg("--data-dir")
            .arg(data_dir)
            .env("PAVE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"));
        if let Some(t) = enroll {
            cmd.args(["--enroll", t]);
        }
        Agent {
            child: cmd.spawn().expect("spawn pave agent"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn connected(server: &Server, target: &str) -> bool {
    server.cli_json(&["targets", "get", target, "-o", "json"])["agent_status"]["connected"] == true
}

/// A server with its agent listener on a port of the test's choosing.
fn server(dir: &Path, extra: &[(&str, &str)]) -> (Server, u16) {
    let agent_port = pave_testkit::free_port();
    let listen = format!("127.0.0.1:{agent_port}");
    let mut env = vec![("PAVE_AGENT_LISTEN", listen.as_str())];
    env.extend_from_slice(extra);
    let s = Server::start_with(&dir.join("pave-data"), None, pave_testkit::free_port(), &env);
    (s, agent_port)
}

fn add_target(server: &Server, name: &str) -> String {
    let v = server.cli_json(&["targets", "add", name, "--kind", "local", "--agent", "-o", "json"]);
    v["enrollment_token"]
        .as_str()
        .expect("enrollment_token")
        .to_string()
}

#[test]
fn an_agent_enrolls_once_runs_an_environment_on_its_own_host_and_is_revoked() {
    let dir = tempdir();
    let (server, agent_port) = server(dir.path(), &[]);
    let token = add_target(&server, "edge-1");
    let ca = dir.path().join("pave-data/tls/ca.pem");
    let url = format!("wss://127.0.0.1:{agent_port}");
    let agent_dir = dir.path().join("edge-1");
    let mut agent = Agent::start(&url, &ca, &agent_dir, Some(&token));
    wait_for("the agent to connect", Duration::from_secs(20), || {
        connected(&server, "edge-1")
    });
    let t = server.cli_json(&["targets", "get", "edge-1", "-o", "json"]);
    let status = &t["agent_status"];
    assert_eq!(status["protocol_version"], 1, "{t:#}");
    assert!(
        status["agent_version"].is_string() && status["hostname"].is_string(),
        "{t:#}"
    );
    assert!(
        status["capabilities"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "run_job")),
        "{t:#}"
    );
    let cred = std::fs::metadata(agent_dir.join("agent-credential.json")).expect("credential");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&cred.permissions()) & 0o777,
        0o600
    );

    ok(&server.cli(&["env", "create", "edge-staging", "--target", "edge-1"]));
    ok(&server.cli(&[
        "blueprint",
        "apply",
        "staging-environment",
        "--env",
        "edge-staging",
        "--set",
        "service=payments",
        "--wait",
    ]));
    let st = server.cli_json(&["env", "status", "edge-staging", "-o", "json"]);
    let text = st.to_string();
    assert_eq!(st["workloads"][0]["ready"], 2, "{st:#}");
    assert!(!text.contains("\"failed\""), "{st:#}");
    // The processes run under the agent: their files are in its data directory.
    assert!(agent_dir.join("resources/edge-staging").exists());
    assert!(agent_dir.join("workloads/edge-staging").exists());
    assert!(!dir.path().join("pave-data/resources/edge-staging").exists());
    // exec and logs reach the replicas through the agent.
    let out = server.cli(&[
        "exec",
        "payments",
        "--env",
        "edge-staging",
        "--",
        "sh",
        "-c",
        "echo ${DATABASE_URL%%:*}",
    ]);
    ok(&out);
    assert_eq!(stdout(&out).trim(), "postgresql");
    let out = server.cli(&["logs", "payments", "--env", "edge-staging"]);
    ok(&out);
    assert!(stdout(&out).contains("pave-demo listening"), "{}", stdout(&out));

    // The token is spent.
    let again = Command::new(pave_bin())
        .args(["agent", "--server", &url, "--ca-file"])
        .arg(&ca)
        .args(["--enroll", &token, "--data-dir"])
        .arg(dir.path().join("x"))
        .output()
        .expect("pave agent");
    assert_eq!(again.status.code(), Some(6), "{}", stderr(&again));
    assert!(stderr(&again).contains("already used"), "{}", stderr(&again));
    // An agent credential opens no user API.
    let cred: Value =
        serde_json::from_slice(&std::fs::read(agent_dir.join("agent-credential.json")).unwrap()).unwrap();
    let secret = cred["credential"].as_str().unwrap();
    assert_eq!(
        http_status(server.port, "/api/v1/environments", Some(secret)),
        Some(401)
    );

    ok(&server.cli(&["env", "delete", "edge-staging", "--wait"]));
    ok(&server.cli(&["targets", "revoke-agent", "edge-1"]));
    wait_for("the revoked agent to stop", Duration::from_secs(10), || {
        matches!(agent.child.try_wait(), Ok(Some(_)))
    });
    assert!(agent.log().contains("revoked"), "{}", agent.log());
    assert!(!connected(&server, "edge-1"));
    // Its credential is refused from now on.
    let mut again = Agent::start(&url, &ca, &agent_dir, None);
    wait_for("the refused agent to stop", Duration::from_secs(10), || {
        matches!(again.child.try_wait(), Ok(Some(_)))
    });
    assert!(again.log().contains("revoked"), "{}", again.log());
    let audit = server.cli_json(&["audit", "list", "-o", "json", "--limit", "500"]);
    let verbs: Vec<String> = audit["events"]
        .as_array()
        .or(audit.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e["verb"].as_str().map(str::to_string))
        .collect();
    for verb in [
        "target.add",
        "agent.enroll",
        "agent.connect",
        "agent.command",
        "agent.revoke",
    ] {
        assert!(
            verbs.iter().any(|v| v == verb),
            "no {verb} in the audit trail: {verbs:?}"
        );
    }
}

/// A TCP relay the test can cut: every connection through it dies, and new
/// ones are refused, while it is cut.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, l) = (cut.clone(), live.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if c.load(Ordering::SeqCst) {
                    drop(conn);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                l.lock()
                    .unwrap()
                    .extend([conn.try_clone().unwrap(), up.try_clone().unwrap()]);
                for (mut from, mut to) in [(conn.try_clone().unwrap(), up.try_clone().unwrap()), (up, conn)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, cut, live }
    }

    /// Cuts hard: every connection is reset (RST, as a dead NAT or a
    /// crashed peer does), so the server's next write fails with EPIPE.
    fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
        if on {
            for s in self.live.lock().unwrap().drain(..) {
                reset(&s);
                drop(s);
            }
        }
    }
}

/// Makes closing `s` send a RST instead of a FIN (SO_LINGER with 0 s).
#[allow(unsafe_code)]
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to a value that
    // lives for the call and its exact size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
}

fn run_job(server: &Server, env: &str, script: &str) -> String {
    let v = server.cli_json(&["run", "--env", env, "-o", "json", "--", "sh", "-c", script]);
    v["id"].as_str().expect("action id").to_string()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_cut_connection_and_killed_processes_lose_nothing_and_run_nothing_twice() {
    let dir = tempdir();
    let (mut server, agent_port) = server(dir.path(), &[("PAVE_AGENT_LOST_AFTER", "30s")]);
    let token = add_target(&server, "edge-2");
    let ca = dir.path().join("pave-data/tls/ca.pem");
    let relay = Relay::start(agent_port);
    let url = format!("wss://127.0.0.1:{}", relay.port);
    let agent_dir = dir.path().join("edge-2");
    let mut agent = Agent::start(&url, &ca, &agent_dir, Some(&token));
    wait_for("the agent to connect", Duration::from_secs(20), || {
        connected(&server, "edge-2")
    });
    ok(&server.cli(&["env", "create", "edge", "--target", "edge-2"]));

    // 1. The connection is cut in the middle of a job: it completes on the
    // agent, and its result arrives once the agent is back.
    let ran = dir.path().join("ran-1");
    let id = run_job(
        &server,
        "edge",
        &format!("echo run >> {}; sleep 3; echo finished", ran.display()),
    );
    wait_for("the job to start", Duration::from_secs(10), || lines(&ran) == 1);
    relay.cut(true);
    wait_for("the server to see the cut", Duration::from_secs(30), || {
        !connected(&server, "edge-2")
    });
    std::thread::sleep(Duration::from_secs(3));
    relay.cut(false);
    let a = server.wait_state(&id, &["succeeded", "failed", "interrupted"]);
    assert_eq!(a["state"], "succeeded", "{a:#}\nagent: {}", agent.log());
    assert_eq!(lines(&ran), 1, "the job ran twice");

    // 2. The server is killed mid-job: after its restart the same command is
    // asked for again and its result recorded, without running it again.
    let ran = dir.path().join("ran-2");
    let id = run_job(
        &server,
        "edge",
        &format!("echo run >> {}; sleep 3", ran.display()),
    );
    wait_for("the job to start", Duration::from_secs(10), || lines(&ran) == 1);
    server.kill9();
    let listen = format!("127.0.0.1:{agent_port}");
    let server = Server::start_with(
        &dir.path().join("pave-data"),
        None,
        pave_testkit::free_port(),
        &[("PAVE_AGENT_LISTEN", &listen), ("PAVE_AGENT_LOST_AFTER", "5s")],
    );
    let a = server.wait_state(&id, &["succeeded", "failed", "interrupted"]);
    assert_eq!(a["state"], "succeeded", "{a:#}\nagent: {}", agent.log());
    assert_eq!(lines(&ran), 1, "the job ran twice");

    // 3. The agent is killed mid-job: after its restart it reports the command
    // cut short; it does not run it again.
    let ran = dir.path().join("ran-3");
    let id = run_job(
        &server,
        "edge",
        &format!("echo run >> {}; sleep 30", ran.display()),
    );
    wait_for("the job to start", Duration::from_secs(10), || lines(&ran) == 1);
    agent.kill9();
    let agent = Agent::start(&url, &ca, &agent_dir, None);
    let a = server.wait_state(&id, &["succeeded", "failed", "interrupted"]);
    let step = &a["steps"][0];
    assert_eq!(step["state"], "interrupted", "{a:#}\nagent: {}", agent.log());
    assert!(
        step["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not run again"),
        "{a:#}"
    );
    assert_eq!(lines(&ran), 1, "the job ran twice");

    // 4. An agent that stays away past the deadline: the step is interrupted
    // (agent lost), and can be retried once it is back.
    drop(agent);
    let id = run_job(&server, "edge", "echo hello");
    let a = server.wait_state(&id, &["succeeded", "failed", "interrupted"]);
    assert_eq!(a["steps"][0]["state"], "interrupted", "{a:#}");
    let message = a["steps"][0]["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("away"), "{message}");
    let _agent = Agent::start(&url, &ca, &agent_dir, None);
    wait_for("the agent to connect", Duration::from_secs(20), || {
        connected(&server, "edge-2")
    });
    ok(&server.cli(&["actions", "retry", &id, "--wait"]));
}

/// Runs `ip ARGS…`, panicking with its stderr when it fails.
fn ip(args: &[&str]) -> std::process::Output {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), stderr(&out));
    out
}

/// A network namespace joined to this one by a veth pair; deleted (with the
/// pair) on drop, however the test ends.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    /// Creates the namespace, or says why it cannot.
    fn create(name: &str, host_if: &str) -> Result<Netns, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("id -u: {e}"))?;
        if stdout(&uid).trim() != "0" {
            return Err(format!("not root (uid {})", stdout(&uid).trim()));
        }
        // Left over by a run that was killed with the same pid.
        let _ = Command::new("ip").args(["link", "del", host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| format!("no `ip` binary (install iproute2): {e}"))?;
        if !out.status.success() {
            let why = stderr(&out);
            if why.contains("ermission") || why.contains("not permitted") {
                return Err(format!("ip netns add {name}: {}", why.trim()));
            }
            panic!("ip netns add {name}: {why}");
        }
        Ok(Netns {
            name: name.to_string(),
            host_if: host_if.to_string(),
        })
    }

    /// `ip netns exec NS ARGS…`.
    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair at once; the namespace's own
        // teardown would do it too, but asynchronously.
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// `pave agent` run inside a network namespace (`ip netns exec` execs it, so
/// the child is the agent itself).
fn agent_in(ns: &Netns, server: &str, ca: &Path, data_dir: &Path, enroll: &str) -> Agent {
    let log = data_dir.with_extension("log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, pave_bin()])
        .args(["agent", "--server", server, "--ca-file"])
        .arg(ca)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--enroll", enroll])
        .env("PAVE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("agent log"))
        .spawn()
        .expect("spawn pave agent in the namespace");
    Agent { child, log }
}

#[test]
fn an_agent_in_its_own_network_namespace_dials_out_to_the_server() {
    let pid = std::process::id();
    let (ns_name, host_if, ns_if) = (format!("pave-t-{pid}"), format!("pv{pid}h"), format!("pv{pid}n"));
    let net = format!("10.213.{}", pid % 250);
    let (host_ip, ns_ip) = (format!("{net}.1"), format!("{net}.2"));
    let ns = match Netns::create(&ns_name, &host_if) {
        Ok(ns) => ns,
        Err(why) => {
            println!("skipped: cannot create a network namespace: {why}");
            return;
        }
    };
    ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
    ip(&["link", "set", &ns_if, "netns", &ns_name]);
    ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
    ip(&["link", "set", &host_if, "up"]);
    ip(&[
        "-n",
        &ns_name,
        "addr",
        "add",
        &format!("{ns_ip}/30"),
        "dev",
        &ns_if,
    ]);
    ip(&["-n", &ns_name, "link", "set", &ns_if, "up"]);
    ip(&["-n", &ns_name, "link", "set", "lo", "up"]);
    // No default route in there: only the /30 the veth gives.
    let routes = stdout(&ip(&["-n", &ns_name, "route", "show"]));
    assert!(!routes.contains("default"), "{routes}");

    // The server's agent listener is on the host end of the veth; its API on
    // the host's loopback.
    let dir = tempdir();
    let agent_port = pave_testkit::free_port();
    let listen = format!("{host_ip}:{agent_port}");
    let server = Server::start_with(
        &dir.path().join("pave-data"),
        None,
        pave_testkit::free_port(),
        &[("PAVE_AGENT_LISTEN", &listen)],
    );
    let token = add_target(&server, "edge-ns");
    let ca = dir.path().join("pave-data/tls/ca.pem");
    let url = format!("wss://{host_ip}:{agent_port}");

    // The namespace's loopback is its own: the server's API is out of reach
    // from there (and reachable from here, so the check means something).
    let readyz = format!("http://127.0.0.1:{}/readyz", server.port);
    assert_eq!(http_status(server.port, "/readyz", None), Some(200));
    let out = ns.exec(&["curl", "-s", "-m", "2", &readyz]);
    assert!(
        !out.status.success(),
        "the namespace reached the server's API: {}",
        stdout(&out)
    );
    let out = ns.exec(&[
        "curl",
        "-s",
        "-m",
        "2",
        &format!("http://{host_ip}:{}/readyz", server.port),
    ]);
    assert!(
        !out.status.success(),
        "the API answered on the veth: {}",
        stdout(&out)
    );

    let agent_dir = dir.path().join("edge-ns");
    let agent = agent_in(&ns, &url, &ca, &agent_dir, &token);
    wait_for("the agent to connect", Duration::from_secs(20), || {
        connected(&server, "edge-ns")
    });

    // The agent has no inbound port: nothing listens in the namespace, and
    // its one connection goes out from the namespace's address to the server.
    if Command::new("ss").arg("-V").output().is_ok() {
        let listening = stdout(&ns.exec(&["ss", "-ltn"]));
        assert!(
            !listening.lines().any(|l| l.starts_with("LISTEN")),
            "something listens in the namespace:\n{listening}"
        );
        let established = stdout(&ns.exec(&["ss", "-tnH", "state", "established"]));
        assert!(
            established
                .lines()
                .any(|l| l.contains(&format!("{ns_ip}:")) && l.contains(&format!("{host_ip}:{agent_port}"))),
            "no connection from {ns_ip} to {host_ip}:{agent_port}:\n{established}"
        );
    }

    ok(&server.cli(&["env", "create", "edge-ns-env", "--target", "edge-ns"]));
    let id = run_job(&server, "edge-ns-env", "hostname; echo from-the-namespace");
    let a = server.wait_state(&id, &["succeeded", "failed", "interrupted"]);
    assert_eq!(a["state"], "succeeded", "{a:#}\nagent: {}", agent.log());
    let logs = server.cli(&["actions", "logs", &id]);
    ok(&logs);
    assert!(
        stdout(&logs).contains("from-the-namespace"),
        "{}\nagent: {}",
        stdout(&logs),
        agent.log()
    );

    // Nothing left behind.
    drop(agent);
    drop(ns);
    let list = stdout(&ip(&["netns", "list"]));
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns_name.as_str())),
        "{list}"
    );
    assert!(!Command::new("ip")
        .args(["link", "show", &host_if])
        .output()
        .expect("ip link show")
        .status
        .success());
}
