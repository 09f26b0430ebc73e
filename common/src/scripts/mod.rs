//! The machinery that runs the Lua scripts: which scripts exist (one table,
//! below), how their text is assembled ([`source`]), how a call is sent and
//! repaired ([`call`]), and how replies are read ([`reply`]). What each
//! script takes and answers lives beside it in [`crate::moves`]: open
//! `scripts/fetch.lua` and `common/src/moves/fetch.rs` to see the whole move.
//!
//! On Redis 7.0 and later the scripts are one Redis Function library
//! ([`library_source`]): the prelude once, each script a function, called
//! with `FCALL`. Helpers are then defined once, when the library is loaded,
//! not on every call, and the library's Lua heap is about 40% smaller than
//! the same scripts loaded one by one, which makes the Lua GC step Redis
//! runs on every 50th script call cheaper. The library's name carries a hash
//! of its text, so versions of quern sharing a Redis each use their own.
//!
//! Where `FCALL` is refused (Redis 6.2 answers "unknown command"; an ACL may
//! answer `NOPERM`) or the library cannot be loaded, this process falls back
//! to `EVALSHA`: each script with the prelude blocks it uses in front (see
//! [`with_prelude`]).
//!
//! When Redis has forgotten the library or a script (a restart without
//! persistence, `FUNCTION FLUSH`, `SCRIPT FLUSH`), it answers "Function not
//! found" or `NOSCRIPT`; the call is loaded and sent again. Such a call never
//! ran, so sending it again is always safe.

mod call;
pub mod reply;
mod source;

pub use call::{ScriptCall, calls_functions, load, load_all, run_pipelined, run_pipelined_acked};
pub use source::{library_name, library_source, with_prelude};

/// Declares [`ScriptName`] from one table: variant, file stem, what it does.
/// Adding a script is one line here, a Lua file in `scripts/` and a Rust
/// file in `common/src/moves/`.
macro_rules! scripts {
    ($($(#[doc = $doc:literal])+ $name:ident => $stem:literal,)+) => {
        /// One script per state move (see `scripts/<file stem>.lua`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ScriptName {
            $($(#[doc = $doc])+ $name,)+
        }

        impl ScriptName {
            /// Every script, in the table's order.
            pub const ALL: &'static [ScriptName] = &[$(ScriptName::$name,)+];

            /// The script's file name without `.lua`.
            pub fn file_stem(self) -> &'static str {
                match self {
                    $(ScriptName::$name => $stem,)+
                }
            }

            /// The script's own file, without the prelude.
            pub(crate) fn body(self) -> &'static str {
                match self {
                    $(ScriptName::$name => include_str!(concat!("../../../scripts/", $stem, ".lua")),)+
                }
            }

            /// Position in [`Self::ALL`].
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

scripts! {
    /// Add one or many jobs.
    Add => "add",
    /// Lease a batch of jobs to a worker.
    Fetch => "fetch",
    /// Acknowledge a batch of completed jobs.
    Complete => "complete",
    /// Record a failed attempt: retry later or dead-letter.
    Fail => "fail",
    /// Renew every lease a worker holds, or claim jobs taken from the
    /// hand-off list (recording the worker).
    Renew => "renew",
    /// Recover expired leases, trim old completed jobs, list the worker as live.
    Reap => "reap",
    /// Hand leased jobs back without using up an attempt.
    Release => "release",
    /// Remove a job that is not active.
    Remove => "remove",
    /// Count jobs per state.
    Counts => "counts",
    /// Flows: add parents and children, apply a child's outcome, relay records.
    Flow => "flow",
    /// Retry or purge dead-lettered jobs.
    DeadLetter => "dead_letter",
    /// Pause or resume a queue.
    Pause => "pause",
    /// Enqueue one scheduler tick at most once (watermark in the queue's slot).
    Tick => "tick",
    /// Stop taking hand-offs; return unclaimed ones when no worker is parked.
    Unpark => "unpark",
    /// Set or remove the queue's rate limit.
    Limit => "limit",
    /// Make delayed jobs waiting now.
    Promote => "promote",
    /// Record a running job's progress.
    Progress => "progress",
    /// Stop a job for good: revoke its lease, dead-letter it.
    Cancel => "cancel",
    /// Delete a queue with its jobs and keys, in bounded calls.
    Obliterate => "obliterate",
    /// Store the outcome of a running job's durable step (lease checked).
    Step => "step",
    /// Put a running job to sleep: active to delayed, no attempt spent.
    Sleep => "sleep",
    /// Set or remove a concurrency-key limit; requeue the jobs held for it.
    KeyLimit => "key_limit",
}

impl ScriptName {
    /// The full source for `EVALSHA` (the prelude blocks it uses included).
    pub fn source(self) -> &'static str {
        &source::compiled()[self.index()].source
    }

    /// The name of the script's function in the library (`FCALL`).
    pub fn function_name(self) -> &'static str {
        &source::compiled()[self.index()].function
    }

    /// The SHA1 Redis knows the script by.
    pub fn sha(self) -> &'static str {
        &source::compiled()[self.index()].sha
    }
}
