//! Assembling the scripts' text: the prelude spliced in front of each script
//! for `EVALSHA`, or once at the top of the Function library.

use std::sync::LazyLock;

use super::ScriptName;

/// The helpers every script may use (`scripts/prelude.lua`).
pub(crate) const PRELUDE: &str = include_str!("../../../scripts/prelude.lua");

/// The first line of every script's body: point the prelude's names at the
/// call's keys and arguments.
pub(crate) const BIND: &str = "bind(KEYS, ARGV)\n";

/// `body` with the prelude in front: its header (everything above the first
/// `-- @block` line), then those of its blocks that `body` needs. A block is
/// needed when `body`, or a block needed, mentions a name listed on its
/// `-- @block` line; blocks only use blocks above them, so one pass from the
/// last block up finds them all. Defining unused helpers cost about 20,000
/// Redis instructions per call.
pub fn with_prelude(prelude: &str, body: &str) -> String {
    let mut parts = prelude.split("\n-- @block ");
    let header = parts.next().unwrap_or_default();
    let blocks: Vec<(Vec<&str>, &str)> = parts
        .map(|block| {
            let (names, _) = block.split_once('\n').unwrap_or((block, ""));
            (names.split_whitespace().collect(), block)
        })
        .collect();
    let mut needed = vec![false; blocks.len()];
    let mut text = body.to_owned();
    for (i, (names, block)) in blocks.iter().enumerate().rev() {
        if names.iter().any(|n| mentions(&text, n)) {
            needed[i] = true;
            text.push_str(block);
        }
    }
    let mut out = String::from(header);
    for (i, (_, block)) in blocks.iter().enumerate() {
        if needed[i] {
            out.push_str("\n-- @block ");
            out.push_str(block);
        }
    }
    out.push('\n');
    out.push_str(body);
    out
}

/// Whether `text` holds `name` as a whole Lua identifier.
fn mentions(text: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// What each script compiles to, in [`ScriptName::ALL`] order.
pub(super) struct Compiled {
    /// The `EVALSHA` source (prelude blocks included).
    pub(super) source: String,
    /// The function's name in the library.
    pub(super) function: String,
    /// SHA1 of `source`.
    pub(super) sha: String,
}

pub(super) fn compiled() -> &'static [Compiled] {
    static ALL: LazyLock<Vec<Compiled>> = LazyLock::new(|| {
        ScriptName::ALL
            .iter()
            .map(|n| {
                let source = with_prelude(PRELUDE, &format!("{BIND}{}", n.body()));
                let sha = redis::Script::new(&source).get_hash().to_owned();
                Compiled { source, function: format!("{}_{}", library_name(), n.file_stem()), sha }
            })
            .collect()
    });
    &ALL
}

/// The name of the Function library: `quern_` and a hash of the scripts' text.
pub fn library_name() -> &'static str {
    static NAME: LazyLock<String> = LazyLock::new(|| {
        let all: String = std::iter::once(PRELUDE).chain(ScriptName::ALL.iter().map(|n| n.body())).collect();
        format!("quern_{}", &redis::Script::new(&all).get_hash()[..12])
    });
    &NAME
}

/// The Function library (`FUNCTION LOAD`): the prelude once, then every
/// script as a function of its own.
pub fn library_source() -> &'static str {
    static SOURCE: LazyLock<String> = LazyLock::new(|| {
        let mut text = format!("#!lua name={}\n{PRELUDE}\n", library_name());
        for n in ScriptName::ALL {
            text.push_str(&format!(
                "redis.register_function('{}', function(KEYS, ARGV)\n{BIND}{}\nend)\n",
                n.function_name(),
                n.body()
            ));
        }
        text
    });
    &SOURCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_has_the_prelude_and_a_distinct_sha() {
        let mut shas = std::collections::HashSet::new();
        for n in ScriptName::ALL {
            assert!(n.source().contains("local JOB_PREFIX, MAX_EVENTS\n"), "{}", n.file_stem());
            assert!(shas.insert(n.sha()), "{}", n.file_stem());
        }
    }

    #[test]
    fn the_active_pin_is_the_same_in_rust_and_lua_and_forces_skiplist_encoding() {
        let pin = crate::keys::ACTIVE_PIN;
        assert!(ScriptName::Fetch.source().contains(&format!("local ACTIVE_PIN = '{pin}'")));
        assert!(pin.len() > 64, "over zset-max-listpack-value (64 bytes)");
        assert!(crate::names::validate_job_id(pin).is_err(), "never a valid job id");
    }

    #[test]
    fn the_keys_pin_is_the_same_in_rust_and_lua_forces_hashtable_encoding_and_is_no_key() {
        let pin = crate::keys::KEYS_ACTIVE_PIN;
        let lua = pin.replace('\n', "\\n");
        assert!(ScriptName::Add.source().contains(&format!("local CK_PIN = '{lua}'")));
        assert!(pin.len() > 64, "over hash-max-listpack-value (64 bytes)");
        let options = crate::JobOptions::new().concurrency_key(pin);
        assert!(options.validate().is_err(), "never a valid concurrency key");
    }

    #[test]
    fn a_script_gets_the_prelude_blocks_it_uses_and_those_they_use() {
        let prelude = "local K = KEYS[1]\n-- @block a\nlocal function a() end\n-- @block b B2\nlocal B2 = 2\nlocal function b() a() end\n-- @block c\nlocal function c() end";
        let only_b = with_prelude(prelude, "return B2");
        assert!(only_b.starts_with("local K = KEYS[1]\n"));
        assert!(only_b.contains("function a()") && only_b.contains("function b()"), "b uses a: {only_b}");
        assert!(!only_b.contains("function c()"), "{only_b}");
        assert!(only_b.ends_with("\nreturn B2"));
        let none = with_prelude(prelude, "local abc = 1 -- also bc\nreturn abc");
        assert!(!none.contains("function"), "whole names only: {none}");
        assert_eq!(with_prelude(prelude, "return 1"), "local K = KEYS[1]\nreturn 1");
    }

    #[test]
    fn the_library_defines_the_helpers_once_and_registers_every_script() {
        let lib = library_source();
        assert!(lib.starts_with(&format!("#!lua name={}\n", library_name())));
        assert_eq!(lib.matches("local function clock(").count(), 1);
        for n in ScriptName::ALL {
            let head =
                format!("redis.register_function('{}', function(KEYS, ARGV)\n{BIND}", n.function_name());
            assert!(lib.contains(&head), "{} is registered", n.file_stem());
            assert!(
                n.source().contains(&format!("\n{BIND}")),
                "{} binds its keys for EVALSHA",
                n.file_stem()
            );
        }
    }

    #[test]
    fn every_script_gets_the_helpers_it_calls() {
        let helpers = [
            "clock",
            "now_ms",
            "emit",
            "wake",
            "to_waiting",
            "push_history",
            "is_paused",
            "write_split_job",
            "ck_key",
            "hold",
            "unhold",
            "free_key_slot",
            "drop_held",
            "count_key_waiting",
            "is_holder",
            "drop_holder",
        ];
        for n in ScriptName::ALL {
            for h in helpers {
                if mentions(n.body(), h) {
                    assert!(
                        n.source().contains(&format!("local function {h}(")),
                        "{} calls {h}",
                        n.file_stem()
                    );
                }
            }
        }
        assert!(!ScriptName::Renew.source().contains("local function write_job("));
        assert!(
            ScriptName::Add.source().contains("local function write_plain_job("),
            "write_split_job uses it"
        );
        assert!(ScriptName::Complete.source().contains("local function is_paused("), "free_key_slot uses it");
    }

    #[test]
    fn the_table_names_every_lua_file_once() {
        let stems: std::collections::HashSet<_> = ScriptName::ALL.iter().map(|n| n.file_stem()).collect();
        assert_eq!(stems.len(), ScriptName::ALL.len());
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".lua")
                && stem != "prelude"
            {
                assert!(
                    stems.contains(stem),
                    "scripts/{name} is not in the table of common/src/scripts/mod.rs"
                );
            }
        }
    }
}
