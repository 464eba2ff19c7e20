//! `helm`: packaging and rendering with the real binary (skipped, with a
//! message, when `helm` is not on `PATH`), and the argv / stdin / file
//! discipline of every operation against a fake `helm` script that records
//! what it was given and prints helm's JSON.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helm::{package_dir, Chart, Helm, HelmError, HistoryEntry, Release, Values, MAX_ARCHIVE_BYTES};

const SECRET: &str = "hunter2-secret";
const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: prod\n  context:\n    cluster: c\n    user: u\ncurrent-context: prod\nusers:\n- name: u\n  user:\n    token: kube-token-s3cr3t\n";
const KUBE_TOKEN: &str = "kube-token-s3cr3t";

// --- helm's outputs, shaped as helm 4.2 prints them -------------------------------------------------

/// `helm upgrade|install -o json`: the release object (chart trimmed to a few fields).
fn release_json(revision: u32, status: &str, description: &str) -> String {
    json!({
        "name": "demo",
        "info": {
            "first_deployed": "2026-05-01T09:00:00.123456789Z",
            "last_deployed": "2026-05-01T10:00:00.5Z",
            "deleted": "",
            "description": description,
            "status": status,
            "notes": "1. Get the application URL by running these commands:\n"
        },
        "chart": {
            "metadata": {
                "name": "demo",
                "version": "0.1.0",
                "description": "A Helm chart for Kubernetes",
                "apiVersion": "v2",
                "appVersion": "1.16.0",
                "type": "application"
            },
            "lock": null,
            "templates": [{ "name": "templates/service.yaml", "modtime": "2026-05-01T08:00:00Z", "data": "YXBpVmVyc2lvbjogdjE=" }],
            "values": { "replicaCount": 1 },
            "schema": null,
            "files": []
        },
        "config": { "db": { "password": SECRET } },
        "manifest": "---\n# Source: demo/templates/service.yaml\napiVersion: v1\nkind: Service\n",
        "hooks": [],
        "version": revision,
        "namespace": "apps",
        "apply_method": "ssa"
    })
    .to_string()
}

/// `helm status -o json`: the release without its chart (helm strips it), helm 3 style (no `apply_method`).
fn status_json() -> String {
    json!({
        "name": "demo",
        "info": {
            "first_deployed": "2026-05-01T09:00:00.123456789Z",
            "last_deployed": "2026-05-01T10:00:00.5Z",
            "deleted": "",
            "description": "Upgrade complete",
            "status": "deployed"
        },
        "config": { "db": { "password": SECRET } },
        "manifest": "---\n",
        "version": 2,
        "namespace": "apps"
    })
    .to_string()
}

/// `helm history -o json`.
const HISTORY_JSON: &str = r#"[{"revision":1,"updated":"2026-05-01T09:00:00.123456789Z","status":"superseded","chart":"demo-0.1.0","app_version":"1.16.0","description":"Install complete"},{"revision":2,"updated":"2026-05-01T10:00:00.5Z","status":"deployed","chart":"demo-0.2.0","app_version":"1.17.0","description":"Upgrade complete"}]"#;

/// `helm list -o json` (the revision is a string).
const LIST_JSON: &str = r#"[{"name":"demo","namespace":"apps","revision":"3","updated":"2026-05-01T10:00:00.5Z","status":"deployed","chart":"demo-0.1.0","app_version":"1.16.0"},{"name":"broken","namespace":"other","revision":"1","updated":"2026-05-02T11:00:00Z","status":"failed","chart":"broken-2.0.0","app_version":""}]"#;

// --- the fake helm -----------------------------------------------------------------------------------

/// A fake `helm`: a shell script that records each invocation into
/// `rec/<n>-<subcommand>/` (argv, stdin, env, cwd, the kubeconfig's content
/// and modes, copies of the `-f` files and of the chart), then prints
/// `rec/<sub>.err` to stderr, `rec/<sub>.out` to stdout, sleeps
/// `rec/<sub>.sleep` seconds and exits with `rec/<sub>.code`.
struct Fake {
    _root: tempfile::TempDir,
    rec: PathBuf,
    work: PathBuf,
    program: PathBuf,
}

const SCRIPT: &str = r#"#!/bin/sh
rec="$PAVE_FAKE_REC"
sub="$1"
n=$(ls "$rec" | grep -c -- '-')
n=$((n + 1))
d="$rec/$n-$sub"
mkdir -p "$d"
printf '%s\n' "$@" > "$d/argv"
cat > "$d/stdin"
env > "$d/env"
pwd > "$d/cwd"
prev=""
i=0
for a in "$@"; do
  if [ "$prev" = "--kubeconfig" ]; then
    echo "$a" > "$d/kubeconfig.path"
    stat -c %a "$a" > "$d/kubeconfig.mode"
    stat -c %a "$(dirname "$a")" > "$d/dir.mode"
    cat "$a" > "$d/kubeconfig"
  fi
  if [ "$prev" = "-f" ] && [ "$a" != "-" ]; then
    i=$((i + 1))
    cp "$a" "$d/values-$i"
  fi
  case "$a" in *.tgz) cp "$a" "$d/chart.tgz" ;; esac
  prev="$a"
done
[ -f "$rec/$sub.err" ] && cat "$rec/$sub.err" >&2
[ -f "$rec/$sub.out" ] && cat "$rec/$sub.out"
[ -f "$rec/$sub.sleep" ] && sleep "$(cat "$rec/$sub.sleep")"
exit "$(cat "$rec/$sub.code" 2>/dev/null || echo 0)"
"#;

/// One recorded invocation of the fake helm.
#[derive(Debug)]
struct Seen {
    dir: PathBuf,
    argv: Vec<String>,
}

impl Seen {
    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    fn stdin(&self) -> String {
        self.file("stdin").unwrap_or_default()
    }

    fn has(&self, flag: &str) -> bool {
        self.argv.iter().any(|a| a == flag)
    }

    /// The argument after `flag`.
    fn value(&self, flag: &str) -> Option<&str> {
        let i = self.argv.iter().position(|a| a == flag)?;
        self.argv.get(i + 1).map(String::as_str)
    }

    /// Every recorded file and argv, as one text (to look for secrets in).
    fn everything_but_stdin(&self) -> String {
        let mut all = self.argv.join("\n");
        for entry in std::fs::read_dir(&self.dir).expect("record dir") {
            let entry = entry.expect("entry");
            if entry.file_name() != "stdin" {
                all.push_str(&String::from_utf8_lossy(
                    &std::fs::read(entry.path()).expect("record"),
                ));
            }
        }
        all
    }
}

impl Fake {
    fn new() -> Fake {
        let root = tempfile::tempdir().expect("tempdir");
        let rec = root.path().join("rec");
        let work = root.path().join("work");
        std::fs::create_dir(&rec).expect("rec dir");
        let program = root.path().join("helm");
        let script = SCRIPT.replace("\"$PAVE_FAKE_REC\"", &format!("'{}'", rec.display()));
        write_executable(&program, &script);
        Fake {
            _root: root,
            rec,
            work,
            program,
        }
    }

    fn helm(&self) -> Helm {
        Helm::new(KUBECONFIG, &self.work).with_program(&self.program)
    }

    /// What `helm <sub>` answers.
    fn answer(&self, sub: &str, code: i32, stdout: &str, stderr: &str) {
        std::fs::write(self.rec.join(format!("{sub}.out")), stdout).expect("out");
        std::fs::write(self.rec.join(format!("{sub}.err")), stderr).expect("err");
        std::fs::write(self.rec.join(format!("{sub}.code")), code.to_string()).expect("code");
    }

    fn sleep(&self, sub: &str, secs: u32) {
        std::fs::write(self.rec.join(format!("{sub}.sleep")), secs.to_string()).expect("sleep");
    }

    /// The invocations, in order.
    fn seen(&self) -> Vec<Seen> {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.rec)
            .expect("rec")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_dir())
            .map(|p| {
                let name = p.file_name().expect("name").to_string_lossy().into_owned();
                let n = name.split('-').next().expect("n").parse().expect("number");
                (n, p)
            })
            .collect();
        dirs.sort();
        dirs.into_iter()
            .map(|(_, dir)| {
                let argv = std::fs::read_to_string(dir.join("argv"))
                    .expect("argv")
                    .lines()
                    .map(str::to_string)
                    .collect();
                Seen { dir, argv }
            })
            .collect()
    }

    fn only(&self) -> Seen {
        let mut seen = self.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen.remove(0)
    }

    /// Nothing of any invocation is left in the work directory.
    fn assert_work_dir_empty(&self) {
        if self.work.exists() {
            let left: Vec<_> = std::fs::read_dir(&self.work).expect("work").collect();
            assert!(left.is_empty(), "left in the work dir: {left:?}");
        }
    }
}

/// Writes an executable through another process, so that no file descriptor
/// of it is open in this (multi-threaded, forking) test process when it runs.
fn write_executable(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("cat > \"$0\" && chmod 700 \"$0\"")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("script");
    assert!(child.wait().expect("sh").success());
}

fn secret_values() -> Values {
    Values {
        files: vec!["replicaCount: 2\n".into(), "image:\n  tag: \"1.2\"\n".into()],
        set: vec!["service.type=ClusterIP".into()],
        secret: Some(json!({ "db": { "password": SECRET, "user": "app" } })),
    }
}

fn archive() -> Chart {
    // A gzip header is all the fake needs.
    Chart::Archive(vec![
        0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ])
}

// --- argv, stdin and files ---------------------------------------------------------------------------

#[tokio::test]
async fn upgrade_passes_values_as_files_then_stdin_and_the_kubeconfig_as_a_private_file() {
    let fake = Fake::new();
    fake.answer("upgrade", 0, &release_json(2, "deployed", "Upgrade complete"), "");
    let chart = archive();
    let release = fake
        .helm()
        .with_context("prod")
        .upgrade(
            "apps",
            "demo",
            &chart,
            &secret_values(),
            true,
            Duration::from_secs(300),
            true,
        )
        .await
        .expect("upgraded");
    assert_eq!(
        release,
        Release {
            name: "demo".into(),
            namespace: "apps".into(),
            revision: 2,
            status: "deployed".into(),
            chart: "demo-0.1.0".into(),
            app_version: "1.16.0".into(),
            updated: "2026-05-01T10:00:00.5Z".into(),
            description: Some("Upgrade complete".into()),
        }
    );

    let seen = fake.only();
    assert_eq!(&seen.argv[..2], ["upgrade", "demo"]);
    assert!(seen.argv[2].ends_with("chart.tgz"), "{:?}", seen.argv);
    let Chart::Archive(bytes) = &chart else {
        unreachable!()
    };
    assert_eq!(
        std::fs::read(seen.dir.join("chart.tgz")).expect("chart copy"),
        *bytes
    );
    assert_eq!(seen.value("--namespace"), Some("apps"));
    assert_eq!(seen.value("--output"), Some("json"));
    assert!(seen.has("--install") && seen.has("--wait"));
    assert_eq!(seen.value("--timeout"), Some("300s"));
    assert_eq!(seen.value("--kube-context"), Some("prod"));
    assert_eq!(seen.value("--set"), Some("service.type=ClusterIP"));

    // -f: the two files in order, then stdin, last.
    let f: Vec<&str> = seen
        .argv
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "-f")
        .map(|(i, _)| seen.argv[i + 1].as_str())
        .collect();
    assert_eq!(f.len(), 3, "{:?}", seen.argv);
    assert!(f[0].ends_with("values-0.yaml") && f[1].ends_with("values-1.yaml"));
    assert_eq!(f[2], "-");
    assert_eq!(seen.argv.last().map(String::as_str), Some("-"));
    assert_eq!(seen.file("values-1").as_deref(), Some("replicaCount: 2\n"));
    assert_eq!(seen.file("values-2").as_deref(), Some("image:\n  tag: \"1.2\"\n"));

    // The secret values: on stdin, and nowhere else.
    let stdin: Value = serde_json::from_str(&seen.stdin()).expect("stdin is JSON");
    assert_eq!(stdin, json!({ "db": { "password": SECRET, "user": "app" } }));
    let elsewhere = seen.everything_but_stdin();
    assert!(!elsewhere.contains(SECRET), "the secret leaked outside stdin");

    // The kubeconfig: a 0600 file in a 0700 directory, never in argv or env, gone afterwards.
    assert_eq!(seen.file("kubeconfig").as_deref(), Some(KUBECONFIG));
    assert_eq!(
        seen.file("kubeconfig.mode").as_deref().map(str::trim),
        Some("600")
    );
    assert_eq!(seen.file("dir.mode").as_deref().map(str::trim), Some("700"));
    let path = seen.file("kubeconfig.path").expect("path");
    assert!(!Path::new(path.trim()).exists(), "the kubeconfig is left on disk");
    assert!(!seen.argv.join(" ").contains(KUBE_TOKEN));
    let env = seen.file("env").expect("env");
    assert!(!env.contains(KUBE_TOKEN) && !env.contains(SECRET));
    assert!(!env.lines().any(|l| l.starts_with("KUBECONFIG=")));
    // helm ran in the private directory, which is gone too.
    let cwd = seen.file("cwd").expect("cwd");
    assert!(cwd.trim().starts_with(fake.work.to_str().expect("utf-8")));
    fake.assert_work_dir_empty();
}

#[tokio::test]
async fn install_without_wait_secret_or_context() {
    let fake = Fake::new();
    fake.answer("install", 0, &release_json(1, "deployed", "Install complete"), "");
    let values = Values {
        files: vec![],
        set: vec!["a=b".into(), "list={x,y}".into()],
        secret: None,
    };
    let release = fake
        .helm()
        .install(
            "apps",
            "demo",
            &Chart::Reference("oci://registry.example/charts/demo".into()),
            &values,
            false,
            Duration::from_millis(1500),
        )
        .await
        .expect("installed");
    assert_eq!((release.revision, release.status.as_str()), (1, "deployed"));
    let seen = fake.only();
    assert_eq!(
        &seen.argv[..3],
        ["install", "demo", "oci://registry.example/charts/demo"]
    );
    assert!(!seen.has("--wait") && !seen.has("--install") && !seen.has("--kube-context"));
    assert!(!seen.has("-f"), "no values file, no stdin: {:?}", seen.argv);
    assert_eq!(seen.value("--timeout"), Some("2s"));
    let sets: Vec<&str> = seen
        .argv
        .windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].as_str())
        .collect();
    assert_eq!(sets, ["a=b", "list={x,y}"]);
    assert_eq!(seen.stdin(), "");
    assert!(seen.has("--kubeconfig"));
    fake.assert_work_dir_empty();
}

#[tokio::test]
async fn rollback_and_uninstall_argv() {
    let fake = Fake::new();
    let helm = fake.helm();
    helm.rollback("apps", "demo", Some(3), true, Duration::from_secs(60))
        .await
        .expect("rolled back");
    helm.rollback("apps", "demo", None, false, Duration::from_secs(60))
        .await
        .expect("rolled back");
    helm.uninstall("apps", "demo", true, Duration::from_secs(90))
        .await
        .expect("uninstalled");
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(&seen[0].argv[..4], ["rollback", "demo", "3", "--namespace"]);
    assert!(seen[0].has("--wait"));
    assert_eq!(seen[0].value("--timeout"), Some("60s"));
    assert_eq!(&seen[1].argv[..3], ["rollback", "demo", "--namespace"]);
    assert!(!seen[1].has("--wait"));
    assert_eq!(&seen[2].argv[..2], ["uninstall", "demo"]);
    assert_eq!(seen[2].value("--namespace"), Some("apps"));
    assert_eq!(seen[2].value("--timeout"), Some("90s"));
    assert!(seen.iter().all(|s| s.has("--kubeconfig") && !s.has("--output")));
    fake.assert_work_dir_empty();
}

#[tokio::test]
async fn uninstall_of_a_missing_release_is_not_found() {
    let fake = Fake::new();
    fake.answer(
        "uninstall",
        1,
        "",
        "Error: uninstall: Release not loaded: demo: release: not found\n",
    );
    let err = fake
        .helm()
        .uninstall("apps", "demo", false, Duration::from_secs(10))
        .await
        .expect_err("not found");
    assert!(
        matches!(&err, HelmError::NotFound { namespace, release } if namespace == "apps" && release == "demo"),
        "{err:?}"
    );
    fake.assert_work_dir_empty();
}

// --- reads -------------------------------------------------------------------------------------------

#[tokio::test]
async fn status_parses_the_release_and_takes_the_chart_from_history() {
    let fake = Fake::new();
    fake.answer("status", 0, &status_json(), "");
    fake.answer("history", 0, HISTORY_JSON, "");
    let release = fake
        .helm()
        .with_context("prod")
        .status("apps", "demo")
        .await
        .expect("status")
        .expect("a release");
    assert_eq!(
        release,
        Release {
            name: "demo".into(),
            namespace: "apps".into(),
            revision: 2,
            status: "deployed".into(),
            chart: "demo-0.2.0".into(),
            app_version: "1.17.0".into(),
            updated: "2026-05-01T10:00:00.5Z".into(),
            description: Some("Upgrade complete".into()),
        }
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    for (s, sub) in seen.iter().zip(["status", "history"]) {
        assert_eq!(&s.argv[..2], [sub, "demo"]);
        assert_eq!(s.value("--namespace"), Some("apps"));
        assert_eq!(s.value("--output"), Some("json"));
        assert_eq!(s.value("--kube-context"), Some("prod"));
        assert!(s.has("--kubeconfig"));
    }
    fake.assert_work_dir_empty();
}

#[tokio::test]
async fn status_of_a_missing_release_is_none() {
    let fake = Fake::new();
    fake.answer("status", 1, "", "Error: release: not found\n");
    let found = fake.helm().status("apps", "demo").await.expect("no error");
    assert_eq!(found, None);
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn history_is_parsed_oldest_first() {
    let fake = Fake::new();
    fake.answer("history", 0, HISTORY_JSON, "");
    let history = fake.helm().history("apps", "demo").await.expect("history");
    assert_eq!(
        history,
        [
            HistoryEntry {
                revision: 1,
                status: "superseded".into(),
                chart: "demo-0.1.0".into(),
                app_version: "1.16.0".into(),
                updated: "2026-05-01T09:00:00.123456789Z".into(),
                description: "Install complete".into(),
            },
            HistoryEntry {
                revision: 2,
                status: "deployed".into(),
                chart: "demo-0.2.0".into(),
                app_version: "1.17.0".into(),
                updated: "2026-05-01T10:00:00.5Z".into(),
                description: "Upgrade complete".into(),
            },
        ]
    );
    // A revision without `updated` (helm omits a zero time).
    fake.answer(
        "history",
        0,
        r#"[{"revision":1,"status":"pending-install","chart":"demo-0.1.0","app_version":"","description":"Initial install underway"}]"#,
        "",
    );
    let history = fake.helm().history("apps", "demo").await.expect("history");
    assert_eq!((history[0].revision, history[0].updated.as_str()), (1, ""));
}

#[tokio::test]
async fn history_of_a_missing_release_is_not_found() {
    let fake = Fake::new();
    fake.answer("history", 1, "", "Error: release: not found\n");
    let err = fake.helm().history("apps", "demo").await.expect_err("not found");
    assert!(matches!(err, HelmError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn list_of_all_namespaces_with_helm_4() {
    let fake = Fake::new();
    fake.answer("version", 0, "v4.2.3+g43e8b7f\n", "");
    fake.answer("list", 0, LIST_JSON, "");
    let helm = fake.helm();
    assert_eq!(helm.version().await.expect("version"), "v4.2.3+g43e8b7f");
    let releases = helm.list(None).await.expect("list");
    assert_eq!(
        releases,
        [
            Release {
                name: "demo".into(),
                namespace: "apps".into(),
                revision: 3,
                status: "deployed".into(),
                chart: "demo-0.1.0".into(),
                app_version: "1.16.0".into(),
                updated: "2026-05-01T10:00:00.5Z".into(),
                description: None,
            },
            Release {
                name: "broken".into(),
                namespace: "other".into(),
                revision: 1,
                status: "failed".into(),
                chart: "broken-2.0.0".into(),
                app_version: String::new(),
                updated: "2026-05-02T11:00:00Z".into(),
                description: None,
            },
        ]
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "the version is asked once: {seen:?}");
    assert_eq!(seen[0].argv, ["version", "--short"]);
    assert!(!seen[0].has("--kubeconfig"), "helm version needs no credentials");
    let list = &seen[1];
    assert_eq!(list.argv[0], "list");
    assert!(list.has("--all-namespaces") && !list.has("--namespace"));
    assert!(!list.has("--all"), "helm 4 has no --all (it lists every status)");
    assert_eq!(list.value("--output"), Some("json"));
    assert!(list.has("--time-format"));
    assert!(list.has("--kubeconfig"));
}

#[tokio::test]
async fn list_of_a_namespace_with_helm_3_adds_all() {
    let fake = Fake::new();
    fake.answer("version", 0, "v3.15.2+g1a500d5\n", "");
    fake.answer("list", 0, "[]\n", "");
    let helm = fake.helm();
    assert!(helm.list(Some("apps")).await.expect("list").is_empty());
    assert!(helm.list(Some("apps")).await.expect("list").is_empty());
    let seen = fake.seen();
    let subs: Vec<&str> = seen.iter().map(|s| s.argv[0].as_str()).collect();
    assert_eq!(subs, ["version", "list", "list"]);
    assert!(seen[1].has("--all") && !seen[1].has("--all-namespaces"));
    assert_eq!(seen[1].value("--namespace"), Some("apps"));
}

// --- failures ----------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_helm_is_failed_with_the_secret_scrubbed() {
    let fake = Fake::new();
    let mut stderr: String = (1..=60).map(|i| format!("noise line {i}\n")).collect();
    stderr.push_str(&format!(
        "Error: UPGRADE FAILED: values don't meet the specifications of the schema(s): db.password: {SECRET} is too long\n\n"
    ));
    fake.answer("upgrade", 1, "", &stderr);
    let err = fake
        .helm()
        .upgrade(
            "apps",
            "demo",
            &archive(),
            &secret_values(),
            false,
            Duration::from_secs(30),
            false,
        )
        .await
        .expect_err("failed");
    let HelmError::Failed {
        command,
        code,
        stderr,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(command, "helm upgrade demo");
    assert_eq!(*code, Some(1));
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert!(stderr.ends_with("db.password: *** is too long"), "{stderr}");
    assert_eq!(stderr.lines().count(), 40);
    assert!(!err.to_string().contains(SECRET));
    assert!(!format!("{err:?}").contains(SECRET));
    fake.assert_work_dir_empty();
}

#[tokio::test]
async fn unreadable_output_is_failed_without_quoting_it() {
    let fake = Fake::new();
    fake.answer("install", 0, &format!("not json {SECRET}"), "");
    let err = fake
        .helm()
        .install(
            "apps",
            "demo",
            &archive(),
            &secret_values(),
            false,
            Duration::from_secs(5),
        )
        .await
        .expect_err("unreadable");
    assert!(matches!(&err, HelmError::Failed { code: Some(0), .. }), "{err:?}");
    assert!(!err.to_string().contains(SECRET));
}

#[tokio::test]
async fn a_missing_program_is_missing_program() {
    let dir = tempfile::tempdir().expect("tempdir");
    for program in [
        dir.path().join("no-such-helm"),
        PathBuf::from("pave-test-no-such-helm-on-path"),
    ] {
        let err = Helm::new(KUBECONFIG, dir.path().join("work"))
            .with_program(&program)
            .status("apps", "demo")
            .await
            .expect_err("missing");
        assert!(matches!(err, HelmError::MissingProgram { .. }), "{err:?}");
        assert!(err.to_string().contains("install Helm"), "{err}");
    }
    // The private directory did not outlive the failed start.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("work"))
        .expect("work")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_helm_running_too_long_is_killed_and_cleaned_up() {
    let fake = Fake::new();
    fake.answer("status", 0, "", "");
    fake.sleep("status", 5);
    let started = Instant::now();
    let err = fake
        .helm()
        .with_read_timeout(Duration::from_millis(500))
        .status("apps", "demo")
        .await
        .expect_err("timed out");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(matches!(&err, HelmError::Failed { code: None, .. }), "{err:?}");
    fake.assert_work_dir_empty();
}

#[tokio::test]
async fn a_dropped_operation_removes_its_files() {
    let fake = Fake::new();
    fake.sleep("history", 5);
    let helm = fake.helm();
    let op = helm.history("apps", "demo");
    let _ = tokio::time::timeout(Duration::from_millis(500), op).await;
    fake.assert_work_dir_empty();
}

#[tokio::test]
async fn bad_requests_are_refused_before_helm_runs() {
    let fake = Fake::new();
    let helm = fake.helm();
    let t = Duration::from_secs(5);
    let chart = archive();
    let ok = Values::default();
    let values = |set: &str| Values {
        set: vec![set.to_string()],
        ..Values::default()
    };
    let long = "a".repeat(54);
    let cases: Vec<(&str, Result<Release, HelmError>)> = vec![
        (
            "uppercase release",
            helm.install("apps", "Demo", &chart, &ok, false, t).await,
        ),
        (
            "long release",
            helm.install("apps", &long, &chart, &ok, false, t).await,
        ),
        (
            "flag release",
            helm.install("apps", "-demo", &chart, &ok, false, t).await,
        ),
        (
            "bad namespace",
            helm.install("Apps_1", "demo", &chart, &ok, false, t).await,
        ),
        (
            "set without =",
            helm.install("apps", "demo", &chart, &values("a"), false, t).await,
        ),
        (
            "set flag",
            helm.install("apps", "demo", &chart, &values("--post-renderer=x"), false, t)
                .await,
        ),
        (
            "set NUL",
            helm.install("apps", "demo", &chart, &values("a=\0b"), false, t)
                .await,
        ),
        (
            "secret not an object",
            helm.install(
                "apps",
                "demo",
                &chart,
                &Values {
                    secret: Some(json!("hunter2")),
                    ..Values::default()
                },
                false,
                t,
            )
            .await,
        ),
        (
            "not gzip",
            helm.install(
                "apps",
                "demo",
                &Chart::Archive(b"Chart.yaml".to_vec()),
                &ok,
                false,
                t,
            )
            .await,
        ),
        (
            "flag chart",
            helm.install(
                "apps",
                "demo",
                &Chart::Reference("--repo=x".into()),
                &ok,
                false,
                t,
            )
            .await,
        ),
        (
            "huge archive",
            helm.install(
                "apps",
                "demo",
                &Chart::Archive(vec![0x1f; MAX_ARCHIVE_BYTES + 1]),
                &ok,
                false,
                t,
            )
            .await,
        ),
    ];
    for (case, result) in cases {
        assert!(matches!(result, Err(HelmError::Invalid(_))), "{case}: {result:?}");
    }
    let rollback = helm.rollback("apps", "demo", Some(0), false, t).await;
    assert!(matches!(rollback, Err(HelmError::Invalid(_))), "{rollback:?}");
    let context = Helm::new(KUBECONFIG, &fake.work)
        .with_program(&fake.program)
        .with_context("--kubeconfig=/etc/other")
        .status("apps", "demo")
        .await;
    assert!(matches!(context, Err(HelmError::Invalid(_))), "{context:?}");
    // A dotted release name of 53 characters is fine.
    fake.answer("status", 1, "", "Error: release: not found");
    let name = format!("{}.b", "a".repeat(51));
    assert_eq!(helm.status("apps", &name).await.expect("valid name"), None);
    assert_eq!(fake.seen().len(), 1, "helm ran only for the valid request");
    fake.assert_work_dir_empty();
}

#[test]
fn debug_output_hides_credentials_and_secret_values() {
    let helm = Helm::new(KUBECONFIG, "/tmp/x").with_context("prod");
    let shown = format!("{helm:?} {:?} {:?}", secret_values(), archive());
    assert!(!shown.contains(KUBE_TOKEN) && !shown.contains(SECRET), "{shown}");
}

// --- packaging, with the real helm -------------------------------------------------------------------

/// The real `helm` on `PATH`, or `None` (with a message: the test is skipped).
fn real_helm() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|d| d.join("helm"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipping: `helm` is not on PATH (CI installs it)");
    }
    found
}

/// `helm create demo` in a fresh directory.
fn created_chart(helm: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(helm)
        .arg("create")
        .arg("demo")
        .current_dir(dir.path())
        .output()
        .expect("helm create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chart = dir.path().join("demo");
    (dir, chart)
}

fn entries(archive: &[u8]) -> Vec<String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    tar.entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn run_helm(helm: &Path, args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(helm)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("helm")
}

#[test]
fn package_dir_makes_an_archive_helm_lints_and_templates() {
    let Some(helm) = real_helm() else { return };
    let (tmp, chart) = created_chart(&helm);
    std::fs::write(chart.join("notes.bak"), "ignored by .helmignore").expect("bak");
    std::fs::create_dir(chart.join("files")).expect("files");
    std::fs::write(chart.join("files/config.txt"), "hello").expect("file");
    std::os::unix::fs::symlink("config.txt", chart.join("files/link.txt")).expect("symlink");

    let bytes = package_dir(&chart).expect("packaged");
    assert_eq!(package_dir(&chart).expect("again"), bytes, "deterministic");
    let names = entries(&bytes);
    assert!(names.iter().all(|n| n.starts_with("demo/")), "{names:?}");
    for expected in [
        "demo/Chart.yaml",
        "demo/values.yaml",
        "demo/templates/deployment.yaml",
        "demo/templates/_helpers.tpl",
        "demo/files/link.txt",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.ends_with(".bak")), "{names:?}");

    let tgz = tmp.path().join("demo-0.1.0.tgz");
    std::fs::write(&tgz, &bytes).expect("tgz");
    let tgz_arg = tgz.to_str().expect("utf-8");
    let lint = run_helm(&helm, &["lint", tgz_arg], tmp.path());
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let rendered = run_helm(&helm, &["template", "demo", tgz_arg], tmp.path());
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    assert!(String::from_utf8_lossy(&rendered.stdout).contains("kind: Deployment"));
}

#[tokio::test]
async fn template_renders_an_archive_with_files_then_secret_values_offline() {
    let Some(program) = real_helm() else { return };
    let (tmp, chart) = created_chart(&program);
    let bytes = package_dir(&chart).expect("packaged");
    let work = tmp.path().join("work");
    let helm = Helm::new(KUBECONFIG, &work).with_program(&program);
    let values = Values {
        files: vec!["replicaCount: 3\n".into(), "image:\n  tag: \"9.9.9\"\n".into()],
        set: vec!["service.port=8081".into()],
        secret: Some(json!({ "replicaCount": 7, "podAnnotations": { "pave.dev/secret": SECRET } })),
    };
    let out = helm
        .template("apps", "demo", &Chart::Archive(bytes), &values)
        .await
        .expect("rendered");
    assert!(
        out.contains("replicas: 7"),
        "stdin values come after the files:\n{out}"
    );
    assert!(out.contains("nginx:9.9.9"), "{out}");
    assert!(out.contains("port: 8081"), "{out}");
    assert!(out.contains(SECRET), "the secret values reached helm");
    let left: Vec<_> = std::fs::read_dir(&work).expect("work").collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(helm.version().await.expect("version").starts_with('v'));
}

#[tokio::test]
async fn the_real_helm_accepts_every_command_line() {
    // No cluster here: every command fails to reach 127.0.0.1:1, after helm
    // has parsed its flags (a misspelt flag would fail differently).
    let Some(program) = real_helm() else { return };
    let (tmp, chart) = created_chart(&program);
    let bytes = package_dir(&chart).expect("packaged");
    let helm = Helm::new(KUBECONFIG, tmp.path().join("work"))
        .with_program(&program)
        .with_context("prod");
    let chart = Chart::Archive(bytes);
    let t = Duration::from_secs(5);
    let values = secret_values();
    let results: Vec<(&str, Result<(), HelmError>)> = vec![
        (
            "install",
            helm.install("apps", "demo", &chart, &values, true, t)
                .await
                .map(drop),
        ),
        (
            "upgrade",
            helm.upgrade("apps", "demo", &chart, &values, true, t, true)
                .await
                .map(drop),
        ),
        ("rollback", helm.rollback("apps", "demo", Some(1), true, t).await),
        ("uninstall", helm.uninstall("apps", "demo", true, t).await),
        ("status", helm.status("apps", "demo").await.map(drop)),
        ("history", helm.history("apps", "demo").await.map(drop)),
        ("list", helm.list(None).await.map(drop)),
        ("list ns", helm.list(Some("apps")).await.map(drop)),
    ];
    for (what, result) in results {
        match result {
            Err(HelmError::Failed { stderr, .. }) => {
                assert!(stderr.contains("127.0.0.1:1"), "{what}: {stderr}");
                assert!(!stderr.contains("unknown"), "{what}: {stderr}");
                assert!(!stderr.contains(SECRET), "{what}: {stderr}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

// --- packaging refusals ------------------------------------------------------------------------------

fn minimal_chart() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("mychart");
    std::fs::create_dir_all(chart.join("templates")).expect("dirs");
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: web\nversion: 1.0.0\n",
    )
    .expect("Chart.yaml");
    std::fs::write(chart.join("templates/cm.yaml"), "kind: ConfigMap\n").expect("template");
    (dir, chart)
}

#[test]
fn package_dir_names_the_top_folder_after_the_chart() {
    let (_tmp, chart) = minimal_chart();
    std::fs::write(
        chart.join(".helmignore"),
        "# comment\n*.tmp\nsecrets/\n!keep.tmp\n/templates/skip-*.yaml\n",
    )
    .expect("ignore");
    std::fs::write(chart.join("a.tmp"), "x").expect("tmp");
    std::fs::write(chart.join("keep.tmp"), "x").expect("tmp");
    std::fs::create_dir(chart.join("secrets")).expect("dir");
    std::fs::write(chart.join("secrets/key"), "x").expect("key");
    std::fs::write(chart.join("templates/skip-me.yaml"), "x").expect("skip");
    let names = entries(&package_dir(&chart).expect("packaged"));
    assert_eq!(
        names,
        [
            "web/.helmignore",
            "web/Chart.yaml",
            "web/keep.tmp",
            "web/templates/cm.yaml"
        ]
    );
}

#[test]
fn package_dir_refuses_what_is_not_a_chart() {
    let (tmp, chart) = minimal_chart();
    std::fs::remove_file(chart.join("Chart.yaml")).expect("rm");
    assert!(matches!(package_dir(&chart), Err(HelmError::Invalid(_))));
    assert!(matches!(
        package_dir(&tmp.path().join("nowhere")),
        Err(HelmError::Io { .. })
    ));
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nversion: 1.0.0\n").expect("no name");
    assert!(matches!(package_dir(&chart), Err(HelmError::Invalid(_))));
}

#[test]
fn package_dir_refuses_symlinks_out_of_the_chart() {
    let (tmp, chart) = minimal_chart();
    std::fs::write(tmp.path().join("outside.txt"), "secret").expect("outside");
    std::os::unix::fs::symlink(tmp.path().join("outside.txt"), chart.join("templates/out.yaml"))
        .expect("link");
    let err = package_dir(&chart).expect_err("escaping symlink");
    assert!(
        matches!(&err, HelmError::Invalid(m) if m.contains("outside")),
        "{err:?}"
    );

    let (_tmp, chart) = minimal_chart();
    std::os::unix::fs::symlink("..", chart.join("templates/up")).expect("link");
    let err = package_dir(&chart).expect_err("a loop");
    assert!(matches!(err, HelmError::Invalid(_)), "{err:?}");
}

#[test]
fn package_dir_caps_the_archive() {
    let (_tmp, chart) = minimal_chart();
    // Incompressible bytes, more than the cap.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..MAX_ARCHIVE_BYTES + (1 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(chart.join("big.bin"), noise).expect("big");
    let err = package_dir(&chart).expect_err("too big");
    assert!(
        matches!(&err, HelmError::Invalid(m) if m.contains("larger")),
        "{err:?}"
    );
}
