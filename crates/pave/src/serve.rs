//! `pave serve`: the control plane.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pave_agent::embedded::AgentDirs;
use pave_core::time::now_ms;
use pave_core::vault::MasterKey;
use pave_core::{ids, AuditDraft};
use pave_engine::{AgentHub, AllowAll, Engine, EngineConfig};
use pave_store::{TokenRecord, WriteOp};

use crate::cli::ServeArgs;

/// A held lock on the data directory, released when the process ends.
struct DataDirLock(#[allow(dead_code)] std::fs::File);

#[allow(unsafe_code)]
fn lock_data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    use std::os::fd::AsRawFd;
    let path = dir.join("pave.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("could not open {}", path.display()))?;
    // SAFETY: flock(2) on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another pave serve is using the data directory {} (its lock {} is held)",
            dir.display(),
            path.display()
        );
    }
    Ok(DataDirLock(f))
}

fn write_secret_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Reads a file created on first start, creating it with `make` if missing.
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok((s.trim().to_string(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make();
            write_secret_file(path, &value)?;
            Ok((value, true))
        }
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

#[allow(unsafe_code)]
fn set_private_umask() {
    // SAFETY: umask(2) only changes this process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// How an agent of this binary starts the supervisor of one replica.
pub fn shim_command() -> anyhow::Result<Vec<String>> {
    let exe =
        std::env::current_exe().context("could not find the pave executable (it supervises workloads)")?;
    Ok(vec![exe.display().to_string(), "shim".to_string()])
}

/// Everything `serve` sets up before it listens.
pub struct ControlPlane {
    pub engine: Engine,
    pub data_dir: PathBuf,
    _lock: DataDirLock,
}

/// Opens the data directory and store, and starts the embedded agent and the engine.
pub async fn start(args: &ServeArgs) -> anyhow::Result<ControlPlane> {
    set_private_umask();
    let data_dir = args.data_dir.as_path();
    let blueprints = crate::blueprints::load(args.blueprints.as_deref())?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("could not create data directory {}", data_dir.display()))?;
    // Absolute from here on: resource servers and workload shims run in
    // directories of their own, where a relative path would point elsewhere.
    let data_dir = &std::fs::canonicalize(data_dir)
        .with_context(|| format!("could not resolve data directory {}", data_dir.display()))?;
    // Traversable but not listable: resource servers run as other users (PostgreSQL
    // as `postgres`) and must reach their directories below; every secret file
    // in it is 0600, and the umask set at start keeps new files private.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o711))?;
    let lock = lock_data_dir(data_dir)?;
    let (node_id, _) = read_or_create(&data_dir.join("node.id"), ids::new_id)?;
    let url = match args.database_url.as_deref() {
        Some(u) => u.to_string(),
        None => format!("sqlite://{}", data_dir.join("pave.db").display()),
    };
    let store = pave_store::open(&url)
        .await
        .with_context(|| format!("could not open the store at {}", pave_store::redact_url(&url)))?;

    // The vault's master key; a rotation cut short is finished or undone first.
    let key_path = data_dir.join("master.key");
    pave_engine::recover_key_file(&store, &key_path)
        .await
        .context("could not recover from an interrupted master key rotation")?;
    let (master_hex, _) = read_or_create(&key_path, MasterKey::generate_hex)?;
    let master_key = MasterKey::from_hex(&master_hex)
        .with_context(|| format!("{} is not a valid master key", key_path.display()))?;

    let agent = pave_agent::spawn_embedded(AgentDirs {
        work_dir: data_dir.join("work"),
        state_dir: data_dir.join("agent"),
        resources_dir: data_dir.join("resources"),
        workloads_dir: data_dir.join("workloads"),
        shim_command: shim_command()?,
    })
    .context("could not start the embedded agent")?;
    let mut agents = HashMap::new();
    agents.insert("local".to_string(), AgentHub::start(agent).await);
    // The built-in pack, then the directory's modules; those applied through
    // the API are added from the store below.
    let mut policy_files = pave_policy::default_pack();
    if let Some(dir) = args.policies.as_deref() {
        policy_files
            .extend(pave_policy::load_dir(dir).with_context(|| format!("policies in {}", dir.display()))?);
    }
    let engine = Engine::new(
        store,
        agents,
        Box::new(AllowAll),
        EngineConfig {
            policy_files,
            node_id,
            workers: args.workers,
            master_key: Some(master_key),
            master_key_path: Some(key_path),
            health_every: args.health_every,
            blueprints,
            approval_ttl: args.approval_ttl,
            verify_window: args.verify_window,
            agent_lost_after: args.agent_lost_after,
            remediation_every: args.remediation_every.max(Duration::from_millis(50)),
            clusters_dir: Some(data_dir.join("clusters")),
            ..EngineConfig::default()
        },
    );
    engine
        .load_policies()
        .await
        .context("the policies do not compile; pave does not start without its policies")?;
    engine
        .start_clusters()
        .await
        .context("could not read the Kubernetes targets")?;
    Ok(ControlPlane {
        engine,
        data_dir: data_dir.to_path_buf(),
        _lock: lock,
    })
}

/// Creates the admin token on first start: stored as a hash, the secret written
/// to `admin.token` (0600) and printed once.
async fn ensure_admin_token(cp: &ControlPlane) -> anyhow::Result<()> {
    let path = cp.data_dir.join("admin.token");
    if path.exists() {
        return Ok(());
    }
    let secret = ids::new_secret_token();
    let record = TokenRecord {
        id: ids::new_id(),
        name: "admin (created on first start)".into(),
        subject: "admin".into(),
        hash: pave_api::hash_token(&secret),
        created_at: now_ms(),
        expires_at: None,
        revoked_at: None,
    };
    let id = record.id.clone();
    cp.engine
        .writer()
        .write(vec![
            WriteOp::InsertToken(record),
            WriteOp::Audit(AuditDraft {
                actor: "system".into(),
                verb: "token.create".into(),
                object: format!("token/{id}"),
                summary: "admin token created on first start".into(),
                details: serde_json::json!({ "subject": "admin" }),
            }),
        ])
        .await?;
    write_secret_file(&path, &format!("{secret}\n"))?;
    println!(
        "Admin token (shown once; also saved to {}):\n  {secret}",
        path.display()
    );
    Ok(())
}

pub(crate) fn init_logging(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => bail!("--log-format must be text or json, not `{other}`"),
    }
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        std::future::pending::<()>().await;
        return "";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The agent listener's TLS: the files given, or a CA kept under
/// `<data-dir>/tls/` with a certificate issued at each start for the names
/// agents may dial (the listen address included, when it is a specific one).
fn agent_tls(args: &ServeArgs, data_dir: &Path) -> anyhow::Result<pave_agent::tls::ServerTls> {
    use pave_agent::tls::ServerTls;
    Ok(match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => ServerTls::from_files(cert, key)?,
        _ => {
            let mut sans = args.tls_sans.clone();
            let ip = args.agent_listen.ip();
            if !ip.is_unspecified() {
                sans.push(ip.to_string());
            }
            ServerTls::generated(&data_dir.join("tls"), &sans)?
        }
    })
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    init_logging(&args.log_format)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let cp = start(&args).await?;
    ensure_admin_token(&cp).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let agent_listener = tokio::net::TcpListener::bind(&args.agent_listen)
        .await
        .with_context(|| {
            format!(
                "could not listen for agents on {} (choose another address with --agent-listen)",
                args.agent_listen
            )
        })?;
    let tls = agent_tls(&args, &cp.data_dir)?;
    let agent_addr = agent_listener.local_addr()?;
    tokio::spawn(pave_engine::agent_listener::serve(
        cp.engine.clone(),
        agent_listener,
        tls.config.clone(),
    ));
    println!(
        "Agents connect to wss://{agent_addr} (CA fingerprint {}{})",
        tls.fingerprint,
        match &args.tls_cert {
            Some(_) => String::new(),
            None => format!("; CA file {}", cp.data_dir.join("tls").join("ca.pem").display()),
        }
    );
    let ready = Arc::new(AtomicBool::new(false));
    let app = pave_api::router(pave_api::AppState {
        engine: cp.engine.clone(),
        metrics,
        ready: ready.clone(),
    });
    let engine = cp.engine.clone();
    let grace = args.shutdown_grace;
    let worker = tokio::spawn(async move { engine.run(grace).await });
    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        listen = %args.listen,
        store = cp.engine.store().backend(),
        data_dir = %cp.data_dir.display(),
        ready_ms = started.elapsed().as_millis() as u64,
        "pave is ready"
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let stop_http = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop_http.cancelled().await })
            .await
    });
    let signal = shutdown_signal().await;
    tracing::info!(
        signal,
        "shutting down: no new work is claimed; running steps may finish"
    );
    ready.store(false, Ordering::Relaxed);
    cp.engine.shutdown();
    if let Err(e) = worker.await {
        tracing::error!(error = %e, "engine stopped abnormally");
    }
    stop.cancel();
    // Open event streams would hold the HTTP server forever; they get a moment to close.
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        tracing::info!("closing remaining connections");
    }
    tracing::info!("stopped");
    Ok(())
}
