//! The fields of a job's hash (`<prefix>:{<queue>}:j:<id>`). Short names
//! keep a job small in Redis' compact hash encoding. The Lua side names the
//! same fields in the table at the top of `scripts/prelude.lua` (`F_STATE`,
//! ...); a test checks that both agree. Durable steps add one field per
//! step (`s:<name>#<occurrence>`, see [`crate::steps`]).

/// `n`: the job name (selects the handler).
pub const NAME: &str = "n";
/// `t`: when it was added (Redis ms).
pub const CREATED: &str = "t";
/// `d`: the payload, or its first 64-byte piece.
pub const PAYLOAD: &str = "d";
/// `d2`: the payload's second piece (d3 .. d9 follow).
pub const PAYLOAD_PIECE_2: &str = "d2";
/// `dn`: how many pieces the payload is stored in (absent: one).
pub const PAYLOAD_PIECES: &str = "dn";
/// `o`: stored options (JSON; absent: defaults).
pub const OPTIONS: &str = "o";
/// `p`: priority above 0 (absent: 0).
pub const PRIORITY: &str = "p";
/// `s`: waiting, delayed, active, completed or failed.
pub const STATE: &str = "s";
/// `tk`: the current lease (fencing) token.
pub const TOKEN: &str = "tk";
/// `st`: when the latest attempt started (Redis ms).
pub const STARTED: &str = "st";
/// `w`: the worker running or that ran the latest attempt.
pub const WORKER: &str = "w";
/// `at`: attempts started in this round.
pub const ATTEMPTS: &str = "at";
/// `fin`: when it completed or failed for good (Redis ms).
pub const FINISHED: &str = "fin";
/// `e`: the last error message.
pub const ERROR: &str = "e";
/// `r`: the handler's result (JSON).
pub const RESULT: &str = "r";
/// `stl`: times its lease expired.
pub const STALLS: &str = "stl";
/// `h`: the attempt history (JSON array).
pub const HISTORY: &str = "h";
/// `pg`: the latest progress: <token> <JSON>.
pub const PROGRESS: &str = "pg";
/// `sx`: durable steps recorded so far (numbers the step records).
pub const STEP_SEQ: &str = "sx";
/// `sn`: durable steps stored now.
pub const STEP_COUNT: &str = "sn";
/// `sb`: bytes the stored steps take.
pub const STEP_BYTES: &str = "sb";
/// `ck`: its concurrency key (absent: none).
pub const CONCURRENCY_KEY: &str = "ck";
/// `ik`: its idempotency key (absent: none).
pub const IDEMPOTENCY_KEY: &str = "ik";
/// `pa`: its parent in a flow (absent: none), see `scripts/flow.lua`.
pub const PARENT: &str = "pa";

/// Every field with its Lua name, as in the prelude's table.
pub const ALL: &[(&str, &str)] = &[
    ("F_NAME", NAME),
    ("F_CREATED", CREATED),
    ("F_DATA", PAYLOAD),
    ("F_DATA2", PAYLOAD_PIECE_2),
    ("F_PIECES", PAYLOAD_PIECES),
    ("F_OPTIONS", OPTIONS),
    ("F_PRIORITY", PRIORITY),
    ("F_STATE", STATE),
    ("F_TOKEN", TOKEN),
    ("F_STARTED", STARTED),
    ("F_WORKER", WORKER),
    ("F_ATTEMPTS", ATTEMPTS),
    ("F_FINISHED", FINISHED),
    ("F_ERROR", ERROR),
    ("F_RESULT", RESULT),
    ("F_STALLS", STALLS),
    ("F_HISTORY", HISTORY),
    ("F_PROGRESS", PROGRESS),
    ("F_STEP_SEQ", STEP_SEQ),
    ("F_STEP_COUNT", STEP_COUNT),
    ("F_STEP_BYTES", STEP_BYTES),
    ("F_CKEY", CONCURRENCY_KEY),
    ("F_IDEM", IDEMPOTENCY_KEY),
    ("F_PARENT", PARENT),
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_prelude_names_the_same_fields() {
        let prelude = include_str!("../../scripts/prelude.lua");
        for (lua, field) in super::ALL {
            let line = format!("local {lua} = '{field}'");
            assert!(prelude.contains(&line), "scripts/prelude.lua lacks {line:?}");
        }
    }

    #[test]
    fn no_script_names_a_job_field_by_its_literal() {
        for name in crate::scripts::ScriptName::ALL {
            for line in name.body().lines().filter(|l| l.contains("redis.call('H") && l.contains(", jk, ")) {
                for (lua, field) in super::ALL {
                    assert!(
                        !line.contains(&format!(", '{field}'")),
                        "{}.lua: {line:?} should use {lua}",
                        name.file_stem()
                    );
                }
            }
        }
    }
}
