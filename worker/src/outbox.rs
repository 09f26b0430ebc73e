//! What a worker has to tell its queue, and the pipelined round trip that
//! tells it: acknowledgements, failure records and a fetch, one round trip.

use std::time::Duration;

use quern_common::moves::{Ack, Complete, Fail, Fetch, FetchReply, Move, Parking};
use quern_common::scripts::ScriptCall;
use quern_common::{FailureKind, Result, ScriptCode};
use tracing::{error, warn};

use crate::client::QueueClient;

/// Due delayed jobs promoted per fetch call at most.
pub(crate) const PROMOTE_LIMIT: usize = 1000;

/// A failed attempt to record.
pub(crate) struct Failure {
    pub(crate) id: String,
    pub(crate) token: String,
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
    /// `None`: dead-letter it.
    pub(crate) retry_in: Option<Duration>,
}

/// Acknowledgements and failures waiting for the next round trip.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) completed: Vec<Ack>,
    pub(crate) failed: Vec<Failure>,
}

impl Outbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.completed.is_empty() && self.failed.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.completed.len() + self.failed.len()
    }

    pub(crate) fn merge(&mut self, other: Outbox) {
        self.completed.extend(other.completed);
        self.failed.extend(other.failed);
    }
}

/// What a round trip asks for besides sending the outbox.
pub(crate) struct FetchAsk {
    /// Jobs wanted (0: no fetch).
    pub(crate) want: usize,
    pub(crate) lease: Duration,
    /// How the worker parks when the batch comes back short.
    pub(crate) parking: String,
    pub(crate) parking_ttl: Duration,
    /// Completed jobs kept (`None`: all).
    pub(crate) keep: Option<u64>,
}

/// The result of one round trip. When the whole pipeline failed (connection
/// trouble), or too few replicas acknowledged the moves (when the worker asks
/// for replica acknowledgements), `unsent` gives the acknowledgements and
/// failures back to send again; a repeated acknowledgement is harmless (the
/// scripts answer `DUPLICATE`).
pub(crate) struct RoundTrip {
    pub(crate) wanted: usize,
    pub(crate) fetched: Result<Option<FetchReply>>,
    pub(crate) unsent: Outbox,
}

/// One pipelined round trip: acknowledge, record failures, fetch.
pub(crate) async fn round_trip(client: QueueClient, ask: FetchAsk, outbox: Outbox) -> RoundTrip {
    let complete = Complete { keep: ask.keep, acks: &outbox.completed };
    let fails: Vec<Fail<'_>> = outbox
        .failed
        .iter()
        .map(|f| Fail { id: &f.id, token: &f.token, message: &f.message, kind: f.kind, retry_in: f.retry_in })
        .collect();
    let fetch = Fetch {
        want: ask.want,
        lease: ask.lease,
        worker: client.worker(),
        promote_limit: PROMOTE_LIMIT,
        parking: Some(Parking { member: &ask.parking, ttl: ask.parking_ttl }),
    };
    let mut calls: Vec<ScriptCall> = Vec::with_capacity(2 + fails.len());
    if !outbox.completed.is_empty() {
        calls.push(client.call(&complete));
    }
    calls.extend(fails.iter().map(|f| client.call(f)));
    if ask.want > 0 {
        calls.push(client.call(&fetch));
    }
    // Only state moves wait for replicas: a fetch lost in a failover leaves
    // its jobs waiting, to run again.
    let acks = if outbox.is_empty() { None } else { client.replica_acks() };
    let (results, acked) = match client.pipelined(&calls, acks).await {
        Ok(r) => r,
        Err(e) => {
            drop(fails);
            return RoundTrip { wanted: ask.want, fetched: Err(e), unsent: outbox };
        }
    };
    // From here on every call ran (or failed on its own): nothing is resent.
    let mut results = results.into_iter();
    if !outbox.completed.is_empty() {
        match results.next().expect("one result per call").and_then(|r| complete.parse(r)) {
            Ok(codes) => {
                for (ack, code) in outbox.completed.iter().zip(codes) {
                    report_code(client.worker(), "acknowledge", &ack.id, code);
                }
            }
            Err(e) => {
                error!(worker = %client.worker(), error = %e, "acknowledging completed jobs failed; they will be recovered as stalled")
            }
        }
    }
    for fail in &fails {
        match results.next().expect("one result per call").and_then(|r| fail.parse(r)) {
            Ok(code) => report_code(client.worker(), "record failure of", fail.id, code),
            Err(e) => {
                error!(worker = %client.worker(), job = %fail.id, error = %e, "recording a failed attempt failed; the job will be recovered as stalled")
            }
        }
    }
    let fetched = if ask.want == 0 {
        Ok(None)
    } else {
        results.next().expect("one result per call").and_then(|r| fetch.parse(r)).map(Some)
    };
    drop(fails);
    let unsent = match acked {
        Ok(()) => Outbox::default(),
        Err(e) => {
            warn!(worker = %client.worker(), error = %e, moves = outbox.len(), "too few replicas acknowledged; sending these moves again");
            outbox
        }
    };
    RoundTrip { wanted: ask.want, fetched, unsent }
}

fn report_code(worker: &str, what: &str, id: &str, code: ScriptCode) {
    match code {
        ScriptCode::Ok | ScriptCode::Dead | ScriptCode::Duplicate => {}
        ScriptCode::LeaseLost => warn!(
            worker = %worker, job = %id,
            "lease lost: could not {what} the job, another worker holds it now; this result was discarded"
        ),
        other => warn!(worker = %worker, job = %id, code = ?other, "could not {what} the job"),
    }
}
