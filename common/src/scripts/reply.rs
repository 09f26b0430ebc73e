//! Reading the parts of a script's reply. Every reader fails with
//! [`Error::Protocol`] naming what it expected, never panics.

use redis::Value;

use crate::{Error, Result};

/// An integer.
pub fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(Error::Protocol(format!("expected an integer from a script, got {other:?}"))),
    }
}

/// A string (bulk or simple string, or an integer as text).
pub fn string(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone())
            .map_err(|_| Error::Protocol("a script returned text that is not UTF-8".into())),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Protocol(format!("expected a string from a script, got {other:?}"))),
    }
}

/// An array (`nil` and an empty table both give `[]`).
pub fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Protocol(format!("expected an array from a script, got {other:?}"))),
    }
}

/// An array of strings (job ids, say).
pub fn strings(v: Value) -> Result<Vec<String>> {
    array(v)?.iter().map(string).collect()
}

/// A script's result code (see [`crate::ScriptCode`]).
pub fn code(v: &Value) -> Result<crate::ScriptCode> {
    crate::ScriptCode::from_code(int(v)?)
}

/// One result code per item of an array.
pub fn codes(v: Value) -> Result<Vec<crate::ScriptCode>> {
    array(v)?.iter().map(code).collect()
}

/// An array of exactly `N` items.
pub fn fixed<const N: usize>(v: Value, what: &str) -> Result<[Value; N]> {
    <[Value; N]>::try_from(array(v)?)
        .map_err(|items| Error::Protocol(format!("{what} returned {} items, expected {N}", items.len())))
}
