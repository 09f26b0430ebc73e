//! `scripts/add.lua`: enqueue one or many jobs; a lone job added to an empty
//! queue while a worker is parked is leased and handed to it directly.

use redis::Value;

use super::Move;
use crate::scripts::reply::{array, int, string};
use crate::scripts::{ScriptCall, ScriptName};
use crate::{Added, Error, NewJob, Result};

/// Add `jobs` (at most a bounded batch, see the producer) in one call.
#[derive(Debug, Clone, Copy)]
pub struct Add<'a> {
    /// The jobs, already validated.
    pub jobs: &'a [NewJob],
}

impl Move for Add<'_> {
    const SCRIPT: ScriptName = ScriptName::Add;
    type Reply = Vec<Added>;

    fn args(&self, call: &mut ScriptCall) {
        call.arg(self.jobs.len());
        // Most adds are plain: a generated id and default options. They go in
        // the script's short form (3 arguments per job instead of 7).
        let stored: Vec<String> = self.jobs.iter().map(|j| j.options.encode_stored()).collect();
        let plain = self.jobs.iter().zip(&stored).all(|(j, s)| {
            let o = &j.options;
            o.job_id.is_none() && s.is_empty() && o.priority == 0 && o.delay.is_zero() && !has_keys(o)
        });
        // Only a batch with an idempotency or concurrency key pays for the longer form.
        let keyed = self.jobs.iter().any(|j| has_keys(&j.options));
        call.arg(if plain {
            "plain"
        } else if keyed {
            "keyed"
        } else {
            "full"
        });
        for (job, stored) in self.jobs.iter().zip(&stored) {
            let (head, tail) = split_payload(&job.payload);
            if plain {
                call.arg(&job.name).arg(head).arg(tail);
            } else {
                let o = &job.options;
                call.arg(o.job_id.as_deref().unwrap_or(""))
                    .arg(&job.name)
                    .arg(head)
                    .arg(tail)
                    .arg(stored)
                    .arg(o.priority)
                    .arg(super::millis(o.delay));
                if keyed {
                    match &o.idempotency {
                        Some(i) => call.arg(&i.key).arg(super::millis(i.window).max(1)),
                        None => call.arg("").arg(0),
                    };
                    call.arg(o.concurrency_key.as_deref().unwrap_or("")).arg(if o.skip_if_key_busy {
                        "1"
                    } else {
                        ""
                    });
                }
            }
        }
    }

    /// The first generated id of a plain batch (the others follow it), or an
    /// id and a flag per job: created (1), existed (0), deduplicated (2).
    fn parse(&self, reply: Value) -> Result<Vec<Added>> {
        let jobs = self.jobs.len();
        if let Value::Int(first) = reply {
            return Ok((0..jobs as i64)
                .map(|i| Added {
                    id: (first + i).to_string(),
                    created: true,
                    deduplicated: false,
                    skipped: false,
                })
                .collect());
        }
        let items = array(reply)?;
        if items.len() != 2 * jobs {
            return Err(Error::Protocol(format!("add returned {} items for {jobs} jobs", items.len())));
        }
        items
            .chunks(2)
            .map(|pair| {
                let (id, flag) = (string(&pair[0])?, int(&pair[1])?);
                match flag {
                    0..=3 => {
                        Ok(Added { id, created: flag == 1, deduplicated: flag == 2, skipped: flag == 3 })
                    }
                    _ => Err(Error::Protocol(format!("add answered flag {flag} for job {id}"))),
                }
            })
            .collect()
    }
}

/// Whether the job has an idempotency or a concurrency key.
fn has_keys(o: &crate::JobOptions) -> bool {
    o.idempotency.is_some() || o.concurrency_key.is_some()
}

/// Largest value Redis keeps in a hash's compact listpack encoding
/// (`hash-max-listpack-value`); payloads are stored in pieces of this size.
pub const PAYLOAD_PIECE: usize = 64;

/// Cut a payload for `add.lua`: a payload of 65 to 128 bytes becomes two
/// pieces of at most [`PAYLOAD_PIECE`] bytes, cut at a character boundary;
/// any other payload (or one whose cut would leave a piece too long) is sent
/// whole as the head with an empty tail, and the script stores it itself.
pub fn split_payload(data: &str) -> (&str, &str) {
    if data.len() <= PAYLOAD_PIECE || data.len() > 2 * PAYLOAD_PIECE {
        return (data, "");
    }
    let mut cut = PAYLOAD_PIECE;
    while !data.is_char_boundary(cut) {
        cut -= 1;
    }
    if data.len() - cut > PAYLOAD_PIECE {
        return (data, "");
    }
    data.split_at(cut)
}

/// One job leased to a worker: by a fetch call, or by an add that handed it
/// to a parked worker (a record of the hand-off list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    /// Job id.
    pub id: String,
    /// Fencing token of this lease.
    pub token: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Job name.
    pub name: String,
    /// Payload (JSON text).
    pub payload: String,
    /// Stored options ('' = defaults).
    pub options: String,
    /// How long the job waited, ms, from its add to this lease (Redis'
    /// clock; 0 for a job handed over by its add).
    pub waited_ms: u64,
}

impl LeasedJob {
    /// Parse a record of the hand-off list, as `add.lua` writes it: id,
    /// token, attempt, name and options, each followed by a newline, then the
    /// payload (which may hold newlines itself).
    pub fn from_handoff(record: &str) -> Result<Self> {
        let bad = || {
            Error::Protocol(format!(
                "malformed hand-off record {:?}",
                record.chars().take(80).collect::<String>()
            ))
        };
        let mut parts = record.splitn(6, '\n');
        let mut next = || parts.next().ok_or_else(bad);
        let (id, token, attempt, name, options, payload) =
            (next()?, next()?, next()?, next()?, next()?, next()?);
        Ok(LeasedJob {
            id: id.to_owned(),
            token: token.to_owned(),
            attempt: attempt.parse().map_err(|_| bad())?,
            name: name.to_owned(),
            payload: payload.to_owned(),
            options: options.to_owned(),
            waited_ms: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_65_to_128_bytes_are_cut_in_two_at_a_character_boundary() {
        let short = "x".repeat(64);
        assert_eq!(split_payload(&short), (short.as_str(), ""));
        let long = "x".repeat(129);
        assert_eq!(split_payload(&long), (long.as_str(), ""));
        let two = "x".repeat(120);
        assert_eq!(split_payload(&two), (&two[..64], &two[64..]));
        // 'é' is two bytes: a cut at 64 would fall inside it at byte 63-64.
        let accented = format!("{}é{}", "x".repeat(63), "y".repeat(40));
        let (head, tail) = split_payload(&accented);
        assert_eq!((head.len(), format!("{head}{tail}")), (63, accented.clone()));
        // The cut moved back, leaving a tail over 64 bytes: sent whole.
        let tight = format!("{}é{}", "x".repeat(63), "y".repeat(63));
        assert_eq!(split_payload(&tight), (tight.as_str(), ""));
    }

    #[test]
    fn hand_off_records_keep_newlines_in_the_payload_and_refuse_short_ones() {
        let job = LeasedJob::from_handoff("7\n42\n1\nemail\n{\"attempts\":3}\n{\"a\":\n1}").unwrap();
        assert_eq!(job.id, "7");
        assert_eq!(job.token, "42");
        assert_eq!(job.attempt, 1);
        assert_eq!(job.name, "email");
        assert_eq!(job.options, "{\"attempts\":3}");
        assert_eq!(job.payload, "{\"a\":\n1}");
        assert!(LeasedJob::from_handoff("7\n42\n1\nemail\n").is_err());
        assert!(LeasedJob::from_handoff("7\n42\nx\nemail\n\n{}").is_err());
    }

    #[test]
    fn plain_replies_count_on_from_the_first_id_and_full_ones_pair_up() {
        let jobs = vec![NewJob::new("a", &1).unwrap(), NewJob::new("b", &2).unwrap()];
        let add = Add { jobs: &jobs };
        let ids: Vec<String> = add.parse(Value::Int(41)).unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(ids, ["41", "42"]);
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let full = Value::Array(vec![bulk("x"), Value::Int(1), bulk("y"), Value::Int(0)]);
        let added = add.parse(full).unwrap();
        assert_eq!(added[1], Added { id: "y".into(), created: false, deduplicated: false, skipped: false });
        let dedup =
            add.parse(Value::Array(vec![bulk("x"), Value::Int(2), bulk("y"), Value::Int(1)])).unwrap();
        assert_eq!(dedup[0], Added { id: "x".into(), created: false, deduplicated: true, skipped: false });
        assert!(add.parse(Value::Array(vec![bulk("x"), Value::Int(1)])).is_err(), "one outcome per job");
    }
}
