//! Group commit: requests from many concurrent callers are applied in one
//! transaction, and each caller waits for the commit that holds its request.
//! "Written before acted on" stays true for every caller, while the cost of a
//! commit is shared by everybody who asked in the meantime.

use tokio::sync::{mpsc, oneshot};

use crate::{DynStore, OpResult, Result, StoreError, WriteOp};

/// Most requests in one transaction.
const MAX_BATCH: usize = 256;

type Request = (Vec<WriteOp>, oneshot::Sender<Result<Vec<OpResult>>>);

/// A handle to the batching writer task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
}

impl Batcher {
    /// Starts the writer task over `store`.
    pub fn spawn(store: DynStore) -> Self {
        let (tx, mut rx) = mpsc::channel::<Request>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (ops, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut batch).into_iter().unzip();
                match store.write(ops.clone()).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(answer);
                        }
                    }
                    Err(e) => {
                        // The shared transaction failed as a whole: try each request
                        // alone so that one bad request does not fail the others.
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
        });
        Batcher { tx }
    }

    /// Applies one request atomically; returns once it is committed.
    pub async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<OpResult>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((ops, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}
