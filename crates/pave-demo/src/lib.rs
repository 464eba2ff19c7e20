//! pave-demo: the workload pave deploys in its walkthrough and tests.
//!
//! A small HTTP server on `127.0.0.1:$PORT` (or `$DEMO_LISTEN_HOST:$PORT`):
//!
//! - `GET /` greets with the pid, `$PAVE_REVISION` and the names of the
//!   `FEATURE_*` variables;
//! - `GET /healthz` checks `$DATABASE_URL` (PostgreSQL, `SELECT 1`) and
//!   `$REDIS_URL` (AUTH + PING) for real, every time: 200 when every configured
//!   one answers, 503 naming the one that does not.
//!
//! It misbehaves on request: `DEMO_FAIL_AT_START=1` exits 1 before listening,
//! `DEMO_CRASH_AFTER_SECS=N` exits 1 after N seconds, `DEMO_LEAK_MB_PER_SEC=N`
//! keeps N more MiB resident every second, and `DEMO_LEAK_UP_TO_MB=M` stops it
//! growing once it holds M MiB (kept resident), so that a limit above M really
//! is enough. While the file named by `DEMO_UNREADY_FILE` exists (or that
//! name followed by `.N`, for replica `$PAVE_REPLICA`=N only), `/healthz`
//! answers 503: a replica that runs but fails its readiness probe. SIGTERM (or SIGINT) stops it gracefully with status 0. Nothing is
//! connected at start, so starting costs only binding the socket. Passwords
//! never appear in its output.

mod redis;
mod urls;

use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// How long /healthz waits for a PostgreSQL connection.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// One line to stdout; a closed stdout is not worth dying for.
fn log(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// One line to stderr.
fn log_err(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "pave-demo: {line}");
}

/// What the environment asks for.
struct Config {
    host: String,
    port: u16,
    database_url: Option<String>,
    redis_url: Option<String>,
    crash_after: Option<Duration>,
    leak_mib_per_sec: Option<usize>,
    /// The most the leak holds, in MiB (`None`: no end).
    leak_up_to_mib: Option<usize>,
    /// `/healthz` fails while this file exists.
    unready_file: Option<std::path::PathBuf>,
}

/// A variable's value, `None` when unset or empty; not UTF-8 is an error.
fn var(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

fn parsed<T: FromStr>(name: &str, what: &str) -> Result<Option<T>, String> {
    match var(name)? {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={v:?} is not {what}")),
    }
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let port = match parsed::<u16>("PORT", "a port number (1-65535)")? {
            None => return Err("PORT is not set; set it to the port to listen on".into()),
            Some(0) => return Err("PORT=0 is not a port number (1-65535)".into()),
            Some(p) => p,
        };
        let crash_after = match parsed::<f64>("DEMO_CRASH_AFTER_SECS", "a number of seconds")? {
            None => None,
            Some(s) => Some(
                Duration::try_from_secs_f64(s)
                    .map_err(|_| format!("DEMO_CRASH_AFTER_SECS={s} is not a duration"))?,
            ),
        };
        let leak_up_to_mib = match parsed::<usize>("DEMO_LEAK_UP_TO_MB", "a whole number of MiB")? {
            Some(0) => return Err("DEMO_LEAK_UP_TO_MB=0 is not a positive whole number of MiB".into()),
            m => m,
        };
        Ok(Config {
            host: var("DEMO_LISTEN_HOST")?.unwrap_or_else(|| "127.0.0.1".into()),
            port,
            database_url: var("DATABASE_URL")?,
            redis_url: var("REDIS_URL")?,
            crash_after,
            leak_mib_per_sec: parsed("DEMO_LEAK_MB_PER_SEC", "a whole number of MiB")?.filter(|&n| n > 0),
            leak_up_to_mib,
            unready_file: var("DEMO_UNREADY_FILE")?.map(std::path::PathBuf::from),
        })
    }
}

fn flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref().map(str::trim),
        Ok("1" | "true" | "yes" | "on")
    )
}

/// The dependencies /healthz checks.
struct App {
    postgres: Option<Postgres>,
    redis: Option<redis::Target>,
    /// Passwords from the URLs, hidden from every message we produce.
    secrets: Vec<String>,
    unready_file: Option<std::path::PathBuf>,
}

struct Postgres {
    pool: PgPool,
    host: String,
    port: u16,
}

enum Check {
    NotConfigured,
    Ok,
    Failed(String),
}

impl App {
    fn new(config: &Config) -> Result<Self, String> {
        let mut secrets = Vec::new();
        let postgres = match &config.database_url {
            None => None,
            Some(url) => {
                secrets.extend(urls::secrets_of(url));
                let options = PgConnectOptions::from_str(url).map_err(|e| {
                    urls::scrub(
                        &format!("DATABASE_URL={} is not usable: {e}", urls::redact(url)),
                        &secrets,
                    )
                })?;
                let (host, port) = (options.get_host().to_owned(), options.get_port());
                // Lazy: nothing is connected until the first /healthz.
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .min_connections(0)
                    .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                    .idle_timeout(Duration::from_secs(60))
                    .connect_lazy_with(options);
                Some(Postgres { pool, host, port })
            }
        };
        let redis = match &config.redis_url {
            None => None,
            Some(url) => {
                secrets.extend(urls::secrets_of(url));
                Some(redis::Target::parse(url).map_err(|e| {
                    urls::scrub(
                        &format!("REDIS_URL={} is not usable: {e}", urls::redact(url)),
                        &secrets,
                    )
                })?)
            }
        };
        Ok(App {
            postgres,
            redis,
            secrets,
            unready_file: config.unready_file.clone(),
        })
    }

    async fn check_postgres(&self) -> Check {
        let Some(pg) = &self.postgres else {
            return Check::NotConfigured;
        };
        let query = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&pg.pool);
        // The acquire timeout bounds connecting; this bounds the query too.
        let result = match tokio::time::timeout(PG_ACQUIRE_TIMEOUT * 2, query).await {
            Ok(Ok(1)) => Ok(()),
            Ok(Ok(n)) => Err(format!("SELECT 1 returned {n}")),
            Ok(Err(sqlx::Error::PoolTimedOut)) => Err(format!(
                "no connection to {}:{} within {}s ({})",
                pg.host,
                pg.port,
                PG_ACQUIRE_TIMEOUT.as_secs(),
                probe(&pg.host, pg.port).await
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "SELECT 1 did not finish within {}s",
                (PG_ACQUIRE_TIMEOUT * 2).as_secs()
            )),
        };
        match result {
            Ok(()) => Check::Ok,
            Err(e) => Check::Failed(urls::scrub(&e, &self.secrets)),
        }
    }

    async fn check_redis(&self) -> Check {
        match &self.redis {
            None => Check::NotConfigured,
            Some(t) => match redis::check(t).await {
                Ok(()) => Check::Ok,
                Err(e) => Check::Failed(urls::scrub(&e, &self.secrets)),
            },
        }
    }
}

/// Why PostgreSQL might not have answered: what a plain TCP connect says.
async fn probe(host: &str, port: u16) -> String {
    if host.starts_with('/') {
        return "unix socket".into();
    }
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(Duration::from_millis(500), connect).await {
        Ok(Ok(_)) => "the port accepts TCP connections, but PostgreSQL did not answer".into(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "TCP connect timed out".into(),
    }
}

/// Text for the request log line, beside the status.
#[derive(Clone)]
struct LogNote(String);

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let mine = app.unready_file.as_ref().map(|f| {
        let replica = std::env::var("PAVE_REPLICA").unwrap_or_default();
        [
            f.clone(),
            std::path::PathBuf::from(format!("{}.{replica}", f.display())),
        ]
    });
    if let Some(f) = mine.iter().flatten().find(|f| f.exists()) {
        let error = format!("unready as asked: {} exists", f.display());
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "error": error})),
        )
            .into_response();
    }
    let (pg, redis) = tokio::join!(app.check_postgres(), app.check_redis());
    let mut checks = Map::new();
    let mut failed = Vec::new();
    for (name, check) in [("postgres", pg), ("redis", redis)] {
        let text = match check {
            Check::NotConfigured => "not configured".to_owned(),
            Check::Ok => "ok".to_owned(),
            Check::Failed(e) => {
                failed.push(format!("{name}: {e}"));
                format!("error: {e}")
            }
        };
        checks.insert(name.to_owned(), Value::String(text));
    }
    if failed.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ok", "checks": checks}))).into_response()
    } else {
        let error = failed.join("; ");
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "error", "error": error, "checks": checks})),
        )
            .into_response();
        resp.extensions_mut().insert(LogNote(error));
        resp
    }
}

async fn root() -> Json<Value> {
    let mut features: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| k.starts_with("FEATURE_"))
        .collect();
    features.sort();
    Json(json!({
        "message": "hello from pave-demo",
        "pid": std::process::id(),
        "revision": std::env::var("PAVE_REVISION").ok(),
        "features": features,
    }))
}

async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match resp.extensions().get::<LogNote>() {
        Some(LogNote(note)) => log(format_args!(
            "{method} {path} {} {ms:.1}ms ({note})",
            resp.status().as_u16()
        )),
        None => log(format_args!(
            "{method} {path} {} {ms:.1}ms",
            resp.status().as_u16()
        )),
    }
    resp
}

/// How many MiB the leak adds next: `per_sec`, but never past `up_to`.
fn leak_step(held: usize, per_sec: usize, up_to: Option<usize>) -> usize {
    match up_to {
        None => per_sec,
        Some(max) => per_sec.min(max.saturating_sub(held)),
    }
}

/// Keeps `mib` more MiB resident every second, until the process ends or it
/// holds `up_to` MiB; what it holds is kept until the process ends.
fn leak(mib: usize, up_to: Option<usize>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("leak".into())
        .spawn(move || {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            let mut held = 0usize;
            loop {
                let step = leak_step(held, mib, up_to);
                if step == 0 {
                    log(format_args!(
                        "leak: holding {held} MiB, the most asked for (DEMO_LEAK_UP_TO_MB)"
                    ));
                    break;
                }
                // Non-zero bytes: every page is written, so it is really resident.
                hoard.push(std::hint::black_box(vec![0xA5u8; step << 20]));
                held += step;
                log(format_args!("leak: holding {held} MiB"));
                std::thread::sleep(Duration::from_secs(1));
            }
            // Kept (and so resident, written once) until the process ends.
            loop {
                std::hint::black_box(&hoard);
                std::thread::park();
            }
        })
        .context("cannot start the leak thread")?;
    Ok(())
}

async fn serve(config: Config, app: App) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    let addr = listener.local_addr().context("no local address")?;

    let describe = |url: &Option<String>| url.as_deref().map_or("not configured".into(), urls::redact);
    let mut extras = String::new();
    if let Some(d) = config.crash_after {
        extras.push_str(&format!("; crashing after {}s", d.as_secs_f64()));
    }
    if let Some(n) = config.leak_mib_per_sec {
        extras.push_str(&format!("; leaking {n} MiB/s"));
        if let Some(m) = config.leak_up_to_mib {
            extras.push_str(&format!(" up to {m} MiB"));
        }
    }
    log(format_args!(
        "pave-demo listening on {addr} (pid {}; postgres: {}; redis: {}{extras})",
        std::process::id(),
        describe(&config.database_url),
        describe(&config.redis_url),
    ));

    if let Some(after) = config.crash_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            log_err(format_args!(
                "crashing as asked (DEMO_CRASH_AFTER_SECS={})",
                after.as_secs_f64()
            ));
            std::process::exit(1);
        });
    }
    if let Some(mib) = config.leak_mib_per_sec {
        leak(mib, config.leak_up_to_mib)?;
    }

    let app = Arc::new(app);
    let router = Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn(log_request))
        .with_state(app.clone());
    let shutdown = async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        log(format_args!("{name}: shutting down"));
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("server failed")?;
    if let Some(pg) = &app.postgres {
        pg.pool.close().await;
    }
    log(format_args!("stopped"));
    Ok(())
}

/// Runs the demo service until SIGTERM; returns the process exit status.
pub fn run() -> u8 {
    if flag("DEMO_FAIL_AT_START") {
        log_err(format_args!("failing at start as asked (DEMO_FAIL_AT_START=1)"));
        return 1;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            log_err(format_args!("{e}"));
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            log_err(format_args!("cannot start the async runtime: {e}"));
            return 1;
        }
    };
    // The (lazy) pool spawns its maintenance task, so it needs the runtime.
    let app = {
        let _in_runtime = runtime.enter();
        match App::new(&config) {
            Ok(a) => a,
            Err(e) => {
                log_err(format_args!("{e}"));
                return 2;
            }
        }
    };
    match runtime.block_on(serve(config, app)) {
        Ok(()) => 0,
        Err(e) => {
            log_err(format_args!("{e:#}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::leak_step;

    #[test]
    fn the_leak_stops_at_its_ceiling() {
        assert_eq!(leak_step(0, 40, None), 40);
        assert_eq!(leak_step(4000, 40, None), 40);
        // 40, 40, then the 16 left, then nothing.
        let mut held = 0;
        let steps: Vec<usize> = std::iter::from_fn(|| {
            let s = leak_step(held, 40, Some(96));
            held += s;
            (s > 0).then_some(s)
        })
        .collect();
        assert_eq!((steps, held), (vec![40, 40, 16], 96));
        assert_eq!(leak_step(0, 40, Some(10)), 10);
    }
}
