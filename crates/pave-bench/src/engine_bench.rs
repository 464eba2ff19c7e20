//! No-op actions through store + engine + embedded agent, and the store's raw
//! single-row commit rate to compare them with.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pave_agent::embedded::AgentDirs;
use pave_core::ActionState;
use pave_engine::{AgentHub, AllowAll, Engine, EngineConfig, Submission};
use pave_store::{ActionFilter, DynStore};

use crate::cpu;
use crate::timed_store::{TimedStore, Totals};

/// How often the completion check looks at the queue once everything is submitted.
const SETTLE_POLL: Duration = Duration::from_millis(2);
/// Page size when counting actions by state after the run.
const COUNT_PAGE: i64 = 1000;

/// What the engine run measured.
pub struct EngineFigures {
    /// Actions submitted.
    pub actions: u32,
    /// First submit to the last action reaching a final state.
    pub elapsed: Duration,
    /// First submit to the last submit returning.
    pub submit_phase: Duration,
    /// Actions that ended `succeeded`.
    pub succeeded: u64,
    /// Actions that ended in another state, by state.
    pub other: BTreeMap<String, u64>,
    /// How long each `submit` took, sorted.
    pub submit_latencies: Vec<Duration>,
    /// CPU use from the first submit to the end of the run.
    pub cpu: Option<cpu::Usage>,
    /// The engine's store calls from the first submit to the end of the run.
    pub store: Totals,
}

impl EngineFigures {
    /// Successful actions per second over the whole run.
    pub fn actions_per_sec(&self) -> f64 {
        self.succeeded as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`th percentile (0–100) of the submit latencies (nearest rank).
    pub fn submit_latency(&self, p: usize) -> Duration {
        let v = &self.submit_latencies;
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p.min(100) * (v.len() - 1) + 50) / 100;
        v[rank.min(v.len() - 1)]
    }
}

/// Runs `actions` no-op actions from `concurrency` submitters through an engine
/// with `workers` slots over `store`, and waits until every one has finished.
pub async fn bench_engine(
    store: DynStore,
    agent_root: &Path,
    actions: u32,
    concurrency: usize,
    workers: usize,
    timeout: Duration,
) -> Result<EngineFigures> {
    let agent = pave_agent::spawn_embedded(AgentDirs {
        work_dir: agent_root.join("work"),
        state_dir: agent_root.join("agent"),
        resources_dir: agent_root.join("resources"),
        workloads_dir: agent_root.join("workloads"),
        shim_command: vec!["pave-shim".into()],
    })
    .context("could not start the embedded agent")?;
    // The engine's calls are counted; the benchmark's own polling is not.
    let (timed, counters) = TimedStore::wrap(store.clone());
    let mut agents = HashMap::new();
    agents.insert("local".to_string(), AgentHub::start(agent).await);
    let engine = Engine::new(
        timed,
        agents,
        Box::new(AllowAll),
        EngineConfig {
            workers,
            ..EngineConfig::default()
        },
    );
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(Duration::from_secs(30)).await })
    };
    let figures = drive(&engine, &store, actions, concurrency, timeout, &|| {
        counters.totals()
    })
    .await;
    engine.shutdown();
    if tokio::time::timeout(Duration::from_secs(30), runner)
        .await
        .is_err()
    {
        eprintln!("warning: the engine did not stop within 30 s after the benchmark");
    }
    figures
}

async fn drive(
    engine: &Engine,
    store: &DynStore,
    actions: u32,
    concurrency: usize,
    timeout: Duration,
    totals: &dyn Fn() -> Totals,
) -> Result<EngineFigures> {
    let concurrency = concurrency.clamp(1, actions.max(1) as usize);
    let per = actions as usize / concurrency;
    let extra = actions as usize % concurrency;
    let cpu_before = cpu::snapshot();
    let store_before = totals();
    let started = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let engine = engine.clone();
        let count = per + usize::from(i < extra);
        submitters.spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                let (action, created) = engine
                    .submit(Submission {
                        kind: "noop".into(),
                        env: "local".into(),
                        input: serde_json::json!({}),
                        principal: pave_core::rbac::Principal::builtin_admin(),
                        idempotency_key: None,
                    })
                    .await
                    .context("submit failed")?;
                latencies.push(t.elapsed());
                if !created || action.state != ActionState::Queued {
                    bail!(
                        "submit returned action {} in state {} (created: {created}), expected a new queued action",
                        action.id,
                        action.state
                    );
                }
            }
            Ok(latencies)
        });
    }
    let mut submit_latencies = Vec::with_capacity(actions as usize);
    while let Some(joined) = submitters.join_next().await {
        submit_latencies.extend(joined.context("a submitter task panicked")??);
    }
    let submit_phase = started.elapsed();

    // Every action is committed (queued) now, and none is added any more: the run
    // is over when no action is in a non-final state.
    let deadline = started + timeout;
    loop {
        if !any_unfinished(store).await? {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "not every action finished within {} s (raise --timeout)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_before.zip(cpu::snapshot()).map(|(b, a)| cpu::usage(&b, &a));
    let store_calls = totals().since(&store_before);
    submit_latencies.sort();

    let mut succeeded = 0;
    let mut other = BTreeMap::new();
    for &state in ActionState::ALL {
        let n = count_state(store, state).await?;
        if state == ActionState::Succeeded {
            succeeded = n;
        } else if n > 0 {
            other.insert(state.to_string(), n);
        }
    }
    Ok(EngineFigures {
        actions,
        elapsed,
        submit_phase,
        succeeded,
        other,
        submit_latencies,
        cpu,
        store: store_calls,
    })
}

/// Whether some action is not in a final state. Queued is checked before
/// running, and both before the rest, so that an action moving on between two
/// checks is not missed (the states only move forward here).
async fn any_unfinished(store: &DynStore) -> Result<bool> {
    let order = [ActionState::Queued, ActionState::Running].into_iter().chain(
        ActionState::ALL
            .iter()
            .copied()
            .filter(|s| !s.is_terminal() && !matches!(s, ActionState::Queued | ActionState::Running)),
    );
    for state in order {
        let page = store
            .list_actions(&ActionFilter {
                state: Some(state),
                limit: 1,
                ..ActionFilter::default()
            })
            .await
            .context("could not list actions")?;
        if !page.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Actions in `state`, counted page by page (the store has no count).
async fn count_state(store: &DynStore, state: ActionState) -> Result<u64> {
    let mut n = 0u64;
    let mut before = None;
    loop {
        let page = store
            .list_actions(&ActionFilter {
                state: Some(state),
                before: before.clone(),
                limit: COUNT_PAGE,
                ..ActionFilter::default()
            })
            .await
            .context("could not list actions")?;
        n += page.len() as u64;
        match page.last() {
            Some(last) if i64::try_from(page.len()).is_ok_and(|n| n == COUNT_PAGE) => {
                before = Some(last.id.clone())
            }
            _ => return Ok(n),
        }
    }
}

/// What the raw commit run measured.
pub struct CommitFigures {
    pub commits: u32,
    pub elapsed: Duration,
}

impl CommitFigures {
    pub fn commits_per_sec(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64()
    }
}

/// `n` single-row commits, each its own transaction, with `store`'s settings.
pub async fn bench_commits(store: &DynStore, n: u32) -> Result<CommitFigures> {
    let elapsed = store
        .bench_single_row_commits(n)
        .await
        .context("single-row commit benchmark failed")?;
    Ok(CommitFigures { commits: n, elapsed })
}

/// `n` single-row INSERTs inside one transaction on a connection with the
/// store's SQLite settings: what one statement costs without a commit, the
/// unit the engine pays many of per action.
pub async fn sqlite_statements_in_one_tx(path: &Path, n: u32) -> Result<CommitFigures> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .with_context(|| format!("could not open {}", path.display()))?;
    let took = statements_in_one_tx(&pool, n).await;
    pool.close().await;
    took
}

/// The same on PostgreSQL.
pub async fn pg_statements_in_one_tx(url: &str, n: u32) -> Result<CommitFigures> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .context("could not connect to PostgreSQL")?;
    let took = statements_in_one_tx(&pool, n).await;
    pool.close().await;
    took
}

async fn statements_in_one_tx<DB>(pool: &sqlx::Pool<DB>, n: u32) -> Result<CommitFigures>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query("DROP TABLE IF EXISTS bench_statements")
        .execute(pool)
        .await
        .context("could not prepare the statement benchmark")?;
    sqlx::query("CREATE TABLE bench_statements (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(pool)
        .await
        .context("could not prepare the statement benchmark")?;
    let mut tx = pool.begin().await.context("could not begin a transaction")?;
    let started = Instant::now();
    for i in 0..n {
        sqlx::query("INSERT INTO bench_statements (id, v) VALUES ($1, $2)")
            .bind(i as i64)
            .bind("x")
            .execute(&mut *tx)
            .await
            .context("INSERT failed")?;
    }
    tx.commit().await.context("COMMIT failed")?;
    let elapsed = started.elapsed();
    sqlx::query("DROP TABLE bench_statements")
        .execute(pool)
        .await
        .context("could not clean up the statement benchmark")?;
    Ok(CommitFigures { commits: n, elapsed })
}
