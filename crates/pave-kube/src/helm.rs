//! Helm releases, through the `helm` binary.
//!
//! Why a binary and not a library: a Helm release is whatever the Go `helm`
//! makes of a chart (Go templates with sprig and `lookup`, hooks, the
//! three-way merge of upgrades, releases stored as Secrets in the release's
//! namespace). Nothing in Rust reproduces that faithfully, and a release pave
//! makes must stay a release that `helm` users can read, upgrade and roll
//! back. So pave runs the real `helm` (3.8+ or 4) on the agent, with
//! `-o json`, and parses what it prints.
//!
//! Where the credentials go: the cluster's kubeconfig (YAML text from pave's
//! vault) is written, for each invocation only, to a fresh directory under
//! the work directory (mode 0700, the file 0600) and passed as
//! `--kubeconfig FILE`; the directory is removed when the command ends, also
//! on error, timeout or cancellation. Values from the vault
//! ([`Values::secret`]) go to helm's stdin only (`-f -`, last, so they win),
//! never to argv or disk, and are scrubbed (`***`) from helm's error output.
//! Neither is ever logged; argv and stdout are not logged either (only
//! `helm <command> <release>`).
//!
//! Flags that differ between helm 3 and 4: `--wait` is given bare (helm 3: a
//! bool; helm 4: the `watcher` strategy); without it helm 4 waits for hooks
//! only (`hookOnly`) and helm 3 not at all. `helm list` includes failed and
//! pending releases by default in helm 4, and needs `--all` in helm 3, so
//! [`Helm::list`] asks `helm version` once per [`Helm`].

use std::ffi::OsString;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

/// The most a chart archive may weigh (compressed), given or made.
pub const MAX_ARCHIVE_BYTES: usize = 8 << 20;
/// The most the files of a chart directory may weigh together (uncompressed).
pub const MAX_CHART_DIR_BYTES: u64 = 64 << 20;
/// The longest release name helm accepts.
pub const MAX_RELEASE_NAME: usize = 53;
/// How long a read (`status`, `history`, `list`, `template`, `version`) may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How much longer than its `--timeout` a mutating command may run before pave kills it.
pub const GRACE: Duration = Duration::from_secs(60);
/// How many of the last lines of helm's stderr a [`HelmError::Failed`] keeps.
pub const STDERR_LINES: usize = 40;

/// What helm prints when a release does not exist (helm 3 and 4).
const RELEASE_NOT_FOUND: &str = "release: not found";
/// Environment variables that could point helm at other credentials than the given ones.
const CLEARED_ENV: &[&str] = &[
    "KUBECONFIG",
    "HELM_KUBECONTEXT",
    "HELM_KUBETOKEN",
    "HELM_KUBEAPISERVER",
    "HELM_KUBEASUSER",
    "HELM_KUBEASGROUPS",
    "HELM_KUBECAFILE",
    "HELM_KUBEINSECURE_SKIP_TLS_VERIFY",
    "HELM_KUBETLS_SERVER_NAME",
    "HELM_NAMESPACE",
    "HELM_DEBUG",
];

/// An error of a helm operation.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The helm program could not be found.
    #[error(
        "the helm program `{program}` was not found: install Helm 3.8+ or 4 on the agent \
         (https://helm.sh/docs/intro/install/, e.g. `curl -fsSL \
         https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-4 | bash`) or configure its path"
    )]
    MissingProgram { program: String },
    /// The request was refused before helm ran.
    #[error("invalid helm request: {0}")]
    Invalid(String),
    /// helm failed (or printed what pave could not read, or ran too long).
    #[error("`{command}` failed{}: {stderr}", code_suffix(.code))]
    Failed {
        /// e.g. `helm upgrade demo`; never values or credentials.
        command: String,
        /// helm's exit code; `None` when it was killed.
        code: Option<i32>,
        /// helm's message: trimmed, its last [`STDERR_LINES`] lines, secrets scrubbed.
        stderr: String,
    },
    /// The release does not exist.
    #[error("helm release {release:?} not found in namespace {namespace:?}")]
    NotFound { namespace: String, release: String },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The result of a helm operation.
pub type Result<T, E = HelmError> = std::result::Result<T, E>;

fn code_suffix(code: &Option<i32>) -> String {
    code.map(|c| format!(" (exit code {c})")).unwrap_or_default()
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HelmError {
    move |source| HelmError::Io {
        context: context.into(),
        source,
    }
}

fn invalid(message: impl Into<String>) -> HelmError {
    HelmError::Invalid(message.into())
}

/// A chart to install.
#[derive(Clone, PartialEq, Eq)]
pub enum Chart {
    /// A `.tgz` of a chart directory (see [`package_dir`]), written to the
    /// invocation's private directory.
    Archive(Vec<u8>),
    /// `oci://…`, `repo/name`, or an absolute path on the agent's host (helm
    /// runs in a private temporary directory, so relative paths do not work).
    Reference(String),
}

impl fmt::Debug for Chart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chart::Archive(bytes) => write!(f, "Archive({} bytes)", bytes.len()),
            Chart::Reference(r) => f.debug_tuple("Reference").field(r).finish(),
        }
    }
}

impl Chart {
    fn validate(&self) -> Result<()> {
        match self {
            Chart::Archive(bytes) => {
                if bytes.len() > MAX_ARCHIVE_BYTES {
                    return Err(invalid(format!(
                        "the chart archive has {} bytes, more than {MAX_ARCHIVE_BYTES}",
                        bytes.len()
                    )));
                }
                if !bytes.starts_with(&[0x1f, 0x8b]) {
                    return Err(invalid("the chart archive is not gzipped (a .tgz is expected)"));
                }
            }
            Chart::Reference(r) => {
                if r.trim().is_empty() {
                    return Err(invalid("the chart reference is empty"));
                }
                if r.starts_with('-') || r.contains(['\0', '\n', '\r']) {
                    return Err(invalid(format!("refusing the chart reference {r:?}")));
                }
            }
        }
        Ok(())
    }
}

/// The values of a release. helm's precedence (later wins): the chart's
/// defaults, the `files` in order, `secret` (the last `-f`), then `set`
/// (helm puts `--set` above every `-f`).
#[derive(Clone, Default, PartialEq)]
pub struct Values {
    /// YAML texts, written to the invocation's private directory and passed
    /// as `-f` in this order.
    pub files: Vec<String>,
    /// `--set` items (`a.b=c`), passed in argv: nothing secret here.
    pub set: Vec<String>,
    /// Values from the vault (a JSON object): on stdin only, as the last `-f -`.
    pub secret: Option<Value>,
}

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Values")
            .field("files", &self.files.len())
            .field("set", &self.set)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Values {
    fn validate(&self) -> Result<()> {
        for (i, file) in self.files.iter().enumerate() {
            if file.contains('\0') {
                return Err(invalid(format!("values file {i} contains a NUL byte")));
            }
        }
        for item in &self.set {
            if item.contains('\0') {
                return Err(invalid("a --set item contains a NUL byte"));
            }
            if item.starts_with('-') {
                return Err(invalid(format!(
                    "refusing the --set item {item:?}: it starts with '-'"
                )));
            }
            match item.split_once('=') {
                Some((key, _)) if !key.trim().is_empty() => {}
                _ => return Err(invalid(format!("the --set item {item:?} is not key=value"))),
            }
        }
        match &self.secret {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(invalid("secret values must be a JSON object")),
        }
    }

    /// The texts to scrub from helm's messages: the secret values' leaf
    /// strings (and each line of a multi-line one), longest first.
    fn secret_texts(&self) -> Vec<String> {
        fn leaves(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) if !s.is_empty() => {
                    out.push(s.clone());
                    if s.contains('\n') {
                        out.extend(
                            s.lines()
                                .map(str::trim)
                                .filter(|l| l.len() >= 4)
                                .map(str::to_string),
                        );
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
                Value::Object(map) => map.values().for_each(|i| leaves(i, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        if let Some(secret) = &self.secret {
            leaves(secret, &mut out);
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out.dedup();
        out
    }
}

/// A release, as `helm install|upgrade|status|list` report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    /// helm's `version` of the release (its revision).
    pub revision: u32,
    /// `deployed`, `failed`, `pending-install`, `superseded`, …
    pub status: String,
    /// `<chart name>-<chart version>`, as `helm list` prints it.
    pub chart: String,
    pub app_version: String,
    /// When the revision was deployed, RFC 3339 (empty when helm gave none).
    pub updated: String,
    /// helm's description of the revision (`Install complete`, an error, …);
    /// `None` from [`Helm::list`], which does not report it.
    pub description: Option<String>,
}

/// One revision of a release, as `helm history` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub revision: u32,
    pub status: String,
    pub chart: String,
    pub app_version: String,
    /// RFC 3339 (empty when helm gave none).
    pub updated: String,
    pub description: String,
}

/// `helm`, over one cluster.
#[derive(Clone)]
pub struct Helm {
    program: PathBuf,
    /// `None`: the service account of the pod helm runs in.
    kubeconfig: Option<Arc<str>>,
    context: Option<String>,
    work_dir: PathBuf,
    read_timeout: Duration,
    major: Arc<OnceLock<u32>>,
}

impl fmt::Debug for Helm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Helm")
            .field("program", &self.program)
            .field("kubeconfig", &"<redacted>")
            .field("context", &self.context)
            .field("work_dir", &self.work_dir)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

/// What one invocation needs.
struct Call<'a> {
    /// The helm subcommand (`install`, …).
    sub: &'static str,
    /// The release, for messages.
    release: Option<&'a str>,
    /// Positional arguments after the subcommand (the chart comes after them).
    positional: Vec<String>,
    chart: Option<&'a Chart>,
    /// Flags.
    flags: Vec<String>,
    values: Option<&'a Values>,
    /// Whether helm talks to the cluster (gets the kubeconfig).
    kube: bool,
    /// When pave kills helm.
    deadline: Duration,
}

impl Call<'_> {
    fn new(sub: &'static str, deadline: Duration) -> Self {
        Call {
            sub,
            release: None,
            positional: Vec::new(),
            chart: None,
            flags: Vec::new(),
            values: None,
            kube: true,
            deadline,
        }
    }

    fn display(&self) -> String {
        match self.release {
            Some(r) => format!("helm {} {r}", self.sub),
            None => format!("helm {}", self.sub),
        }
    }

    fn flag(mut self, name: &str, value: impl Into<String>) -> Self {
        self.flags.push(name.to_string());
        self.flags.push(value.into());
        self
    }

    fn switch(mut self, name: &str, on: bool) -> Self {
        if on {
            self.flags.push(name.to_string());
        }
        self
    }
}

impl Helm {
    /// `helm` (found on `PATH`) over the cluster of `kubeconfig` (kubeconfig
    /// YAML text, not a path), with its private per-invocation directories
    /// under `work_dir` (created, 0700, when missing).
    pub fn new(kubeconfig: impl Into<String>, work_dir: impl Into<PathBuf>) -> Self {
        let kubeconfig: String = kubeconfig.into();
        Helm {
            program: PathBuf::from("helm"),
            kubeconfig: Some(Arc::from(kubeconfig)),
            context: None,
            work_dir: work_dir.into(),
            read_timeout: READ_TIMEOUT,
            major: Arc::new(OnceLock::new()),
        }
    }

    /// Run this helm program (a path, or a name looked up on `PATH`).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self.major = Arc::new(OnceLock::new());
        self
    }

    /// `helm` in a pod of the cluster, with the pod's service account (an
    /// agent run inside the cluster holds no kubeconfig).
    pub fn in_cluster(work_dir: impl Into<PathBuf>) -> Self {
        Helm {
            kubeconfig: None,
            ..Helm::new(String::new(), work_dir)
        }
    }

    /// Use this context of the kubeconfig (`--kube-context`).
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// How long reads may take (default [`READ_TIMEOUT`]).
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The helm program this runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// `helm version --short`, e.g. `v4.2.3+g43e8b7f` (no cluster needed).
    pub async fn version(&self) -> Result<String> {
        let mut call = Call::new("version", self.read_timeout);
        call.kube = false;
        call.flags.push("--short".into());
        let out = self.run(call).await?;
        let version = String::from_utf8_lossy(&out).trim().to_string();
        if let Some(major) = parse_major(&version) {
            let _ = self.major.set(major);
        }
        Ok(version)
    }

    async fn major(&self) -> Result<u32> {
        if let Some(major) = self.major.get() {
            return Ok(*major);
        }
        let version = self.version().await?;
        // An unreadable version is taken for a recent helm.
        Ok(*self.major.get_or_init(|| parse_major(&version).unwrap_or(4)))
    }

    /// `helm install RELEASE CHART -o json`: the new release.
    pub async fn install(
        &self,
        namespace: &str,
        release: &str,
        chart: &Chart,
        values: &Values,
        wait: bool,
        timeout: Duration,
    ) -> Result<Release> {
        validate_namespace(namespace)?;
        validate_release(release)?;
        chart.validate()?;
        values.validate()?;
        let mut call = Call::new("install", timeout.saturating_add(GRACE))
            .flag("--namespace", namespace)
            .flag("--output", "json")
            .switch("--wait", wait)
            .flag("--timeout", helm_duration(timeout));
        call.release = Some(release);
        call.positional.push(release.to_string());
        call.chart = Some(chart);
        call.values = Some(values);
        let shown = call.display();
        parse_release(&shown, &self.run(call).await?)
    }

    /// `helm upgrade RELEASE CHART -o json` (`--install` when `install`): the
    /// new revision. The release's values are the given ones (on top of the
    /// chart's defaults), not the previous revision's.
    #[allow(clippy::too_many_arguments)]
    pub async fn upgrade(
        &self,
        namespace: &str,
        release: &str,
        chart: &Chart,
        values: &Values,
        wait: bool,
        timeout: Duration,
        install: bool,
    ) -> Result<Release> {
        validate_namespace(namespace)?;
        validate_release(release)?;
        chart.validate()?;
        values.validate()?;
        let mut call = Call::new("upgrade", timeout.saturating_add(GRACE))
            .flag("--namespace", namespace)
            .flag("--output", "json")
            .switch("--install", install)
            .switch("--wait", wait)
            .flag("--timeout", helm_duration(timeout));
        call.release = Some(release);
        call.positional.push(release.to_string());
        call.chart = Some(chart);
        call.values = Some(values);
        let shown = call.display();
        parse_release(&shown, &self.run(call).await?)
    }

    /// `helm rollback RELEASE [REVISION]`: to `revision`, or (`None`) to the previous one.
    pub async fn rollback(
        &self,
        namespace: &str,
        release: &str,
        revision: Option<u32>,
        wait: bool,
        timeout: Duration,
    ) -> Result<()> {
        validate_namespace(namespace)?;
        validate_release(release)?;
        if revision == Some(0) {
            return Err(invalid(
                "revision 0 does not exist (None rolls back to the previous one)",
            ));
        }
        let mut call = Call::new("rollback", timeout.saturating_add(GRACE))
            .flag("--namespace", namespace)
            .switch("--wait", wait)
            .flag("--timeout", helm_duration(timeout));
        call.release = Some(release);
        call.positional.push(release.to_string());
        call.positional.extend(revision.map(|r| r.to_string()));
        self.run(call).await.map(drop)
    }

    /// `helm uninstall RELEASE` ([`HelmError::NotFound`] when there is none).
    pub async fn uninstall(
        &self,
        namespace: &str,
        release: &str,
        wait: bool,
        timeout: Duration,
    ) -> Result<()> {
        validate_namespace(namespace)?;
        validate_release(release)?;
        let mut call = Call::new("uninstall", timeout.saturating_add(GRACE))
            .flag("--namespace", namespace)
            .switch("--wait", wait)
            .flag("--timeout", helm_duration(timeout));
        call.release = Some(release);
        call.positional.push(release.to_string());
        self.run(call).await.map(drop)
    }

    /// `helm status RELEASE -o json`; `None` when there is no such release.
    /// helm's status leaves the chart out, so `chart` and `app_version` come
    /// from the release's history (a second helm invocation).
    pub async fn status(&self, namespace: &str, release: &str) -> Result<Option<Release>> {
        validate_namespace(namespace)?;
        validate_release(release)?;
        let mut call = Call::new("status", self.read_timeout)
            .flag("--namespace", namespace)
            .flag("--output", "json");
        call.release = Some(release);
        call.positional.push(release.to_string());
        let shown = call.display();
        let out = match self.run(call).await {
            Ok(out) => out,
            Err(HelmError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut found = parse_release(&shown, &out)?;
        if found.chart.is_empty() {
            let history = match self.history(namespace, release).await {
                Ok(history) => history,
                Err(HelmError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let entry = history
                .iter()
                .find(|h| h.revision == found.revision)
                .or_else(|| history.last());
            if let Some(entry) = entry {
                found.chart = entry.chart.clone();
                found.app_version = entry.app_version.clone();
            }
        }
        Ok(Some(found))
    }

    /// `helm history RELEASE -o json`: the revisions helm keeps, oldest first.
    pub async fn history(&self, namespace: &str, release: &str) -> Result<Vec<HistoryEntry>> {
        validate_namespace(namespace)?;
        validate_release(release)?;
        let mut call = Call::new("history", self.read_timeout)
            .flag("--namespace", namespace)
            .flag("--output", "json");
        call.release = Some(release);
        call.positional.push(release.to_string());
        let shown = call.display();
        let out = self.run(call).await?;
        let raw: Vec<RawHistory> = parse_json(&shown, &out)?;
        let mut entries: Vec<HistoryEntry> = raw
            .into_iter()
            .map(|h| HistoryEntry {
                revision: h.revision,
                status: h.status,
                chart: h.chart,
                app_version: h.app_version,
                updated: h.updated,
                description: h.description,
            })
            .collect();
        entries.sort_by_key(|e| e.revision);
        Ok(entries)
    }

    /// `helm list -o json` of `namespace`, or (`None`) of all namespaces; in
    /// every status (failed and pending ones too). At most helm's default of
    /// 256 releases.
    pub async fn list(&self, namespace: Option<&str>) -> Result<Vec<Release>> {
        if let Some(ns) = namespace {
            validate_namespace(ns)?;
        }
        let major = self.major().await?;
        let mut call = Call::new("list", self.read_timeout)
            .flag("--output", "json")
            .flag("--time-format", "2006-01-02T15:04:05.999999999Z07:00")
            .switch("--all", major < 4);
        call = match namespace {
            Some(ns) => call.flag("--namespace", ns),
            None => call.switch("--all-namespaces", true),
        };
        let shown = call.display();
        let out = self.run(call).await?;
        let raw: Vec<RawListed> = parse_json(&shown, &out)?;
        Ok(raw
            .into_iter()
            .map(|r| Release {
                name: r.name,
                namespace: r.namespace,
                revision: r.revision,
                status: r.status,
                chart: r.chart,
                app_version: r.app_version,
                updated: if r.updated == "-" {
                    String::new()
                } else {
                    r.updated
                },
                description: None,
            })
            .collect())
    }

    /// `helm template RELEASE CHART`: the manifests the chart renders, for a
    /// dry run. Offline (no credentials are given to helm, `lookup` finds
    /// nothing). The result contains the rendered values, secret ones
    /// included: treat it as a secret.
    pub async fn template(
        &self,
        namespace: &str,
        release: &str,
        chart: &Chart,
        values: &Values,
    ) -> Result<String> {
        validate_namespace(namespace)?;
        validate_release(release)?;
        chart.validate()?;
        values.validate()?;
        let mut call = Call::new("template", self.read_timeout).flag("--namespace", namespace);
        call.kube = false;
        call.release = Some(release);
        call.positional.push(release.to_string());
        call.chart = Some(chart);
        call.values = Some(values);
        let shown = call.display();
        let out = self.run(call).await?;
        String::from_utf8(out).map_err(|_| HelmError::Failed {
            command: shown,
            code: Some(0),
            stderr: "helm printed manifests that are not UTF-8".into(),
        })
    }

    /// Runs one helm command in a fresh private directory; its stdout.
    async fn run(&self, call: Call<'_>) -> Result<Vec<u8>> {
        let shown = call.display();
        let secrets = call.values.map(Values::secret_texts).unwrap_or_default();
        let dir = self.private_dir()?;
        let mut argv: Vec<OsString> = Vec::new();
        argv.push(call.sub.into());
        argv.extend(call.positional.iter().map(OsString::from));
        if let Some(chart) = call.chart {
            match chart {
                Chart::Archive(bytes) => {
                    let path = dir.path().join("chart.tgz");
                    write_private(&path, bytes)?;
                    argv.push(path.into_os_string());
                }
                Chart::Reference(r) => argv.push(r.into()),
            }
        }
        argv.extend(call.flags.iter().map(OsString::from));
        if let (true, Some(kubeconfig)) = (call.kube, &self.kubeconfig) {
            if kubeconfig.trim().is_empty() || kubeconfig.contains('\0') {
                return Err(invalid("the kubeconfig is empty or not text"));
            }
            let path = dir.path().join("kubeconfig");
            write_private(&path, kubeconfig.as_bytes())?;
            argv.push("--kubeconfig".into());
            argv.push(path.into_os_string());
            if let Some(context) = &self.context {
                if context.is_empty() || context.starts_with('-') || context.contains(['\0', '\n']) {
                    return Err(invalid(format!("refusing the kube context {context:?}")));
                }
                argv.push("--kube-context".into());
                argv.push(context.into());
            }
        }
        let mut stdin = None;
        if let Some(values) = call.values {
            for (i, text) in values.files.iter().enumerate() {
                let path = dir.path().join(format!("values-{i}.yaml"));
                write_private(&path, text.as_bytes())?;
                argv.push("-f".into());
                argv.push(path.into_os_string());
            }
            for item in &values.set {
                argv.push("--set".into());
                argv.push(item.into());
            }
            if let Some(secret) = &values.secret {
                let bytes = serde_json::to_vec(secret).map_err(|e| invalid(format!("secret values: {e}")))?;
                stdin = Some(bytes);
                argv.push("-f".into());
                argv.push("-".into());
            }
        }

        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&argv)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for var in CLEARED_ENV {
            cmd.env_remove(var);
        }
        tracing::debug!(command = %shown, "running helm");
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                HelmError::MissingProgram {
                    program: self.program.display().to_string(),
                }
            } else {
                HelmError::Io {
                    context: format!("could not start {}", self.program.display()),
                    source: e,
                }
            }
        })?;
        let input = child.stdin.take();
        let feed = async move {
            if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
                pipe.write_all(&bytes).await?;
                pipe.shutdown().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        // Dropping `child` (on timeout, or when this future is dropped) kills helm.
        let finished = tokio::time::timeout(call.deadline, async {
            tokio::join!(feed, child.wait_with_output())
        })
        .await;
        let (fed, output) = match finished {
            Ok(done) => done,
            Err(_) => {
                tracing::warn!(command = %shown, deadline = ?call.deadline, "helm ran too long: killed");
                return Err(HelmError::Failed {
                    command: shown,
                    code: None,
                    stderr: format!("helm did not finish within {:?} and was killed", call.deadline),
                });
            }
        };
        let output = output.map_err(io_err(format!("could not run {shown}")))?;
        if let Err(e) = fed {
            // helm may exit before reading its stdin (a bad flag): its exit status tells.
            if e.kind() != std::io::ErrorKind::BrokenPipe && output.status.success() {
                return Err(io_err(format!("could not give {shown} its values"))(e));
            }
        }
        drop(dir);
        tracing::debug!(command = %shown, code = ?output.status.code(), "helm finished");
        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = scrub(&String::from_utf8_lossy(&output.stderr), &secrets);
        if stderr.contains(RELEASE_NOT_FOUND) {
            if let Some(release) = call.release {
                let namespace = flag_value(&call.flags, "--namespace").unwrap_or_default();
                return Err(HelmError::NotFound {
                    namespace,
                    release: release.to_string(),
                });
            }
        }
        Err(HelmError::Failed {
            command: shown,
            code: output.status.code(),
            stderr: tail(&stderr, STDERR_LINES),
        })
    }

    /// A fresh directory only this user can read, removed when dropped.
    fn private_dir(&self) -> Result<tempfile::TempDir> {
        let work_dir = &self.work_dir;
        let context = || format!("could not make a private directory in {}", work_dir.display());
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(work_dir).map_err(io_err(context()))?;
        let dir = tempfile::Builder::new()
            .prefix(".pave-helm-")
            .tempdir_in(work_dir)
            .map_err(io_err(context()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(context()))?;
        }
        Ok(dir)
    }
}

fn flag_value(flags: &[String], name: &str) -> Option<String> {
    flags
        .iter()
        .position(|f| f == name)
        .and_then(|i| flags.get(i + 1))
        .cloned()
}

/// Writes a new file only this user can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let context = || format!("could not write {}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io_err(context()))?;
    file.write_all(bytes).map_err(io_err(context()))?;
    file.flush().map_err(io_err(context()))
}

/// `300s`: whole seconds, rounded up, at least one.
fn helm_duration(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{}s", secs.max(1))
}

fn parse_major(version: &str) -> Option<u32> {
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// `text` with every secret replaced by `***` (`secrets` longest first).
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if !secret.is_empty() && out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// The last `lines` lines of `text`, trimmed.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim().lines().collect();
    let skip = all.len().saturating_sub(lines);
    all[skip..].join("\n")
}

/// A DNS-1123 label (a namespace).
fn validate_namespace(ns: &str) -> Result<()> {
    if ns.len() > 63 || !is_label(ns) {
        return Err(invalid(format!(
            "{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        )));
    }
    Ok(())
}

/// helm's rule for release names: DNS-1123 labels joined by dots, at most 53.
fn validate_release(name: &str) -> Result<()> {
    if name.len() > MAX_RELEASE_NAME || !name.split('.').all(is_label) {
        return Err(invalid(format!(
            "{name:?} is not a release name (lowercase letters, digits, '-' and '.', at most {MAX_RELEASE_NAME})"
        )));
    }
    Ok(())
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

// --- helm's JSON ---------------------------------------------------------------------------------

/// A string; `null` and numbers are taken too.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// A revision: a number, or a string of one (`helm list` prints strings).
fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("revision {n} out of range"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("revision {s:?} is not a number"))),
        Value::Null => Ok(0),
        _ => Err(serde::de::Error::custom("revision is not a number")),
    }
}

/// helm's release object (`install|upgrade|status -o json`), the parts pave reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRelease {
    #[serde(deserialize_with = "lenient_string")]
    name: String,
    #[serde(deserialize_with = "lenient_string")]
    namespace: String,
    #[serde(deserialize_with = "lenient_u32")]
    version: u32,
    info: Option<RawInfo>,
    chart: Option<RawChart>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawInfo {
    #[serde(deserialize_with = "lenient_string")]
    status: String,
    #[serde(deserialize_with = "lenient_string")]
    last_deployed: String,
    #[serde(deserialize_with = "lenient_string")]
    description: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawChart {
    metadata: Option<RawMetadata>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMetadata {
    #[serde(deserialize_with = "lenient_string")]
    name: String,
    #[serde(deserialize_with = "lenient_string")]
    version: String,
    #[serde(rename = "appVersion", deserialize_with = "lenient_string")]
    app_version: String,
}

/// An element of `helm list -o json`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawListed {
    #[serde(deserialize_with = "lenient_string")]
    name: String,
    #[serde(deserialize_with = "lenient_string")]
    namespace: String,
    #[serde(deserialize_with = "lenient_u32")]
    revision: u32,
    #[serde(deserialize_with = "lenient_string")]
    updated: String,
    #[serde(deserialize_with = "lenient_string")]
    status: String,
    #[serde(deserialize_with = "lenient_string")]
    chart: String,
    #[serde(deserialize_with = "lenient_string")]
    app_version: String,
}

/// An element of `helm history -o json`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawHistory {
    #[serde(deserialize_with = "lenient_u32")]
    revision: u32,
    #[serde(deserialize_with = "lenient_string")]
    updated: String,
    #[serde(deserialize_with = "lenient_string")]
    status: String,
    #[serde(deserialize_with = "lenient_string")]
    chart: String,
    #[serde(deserialize_with = "lenient_string")]
    app_version: String,
    #[serde(deserialize_with = "lenient_string")]
    description: String,
}

/// helm's JSON output. The error never quotes it: a release object holds the values.
fn parse_json<T: serde::de::DeserializeOwned>(command: &str, out: &[u8]) -> Result<T> {
    serde_json::from_slice(out).map_err(|e| HelmError::Failed {
        command: command.to_string(),
        code: Some(0),
        stderr: format!(
            "could not read helm's JSON output ({:?} at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

fn parse_release(command: &str, out: &[u8]) -> Result<Release> {
    let raw: RawRelease = parse_json(command, out)?;
    let info = raw.info.unwrap_or_default();
    let (chart, app_version) = match raw.chart.and_then(|c| c.metadata) {
        Some(m) if !m.name.is_empty() => (format!("{}-{}", m.name, m.version), m.app_version),
        _ => (String::new(), String::new()),
    };
    Ok(Release {
        name: raw.name,
        namespace: raw.namespace,
        revision: raw.version,
        status: info.status,
        chart,
        app_version,
        updated: info.last_deployed,
        description: Some(info.description).filter(|d| !d.is_empty()),
    })
}

// --- packaging -----------------------------------------------------------------------------------

/// A gzipped tar of the chart directory `dir`, as `helm package` makes it:
/// its files under a top-level folder named after the chart (`name` of
/// `Chart.yaml`). Honours `.helmignore` (a subset: `*`, `?`, `[…]`, `!`, a
/// trailing `/` for directories, patterns with a `/` matched against the
/// path, others against the base name). Symlinks are followed when they stay
/// inside `dir` and refused otherwise. Deterministic (sorted, mtime 0), at
/// most [`MAX_ARCHIVE_BYTES`] compressed and [`MAX_CHART_DIR_BYTES`] of files.
pub fn package_dir(dir: &Path) -> Result<Vec<u8>> {
    let root = dir.canonicalize().map_err(io_err(format!(
        "could not open the chart directory {}",
        dir.display()
    )))?;
    if !root.is_dir() {
        return Err(invalid(format!("{} is not a directory", dir.display())));
    }
    let chart_yaml = root.join("Chart.yaml");
    if !chart_yaml.is_file() {
        return Err(invalid(format!(
            "{} has no Chart.yaml: not a chart",
            dir.display()
        )));
    }
    let meta: Value = yaml_serde::from_str(
        &std::fs::read_to_string(&chart_yaml)
            .map_err(io_err(format!("could not read {}", chart_yaml.display())))?,
    )
    .map_err(|e| invalid(format!("{}: {e}", chart_yaml.display())))?;
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() || name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
        return Err(invalid(format!(
            "{}: a chart name is needed",
            chart_yaml.display()
        )));
    }

    let ignore = match std::fs::read_to_string(root.join(".helmignore")) {
        Ok(text) => Ignore::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(io_err(format!("could not read {}/.helmignore", dir.display()))(e)),
    };
    let mut files = Vec::new();
    let mut total = 0u64;
    walk(
        &root,
        &root,
        "",
        &ignore,
        &mut vec![root.clone()],
        &mut files,
        &mut total,
    )?;

    let encoder = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(Capped { inner: encoder });
    for (rel, path) in &files {
        let bytes = std::fs::read(path).map_err(io_err(format!("could not read {}", path.display())))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{name}/{rel}"), bytes.as_slice())
            .map_err(|e| archive_err(e, rel))?;
    }
    let capped = tar.into_inner().map_err(|e| archive_err(e, "the archive"))?;
    let out = capped.inner.finish().map_err(|e| archive_err(e, "the archive"))?;
    if out.len() > MAX_ARCHIVE_BYTES {
        return Err(too_big());
    }
    Ok(out)
}

fn too_big() -> HelmError {
    invalid(format!(
        "the chart archive would be larger than {MAX_ARCHIVE_BYTES} bytes"
    ))
}

fn archive_err(e: std::io::Error, what: &str) -> HelmError {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        too_big()
    } else {
        io_err(format!("could not archive {what}"))(e)
    }
}

/// The gzip encoder of [`package_dir`], refusing to grow past [`MAX_ARCHIVE_BYTES`].
struct Capped {
    inner: flate2::write::GzEncoder<Vec<u8>>,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.inner.get_ref().len() > MAX_ARCHIVE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "chart too large",
            ));
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Collects the files under `dir` (relative path `rel`), sorted.
fn walk(
    root: &Path,
    dir: &Path,
    rel: &str,
    ignore: &Ignore,
    ancestors: &mut Vec<PathBuf>,
    files: &mut Vec<(String, PathBuf)>,
    total: &mut u64,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(format!("could not read {}", dir.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(io_err(format!("could not read {}", dir.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            return Err(invalid(format!(
                "{}: file names of a chart must be UTF-8",
                entry.path().display()
            )));
        };
        let path = entry.path();
        let child_rel = if rel.is_empty() {
            file_name.to_string()
        } else {
            format!("{rel}/{file_name}")
        };
        let mut meta =
            std::fs::symlink_metadata(&path).map_err(io_err(format!("could not read {}", path.display())))?;
        let mut target = path.clone();
        if meta.file_type().is_symlink() {
            target = path
                .canonicalize()
                .map_err(|_| invalid(format!("{child_rel}: a broken symlink")))?;
            if !target.starts_with(root) {
                return Err(invalid(format!(
                    "{child_rel}: a symlink pointing outside the chart directory"
                )));
            }
            meta =
                std::fs::metadata(&target).map_err(io_err(format!("could not read {}", target.display())))?;
        }
        let is_dir = meta.is_dir();
        if ignore.ignores(&child_rel, file_name, is_dir) {
            continue;
        }
        if is_dir {
            if ancestors.contains(&target) {
                return Err(invalid(format!("{child_rel}: a symlink loop")));
            }
            ancestors.push(target.clone());
            walk(root, &target, &child_rel, ignore, ancestors, files, total)?;
            ancestors.pop();
        } else if meta.is_file() {
            *total += meta.len();
            if *total > MAX_CHART_DIR_BYTES {
                return Err(invalid(format!(
                    "the chart's files weigh more than {MAX_CHART_DIR_BYTES} bytes"
                )));
            }
            files.push((child_rel, target));
        } else {
            return Err(invalid(format!("{child_rel}: not a regular file or directory")));
        }
    }
    Ok(())
}

/// `.helmignore` rules (a subset of gitignore; the last matching rule wins).
#[derive(Default)]
struct Ignore {
    rules: Vec<IgnoreRule>,
}

struct IgnoreRule {
    pattern: String,
    negate: bool,
    dir_only: bool,
    /// Matched against the relative path rather than the base name.
    anchored: bool,
}

impl Ignore {
    fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let mut line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let negate = line.starts_with('!');
            if negate {
                line = &line[1..];
            }
            let dir_only = line.ends_with('/');
            let line = line.trim_end_matches('/');
            let anchored = line.contains('/');
            let pattern = line.trim_start_matches('/').to_string();
            if pattern.is_empty() {
                continue;
            }
            rules.push(IgnoreRule {
                pattern,
                negate,
                dir_only,
                anchored,
            });
        }
        Ignore { rules }
    }

    fn ignores(&self, rel: &str, base: &str, is_dir: bool) -> bool {
        let mut ignored = false;
        for rule in &self.rules {
            if rule.dir_only && !is_dir {
                continue;
            }
            let subject = if rule.anchored { rel } else { base };
            if glob(rule.pattern.as_bytes(), subject.as_bytes()) {
                ignored = !rule.negate;
            }
        }
        ignored
    }
}

/// `filepath.Match`-style globbing: `*` and `?` do not match `/`; `[…]` classes (`^`/`!` negates).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob(rest, &text[i..]) {
                    return true;
                }
                if i == text.len() || text[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some((b'?', rest)) => match text.split_first() {
            Some((c, t)) if *c != b'/' => glob(rest, t),
            _ => false,
        },
        Some((b'[', rest)) => {
            let Some((c, t)) = text.split_first() else {
                return false;
            };
            let (negated, mut class) = match rest.first() {
                Some(b'^') | Some(b'!') => (true, &rest[1..]),
                _ => (false, rest),
            };
            let mut matched = false;
            let mut first = true;
            loop {
                match class {
                    [] => return false,
                    [b']', tail @ ..] if !first => {
                        class = tail;
                        break;
                    }
                    [lo, b'-', hi, tail @ ..] if *hi != b']' => {
                        matched |= lo <= c && c <= hi;
                        class = tail;
                    }
                    [x, tail @ ..] => {
                        matched |= x == c;
                        class = tail;
                    }
                }
                first = false;
            }
            matched != negated && *c != b'/' && glob(class, t)
        }
        Some((b'\\', [escaped, rest @ ..])) => text.first() == Some(escaped) && glob(rest, &text[1..]),
        Some((p, rest)) => text.first() == Some(p) && glob(rest, &text[1..]),
    }
}
