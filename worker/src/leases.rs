//! The leases a worker holds: which jobs it runs, under which token, and
//! whether it has learned that a lease was lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Jobs this worker holds a lease on. Shared by the fetch loop (which adds
/// and removes), the renewer (which flags lost leases) and the reaper (which
/// reports how many run).
#[derive(Debug, Default)]
pub(crate) struct LeaseTable {
    held: Mutex<HashMap<String, Held>>,
}

#[derive(Debug)]
struct Held {
    token: String,
    lost: Arc<AtomicBool>,
}

impl LeaseTable {
    /// Hold the lease `token` on job `id`; returns the flag that goes up
    /// when the lease is found lost (the handler can read it).
    pub(crate) fn hold(&self, id: &str, token: &str) -> Arc<AtomicBool> {
        let lost = Arc::new(AtomicBool::new(false));
        let held = Held { token: token.to_owned(), lost: lost.clone() };
        self.held.lock().expect("lease table").insert(id.to_owned(), held);
        lost
    }

    /// The job's attempt ended: the lease is no longer ours to renew.
    pub(crate) fn let_go(&self, id: &str) {
        self.held.lock().expect("lease table").remove(id);
    }

    /// `(id, token)` of every lease held.
    pub(crate) fn snapshot(&self) -> Vec<(String, String)> {
        let held = self.held.lock().expect("lease table");
        held.iter().map(|(id, h)| (id.clone(), h.token.clone())).collect()
    }

    /// Take every lease out of the table (the worker is stopping).
    pub(crate) fn drain(&self) -> Vec<(String, String)> {
        let mut held = self.held.lock().expect("lease table");
        held.drain().map(|(id, h)| (id, h.token)).collect()
    }

    /// How many jobs run now.
    pub(crate) fn len(&self) -> usize {
        self.held.lock().expect("lease table").len()
    }

    /// Flag the leases of `ids` as lost; returns those not flagged before.
    pub(crate) fn flag_lost(&self, ids: &[String]) -> Vec<String> {
        let held = self.held.lock().expect("lease table");
        ids.iter()
            .filter(|id| held.get(id.as_str()).is_some_and(|h| !h.lost.swap(true, Ordering::Relaxed)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_lease_is_flagged_once_and_only_while_held() {
        let table = LeaseTable::default();
        let flag = table.hold("7", "42");
        assert_eq!(table.snapshot(), [("7".to_owned(), "42".to_owned())]);
        assert_eq!(table.flag_lost(&["7".into(), "8".into()]), ["7"]);
        assert!(flag.load(Ordering::Relaxed));
        assert!(table.flag_lost(&["7".into()]).is_empty(), "told once");
        table.let_go("7");
        assert_eq!(table.len(), 0);
    }
}
