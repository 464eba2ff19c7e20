//! Group commit: requests from many concurrent callers are applied in one
//! transaction, and each caller waits for the commit that holds its request.
//! "Written before acted on" stays true for every caller, while the cost of a
//! commit is shared by everybody who asked in the meantime.
//!
//! The writer runs on a thread of its own: a transaction awaits the database
//! once per statement, and on the shared runtime each of those wake-ups would
//! queue behind every other task of the server.

use pave_core::Action;
use tokio::sync::{mpsc, oneshot};

use crate::{DynStore, OpResult, Result, StoreError, WriteOp};

/// Most requests in one transaction.
const MAX_BATCH: usize = 256;

struct ClaimArgs {
    node: String,
    limit: i64,
    lease_ms: i64,
    resume_own: bool,
}

enum Job {
    Write(Vec<WriteOp>, oneshot::Sender<Result<Vec<OpResult>>>),
    Claim(ClaimArgs, oneshot::Sender<Result<Vec<Action>>>),
}

/// A handle to the writer thread.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the writer thread over `store`.
    pub fn spawn(store: DynStore) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(4096);
        let run = move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(writer_loop(store, rx)),
            Err(e) => tracing::error!(error = %e, "could not start the store writer"),
        };
        if let Err(e) = std::thread::Builder::new()
            .name("pave-store-writer".into())
            .spawn(run)
        {
            tracing::error!(error = %e, "could not start the store writer thread");
        }
        Batcher { tx }
    }

    /// Applies one request atomically; returns once it is committed.
    pub async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Write(ops, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// [`crate::Store::claim`], run on the writer thread between batches.
    pub async fn claim(
        &self,
        node: &str,
        limit: i64,
        lease_ms: i64,
        resume_own: bool,
    ) -> Result<Vec<Action>> {
        let (reply, answer) = oneshot::channel();
        let args = ClaimArgs {
            node: node.to_string(),
            limit,
            lease_ms,
            resume_own,
        };
        self.tx
            .send(Job::Claim(args, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn writer_loop(store: DynStore, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        let mut claims = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Write(o, r) => {
                    ops.push(o);
                    replies.push(r);
                }
                Job::Claim(a, r) => claims.push((a, r)),
            }
        }
        if !ops.is_empty() {
            write_batch(&store, ops, replies).await;
        }
        for (a, reply) in claims {
            let _ = reply.send(store.claim(&a.node, a.limit, a.lease_ms, a.resume_own).await);
        }
    }
}

async fn write_batch(
    store: &DynStore,
    ops: Vec<Vec<WriteOp>>,
    replies: Vec<oneshot::Sender<Result<Vec<OpResult>>>>,
) {
    match store.write(ops.clone()).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            // The shared transaction failed as a whole: try each request alone
            // so that one bad request does not fail the others.
            tracing::warn!(error = %e, requests = ops.len(), "batched write failed; retrying one by one");
            for (ops, reply) in ops.into_iter().zip(replies) {
                let answer = match store.write(vec![ops]).await {
                    Ok(mut a) => a.pop().unwrap_or(Err(StoreError::WriterGone)),
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            }
        }
    }
}
