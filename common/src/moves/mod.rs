//! Every state move, typed: one file per Lua script in `scripts/`, holding
//! the request (which builds the script's `KEYS` and `ARGV`) and the reply
//! (which parses what the script answers). Open `scripts/fetch.lua` and
//! `moves/fetch.rs` side by side to read a whole move.
//!
//! Every caller (producer, worker, scheduler, CLI, tests) goes through these
//! types; none builds arguments or reads replies of its own. A move runs on
//! one queue ([`QueueScripts`]): every key it touches is in that queue's hash
//! slot.
//!
//! ```ignore
//! let scripts = QueueScripts::new(keys, DEFAULT_EVENTS_MAX_LEN);
//! let counts = scripts.run(&mut conn, &Counts).await?;
//! ```

use redis::Value;
use redis::aio::ConnectionLike;

use crate::Result;
use crate::keys::QueueKeys;
use crate::scripts::{ScriptCall, ScriptName};

pub mod add;
pub mod cancel;
pub mod complete;
pub mod counts;
pub mod dead_letter;
pub mod fail;
pub mod fetch;
pub mod flow;
pub mod key_limit;
pub mod limit;
pub mod obliterate;
pub mod pause;
pub mod progress;
pub mod promote;
pub mod reap;
pub mod release;
pub mod remove;
pub mod renew;
pub mod sleep;
pub mod step;
pub mod tick;
pub mod unpark;

pub use add::{Add, LeasedJob};
pub use cancel::Cancel;
pub use complete::{Ack, Complete};
pub use counts::Counts;
pub use dead_letter::{DeadLetter, DeadLetterAction};
pub use fail::Fail;
pub use fetch::{Fetch, FetchReply, Parking};
pub use flow::{
    FlowAdd, FlowAdded, FlowApply, FlowCascade, FlowChildren, FlowDrop, FlowDropStop, FlowNodeArgs, FlowPeek,
    FlowPeekStops, FlowStop, OutboxRecord, StopRecord,
};
pub use key_limit::KeyLimit;
pub use limit::Limit;
pub use obliterate::{Obliterate, ObliterateReply, ObliterateStatus};
pub use pause::Pause;
pub use progress::Progress;
pub use promote::Promote;
pub use reap::{Reap, ReapReply, Registration};
pub use release::Release;
pub use remove::Remove;
pub use renew::Renew;
pub use sleep::{Sleep, WakeAt};
pub use step::{Step, StepEnd, StepLimits, StepReply};
pub use tick::{Tick, TickAction, TickReply, TickStatus};
pub use unpark::{Listing, Unpark};

/// Events kept in a queue's stream unless configured otherwise (approximate trim).
pub const DEFAULT_EVENTS_MAX_LEN: u64 = 10_000;

/// One state move: a script, the arguments it takes and what its reply means.
pub trait Move {
    /// The script that performs the move.
    const SCRIPT: ScriptName;
    /// What the reply means.
    type Reply;
    /// Append the move's own arguments (`ARGV[3]` on; the first two, the job
    /// key prefix and the events stream's length, are every call's).
    fn args(&self, call: &mut ScriptCall);
    /// Read the script's reply.
    fn parse(&self, reply: Value) -> Result<Self::Reply>;
    /// Keys of the same queue after the standard ones (`KEYS[10]` on).
    fn extra_keys(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The scripts of one queue: its keys, and how long its events stream is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueScripts {
    keys: QueueKeys,
    events_max_len: u64,
}

impl QueueScripts {
    /// Moves on the queue of `keys`, trimming its events stream to about
    /// `events_max_len` entries (0: the moves write no events).
    pub fn new(keys: QueueKeys, events_max_len: u64) -> Self {
        Self { keys, events_max_len }
    }

    /// The queue's keys.
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        self.keys.name()
    }

    /// About how many entries the queue's events stream keeps (0: none written).
    pub fn events_max_len(&self) -> u64 {
        self.events_max_len
    }

    /// The call of `m` on this queue, to send alone or in a pipeline
    /// ([`crate::scripts::run_pipelined`], then [`Move::parse`]).
    pub fn call<M: Move>(&self, m: &M) -> ScriptCall {
        let mut call =
            ScriptCall::with_extra_keys(M::SCRIPT, &self.keys, &m.extra_keys(), self.events_max_len);
        m.args(&mut call);
        call
    }

    /// Run `m` and read its reply.
    pub async fn run<M: Move, C: ConnectionLike + Send>(&self, conn: &mut C, m: &M) -> Result<M::Reply> {
        let reply: Value = self.call(m).run(conn).await?;
        m.parse(reply)
    }
}

/// Milliseconds of a duration as script arguments take them.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
