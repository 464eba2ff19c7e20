//! The local target against the real shim binary and the real demo service.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pave_targets::local::LocalTarget;
use pave_targets::{
    ContainerState, Readiness, RestartPolicy, Target, WorkloadKey, WorkloadSpec, WorkloadStatus,
};

fn demo_bin() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/pave-demo");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p pave-demo` first",
        path.display()
    );
    path.display().to_string()
}

fn shim() -> Vec<String> {
    vec![env!("CARGO_BIN_EXE_pave-shim").to_string()]
}

/// A workload under a temporary root; dropping it prunes every replica, so no
/// process outlives a failed test.
struct Fixture {
    target: Arc<LocalTarget>,
    key: WorkloadKey,
    root: tempfile::TempDir,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        Fixture {
            target: Arc::new(LocalTarget::new(root.path(), shim())),
            key: WorkloadKey::new("test", name),
            root,
        }
    }

    fn spec(&self, env: &[(&str, &str)]) -> WorkloadSpec {
        WorkloadSpec {
            revision: 1,
            command: vec![demo_bin()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            replicas: 1,
            port: true,
            readiness: Some(Readiness::Http {
                path: "/healthz".into(),
            }),
            restart: RestartPolicy::Always,
            memory_limit_mb: None,
            cwd: None,
            image: None,
        }
    }

    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&WorkloadStatus) -> bool,
    ) -> WorkloadStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.target.status(&self.key).await.unwrap();
            if ok(&st) {
                return st;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last status: {st:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let target = self.target.clone();
        let key = self.key.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            if let Err(e) = rt.block_on(target.prune(&key, None)) {
                eprintln!("cleanup failed: {e}");
            }
        })
        .join();
    }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let code = body.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body)
}

fn pid_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() && {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_some_and(|s| s != "Z")
    }
}

/// Living processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
        })
        .collect()
}

fn all_ready(n: u32) -> impl Fn(&WorkloadStatus) -> bool {
    move |st| st.ready == n && st.replicas.len() == n as usize
}

#[tokio::test]
async fn replicas_become_ready_on_distinct_ports_and_serve() {
    let f = Fixture::new("ready");
    let mut spec = f.spec(&[]);
    spec.replicas = 2;
    f.target.apply(&f.key, &spec).await.unwrap();
    let st = f
        .wait_for("2 ready replicas", Duration::from_secs(10), all_ready(2))
        .await;
    let ports: Vec<u16> = st.replicas.iter().map(|r| r.port.unwrap()).collect();
    assert_ne!(ports[0], ports[1]);
    for r in &st.replicas {
        assert!(matches!(r.state, ContainerState::Running { .. }), "{r:?}");
        assert!(r.pid.is_some());
        let (code, body) = http_get(r.port.unwrap(), "/healthz");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("not configured"), "{body}");
    }
    assert!(st.conditions.iter().any(|c| c.kind == "Available" && c.status));
    // Applying again is a no-op: same processes.
    let again = f.target.apply(&f.key, &spec).await.unwrap();
    let pids = |s: &WorkloadStatus| s.replicas.iter().map(|r| r.pid).collect::<Vec<_>>();
    assert_eq!(pids(&again), pids(&st));
}

#[tokio::test]
async fn crash_after_start_goes_into_crash_loop_back_off() {
    let f = Fixture::new("crash");
    f.target
        .apply(&f.key, &f.spec(&[("DEMO_CRASH_AFTER_SECS", "1")]))
        .await
        .unwrap();
    let st = f
        .wait_for("CrashLoopBackOff", Duration::from_secs(12), |st| {
            st.replicas
                .iter()
                .any(|r| r.restart_count >= 2 && r.state.reason() == Some("CrashLoopBackOff"))
        })
        .await;
    let r = &st.replicas[0];
    assert!(matches!(
        &r.last_state,
        Some(ContainerState::Terminated { reason, exit_code: Some(1), .. }) if reason == "Error"
    ));
    assert!(!r.ready);
}

#[tokio::test]
async fn failing_at_start_never_becomes_ready() {
    let f = Fixture::new("failstart");
    f.target
        .apply(&f.key, &f.spec(&[("DEMO_FAIL_AT_START", "1")]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut last = None;
    while Instant::now() < deadline {
        let st = f.target.status(&f.key).await.unwrap();
        assert_eq!(st.ready, 0, "{st:#?}");
        assert!(st.replicas.iter().all(|r| !r.ready));
        last = Some(st);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = last.unwrap();
    let r = &st.replicas[0];
    assert!(r.restart_count >= 1, "{r:?}");
    assert_eq!(r.state.reason(), Some("CrashLoopBackOff"), "{r:?}");
    assert!(st.conditions.iter().any(|c| c.kind == "ReplicaFailure"));
}

#[tokio::test]
async fn memory_leak_over_the_limit_is_oom_killed() {
    let f = Fixture::new("leak");
    let mut spec = f.spec(&[("DEMO_LEAK_MB_PER_SEC", "100")]);
    spec.memory_limit_mb = Some(64);
    f.target.apply(&f.key, &spec).await.unwrap();
    let st = f
        .wait_for("OOMKilled", Duration::from_secs(10), |st| {
            st.replicas.iter().any(|r| {
                matches!(&r.last_state, Some(ContainerState::Terminated { reason, .. }) if reason == "OOMKilled")
            })
        })
        .await;
    let r = &st.replicas[0];
    assert!(
        r.warnings.is_empty(),
        "the cgroup could not be set up: {:?}",
        r.warnings
    );
    match &r.last_state {
        Some(ContainerState::Terminated {
            reason,
            exit_code,
            signal,
            ..
        }) => {
            assert_eq!(reason, "OOMKilled");
            assert_eq!(*exit_code, Some(137));
            assert_eq!(*signal, Some(9));
        }
        other => panic!("unexpected last state {other:?}"),
    }
}

#[tokio::test]
async fn prune_stops_replicas_and_their_process_groups() {
    let f = Fixture::new("prune");
    let mut spec = f.spec(&[]);
    spec.replicas = 2;
    f.target.apply(&f.key, &spec).await.unwrap();
    let st = f
        .wait_for("2 ready replicas", Duration::from_secs(10), all_ready(2))
        .await;
    let pids: Vec<i32> = st.replicas.iter().map(|r| r.pid.unwrap()).collect();
    let wdir = f.root.path().join("test/prune");
    let shim_pids: Vec<i32> = st
        .replicas
        .iter()
        .map(|r| {
            let text = std::fs::read_to_string(wdir.join(format!("1-{}/shim.pid", r.index))).unwrap();
            text.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();

    // A new revision next to the old one; pruning keeps only it.
    let mut v2 = spec.clone();
    v2.revision = 2;
    v2.replicas = 1;
    f.target.apply(&f.key, &v2).await.unwrap();
    let st = f
        .wait_for("revision 2 ready", Duration::from_secs(10), |st| st.ready == 1)
        .await;
    assert_eq!(st.revision_counts.len(), 2);
    f.target.prune(&f.key, Some(2)).await.unwrap();
    let st = f.target.status(&f.key).await.unwrap();
    assert_eq!(st.replicas.len(), 1);
    assert_eq!(st.replicas[0].revision, 2);
    for (&pid, &shim) in pids.iter().zip(&shim_pids) {
        assert!(!pid_exists(pid), "workload pid {pid} survived prune");
        assert!(!pid_exists(shim), "shim pid {shim} survived prune");
        assert!(group_members(pid).is_empty(), "group {pid} survived prune");
    }

    let last = st.replicas[0].pid.unwrap();
    f.target.prune(&f.key, None).await.unwrap();
    assert!(!pid_exists(last));
    assert!(group_members(last).is_empty());
    assert!(f.target.status(&f.key).await.unwrap().replicas.is_empty());
    assert!(!wdir.exists());
}

#[tokio::test]
async fn a_new_target_over_the_same_root_reattaches() {
    let f = Fixture::new("reattach");
    let mut spec = f.spec(&[]);
    spec.replicas = 2;
    f.target.apply(&f.key, &spec).await.unwrap();
    let st = f
        .wait_for("2 ready replicas", Duration::from_secs(10), all_ready(2))
        .await;
    let second = LocalTarget::new(f.root.path(), shim());
    let seen = second.status(&f.key).await.unwrap();
    assert_eq!(seen.ready, 2, "{seen:#?}");
    let pids = |s: &WorkloadStatus| s.replicas.iter().map(|r| r.pid).collect::<Vec<_>>();
    assert_eq!(pids(&seen), pids(&st));
    // apply through the new target keeps the running replicas.
    let applied = second.apply(&f.key, &spec).await.unwrap();
    assert_eq!(pids(&applied), pids(&st));

    // A lost supervisor is reported, and apply starts the replica again.
    let shim_pid: i32 = std::fs::read_to_string(f.root.path().join("test/reattach/1-0/shim.pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let old_child = st.replicas[0].pid.unwrap();
    // SIGKILL of the shim only (the workload keeps running, orphaned).
    std::process::Command::new("kill")
        .args(["-KILL", &shim_pid.to_string()])
        .status()
        .unwrap();
    let lost = f
        .wait_for("supervisor lost", Duration::from_secs(5), |st| {
            matches!(&st.replicas[0].state, ContainerState::Terminated { message: Some(m), .. } if m == "supervisor lost")
        })
        .await;
    assert_eq!(lost.replicas[0].state.reason(), Some("Error"));
    second.apply(&f.key, &spec).await.unwrap();
    let st = f
        .wait_for("2 ready replicas again", Duration::from_secs(10), all_ready(2))
        .await;
    assert_ne!(st.replicas[0].pid, Some(old_child));
    assert!(!pid_exists(old_child), "the orphaned workload was not stopped");
}

#[tokio::test]
async fn exec_runs_in_the_workload_environment() {
    let f = Fixture::new("exec");
    let mut spec = f.spec(&[("GREETING", "hello")]);
    spec.readiness = Some(Readiness::Tcp);
    f.target.apply(&f.key, &spec).await.unwrap();
    let st = f.wait_for("ready", Duration::from_secs(10), all_ready(1)).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let code = f
        .target
        .exec(
            &f.key,
            &[
                "sh".into(),
                "-c".into(),
                "echo $PORT; echo $GREETING >&2; exit 3".into(),
            ],
            tx,
        )
        .await
        .unwrap();
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(l);
    }
    assert_eq!(code, 3);
    let port = st.replicas[0].port.unwrap().to_string();
    assert!(lines.contains(&("stdout".to_string(), port)), "{lines:?}");
    assert!(
        lines.contains(&("stderr".to_string(), "hello".to_string())),
        "{lines:?}"
    );

    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let code = f
        .target
        .exec(&f.key, &["sh".into(), "-c".into(), "echo $PORT".into()], tx)
        .await
        .unwrap();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn logs_hold_the_listening_line() {
    let f = Fixture::new("logs");
    f.target.apply(&f.key, &f.spec(&[])).await.unwrap();
    let st = f.wait_for("ready", Duration::from_secs(10), all_ready(1)).await;
    let port = st.replicas[0].port.unwrap();
    let lines = f.target.logs(&f.key, None, 50).await.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("listening on") && l.contains(&port.to_string())),
        "{lines:?}"
    );
    let one = f.target.logs(&f.key, Some(0), 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert!(f.target.logs(&f.key, Some(7), 10).await.is_err());
}

#[tokio::test]
async fn followed_logs_show_the_tail_then_each_new_line_until_the_replica_goes() {
    let f = Fixture::new("follow");
    let mut spec = f.spec(&[]);
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        "echo first; i=0; while true; do i=$((i+1)); echo tick $i; echo warn $i >&2; sleep 0.1; done".into(),
    ];
    spec.port = false;
    spec.readiness = None;
    f.target.apply(&f.key, &spec).await.unwrap();
    f.wait_for("running", Duration::from_secs(10), all_ready(1)).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let target = f.target.clone();
    let key = f.key.clone();
    let follow = tokio::spawn(async move { target.follow_logs(&key, None, 100, tx).await });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l == "tick 5") || !lines.iter().any(|l| l == "warn 5") {
        let next = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        match next {
            Ok(Some(l)) => lines.push(l),
            other => panic!("follow stopped early ({other:?}) after {lines:?}"),
        }
    }
    assert_eq!(lines[0], "first", "the tail comes first: {lines:?}");
    // Each line once, in order, stdout and stderr alike.
    let ticks: Vec<&String> = lines.iter().filter(|l| l.starts_with("tick")).collect();
    assert!(ticks.windows(2).all(|w| w[0] != w[1]), "{lines:?}");
    // Removing the replica ends the follow.
    f.target.prune(&f.key, None).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), follow).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

/// Helper run in a child process by `replicas_outlive_the_process_that_started_them`.
#[tokio::test]
#[ignore = "helper: run by another test in a child process"]
async fn helper_apply_and_exit() {
    let Ok(root) = std::env::var("PAVE_TARGETS_HELPER_ROOT") else {
        return;
    };
    let target = LocalTarget::new(root, shim());
    let f = Fixture::new("unused");
    let spec = f.spec(&[]);
    target
        .apply(&WorkloadKey::new("test", "outlive"), &spec)
        .await
        .unwrap();
}

#[tokio::test]
async fn replicas_outlive_the_process_that_started_them() {
    let f = Fixture::new("outlive");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "helper_apply_and_exit"])
        .env("PAVE_TARGETS_HELPER_ROOT", f.root.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let st = f
        .wait_for(
            "ready after the starter exited",
            Duration::from_secs(10),
            all_ready(1),
        )
        .await;
    // The shim leads a session of its own.
    let shim_pid: i32 = std::fs::read_to_string(f.root.path().join("test/outlive/1-0/shim.pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    assert_eq!(fields[3], shim_pid.to_string(), "session of the shim: {stat}");
    assert!(st.replicas[0].pid.is_some());
}
