//! The schedules file (TOML), applied as an upsert when a scheduler starts.
//!
//! ```toml
//! [[schedule]]
//! name = "settlement"            # required; letters, digits, '_', '-', '.'
//! cron = "0 2 * * *"             # required; 5 fields, or 6 with seconds first
//! time_zone = "Europe/Berlin"    # IANA name; default "UTC"
//! queue = "billing"              # required
//! job = "settle"                 # required: the job name workers dispatch on
//! payload = { region = "eu" }    # any TOML value, stored as JSON; default null
//! misfire = "catch_up"           # skip (default) | run_once | catch_up
//! catch_up_max = 24              # with catch_up: most missed ticks enqueued
//! misfire_grace = "1m"           # later than this a tick counts as missed; default 1m
//! overlap = "skip"               # allow (default) | skip while the previous job is unfinished
//! enabled = true                 # default true
//! attempts = 5                   # job options, all optional
//! priority = 0
//! timeout = "10m"
//! delay = "0s"
//! backoff = "exponential:1s:1h"  # none | fixed:30s | exponential:BASE:MAX
//! ```
//!
//! Instead of `job` and `payload`, a schedule may enqueue a chain on each
//! tick: links that run in order, each once the one before it completed.
//!
//! ```toml
//! [[schedule]]
//! name = "nightly"
//! cron = "0 2 * * *"
//! queue = "ops"
//! overlap = "skip"
//! [[schedule.chain]]
//! job = "command"
//! payload = { argv = ["/opt/app/bin/rebuild-profiles"] }
//! [[schedule.chain]]
//! job = "command"
//! payload = { argv = ["/opt/app/bin/snapshot"] }
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use quern_common::duration::parse_duration;
use quern_common::{Backoff, JobOptions};
use serde::Deserialize;

use crate::schedule::{ChainLink, MisfirePolicy, OverlapPolicy, Schedule};
use crate::{Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    #[serde(default)]
    schedule: Vec<FileSchedule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchedule {
    name: String,
    cron: String,
    #[serde(default, alias = "tz")]
    time_zone: Option<String>,
    queue: String,
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    payload: Option<toml::Value>,
    #[serde(default)]
    chain: Vec<FileChainLink>,
    #[serde(default)]
    misfire: Option<String>,
    #[serde(default)]
    catch_up_max: Option<u32>,
    #[serde(default)]
    misfire_grace: Option<String>,
    #[serde(default)]
    overlap: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    attempts: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    backoff: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileChainLink {
    job: String,
    #[serde(default)]
    payload: Option<toml::Value>,
}

/// Read and validate a schedules file.
pub fn load_schedules_file(path: &Path) -> Result<Vec<Schedule>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::ScheduleFile { path: path.display().to_string(), reason: e.to_string() })?;
    parse_schedules_toml(&text, &path.display().to_string())
}

/// Parse and validate schedules from TOML text; `origin` names the source in errors.
pub fn parse_schedules_toml(text: &str, origin: &str) -> Result<Vec<Schedule>> {
    let file_error = |reason: String| Error::ScheduleFile { path: origin.to_owned(), reason };
    let contents: FileContents = toml::from_str(text).map_err(|e| file_error(e.to_string()))?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(contents.schedule.len());
    for entry in contents.schedule {
        if !seen.insert(entry.name.clone()) {
            return Err(file_error(format!("schedule {:?} is defined twice", entry.name)));
        }
        let schedule = entry.into_schedule()?;
        schedule.validate()?;
        out.push(schedule);
    }
    Ok(out)
}

impl FileSchedule {
    fn into_schedule(self) -> Result<Schedule> {
        let name = self.name.clone();
        let bad = |reason: String| Error::InvalidSchedule { name: name.clone(), reason };
        let duration = |field: &str, text: &str| -> Result<Duration> {
            parse_duration(text).map_err(|e| bad(format!("{field}: {e}")))
        };
        let mut options = JobOptions::new();
        if let Some(a) = self.attempts {
            options = options.attempts(a);
        }
        if let Some(p) = self.priority {
            options = options.priority(p);
        }
        if let Some(t) = &self.timeout {
            options = options.timeout(duration("timeout", t)?);
        }
        if let Some(d) = &self.delay {
            options = options.delay(duration("delay", d)?);
        }
        if let Some(b) = &self.backoff {
            options = options.backoff(parse_backoff(b).map_err(|e| bad(format!("backoff: {e}")))?);
        }
        let misfire = match (self.misfire.as_deref().unwrap_or("skip"), self.catch_up_max) {
            ("skip", None) => MisfirePolicy::Skip,
            ("run_once", None) => MisfirePolicy::RunOnce,
            ("catch_up", Some(max)) => MisfirePolicy::CatchUp { max },
            ("catch_up", None) => return Err(bad("misfire = \"catch_up\" needs catch_up_max".into())),
            ("skip" | "run_once", Some(_)) => {
                return Err(bad("catch_up_max only applies to misfire = \"catch_up\"".into()));
            }
            (other, _) => {
                return Err(bad(format!("misfire must be skip, run_once or catch_up, got {other:?}")));
            }
        };
        let overlap = match self.overlap.as_deref().unwrap_or("allow") {
            "allow" => OverlapPolicy::Allow,
            "skip" => OverlapPolicy::Skip,
            other => return Err(bad(format!("overlap must be allow or skip, got {other:?}"))),
        };
        let job = match (&self.job, self.chain.is_empty()) {
            (Some(job), true) => job.clone(),
            (None, false) => String::new(),
            (Some(_), false) => {
                return Err(
                    bad("give either job (and payload) or [[schedule.chain]] links, not both".into()),
                );
            }
            (None, true) => return Err(bad("missing field `job` (or [[schedule.chain]] links)".into())),
        };
        if !self.chain.is_empty() && self.payload.is_some() {
            return Err(bad("payload goes in each [[schedule.chain]] link".into()));
        }
        let mut links = Vec::with_capacity(self.chain.len());
        for (n, link) in self.chain.iter().enumerate() {
            let payload = match &link.payload {
                Some(p) => {
                    serde_json::to_value(p).map_err(|e| bad(format!("chain link {}: payload: {e}", n + 1)))?
                }
                None => serde_json::Value::Null,
            };
            links.push(ChainLink { job: link.job.clone(), payload: payload.to_string() });
        }
        let mut schedule = Schedule::new(self.name, self.cron, self.queue, job)
            .time_zone(self.time_zone.unwrap_or_else(|| "UTC".into()))
            .options(options)
            .misfire(misfire)
            .overlap(overlap)
            .enabled(self.enabled.unwrap_or(true));
        if let Some(g) = &self.misfire_grace {
            schedule = schedule.misfire_grace(duration("misfire_grace", g)?);
        }
        if let Some(p) = self.payload {
            let json = serde_json::to_value(&p).map_err(|e| bad(format!("payload: {e}")))?;
            schedule = schedule.payload(json);
        }
        if !links.is_empty() {
            schedule = schedule.chain(links);
        }
        Ok(schedule)
    }
}

/// `none`, `fixed:30s` or `exponential:1s:1h` (`exp` for short).
pub fn parse_backoff(text: &str) -> std::result::Result<Backoff, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let backoff = match parts.as_slice() {
        ["none"] => Backoff::None,
        ["fixed", d] => Backoff::fixed(parse_duration(d)?),
        ["exponential" | "exp", base, max] => {
            Backoff::exponential(parse_duration(base)?, parse_duration(max)?)
        }
        _ => return Err(format!("{text:?}: expected none, fixed:DELAY or exponential:BASE:MAX")),
    };
    backoff.validate()?;
    Ok(backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_entry_parses() {
        let text = r#"
            [[schedule]]
            name = "settlement"
            cron = "0 2 * * *"
            time_zone = "Europe/Berlin"
            queue = "billing"
            job = "settle"
            payload = { region = "eu", ids = [1, 2] }
            misfire = "catch_up"
            catch_up_max = 24
            misfire_grace = "5m"
            overlap = "skip"
            attempts = 5
            timeout = "10m"
            backoff = "fixed:30s"

            [[schedule]]
            name = "heartbeat"
            cron = "*/10 * * * * *"
            queue = "ops"
            job = "ping"
        "#;
        let v = parse_schedules_toml(text, "test.toml").unwrap();
        assert_eq!(v.len(), 2);
        let s = &v[0];
        assert_eq!(s.time_zone, "Europe/Berlin");
        assert_eq!(s.misfire, MisfirePolicy::CatchUp { max: 24 });
        assert_eq!(s.misfire_grace, Duration::from_secs(300));
        assert_eq!(s.overlap, OverlapPolicy::Skip);
        assert_eq!(s.options.attempts, 5);
        assert_eq!(s.options.timeout, Some(Duration::from_secs(600)));
        assert_eq!(s.options.backoff, Backoff::fixed(Duration::from_secs(30)));
        let payload: serde_json::Value = serde_json::from_str(&s.payload).unwrap();
        assert_eq!(payload, serde_json::json!({"region": "eu", "ids": [1, 2]}));
        assert_eq!(v[1].time_zone, "UTC");
        assert_eq!(v[1].payload, "null");
    }

    fn err(text: &str) -> String {
        parse_schedules_toml(text, "f.toml").unwrap_err().to_string()
    }

    #[test]
    fn errors_are_specific() {
        let base = "name = \"a\"\nqueue = \"q\"\njob = \"j\"\n";
        let e = err(&format!("[[schedule]]\n{base}cron = \"0 2 * *\"\n"));
        assert!(e.contains("invalid cron expression") && e.contains("4 fields"), "{e}");
        let e = err(&format!("[[schedule]]\n{base}cron = \"0 2 * * *\"\ntime_zone = \"Europe/Berln\"\n"));
        assert!(e.contains("unknown time zone \"Europe/Berln\""), "{e}");
        let e = err("[[schedule]]\nname = \"\"\nqueue = \"q\"\njob = \"j\"\ncron = \"* * * * *\"\n");
        assert!(e.contains("name is empty"), "{e}");
        let e = err(&format!("[[schedule]]\n{base}cron = \"* * * * *\"\nmisfire = \"later\"\n"));
        assert!(e.contains("misfire must be"), "{e}");
        let e = err(&format!("[[schedule]]\n{base}cron = \"* * * * *\"\nmisfire = \"catch_up\"\n"));
        assert!(e.contains("catch_up_max"), "{e}");
        let e = err(&format!("[[schedule]]\n{base}cron = \"* * * * *\"\ncolour = 1\n"));
        assert!(e.contains("colour"), "{e}");
        let e = err(&format!(
            "[[schedule]]\n{base}cron = \"* * * * *\"\n[[schedule]]\n{base}cron = \"* * * * *\"\n"
        ));
        assert!(e.contains("defined twice"), "{e}");
        let e = err(&format!("[[schedule]]\n{base}cron = \"* * * * *\"\ntimeout = \"soon\"\n"));
        assert!(e.contains("timeout"), "{e}");
        let e = err("[[schedule]\n");
        assert!(e.contains("f.toml"), "{e}");
    }

    #[test]
    fn empty_file_has_no_schedules() {
        assert!(parse_schedules_toml("", "f").unwrap().is_empty());
    }
}
