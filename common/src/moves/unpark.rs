//! `scripts/unpark.lua`: a stopping worker takes no more hand-offs; jobs
//! left on the hand-off list with no worker parked go back to waiting.

use std::time::Duration;

use redis::Value;

use super::{Move, millis};
use crate::Result;
use crate::scripts::reply::int;
use crate::scripts::{ScriptCall, ScriptName};

/// Unpark the worker registered as `parking`.
#[derive(Debug, Clone, Copy)]
pub struct Unpark<'a> {
    /// Its member in the parked set (see [`super::Parking`]).
    pub parking: &'a str,
    /// What becomes of its listing among the live workers.
    pub listing: Listing<'a>,
}

/// A stopping worker's listing among the queue's live workers.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// Left as it is.
    Unchanged,
    /// Listed, as `report` says (stopping), for `hold` (its reaper no longer
    /// refreshes the listing).
    Stays {
        /// The worker's id.
        worker: &'a str,
        /// How long the listing holds.
        hold: Duration,
        /// What it reports (JSON).
        report: &'a str,
    },
    /// Taken off the list: the worker is done.
    Leaves {
        /// The worker's id.
        worker: &'a str,
    },
}

impl Move for Unpark<'_> {
    const SCRIPT: ScriptName = ScriptName::Unpark;
    /// How many unclaimed hand-offs went back to waiting.
    type Reply = u64;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.parking);
        match self.listing {
            Listing::Unchanged => {}
            Listing::Stays { worker, hold, report } => {
                call.arg(worker).arg(millis(hold).max(1)).arg(report);
            }
            Listing::Leaves { worker } => {
                call.arg(worker).arg(0);
            }
        }
    }

    fn parse(&self, reply: Value) -> Result<u64> {
        Ok(int(&reply)?.max(0) as u64)
    }
}
