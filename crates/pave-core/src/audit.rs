//! The audit trail: append-only events, each carrying the hash of the one before.
//! The hash covers every field of the event, so editing any stored column breaks
//! the chain at that event.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hash that stands before the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller records; the store gives it a place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditDraft {
    /// Who did it (`token:admin`, `system`).
    pub actor: String,
    /// What was done (`action.create`, `action.state`, `token.create`).
    pub verb: String,
    /// What it was done to (`action/0193…`).
    pub object: String,
    /// One line for people.
    pub summary: String,
    /// Structured detail; never secret values.
    #[serde(default)]
    pub details: Value,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub verb: String,
    /// On what.
    pub object: String,
    /// In words.
    pub summary: String,
    /// In data.
    pub details: Value,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// Hash of this event, over all the fields above.
    pub hash: String,
}

/// The hash of an event with these fields. `details` is hashed in its stored text
/// form so that verification reads exactly what was written.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    seq: i64,
    time: i64,
    actor: &str,
    verb: &str,
    object: &str,
    summary: &str,
    details: &str,
    prev_hash: &str,
) -> String {
    let mut h = Sha256::new();
    for field in [
        seq.to_string().as_str(),
        time.to_string().as_str(),
        actor,
        verb,
        object,
        summary,
        details,
        prev_hash,
    ] {
        // Length-prefix every field so that moving bytes between fields changes the hash.
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

impl AuditEvent {
    /// Recomputes this event's hash from its fields.
    pub fn computed_hash(&self) -> String {
        event_hash(
            self.seq,
            self.time,
            &self.actor,
            &self.verb,
            &self.object,
            &self.summary,
            &self.details.to_string(),
            &self.prev_hash,
        )
    }
}

/// Where a chain stops being valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainBreak {
    /// The first event that does not verify.
    pub seq: i64,
    /// Why.
    pub reason: String,
}

/// Checks events in order against the hash expected before the first of them.
/// Returns the hash after the last event, or where the chain breaks.
pub fn verify_chain<'a>(
    expected_prev: &str,
    expected_seq: i64,
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> Result<(String, i64), ChainBreak> {
    let mut prev = expected_prev.to_string();
    let mut seq = expected_seq;
    for e in events {
        if e.seq != seq {
            return Err(ChainBreak {
                seq: e.seq,
                reason: format!("expected event {seq}, found {} (an event is missing)", e.seq),
            });
        }
        if e.prev_hash != prev {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "its prev_hash does not match the previous event's hash".into(),
            });
        }
        if e.computed_hash() != e.hash {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "its contents do not match its hash (the event was modified)".into(),
            });
        }
        prev = e.hash.clone();
        seq += 1;
    }
    Ok((prev, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let details = serde_json::json!({"n": seq});
                let hash = event_hash(seq, 1000 + seq, "a", "v", "o", "s", &details.to_string(), &prev);
                let e = AuditEvent {
                    seq,
                    time: 1000 + seq,
                    actor: "a".into(),
                    verb: "v".into(),
                    object: "o".into(),
                    summary: "s".into(),
                    details,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let c = chain(5);
        let (last, next) = verify_chain(GENESIS_HASH, 1, &c).unwrap();
        assert_eq!(last, c[4].hash);
        assert_eq!(next, 6);
    }

    #[test]
    fn an_edited_summary_names_that_event() {
        let mut c = chain(5);
        c[2].summary = "nothing to see".into();
        assert_eq!(verify_chain(GENESIS_HASH, 1, &c).unwrap_err().seq, 3);
    }

    #[test]
    fn a_removed_event_is_found() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(GENESIS_HASH, 1, &c).unwrap_err().seq, 3);
    }
}
