//! Worker identity: unique per process, so nothing depends on stable names and
//! a restarted worker never inherits another one's jobs.

use rand::Rng;

/// `host:pid:random`.
pub(crate) fn new_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let suffix: u32 = rand::rng().random();
    format!("{host}:{}:{suffix:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_name_the_process() {
        let (a, b) = (super::new_worker_id(), super::new_worker_id());
        assert_ne!(a, b);
        assert!(a.contains(&format!(":{}:", std::process::id())));
    }
}
